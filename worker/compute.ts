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
import type { TaskGradient } from "./partial_sum.ts";
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
import { type LoraPlan, loraPlan } from "../shared/model/lora.ts";
import { baseHash } from "../shared/model/base_hash.ts";
import {
  type BaseMessage,
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
  /** LoRA: the plan and the base this run computes on; null: full fine-tuning. */
  readonly lora: { readonly plan: LoraPlan; readonly baseHash: string } | null;
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
  /** LoRA: the hash of the base the model holds (null: none). */
  #baseHash: string | null = null;

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
      this.#baseHash = null;
    }
    const old = this.#run?.lora;
    const lora = m.lora
      ? {
        // A reconnect to the same run keeps the plan object (the model's buffers follow it).
        plan: sameRun && old ? old.plan : loraPlan(config, {
          r: m.lora.r,
          alpha: m.lora.alpha,
          dropout: m.lora.dropout,
          targetModules: m.lora.targetModules,
        }, { trainPooler: m.lora.trainPooler }),
        baseHash: m.lora.baseHash,
      }
      : null;
    this.#run = {
      runId: m.runId,
      config,
      layout: paramLayout(config, m.objective),
      objective: m.objective,
      dropout: m.dropout === null
        ? { hidden: config.hiddenDropout, attention: config.attentionDropout }
        : { hidden: m.dropout, attention: m.dropout },
      lora,
    };
    this.#gradLayout = gradLayout(this.#run.layout, this.#run.objective, lora?.plan.layout);
    // A reconnect to the same run keeps the model and the weights it holds.
    if (!this.#model) {
      this.#model = this.#backend.model(config, this.#run.layout, {
        deterministic: m.deterministic,
      });
    }
    return config;
  }

  /** The layout of this run's results: the model's (row-sparse for a classifier), or LoRA's dense trainable one. */
  get resultLayout(): SparseLayout {
    if (!this.#gradLayout) throw new Error("resultLayout: no run yet (welcome first)");
    return this.#gradLayout;
  }

  /** LoRA: the hash of the base this run needs and the model does not hold yet; else null. */
  get missingBase(): string | null {
    const lora = this.#run?.lora;
    return lora && this.#baseHash !== lora.baseHash ? lora.baseHash : null;
  }

  /** The run's layout (the base's, for a LoRA run). */
  get layout(): ParamLayout | null {
    return this.#run?.layout ?? null;
  }

  /**
   * LoRA: installs the frozen base. It must be the one the welcome named, and
   * hash to it (checked unless `verified`: a base from the worker's own
   * cache, shared/model/base_hash.ts); a base of another hash is refused, never mixed in.
   */
  base(m: Pick<BaseMessage, "runId" | "hash" | "data">, verified = false): void {
    const run = this.#need();
    if (m.runId !== run.runId) {
      throw new ProtocolError("stale", `base for run ${m.runId}, serving ${run.runId}`);
    }
    if (!run.lora) throw new ProtocolError("malformed", "a base for a run without LoRA");
    if (m.hash !== run.lora.baseHash) {
      throw new ProtocolError(
        "malformed",
        `base ${m.hash.slice(0, 12)}… is not this run's (${run.lora.baseHash.slice(0, 12)}…)`,
      );
    }
    if (m.data.length !== run.layout.total) {
      throw new ProtocolError(
        "bad_shape",
        `base.data has ${m.data.length} elements, expected ${run.layout.total}`,
      );
    }
    if (!verified && baseHash(run.layout, m.data) !== m.hash) {
      throw new ProtocolError("malformed", `base.data does not hash to ${m.hash.slice(0, 12)}…`);
    }
    this.#baseHash = null;
    this.#version = -1;
    this.#model!.setWeights(m.data);
    this.#baseHash = m.hash;
  }

  /** Replaces the cached weights (LoRA: the trainable buffer, on the base installed). */
  weights(m: WeightsMessage): void {
    const run = this.#need();
    if (m.runId !== run.runId) {
      throw new ProtocolError("stale", `weights for run ${m.runId}, serving ${run.runId}`);
    }
    const lora = run.lora;
    if (lora && this.#baseHash !== lora.baseHash) {
      throw new ProtocolError("stale", `weights before the base ${lora.baseHash.slice(0, 12)}…`);
    }
    validateWeightsShape(m, lora ? lora.plan.layout.total : run.layout.total);
    const flat = m.encoding === "f16"
      ? f16BitsToF32(m.data as Uint16Array)
      : m.data as Float32Array;
    this.#version = -1;
    if (lora) this.#model!.setLora(lora.plan, flat);
    else this.#model!.setWeights(flat);
    this.#version = m.version;
  }

  /** Computes one task on the cached weights, as the `result` that answers it. */
  async task(m: TaskMessage): Promise<ResultMessage> {
    const g = await this.gradient(m);
    // A classifier's word-embedding gradient is non-zero only on the rows the
    // batch looked up: send those. The MLM decoder is tied to the same matrix
    // and its softmax reaches every row, so MLM gradients go dense.
    return {
      type: "result",
      taskId: m.taskId,
      step: m.step,
      index: m.index,
      weightsVersion: m.weightsVersion,
      grad: g.rows ? compactGrad(g.grad, g.rows, this.#gradLayout!) : g.grad,
      rows: g.rows,
      loss: g.loss,
      count: g.count,
      timings: g.timings,
    };
  }

  /**
   * Computes one task's gradient, unpacked: dense over the result layout,
   * with the word rows the batch used (a classifier's; the only non-zero
   * ones of the word block). A classifier's array is reused by the next call,
   * so take what it holds first — {@link task} packs it into a result, a held
   * task adds it straight into the partial sum (worker/partial_sum.ts).
   */
  async gradient(m: TaskMessage): Promise<TaskGradient> {
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
    // A classifier's gradient is taken (packed or summed) before the next task, so the
    // model may write it into one buffer reused across tasks; an MLM gradient is new each time.
    // LoRA: the trainable gradient is dense (no word-embedding rows train).
    const rows = this.#gradLayout!.rowWidth > 0 && !run.lora
      ? usedRows(m.batch.inputIds)
      : undefined;
    if (rows) this.#scratch ??= new Float32Array(run.layout.total);
    const r = await this.#model!.gradient(task, rows ? this.#scratch! : undefined);
    return {
      grad: r.grad,
      dense: true,
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
    this.#baseHash = null;
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
