/**
 * Watching a trainer's evaluations through the mesh: for tests that compare
 * the logits the workers sent with local scoring (coordinator/mesh_eval.ts).
 */
import type { Trainer } from "../../coordinator/trainer.ts";
import type { TrainingData } from "../../coordinator/training_data.ts";

/**
 * Records the logits of every evaluation `trainer` runs on the workers (the
 * real path, observed): one array of batch logits per evaluation.
 */
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
