import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs-core";
import { initBackend } from "../shared/compute/create.ts";
import { batchTensors, NO_DROPOUT, weightTensors } from "../shared/tfjs/model.ts";
import { deltaGradient, microBatchGradient } from "../shared/tfjs/gradient.ts";
import { type GradientTask } from "../shared/compute/task.ts";
import {
  type AdversaryConfig,
  DEFAULT_ADVERSARY,
  NO_ADVERSARY,
} from "../shared/method/adversary_config.ts";
import { setExplicitTranspose } from "../shared/tfjs/ops.ts";
import { sampleCoordinates, type Tiny, tiny } from "./support/tiny.ts";
import { centralDiff, referenceLoss } from "./support/reference_bert.ts";
import { testBackends } from "./support/backends.ts";

const NO_DROP = { hidden: 0, attention: 0 };

function task(t: Tiny, adversary: AdversaryConfig, over: Partial<GradientTask> = {}): GradientTask {
  return { step: 0, index: 0, seed: 7, adversary, batch: t.batch, dropout: NO_DROP, ...over };
}

async function gradient(t: Tiny, adversary: AdversaryConfig, over: Partial<GradientTask> = {}) {
  const weights = weightTensors(t.layout, t.weights);
  try {
    return await microBatchGradient(
      { config: t.config, layout: t.layout, weights },
      task(t, adversary, over),
    );
  } finally {
    tf.dispose(Object.values(weights));
  }
}

function assertMatches(actual: number, expected: number, what: string) {
  assert.ok(
    Math.abs(actual - expected) <= 2e-3 * Math.abs(expected) + 3e-5,
    `${what}: got ${actual}, finite differences give ${expected}`,
  );
}

/** δ_1 = α·G/‖G‖ (per example, G from finite differences of the reference at δ = 0), then projected. */
function referenceDelta1(t: Tiny, alpha: number, eps: number): Float64Array {
  const H = t.config.hiddenSize, { size: B, seqLen: L } = t.batch;
  const lossOfDelta = (d: Float64Array) => referenceLoss(t.config, t.layout, t.weights, t.batch, d);
  const zero = new Float64Array(B * L * H);
  const G = zero.map((
    _,
    i,
  ) => (t.batch.attentionMask[Math.floor(i / H)] ? centralDiff(lossOfDelta, zero, i) : 0));
  const delta = new Float64Array(B * L * H);
  for (let b = 0; b < B; b++) {
    const lo = b * L * H, hi = lo + L * H;
    let n = 0;
    for (let i = lo; i < hi; i++) n += G[i] ** 2;
    n = Math.sqrt(n);
    const step = alpha / (n + 1e-12);
    const dn = alpha; // ‖α·G/‖G‖‖ = α
    const scale = dn > eps ? eps / dn : 1;
    for (let i = lo; i < hi; i++) delta[i] = G[i] * step * scale;
  }
  return delta;
}

for (const backend of await testBackends()) {
  Deno.test(`mode off: parameter gradient matches central differences (${backend})`, async () => {
    await initBackend(backend);
    for (const over of [{}, { model_type: "roberta", pad_token_id: 1 }, { num_labels: 1 }]) {
      const t = tiny(over);
      const r = await gradient(t, NO_ADVERSARY);
      const f = (w: Float64Array) => referenceLoss(t.config, t.layout, w, t.batch);
      assertMatches(r.loss, f(Float64Array.from(t.weights)), "loss");
      assert.equal(r.count, t.batch.size);
      for (const i of sampleCoordinates(t, 2, 11)) {
        assertMatches(r.grad[i], centralDiff(f, t.weights, i), `grad[${i}]`);
      }
    }
  });

  Deno.test(`δ gradient matches central differences (${backend})`, async () => {
    await initBackend(backend);
    const t = tiny();
    const H = t.config.hiddenSize, { size: B, seqLen: L } = t.batch;
    const delta0 = Float64Array.from({ length: B * L * H }, (_, i) => 0.05 * Math.sin(i));
    const weights = weightTensors(t.layout, t.weights);
    const bt = batchTensors(t.config, t.batch);
    const labels = tf.tensor1d(t.batch.labels);
    const d = tf.tensor3d(Float32Array.from(delta0), [B, L, H]);
    const g = deltaGradient(
      { config: t.config, layout: t.layout, weights },
      bt,
      { kind: "classify", labels },
      d,
      NO_DROPOUT,
    );
    const G = await g.data();
    tf.dispose([g, d, labels, ...Object.values(bt), ...Object.values(weights)]);
    const f = (x: Float64Array) => referenceLoss(t.config, t.layout, t.weights, t.batch, x);
    for (let i = 0; i < B * L * H; i += 5) {
      assertMatches(G[i], centralDiff(f, delta0, i), `G[${i}]`);
    }
  });

  Deno.test(`pgd K=1: g is the gradient at δ1 = α·G/‖G‖, projected onto the ε-ball (${backend})`, async () => {
    await initBackend(backend);
    const t = tiny();
    for (const [alpha, eps] of [[0.1, 1.0], [2.0, 0.5]]) {
      const adv = { ...DEFAULT_ADVERSARY, lr: alpha, eps };
      const r = await gradient(t, adv);
      const delta1 = referenceDelta1(t, alpha, eps);
      const f = (w: Float64Array) => referenceLoss(t.config, t.layout, w, t.batch, delta1);
      assertMatches(r.loss, f(Float64Array.from(t.weights)), `adversarial loss α=${alpha}`);
      for (const i of sampleCoordinates(t, 2, 11)) {
        assertMatches(r.grad[i], centralDiff(f, t.weights, i), `grad[${i}]`);
      }
    }
  });
}

