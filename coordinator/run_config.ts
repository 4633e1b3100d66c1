/**
 * The run configuration: every training flag of `deno task cluster` and
 * `deno task coordinator` (docs/architecture.md, "Command line"), its default,
 * and its validation. `--config FILE` supplies the same keys as JSON; flags win.
 *
 * @module
 */
import {
  FlagError,
  type Flags,
  type FlagSpec,
  type FlagSpecs,
  parseFlags,
} from "../shared/cli/flags.ts";
import {
  ADVERSARY_MODES,
  ADVERSARY_NORMS,
  type AdversaryConfig,
  DEFAULT_ADVERSARY,
} from "../shared/method/adversary_config.ts";
import {
  DEFAULT_LR,
  DEFAULT_OPTIMIZER_CONFIG,
  type OptimizerConfig,
  type OptimizerKind,
} from "./optimizer.ts";
import { DEFAULT_SCHEDULE, type ScheduleConfig, type ScheduleKind } from "./lr_schedule.ts";
import { type Objective, OBJECTIVES } from "../shared/model/param_layout.ts";
import { parseByteSize } from "../shared/io/checkpoint.ts";
import { isPlainObject } from "../shared/io/plain_object.ts";
import {
  GRAD_ENCODINGS,
  type GradEncoding,
  HEARTBEAT_MS,
  WEIGHTS_ENCODINGS,
  type WeightsEncoding,
} from "../shared/wire/protocol.ts";
import { ModelNotFound, resolveModel } from "../shared/io/hf_cache.ts";
import { maxLenFlag, portFlag } from "../shared/cli/flag_rules.ts";
import { BEST_MODEL_FLAGS, type BestModelConfig, resolveBestModel } from "./best_model.ts";
import { SAVE_DIR_FLAGS } from "./save_dir.ts";
import { LORA_FLAGS, type LoraSettings, resolveLora, STORED_LORA_FLAGS } from "./lora_flags.ts";

/**
 * First adversarial step when `--adv-start` is not given: 30% into the run
 * (docs/method.md, "Adversary schedule").
 */
export const DEFAULT_ADVERSARY_START = 0.3;

/** Optimizer steps of a run given neither `--steps` nor `--epochs`. */
export const DEFAULT_STEPS = 40;

/** Examples per worker task when `--micro-batch` is not given (at most the global batch). */
export const DEFAULT_MICRO_BATCH = 32;

