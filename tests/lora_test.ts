/**
 * LoRA (shared/model/lora.ts) in the engine (shared/engine/lora.ts, encoder.ts,
 * engine.ts) and in the tfjs oracle (shared/tfjs/model.ts, gradient.ts):
 *
 * - the plan: trainable layout, PEFT's target rule, PEFT's initialisation;
 * - B = 0 gives the base model's logits exactly;
 * - the trainable gradient (every lora_A, lora_B and head tensor) against
 *   central differences of the float64 reference (tests/support/reference_bert.ts)
 *   for every adversary mode (off, pgd l2, pgd linf, freelb), BERT and RoBERTa;
 * - the engine against tfjs, every mode, dropout (and LoRA dropout) off and on;
 * - the backward skips the frozen weights' gradient products (counted flops);
 * - merged weights give the adapter model's logits;
 * - the webgpu device against the host device, where an adapter exists.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs-core";
import { initBackend } from "../shared/compute/create.ts";
import { predictLogits, weightTensors } from "../shared/tfjs/model.ts";
import { microBatchGradient } from "../shared/tfjs/gradient.ts";
import {
  type AdversaryConfig,
  DEFAULT_ADVERSARY,
  NO_ADVERSARY,
} from "../shared/method/adversary_config.ts";
import { EngineModel } from "../shared/engine/engine.ts";
import { cpuDevice } from "../shared/engine/devices/cpu/device.ts";
import { type Gemm, jsGemm } from "../shared/engine/devices/cpu/gemm.ts";
import { createWebGpuDevice } from "../shared/engine/devices/webgpu/device.ts";
import {
  ALL_TARGET_MODULES,
  DEFAULT_LORA,
  initTrainable,
  type LoraConfig,
  type LoraPlan,
  loraPlan,
  mergeLora,
  peftTargetModules,
  resolveTargets,
} from "../shared/model/lora.ts";
import { Rng } from "../shared/method/rng.ts";
import { type Tiny, tiny } from "./support/tiny.ts";
import { centralDiff, type ReferenceLora, referenceLoss } from "./support/reference_bert.ts";
import { assertClose } from "./support/assert_close.ts";
import { engineTask as task } from "./support/engine_cases.ts";

const TOL = 1e-4;

const MODELS = [
  { name: "bert", over: {} },
  { name: "roberta", over: { model_type: "roberta", pad_token_id: 1 } },
];

/** LoRA settings the numerical tests run: the default targets, every module, pooler trained. */
const SETTINGS: { name: string; lora: LoraConfig; trainPooler: boolean }[] = [
  { name: "query,value r=2", lora: { ...DEFAULT_LORA, r: 2, alpha: 4 }, trainPooler: false },
  {
    name: "all modules r=3 +pooler",
    lora: { r: 3, alpha: 5, dropout: 0, targetModules: ALL_TARGET_MODULES },
    trainPooler: true,
  },
];

/** A trainable buffer with every adapter non-zero (A and B drawn), the head from the base. */
function randomTrainable(t: Tiny, plan: LoraPlan, seed = 5): Float32Array {
  const tr = initTrainable(plan, t.layout, t.weights, seed);
  const rng = new Rng(seed + 1);
  for (const ad of plan.adapters) {
    for (const s of [ad.a, ad.b]) {
      for (let i = 0; i < s.size; i++) tr[s.offset + i] = 0.4 * rng.normal();
    }
  }
  return tr;
}

function engine(t: Tiny, plan: LoraPlan | null, tr?: Float32Array, gemm: Gemm = jsGemm) {
  const m = new EngineModel(cpuDevice(gemm), t.config, t.layout);
  m.setWeights(t.weights);
  if (plan) m.setLora(plan, tr);
  return m;
}

// ------------------------------------------------------------------ the plan

