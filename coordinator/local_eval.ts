/**
 * The held-out split scored on the coordinator itself: when no worker is
 * connected, for an MLM run (its scoring needs the model's tensors), or when
 * no worker could answer an evaluation batch validly (coordinator/trainer.ts,
 * `evaluate`). Logits come from the host's own compute
 * (shared/eval/held_out.ts `evaluateOnHost`: the engine on cpu where a BLAS
 * loads, else tfjs on wasm).
 *
 * @module
 */
import { type EvalResult, evaluateOnHost } from "../shared/eval/held_out.ts";
import type { ModelConfig } from "../shared/model/config.ts";
import type { ParamLayout } from "../shared/model/param_layout.ts";
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
  /** A deterministic run's logits (the cpu engine on one BLAS thread). */
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
  const t0 = performance.now();
  const model = { config: run.modelConfig, layout: run.layout, weights: run.weights };
  const result = await evaluateOnHost(run.data, model, {
    limit: run.evalLimit,
    deterministic: run.deterministic,
  });
  if (!result) return null;
  log?.(
    `evaluated ${result.examples} examples on the coordinator in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s`,
  );
  return result;
}