/** The training flags, shared by cluster and coordinator; defaults from the modules that own them. */
export const TRAINING_FLAGS = {
  objective: {
    type: "string",
    default: "classify",
    help: "classify (adaptation) | mlm (pre-training on the built-in corpora)",
  },
  corpus: {
    type: "string",
    help:
      "mlm: pre-train on this UTF-8 text file, one document per line (default: built-in corpora)",
  },
  "corpus-docs": {
    type: "int",
    default: 0,
    help: "mlm: at most N documents per corpus source (0: all)",
  },
  model: {
    type: "string",
    help:
      "checkpoint folder (HF format) or Hub name in the local HF cache; default: the built-in small BERT",
  },
  task: {
    type: "string",
    help: "imdb (built in) or a GLUE name: cola sst2 mrpc stsb qqp mnli qnli rte wnli",
  },
  data: { type: "string", help: "GLUE task folder (train.tsv, dev.tsv)" },
  train: { type: "string", help: "training JSONL file ({text, text_pair?, label})" },
  eval: { type: "string", help: "evaluation JSONL file" },
  "max-len": maxLenFlag(128),
  steps: {
    type: "int",
    help: `optimizer steps (default: from --epochs, else ${DEFAULT_STEPS})`,
  },
  epochs: { type: "number", help: "passes over the training split (instead of --steps)" },
  "global-batch": { type: "int", default: 256, help: "examples per optimizer step (B)" },
  "micro-batch": {
    type: "int",
    help:
      `examples per worker task (b; default: min(${DEFAULT_MICRO_BATCH}, B); more than B is an error)`,
  },
  optimizer: { type: "string", default: DEFAULT_OPTIMIZER_CONFIG.kind, help: "lamb | adamw" },
  lr: {
    type: "number",
    help: `peak learning rate (default: ${DEFAULT_LR.lamb} LAMB, ${DEFAULT_LR.adamw} AdamW)`,
  },
  warmup: {
    type: "number",
    default: DEFAULT_SCHEDULE.warmup,
    help: "warmup steps, or a fraction of the run when < 1",
  },
  schedule: {
    type: "string",
    default: DEFAULT_SCHEDULE.kind,
    help: "linear (decay to 0) | constant",
  },
  "weight-decay": {
    type: "number",
    default: DEFAULT_OPTIMIZER_CONFIG.weightDecay,
    help: "decoupled weight decay λ",
  },
  clip: { type: "number", default: 0, help: "global gradient-norm clip (0: off)" },
  adv: { type: "string", default: DEFAULT_ADVERSARY.mode, help: "adversary: pgd | freelb | off" },
  "adv-steps": { type: "int", default: DEFAULT_ADVERSARY.steps, help: "K, ascent steps" },
  "adv-lr": { type: "number", default: DEFAULT_ADVERSARY.lr, help: "α, ascent step size" },
  "adv-eps": { type: "number", default: DEFAULT_ADVERSARY.eps, help: "ε, perturbation radius" },
  "adv-norm": { type: "string", default: DEFAULT_ADVERSARY.norm, help: "l2 | linf" },
  "adv-init": {
    type: "number",
    default: DEFAULT_ADVERSARY.init,
    help: "random start scale (0: δ0 = 0)",
  },
  "adv-start": {
    type: "number",
    default: DEFAULT_ADVERSARY_START,
    help: "first adversarial step, or a fraction of the run when < 1",
  },
  dropout: { type: "number", help: "override the config's dropout (0 for exact checks)" },
  "no-shuffle": { type: "boolean", help: "examples in file order: step t uses t·B … t·B+B−1" },
  seed: { type: "int", default: 42, help: "run seed (data order, dropout, δ init, new heads)" },
  "eval-every": { type: "int", default: 0, help: "evaluate every N steps (0: only at the end)" },
  "train-limit": {
    type: "int",
    default: 0,
    help: "train on the first N examples of the training split (0: all)",
  },
  "eval-limit": {
    type: "int",
    default: 0,
    help: "score only the first N held-out examples (0: all)",
  },
  "checkpoint-every": {
    type: "int",
    default: 0,
    help: "checkpoint every N steps into --save (0: only at exit)",
  },
  save: { type: "string", help: "folder for checkpoints and the final model" },
  "save-dtype": { type: "string", default: "f32", help: "f32 | f16 | bf16 for the saved model" },
  "save-shard-size": {
    type: "string",
    default: "5GB",
    help: "largest weights file of the saved model (e.g. 5GB, 500MB); larger models are sharded",
  },
  resume: { type: "string", help: "continue the run checkpointed in this folder" },
  ...SAVE_DIR_FLAGS,
  ...BEST_MODEL_FLAGS,
  ...LORA_FLAGS,
  deterministic: {
    type: "boolean",
    help: "bit-reproducible: one backend for all workers, f32 weights",
  },
  "weights-encoding": { type: "string", default: "f32", help: "f32 | f16 weights sent to workers" },
  results: {
    type: "string",
    default: "per-worker",
    help: "per-worker (each worker sums its micro-batches and sends one gradient per step) | " +
      "per-micro-batch (one gradient per micro-batch, the old path)",
  },
  group: {
    type: "int",
    default: 0,
    help: "--deterministic with per-worker results: micro-batches per task, summed in order on " +
      "one worker (the bits depend on it; 0: ceil(M / 4), 4 tasks per step)",
  },
  "grad-encoding": {
    type: "string",
    default: "f32",
    help: "f32 | bf16 | f16 (scaled) gradients from workers (per-worker results)",
  },
  host: { type: "string", default: "127.0.0.1", help: "address to listen on" },
  port: portFlag(8787),
  token: { type: "string", help: "run token workers must present (default: generated)" },
  "metrics-token": { type: "string", help: "require this bearer token for /metrics, /status, /" },
  "task-timeout": {
    type: "number",
    default: 0,
    help: "seconds before an unanswered micro-batch is re-sent (0: from measured speed)",
  },
  "worker-silence": {
    type: "number",
    default: 300,
    help: `seconds a worker may send nothing (heartbeats every ${
      HEARTBEAT_MS / 1000
    } s) before it is dropped (0: never)`,
  },
  linger: { type: "boolean", help: "keep the dashboard up after the run" },
  config: { type: "string", help: "JSON file with the same keys as these flags (flags win)" },
  quiet: {
    type: "boolean",
    help: "no progress output: stdout gets only the final JSON line, stderr only errors",
  },
} as const;

