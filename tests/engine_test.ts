/**
 * The engine (shared/engine/engine.ts) on the host against tfjs's path
 * (shared/tfjs/gradient.ts `microBatchGradient`, shared/tfjs/model.ts
 * `predictLogits`) on tfjs-cpu and tfjs-wasm — both through the compute
 * contract (shared/compute/model_compute.ts, made by shared/compute/create.ts)
 * — and against central finite differences of the float64 reference
 * (tests/support/reference_bert.ts).
 *
 * Agreement measure with tfjs: |engine_i − tfjs_i| ≤ 1e-4 · max_j |tfjs_j|
 * over every element of the gradient (and of the logits); the loss within
 * 1e-4 · |loss|.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs-core";
import { cpuBackend, initBackend } from "../shared/compute/create.ts";
import type { ModelCompute } from "../shared/compute/model_compute.ts";
import { weightTensors } from "../shared/tfjs/model.ts";
import {
  type AdversaryConfig,
  DEFAULT_ADVERSARY,
  NO_ADVERSARY,
} from "../shared/method/adversary_config.ts";
import { EngineModel } from "../shared/engine/engine.ts";
import { cpuDevice } from "../shared/engine/devices/cpu/device.ts";
import { jsGemm } from "../shared/engine/devices/cpu/gemm.ts";
import { sampleCoordinates, type Tiny, tiny } from "./support/tiny.ts";
import {
  centralDiff,
  referenceLogits,
  referenceLoss,
  referenceMlmLoss,
} from "./support/reference_bert.ts";
import { assertClose } from "./support/assert_close.ts";
import {
  ENGINE_DROPOUTS as DROPOUTS,
  ENGINE_MODELS as MODELS,
  engineModel as model,
  engineTask as task,
} from "./support/engine_cases.ts";

const TOL = 1e-4;

/**
 * Adversary settings. linf ascends along sign(G): an element of G within
 * float32 noise of 0 may take either sign on either path (G at δ ≠ 0 has
 * such elements for this tiny model), so linf runs from δ_0 = 0, K = 1,
 * where the first G has none (checked in its own test below).
 */
const MODES: AdversaryConfig[] = [
  NO_ADVERSARY,
  DEFAULT_ADVERSARY,
  { ...DEFAULT_ADVERSARY, steps: 2, init: 0.5 },
  { ...DEFAULT_ADVERSARY, norm: "linf", lr: 0.05, eps: 0.1 },
  { ...DEFAULT_ADVERSARY, mode: "freelb", steps: 2, init: 0.3 },
  { ...DEFAULT_ADVERSARY, mode: "freelb", steps: 3, lr: 2, eps: 0.5 },
];

/** `t` on the tfjs backend `backend` (the oracle), weights set. */
async function tfjsModel(t: Tiny, backend: "tfjs-cpu" | "tfjs-wasm"): Promise<ModelCompute> {
  const m = (await initBackend(backend)).model(t.config, t.layout);
  m.setWeights(t.weights);
  return m;
}

/** `t` on the engine on the host (backend cpu, the JS gemm), weights set. */
function native(t: Tiny): ModelCompute {
  const m = cpuBackend(jsGemm).model(t.config, t.layout);
  m.setWeights(t.weights);
  return m;
}

for (const backend of ["tfjs-cpu", "tfjs-wasm"] as const) {
  for (const { name, over, mlm } of MODELS) {
    Deno.test(`engine = ${backend}: ${name}, every adversary mode, dropout off and on`, async () => {
      const t = model(over, mlm);
      const m = native(t);
      const oracle = await tfjsModel(t, backend);
      for (const adv of MODES) {
        for (const drop of DROPOUTS) {
          const what = `${name} ${adv.mode} K=${adv.steps} ${adv.norm} init=${adv.init} ` +
            `dropout=${drop.hidden}`;
          const k = task(t, adv, drop);
          const want = await oracle.gradient(k);
          const got = await m.gradient(k);
          assert.ok(
            Math.abs(got.loss - want.loss) <= TOL * Math.abs(want.loss),
            `${what}: loss ${got.loss} vs ${want.loss}`,
          );
          assert.equal(got.count, want.count, `${what}: count`);
          assertClose(got.grad, want.grad, `${what} grad`);
        }
      }
      oracle.dispose();
      m.dispose();
    });
  }

  Deno.test(`engine logits = predictLogits (${backend})`, async () => {
    for (const { over } of MODELS.filter((x) => !x.mlm)) {
      const t = model(over, false);
      const oracle = await tfjsModel(t, backend);
      const want = await oracle.logits(t.batch);
      oracle.dispose();
      assertClose(await native(t).logits(t.batch), want, `logits ${JSON.stringify(over)}`);
    }
  });
}

