/**
 * The compute contract: what the worker (worker/compute.ts), the evaluator
 * (shared/eval/) and the coordinator's own evaluation hold, whatever runs
 * underneath — the engine of shared/engine/ on a device
 * (shared/compute/engine_compute.ts) or tfjs (shared/tfjs/compute.ts). Made
 * by the one factory, shared/compute/create.ts.
 *
 * @module
 */
import type { Blas } from "../engine/devices/cpu/blas.ts";
import type { HostBatch, LabelledBatch } from "../model/batch.ts";
import type { ModelConfig } from "../model/config.ts";
import type { ParamLayout } from "../model/param_layout.ts";
import type { LoraPlan } from "../model/lora.ts";
import type { BackendName } from "./backend.ts";
import type { GradientResult, GradientTask } from "./task.ts";

/** What computes: the backend's name and the device it runs on (for logs, `hello`, `/status`). */
export interface ComputeIdentity {
  readonly backend: BackendName;
  /** The GPU adapter's description, or the CPU (and, on `cpu`, its BLAS). */
  readonly device: string;
}

/**
 * The masked-LM view of a labelled batch, per predicted token in order: its
 * original id, the model's argmax and log p(id). For MLM scoring.
 */
export interface MaskedLmOutput {
  readonly ids: Int32Array;
  readonly predicted: Int32Array;
  readonly logProb: Float32Array;
}

/** One model (config, layout) on one backend: the operations every caller needs. */
export interface ModelCompute extends ComputeIdentity {
  readonly config: ModelConfig;
  readonly layout: ParamLayout;
  /**
   * Sets the weights (flat, in layout order). An implementation may keep the
   * array by reference: do not change it while a call runs.
   */
  setWeights(flat: Float32Array): void;
  /**
   * g_j, the mean loss, n_j and timings of a task (docs/method.md, "One
   * micro-batch gradient"). The gradient goes into `out` when given (and is
   * returned as `grad`): a caller done with each result before the next call
   * saves a fresh 4-byte-per-parameter array.
   */
  gradient(task: GradientTask, out?: Float32Array): Promise<GradientResult>;
  /**
   * LoRA (shared/model/lora.ts): the weights of {@link setWeights} become the
   * frozen base; adapters and head come from `trainable` (layout
   * `plan.layout`), and {@link gradient} returns their gradient only, dense,
   * `plan.layout.total` long. Call again with new values (same `plan`) each
   * version; null turns LoRA off. A classification layout only.
   */
  setLora(plan: LoraPlan | null, trainable?: Float32Array): void;
  /** Logits [size·numLabels] of a batch: no dropout, no perturbation (classifier layouts). */
  logits(batch: HostBatch): Promise<Float32Array>;
  /**
   * The masked-LM outputs of a batch labelled per token, without dropout:
   * only where the backend has an MLM scoring pass (tfjs; the engine computes
   * the MLM loss only inside its gradient).
   */
  readonly maskedLm?: (batch: LabelledBatch) => Promise<MaskedLmOutput>;
  /** Frees what the model holds on its device; it is not used again. */
  dispose(): void;
}

/** A backend set up in this process: it makes a {@link ModelCompute} per model. */
export interface ComputeBackend {
  readonly name: BackendName;
  readonly device: string;
  /** cpu: the library every matrix product goes through. */
  readonly blas?: Blas;
  /** cpu: BLAS threads outside deterministic runs. */
  readonly threads?: number;
  /**
   * A model of `config` in `layout` on this backend. `deterministic`: compute
   * so that every machine of the same kind gives the same bits (cpu: one
   * BLAS thread — OpenBLAS's sgemm gives different bits with 1 and 2 threads
   * on this model's shapes, and one is a count every machine can match).
   * `rowStable` (cpu; for scoring, not training): an example's logits do not
   * depend on its place in the batch (shared/engine/devices/cpu/device.ts,
   * `rowStableGemm`).
   */
  model(
    config: ModelConfig,
    layout: ParamLayout,
    opts?: { readonly deterministic?: boolean; readonly rowStable?: boolean },
  ): ModelCompute;
}