/** Parsed training flags. */
export type TrainingFlags = Flags<typeof TRAINING_FLAGS>;

/**
 * The training flags only a classification run reads (the labelled task and
 * how much of it is used): an MLM run takes its text from the corpus instead.
 */
export const CLASSIFY_ONLY_FLAGS = ["task", "data", "train", "eval", "train-limit"] as const;

/** The training flags with `--objective` and the {@link CLASSIFY_ONLY_FLAGS} left out. */
type MlmFlagNames = Exclude<
  keyof typeof TRAINING_FLAGS,
  "objective" | typeof CLASSIFY_ONLY_FLAGS[number]
>;

/**
 * The flags of `deno task pretrain` (coordinator/pretrain.ts): the training
 * flags an MLM run reads. `--objective` is fixed to `mlm`, and the
 * {@link CLASSIFY_ONLY_FLAGS} are not accepted (unknown flags, exit 2).
 */
export const PRETRAIN_FLAGS = (() => {
  const left = new Set<string>(["objective", ...CLASSIFY_ONLY_FLAGS]);
  const kept = Object.fromEntries(
    Object.entries(TRAINING_FLAGS).filter(([name]) => !left.has(name)),
  ) as Pick<typeof TRAINING_FLAGS, MlmFlagNames>;
  return {
    ...kept,
    model: {
      ...TRAINING_FLAGS.model,
      help: "checkpoint folder (HF format) or Hub name in the local HF cache to pre-train " +
        "further (an MLM head is added if it has none); default: a fresh small BERT",
    },
    "metric-for-best": {
      ...TRAINING_FLAGS["metric-for-best"],
      help: "with --eval-every: the metric DIR/best and early stopping follow: " +
        "mlm_accuracy (default, maximised) or mlm_loss (minimised)",
    },
  } as const;
})();

/** Where the examples come from: a named task, a GLUE folder, or JSONL files. */
export interface TaskSource {
  readonly task?: string;
  readonly data?: string;
  readonly train?: string;
  readonly eval?: string;
}

/** The outer optimizer's settings: its rule and moments, the peak learning rate and the clip. */
export interface OptimizerSettings extends Readonly<OptimizerConfig> {
  /** Peak learning rate η (the schedule scales it per step). */
  readonly lr: number;
  /** Global gradient-norm clip; 0: off. */
  readonly clip: number;
}

