import assert from "node:assert/strict";
import { adapts, decays, type ParamLayout, type ParamSpec } from "../shared/model/param_layout.ts";
import {
  createOptimizerState,
  decodeOptimizerState,
  DEFAULT_OPTIMIZER_CONFIG,
  encodeOptimizerState,
  type OptimizerConfig,
  optimizerStep,
} from "../coordinator/optimizer.ts";
import { mixSeed, Rng } from "../shared/method/rng.ts";

/** A hand-built layout: a decayed weight [2,2] at 0..3, an excluded bias [2] at 4..5. */
function fakeLayout(): ParamLayout {
  const specs: ParamSpec[] = [
    { name: "dense.weight", shape: [2, 2], offset: 0, size: 4, decay: true, adapt: true },
    { name: "dense.bias", shape: [2], offset: 4, size: 2, decay: false, adapt: false },
  ];
  return { specs, byName: new Map(specs.map((s) => [s.name, s])), total: 6 };
}

const LAMB: OptimizerConfig = {
  kind: "lamb",
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-6,
  weightDecay: 0.01,
};
const ADAMW: OptimizerConfig = { ...LAMB, kind: "adamw" };

const W0 = [0.5, -1, 2, 0, 0.1, -0.2];
const G1 = [0.2, -0.4, 0.1, 0.3, 0.5, -0.05];
const G2 = [-0.1, -0.2, 0.3, 0.0, 0.25, 0.05];

/**
 * u of the first step by hand: m̂ = g, v̂ = g², so u = g/(|g|+1e-6) + λ·w
 * (λ = 0.01 on the decayed weight 0..3 only).
 */
const U1 = G1.map((g, i) => g / (Math.abs(g) + 1e-6) + (i < 4 ? 0.01 * W0[i] : 0));

/** The fake layout, its weights W0 and a fresh optimizer state. */
function fresh() {
  return { layout: fakeLayout(), w: new Float32Array(W0), st: createOptimizerState(6) };
}

function assertClose(actual: ArrayLike<number>, expected: number[], tol: number, what: string) {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    assert.ok(
      d <= tol * Math.max(1, Math.abs(expected[i])),
      `${what}[${i}]: got ${actual[i]}, expected ${expected[i]} (diff ${d})`,
    );
  }
}

const norm = (xs: number[]) => Math.sqrt(xs.reduce((a, x) => a + x * x, 0));

Deno.test("defaults are the method's", () => {
  assert.deepEqual({ ...DEFAULT_OPTIMIZER_CONFIG }, LAMB);
});

