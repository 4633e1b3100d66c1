/**
 * The worker's side of a run, without the socket: it keeps the run's model
 * config and one cached copy of the weights (by version), and turns each
 * task into a result with {@link microBatchGradient} (tfjs backends) or the
 * native engine's {@link EngineModel} (native backend: every matrix product
 * on the machine's BLAS), and each evaluation task into its logits (forward
 * only: `predictLogits` or `EngineModel.logits`, the same functions the
 * coordinator scores with locally). No training state lives here
 * (docs/architecture.md, principle 1).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { type ModelConfig, parseModelConfig } from "../shared/model/config.ts";
import { type Objective, type ParamLayout, paramLayout } from "../shared/model/param_layout.ts";
import { predictLogits, weightTensors } from "../shared/tfjs/model.ts";
import { microBatchGradient } from "../shared/tfjs/gradient.ts";
import { type GradientResult } from "../shared/compute/task.ts";
import { checkLabels } from "../shared/model/targets.ts";
import { activeBackend } from "../shared/compute/backend.ts";
import type { Blas } from "../shared/engine/devices/cpu/blas.ts";
import type { Gemm } from "../shared/engine/devices/cpu/gemm.ts";
import { EngineModel } from "../shared/engine/engine.ts";
import { cpuDevice } from "../shared/engine/devices/cpu/device.ts";
import { f16BitsToF32 } from "../shared/wire/half_float.ts";
import {
  compactGrad,
  gradLayout,
  type SparseLayout,
  usedRows,
} from "../shared/model/sparse_grad.ts";
import {
  type EvalResultMessage,
  type EvalTaskMessage,
  ProtocolError,
  type ResultMessage,
  type TaskMessage,
  validateBatchRanges,
  validateWeightsShape,
  type WeightsMessage,
  type WelcomeMessage,
} from "../shared/wire/protocol.ts";

interface Run {
  readonly runId: string;
  readonly config: ModelConfig;
  readonly layout: ParamLayout;
  readonly objective: Objective;
  readonly dropout: { hidden: number; attention: number };
}

/** The native engine's matrix products, and the BLAS behind them (for thread control). */
export interface NativeCompute {
  readonly gemm: Gemm;
  readonly blas?: Blas;
  /** BLAS threads outside deterministic runs. */
  readonly threads?: number;
}

/**
 * The native compute of the process's active backend, or null when it is a
 * tfjs backend (webgpu, wasm, cpu).
 */
export function activeNative(): NativeCompute | null {
  const b = activeBackend();
  return b?.name === "native" && b.blas
    ? { gemm: b.blas.gemm, blas: b.blas, threads: b.threads }
    : null;
}

/**
 * Holds the run's model and weights; computes tasks.
 *
 * With native compute, a deterministic run pins the BLAS to one thread:
 * OpenBLAS's sgemm gives different bits with 1 and 2 threads on this model's
 * shapes (measured), and one thread is a count every machine can match.
 */
export class WorkerCompute {
  #run: Run | null = null;
  #weights: Record<string, tf.Tensor> | null = null;
  #native: EngineModel<Float32Array> | null = null;
  #version = -1;
  #gradLayout: SparseLayout | null = null;
  readonly #compute: NativeCompute | null;
  /** BLAS threads this run computes with (null: leave the library's setting). */
  #threads: number | null = null;
  /** The native engine's dense gradient of a classifier task, reused (see task()). */
  #scratch: Float32Array | null = null;

  /** `native`: compute with the native engine (default: when the active backend is native). */
  constructor(native: NativeCompute | null = activeNative()) {
    this.#compute = native;
  }