/** What fixes the math of the run: its length, batches, optimizer, schedule and adversary. */
export interface TrainingConfig {
  readonly objective: Objective;
  readonly steps: number | null;
  readonly epochs: number | null;
  readonly globalBatch: number;
  readonly microBatch: number;
  /** Run seed: data order, dropout, δ init, new heads. */
  readonly seed: number;
  readonly shuffle: boolean;
  /** Overrides the model config's dropout; null keeps it. */
  readonly dropout: number | null;
  /** Bit-reproducible: one backend for all workers, f32 weights. */
  readonly deterministic: boolean;
  /** How weights are sent to workers (f16 rounds what they compute on). */
  readonly weightsEncoding: WeightsEncoding;
  /**
   * How gradients come back: one partial sum per worker per step (or, in a
   * deterministic run, per task of `group` micro-batches), or one result per
   * micro-batch.
   */
  readonly results: ResultsFlag;
  /** Micro-batches per task of a deterministic per-worker run (resolved: ≥ 1). */
  readonly group: number;
  /** How partial sums travel. */
  readonly gradEncoding: GradEncoding;
  readonly optimizer: OptimizerSettings;
  readonly schedule: ScheduleConfig;
  readonly adversary: AdversaryConfig;
  /** First adversarial step, or a fraction of the run when < 1 (`adversaryAt`). */
  readonly adversaryStart: number;
  /** Evaluate every N steps; 0: only at the end. */
  readonly evalEvery: number;
  /** Keeping the best evaluation's model and early stopping (coordinator/best_model.ts). */
  readonly best: BestModelConfig;
  /** LoRA (coordinator/lora_flags.ts); null: full fine-tuning. */
  readonly lora: LoraSettings | null;
}

/** The values of `--results`. */
export const RESULTS_FLAGS = ["per-worker", "per-micro-batch"] as const;

/** One of {@link RESULTS_FLAGS}. */
export type ResultsFlag = typeof RESULTS_FLAGS[number];

/** Which examples the run trains and scores on. */
export interface DataConfig {
  readonly task: TaskSource;
  /** mlm: the user's text file instead of the built-in corpora. */
  readonly corpusFile: string | null;
  readonly corpusDocs: number;
  readonly maxLen: number;
  readonly trainLimit: number;
  readonly evalLimit: number;
}

/** What is read and written: the starting model, checkpoints, the saved model, the resumed run. */
export interface IoConfig {
  readonly modelDir: string | null;
  /** `--model` as given (a Hub name or a folder), before it was resolved to `modelDir`. */
  readonly modelName?: string | null;
  readonly save: string | null;
  readonly saveDtype: "F32" | "F16" | "BF16";
  /** Largest weights file of a saved model in bytes; past it the weights are sharded. */
  readonly saveShardBytes: number;
  readonly checkpointEvery: number;
  readonly resume: string | null;
  /** Step checkpoints kept under `save` (the newest; coordinator/run_state.ts). */
  readonly saveTotalLimit: number;
  /** Replace an earlier run in `save` (coordinator/save_dir.ts). */
  readonly overwrite: boolean;
}

/** Where the coordinator listens, who may talk to it, and how long it waits for workers. */
export interface NetworkConfig {
  readonly host: string;
  readonly port: number;
  readonly token: string;
  readonly metricsToken: string | null;
  readonly taskTimeoutMs: number;
  /** Silence after which a worker connection is dropped; 0: never. */
  readonly workerSilenceMs: number;
}

/** What the person running it sees. */
export interface UiConfig {
  readonly linger: boolean;
  /** Only errors and the final JSON line (coordinator/main.ts, `serveRun`). */
  readonly quiet: boolean;
}

/**
 * The validated configuration of one run, by concern. A resumed run's
 * `training`, `data` and `io` (but its paths) come from its checkpoint
 * ({@link resumedConfig}); `network` and `ui` always from the command line.
 */
export interface RunConfig {
  readonly training: TrainingConfig;
  readonly data: DataConfig;
  readonly io: IoConfig;
  readonly network: NetworkConfig;
  readonly ui: UiConfig;
  /**
   * The flags given on the command line or in `--config` (not defaulted):
   * on `--resume` these must match the checkpoint's (coordinator/resume_flags.ts).
   */
  readonly given?: ReadonlySet<string>;
}

function oneOf<T extends string>(flag: string, value: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) {
    throw new FlagError(`--${flag} must be one of ${allowed.join(", ")}, got "${value}"`);
  }
  return value as T;
}