Deno.test("linf from δ = 0: the first G has no element near 0 (so sign(G) is well defined)", async () => {
  // The precondition of MODES' linf entry: at every real position G_i is exactly 0 (no path to
  // the loss: an MLM example without labels) or |G_i| ≥ 1e-5·max|G| (float32 noise in G is
  // ~1e-7·max|G|).
  const { deltaGradient } = await import("../shared/tfjs/gradient.ts");
  const { batchTensors } = await import("../shared/tfjs/model.ts");
  const { mixSeed } = await import("../shared/method/rng.ts");
  await initBackend("tfjs-wasm");
  for (const { over, mlm } of MODELS) {
    const t = model(over, mlm);
    const { size: B, seqLen: L } = t.batch, H = t.config.hiddenSize;
    for (const drop of DROPOUTS) {
      const weights = weightTensors(t.layout, t.weights);
      const bt = batchTensors(t.config, t.batch);
      const labels = tf.tensor1d(t.batch.labels);
      const positions: number[] = [], ids: number[] = [];
      t.batch.labels.forEach((l, i) => {
        if (l !== -100) positions.push(i), ids.push(l);
      });
      const targets = mlm
        ? {
          kind: "mlm" as const,
          positions: tf.tensor1d(positions, "int32"),
          ids: tf.tensor1d(ids, "int32"),
        }
        : { kind: "classify" as const, labels };
      const d = tf.zeros([B, L, H]) as tf.Tensor3D;
      const g = deltaGradient({ config: t.config, layout: t.layout, weights }, bt, targets, d, {
        ...drop,
        seed: mixSeed(7, 3, 1),
      });
      const G = await g.data();
      tf.dispose([g, d, labels, ...Object.values(bt), ...Object.values(weights)]);
      if (targets.kind === "mlm") tf.dispose([targets.positions, targets.ids]);
      let max = 0;
      for (const v of G) max = Math.max(max, Math.abs(v));
      for (let i = 0; i < G.length; i++) {
        if (!t.batch.attentionMask[Math.floor(i / H)]) continue;
        const ok = G[i] === 0 || Math.abs(G[i]) >= 1e-5 * max;
        assert.ok(ok, `G[${i}] = ${G[i]} is near 0 (max ${max})`);
      }
    }
  }
});

// ------------------------------------------------------------ finite differences

function assertFd(actual: number, expected: number, what: string) {
  assert.ok(
    Math.abs(actual - expected) <= 2e-3 * Math.abs(expected) + 3e-5,
    `${what}: native ${actual}, finite differences of the float64 reference ${expected}`,
  );
}

Deno.test("engine gradient matches central differences of the float64 reference (mode off)", async () => {
  for (const { name, over, mlm } of MODELS) {
    const t = model(over, mlm);
    const r = await native(t).gradient(task(t, NO_ADVERSARY));
    const f = mlm
      ? (w: Float64Array) => referenceMlmLoss(t.config, t.layout, w, t.batch)
      : (w: Float64Array) => referenceLoss(t.config, t.layout, w, t.batch);
    assertFd(r.loss, f(Float64Array.from(t.weights)), `${name} loss`);
    for (const i of sampleCoordinates(t, 3, 13)) {
      assertFd(r.grad[i], centralDiff(f, t.weights, i), `${name} grad[${i}]`);
    }
  }
});

Deno.test("engine pgd K=1: gradient at δ1 = α·G/‖G‖ (G, δ1 from the reference) by finite differences", async () => {
  for (const { name, over } of MODELS.filter((x) => !x.mlm)) {
    const t = model(over, false);
    const H = t.config.hiddenSize, { size: B, seqLen: L } = t.batch;
    const alpha = 0.3, eps = 1.0;
    const lossOfDelta = (d: Float64Array) =>
      referenceLoss(t.config, t.layout, t.weights, t.batch, d);
    const zero = new Float64Array(B * L * H);
    const G = zero.map((_, i) =>
      t.batch.attentionMask[Math.floor(i / H)] ? centralDiff(lossOfDelta, zero, i) : 0
    );
    const delta1 = new Float64Array(B * L * H);
    for (let b = 0; b < B; b++) {
      let n = 0;
      for (let i = b * L * H; i < (b + 1) * L * H; i++) n += G[i] ** 2;
      for (let i = b * L * H; i < (b + 1) * L * H; i++) delta1[i] = alpha * G[i] / Math.sqrt(n);
    }
    const r = await native(t).gradient(task(t, { ...DEFAULT_ADVERSARY, lr: alpha, eps }));
    const f = (w: Float64Array) => referenceLoss(t.config, t.layout, w, t.batch, delta1);
    assertFd(r.loss, f(Float64Array.from(t.weights)), `${name} adversarial loss`);
    for (const i of sampleCoordinates(t, 3, 13)) {
      assertFd(r.grad[i], centralDiff(f, t.weights, i), `${name} grad[${i}]`);
    }
  }
});

Deno.test("engine logits match the float64 reference", async () => {
  for (const { over } of MODELS.filter((x) => !x.mlm)) {
    const t = model(over, false);
    const want = referenceLogits(t.config, t.layout, t.weights, t.batch);
    const got = await native(t).logits(t.batch);
    for (let i = 0; i < want.length; i++) {
      assert.ok(Math.abs(got[i] - want[i]) <= 1e-5, `logit ${i}: ${got[i]} vs ${want[i]}`);
    }
  }
});