  /** Which engine computes the tasks. */
  get engine(): "native" | "tfjs" {
    return this.#compute ? "native" : "tfjs";
  }

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
    const sameRun = this.#run?.runId === m.runId;
    if (!sameRun) {
      this.#dropWeights();
      this.#scratch = null;
    }
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
    const c = this.#compute;
    if (c) {
      // A reconnect to the same run keeps the model and the weights it holds.
      if (!sameRun || !this.#native) {
        this.#native = new EngineModel(cpuDevice(c.gemm), config, this.#run.layout);
      }
      this.#threads = m.deterministic ? 1 : (c.threads ?? null);
      this.#applyThreads();
    }
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
    if (this.#native) this.#native.setWeights(flat);
    else this.#weights = weightTensors(run.layout, flat);
    this.#version = m.version;
  }

  /** Computes one task on the cached weights. */
  async task(m: TaskMessage): Promise<ResultMessage> {
    const run = this.#current(m);
    validateBatchRanges(m.batch, run.config);
    try {
      checkLabels(m.batch.labels, m.batch, run.objective);
    } catch (e) {
      throw new ProtocolError("bad_shape", (e as Error).message);
    }
    const task = {
      step: m.step,
      index: m.index,
      seed: m.seed,
      adversary: m.adversary,
      batch: m.batch,
      dropout: run.dropout,
    };
    // A classifier's dense gradient is compacted (copied) below, so the engine
    // may write it into one buffer reused across tasks; an MLM gradient is sent as is.
    const rows = this.#gradLayout!.rowWidth > 0 ? usedRows(m.batch.inputIds) : undefined;
    if (this.#native) this.#applyThreads();
    if (this.#native && rows) this.#scratch ??= new Float32Array(run.layout.total);
    const r: GradientResult = this.#native
      ? await this.#native.gradient(task, rows ? this.#scratch! : undefined)
      : await microBatchGradient(
        { config: run.config, layout: run.layout, weights: this.#weights! },
        task,
      );
    // A classifier's word-embedding gradient is non-zero only on the rows the
    // batch looked up: send those. The MLM decoder is tied to the same matrix
    // and its softmax reaches every row, so MLM gradients go dense.
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

  /**
   * The logits of one evaluation batch on the cached weights: forward only,
   * no dropout, no perturbation. Classification and regression runs only (an
   * MLM run's held-out scoring stays on the coordinator).
   */
  async evaluate(m: EvalTaskMessage): Promise<EvalResultMessage> {
    const run = this.#current(m);
    if (run.objective !== "classify") {
      throw new ProtocolError("malformed", "an MLM run is not evaluated on the workers");
    }
    validateBatchRanges(m.batch, run.config);
    const t0 = performance.now();
    if (this.#native) this.#applyThreads();
    const logits = this.#native ? await this.#native.logits(m.batch) : await predictLogits(
      { config: run.config, layout: run.layout, weights: this.#weights! },
      m.batch,
    );
    return {
      type: "eval_result",
      taskId: m.taskId,
      step: m.step,
      index: m.index,
      weightsVersion: m.weightsVersion,
      logits,
      timings: { computeMs: performance.now() - t0, adversaryMs: 0, encodeMs: 0 },
    };
  }

  /** Frees the device memory. */
  dispose(): void {
    this.#dropWeights();
    this.#native = null;
    this.#scratch = null;
    this.#run = null;
  }

  /** Puts the BLAS at this run's thread count (the setting is per process, shared with any other user). */
  #applyThreads(): void {
    const blas = this.#compute?.blas;
    if (!blas?.threadControl || this.#threads === null) return;
    if (blas.threads() !== this.#threads) blas.setThreads(this.#threads);
  }

  /** The run a task or eval_task is for, when it is this one on the weights held; else `stale`. */
  #current(m: TaskMessage | EvalTaskMessage): Run {
    const run = this.#need();
    if (m.runId !== run.runId) {
      throw new ProtocolError("stale", `${m.type} for run ${m.runId}, serving ${run.runId}`);
    }
    if (this.#version < 0 || m.weightsVersion !== this.#version) {
      throw new ProtocolError(
        "stale",
        `${m.type} needs weights ${m.weightsVersion}, worker holds ${this.#version}`,
      );
    }
    return run;
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
