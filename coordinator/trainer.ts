/**
 * One training run, step by step (docs/method.md): for step t, split the global
 * batch into micro-batches, have the workers compute g_j, combine them in
 * index order, clip, apply LAMB/AdamW, publish the new weights version.
 * Evaluates, checkpoints and reports along the way.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { adversaryAt } from "../shared/adversary.ts";
import { initBackend } from "../shared/backend.ts";
import { loadTask } from "../shared/data/task.ts";
import { freshDefaultModel, loadModel } from "../shared/default_model.ts";
import { loadCheckpoint, saveCheckpoint, TOKENIZER_FILES } from "../shared/checkpoint.ts";
import { classificationData, pretrainingData, type TrainingData } from "./training_data.ts";
import { type BatchEvalModel, type EvalResult, withHostLogits } from "../shared/evaluate.ts";
import { type ModelConfig, toHfConfig } from "../shared/model_config.ts";
import { type DeviceModel, lossItems, weightTensors } from "../shared/model.ts";
import { type ParamLayout, paramLayout } from "../shared/param_layout.ts";
import { encodeMessage, type WelcomeMessage } from "../shared/protocol.ts";
import type { Outgoing } from "../shared/transfer.ts";
import { WeightsOut } from "./weights_out.ts";
import { loadTokenizer } from "../shared/tokenizer.ts";
import { bertBaseUncasedVocab, vocabToTxt } from "../shared/vocab.ts";
import { clipByGlobalNorm } from "./grad_combine.ts";
import {
  type AccumulatorPart,
  dispatchWindow,
  freeArrays,
  GradAccumulator,
  maxResultBytes,
} from "./grad_accumulator.ts";
import { learningRate, resolveWarmup } from "./lr_schedule.ts";
import { createOptimizerState, type OptimizerState, optimizerStep } from "./optimizer.ts";
import { DataPlan } from "./data_plan.ts";
import { replaceDirectory } from "../shared/atomic_write.ts";
import { MlmSet } from "./mlm_data.ts";
import { gradLayout, type SparseLayout } from "../shared/sparse_grad.ts";
import { type RunConfig, trainingFields } from "./run_config.ts";
import { loadRunState, type RunState, saveRunState } from "./run_state.ts";
import { type ResultSummary, type Scheduler, StepFailedError, type StepTask } from "./scheduler.ts";
import { meshLogits } from "./mesh_eval.ts";

/** Where the time of one step went, in ms. */
export interface StepTimings {
  /** Wall time from dispatch to the last accepted result. */
  readonly waitMs: number;
  /** Σ over micro-batches of worker compute (adversary included). */
  readonly computeMs: number;
  /** Σ over micro-batches of the adversary's share. */
  readonly adversaryMs: number;
  /** Wait time not explained by the busiest worker's compute: network, queueing, decoding. */
  readonly transferMs: number;
  /**
   * Combining the results: adding each into the sum as it arrived (inside
   * the wait) plus the final division, norm and clipping.
   */
  readonly averageMs: number;
  /** LAMB or AdamW over every parameter. */
  readonly optimizerMs: number;
  /** Encoding the new weights frame. */
  readonly encodeMs: number;
  readonly stepMs: number;
}

/** What one finished step reports. */
export interface StepReport {
  /** 1-based count of completed steps. */
  readonly step: number;
  readonly totalSteps: number;
  readonly loss: number;
  readonly lr: number;
  readonly gradNorm: number;
  readonly clipped: boolean;
  readonly trustRatio: { readonly min: number; readonly mean: number; readonly max: number };
  readonly examples: number;
  readonly tokens: number;
  readonly adversary: string;
  readonly microBatches: number;
  readonly weightsBytes: number;
  readonly timings: StepTimings;
  readonly elapsedMs: number;
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
}

/** Copies a folder's tokenizer files into a new temp folder. */
async function copyTokenizerFiles(from: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "adaptmesh-tokenizer-" });
  for (const f of TOKENIZER_FILES) {
    await Deno.copyFile(`${from}/${f}`, `${dir}/${f}`).catch(() => {});
  }
  return dir;
}

