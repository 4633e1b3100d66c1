/**
 * The engine (shared/engine/engine.ts) on any device, as a
 * {@link ModelCompute}: a thin adapter that adds what it is (backend name,
 * device) and a hook run before each call (the cpu backend puts its BLAS at
 * the model's thread count there).
 *
 * @module
 */
import type { EngineModel } from "../engine/engine.ts";
import type { HostBatch } from "../model/batch.ts";
import type { ModelConfig } from "../model/config.ts";
import type { ParamLayout } from "../model/param_layout.ts";
import type { LoraPlan } from "../model/lora.ts";
import type { BackendName } from "./backend.ts";
import type { ModelCompute } from "./model_compute.ts";
import type { GradientResult, GradientTask } from "./task.ts";

/** An {@link EngineModel} on a device, as a {@link ModelCompute}. */
export class EngineCompute<T> implements ModelCompute {
  readonly config: ModelConfig;
  readonly layout: ParamLayout;

  /**
   * `model` computes; `backend` and `device` say what it is; `before` runs
   * before every gradient and logits call (and once now); `dispose` also
   * calls `release` (e.g. to close a BLAS handle of the model's own).
   */
  constructor(
    readonly model: EngineModel<T>,
    readonly backend: BackendName,
    readonly device: string,
    readonly hooks: { readonly before?: () => void; readonly release?: () => void } = {},
  ) {
    this.config = model.config;
    this.layout = model.layout;
    hooks.before?.();
  }

  /** {@link EngineModel.setWeights}: a host device keeps `flat` by reference. */
  setWeights(flat: Float32Array): void {
    this.model.setWeights(flat);
  }

  /** {@link EngineModel.setLora}. */
  setLora(plan: LoraPlan | null, trainable?: Float32Array): void {
    this.model.setLora(plan, trainable);
  }

  /** {@link EngineModel.gradient}. */
  gradient(task: GradientTask, out?: Float32Array): Promise<GradientResult> {
    this.hooks.before?.();
    return this.model.gradient(task, out);
  }

  /** {@link EngineModel.logits}. */
  logits(batch: HostBatch): Promise<Float32Array> {
    this.hooks.before?.();
    return this.model.logits(batch);
  }

  /** Frees the device buffers (and whatever `release` frees). */
  dispose(): void {
    this.model.dispose();
    this.hooks.release?.();
  }
}
