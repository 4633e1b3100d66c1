/**
 * The run configuration: every training flag of `deno task cluster` and
 * `deno task coordinator` (docs/architecture.md, "Command line"), its default,
 * and its validation. `--config FILE` supplies the same keys as JSON; flags win.
 *
 * @module
 */
import { FlagError, type Flags, parseFlags } from "../shared/cli/flags.ts";
import { ADVERSARY_MODES, type AdversaryConfig } from "../shared/adversary.ts";
import type { OptimizerKind } from "./optimizer.ts";
import type { ScheduleKind } from "./lr_schedule.ts";
import type { Objective } from "../shared/param_layout.ts";
import { parseByteSize } from "../shared/checkpoint.ts";

/** The training flags, shared by cluster and coordinator. */
/**
 * Peak learning rate per optimizer when `--lr` is not given: the best of
 * the recorded sweeps on IMDB with the built-in model (README, "Set up and
 * run" and "Time to accuracy") — LAMB: the no-flag run at B = 256 (1e-2;
 * 7.5e-3 won at B = 1024), AdamW at B = 32.
 */
export const DEFAULT_LR: Readonly<Record<OptimizerKind, number>> = { lamb: 1e-2, adamw: 5e-4 };

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
    help: "checkpoint folder (HF format); default: the built-in small BERT",
  },
  task: {
    type: "string",
    help: "imdb (built in) or a GLUE name: cola sst2 mrpc stsb qqp mnli qnli rte wnli",
  },
  data: { type: "string", help: "GLUE task folder (train.tsv, dev.tsv)" },
  train: { type: "string", help: "training JSONL file ({text, text_pair?, label})" },
  eval: { type: "string", help: "evaluation JSONL file" },
  "max-len": { type: "int", default: 128, help: "maximum tokens per example" },
  steps: { type: "int", help: "optimizer steps (default: from --epochs, else 40)" },
  epochs: { type: "number", help: "passes over the training split (instead of --steps)" },
  "global-batch": { type: "int", default: 256, help: "examples per optimizer step (B)" },
  "micro-batch": { type: "int", default: 32, help: "examples per worker task (b)" },
  optimizer: { type: "string", default: "lamb", help: "lamb | adamw" },
  lr: {
    type: "number",
    help: `peak learning rate (default: ${DEFAULT_LR.lamb} LAMB, ${DEFAULT_LR.adamw} AdamW)`,
  },
  warmup: { type: "number", default: 0.1, help: "warmup steps, or a fraction of the run when < 1" },
  schedule: { type: "string", default: "linear", help: "linear (decay to 0) | constant" },
  "weight-decay": { type: "number", default: 0.01, help: "decoupled weight decay λ" },
  clip: { type: "number", default: 0, help: "global gradient-norm clip (0: off)" },
  adv: { type: "string", default: "pgd", help: "adversary: pgd | freelb | off" },
  "adv-steps": { type: "int", default: 1, help: "K, ascent steps" },
  "adv-lr": { type: "number", default: 0.1, help: "α, ascent step size" },
  "adv-eps": { type: "number", default: 1.0, help: "ε, perturbation radius" },
  "adv-norm": { type: "string", default: "l2", help: "l2 | linf" },
  "adv-init": { type: "number", default: 0, help: "random start scale (0: δ0 = 0)" },
  "adv-start": {
    type: "number",
    default: 0.3,
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
  deterministic: {
    type: "boolean",
    help: "bit-reproducible: one backend for all workers, f32 weights",
  },
  "weights-encoding": { type: "string", default: "f32", help: "f32 | f16 weights sent to workers" },
  host: { type: "string", default: "127.0.0.1", help: "address to listen on" },
  port: { type: "int", default: 8787, help: "port to listen on (0: any free port)" },
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
    help:
      "seconds a worker may send nothing (heartbeats every 10 s) before it is dropped (0: never)",
  },
  linger: { type: "boolean", help: "keep the dashboard up after the run" },
  config: { type: "string", help: "JSON file with the same keys as these flags (flags win)" },
  quiet: { type: "boolean", help: "no progress output" },
} as const;

/** Parsed training flags. */
export type TrainingFlags = Flags<typeof TRAINING_FLAGS>;

/** The validated configuration of one run. */
export interface RunConfig {
  readonly objective: Objective;
  readonly corpusDocs: number;
  /** mlm: the user's text file instead of the built-in corpora. */
  readonly corpusFile: string | null;
  readonly modelDir: string | null;
  readonly task: { task?: string; data?: string; train?: string; eval?: string };
  readonly maxLen: number;
  readonly steps: number | null;
  readonly epochs: number | null;
  readonly globalBatch: number;
  readonly microBatch: number;
  readonly optimizer: OptimizerKind;
  readonly lr: number;
  readonly warmup: number;
  readonly schedule: ScheduleKind;
  readonly weightDecay: number;
  readonly clip: number;
  readonly adversary: AdversaryConfig;
  readonly advStart: number;
  readonly dropout: number | null;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly evalEvery: number;
  readonly evalLimit: number;
  readonly trainLimit: number;
  readonly checkpointEvery: number;
  readonly save: string | null;
  readonly saveDtype: "F32" | "F16" | "BF16";
  /** Largest weights file of a saved model in bytes; past it the weights are sharded. */
  readonly saveShardBytes: number;
  readonly resume: string | null;
  readonly deterministic: boolean;
  readonly weightsEncoding: "f32" | "f16";
  readonly host: string;
  readonly port: number;
  readonly token: string;
  readonly metricsToken: string | null;
  readonly taskTimeoutMs: number;
  /** Silence after which a worker connection is dropped; 0: never. */
  readonly workerSilenceMs: number;
  readonly linger: boolean;
  readonly quiet: boolean;
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
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new FlagError(`--config ${path}: expected a JSON object`);
  }
  const given = new Set(
    args.filter((a) => a.startsWith("--")).map((a) => a.slice(2).split("=")[0]),
  );
  const out: string[] = [];
  for (const [key, value] of Object.entries(json)) {
    if (key === "config") throw new FlagError(`--config ${path}: "config" cannot nest`);
    if (given.has(key)) continue; // flags win
    if (typeof value === "boolean") {
      if (value) out.push(`--${key}`);
    } else out.push(`--${key}=${value}`);
  }
  return out;
}

