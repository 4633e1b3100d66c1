/**
 * What a run starts from, assembled once before its first step: the resolved
 * configuration (a resumed run's from its checkpoint), the task or corpus and
 * its tokenizer, the starting model (the checkpoint resumed, a given folder,
 * or a fresh one), the optimizer state and the data plan.
 * coordinator/trainer.ts builds the {@link Trainer} from these parts.
 *
 * @module
 */
import { loadTask } from "../shared/data/task.ts";
import type { TaskData } from "../shared/data/example.ts";
import { freshDefaultModel, loadModel } from "../shared/model/default_model.ts";
import { loadCheckpoint, TOKENIZER_FILES } from "../shared/io/checkpoint.ts";
import { maxSequenceLength, type ModelConfig } from "../shared/model/config.ts";
import { type ParamLayout, paramLayout } from "../shared/model/param_layout.ts";
import { loadTokenizer } from "../shared/text/tokenizer.ts";
import { classificationData, pretrainingData, type TrainingData } from "./training_data.ts";
import { createOptimizerState, type OptimizerState } from "./optimizer.ts";
import { DataPlan } from "./data_plan.ts";
import { MlmSet } from "./mlm_data.ts";
import { DEFAULT_STEPS, resumedConfig, type RunConfig } from "./run_config.ts";
import { loadRunState, type RunState } from "./run_state.ts";
import { prepareSaveDir } from "./save_dir.ts";
import { applyResumeFlags } from "./resume_flags.ts";
import { BestModel } from "./best_model.ts";
import { RunLog } from "./run_log.ts";
import { InputError } from "../shared/io/input_error.ts";
import { LoraRun } from "./lora_run.ts";

/** Everything a Trainer is made of, as {@link trainerParts} assembles it. */
export interface TrainerParts {
  readonly config: RunConfig;
  readonly runId: string;
  readonly modelConfig: ModelConfig;
  readonly layout: ParamLayout;
  readonly weights: Float32Array;
  readonly optimizer: OptimizerState;
  /** Steps completed (0 for a new run). */
  readonly step: number;
  readonly weightsVersion: number;
  readonly totalSteps: number;
  readonly plan: DataPlan;
  readonly data: TrainingData;
  readonly tokenizerDir: string | null;
  readonly notes: string[];
  /** The backend a resumed deterministic run is pinned to. */
  readonly backend: string | null;
  /** metrics.jsonl, continued by a resumed run. */
  readonly runLog: RunLog;
  /** Model selection and early stopping, with a resumed run's state. */
  readonly best: BestModel;
  /** A LoRA run's base and trainable state (coordinator/lora_run.ts); null: full fine-tuning. */
  readonly lora: LoraRun | null;
}

/** Loads data, model (or the run being resumed) and sets up the plan. */
export async function trainerParts(given: RunConfig): Promise<TrainerParts> {
  // The --save folder first: a refused or unwritable one fails before anything loads.
  await prepareSaveDir(given.io);
  const resumed = given.io.resume ? await loadRunState(given.io.resume) : null;
  // The stored settings win: the data order and schedule must not change.
  const source = `--resume ${given.io.resume}`;
  const config = resumed
    ? applyResumeFlags(given, resumedConfig(given, resumed.runConfig, source), source)
    : given;
  const { training, data: dataConfig } = config;
  const loaded = training.objective === "classify" ? await loadTask(dataConfig.task) : null;
  const task = loaded && dataConfig.trainLimit > 0
    ? { ...loaded, train: loaded.train.slice(0, dataConfig.trainLimit) }
    : loaded;
  const model = await startingModel(config, resumed, task);
  const layout = paramLayout(model.config, training.objective);
  const lora = training.lora
    ? await LoraRun.start({
      settings: training.lora,
      model: { ...model, layout },
      seed: training.seed,
      baseModel: config.io.modelName ?? config.io.modelDir,
      resumed: resumed?.lora,
    })
    : null;
  if (lora) model.notes.push(...lora.notes);
  // A resumed run's checkpoint folder is replaced by the next checkpoint: keep its tokenizer apart.
  const tokenizerDir = resumed ? await copyTokenizerFiles(resumed.folder) : model.dir;
  const tokenizer = await loadTokenizer(tokenizerDir ?? undefined);
  if (tokenizer.vocabSize > model.config.vocabSize) {
    throw new Error(
      `the tokenizer has ${tokenizer.vocabSize} ids but the model only ${model.config.vocabSize} embeddings`,
    );
  }
  const maxLen = Math.min(dataConfig.maxLen, maxSequenceLength(model.config));
  const data = task
    ? classificationData(task, tokenizer, maxLen)
    : await pretrainingData(tokenizer, maxLen, training.seed, {
      maxDocumentsPerSource: dataConfig.corpusDocs,
      file: dataConfig.corpusFile,
    });
  if (data.train instanceof MlmSet && model.freshHead) {
    const bias = layout.byName.get("cls.predictions.bias")!;
    model.weights.set(data.train.unigramLogPrior(bias.size), bias.offset);
    model.notes.push("MLM decoder bias initialised to the corpus's log unigram frequencies");
  }
  const summary = data.summary();
  if (training.evalEvery > 0 && summary.eval === 0) {
    throw new InputError(
      "--eval-every needs an evaluation split (--eval FILE, or a task with one)",
    );
  }
  const metrics = data.logitsOnly ? summary.metrics : [...summary.metrics, "mlm_loss"];
  const best = new BestModel(training.best, metrics, resumed?.best);
  const step = resumed?.step ?? 0;
  const runLog = await RunLog.open({
    save: config.io.save,
    resumedFrom: given.io.resume,
    step,
    trainExamples: data.train.size,
    globalBatch: training.globalBatch,
  });
  const plan = new DataPlan(
    data.train.size,
    training.globalBatch,
    training.microBatch,
    training.seed,
    training.shuffle,
  );
  return {
    config,
    runId: resumed?.runId ?? crypto.randomUUID(),
    modelConfig: model.config,
    layout,
    weights: model.weights,
    optimizer: resumed?.optimizer ??
      createOptimizerState(lora ? lora.plan.layout.total : layout.total),
    step,
    weightsVersion: resumed?.weightsVersion ?? 0,
    totalSteps: training.steps ??
      (training.epochs ? plan.stepsForEpochs(training.epochs) : DEFAULT_STEPS),
    plan,
    data,
    tokenizerDir,
    notes: model.notes,
    backend: resumed?.backend ?? null,
    runLog,
    best,
    lora,
  };
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

/** The model a run starts from: the checkpoint resumed, a given folder, or a fresh one. */
async function startingModel(
  config: RunConfig,
  resumed: (RunState & { folder: string }) | null,
  task: TaskData | null,
) {
  // A LoRA checkpoint holds no base: it is loaded again from --model (and checked by hash).
  if (resumed && !resumed.lora) {
    return {
      config: resumed.modelConfig,
      weights: resumed.weights,
      notes: [`resumed from ${resumed.folder}`],
      freshHead: false,
      freshPooler: false,
      dir: resumed.folder,
    };
  }
  const { modelDir } = config.io, { seed } = config.training;
  if (!task) return await loadPretrainingModel(modelDir, seed);
  return await loadModel(modelDir, {
    numLabels: task.numLabels,
    labelNames: task.labelNames ?? undefined,
    seed,
  });
}
