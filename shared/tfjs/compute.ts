/**
 * tfjs as a {@link ModelCompute}: a thin adapter over
 * {@link weightTensors}, {@link microBatchGradient} and {@link predictLogits}
 * (and the masked-LM scoring pass the engine does not have). The compute
 * where no BLAS loads and no GPU device exists, and the engine's test oracle.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { TfjsBackendName } from "../compute/backend.ts";
import type { MaskedLmOutput, ModelCompute } from "../compute/model_compute.ts";
import type { GradientResult, GradientTask } from "../compute/task.ts";
import type { HostBatch, LabelledBatch } from "../model/batch.ts";
import type { ModelConfig } from "../model/config.ts";
import type { LoraPlan } from "../model/lora.ts";
import { layoutObjective, type ParamLayout } from "../model/param_layout.ts";
import { checkLabels } from "../model/targets.ts";
import { microBatchGradient } from "./gradient.ts";
import {
  batchTensors,
  type DeviceModel,
  encode,
  mlmLogits,
  NO_DROPOUT,
  predictLogits,
  targetTensors,
  weightTensors,
  wordEmbeddings,
} from "./model.ts";

/** A model on the tfjs backend set up in this process (shared/tfjs/backend.ts). */
export class TfjsCompute implements ModelCompute {
  #weights: Record<string, tf.Tensor> | null = null;
  #lora: { plan: LoraPlan; weights: Record<string, tf.Tensor> } | null = null;

  /** `backend` and `device` say what runs (tfjs must already be set up on it). */
  constructor(
    readonly backend: TfjsBackendName,
    readonly device: string,
    readonly config: ModelConfig,
    readonly layout: ParamLayout,
  ) {}

  /** Uploads the weights as tensors (the previous ones are freed first). */
  setWeights(flat: Float32Array): void {
    this.#drop();
    this.#weights = weightTensors(this.layout, flat);
  }

  /** LoRA on (the trainable tensors uploaded, the previous ones freed) or off. */
  setLora(plan: LoraPlan | null, trainable?: Float32Array): void {
    if (this.#lora) tf.dispose(Object.values(this.#lora.weights));
    this.#lora = null;
    if (!plan) return;
    if (!trainable || trainable.length !== plan.layout.total) {
      throw new Error(
        `setLora: expected ${plan.layout.total} trainable values, got ${trainable?.length}`,
      );
    }
    this.#lora = { plan, weights: weightTensors(plan.layout, trainable) };
  }

  /** {@link microBatchGradient}, copied into `out` when given. */
  async gradient(task: GradientTask, out?: Float32Array): Promise<GradientResult> {
    checkLabels(task.batch.labels, task.batch, layoutObjective(this.layout));
    const total = this.#lora ? this.#lora.plan.layout.total : this.layout.total;
    if (out && out.length !== total) {
      throw new Error(`gradient: out holds ${out.length} values, the layout ${total}`);
    }
    const r = await microBatchGradient(this.#model(), task);
    if (!out) return r;
    out.set(r.grad);
    return { ...r, grad: out };
  }

  /** {@link predictLogits}. */
  logits(batch: HostBatch): Promise<Float32Array> {
    return predictLogits(this.#model(), batch);
  }

  /** The masked-LM outputs of a batch labelled per token, without dropout. */
  readonly maskedLm = async (batch: LabelledBatch): Promise<MaskedLmOutput> => {
    const model = this.#model();
    const bt = batchTensors(model.config, batch);
    const targets = targetTensors(batch.labels, batch);
    if (targets.kind !== "mlm") throw new Error("maskedLm: the batch is not labelled per token");
    const [pred, logp] = tf.tidy(() => {
      const seq = encode(
        model.config,
        model.weights,
        bt,
        wordEmbeddings(model.config, model.weights, bt),
        NO_DROPOUT,
      );
      const logits = mlmLogits(model.config, model.weights, seq, targets.positions);
      const lp = tf.sum(
        tf.mul(tf.logSoftmax(logits), tf.oneHot(targets.ids, model.config.vocabSize)),
        -1,
      );
      return [tf.argMax(logits, -1), lp];
    });
    try {
      const [p, l, ids] = await Promise.all([pred.data(), logp.data(), targets.ids.data()]);
      return {
        ids: Int32Array.from(ids),
        predicted: Int32Array.from(p),
        logProb: l as Float32Array,
      };
    } finally {
      tf.dispose([pred, logp, targets.positions, targets.ids, ...Object.values(bt)]);
    }
  };

  /** Frees the weight tensors. */
  dispose(): void {
    this.#drop();
    this.setLora(null);
  }

  #model(): DeviceModel {
    if (!this.#weights) throw new Error("TfjsCompute: call setWeights first");
    return { config: this.config, layout: this.layout, weights: this.#weights, lora: this.#lora };
  }

  #drop(): void {
    if (this.#weights) tf.dispose(Object.values(this.#weights));
    this.#weights = null;
  }
}