function positive(flag: string, v: number, allowZero = false): number {
  if (!(allowZero ? v >= 0 : v > 0)) {
    throw new FlagError(`--${flag} must be ${allowZero ? ">= 0" : "> 0"}, got ${v}`);
  }
  return v;
}

function byteSize(flag: string, v: string): number {
  try {
    return parseByteSize(v);
  } catch (e) {
    throw new FlagError(`--${flag}: ${(e as Error).message}`);
  }
}

/** A fresh random run token (URL-safe). */
export function newToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(18));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_");
}

/**
 * A JSON object of flag values as `--key=value` arguments (true booleans as
 * `--key`; false and null left out), skipping the keys in `skip`.
 */
function jsonArgs(json: unknown, source: string, skip: ReadonlySet<string>): string[] {
  if (!isPlainObject(json)) throw new FlagError(`${source}: expected a JSON object`);
  const out: string[] = [];
  for (const [key, value] of Object.entries(json)) {
    if (key === "config") throw new FlagError(`${source}: "config" cannot nest`);
    if (skip.has(key) || value === null || value === false) continue;
    out.push(value === true ? `--${key}` : `--${key}=${value}`);
  }
  return out;
}

/** Turns a `--config` JSON object into `--key value` arguments placed before the real ones. */
async function configArgs(args: readonly string[]): Promise<string[]> {
  const i = args.findIndex((a) => a === "--config" || a.startsWith("--config="));
  if (i < 0) return [];
  const path = args[i].includes("=") ? args[i].slice("--config=".length) : args[i + 1];
  if (!path) throw new FlagError("--config needs a file");
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    throw new FlagError(`--config ${path}: ${(e as Error).message}`);
  }
  const given = new Set(
    args.filter((a) => a.startsWith("--")).map((a) => a.slice(2).split("=")[0]),
  );
  return jsonArgs(json, `--config ${path}`, given); // flags win
}

