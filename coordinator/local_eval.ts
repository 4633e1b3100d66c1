/**
 * The held-out split scored on the coordinator itself: when no worker is
 * connected, for an MLM run (its scoring needs the model's tensors), or when
 * no worker could answer an evaluation batch validly (coordinator/trainer.ts,
 * `evaluate`). Logits come from the native engine where a BLAS loads, else
 * from tfjs on wasm.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { initBackend } from "../shared/compute/backend.ts";
import { type EvalResult, withHostLogits } from "../shared/eval/held_out.ts";
import type { ModelConfig } from "../shared/model/config.ts";
import type { ParamLayout } from "../shared/model/param_layout.ts";
import { type DeviceModel, weightTensors } from "../shared/tfjs/model.ts";
import type { TrainingData } from "./training_data.ts";

/** The model and data a local evaluation scores. */
export interface LocalEvalInput {
  readonly modelConfig: ModelConfig;
  readonly layout: ParamLayout;
  /** The flat weights (read, not kept). */
  readonly weights: Float32Array;
  readonly data: TrainingData;
  /** At most this many held-out examples (0: all). */
  readonly evalLimit: number;
  /** A deterministic run's logits (the native engine on one BLAS thread). */
  readonly deterministic: boolean;
}

/**
 * Scores the held-out split on the coordinator's own backend; null when
 * there is no held-out split. Logs how many examples it scored and how long
 * it took.
 */
export async function evaluateLocally(
  run: LocalEvalInput,
  log?: (line: string) => void,
): Promise<EvalResult | null> {
  await initBackend("wasm");
  const weights = weightTensors(run.layout, run.weights);
  const tensors: DeviceModel = { config: run.modelConfig, layout: run.layout, weights };
  // Logits on the native engine where a BLAS loads (MLM scoring stays on tfjs).
  const model = withHostLogits(tensors, run.weights, {
    deterministic: run.deterministic,
    log: log ?? ((l) => console.error(l)),
  });
  const t0 = performance.now();
  try {
    const result = await run.data.evaluate(model, run.evalLimit);
    if (!result) return null;
    log?.(
      `evaluated ${result.examples} examples on the coordinator in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s`,
    );
    return result;
  } finally {
    model.close();
    tf.dispose(Object.values(weights));
  }
}
