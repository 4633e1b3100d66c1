/**
 * The native training engine: the model's forward and backward passes written
 * out explicitly over flat Float32Arrays, every matrix product through a
 * {@link Gemm} (the machine's BLAS, or {@link jsGemm}). It computes what
 * `microBatchGradient` (shared/gradient.ts) computes with tfjs.
 *
 * @module
 */
import type { GradientResult, GradientTask } from "../gradient.ts";
import type { HostBatch } from "../model.ts";
import type { ModelConfig } from "../model_config.ts";
import type { ParamLayout } from "../param_layout.ts";
import type { Gemm } from "./gemm.ts";

/** A model on the host: weights in layout order, buffers reused across calls. */
export class NativeModel {
  #weights: Float32Array | null = null;
  constructor(
    readonly config: ModelConfig,
    readonly layout: ParamLayout,
    readonly gemm: Gemm,
  ) {}

  /** Sets the weights (flat, in layout order); kept by reference, so do not change them mid-call. */
  setWeights(flat: Float32Array): void {
    if (flat.length !== this.layout.total) {
      throw new Error(`setWeights: expected ${this.layout.total} values, got ${flat.length}`);
    }
    this.#weights = flat;
  }

  /** g_j, the mean loss, n_j and timings: the same contract as `microBatchGradient`. */
  gradient(_task: GradientTask): GradientResult {
    if (!this.#weights) throw new Error("NativeModel.gradient: setWeights first");
    throw new Error("NativeModel.gradient: not implemented yet");
  }

  /** Logits [size·numLabels] without dropout or δ: the same as `predictLogits`. */
  logits(_batch: HostBatch): Float32Array {
    throw new Error("NativeModel.logits: not implemented yet");
  }
}