Deno.test("LAMB: first and second step by hand", () => {
  const { layout, w, st } = fresh();
  const lr = 0.1;

  // Step 1: m = 0.1·g, v = 0.001·g² (U1).
  const u1w = U1.slice(0, 4), u1b = U1.slice(4);
  const r1 = Math.sqrt(0.25 + 1 + 4 + 0) / norm(u1w);
  const w1 = [
    0.5 - lr * r1 * u1w[0],
    -1 - lr * r1 * u1w[1],
    2 - lr * r1 * u1w[2],
    0 - lr * r1 * u1w[3],
    0.1 - lr * u1b[0],
    -0.2 - lr * u1b[1],
  ];
  const s1 = optimizerStep(layout, w, new Float32Array(G1), st, lr, LAMB);
  assert.equal(st.step, 1);
  assertClose(st.m, [0.02, -0.04, 0.01, 0.03, 0.05, -0.005], 1e-7, "m1");
  assertClose(
    st.v,
    [0.001 * 0.04, 0.001 * 0.16, 0.001 * 0.01, 0.001 * 0.09, 0.001 * 0.25, 0.001 * 0.0025],
    1e-7,
    "v1",
  );
  assertClose(w, w1, 2e-6, "w1");
  assertClose(s1.trustRatios, [r1, 1], 1e-6, "r1");
  assert.equal(s1.trustRatios[1], 1);
  const upd1 = norm([...u1w.map((u) => lr * r1 * u), ...u1b.map((u) => lr * u)]);
  assert.ok(Math.abs(s1.updateNorm - upd1) < 1e-6, `updateNorm ${s1.updateNorm} vs ${upd1}`);

  // Step 2: m = 0.09·g1 + 0.1·g2, v = 0.000999·g1² + 0.001·g2²,
  // m̂ = m / (1 − 0.81) = m / 0.19, v̂ = v / (1 − 0.998001) = v / 0.001999.
  const m2 = G1.map((g1, i) => 0.09 * g1 + 0.1 * G2[i]);
  const v2 = G1.map((g1, i) => 0.000999 * g1 * g1 + 0.001 * G2[i] * G2[i]);
  const u2 = m2.map((m, i) =>
    (m / 0.19) / (Math.sqrt(v2[i] / 0.001999) + 1e-6) + (i < 4 ? 0.01 * w1[i] : 0)
  );
  const r2 = norm(w1.slice(0, 4)) / norm(u2.slice(0, 4));
  const w2 = w1.map((x, i) => x - lr * (i < 4 ? r2 : 1) * u2[i]);
  const s2 = optimizerStep(layout, w, new Float32Array(G2), st, lr, LAMB);
  assert.equal(st.step, 2);
  assertClose(st.m, m2, 1e-7, "m2");
  assertClose(st.v, v2, 1e-9, "v2");
  assertClose(w, w2, 2e-6, "w2");
  assertClose(s2.trustRatios, [r2, 1], 1e-5, "r2");
});

Deno.test("AdamW: trust ratio 1 everywhere, decay only on the decayed tensor", () => {
  const { layout, w, st } = fresh();
  const lr = 0.01;
  // Step 1: u = U1; w ← w − lr·u.
  const u1 = U1;
  const w1 = W0.map((x, i) => x - lr * u1[i]);
  const s1 = optimizerStep(layout, w, new Float32Array(G1), st, lr, ADAMW);
  assert.deepEqual([...s1.trustRatios], [1, 1]);
  assertClose(w, w1, 1e-6, "w1");

  // Step 2 (same closed forms as for LAMB, r = 1).
  const m2 = G1.map((g1, i) => 0.09 * g1 + 0.1 * G2[i]);
  const v2 = G1.map((g1, i) => 0.000999 * g1 * g1 + 0.001 * G2[i] * G2[i]);
  const w2 = w1.map((x, i) =>
    x - lr * ((m2[i] / 0.19) / (Math.sqrt(v2[i] / 0.001999) + 1e-6) + (i < 4 ? 0.01 * x : 0))
  );
  optimizerStep(layout, w, new Float32Array(G2), st, lr, ADAMW);
  assertClose(w, w2, 1e-6, "w2");
});

Deno.test("zero gradient: only the decayed tensor shrinks", () => {
  const layout = fakeLayout();
  const g = new Float32Array(6);
  // m = v = 0, so u = λ·w on the weight and 0 on the bias.
  // AdamW: w ← w − lr·0.01·w. LAMB: r = ‖w‖/‖0.01·w‖ = 100, so w ← w − lr·w.
  const wa = new Float32Array(W0);
  optimizerStep(layout, wa, g, createOptimizerState(6), 0.5, ADAMW);
  assertClose(wa, [0.5 * 0.995, -1 * 0.995, 2 * 0.995, 0, 0.1, -0.2], 1e-7, "adamw");
  assert.equal(wa[4], Math.fround(0.1));
  assert.equal(wa[5], Math.fround(-0.2));

  const wl = new Float32Array(W0);
  const s = optimizerStep(layout, wl, g, createOptimizerState(6), 0.5, LAMB);
  assertClose(s.trustRatios, [100, 1], 1e-9, "r");
  assertClose(wl, [0.25, -0.5, 1, 0, 0.1, -0.2], 1e-7, "lamb");
});