Deno.test("freelb K=2: g is the mean of the gradients at δ0 = 0 and δ1", async () => {
  await initBackend("tfjs-wasm");
  const t = tiny();
  const r = await gradient(t, { ...DEFAULT_ADVERSARY, mode: "freelb", steps: 2 });
  const delta1 = referenceDelta1(t, 0.1, 1.0);
  const f0 = (w: Float64Array) => referenceLoss(t.config, t.layout, w, t.batch);
  const f1 = (w: Float64Array) => referenceLoss(t.config, t.layout, w, t.batch, delta1);
  const w0 = Float64Array.from(t.weights);
  assertMatches(r.loss, (f0(w0) + f1(w0)) / 2, "mean loss");
  for (const i of sampleCoordinates(t, 2, 11)) {
    assertMatches(
      r.grad[i],
      (centralDiff(f0, t.weights, i) + centralDiff(f1, t.weights, i)) / 2,
      `grad[${i}]`,
    );
  }
});

Deno.test("cpu, wasm and webgpu give the same loss and gradients within 1e-4", async () => {
  const results = [];
  for (const backend of await testBackends()) {
    await initBackend(backend);
    const t = tiny({}, 4, 7);
    results.push({ backend, r: await gradient(t, { ...DEFAULT_ADVERSARY, init: 0.5 }) });
  }
  const base = results[0].r;
  let scale = 0;
  for (const g of base.grad) scale = Math.max(scale, Math.abs(g));
  for (const { backend, r } of results.slice(1)) {
    assert.ok(Math.abs(r.loss - base.loss) <= 1e-4 * Math.abs(base.loss), `${backend} loss`);
    for (let i = 0; i < base.grad.length; i++) {
      assert.ok(
        Math.abs(r.grad[i] - base.grad[i]) <= 1e-4 * scale,
        `${backend} grad[${i}]: ${r.grad[i]} vs ${base.grad[i]}`,
      );
    }
  }
});

Deno.test("same task, same bits; dropout masks depend on (seed, step, index) only", async () => {
  await initBackend("tfjs-wasm");
  const t = tiny({ hidden_dropout_prob: 0.1 }, 4, 7);
  const drop = { dropout: { hidden: 0.2, attention: 0.1 } };
  const a = await gradient(t, DEFAULT_ADVERSARY, drop);
  const b = await gradient(t, DEFAULT_ADVERSARY, drop);
  assert.deepEqual(a.grad, b.grad);
  assert.equal(a.loss, b.loss);
  const c = await gradient(t, DEFAULT_ADVERSARY, { ...drop, index: 1 });
  assert.notDeepEqual(a.grad, c.grad);
  const clean = await gradient(t, DEFAULT_ADVERSARY);
  assert.notDeepEqual(a.grad, clean.grad);
});

Deno.test("explicit-transpose matmul gradients equal the transpose-flag ones", async () => {
  await initBackend("tfjs-wasm");
  const t = tiny({}, 4, 7);
  const fast = await gradient(t, DEFAULT_ADVERSARY);
  setExplicitTranspose(false);
  try {
    const flags = await gradient(t, DEFAULT_ADVERSARY);
    for (let i = 0; i < fast.grad.length; i++) {
      assert.ok(Math.abs(fast.grad[i] - flags.grad[i]) <= 1e-5, `grad[${i}]`);
    }
  } finally {
    setExplicitTranspose(true);
  }
});

Deno.test("no tensors leak across gradient calls", async () => {
  await initBackend("tfjs-wasm");
  const t = tiny();
  const before = tf.memory().numTensors;
  for (const mode of ["off", "pgd", "freelb"] as const) {
    await gradient(t, { ...DEFAULT_ADVERSARY, mode, steps: 2 });
  }
  assert.equal(tf.memory().numTensors, before);
});

Deno.test("MLM objective: gradient (tied decoder, cls head) matches central differences", async () => {
  const { paramLayout } = await import("../shared/model/param_layout.ts");
  const { tinyWeights } = await import("./support/tiny.ts");
  const { referenceMlmLoss } = await import("./support/reference_bert.ts");
  for (const backend of ["tfjs-cpu", "tfjs-wasm"] as const) {
    await initBackend(backend);
    const base = tiny();
    const layout = paramLayout(base.config, "mlm");
    const t: Tiny = { ...base, layout, weights: tinyWeights(layout) };
    const labels = new Float32Array(t.batch.size * t.batch.seqLen).fill(-100);
    labels[1] = 7;
    labels[4] = 12;
    labels[t.batch.seqLen + 2] = 30;
    const batch = { ...t.batch, labels };
    const r = await gradient({ ...t, batch }, NO_ADVERSARY, { batch });
    const f = (w: Float64Array) => referenceMlmLoss(t.config, t.layout, w, batch);
    assertMatches(r.loss, f(Float64Array.from(t.weights)), "mlm loss");
    for (const i of sampleCoordinates({ ...t, batch }, 2, 11)) {
      assertMatches(r.grad[i], centralDiff(f, t.weights, i), `grad[${i}]`);
    }
  }
});