Deno.test("loraPlan: trainable layout, PEFT's target rule, refusals", () => {
  const t = tiny();
  const plan = loraPlan(t.config, DEFAULT_LORA);
  assert.deepEqual(plan.modules, ["attention.self.query", "attention.self.value"]);
  assert.equal(plan.scale, 1);
  assert.deepEqual(plan.layout.specs.slice(0, 4).map((s) => [s.name, s.shape]), [
    ["bert.encoder.layer.0.attention.self.query.lora_A.weight", [8, 8]],
    ["bert.encoder.layer.0.attention.self.query.lora_B.weight", [8, 8]],
    ["bert.encoder.layer.0.attention.self.value.lora_A.weight", [8, 8]],
    ["bert.encoder.layer.0.attention.self.value.lora_B.weight", [8, 8]],
  ]);
  assert.deepEqual(plan.layout.specs.slice(-2).map((s) => [s.name, s.shape]), [
    ["classifier.weight", [3, 8]],
    ["classifier.bias", [3]],
  ]);
  assert.deepEqual(plan.modulesToSave, ["classifier"]);
  const total = plan.layout.specs.reduce((a, s) => a + s.size, 0);
  assert.equal(plan.layout.total, total);
  // FFN shapes: intermediate [I, H] ← A [r, H], B [I, r]; output [H, I] ← A [r, I], B [H, r].
  const all = loraPlan(t.config, { r: 2, alpha: 2, dropout: 0, targetModules: ALL_TARGET_MODULES });
  const shape = (n: string) => all.layout.byName.get(`bert.encoder.layer.1.${n}`)!.shape;
  assert.deepEqual(shape("intermediate.dense.lora_A.weight"), [2, 8]);
  assert.deepEqual(shape("intermediate.dense.lora_B.weight"), [16, 2]);
  assert.deepEqual(shape("output.dense.lora_A.weight"), [2, 16]);
  assert.deepEqual(shape("output.dense.lora_B.weight"), [8, 2]);
  // PEFT's suffix rule: "output.dense" is both the attention output and the FFN output.
  assert.deepEqual(resolveTargets(t.config, ["output.dense"]), [
    "attention.output.dense",
    "output.dense",
  ]);
  assert.deepEqual(resolveTargets(t.config, ["layer.0.output.dense", "layer.1.output.dense"]), [
    "output.dense",
  ]);
  // Written target_modules name exactly the chosen modules under that rule.
  for (
    const mods of [["output.dense"], ["attention.output.dense", "output.dense"], ALL_TARGET_MODULES]
  ) {
    const chosen = resolveTargets(t.config, mods);
    assert.deepEqual(resolveTargets(t.config, peftTargetModules(t.config, chosen)), chosen);
  }
  assert.deepEqual(peftTargetModules(t.config, ["output.dense"]), [
    "layer.0.output.dense",
    "layer.1.output.dense",
  ]);
  assert.throws(() => resolveTargets(t.config, ["q_proj"]), /"q_proj" matches no linear module/);
  assert.throws(() => resolveTargets(t.config, ["dense"]), /head module bert.pooler.dense/);
  assert.throws(() => resolveTargets(t.config, ["layer.0.output.dense"]), /not in layer 1/);
  assert.throws(() => loraPlan(t.config, { ...DEFAULT_LORA, r: 0 }), /r must be/);
  assert.throws(() => loraPlan(t.config, { ...DEFAULT_LORA, dropout: 1 }), /lora_dropout/);
  // RoBERTa: the whole classification head trains.
  const rob = tiny({ model_type: "roberta", pad_token_id: 1 });
  assert.deepEqual(loraPlan(rob.config, DEFAULT_LORA, { trainPooler: true }).head, [
    "classifier.dense.weight",
    "classifier.dense.bias",
    "classifier.out_proj.weight",
    "classifier.out_proj.bias",
  ]);
  assert.deepEqual(loraPlan(t.config, DEFAULT_LORA, { trainPooler: true }).modulesToSave, [
    "classifier",
    "pooler",
  ]);
});