Deno.test("LAMB: zero-norm weights or zero update give r = 1", () => {
  const layout = fakeLayout();
  // ‖w‖ = 0 on the decayed tensor → r = 1, w ← 0 − lr·g/(|g|+1e-6).
  const w = new Float32Array([0, 0, 0, 0, 0.1, -0.2]);
  const s = optimizerStep(layout, w, new Float32Array(G1), createOptimizerState(6), 0.1, LAMB);
  assert.deepEqual([...s.trustRatios], [1, 1]);
  assertClose(
    w.subarray(0, 4),
    [
      -0.1 * 0.2 / (0.2 + 1e-6),
      0.1 * 0.4 / (0.4 + 1e-6),
      -0.1 * 0.1 / (0.1 + 1e-6),
      -0.1 * 0.3 / (0.3 + 1e-6),
    ],
    1e-7,
    "w",
  );
  // ‖u‖ = 0 (zero gradient, λ = 0) → r = 1 and nothing moves.
  const w2 = new Float32Array(W0);
  const s2 = optimizerStep(layout, w2, new Float32Array(6), createOptimizerState(6), 0.1, {
    ...LAMB,
    weightDecay: 0,
  });
  assert.deepEqual([...s2.trustRatios], [1, 1]);
  assert.deepEqual([...w2], [...new Float32Array(W0)]);
  assert.equal(s2.updateNorm, 0);
});

function bits(a: Float32Array): number[] {
  return [...new Uint32Array(a.buffer, a.byteOffset, a.length)];
}

Deno.test("state encode/decode is bit-exact and resuming equals not stopping", () => {
  const layout = fakeLayout();
  const grads = [G1, G2, [0.3, 0.1, -0.7, 0.2, -0.1, 0.9], [1e-3, -2e-3, 5, -5, 0, 1]].map(
    (g) => new Float32Array(g),
  );
  const lrs = [0.05, 0.1, 0.07, 0.02];

  const wA = new Float32Array(W0), sA = createOptimizerState(6);
  for (let k = 0; k < 4; k++) optimizerStep(layout, wA, grads[k], sA, lrs[k], LAMB);

  const wB = new Float32Array(W0);
  let sB = createOptimizerState(6);
  for (let k = 0; k < 2; k++) optimizerStep(layout, wB, grads[k], sB, lrs[k], LAMB);
  const bytes = encodeOptimizerState(sB);
  assert.equal(bytes.byteLength, 16 + 8 * 6);
  // Decode from an unaligned copy to exercise the copy path.
  const shifted = new Uint8Array(bytes.byteLength + 1);
  shifted.set(bytes, 1);
  const decoded = decodeOptimizerState(shifted.subarray(1), 6);
  assert.equal(decoded.step, 2);
  assert.deepEqual(bits(decoded.m), bits(sB.m));
  assert.deepEqual(bits(decoded.v), bits(sB.v));
  sB = decoded;
  const wResumed = new Float32Array(wB); // weights travel separately in a checkpoint
  for (let k = 2; k < 4; k++) optimizerStep(layout, wResumed, grads[k], sB, lrs[k], LAMB);

  assert.equal(sB.step, 4);
  assert.deepEqual(bits(wResumed), bits(wA));
  assert.deepEqual(bits(sB.m), bits(sA.m));
  assert.deepEqual(bits(sB.v), bits(sA.v));
});

Deno.test("state decode rejects bad input with clear errors", () => {
  const good = encodeOptimizerState(createOptimizerState(3));
  assert.throws(
    () => decodeOptimizerState(good.subarray(0, 10), 3),
    /shorter than the 16-byte header/,
  );
  assert.throws(() => decodeOptimizerState(good, 4), /holds 3 parameters but the model has 4/);
  assert.throws(() => decodeOptimizerState(good.subarray(0, good.length - 4), 3), /expected 40/);
  const badMagic = good.slice();
  badMagic[0] ^= 0xff;
  assert.throws(() => decodeOptimizerState(badMagic, 3), /bad magic/);
  const badVersion = good.slice();
  badVersion[4] = 9;
  assert.throws(() => decodeOptimizerState(badVersion, 3), /format version 9/);
});

