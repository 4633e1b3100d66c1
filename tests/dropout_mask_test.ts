/**
 * Dropout masks (shared/method/dropout_mask.ts): the documented rule recomputed with
 * BigInt arithmetic, the same multipliers from the host function and from
 * tfjs's dropout op on cpu and wasm, the keep rate, and independence across
 * seeds and sites.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs-core";
import { initBackend } from "../shared/compute/create.ts";
import { dropout } from "../shared/tfjs/ops.ts";
import {
  dropoutBits,
  dropoutKey,
  dropoutMask,
  dropoutScale,
  dropoutThreshold,
} from "../shared/method/dropout_mask.ts";
import { mixSeed } from "../shared/method/rng.ts";
import { microBatchGradient } from "../shared/tfjs/gradient.ts";
import { type GradientTask } from "../shared/compute/task.ts";
import { DEFAULT_ADVERSARY } from "../shared/method/adversary_config.ts";
import { weightTensors } from "../shared/tfjs/model.ts";
import { tiny } from "./support/tiny.ts";
import { testBackends } from "./support/backends.ts";

const M32 = (1n << 32n) - 1n;

/** lowbias32 in BigInt: the documented hash without any JavaScript int32 tricks. */
function lowbias32Big(v: bigint): bigint {
  let x = v & M32;
  x ^= x >> 16n;
  x = (x * 0x7feb352dn) & M32;
  x ^= x >> 15n;
  x = (x * 0x846ca68bn) & M32;
  x ^= x >> 16n;
  return x;
}

Deno.test("bits follow the documented rule (recomputed in BigInt) and mask = keep ? scale : 0", () => {
  const seed = mixSeed(42, 7, 3);
  for (const site of [0, 1, 5, 1_000_000]) {
    const key = dropoutKey(seed, site);
    assert.equal(key, mixSeed(seed, site));
    const rate = 0.1, mask = dropoutMask(seed, site, rate, 2000);
    const threshold = BigInt(Math.floor(rate * 2 ** 32));
    for (const i of [0, 1, 2, 77, 1023, 1999]) {
      const want = lowbias32Big(lowbias32Big(BigInt(i) ^ BigInt(key)) + BigInt(key));
      assert.equal(BigInt(dropoutBits(key, i)), want, `bits of element ${i} at site ${site}`);
      assert.equal(mask[i], want >= threshold ? Math.fround(1 / Math.fround(0.9)) : 0);
    }
  }
  assert.equal(dropoutThreshold(0), 0);
  assert.equal(dropoutScale(0.5), 2);
  assert.throws(() => dropoutMask(1, 0, 1, 4), /rate must be in \[0, 1\), got 1/);
});

Deno.test("keep rate is 1 − rate within 5σ; seeds and sites give different masks", () => {
  const n = 1 << 20;
  for (const rate of [0.1, 0.5]) {
    const m = dropoutMask(9, 2, rate, n);
    let kept = 0;
    for (const v of m) if (v !== 0) kept++;
    const p = 1 - rate, sigma = Math.sqrt(p * (1 - p) / n);
    assert.ok(Math.abs(kept / n - p) <= 5 * sigma, `rate ${rate}: kept ${kept / n}`);
  }
  const base = dropoutMask(9, 2, 0.5, n);
  for (const [seed, site] of [[10, 2], [9, 3]]) {
    const other = dropoutMask(seed, site, 0.5, n);
    let same = 0;
    for (let i = 0; i < n; i++) if ((base[i] !== 0) === (other[i] !== 0)) same++;
    // Independent masks at rate 0.5 agree on half the elements.
    const sigma = Math.sqrt(0.25 / n);
    assert.ok(
      Math.abs(same / n - 0.5) <= 5 * sigma,
      `seed ${seed} site ${site}: agree ${same / n}`,
    );
  }
  // Neighbouring elements are not correlated: keep(i) and keep(i+1) agree half the time.
  let adjacent = 0;
  for (let i = 0; i + 1 < n; i++) if ((base[i] !== 0) === (base[i + 1] !== 0)) adjacent++;
  assert.ok(Math.abs(adjacent / (n - 1) - 0.5) <= 5 * Math.sqrt(0.25 / n), "adjacent elements");
});

Deno.test("tfjs dropout on cpu, wasm (and webgpu) multiplies by exactly the host mask", async () => {
  const shape = [3, 5, 16], n = 3 * 5 * 16, seed = mixSeed(1, 2, 3);
  const x = Float32Array.from({ length: n }, (_, i) => 0.5 + Math.sin(i));
  for (const backend of await testBackends()) {
    await initBackend(backend);
    for (const [rate, site] of [[0.1, 0], [0.3, 4], [0.15, 1_000_001]]) {
      const mask = dropoutMask(seed, site, rate, n);
      const y = tf.tidy(() => dropout(tf.tensor(x, shape), rate, seed, site));
      const got = await y.data();
      y.dispose();
      for (let i = 0; i < n; i++) {
        assert.equal(got[i], Math.fround(x[i] * mask[i]), `${backend} rate ${rate} [${i}]`);
      }
    }
  }
});

Deno.test("with dropout on, cpu and wasm give the same gradient within 1e-4 (same masks)", async () => {
  const t = tiny({}, 4, 7);
  const k: GradientTask = {
    step: 2,
    index: 1,
    seed: 5,
    adversary: DEFAULT_ADVERSARY,
    batch: t.batch,
    dropout: { hidden: 0.3, attention: 0.2 },
  };
  const results = [];
  for (const backend of ["tfjs-cpu", "tfjs-wasm"] as const) {
    await initBackend(backend);
    const weights = weightTensors(t.layout, t.weights);
    results.push(await microBatchGradient({ config: t.config, layout: t.layout, weights }, k));
    tf.dispose(Object.values(weights));
  }
  const [cpu, wasm] = results;
  let scale = 0;
  for (const g of cpu.grad) scale = Math.max(scale, Math.abs(g));
  assert.ok(Math.abs(cpu.loss - wasm.loss) <= 1e-4 * cpu.loss);
  for (let i = 0; i < cpu.grad.length; i++) {
    assert.ok(Math.abs(cpu.grad[i] - wasm.grad[i]) <= 1e-4 * scale, `grad[${i}]`);
  }
});