Deno.test("initTrainable: PEFT's init (A Kaiming-uniform a=√5, B zero), seeded, head copied", () => {
  const t = tiny();
  const plan = loraPlan(t.config, { ...DEFAULT_LORA, targetModules: ALL_TARGET_MODULES });
  const a = initTrainable(plan, t.layout, t.weights, 1);
  assert.deepEqual(a, initTrainable(plan, t.layout, t.weights, 1));
  assert.notDeepEqual(a, initTrainable(plan, t.layout, t.weights, 2));
  for (const ad of plan.adapters) {
    const A = a.subarray(ad.a.offset, ad.a.offset + ad.a.size);
    const bound = 1 / Math.sqrt(ad.inDim);
    assert.ok(A.every((v) => Math.abs(v) <= bound), `${ad.a.name} within ±1/√in`);
    const max = A.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    assert.ok(max > 0.5 * bound, `${ad.a.name} spans its range`);
    assert.ok(a.subarray(ad.b.offset, ad.b.offset + ad.b.size).every((v) => v === 0));
  }
  for (const name of plan.head) {
    const s = t.layout.byName.get(name)!, d = plan.layout.byName.get(name)!;
    assert.deepEqual(
      a.subarray(d.offset, d.offset + d.size),
      t.weights.subarray(s.offset, s.offset + s.size),
    );
  }
});

Deno.test("B = 0: the LoRA model's logits are the base model's, bit for bit (engine and tfjs)", async () => {
  await initBackend("tfjs-cpu");
  for (const { name, over } of MODELS) {
    const t = tiny(over, 4, 7);
    const plan = loraPlan(t.config, { ...DEFAULT_LORA, r: 4, targetModules: ALL_TARGET_MODULES });
    const tr = initTrainable(plan, t.layout, t.weights, 3);
    const base = await engine(t, null).logits(t.batch);
    assert.deepEqual(await engine(t, plan, tr).logits(t.batch), base, `${name} engine`);
    const weights = weightTensors(t.layout, t.weights), lw = weightTensors(plan.layout, tr);
    const model = { config: t.config, layout: t.layout, weights };
    const want = await predictLogits(model, t.batch);
    const got = await predictLogits({ ...model, lora: { plan, weights: lw } }, t.batch);
    tf.dispose([...Object.values(weights), ...Object.values(lw)]);
    assert.deepEqual(got, want, `${name} tfjs`);
  }
});

// ------------------------------------------------------ finite differences

/** f(trainable) = the float64 reference's loss at δ. */
function lossOfTrainable(t: Tiny, plan: LoraPlan, delta: Float64Array | null) {
  return (w: Float64Array) => {
    const lora: ReferenceLora = { layout: plan.layout, w, scale: plan.scale };
    return referenceLoss(t.config, t.layout, t.weights, t.batch, delta, lora);
  };
}

/** ∇_δ of the reference loss at δ (central differences at real positions, 0 at padding). */
function deltaGrad(t: Tiny, plan: LoraPlan, tr: Float32Array, delta: Float64Array): Float64Array {
  const H = t.config.hiddenSize;
  const lora: ReferenceLora = { layout: plan.layout, w: tr, scale: plan.scale };
  const f = (d: Float64Array) => referenceLoss(t.config, t.layout, t.weights, t.batch, d, lora);
  return delta.map((_, i) =>
    t.batch.attentionMask[Math.floor(i / H)] ? centralDiff(f, delta, i) : 0
  );
}

/** One ascent step and projection (docs/method.md, "Projections"), in float64. */
function ascendRef(t: Tiny, delta: Float64Array, G: Float64Array, adv: AdversaryConfig) {
  const H = t.config.hiddenSize, { size: B, seqLen: L } = t.batch, n = L * H;
  const out = Float64Array.from(delta);
  for (let b = 0; b < B; b++) {
    const lo = b * n;
    if (adv.norm === "linf") {
      for (let i = lo; i < lo + n; i++) {
        out[i] = Math.max(-adv.eps, Math.min(adv.eps, out[i] + adv.lr * Math.sign(G[i])));
      }
      continue;
    }
    let g2 = 0;
    for (let i = lo; i < lo + n; i++) g2 += G[i] ** 2;
    const step = adv.lr / (Math.sqrt(g2) + 1e-12);
    let d2 = 0;
    for (let i = lo; i < lo + n; i++) d2 += (out[i] += step * G[i]) ** 2;
    const dn = Math.sqrt(d2);
    if (dn > adv.eps) { for (let i = lo; i < lo + n; i++) out[i] *= adv.eps / dn; }
  }
  return out;
}