/** The one set of checks: parsed training flags → a RunConfig. */
function resolve(f: TrainingFlags): RunConfig {
  if (f.steps !== undefined && f.epochs !== undefined) {
    throw new FlagError("give --steps or --epochs, not both");
  }
  if (f.data !== undefined && f.task === undefined) throw new FlagError("--data needs --task NAME");
  const globalBatch = positive("global-batch", f["global-batch"]);
  const microBatch = positive("micro-batch", f["micro-batch"] ?? DEFAULT_MICRO_BATCH);
  if (f["micro-batch"] !== undefined && microBatch > globalBatch) {
    throw new FlagError(
      `--micro-batch ${microBatch} is larger than --global-batch ${globalBatch}: a step's examples are split into micro-batches of at most B`,
    );
  }
  const dropout = f.dropout;
  if (dropout !== undefined && !(dropout >= 0 && dropout < 1)) {
    throw new FlagError(`--dropout must be in [0, 1), got ${dropout}`);
  }
  const kind = oneOf<OptimizerKind>("optimizer", f.optimizer, ["lamb", "adamw"]);
  return {
    training: {
      objective: oneOf("objective", f.objective, OBJECTIVES),
      steps: f.steps !== undefined ? positive("steps", f.steps) : null,
      epochs: f.epochs !== undefined ? positive("epochs", f.epochs) : null,
      globalBatch,
      microBatch: Math.min(microBatch, globalBatch),
      seed: f.seed,
      shuffle: !f["no-shuffle"],
      dropout: dropout ?? null,
      deterministic: f.deterministic,
      weightsEncoding: f.deterministic
        ? "f32"
        : oneOf("weights-encoding", f["weights-encoding"], WEIGHTS_ENCODINGS),
      results: oneOf("results", f.results, RESULTS_FLAGS),
      group: positive("group", f.group, true) ||
        Math.ceil(Math.ceil(globalBatch / Math.min(microBatch, globalBatch)) / 4),
      gradEncoding: oneOf("grad-encoding", f["grad-encoding"], GRAD_ENCODINGS),
      optimizer: {
        ...DEFAULT_OPTIMIZER_CONFIG,
        kind,
        weightDecay: positive("weight-decay", f["weight-decay"], true),
        lr: f.lr !== undefined ? positive("lr", f.lr) : DEFAULT_LR[kind],
        clip: positive("clip", f.clip, true),
      },
      schedule: {
        kind: oneOf<ScheduleKind>("schedule", f.schedule, ["linear", "constant"]),
        warmup: positive("warmup", f.warmup, true),
      },
      adversary: {
        mode: oneOf("adv", f.adv, ADVERSARY_MODES),
        steps: positive("adv-steps", f["adv-steps"]),
        lr: positive("adv-lr", f["adv-lr"], true),
        eps: positive("adv-eps", f["adv-eps"]),
        norm: oneOf("adv-norm", f["adv-norm"], ADVERSARY_NORMS),
        init: positive("adv-init", f["adv-init"], true),
      },
      adversaryStart: positive("adv-start", f["adv-start"], true),
      evalEvery: positive("eval-every", f["eval-every"], true),
      best: resolveBestModel(f),
      lora: resolveLora(f),
    },
    data: {
      task: {
        task: f.task ?? (f.train || f.eval ? undefined : "imdb"),
        data: f.data,
        train: f.train,
        eval: f.eval,
      },
      corpusFile: f.corpus ?? null,
      corpusDocs: positive("corpus-docs", f["corpus-docs"], true),
      maxLen: positive("max-len", f["max-len"]),
      trainLimit: positive("train-limit", f["train-limit"], true),
      evalLimit: positive("eval-limit", f["eval-limit"], true),
    },
    io: {
      modelDir: f.model ?? null,
      save: f.save ?? null,
      saveDtype: oneOf("save-dtype", f["save-dtype"], ["f32", "f16", "bf16"] as const)
        .toUpperCase() as IoConfig["saveDtype"],
      saveShardBytes: byteSize("save-shard-size", f["save-shard-size"]),
      checkpointEvery: positive("checkpoint-every", f["checkpoint-every"], true),
      resume: f.resume ?? null,
      saveTotalLimit: f["save-total-limit"],
      overwrite: f.overwrite,
    },
    network: {
      host: f.host,
      port: positive("port", f.port, true),
      token: f.token ?? newToken(),
      metricsToken: f["metrics-token"] ?? null,
      taskTimeoutMs: positive("task-timeout", f["task-timeout"], true) * 1000,
      workerSilenceMs: positive("worker-silence", f["worker-silence"], true) * 1000,
    },
    ui: { linger: f.linger, quiet: f.quiet },
  };
}

/**
 * Parses training flags (plus `extra` command-specific ones) into a RunConfig.
 * With `objective` the run's objective is fixed: `--objective` is not a flag,
 * and for `mlm` the flags are {@link PRETRAIN_FLAGS} (`deno task pretrain`);
 * the flags left out take their defaults.
 */
export async function parseRunFlags<const E extends Record<string, FlagSpec>>(
  args: readonly string[],
  extra: E,
  usage: string,
  objective?: Objective,
): Promise<{ config: RunConfig; flags: Flags<typeof TRAINING_FLAGS & E> }> {
  const base: FlagSpecs = objective === undefined
    ? TRAINING_FLAGS
    : objective === "mlm"
    ? PRETRAIN_FLAGS
    : Object.fromEntries(Object.entries(TRAINING_FLAGS).filter(([n]) => n !== "objective"));
  const spec = { ...base, ...extra };
  const fromFile = await configArgs(args);
  const all = [...fromFile, ...args];
  const parsed = parseFlags(all, spec, usage);
  // The flags this command does not take: their defaults (and the fixed objective).
  const flags = {
    ...parseFlags([], TRAINING_FLAGS, usage),
    ...parsed,
    ...(objective === undefined ? {} : { objective }),
  } as unknown as Flags<typeof TRAINING_FLAGS & E>;
  const given = new Set(all.filter((a) => a.startsWith("--")).map((a) => a.slice(2).split("=")[0]));
  const config = { ...resolve(flags as unknown as TrainingFlags), given };
  return { config: await withModelFolder(config), flags };
}

