/**
 * Held-out evaluation on the workers: the batches of an evaluation become
 * `eval_task` messages (forward only: no labels, no dropout, no adversary)
 * that {@link Scheduler.runEval} dispatches all at once, with the same
 * deadlines, re-dispatch and refusal of stale, duplicate and invalid answers
 * as a training step; the logits come back in batch order, and the metrics
 * are computed from them on the coordinator by `evaluateSet`, exactly as for
 * logits computed locally.
 *
 * @module
 */
import { encodeMessage } from "../shared/wire/protocol.ts";
import type { BatchLogitsFn } from "../shared/eval/held_out.ts";
import type { Scheduler, StepTask } from "./scheduler.ts";

/**
 * Evaluation task ids start here, above every training task id
 * (`trainingTaskId`, coordinator/task_ids.ts: for any step below
 * 2^52 / 10^6 ≈ 4.5 · 10^9).
 */
export const EVAL_TASK_ID_BASE = 2 ** 52;

/** Batches one evaluation may have (task ids of evaluation r are base + r · this + index). */
export const MAX_EVAL_BATCHES = 1_000_000;

/** Which evaluation the tasks belong to. */
export interface MeshEvalOptions {
  readonly runId: string;
  /** Training steps completed (the tasks name it; results must echo it). */
  readonly step: number;
  /** The weights version the scheduler holds now: every task is computed on it. */
  readonly weightsVersion: number;
  readonly numLabels: number;
  /** This evaluation's number in the run (0, 1, …): keeps task ids unique. */
  readonly round: number;
}

/**
 * Logits from the workers behind `scheduler`: every batch is one task, all
 * dispatched at once; resolves with each batch's logits, in batch order.
 * Rejects as the scheduler does (`StepFailedError` when every worker's
 * answer to some batch was invalid; the abort reason when the run stops).
 */
export function meshLogits(scheduler: Scheduler, opts: MeshEvalOptions): BatchLogitsFn {
  return async (batches) => {
    if (batches.length === 0) return [];
    if (batches.length > MAX_EVAL_BATCHES) {
      throw new RangeError(
        `an evaluation of ${batches.length} batches is over the ${MAX_EVAL_BATCHES}-batch limit`,
      );
    }
    const first = EVAL_TASK_ID_BASE + opts.round * MAX_EVAL_BATCHES;
    if (!Number.isSafeInteger(first + MAX_EVAL_BATCHES)) {
      throw new RangeError(`evaluation round ${opts.round} is beyond the task id range`);
    }
    const tasks: StepTask[] = batches.map((b, index) => {
      const taskId = first + index;
      const { inputIds, tokenTypeIds, attentionMask, size, seqLen } = b;
      return {
        taskId,
        index,
        count: size,
        frame: encodeMessage({
          type: "eval_task",
          taskId,
          runId: opts.runId,
          step: opts.step,
          index,
          weightsVersion: opts.weightsVersion,
          batch: { inputIds, tokenTypeIds, attentionMask, size, seqLen },
        }),
      };
    });
    const logits: Float32Array[] = new Array(batches.length);
    await scheduler.runEval(opts.step, tasks, {
      numLabels: opts.numLabels,
      accept: (r) => {
        logits[r.index] = r.logits;
      },
    });
    return logits;
  };
}
