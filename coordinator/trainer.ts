/**
 * One training run, step by step (docs/method.md): for step t, split the global
 * batch into micro-batches, have the workers compute g_j, combine them in
 * index order, clip, apply LAMB/AdamW, publish the new weights version.
 * Evaluates, checkpoints and reports along the way. What the run starts from
 * is assembled by coordinator/trainer_setup.ts; the held-out split scored on
 * the coordinator itself by coordinator/local_eval.ts.
 *
 * @module
 */
import { adversaryAt } from "../shared/method/adversary_config.ts";
import type { BatchEvalModel, EvalResult } from "../shared/eval/held_out.ts";
import { saveCheckpoint } from "../shared/io/checkpoint.ts";
import { maxSequenceLength, type ModelConfig, toHfConfig } from "../shared/model/config.ts";
import { lossItems } from "../shared/model/targets.ts";
import type { ParamLayout } from "../shared/model/param_layout.ts";
import { encodeMessage, type HelloMessage, type WelcomeMessage } from "../shared/wire/protocol.ts";
import { BufferPool, CHUNK_BYTES, type Outgoing } from "../shared/wire/transfer.ts";
import { WeightsOut } from "./weights_out.ts";
import { bertBaseUncasedVocab, vocabToTxt } from "../shared/text/vocab.ts";
import { clipByGlobalNorm } from "./grad_combine.ts";
import {
  dispatchWindow,
  GradAccumulator,
  maxResultBytes,
  releaseInto,
} from "./grad_accumulator.ts";
import { learningRate, resolveWarmup } from "./lr_schedule.ts";
import { type OptimizerState, optimizerStep, type StepStats } from "./optimizer.ts";
import type { DataPlan } from "./data_plan.ts";
import { replaceDirectory } from "../shared/io/atomic_write.ts";
import { gradLayout, type SparseLayout } from "../shared/model/sparse_grad.ts";
import type { LoraRun } from "./lora_run.ts";
import { type RunConfig, storedSettings } from "./run_config.ts";
import { type RunState, saveRunState } from "./run_state.ts";
import {
  type ResultMode,
  type ResultSummary,
  type Scheduler,
  StepFailedError,
  type StepTask,
} from "./scheduler.ts";
import { meshLogits } from "./mesh_eval.ts";
import { trainingTaskId } from "./task_ids.ts";
import type { TrainingData } from "./training_data.ts";
import { type TrainerParts, trainerParts } from "./trainer_setup.ts";
import { evaluateLocally } from "./local_eval.ts";
import type { BestModel } from "./best_model.ts";
import type { LoggedStep, RunLog, StepTimings } from "./run_log.ts";

export type { StepTimings };

/** What one finished step reports: what the run log keeps, and more. */
export interface StepReport extends LoggedStep {
  readonly trustRatio: { readonly min: number; readonly mean: number; readonly max: number };
  readonly weightsBytes: number;
}

/** Hooks for progress output and metrics. */
export interface TrainerObserver {
  step?(r: StepReport): void;
  evaluated?(step: number, split: string, result: EvalResult): void;
  checkpointed?(step: number, folder: string): void;
  log?(line: string): void;
}

/** Thrown into a running step when the run is asked to stop. */
export class StopRequested extends Error {
  override name = "StopRequested";
}

/** The run's final numbers. */
export interface RunSummary {
  readonly steps: number;
  readonly stopped: boolean;
  readonly evaluation: EvalResult | null;
  readonly elapsedMs: number;
  readonly savedTo: string | null;
  /** With `--eval-every`: the best evaluation's step and value (coordinator/best_model.ts). */
  readonly best: { readonly step: number; readonly metric: string; readonly value: number } | null;
  /** Ended by `--early-stopping-patience` before its last step. */
  readonly earlyStopped: boolean;
}

/** min/mean/max of the LAMB trust ratios of the tensors that use them. */
function trustSummary(layout: ParamLayout, ratios: Float64Array): StepReport["trustRatio"] {
  const used = layout.specs.flatMap((spec, i) => (spec.decay ? [ratios[i]] : []));
  if (used.length === 0) return { min: 1, mean: 1, max: 1 };
  return {
    min: Math.min(...used),
    max: Math.max(...used),
    mean: used.reduce((a, b) => a + b, 0) / used.length,
  };
}

/**
 * Where a step's time went. `transferMs` is the wait not explained by
 * compute: the wait minus the larger of the slowest micro-batch and the
 * compute spread evenly over the workers.
 */