/** `--model NAME` resolved to its folder (shared/io/hf_cache.ts); not found is a usage error. */
async function withModelFolder(config: RunConfig): Promise<RunConfig> {
  const ref = config.io.modelDir;
  if (ref === null) return config;
  try {
    return {
      ...config,
      io: { ...config.io, modelDir: await resolveModel(ref), modelName: ref },
    };
  } catch (e) {
    if (e instanceof ModelNotFound) throw new FlagError(`--model: ${e.message}`);
    throw e;
  }
}

/** A flag's value as a checkpoint stores it (null: not given). */
type StoredValue = string | number | boolean | null;

/**
 * The flags a checkpoint stores, each read back from a resolved config in
 * the flag's own units: `training`, `data` and `io` but its paths (`--save`,
 * `--resume`). Not stored: address, tokens, timeouts, `--linger`, `--quiet`.
 */
const STORED_FLAGS = {
  objective: (c) => c.training.objective,
  steps: (c) => c.training.steps,
  epochs: (c) => c.training.epochs,
  "global-batch": (c) => c.training.globalBatch,
  "micro-batch": (c) => c.training.microBatch,
  seed: (c) => c.training.seed,
  "no-shuffle": (c) => !c.training.shuffle,
  dropout: (c) => c.training.dropout,
  deterministic: (c) => c.training.deterministic,
  "weights-encoding": (c) => c.training.weightsEncoding,
  results: (c) => c.training.results,
  group: (c) => c.training.group,
  "grad-encoding": (c) => c.training.gradEncoding,
  optimizer: (c) => c.training.optimizer.kind,
  lr: (c) => c.training.optimizer.lr,
  "weight-decay": (c) => c.training.optimizer.weightDecay,
  clip: (c) => c.training.optimizer.clip,
  schedule: (c) => c.training.schedule.kind,
  warmup: (c) => c.training.schedule.warmup,
  adv: (c) => c.training.adversary.mode,
  "adv-steps": (c) => c.training.adversary.steps,
  "adv-lr": (c) => c.training.adversary.lr,
  "adv-eps": (c) => c.training.adversary.eps,
  "adv-norm": (c) => c.training.adversary.norm,
  "adv-init": (c) => c.training.adversary.init,
  "adv-start": (c) => c.training.adversaryStart,
  "eval-every": (c) => c.training.evalEvery,
  task: (c) => c.data.task.task ?? null,
  data: (c) => c.data.task.data ?? null,
  train: (c) => c.data.task.train ?? null,
  eval: (c) => c.data.task.eval ?? null,
  corpus: (c) => c.data.corpusFile,
  "corpus-docs": (c) => c.data.corpusDocs,
  "max-len": (c) => c.data.maxLen,
  "train-limit": (c) => c.data.trainLimit,
  "eval-limit": (c) => c.data.evalLimit,
  model: (c) => c.io.modelDir,
  "save-dtype": (c) => c.io.saveDtype.toLowerCase(),
  "save-shard-size": (c) => String(c.io.saveShardBytes),
  "checkpoint-every": (c) => c.io.checkpointEvery,
  "metric-for-best": (c) => c.training.best.metric,
  "early-stopping-patience": (c) => c.training.best.patience,
  "save-total-limit": (c) => c.io.saveTotalLimit,
  ...STORED_LORA_FLAGS,
} satisfies Partial<Record<keyof typeof TRAINING_FLAGS, (c: RunConfig) => StoredValue>>;

/**
 * The settings a checkpoint stores (docs/model-and-data.md, "Run
 * checkpoints"): the stored flags and their resolved values, a JSON object
 * that {@link resumedConfig} parses back with the same checks as the command line.
 */
export function storedSettings(c: RunConfig): Record<string, StoredValue> {
  return Object.fromEntries(Object.entries(STORED_FLAGS).map(([flag, read]) => [flag, read(c)]));
}

