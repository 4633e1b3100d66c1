/**
 * The record of a run (README, "Run record"): with `--save DIR`, one JSON
 * line per step and per evaluation appended to `DIR/metrics.jsonl` as the run
 * goes — each line one write to the file, so a run killed at any point keeps
 * the history of every step it finished. A resumed run keeps the lines up to
 * the step it resumes from (a killed run may have logged steps past its last
 * checkpoint; they are computed again) and appends after them.
 *
 * The same history, in Hugging Face's `log_history` form, goes into each
 * checkpoint's `trainer_state.json` ({@link RunLog.trainerState}).
 *
 * Lines (`type` first):
 * - `{"type":"step","step","total_steps","epoch","loss","lr","grad_norm","clipped",
 *   "update_norm","examples","tokens","examples_per_s","adversary","micro_batches",
 *   "time_ms":{wait,compute,adversary,transfer,average,optimizer,encode,step},
 *   "elapsed_s","time"}`
 * - `{"type":"eval","step","epoch","split",...metrics,"examples","time"}`
 * - `{"type":"resume","step","time"}` where a resumed run continues the file.
 *
 * @module
 */
import { join } from "node:path";
import type { EvalResult } from "../shared/eval/held_out.ts";
import { atomicWriteFile } from "../shared/io/atomic_write.ts";
import { isPlainObject } from "../shared/io/plain_object.ts";

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

/**
 * What a step line is made of: the fields of the trainer's `StepReport`
 * (coordinator/trainer.ts, which extends this) that the log keeps. Declared
 * here so that the trainer can own a log without an import cycle.
 */
export interface LoggedStep {
  /** 1-based count of completed steps. */
  readonly step: number;
  readonly totalSteps: number;
  readonly loss: number;
  readonly lr: number;
  readonly gradNorm: number;
  readonly clipped: boolean;
  /** ‖η·r·u‖₂: the l2 norm of the update applied (coordinator/optimizer.ts, `StepStats`). */
  readonly updateNorm: number;
  readonly examples: number;
  readonly tokens: number;
  readonly adversary: string;
  readonly microBatches: number;
  readonly timings: StepTimings;
  readonly elapsedMs: number;
}

/** The hooks the log listens on (a `TrainerObserver`'s). */
export interface LogObserver {
  step?(r: LoggedStep): void;
  evaluated?(step: number, split: string, result: EvalResult): void;
}

/** The file name under `--save`. */
export const METRICS_FILE = "metrics.jsonl";

/** One line of metrics.jsonl. */
export type LogLine = Record<string, unknown> & { type: string; step: number };

/** Where a run's log goes and what it continues. */
export interface RunLogOptions {
  /** The `--save` folder; null: the history is kept in memory only. */
  readonly save: string | null;
  /** The folder of the run resumed (its metrics.jsonl is continued); null: a new run. */
  readonly resumedFrom: string | null;
  /** Steps completed when this process starts (a resumed run's step). */
  readonly step: number;
  /** Training examples per epoch (for `epoch` = step · B / N). */
  readonly trainExamples: number;
  /** The global batch B. */
  readonly globalBatch: number;
}

/** Hugging Face's model-selection fields of trainer_state.json. */
export interface BestFields {
  readonly metric: string;
  readonly value: number | null;
  readonly step: number | null;
  /** The folder holding the best model (`DIR/best`), if written. */
  readonly checkpoint: string | null;
}

/** The run's history: metrics.jsonl, and `log_history` for trainer_state.json. */
export class RunLog {
  readonly #path: string | null;
  readonly #lines: LogLine[];
  readonly #epochSteps: number;

  private constructor(path: string | null, lines: LogLine[], opts: RunLogOptions) {
    this.#path = path;
    this.#lines = lines;
    this.#epochSteps = opts.trainExamples / Math.max(1, opts.globalBatch);
  }

  /**
   * Opens the log: a new run's starts empty; a resumed run's keeps the lines
   * of its earlier file (`resumedFrom`'s) up to `step`, rewritten atomically
   * into `save`, then a `resume` line.
   */
  static async open(opts: RunLogOptions): Promise<RunLog> {
    const path = opts.save ? join(opts.save, METRICS_FILE) : null;
    let lines: LogLine[] = [];
    const from = opts.resumedFrom ?? opts.save;
    if (opts.step > 0 && from) {
      lines = (await readLog(join(from, METRICS_FILE))).filter((l) => l.step <= opts.step);
      if (path) {
        await atomicWriteFile(path, lines.map((l) => JSON.stringify(l) + "\n").join(""));
      }
    }
    const log = new RunLog(path, lines, opts);
    if (opts.step > 0) log.#append({ type: "resume", step: opts.step, time: now() });
    return log;
  }

  /** Every line so far (of this run, resumed ones included). */
  get lines(): readonly LogLine[] {
    return this.#lines;
  }