function stepTimings(
  results: readonly ResultSummary[],
  marks: { t0: number; t1: number; t2: number; t3: number; encodeMs: number; sumMs: number },
  workers: number,
): StepTimings {
  let computeMs = 0, adversaryMs = 0, busiest = 0;
  for (const r of results) {
    computeMs += r.timings.computeMs;
    adversaryMs += r.timings.adversaryMs;
    busiest = Math.max(busiest, r.timings.computeMs);
  }
  const waitMs = marks.t1 - marks.t0;
  return {
    waitMs,
    computeMs,
    adversaryMs,
    transferMs: Math.max(0, waitMs - Math.max(busiest, computeMs / Math.max(1, workers))),
    averageMs: marks.sumMs + marks.t2 - marks.t1,
    optimizerMs: marks.t3 - marks.t2,
    encodeMs: marks.encodeMs,
    stepMs: performance.now() - marks.t0,
  };
}

/** How a {@link Trainer} treats its workers' results. */
export interface TrainerOptions {
  /**
   * Receive results into recycled memory, {@link Trainer.receivePool}
   * (default false; the coordinator turns it on): once summed, a result's
   * gradient goes back to the pool. Otherwise each lands in fresh memory and
   * is freed once summed.
   */
  readonly recycleResults?: boolean;
}

/** A run: its data, model, optimizer state and the loop that trains it. */
export class Trainer {
  readonly startedAt = performance.now();
  #stopping = false;
  /** Evaluations run on the workers so far (keeps their task ids apart). */
  #evalRounds = 0;
  #weightsFrame: Outgoing = new Uint8Array();
  readonly #weightsOut = new WeightsOut();
  /** The backend a deterministic run is pinned to: its first worker's, kept across resumes. */
  #backend: string | null;
  lastEval: EvalResult | null = null;
  // The parts Trainer.create assembled (TrainerParts), set by the constructor.
  /** The resolved run configuration (a resumed run's comes from its checkpoint). */
  declare readonly config: RunConfig;
  declare readonly runId: string;
  declare readonly modelConfig: ModelConfig;
  declare readonly layout: ParamLayout;
  declare readonly weights: Float32Array;
  declare readonly optimizer: OptimizerState;
  /** Steps completed. */
  declare step: number;
  declare weightsVersion: number;
  declare readonly totalSteps: number;
  declare readonly plan: DataPlan;
  declare readonly data: TrainingData;
  declare readonly tokenizerDir: string | null;
  declare readonly notes: string[];
  /** metrics.jsonl and trainer_state.json's history (coordinator/run_log.ts). */
  declare readonly runLog: RunLog;
  /** The best evaluation so far and early stopping (coordinator/best_model.ts). */
  declare readonly best: BestModel;
  /**
   * A LoRA run (coordinator/lora_run.ts): the optimizer, the weights
   * messages and the gradients are over its trainable layout; `weights` is
   * the frozen base. Null: full fine-tuning.
   */
  declare readonly lora: LoraRun | null;
  /** Warmup in steps (`--warmup` resolved against the run's length). */
  readonly warmupSteps: number;
  /** How results carry gradients (row-sparse word embeddings). */
  readonly gradLayout: SparseLayout;
  /**
   * How the workers' gradients come back (docs/protocol.md, "Held tasks"):
   * `--results per-micro-batch`, else one partial per worker per step, or,
   * in a deterministic run, one per task of `--group` micro-batches.
   */
  readonly resultMode: ResultMode;
  /**
   * Micro-batches dispatched or answered ahead of the accumulated prefix, at
   * most: the largest result times this stays within RESULT_BUDGET_BYTES.
   * The scheduler's `window` (coordinator/coordinator.ts).
   */
  readonly dispatchWindow: number;
  /**
   * The memory workers' results are received into (coordinator/server.ts),
   * with room for `dispatchWindow` of them; undefined: each result lands in fresh
   * memory (see {@link TrainerOptions.recycleResults}).
   */
  readonly receivePool: BufferPool | undefined;
  /**
   * Sums each step's results as they arrive (its float64 buffer lives for the
   * run) and hands each one, once summed, back to `receivePool` (or frees it).
   */
  readonly accumulator: GradAccumulator;

