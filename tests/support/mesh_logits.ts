/**
 * Observing a trainer's held-out evaluation on the workers: the logits each
 * evaluation's mesh path returns (coordinator/mesh_eval.ts), recorded without
 * changing them.
 *
 * @module
 */
import type { Trainer } from "../../coordinator/trainer.ts";
import type { TrainingData } from "../../coordinator/training_data.ts";

/** Records the logits of every evaluation `trainer` runs on the workers (the real path, observed). */
export function observeMeshLogits(trainer: Trainer): Float32Array[][] {
  const seen: Float32Array[][] = [];
  const data = trainer.data as { evaluate: TrainingData["evaluate"] };
  const real = data.evaluate;
  data.evaluate = (model, limit) =>
    real(
      "logitsAll" in model
        ? {
          config: model.config,
          logitsAll: async (b) => {
            const l = await model.logitsAll(b);
            seen.push(l);
            return l;
          },
        }
        : model,
      limit,
    );
  return seen;
}