Deno.test("optimizerStep rejects mismatched buffers and bad hyper-parameters", () => {
  const layout = fakeLayout();
  const w = new Float32Array(6), g = new Float32Array(6);
  assert.throws(
    () => optimizerStep(layout, w, new Float32Array(5), createOptimizerState(6), 0.1, LAMB),
    /6 elements/,
  );
  assert.throws(
    () => optimizerStep(layout, w, g, createOptimizerState(6), NaN, LAMB),
    /learning rate/,
  );
  assert.throws(
    () => optimizerStep(layout, w, g, createOptimizerState(6), 0.1, { ...LAMB, beta2: 1 }),
    /beta2/,
  );
});

/**
 * docs/method.md's update written out literally (m̂ = m/(1−β1^t), v̂ = v/(1−β2^t),
 * u = m̂/(sqrt(v̂)+ϵ) + λw, r = ‖w‖/‖u‖), float64 per element, m, v and w
 * stored as float32: the reference the rearranged u = m·k1/(sqrt(v)+k2) + λw
 * must agree with.
 */
function literalStep(
  layout: ParamLayout,
  w: Float32Array,
  g: Float32Array,
  st: { step: number; m: Float32Array; v: Float32Array },
  lr: number,
  cfg: OptimizerConfig,
): number[] {
  const t = ++st.step;
  const bc1 = 1 - cfg.beta1 ** t, bc2 = 1 - cfg.beta2 ** t;
  const ratios: number[] = [];
  for (const spec of layout.specs) {
    const idx = Array.from({ length: spec.size }, (_, k) => spec.offset + k);
    for (const i of idx) {
      st.m[i] = cfg.beta1 * st.m[i] + (1 - cfg.beta1) * g[i];
      st.v[i] = cfg.beta2 * st.v[i] + (1 - cfg.beta2) * g[i] * g[i];
    }
    const lambda = spec.decay ? cfg.weightDecay : 0;
    const u = idx.map((i) =>
      (st.m[i] / bc1) / (Math.sqrt(st.v[i] / bc2) + cfg.eps) + lambda * w[i]
    );
    const wn = Math.sqrt(idx.reduce((a, i) => a + w[i] * w[i], 0));
    const un = Math.sqrt(u.reduce((a, x) => a + x * x, 0));
    const r = cfg.kind === "lamb" && spec.decay && wn > 0 && un > 0 ? wn / un : 1;
    ratios.push(r);
    idx.forEach((i, k) => (w[i] = w[i] - lr * r * u[k]));
  }
  return ratios;
}

/** Distance in float32 units in the last place. */
function ulps(a: number, b: number): number {
  const i = new Int32Array(new Float32Array([a, b]).buffer);
  return Math.abs(i[0] - i[1]);
}