/** Parses training flags (plus `extra` command-specific ones) into a RunConfig. */
export async function parseRunFlags<
  const E extends Record<string, import("../shared/cli/flags.ts").FlagSpec>,
>(
  args: readonly string[],
  extra: E,
  usage: string,
): Promise<{ config: RunConfig; flags: Flags<typeof TRAINING_FLAGS & E> }> {
  const spec = { ...TRAINING_FLAGS, ...extra };
  const fromFile = await configArgs(args);
  const flags = parseFlags([...fromFile, ...args], spec, usage) as Flags<typeof TRAINING_FLAGS & E>;
  const f = flags as unknown as TrainingFlags;
  if (f.steps !== undefined && f.epochs !== undefined) {
    throw new FlagError("give --steps or --epochs, not both");
  }
  if (f.data !== undefined && f.task === undefined) throw new FlagError("--data needs --task NAME");
  const globalBatch = positive("global-batch", f["global-batch"]);
  const microBatch = positive("micro-batch", f["micro-batch"]);
  const mode = oneOf("adv", f.adv, ADVERSARY_MODES);
  const advSteps = positive("adv-steps", f["adv-steps"]);
  const dropout = f.dropout;
  if (dropout !== undefined && !(dropout >= 0 && dropout < 1)) {
    throw new FlagError(`--dropout must be in [0, 1), got ${dropout}`);
  }
  const optimizer = oneOf<OptimizerKind>("optimizer", f.optimizer, ["lamb", "adamw"]);
  const config: RunConfig = {
    objective: oneOf<Objective>("objective", f.objective, ["classify", "mlm"]),
    corpusDocs: positive("corpus-docs", f["corpus-docs"], true),
    corpusFile: f.corpus ?? null,
    modelDir: f.model ?? null,
    task: {
      task: f.task ?? (f.train || f.eval ? undefined : "imdb"),
      data: f.data,
      train: f.train,
      eval: f.eval,
    },
    maxLen: positive("max-len", f["max-len"]),
    steps: f.steps !== undefined ? positive("steps", f.steps) : null,
    epochs: f.epochs !== undefined ? positive("epochs", f.epochs) : null,
    globalBatch,
    microBatch: Math.min(microBatch, globalBatch),
    optimizer,
    lr: f.lr !== undefined ? positive("lr", f.lr) : DEFAULT_LR[optimizer],
    warmup: positive("warmup", f.warmup, true),
    schedule: oneOf<ScheduleKind>("schedule", f.schedule, ["linear", "constant"]),
    weightDecay: positive("weight-decay", f["weight-decay"], true),
    clip: positive("clip", f.clip, true),
    adversary: {
      mode,
      steps: advSteps,
      lr: positive("adv-lr", f["adv-lr"], true),
      eps: positive("adv-eps", f["adv-eps"]),
      norm: oneOf("adv-norm", f["adv-norm"], ["l2", "linf"] as const),
      init: positive("adv-init", f["adv-init"], true),
    },
    advStart: positive("adv-start", f["adv-start"], true),
    dropout: dropout ?? null,
    shuffle: !f["no-shuffle"],
    seed: f.seed,
    evalEvery: positive("eval-every", f["eval-every"], true),
    evalLimit: positive("eval-limit", f["eval-limit"], true),
    trainLimit: positive("train-limit", f["train-limit"], true),
    checkpointEvery: positive("checkpoint-every", f["checkpoint-every"], true),
    save: f.save ?? null,
    saveDtype: oneOf("save-dtype", f["save-dtype"], ["f32", "f16", "bf16"] as const)
      .toUpperCase() as "F32" | "F16" | "BF16",
    saveShardBytes: byteSize("save-shard-size", f["save-shard-size"]),
    resume: f.resume ?? null,
    deterministic: f.deterministic,
    weightsEncoding: f.deterministic
      ? "f32"
      : oneOf("weights-encoding", f["weights-encoding"], ["f32", "f16"] as const),
    host: f.host,
    port: positive("port", f.port, true),
    token: f.token ?? newToken(),
    metricsToken: f["metrics-token"] ?? null,
    taskTimeoutMs: positive("task-timeout", f["task-timeout"], true) * 1000,
    workerSilenceMs: positive("worker-silence", f["worker-silence"], true) * 1000,
    linger: f.linger,
    quiet: f.quiet,
  };
  return { config, flags };
}

/** The training fields of a run configuration (no address, no secrets): what checkpoints store and `/status` shows. */
export function trainingFields(c: RunConfig): Record<string, unknown> {
  const {
    host: _h,
    port: _p,
    token: _t,
    metricsToken: _m,
    linger: _l,
    quiet: _q,
    resume: _r,
    ...rest
  } = c;
  return rest as unknown as Record<string, unknown>;
}
