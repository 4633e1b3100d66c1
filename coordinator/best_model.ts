/**
 * Keep the best, stop when done (README, "Run record"): with `--eval-every N`
 * every evaluation is compared with the best so far on `--metric-for-best`
 * (default: the task's main metric; loss-like metrics — names ending in
 * `loss` — are minimised, the others maximised). The trainer saves a new
 * best's model to `DIR/best` (coordinator/trainer.ts), and
 * `--early-stopping-patience K` ends the run after K evaluations in a row
 * without improvement. The state (best value and step, evaluations since)
 * travels in each checkpoint so a resumed run goes on counting.
 *
 * @module
 */
import { FlagError } from "../shared/cli/flags.ts";
import type { EvalResult } from "../shared/eval/held_out.ts";
import { isPlainObject } from "../shared/io/plain_object.ts";

/** The flags of model selection and checkpoint rotation (part of the training flags). */
export const BEST_MODEL_FLAGS = {
  "metric-for-best": {
    type: "string",
    help: "with --eval-every: the metric DIR/best and early stopping follow " +
      "(default: the task's main metric; *loss minimised, others maximised)",
  },
  "early-stopping-patience": {
    type: "int",
    default: 0,
    min: 0,
    help: "end the run after K evaluations (--eval-every) without improvement (0: never)",
  },
  "save-total-limit": {
    type: "int",
    default: 1,
    min: 1,
    help: "step checkpoints kept in --save: the newest N (never the best step's)",
  },
} as const;

/** What the run selects its best model by. */
export interface BestModelConfig {
  /** The metric compared; null: the task's main metric. */
  readonly metric: string | null;
  /** Evaluations without improvement that end the run; 0: never. */
  readonly patience: number;
}

/** The flags' values → {@link BestModelConfig}; model selection needs `--eval-every`. */
export function resolveBestModel(f: {
  readonly "metric-for-best"?: string;
  readonly "early-stopping-patience": number;
  readonly "eval-every": number;
}): BestModelConfig {
  const metric = f["metric-for-best"] ?? null;
  const patience = f["early-stopping-patience"];
  if (f["eval-every"] === 0) {
    if (patience > 0) throw new FlagError("--early-stopping-patience needs --eval-every N");
    if (metric !== null) throw new FlagError("--metric-for-best needs --eval-every N");
  }
  if (metric !== null && metric.trim() === "") {
    throw new FlagError("--metric-for-best needs a metric name");
  }
  return { metric, patience };
}

/** Whether smaller values of `metric` are better (losses). */
export function minimised(metric: string): boolean {
  return /loss$/.test(metric);
}

/** The best evaluation so far, as a checkpoint stores it. */
export interface BestState {
  readonly metric: string;
  /** null: no evaluation yet. */
  readonly value: number | null;
  readonly step: number | null;
  /** Evaluations since the best one. */
  readonly sinceBest: number;
}

/** The best evaluation so far and the early-stopping count. */
export class BestModel {
  readonly metric: string;
  readonly patience: number;
  #value: number | null = null;
  #step: number | null = null;
  #sinceBest = 0;

  /**
   * `metrics`: what the task's evaluation reports (the first is its main
   * metric); an unknown `--metric-for-best` is an error naming them.
   * `stored`: a resumed run's state.
   */
  constructor(config: BestModelConfig, metrics: readonly string[], stored?: unknown) {
    this.metric = config.metric ?? metrics[0] ?? "accuracy";
    this.patience = config.patience;
    if (config.metric !== null && metrics.length > 0 && !metrics.includes(config.metric)) {
      throw new FlagError(
        `--metric-for-best ${config.metric}: this task's evaluation reports ${metrics.join(", ")}`,
      );
    }
    if (isPlainObject(stored) && stored.metric === this.metric) {
      this.#value = typeof stored.value === "number" ? stored.value : null;
      this.#step = typeof stored.step === "number" ? stored.step : null;
      this.#sinceBest = typeof stored.sinceBest === "number" ? stored.sinceBest : 0;
    }
  }

  /** The best value so far (null before the first evaluation). */
  get value(): number | null {
    return this.#value;
  }

  /** The step of the best evaluation so far. */
  get step(): number | null {
    return this.#step;
  }

  /** Whether early stopping has ended the run. */
  get exhausted(): boolean {
    return this.patience > 0 && this.#sinceBest >= this.patience;
  }

  /** Evaluations in a row without improvement. */
  get sinceBest(): number {
    return this.#sinceBest;
  }

  /**
   * Takes the evaluation at `step` into account; true when it is the new best
   * (strictly better; the first one always is). A result without the metric
   * (or a NaN) counts as no improvement.
   */
  consider(step: number, result: EvalResult): boolean {
    const v = result[this.metric];
    const better = typeof v === "number" && !Number.isNaN(v) &&
      (this.#value === null || (minimised(this.metric) ? v < this.#value : v > this.#value));
    if (better) {
      this.#value = v;
      this.#step = step;
      this.#sinceBest = 0;
    } else this.#sinceBest++;
    return better;
  }

  /** The line announcing a new best (`savedTo`: where its model went). */
  newBestLine(savedTo: string | null): string {
    return `best ${this.metric} so far: ${this.#value} at step ${this.#step}` +
      (savedTo ? ` (model saved to ${savedTo})` : "");
  }

  /** The line announcing early stopping after the evaluation at `step`. */
  stopLine(step: number): string {
    return `early stopping at step ${step}: ${this.metric} has not improved on ${this.#value} ` +
      `(step ${this.#step}) for ${this.patience} evaluation${this.patience === 1 ? "" : "s"}`;
  }

  /** The state a checkpoint stores. */
  state(): BestState {
    return {
      metric: this.metric,
      value: this.#value,
      step: this.#step,
      sinceBest: this.#sinceBest,
    };
  }
}
