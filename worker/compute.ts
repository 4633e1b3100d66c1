/**
 * The worker's side of a run, without the socket: it keeps the run's model
 * config and one cached copy of the weights (by version), and turns each
 * task into a result with {@link microBatchGradient}. No training state
 * lives here (architecture.md, principle 1).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { type ModelConfig, parseModelConfig } from "../shared/model_config.ts";
import { type Objective, type ParamLayout, paramLayout } from "../shared/param_layout.ts";
import { weightTensors } from "../shared/model.ts";
import { microBatchGradient } from "../shared/gradient.ts";
import { f16BitsToF32 } from "../shared/safetensors.ts";
import { compactGrad, gradLayout, type SparseLayout, usedRows } from "../shared/sparse_grad.ts";
import {
  ProtocolError,
  type ResultMessage,
  type TaskMessage,
  validateBatchRanges,
  validateWeightsShape,
  type WeightsMessage,
  type WelcomeMessage,
} from "../shared/protocol.ts";

interface Run {
  readonly runId: string;
  readonly config: ModelConfig;
  readonly layout: ParamLayout;
  readonly objective: Objective;
  readonly dropout: { hidden: number; attention: number };
}

/** Holds the run's model and weights; computes tasks. */
export class WorkerCompute {
  #run: Run | null = null;
  #weights: Record<string, tf.Tensor> | null = null;
  #version = -1;
  #gradLayout: SparseLayout | null = null;

  /** Weights version held (-1: none). */
  get version(): number {
    return this.#version;
  }

  /** The run this worker serves, if any. */
  get runId(): string | null {
    return this.#run?.runId ?? null;
  }

  /** Adopts the run described by a welcome (drops weights of an earlier run). */
  welcome(m: WelcomeMessage): ModelConfig {
    const config = parseModelConfig(m.modelConfig);
    if (this.#run?.runId !== m.runId) this.#dropWeights();
    this.#run = {
      runId: m.runId,
      config,
      layout: paramLayout(config, m.objective),
      objective: m.objective,
      dropout: m.dropout === null
        ? { hidden: config.hiddenDropout, attention: config.attentionDropout }
        : { hidden: m.dropout, attention: m.dropout },
    };
    this.#gradLayout = gradLayout(this.#run.layout, this.#run.objective);
    return config;
  }

  /** Replaces the cached weights. */
  weights(m: WeightsMessage): void {
    const run = this.#need();
    if (m.runId !== run.runId) {
      throw new ProtocolError("stale", `weights for run ${m.runId}, serving ${run.runId}`);
    }
    validateWeightsShape(m, run.layout.total);
    const flat = m.encoding === "f16"
      ? f16BitsToF32(m.data as Uint16Array)
      : m.data as Float32Array;
    this.#dropWeights();
    this.#weights = weightTensors(run.layout, flat);
    this.#version = m.version;
  }

  /** Computes one task on the cached weights. */
  async task(m: TaskMessage): Promise<ResultMessage> {
    const run = this.#need();
    if (m.runId !== run.runId) {
      throw new ProtocolError("stale", `task for run ${m.runId}, serving ${run.runId}`);
    }
    if (!this.#weights || m.weightsVersion !== this.#version) {
      throw new ProtocolError(
        "stale",
        `task needs weights ${m.weightsVersion}, worker holds ${this.#version}`,
      );
    }
    validateBatchRanges(m.batch, run.config);
    const perToken = run.objective === "mlm";
    if (m.batch.labels.length !== (perToken ? m.batch.size * m.batch.seqLen : m.batch.size)) {
      throw new ProtocolError(
        "bad_shape",
        perToken
          ? "an MLM task needs one label per token"
          : "a classification task needs one label per example",
      );
    }
    const r = await microBatchGradient(
      { config: run.config, layout: run.layout, weights: this.#weights },
      {
        step: m.step,
        index: m.index,
        seed: m.seed,
        adversary: m.adversary,
        batch: m.batch,
        dropout: run.dropout,
      },
    );
    // A classifier's word-embedding gradient is non-zero only on the rows the
    // batch looked up: send those. The MLM decoder is tied to the same matrix
    // and its softmax reaches every row, so MLM gradients go dense.
    const rows = this.#gradLayout!.rowWidth > 0 ? usedRows(m.batch.inputIds) : undefined;
    return {
      type: "result",
      taskId: m.taskId,
      step: m.step,
      index: m.index,
      weightsVersion: m.weightsVersion,
      grad: rows ? compactGrad(r.grad, rows, this.#gradLayout!) : r.grad,
      rows,
      loss: r.loss,
      count: r.count,
      timings: { computeMs: r.timings.computeMs, adversaryMs: r.timings.adversaryMs, encodeMs: 0 },
    };
  }

  /** Frees the device memory. */
  dispose(): void {
    this.#dropWeights();
    this.#run = null;
  }

  #need(): Run {
    if (!this.#run) throw new ProtocolError("malformed", "no welcome received yet");
    return this.#run;
  }

  #dropWeights(): void {
    if (this.#weights) tf.dispose(Object.values(this.#weights));
    this.#weights = null;
    this.#version = -1;
  }
}