  private constructor(parts: TrainerParts, options: TrainerOptions) {
    const { backend, ...fields } = parts;
    Object.assign(this, fields);
    this.#backend = backend;
    const { training, data } = parts.config;
    this.warmupSteps = resolveWarmup(training.schedule.warmup, parts.totalSteps);
    this.gradLayout = gradLayout(parts.layout, training.objective, parts.lora?.plan.layout);
    this.resultMode = training.results === "per-micro-batch"
      ? "per-micro-batch"
      : training.deterministic
      ? "per-group"
      : "per-worker";
    const tokens = training.microBatch *
      Math.min(data.maxLen, maxSequenceLength(parts.modelConfig));
    this.dispatchWindow = dispatchWindow(maxResultBytes(this.gradLayout, tokens));
    // docs/platform.md, "Large frames and BLAS": fresh pages, not copies, bound the upload.
    this.receivePool = options.recycleResults
      ? new BufferPool(this.dispatchWindow, {
        reserveElements: this.gradLayout.total,
        minBytes: CHUNK_BYTES,
      })
      : undefined;
    this.accumulator = new GradAccumulator(this.gradLayout, {
      release: releaseInto(this.receivePool),
    });
  }

  /**
   * Loads data, model (or the run being resumed) and sets up the plan
   * (coordinator/trainer_setup.ts).
   */
  static async create(given: RunConfig, options: TrainerOptions = {}): Promise<Trainer> {
    return new Trainer(await trainerParts(given), options);
  }

  /** The backend every worker must use (deterministic runs, once pinned); null: any. */
  get pinnedBackend(): string | null {
    return this.#backend;
  }

  /** A worker joined on `backend`: the first one pins a deterministic run to it. */
  joinedWith(backend: string): void {
    if (this.config.training.deterministic) this.#backend ??= backend;
  }

  /** The layout the optimizer, weights messages and gradients are over (LoRA: the trainable one). */
  get trainLayout(): ParamLayout {
    return this.lora?.plan.layout ?? this.layout;
  }

  /** What the optimizer updates (LoRA: the trainable buffer). */
  get trainWeights(): Float32Array {
    return this.lora?.trainable ?? this.weights;
  }

  /**
   * LoRA: the `base` message for a worker whose hello does not list the
   * base's hash (sent right after its welcome); else null.
   */
  baseFor(hello?: Pick<HelloMessage, "bases">): Outgoing | null {
    return this.lora?.baseFor(this.runId, hello) ?? null;
  }

  /** The welcome every worker receives (LoRA: says whether the base follows, from `hello.bases`). */
  welcome(workerId: string, hello?: Pick<HelloMessage, "bases">): WelcomeMessage {
    return {
      type: "welcome",
      workerId,
      runId: this.runId,
      modelConfig: toHfConfig(this.modelConfig),
      objective: this.config.training.objective,
      dropout: this.config.training.dropout,
      deterministic: this.config.training.deterministic,
      ...(this.lora ? { lora: this.lora.welcome(hello) } : {}),
      gradEncoding: this.config.training.gradEncoding,
    };
  }

  /** The prepared weights of the current version (f32, or f16 with `--weights-encoding f16`). */
  weightsFrame(): Outgoing {
    return this.#weightsFrame;
  }