/**
 * The configuration of a resumed run: `stored` (from {@link storedSettings},
 * read from the checkpoint named by `source`) parsed and checked like flags,
 * so the data order and the schedule cannot change; the address, tokens,
 * timeouts and UI from `given` (the command line), and the run saved to
 * `--save`, else back into the folder it was resumed from.
 */
export function resumedConfig(given: RunConfig, stored: unknown, source: string): RunConfig {
  let r: RunConfig;
  try {
    const args = jsonArgs(fromEarlierFormat(stored), source, new Set());
    for (const a of args) {
      const flag = a.slice(2).split("=")[0];
      if (!Object.hasOwn(STORED_FLAGS, flag)) {
        throw new FlagError(`${source}: unknown setting "${flag}"`);
      }
    }
    r = resolve(parseFlags(args, TRAINING_FLAGS, ""));
  } catch (e) {
    if (!(e instanceof FlagError) || e.message.startsWith(source)) throw e;
    throw new FlagError(`${source}: ${e.message}`);
  }
  const { resume } = given.io;
  return {
    ...r,
    // The stored model is the resolved folder: it names the adapter's base too.
    io: {
      ...r.io,
      ...(r.io.modelDir !== null ? { modelName: r.io.modelDir } : {}),
      save: given.io.save ?? resume,
      resume,
    },
    network: given.network,
    ui: given.ui,
  };
}

/** A value of a checkpoint written before the settings were stored by flag name. */
type EarlierValue = StoredValue | { readonly [key: string]: StoredValue | undefined };

/**
 * Checkpoints written before 2026-12-02 stored the flat, camelCase run
 * configuration (`globalBatch`, `adversary: {mode, …}`, `saveShardBytes`, …)
 * instead of flag names. This maps such a document to flag names, so it is
 * checked like any other; anything else passes through unchanged. The
 * network settings it held (`taskTimeoutMs`, `workerSilenceMs`) and `save`
 * come from the command line, as for a new checkpoint.
 */
function fromEarlierFormat(stored: unknown): unknown {
  if (!isPlainObject(stored) || !("globalBatch" in stored)) return stored;
  const out: Record<string, EarlierValue> = {};
  const renamed: Record<string, string> = {
    globalBatch: "global-batch",
    microBatch: "micro-batch",
    weightsEncoding: "weights-encoding",
    weightDecay: "weight-decay",
    advStart: "adv-start",
    evalEvery: "eval-every",
    corpusFile: "corpus",
    corpusDocs: "corpus-docs",
    maxLen: "max-len",
    trainLimit: "train-limit",
    evalLimit: "eval-limit",
    modelDir: "model",
    checkpointEvery: "checkpoint-every",
  };
  const dropped = new Set(["save", "resume", "taskTimeoutMs", "workerSilenceMs"]);
  for (const [key, value] of Object.entries(stored as Record<string, EarlierValue>)) {
    if (dropped.has(key)) continue;
    if (key === "shuffle") out["no-shuffle"] = value === false;
    else if (key === "saveDtype") out["save-dtype"] = String(value).toLowerCase();
    else if (key === "saveShardBytes") out["save-shard-size"] = String(value);
    else if (key === "task" && typeof value === "object" && value !== null) {
      for (const k of ["task", "data", "train", "eval"]) out[k] = value[k] ?? null;
    } else if (key === "adversary" && typeof value === "object" && value !== null) {
      out.adv = value.mode ?? null;
      for (const k of ["steps", "lr", "eps", "norm", "init"]) out[`adv-${k}`] = value[k] ?? null;
    } else out[renamed[key] ?? key] = value;
  }
  return out;
}

/**
 * The `/status` view of a run configuration: `training`, `data` and `io`
 * merged one level deep (no address, no secrets).
 */
export function trainingFields(c: RunConfig): Record<string, unknown> {
  const { resume: _r, ...io } = c.io;
  return { ...c.training, ...c.data, ...io };
}