/** Fresh weights for pre-training (or the MLM head added to a given encoder). */
async function loadPretrainingModel(dir: string | null, seed: number) {
  if (dir) return { ...(await loadCheckpoint(dir, { objective: "mlm", seed })), dir };
  return {
    ...freshDefaultModel({ numLabels: 2, seed, objective: "mlm" }),
    notes: [`pre-training a fresh small BERT (seed ${seed})`],
  };
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

/** A run: its data, model, optimizer state and the loop that trains it. */
export class Trainer {
  readonly startedAt = performance.now();
  #stopping = false;
  /** Evaluations run on the workers so far (keeps their task ids apart). */
  #evalRounds = 0;
  #weightsFrame: Outgoing = new Uint8Array();
  readonly #weightsOut = new WeightsOut();
  lastEval: EvalResult | null = null;
  /** How results carry gradients (row-sparse word embeddings). */
  readonly gradLayout: SparseLayout;
  /** Sums each step's results as they arrive (its float64 buffer lives for the run). */
  readonly accumulator: GradAccumulator;
  /**
   * What happens to a result once it is summed: by default its arrays are
   * freed at once (`freeArrays`; nothing else reads them); a receiver's
   * buffer pool may take them instead (MeshContext.receivePool).
   */
  releaseResult: (part: AccumulatorPart) => void = freeArrays;
  /**
   * Micro-batches dispatched or answered ahead of the accumulated prefix, at
   * most: the largest result times this stays within RESULT_BUDGET_BYTES.
   */
  readonly dispatchWindow: number;

  private constructor(
    readonly config: RunConfig,
    readonly runId: string,
    readonly modelConfig: ModelConfig,
    readonly layout: ParamLayout,
    readonly weights: Float32Array,
    readonly optimizer: OptimizerState,
    public step: number,
    public weightsVersion: number,
    readonly totalSteps: number,
    readonly plan: DataPlan,
    readonly data: TrainingData,
    readonly tokenizerDir: string | null,
    readonly notes: string[],
  ) {
    this.gradLayout = gradLayout(layout, config.objective);
    this.accumulator = new GradAccumulator(this.gradLayout, {
      release: (p) => this.releaseResult(p),
    });
    const tokens = config.microBatch * Math.min(config.maxLen, modelConfig.maxPositions);
    this.dispatchWindow = dispatchWindow(maxResultBytes(this.gradLayout, tokens));
  }

  /** Loads data, model (or the run being resumed) and sets up the plan. */
  static async create(given: RunConfig): Promise<Trainer> {
    let resumed: (RunState & { folder: string }) | null = null;
    let config = given;
    if (given.resume) {
      resumed = await loadRunState(given.resume);
      // The stored training configuration wins: the data order and schedule must not change.
      config = {
        ...given,
        ...(resumed.runConfig as Partial<RunConfig>),
        resume: given.resume,
        save: given.save ?? given.resume,
      };
    }
    const objective = config.objective;
    const loaded = objective === "classify" ? await loadTask(config.task) : null;
    const task = loaded && config.trainLimit > 0
      ? { ...loaded, train: loaded.train.slice(0, config.trainLimit) }
      : loaded;
    const model = resumed
      ? {
        config: resumed.modelConfig,
        weights: resumed.weights,
        notes: [`resumed from ${resumed.folder}`],
        freshHead: false,
        dir: resumed.folder,
      }
      : task
      ? await loadModel(config.modelDir, {
        numLabels: task.numLabels,
        labelNames: task.labelNames ?? undefined,
        seed: config.seed,
      })
      : await loadPretrainingModel(config.modelDir, config.seed);
    const layout = paramLayout(model.config, objective);
    // A resumed run's checkpoint folder is replaced by the next checkpoint: keep its tokenizer apart.
    const tokenizerDir = resumed ? await copyTokenizerFiles(resumed.folder) : model.dir;
    const tokenizer = await loadTokenizer(tokenizerDir ?? undefined);
    if (tokenizer.vocabSize > model.config.vocabSize) {
      throw new Error(
        `the tokenizer has ${tokenizer.vocabSize} ids but the model only ${model.config.vocabSize} embeddings`,
      );
    }
    const maxLen = Math.min(config.maxLen, model.config.maxPositions);
    const data = task
      ? classificationData(task, tokenizer, maxLen)
      : await pretrainingData(tokenizer, maxLen, config.seed, {
        maxDocumentsPerSource: config.corpusDocs,
        file: config.corpusFile,
      });
    if (data.train instanceof MlmSet && model.freshHead) {
      const bias = layout.byName.get("cls.predictions.bias")!;
      model.weights.set(data.train.unigramLogPrior(bias.size), bias.offset);
      model.notes.push("MLM decoder bias initialised to the corpus's log unigram frequencies");
    }
    const plan = new DataPlan(
      data.train.size,
      config.globalBatch,
      config.microBatch,
      config.seed,
      config.shuffle,
    );
    const totalSteps = config.steps ?? (config.epochs ? plan.stepsForEpochs(config.epochs) : 40);
    const runId = resumed?.runId ?? crypto.randomUUID();
    return new Trainer(
      config,
      runId,
      model.config,
      layout,
      model.weights,
      resumed?.optimizer ?? createOptimizerState(layout.total),
      resumed?.step ?? 0,
      resumed?.weightsVersion ?? 0,
      totalSteps,
      plan,
      data,
      tokenizerDir,
      model.notes,
    );
  }

  /** The welcome every worker receives. */
  welcome(workerId: string): WelcomeMessage {
    return {
      type: "welcome",
      workerId,
      runId: this.runId,
      modelConfig: toHfConfig(this.modelConfig),
      objective: this.config.objective,
      dropout: this.config.dropout,
      deterministic: this.config.deterministic,
    };
  }

  /** The prepared weights of the current version (f32, or f16 with `--weights-encoding f16`). */
  weightsFrame(): Outgoing {
    return this.#weightsFrame;
  }

  #encodeWeights(): number {
    const t0 = performance.now();
    const f16 = this.config.weightsEncoding === "f16";
    this.#weightsFrame = this.#weightsOut.prepare(
      this.runId,
      this.weightsVersion,
      this.weights,
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
    const adversary = adversaryAt(this.config.adversary, t, this.totalSteps, this.config.advStart);
    let tokens = 0;
    const items: number[] = [];
    const tasks = this.plan.step(t).microBatches.map((indices, index) => {
      const batch = this.data.train.batch(indices, t);
      for (const m of batch.attentionMask) tokens += m;
      items[index] = lossItems(batch.labels, batch);
      const taskId = t * 1_000_000 + index;
      return {
        taskId,
        index,
        count: batch.size,
        frame: encodeMessage({
          type: "task",
          taskId,
          runId: this.runId,
          step: t,
          index,
          weightsVersion: this.weightsVersion,
          seed: this.config.seed,
          adversary,
          batch,
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
  async run(scheduler: Scheduler, observer: TrainerObserver = {}): Promise<RunSummary> {
    const log = observer.log ?? (() => {});
    const warmup = resolveWarmup(this.config.warmup, this.totalSteps);
    this.#encodeWeights();
    scheduler.setWeights(this.weightsVersion, this.#weightsFrame);
    let stopped = false;
    while (this.step < this.totalSteps) {
      // A stop asked for between steps (during an evaluation or a checkpoint).
      if (this.#stopping) {
        stopped = true;
        break;
      }
      const t = this.step;
      const t0 = performance.now();
      const { tasks, items, tokens, mode } = this.#tasks(t);
      const acc = this.accumulator;
      // n_j comes from the batch the coordinator made, not from the worker.
      acc.begin(items);
      let results;
      try {
        results = await scheduler.runStep(t, tasks, {
          window: this.dispatchWindow,
          accept: (r) => acc.add({ index: r.index, grad: r.grad, rows: r.rows, loss: r.loss }),
        });
      } catch (e) {
        if (e instanceof StopRequested) {
          stopped = true;
          break;
        }
        throw e;
      }
      const t1 = performance.now();
      const { grad, loss, norm: gradNorm } = acc.finish();
      const { norm, clipped } = this.config.clip > 0
        ? clipByGlobalNorm(grad, this.config.clip, gradNorm)
        : { norm: gradNorm, clipped: false };
      const t2 = performance.now();
      const lr = learningRate(t + 1, this.totalSteps, this.config.lr, warmup, this.config.schedule);
      const stats = optimizerStep(this.layout, this.weights, grad, this.optimizer, lr, {
        kind: this.config.optimizer,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-6,
        weightDecay: this.config.weightDecay,
      });
      const t3 = performance.now();
      this.step = t + 1;
      this.weightsVersion++;
      const encodeMs = this.#encodeWeights();
      scheduler.setWeights(this.weightsVersion, this.#weightsFrame);
      observer.step?.({
        step: this.step,
        totalSteps: this.totalSteps,
        loss,
        lr,
        gradNorm: norm,
        clipped,
        trustRatio: trustSummary(this.layout, stats.trustRatios),
        examples: results.reduce((a, r) => a + r.count, 0),
        tokens,
        adversary: mode,
        microBatches: results.length,
        weightsBytes: this.#weightsFrame.byteLength,
        timings: stepTimings(
          results,
          { t0, t1, t2, t3, encodeMs, sumMs: acc.sumMs },
          scheduler.workers.size,
        ),
        elapsedMs: performance.now() - this.startedAt,
      });
      const last = this.step === this.totalSteps;
      if (this.config.evalEvery > 0 && this.step % this.config.evalEvery === 0 && !last) {
        await this.evaluate(observer, scheduler);
      }
      if (
        this.config.save && this.config.checkpointEvery > 0 &&
        this.step % this.config.checkpointEvery === 0 && !last
      ) {
        await this.checkpoint(observer);
      }
    }
    if (stopped) {
      log(`stopping at step ${this.step}/${this.totalSteps}`);
      if (this.config.save) await this.checkpoint(observer);
      return {
        steps: this.step,
        stopped,
        evaluation: null,
        elapsedMs: performance.now() - this.startedAt,
        savedTo: this.config.save,
      };
    }
    const evaluation = await this.evaluate(observer, scheduler);
    let savedTo: string | null = null;
    if (this.config.save) {
      await this.checkpoint(observer);
      savedTo = this.config.save;
      await this.saveModel(this.config.save);
    }
    return {
      steps: this.step,
      stopped,
      evaluation,
      elapsedMs: performance.now() - this.startedAt,
      savedTo,
    };
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
    const f16 = this.config.weightsEncoding === "f16";
    if (f16) {
      const out = this.#weightsOut.prepare(this.runId, this.weightsVersion, this.weights, "f32");
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
      const result = await this.data.evaluate(model, this.config.evalLimit);
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

  /** {@link evaluate} on the coordinator's own backend. */
  async #evaluateHere(observer: TrainerObserver): Promise<EvalResult | null> {
    await initBackend("wasm");
    const weights = weightTensors(this.layout, this.weights);
    const tensors: DeviceModel = { config: this.modelConfig, layout: this.layout, weights };
    // Logits on the native engine where a BLAS loads (MLM scoring stays on tfjs).
    const model = withHostLogits(tensors, this.weights, {
      deterministic: this.config.deterministic,
    });
    const t0 = performance.now();
    try {
      const result = await this.data.evaluate(model, this.config.evalLimit);
      if (!result) return null;
      observer.log?.(
        `evaluated ${result.examples} examples on the coordinator in ${
          ((performance.now() - t0) / 1000).toFixed(1)
        } s`,
      );
      this.lastEval = result;
      observer.evaluated?.(this.step, "eval", result);
      return result;
    } finally {
      model.close();
      tf.dispose(Object.values(weights));
    }
  }

  /** The run state as of the last completed step. */
  state(): RunState {
    return {
      modelConfig: this.modelConfig,
      weights: this.weights,
      objective: this.config.objective,
      optimizer: this.optimizer,
      step: this.step,
      weightsVersion: this.weightsVersion,
      runId: this.runId,
      runConfig: trainingFields(this.config),
    };
  }

  /** Writes a resumable checkpoint under --save. */
  async checkpoint(observer: TrainerObserver = {}): Promise<void> {
    if (!this.config.save) return;
    const dir = await this.#tokenizerSource();
    const folder = await saveRunState(this.config.save, this.state(), dir);
    observer.checkpointed?.(this.step, folder);
  }

  /** Saves the final model as a Hugging Face folder at `dir/model`, replaced as a whole. */
  async saveModel(dir: string): Promise<string> {
    const out = `${dir}/model`;
    await Deno.mkdir(dir, { recursive: true });
    const tokenizerFrom = await this.#tokenizerSource();
    await replaceDirectory(out, (tmp) =>
      saveCheckpoint(tmp, {
        config: this.modelConfig,
        weights: this.weights,
        objective: this.config.objective,
      }, {
        dtype: this.config.saveDtype,
        maxShardBytes: this.config.saveShardBytes,
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