/**
 * The method's g_j from the reference: off ∇L(0); pgd ∇L(δ_K) after K ascent
 * steps from 0; freelb the mean of ∇L(δ_0 … δ_{K−1}); gradients by central
 * differences at the sampled trainable coordinates.
 */
function referenceGradient(
  t: Tiny,
  plan: LoraPlan,
  tr: Float32Array,
  adv: AdversaryConfig,
  coords: number[],
): Map<number, number> {
  const zero = new Float64Array(t.batch.size * t.batch.seqLen * t.config.hiddenSize);
  const at = (d: Float64Array | null) => {
    const f = lossOfTrainable(t, plan, d);
    return new Map(coords.map((i) => [i, centralDiff(f, tr, i)]));
  };
  if (adv.mode === "off") return at(null);
  let delta = zero;
  if (adv.mode === "pgd") {
    for (let k = 0; k < adv.steps; k++) {
      delta = ascendRef(t, delta, deltaGrad(t, plan, tr, delta), adv);
    }
    return at(delta);
  }
  const sum = new Map(coords.map((i) => [i, 0]));
  for (let k = 0; k < adv.steps; k++) {
    for (const [i, g] of at(delta)) sum.set(i, sum.get(i)! + g / adv.steps);
    if (k < adv.steps - 1) delta = ascendRef(t, delta, deltaGrad(t, plan, tr, delta), adv);
  }
  return sum;
}

/** Sampled trainable coordinates: 3 per tensor (every lora_A, lora_B, head tensor). */
function coordinates(plan: LoraPlan, seed: number): number[] {
  const rng = new Rng(seed), out: number[] = [];
  for (const s of plan.layout.specs) {
    for (let k = 0; k < 3; k++) out.push(s.offset + rng.int(s.size));
  }
  return out;
}

const FD_MODES: AdversaryConfig[] = [
  NO_ADVERSARY,
  { ...DEFAULT_ADVERSARY, lr: 0.5 },
  { ...DEFAULT_ADVERSARY, norm: "linf", lr: 0.05, eps: 0.1 },
  { ...DEFAULT_ADVERSARY, mode: "freelb", steps: 2, lr: 0.5 },
];

for (const { name, over } of MODELS) {
  Deno.test(`LoRA gradient (engine and tfjs) = central differences of the float64 reference: ${name}, every mode`, async () => {
    await initBackend("tfjs-cpu");
    const t = tiny(over);
    for (const s of SETTINGS) {
      const plan = loraPlan(t.config, s.lora, { trainPooler: s.trainPooler });
      const tr = randomTrainable(t, plan);
      const m = engine(t, plan, tr);
      const coords = coordinates(plan, 11);
      const weights = weightTensors(t.layout, t.weights), lw = weightTensors(plan.layout, tr);
      const model = { config: t.config, layout: t.layout, weights, lora: { plan, weights: lw } };
      for (const adv of FD_MODES) {
        const what = `${name} ${s.name} ${adv.mode} ${adv.norm}`;
        const k = task(t, adv);
        const got = await m.gradient(k);
        const oracle = await microBatchGradient(model, k);
        assert.equal(got.grad.length, plan.layout.total, `${what}: trainable length`);
        const want = referenceGradient(t, plan, tr, adv, coords);
        for (const [i, g] of want) {
          const spec = plan.layout.specs.find((p) => i >= p.offset && i < p.offset + p.size)!;
          for (const [who, v] of [["engine", got.grad[i]], ["tfjs", oracle.grad[i]]] as const) {
            assert.ok(
              Math.abs(v - g) <= 2e-3 * Math.abs(g) + 3e-5,
              `${what}: ${who} ${spec.name}[${i - spec.offset}] = ${v}, finite differences ${g}`,
            );
          }
        }
      }
      tf.dispose([...Object.values(weights), ...Object.values(lw)]);
    }
  });
}

