/**
 * A micro-batch's gradient as every implementation computes it (docs/method.md,
 * "One micro-batch gradient"): what it depends on besides the weights, and
 * what it returns. The engine (shared/engine/engine.ts) and the tfjs path
 * (shared/tfjs/gradient.ts) both take a {@link GradientTask} and give a
 * {@link GradientResult}.
 *
 * @module
 */
import type { AdversaryConfig } from "../method/adversary_config.ts";
import type { LabelledBatch } from "../model/batch.ts";

/** Everything the gradient depends on besides the weights. */
export interface GradientTask {
  readonly step: number;
  readonly index: number;
  readonly seed: number;
  readonly adversary: AdversaryConfig;
  readonly batch: LabelledBatch;
  /** Dropout rates; 0 for exact checks. */
  readonly dropout: { readonly hidden: number; readonly attention: number };
}

/** g_j, the mean loss it is the gradient of, n_j, and where the time went. */
export interface GradientResult {
  readonly grad: Float32Array;
  readonly loss: number;
  readonly count: number;
  readonly timings: { readonly computeMs: number; readonly adversaryMs: number };
}
