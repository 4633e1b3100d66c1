/**
 * Training task ids: micro-batch `index` of step `step` is task
 * step · {@link MICRO_BATCHES_PER_STEP} + index, unique over a run, so an
 * answer names the one task it is for (a late answer from an earlier step is
 * never taken for a task of this one). Evaluation tasks count from
 * `EVAL_TASK_ID_BASE` (coordinator/mesh_eval.ts), above every training id.
 *
 * @module
 */

/** The most micro-batches a step may have: the id stride between steps. */
export const MICRO_BATCHES_PER_STEP = 1_000_000;

/** The task id of micro-batch `index` of step `step` (both 0-based). */
export function trainingTaskId(step: number, index: number): number {
  if (!Number.isSafeInteger(index) || index < 0 || index >= MICRO_BATCHES_PER_STEP) {
    throw new RangeError(
      `micro-batch index ${index} is outside 0 … ${MICRO_BATCHES_PER_STEP - 1}`,
    );
  }
  return step * MICRO_BATCHES_PER_STEP + index;
}

/** The micro-batch index a training task id names. */
export function trainingTaskIndex(taskId: number): number {
  return taskId % MICRO_BATCHES_PER_STEP;
}
