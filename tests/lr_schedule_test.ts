import assert from "node:assert/strict";
import { learningRate, resolveWarmup } from "../coordinator/lr_schedule.ts";

const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-15, `${a} vs ${b}`);

Deno.test("linear: warmup, boundary, middle of decay, last step", () => {
  // T = 100, W = 10, peak 2e-3.
  close(learningRate(1, 100, 2e-3, 10, "linear"), 2e-3 * 1 / 10);
  close(learningRate(5, 100, 2e-3, 10, "linear"), 2e-3 * 5 / 10);
  assert.equal(learningRate(10, 100, 2e-3, 10, "linear"), 2e-3); // peak at s = W
  close(learningRate(11, 100, 2e-3, 10, "linear"), 2e-3 * 89 / 90);
  close(learningRate(55, 100, 2e-3, 10, "linear"), 2e-3 * 45 / 90); // middle of the decay: half
  close(learningRate(99, 100, 2e-3, 10, "linear"), 2e-3 * 1 / 90);
  assert.equal(learningRate(100, 100, 2e-3, 10, "linear"), 0); // last step
  assert.equal(learningRate(120, 100, 2e-3, 10, "linear"), 0); // never negative
});

Deno.test("linear equals HF get_linear_schedule_with_warmup at index s", () => {
  // HF: c < W ? c / max(1, W) : max(0, (T - c) / max(1, T - W)), written out for T = 20, W = 4.
  const hf = (c: number) => c < 4 ? c / 4 : Math.max(0, (20 - c) / 16);
  for (let s = 1; s <= 20; s++) close(learningRate(s, 20, 1, 4, "linear"), hf(s));
});

Deno.test("no warmup and constant schedule", () => {
  close(learningRate(1, 4, 1, 0, "linear"), 3 / 4);
  assert.equal(learningRate(4, 4, 1, 0, "linear"), 0);
  close(learningRate(2, 10, 0.5, 4, "constant"), 0.5 * 2 / 4);
  assert.equal(learningRate(4, 10, 0.5, 4, "constant"), 0.5);
  assert.equal(learningRate(10, 10, 0.5, 4, "constant"), 0.5);
  assert.equal(learningRate(3, 10, 0.5, 0, "constant"), 0.5);
});

Deno.test("resolveWarmup: fraction of the run or a step count", () => {
  assert.equal(resolveWarmup(0.1, 30), 3); // 0.1·30 = 3.0000000000000004 in float64, still 3
  assert.equal(resolveWarmup(0.1, 25), 3); // ceil(2.5)
  assert.equal(resolveWarmup(0.3, 7), 3); // ceil(2.1)
  assert.equal(resolveWarmup(0, 100), 0);
  assert.ok(Object.is(resolveWarmup(0, 100), 0));
  assert.equal(resolveWarmup(1, 100), 1);
  assert.equal(resolveWarmup(12, 100), 12);
  assert.throws(() => resolveWarmup(1.5, 100), /integer/);
  assert.throws(() => resolveWarmup(-0.1, 100), /non-negative/);
});

Deno.test("learningRate rejects bad arguments", () => {
  assert.throws(() => learningRate(0, 10, 1, 1, "linear"), /1-based/);
  assert.throws(() => learningRate(1.5, 10, 1, 1, "linear"), /step/);
  assert.throws(() => learningRate(1, 0, 1, 1, "linear"), /totalSteps/);
  assert.throws(() => learningRate(1, 10, NaN, 1, "linear"), /peak/);
});