// ----------------------------------------------------------- the tfjs oracle

const MODES: AdversaryConfig[] = [
  NO_ADVERSARY,
  DEFAULT_ADVERSARY,
  { ...DEFAULT_ADVERSARY, steps: 2, init: 0.5 },
  { ...DEFAULT_ADVERSARY, norm: "linf", lr: 0.05, eps: 0.1 },
  { ...DEFAULT_ADVERSARY, mode: "freelb", steps: 2, init: 0.3 },
];

const DROPOUTS = [{ hidden: 0, attention: 0 }, { hidden: 0.2, attention: 0.15 }];

for (const backend of ["tfjs-cpu", "tfjs-wasm"] as const) {
  for (const { name, over } of MODELS) {
    Deno.test(`LoRA engine = tfjs ${backend}: ${name}, every mode, dropout and LoRA dropout off and on`, async () => {
      await initBackend(backend);
      const t = tiny(over, 4, 7);
      for (const s of SETTINGS) {
        for (const loraDrop of [0, 0.25]) {
          const plan = loraPlan(t.config, { ...s.lora, dropout: loraDrop }, {
            trainPooler: s.trainPooler,
          });
          const tr = randomTrainable(t, plan);
          const m = engine(t, plan, tr);
          const weights = weightTensors(t.layout, t.weights), lw = weightTensors(plan.layout, tr);
          const model = {
            config: t.config,
            layout: t.layout,
            weights,
            lora: { plan, weights: lw },
          };
          assertClose(
            await m.logits(t.batch),
            await predictLogits(model, t.batch),
            `${name} logits`,
          );
          for (const adv of MODES) {
            for (const drop of DROPOUTS) {
              const what =
                `${name} ${s.name} lora_dropout=${loraDrop} ${adv.mode} K=${adv.steps} ` +
                `${adv.norm} dropout=${drop.hidden}`;
              const k = task(t, adv, drop);
              const want = await microBatchGradient(model, k);
              const got = await m.gradient(k);
              assert.ok(
                Math.abs(got.loss - want.loss) <= TOL * Math.abs(want.loss),
                `${what}: loss ${got.loss} vs ${want.loss}`,
              );
              assertClose(got.grad, want.grad, `${what} grad`);
            }
          }
          tf.dispose([...Object.values(weights), ...Object.values(lw)]);
        }
      }
    });
  }
}

// ------------------------------------------------------------- cost, merge, API

Deno.test("LoRA backward skips the frozen weights' gradient products (counted flops)", async () => {
  const t = tiny({ hidden_size: 32, intermediate_size: 64, num_attention_heads: 4 }, 4, 16);
  let flops = 0;
  const counting: Gemm = (...args) => {
    const [, , m, n, k] = args;
    flops += 2 * m * n * k;
    return jsGemm(...args);
  };
  const plan = loraPlan(t.config, { ...DEFAULT_LORA, r: 2 });
  const tr = randomTrainable(t, plan);
  const measure = async (p: LoraPlan | null) => {
    const m = engine(t, p, tr, counting);
    await m.gradient(task(t, NO_ADVERSARY)); // warm: the same work each call
    flops = 0;
    await m.gradient(task(t, NO_ADVERSARY));
    return flops;
  };
  const full = await measure(null), lora = await measure(plan);
  // A full pass: forward F, backward to activations ≈ F, weight gradients ≈ F; LoRA skips the last.
  assert.ok(lora < 0.75 * full, `LoRA ${lora} flops vs full ${full}`);
});