// ------------------------------------------------------------ engine behaviour

Deno.test("same task, same bits; buffers shared across batch shapes give the same answers", async () => {
  // Shapes in turn, growing the engine's arena midway (5×8 is the largest).
  const a = model({}, false);
  const shapes = [
    a.batch,
    tiny({}, 3, 5).batch,
    a.batch,
    tiny({}, 5, 8).batch,
    tiny({}, 3, 5).batch,
  ];
  const m = native(a);
  const drop = DROPOUTS[1];
  const results = [];
  for (const batch of shapes) {
    results.push(await m.gradient(task({ ...a, batch }, DEFAULT_ADVERSARY, drop)));
  }
  for (const [i, batch] of shapes.entries()) {
    const fresh = await native(a).gradient(task({ ...a, batch }, DEFAULT_ADVERSARY, drop));
    assert.deepEqual(results[i].grad, fresh.grad, `shape ${i}`);
    assert.equal(results[i].loss, fresh.loss, `shape ${i}`);
  }
  const seeded = await m.gradient({ ...task(a, DEFAULT_ADVERSARY, drop), index: 2 });
  assert.notDeepEqual(
    seeded.grad,
    results[0].grad,
    "dropout masks depend on the micro-batch index",
  );
});

Deno.test("first-position-only last layer (the default under a classifier) = the full last layer", async () => {
  for (const over of [{}, { num_hidden_layers: 1 }, { model_type: "roberta", pad_token_id: 1 }]) {
    const t = model(over, false);
    const full = new EngineModel(cpuDevice(jsGemm), t.config, t.layout, { fullLastLayer: true });
    full.setWeights(t.weights);
    const first = native(t);
    for (const adv of MODES) {
      for (const drop of DROPOUTS) {
        const k = task(t, adv, drop);
        const a = await first.gradient(k), b = await full.gradient(k);
        const what = `${JSON.stringify(over)} ${adv.mode} ${adv.norm} dropout ${drop.hidden}`;
        assert.ok(Math.abs(a.loss - b.loss) <= 1e-6 * Math.abs(b.loss), `${what}: loss`);
        let scale = 0;
        for (const v of b.grad) scale = Math.max(scale, Math.abs(v));
        for (let i = 0; i < b.grad.length; i++) {
          assert.ok(Math.abs(a.grad[i] - b.grad[i]) <= 1e-6 * scale, `${what}: grad[${i}]`);
        }
      }
    }
    const la = await first.logits(t.batch), lb = await full.logits(t.batch);
    for (let i = 0; i < lb.length; i++) assert.ok(Math.abs(la[i] - lb[i]) <= 1e-6, `logit ${i}`);
  }
});

Deno.test("gradient into a given buffer: zeroed first, same values, wrong size refused", async () => {
  const t = model({}, false);
  const m = native(t);
  const want = await m.gradient(task(t, DEFAULT_ADVERSARY));
  const out = new Float32Array(t.layout.total).fill(7);
  const got = await m.gradient(task(t, DEFAULT_ADVERSARY), out);
  assert.equal(got.grad, out);
  assert.deepEqual(got.grad, want.grad);
  await assert.rejects(() => m.gradient(task(t, NO_ADVERSARY), new Float32Array(3)), /out holds 3/);
});

Deno.test("the word-embedding gradient is zero on rows no real token used (classifier)", async () => {
  const t = model({}, false);
  const r = await native(t).gradient(task(t, DEFAULT_ADVERSARY));
  const H = t.config.hiddenSize;
  const used = new Set(t.batch.inputIds.filter((_, i) => t.batch.attentionMask[i] === 1));
  for (let v = 0; v < t.config.vocabSize; v++) {
    const row = r.grad.subarray(v * H, (v + 1) * H);
    if (used.has(v)) assert.ok(row.some((x) => x !== 0), `used row ${v} has no gradient`);
    else assert.ok(row.every((x) => x === 0), `unused row ${v} has a gradient`);
  }
});

Deno.test("bad input gets a clear error", async () => {
  const t = model({}, false);
  const m = new EngineModel(cpuDevice(jsGemm), t.config, t.layout);
  await assert.rejects(() => m.gradient(task(t, NO_ADVERSARY)), /setWeights first/);
  assert.throws(() => m.setWeights(new Float32Array(3)), /expected \d+ values, got 3/);
  m.setWeights(t.weights);
  const ids = t.batch.inputIds.slice();
  ids[2] = t.config.vocabSize;
  await assert.rejects(
    () => m.gradient(task({ ...t, batch: { ...t.batch, inputIds: ids } }, NO_ADVERSARY)),
    /token id 40 is outside the vocabulary/,
  );
  const tokenLabels = new Float32Array(t.batch.size * t.batch.seqLen);
  await assert.rejects(
    () => m.gradient(task({ ...t, batch: { ...t.batch, labels: tokenLabels } }, NO_ADVERSARY)),
    /one label per example/,
  );
  const mlm = model({}, true);
  await assert.rejects(() => native(mlm).logits(mlm.batch), /no classifier head/);
});
