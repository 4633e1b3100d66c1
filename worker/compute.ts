/**
 * The worker's side of a run, without the socket: it keeps the run's model
 * config and one cached copy of the weights (by version) in a
 * {@link ModelCompute} of its backend (shared/compute/create.ts: the engine
 * on a device, or tfjs), turns each task into a result with its `gradient`,
 * and each evaluation task into its logits (forward only: its `logits`, the
 * same call the coordinator scores with locally). No training state lives
 * here (docs/architecture.md, principle 1).
 *
 * @module
 */
import { type ModelConfig, parseModelConfig } from "../shared/model/config.ts";
import { type Objective, type ParamLayout, paramLayout } from "../shared/model/param_layout.ts";
import type { ComputeBackend, ModelCompute } from "../shared/compute/model_compute.ts";
import { activeBackend } from "../shared/compute/create.ts";
import { checkLabels } from "../shared/model/targets.ts";
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

/**
 * Holds the run's model and weights; computes tasks. A deterministic run's
 * model is made deterministic (cpu: one BLAS thread; see
 * {@link ComputeBackend.model}).
 */
export class WorkerCompute {
  readonly #backend: ComputeBackend;
  #run: Run | null = null;
  #model: ModelCompute | null = null;
  #version = -1;
  #gradLayout: SparseLayout | null = null;
  /** A classifier task's dense gradient, reused (see task()). */
  #scratch: Float32Array | null = null;

  /** Computes on `backend` (default: the one this process set up last). */
  constructor(backend: ComputeBackend | null = activeBackend()) {
    if (!backend) throw new Error("WorkerCompute: no backend set up (shared/compute/create.ts)");
    this.#backend = backend;
  }

  /** The backend that computes the tasks. */
  get backend(): ComputeBackend {
    return this.#backend;
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
      this.#model?.dispose();
      this.#model = null;
      this.#version = -1;
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
    // A reconnect to the same run keeps the model and the weights it holds.
    if (!this.#model) {
      this.#model = this.#backend.model(config, this.#run.layout, {
        deterministic: m.deterministic,
      });
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
    this.#version = -1;
    this.#model!.setWeights(flat);
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
    // A classifier's dense gradient is compacted (copied) below, so the model
    // may write it into one buffer reused across tasks; an MLM gradient is sent as is.
    const rows = this.#gradLayout!.rowWidth > 0 ? usedRows(m.batch.inputIds) : undefined;
    if (rows) this.#scratch ??= new Float32Array(run.layout.total);
    const r = await this.#model!.gradient(task, rows ? this.#scratch! : undefined);
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
    const logits = await this.#model!.logits(m.batch);
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
    this.#model?.dispose();
    this.#model = null;
    this.#version = -1;
    this.#scratch = null;
    this.#run = null;
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
}