for (const cfg of [LAMB, ADAMW]) {
  Deno.test(`${cfg.kind}: 6 steps on 4 tensors agree with docs/method.md's literal formula (m, v bit for bit, w within 1 ulp)`, () => {
    const sizes: [number, boolean][] = [[17 * 5, true], [5, false], [300, true], [40, false]];
    let offset = 0;
    const specs: ParamSpec[] = sizes.map(([size, decay], k) => {
      const spec = { name: `t${k}`, shape: [size], offset, size, decay, adapt: decay };
      offset += size;
      return spec;
    });
    const layout: ParamLayout = {
      specs,
      byName: new Map(specs.map((s) => [s.name, s])),
      total: offset,
    };
    const rng = new Rng(mixSeed(41));
    const w = new Float32Array(offset).map(() => (rng.next() - 0.5) * 0.2);
    const wRef = w.slice();
    const st = createOptimizerState(offset), ref = createOptimizerState(offset);
    let differ = 0;
    for (let step = 0; step < 6; step++) {
      const g = new Float32Array(offset).map(() => (rng.next() - 0.5) * 10 ** (rng.next() * 7 - 6));
      const lr = 0.01 * (step + 1);
      const stats = optimizerStep(layout, w, g, st, lr, cfg);
      const ratios = literalStep(layout, wRef, g, ref, lr, cfg);
      assert.deepEqual(bits(st.m), bits(ref.m), `m at step ${step + 1}`);
      assert.deepEqual(bits(st.v), bits(ref.v), `v at step ${step + 1}`);
      for (let i = 0; i < offset; i++) {
        const d = ulps(w[i], wRef[i]);
        assert.ok(d <= 1, `w[${i}] at step ${step + 1}: ${w[i]} vs ${wRef[i]} (${d} ulps)`);
        if (d) differ++;
        w[i] = wRef[i]; // continue both from the same weights
      }
      ratios.forEach((r, k) =>
        assert.ok(
          Math.abs(stats.trustRatios[k] - r) <= 1e-12 * r,
          `r[${k}] ${stats.trustRatios[k]} vs ${r}`,
        )
      );
    }
    // The rearrangement only moves float64 roundings: almost every weight keeps its bits.
    assert.ok(differ <= offset * 6 * 0.01, `${differ} weights differ`);
  });
}

Deno.test("LAMB's scratch grows when one state meets a layout with a larger tensor", () => {
  const small = fakeLayout();
  const st = createOptimizerState(6);
  optimizerStep(small, new Float32Array(W0), new Float32Array(G1), st, 0.1, LAMB);
  // The same state (size 6) now with all 6 elements in one decayed tensor.
  const spec: ParamSpec = { name: "w", shape: [6], offset: 0, size: 6, decay: true, adapt: true };
  const big: ParamLayout = { specs: [spec], byName: new Map([["w", spec]]), total: 6 };
  const w = new Float32Array(W0), ref = new Float32Array(W0);
  const refState = { step: st.step, m: st.m.slice(), v: st.v.slice() };
  optimizerStep(big, w, new Float32Array(G2), st, 0.1, LAMB);
  literalStep(big, ref, new Float32Array(G2), refState, 0.1, LAMB);
  for (let i = 0; i < 6; i++) assert.ok(ulps(w[i], ref[i]) <= 1, `w[${i}] ${w[i]} vs ${ref[i]}`);
});

Deno.test("LAMB: LoRA's zero-initialised B takes no trust ratio (it would freeze it); A does", () => {
  const names = ["q.lora_A.weight", "q.lora_B.weight"];
  const specs: ParamSpec[] = names.map((name, k) => ({
    name,
    shape: [4],
    offset: 4 * k,
    size: 4,
    decay: decays(name),
    adapt: adapts(name),
  }));
  assert.deepEqual(specs.map((s) => [s.decay, s.adapt]), [[true, true], [true, false]]);
  const layout: ParamLayout = { specs, byName: new Map(specs.map((s) => [s.name, s])), total: 8 };
  const w = new Float32Array([0.5, -0.5, 0.25, 1, 0, 0, 0, 0]); // B = 0, as PEFT initialises it
  const state = createOptimizerState(8);
  const g = new Float32Array([0.1, 0.2, -0.1, 0.3, 0.2, -0.1, 0.05, 0.4]);
  const lr = 0.01;
  for (let t = 0; t < 3; t++) {
    const { trustRatios } = optimizerStep(layout, w, g, state, lr, { ...LAMB, weightDecay: 0 });
    assert.equal(trustRatios[1], 1, `step ${t + 1}: B's ratio`);
  }
  // Adam-like steps of about lr per element: after 3 steps |B| ≈ 3·lr, not lr·(1 + lr)².
  for (let i = 4; i < 8; i++) {
    assert.ok(Math.abs(Math.abs(w[i]) - 3 * lr) < 1e-3, `B[${i - 4}] ${w[i]}`);
  }
});