  #encodeWeights(): number {
    const t0 = performance.now();
    const f16 = this.config.training.weightsEncoding === "f16";
    this.#weightsFrame = this.#weightsOut.prepare(
      this.runId,
      this.weightsVersion,
      this.trainWeights,
      f16 ? "f16" : "f32",
    );
    return performance.now() - t0;
  }

  /** Asks the run to stop after checkpointing; the running step is abandoned. */
  stop(scheduler: Scheduler): void {
    if (this.#stopping) return;
    this.#stopping = true;
    scheduler.abort(new StopRequested("stop requested"));
  }

  /** The micro-batch tasks of step t, encoded. */
  #tasks(t: number): { tasks: StepTask[]; items: number[]; tokens: number; mode: string } {
    const { adversary: adv, adversaryStart } = this.config.training;
    const adversary = adversaryAt(adv, t, this.totalSteps, adversaryStart);
    let tokens = 0;
    const items: number[] = [];
    const hold = this.resultMode !== "per-micro-batch";
    const tasks = this.plan.step(t).microBatches.map((indices, index) => {
      const batch = this.data.train.batch(indices, t);
      for (const m of batch.attentionMask) tokens += m;
      items[index] = lossItems(batch.labels, batch);
      const taskId = trainingTaskId(t, index);
      return {
        taskId,
        index,
        count: batch.size,
        items: items[index],
        frame: encodeMessage({
          type: "task",
          taskId,
          runId: this.runId,
          step: t,
          index,
          weightsVersion: this.weightsVersion,
          seed: this.config.training.seed,
          adversary,
          batch,
          hold,
        }),
      };
    });
    return {
      tasks,
      items,
      tokens,
      mode: adversary.mode === "off" ? "off" : `${adversary.mode} K=${adversary.steps}`,
    };
  }

  /** Trains until the last step (or a stop), then evaluates and saves. */
  async run(scheduler: Scheduler, given: TrainerObserver = {}): Promise<RunSummary> {
    const observer = this.runLog.observe(given);
    this.#encodeWeights();
    scheduler.setWeights(this.weightsVersion, this.#weightsFrame);
    // A stop asked for between steps (during an evaluation or a checkpoint) ends the loop too.
    while (this.step < this.totalSteps && !this.#stopping && !this.best.exhausted) {
      let report: StepReport;
      try {
        report = await this.trainStep(this.step, scheduler);
      } catch (e) {
        if (e instanceof StopRequested) break;
        throw e;
      }
      observer.step?.(report);
      await this.#betweenSteps(scheduler, observer);
    }
    return this.step < this.totalSteps && !this.best.exhausted
      ? await this.#stopped(observer)
      : await this.#finish(scheduler, observer);
  }

  /**
   * Step t (0-based) of docs/method.md: its micro-batches computed by the
   * workers and summed in index order, clipped, applied by the optimizer,
   * and the new weights version published. Returns the step's report; throws
   * {@link StopRequested} when the run is stopped during it.
   */
  async trainStep(t: number, scheduler: Scheduler): Promise<StepReport> {
    const t0 = performance.now();
    const { tasks, items, tokens, mode } = this.#tasks(t);
    const acc = this.accumulator;
    // n_j comes from the batch the coordinator made, not from the worker.
    const results = this.resultMode;
    acc.begin(items, results === "per-worker" ? "arrival" : "index");
    const answers = await scheduler.runStep(t, tasks, {
      accept: (r) => acc.add({ index: r.index, grad: r.grad, rows: r.rows, loss: r.loss }),
      acceptSum: (p) => acc.addSum(p),
      results,
      group: this.config.training.group,
      runId: this.runId,
      // Partials of a per-worker step are summed as they come: nothing waits, no window.
      window: results === "per-worker" ? tasks.length : undefined,
    });
    const t1 = performance.now();
    const { grad, loss, norm: gradNorm } = acc.finish();
    const { clip } = this.config.training.optimizer;
    const { norm, clipped } = clip > 0
      ? clipByGlobalNorm(grad, clip, gradNorm)
      : { norm: gradNorm, clipped: false };
    const t2 = performance.now();
    const { lr, stats } = this.#applyOptimizer(t, grad);
    const t3 = performance.now();
    this.step = t + 1;
    this.weightsVersion++;
    const encodeMs = this.#encodeWeights();
    scheduler.setWeights(this.weightsVersion, this.#weightsFrame);
    return {
      step: this.step,
      totalSteps: this.totalSteps,
      loss,
      lr,
      gradNorm: norm,
      clipped,
      updateNorm: stats.updateNorm,
      trustRatio: trustSummary(this.trainLayout, stats.trustRatios),
      examples: answers.reduce((a, r) => a + r.count, 0),
      tokens,
      adversary: mode,
      microBatches: answers.length,
      weightsBytes: this.#weightsFrame.byteLength,
      timings: stepTimings(
        answers,
        { t0, t1, t2, t3, encodeMs, sumMs: acc.sumMs },
        scheduler.workers.size,
      ),
      elapsedMs: performance.now() - this.startedAt,
    };
  }

  /** The scheduled learning rate of step t and the optimizer step applied with it. */
  #applyOptimizer(t: number, grad: Float32Array): { lr: number; stats: StepStats } {
    const opt = this.config.training.optimizer;
    const { kind } = this.config.training.schedule;
    const lr = learningRate(t + 1, this.totalSteps, opt.lr, this.warmupSteps, kind);
    const stats = optimizerStep(this.trainLayout, this.trainWeights, grad, this.optimizer, lr, opt);
    return { lr, stats };
  }

  /** The evaluations and checkpoints due after a step (not after the last: the end does those). */
  async #betweenSteps(scheduler: Scheduler, observer: TrainerObserver): Promise<void> {
    if (this.step === this.totalSteps) return;
    const due = (every: number) => every > 0 && this.step % every === 0;
    if (due(this.config.training.evalEvery)) {
      await this.#select(await this.evaluate(observer, scheduler), observer);
    }
    if (this.config.io.save && due(this.config.io.checkpointEvery)) await this.checkpoint(observer);
  }

  /** A stopped run: checkpointed (with `--save`), not evaluated. */
  async #stopped(observer: TrainerObserver): Promise<RunSummary> {
    observer.log?.(`stopping at step ${this.step}/${this.totalSteps}`);
    if (this.config.io.save) await this.checkpoint(observer);
    return this.#summary(true, null, this.config.io.save);
  }

  /** A finished run: evaluated, then checkpointed and saved (with `--save`). */
  async #finish(scheduler: Scheduler, observer: TrainerObserver): Promise<RunSummary> {
    // Early stopping comes right after an evaluation of these weights.
    const evaluation = this.best.exhausted
      ? this.lastEval
      : await this.#select(await this.evaluate(observer, scheduler), observer);
    const { save } = this.config.io;
    if (save) {
      await this.checkpoint(observer);
      await this.saveModel(save);
    }
    return this.#summary(false, evaluation, save);
  }

  #summary(stopped: boolean, evaluation: EvalResult | null, savedTo: string | null): RunSummary {
    const elapsedMs = performance.now() - this.startedAt;
    const { step, value, metric, exhausted: earlyStopped } = this.best;
    const best = step !== null && value !== null ? { step, metric, value } : null;
    return { steps: this.step, stopped, evaluation, elapsedMs, savedTo, best, earlyStopped };
  }

  /**
   * With `--eval-every`, an evaluation is weighed for model selection: a new
   * best's model is saved to `DIR/best` (with `--save`); early stopping is
   * announced. Returns the evaluation.
   */
  async #select(result: EvalResult | null, observer: TrainerObserver): Promise<EvalResult | null> {
    if (!result || this.config.training.evalEvery === 0) return result;
    const { save } = this.config.io;
    if (this.best.consider(this.step, result)) {
      const to = save ? await this.saveModel(save, "best") : null;
      observer.log?.(this.best.newBestLine(to));
    } else if (this.best.exhausted) observer.log?.(this.best.stopLine(this.step));
    return result;
  }

  /**
   * Scores the held-out split. Given the run's scheduler with at least one
   * worker connected, a classification or regression run is scored on the
   * workers (coordinator/mesh_eval.ts: forward-only tasks, every batch in
   * flight at once, on the current weights version; the metrics computed
   * here from their logits by the same code as local scoring). Otherwise —
   * no worker connected, an MLM run (see `evaluateMlm`), or a batch that no
   * worker could answer validly — it is scored on the coordinator's own
   * backend. Workers that all leave mid-evaluation are waited for, as in a
   * step. Returns null when the run is stopped during it, or when there is
   * no held-out split.
   */
  async evaluate(
    observer: TrainerObserver = {},
    scheduler?: Scheduler,
  ): Promise<EvalResult | null> {
    if (scheduler && this.data.logitsOnly && scheduler.workers.size > 0) {
      try {
        const result = await this.#evaluateOnMesh(scheduler, observer);
        if (result) {
          this.lastEval = result;
          observer.evaluated?.(this.step, "eval", result);
        }
        return result;
      } catch (e) {
        if (e instanceof StopRequested) return null;
        if (!(e instanceof StepFailedError)) throw e;
        observer.log?.(`evaluation on the workers failed (${e.message}); evaluating here instead`);
      }
    }
    return await this.#evaluateHere(observer);
  }

  /** {@link evaluate} on the workers. */
  async #evaluateOnMesh(
    scheduler: Scheduler,
    observer: TrainerObserver,
  ): Promise<EvalResult | null> {
    const t0 = performance.now();
    if (scheduler.weightsVersion !== this.weightsVersion) {
      this.#encodeWeights();
      scheduler.setWeights(this.weightsVersion, this.#weightsFrame);
    }
    // An f16 run's workers hold f16-rounded weights: the evaluation sends them
    // the f32 ones, and training the f16 ones again afterwards.
    const f16 = this.config.training.weightsEncoding === "f16";
    if (f16) {
      const out = this.#weightsOut.prepare(
        this.runId,
        this.weightsVersion,
        this.trainWeights,
        "f32",
      );
      scheduler.setWeights(this.weightsVersion, out);
    }
    const workers = scheduler.workers.size;
    try {
      const model: BatchEvalModel = {
        config: this.modelConfig,
        logitsAll: meshLogits(scheduler, {
          runId: this.runId,
          step: this.step,
          weightsVersion: this.weightsVersion,
          numLabels: this.modelConfig.numLabels,
          round: this.#evalRounds++,
        }),
      };
      const result = await this.data.evaluate(model, this.config.data.evalLimit);
      if (result) {
        observer.log?.(
          `evaluated ${result.examples} examples on ${workers} worker(s) in ${
            ((performance.now() - t0) / 1000).toFixed(1)
          } s`,
        );
      }
      return result;
    } finally {
      if (f16) scheduler.setWeights(this.weightsVersion, this.#weightsFrame);
    }
  }

  /** {@link evaluate} on the coordinator's own backend (coordinator/local_eval.ts). */
  async #evaluateHere(observer: TrainerObserver): Promise<EvalResult | null> {
    const result = await evaluateLocally({
      modelConfig: this.modelConfig,
      layout: this.layout,
      // LoRA: the merged model computes the same logits (to float rounding).
      weights: this.lora ? this.lora.merged() : this.weights,
      data: this.data,
      evalLimit: this.config.data.evalLimit,
      deterministic: this.config.training.deterministic,
    }, (line) => observer.log?.(line));
    if (!result) return null;
    this.lastEval = result;
    observer.evaluated?.(this.step, "eval", result);
    return result;
  }

  /** The run state as of the last completed step. */
  state(): RunState {
    return {
      modelConfig: this.modelConfig,
      weights: this.weights,
      objective: this.config.training.objective,
      optimizer: this.optimizer,
      step: this.step,
      weightsVersion: this.weightsVersion,
      runId: this.runId,
      backend: this.#backend,
      runConfig: storedSettings(this.config),
      best: this.best.state(),
      trainerState: this.runLog.trainerState({
        globalStep: this.step,
        maxSteps: this.totalSteps,
        evalSteps: this.config.training.evalEvery,
        saveSteps: this.config.io.checkpointEvery,
        trainBatchSize: this.config.training.globalBatch,
        best: this.best.step === null ? null : {
          metric: this.best.metric,
          value: this.best.value,
          step: this.best.step,
          checkpoint: this.config.io.save ? `${this.config.io.save}/best` : null,
        },
      }),
      lora: this.lora
        ? { plan: this.lora.plan, trainable: this.lora.trainable, baseHash: this.lora.baseHash }
        : null,
    };
  }

  /** Writes a resumable checkpoint under --save. */
  async checkpoint(observer: TrainerObserver = {}): Promise<void> {
    if (!this.config.io.save) return;
    const dir = await this.#tokenizerSource();
    const folder = await saveRunState(this.config.io.save, this.state(), dir, {
      limit: this.config.io.saveTotalLimit,
      protectStep: this.best.step,
    });
    observer.checkpointed?.(this.step, folder);
  }

  /** Saves the model as a Hugging Face folder at `dir/name` (`model`: the final one), replaced as a whole. */
  async saveModel(dir: string, name = "model"): Promise<string> {
    const out = `${dir}/${name}`;
    await Deno.mkdir(dir, { recursive: true });
    const tokenizerFrom = await this.#tokenizerSource();
    const lora = this.lora;
    if (lora) {
      // LoRA: a PEFT adapter folder; --merge: the merged model at DIR/merged (final model only).
      await replaceDirectory(out, (tmp) => lora.save(tmp, { copyTokenizerFrom: tokenizerFrom }));
      if (name === "model" && lora.merge) {
        await replaceDirectory(`${dir}/merged`, (tmp) =>
          lora.saveMerged(tmp, {
            dtype: this.config.io.saveDtype,
            maxShardBytes: this.config.io.saveShardBytes,
            copyTokenizerFrom: tokenizerFrom,
          }));
      }
      return out;
    }
    await replaceDirectory(out, (tmp) =>
      saveCheckpoint(tmp, {
        config: this.modelConfig,
        weights: this.weights,
        objective: this.config.training.objective,
      }, {
        dtype: this.config.io.saveDtype,
        maxShardBytes: this.config.io.saveShardBytes,
        copyTokenizerFrom: tokenizerFrom,
      }));
    return out;
  }

  /** A folder with the run's tokenizer files (the default vocabulary is written out once). */
  async #tokenizerSource(): Promise<string> {
    if (this.tokenizerDir) return this.tokenizerDir;
    const dir = await Deno.makeTempDir({ prefix: "adaptmesh-vocab-" });
    await Deno.writeTextFile(`${dir}/vocab.txt`, vocabToTxt(bertBaseUncasedVocab()));
    return dir;
  }
}