Deno.test("merged weights (W + (α/r)·B·A, trained head) give the LoRA model's logits within 1e-5", async () => {
  for (const { name, over } of MODELS) {
    const t = tiny(over, 4, 7);
    for (const s of SETTINGS) {
      const plan = loraPlan(t.config, s.lora, { trainPooler: s.trainPooler });
      const tr = randomTrainable(t, plan);
      const adapter = await engine(t, plan, tr).logits(t.batch);
      const merged = mergeLora(plan, t.layout, t.weights, tr);
      const m = new EngineModel(cpuDevice(jsGemm), t.config, t.layout);
      m.setWeights(merged);
      const got = await m.logits(t.batch);
      const base = await engine(t, null).logits(t.batch);
      let moved = 0;
      for (let i = 0; i < got.length; i++) {
        assert.ok(
          Math.abs(got[i] - adapter[i]) <= 1e-5,
          `${name} ${s.name} logit ${i}: ${got[i]} vs ${adapter[i]}`,
        );
        moved = Math.max(moved, Math.abs(adapter[i] - base[i]));
      }
      assert.ok(moved > 1e-2, `${name} ${s.name}: the adapter changes the logits (${moved})`);
    }
  }
});

Deno.test("EngineModel.setLora: lengths checked, off again gives the full model", async () => {
  const t = tiny();
  const plan = loraPlan(t.config, DEFAULT_LORA);
  const tr = randomTrainable(t, plan);
  const m = engine(t, null);
  const full = await m.gradient(task(t, NO_ADVERSARY));
  assert.throws(() => m.setLora(plan, new Float32Array(3)), /expected \d+ trainable values/);
  m.setLora(plan, tr);
  assert.equal(m.lora, plan);
  assert.equal((await m.gradient(task(t, NO_ADVERSARY))).grad.length, plan.layout.total);
  await assert.rejects(
    () => m.gradient(task(t, NO_ADVERSARY), new Float32Array(t.layout.total)),
    /trainable/,
  );
  // New values of the same plan take effect without a new plan.
  const tr2 = tr.map((v) => v * 0.5);
  const before = await m.logits(t.batch);
  m.setLora(plan, tr2);
  assert.notDeepEqual(await m.logits(t.batch), before);
  m.setLora(null);
  assert.deepEqual((await m.gradient(task(t, NO_ADVERSARY))).grad, full.grad);
});

// ----------------------------------------------------------------- webgpu

const gpu = await createWebGpuDevice();
if (!gpu) console.log("lora_test: webgpu cases skipped, no WebGPU adapter on this machine");

Deno.test({
  name: "LoRA on the webgpu engine = the host engine: BERT and RoBERTa, every mode, dropout on/off",
  ignore: gpu === null,
  fn: async () => {
    for (const { name, over } of MODELS) {
      const t = tiny(over, 4, 7);
      for (const s of SETTINGS) {
        const plan = loraPlan(t.config, { ...s.lora, dropout: 0.25 }, {
          trainPooler: s.trainPooler,
        });
        const tr = randomTrainable(t, plan);
        const host = engine(t, plan, tr);
        const dev = new EngineModel(gpu!.device, t.config, t.layout);
        dev.setWeights(t.weights);
        dev.setLora(plan, tr);
        assertClose(await dev.logits(t.batch), await host.logits(t.batch), `${name} logits`);
        for (const adv of MODES) {
          for (const drop of DROPOUTS) {
            const what = `${name} ${s.name} ${adv.mode} ${adv.norm} dropout=${drop.hidden}`;
            const k = task(t, adv, drop);
            const want = await host.gradient(k), got = await dev.gradient(k);
            assert.ok(Math.abs(got.loss - want.loss) <= TOL * Math.abs(want.loss), `${what}: loss`);
            assertClose(got.grad, want.grad, `${what} grad`);
          }
        }
        dev.dispose();
      }
    }
  },
});

Deno.test({
  name: "lora_test: the webgpu device is destroyed at the end of the file",
  ignore: gpu === null,
  fn: () => gpu!.destroy(),
});