  #epoch(step: number): number {
    return this.#epochSteps > 0 ? round(step / this.#epochSteps, 4) : 0;
  }

  #append(line: LogLine): void {
    this.#lines.push(line);
    if (this.#path) {
      Deno.writeTextFileSync(this.#path, JSON.stringify(line) + "\n", { append: true });
    }
  }

  /** Records a finished step. */
  step(r: LoggedStep): void {
    const t = r.timings;
    this.#append({
      type: "step",
      step: r.step,
      total_steps: r.totalSteps,
      epoch: this.#epoch(r.step),
      loss: r.loss,
      lr: r.lr,
      grad_norm: r.gradNorm,
      clipped: r.clipped,
      update_norm: r.updateNorm,
      examples: r.examples,
      tokens: r.tokens,
      examples_per_s: round(r.examples / Math.max(1e-9, t.stepMs / 1000), 3),
      adversary: r.adversary,
      micro_batches: r.microBatches,
      time_ms: {
        wait: round(t.waitMs, 1),
        compute: round(t.computeMs, 1),
        adversary: round(t.adversaryMs, 1),
        transfer: round(t.transferMs, 1),
        average: round(t.averageMs, 1),
        optimizer: round(t.optimizerMs, 1),
        encode: round(t.encodeMs, 1),
        step: round(t.stepMs, 1),
      },
      elapsed_s: round(r.elapsedMs / 1000, 3),
      time: now(),
    });
  }

  /** Records an evaluation after `step` steps. */
  evaluated(step: number, split: string, result: EvalResult): void {
    this.#append({ type: "eval", step, epoch: this.#epoch(step), split, ...result, time: now() });
  }

  /** `observer` with every step and evaluation also recorded here (first). */
  observe<O extends LogObserver>(observer: O): O {
    return {
      ...observer,
      step: (r: LoggedStep) => {
        this.step(r);
        observer.step?.(r);
      },
      evaluated: (step: number, split: string, result: EvalResult) => {
        this.evaluated(step, split, result);
        observer.evaluated?.(step, split, result);
      },
    } as O;
  }

  /** The history as Hugging Face's `log_history`: `{loss, grad_norm, learning_rate, epoch, step}`, `{eval_*, epoch, step}`. */
  logHistory(): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (const l of this.#lines) {
      if (l.type === "step") {
        out.push({
          epoch: l.epoch,
          grad_norm: l.grad_norm,
          learning_rate: l.lr,
          loss: l.loss,
          step: l.step,
        });
      } else if (l.type === "eval") {
        const entry: Record<string, unknown> = { epoch: l.epoch };
        for (const [k, v] of Object.entries(l)) {
          if (["type", "step", "epoch", "split", "time"].includes(k)) continue;
          entry[`${l.split === "eval" ? "eval" : `eval_${l.split}`}_${k}`] = v;
        }
        entry.step = l.step;
        out.push(entry);
      }
    }
    return out;
  }

  /**
   * trainer_state.json as Hugging Face's Trainer writes it (`TrainerState`):
   * `global_step`, `max_steps`, `log_history`, `best_metric`,
   * `best_model_checkpoint`, … — adaptmesh's own resume state is in
   * run_state.json beside it (coordinator/run_state.ts).
   */
  trainerState(p: {
    readonly globalStep: number;
    readonly maxSteps: number;
    readonly evalSteps: number;
    readonly saveSteps: number;
    readonly trainBatchSize: number;
    readonly best: BestFields | null;
  }): Record<string, unknown> {
    let tokens = 0;
    for (const l of this.#lines) if (l.type === "step") tokens += Number(l.tokens) || 0;
    return {
      best_global_step: p.best?.step ?? null,
      best_metric: p.best?.value ?? null,
      best_model_checkpoint: p.best?.checkpoint ?? null,
      epoch: this.#epoch(p.globalStep),
      eval_steps: p.evalSteps,
      global_step: p.globalStep,
      is_hyper_param_search: false,
      is_local_process_zero: true,
      is_world_process_zero: true,
      log_history: this.logHistory(),
      logging_steps: 1,
      max_steps: p.maxSteps,
      num_input_tokens_seen: tokens,
      num_train_epochs: Math.ceil(this.#epoch(p.maxSteps)),
      save_steps: p.saveSteps,
      stateful_callbacks: {},
      total_flos: 0,
      train_batch_size: p.trainBatchSize,
      trial_name: null,
      trial_params: null,
    };
  }
}

/** The complete lines of a metrics.jsonl (a torn last line, from a kill mid-write, is dropped). */
export async function readLog(path: string): Promise<LogLine[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  const out: LogLine[] = [];
  for (const raw of text.split("\n").slice(0, -1)) {
    if (raw.trim() === "") continue;
    try {
      const v: unknown = JSON.parse(raw);
      if (isPlainObject(v) && typeof v.type === "string" && typeof v.step === "number") {
        out.push(v as LogLine);
      }
    } catch { /* a torn line */ }
  }
  return out;
}

function round(v: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

function now(): string {
  return new Date().toISOString();
}
