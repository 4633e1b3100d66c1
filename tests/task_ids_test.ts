import assert from "node:assert/strict";
import {
  MICRO_BATCHES_PER_STEP,
  trainingTaskId,
  trainingTaskIndex,
} from "../coordinator/task_ids.ts";
import { EVAL_TASK_ID_BASE } from "../coordinator/mesh_eval.ts";

Deno.test("a training task id is step · 1,000,000 + index, and decodes back to its index", () => {
  assert.equal(MICRO_BATCHES_PER_STEP, 1_000_000);
  assert.equal(trainingTaskId(0, 0), 0);
  assert.equal(trainingTaskId(3, 2), 3_000_002);
  assert.equal(trainingTaskIndex(trainingTaskId(41, 999_999)), 999_999);
  assert.ok(trainingTaskId(4_000_000_000, 999_999) < EVAL_TASK_ID_BASE);
});

Deno.test("an index that would reach into the next step's ids is refused", () => {
  assert.throws(() => trainingTaskId(1, MICRO_BATCHES_PER_STEP), /outside 0 … 999999/);
  assert.throws(() => trainingTaskId(1, -1), /outside/);
  assert.throws(() => trainingTaskId(1, 0.5), /outside/);
});
