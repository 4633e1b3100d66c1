/**
 * Collects the numbers a person watching a run sees (docs/architecture.md,
 * principle 7): steps, losses, timings, workers, bytes, rejections, and the
 * rates and ETA derived from them. It only collects; `/status` serves
 * {@link RunMonitor.status} and the dashboard draws it
 * (coordinator/monitor_routes.ts), and coordinator/metrics.ts reads the same
 * numbers as Prometheus text, so the two always agree.
 *
 * Everything reaches it through coordinator/coordinator.ts, which wires the
 * trainer's observer ({@link RunMonitor.observer}), the scheduler's events
 * ({@link RunMonitor.events}) and worker table ({@link RunMonitor.attach}),
 * and the mesh endpoint's joins, leaves, bytes and rejections.
 *
 * @module
 */
import type { ErrorCode } from "../shared/wire/protocol.ts";
import type { EvalResult } from "../shared/eval/held_out.ts";
import type {
  Discard,
  Redispatch,
  ResultSummary,
  Scheduler,
  SchedulerEvents,
  WorkerInfo,
  WorkerLink,
} from "./scheduler.ts";
import type { RunSummary, StepReport, Trainer, TrainerObserver } from "./trainer.ts";
import { trainingFields } from "./run_config.ts";

/** Steps the recent-rate estimates (examples/s, ETA) look back over. */
const RATE_WINDOW = 20;
/** Step reports kept in memory. */
const HISTORY_LIMIT = 10_000;
/** Step reports `/status` returns. */
const STATUS_HISTORY = 500;
/** Departed workers whose totals are still exported. */
const DEPARTED_LIMIT = 1000;

/** One evaluation of a split. */
export interface EvalRecord {
  readonly step: number;
  readonly split: string;
  readonly result: EvalResult;
}

/** A worker as `/status` and `/metrics` show it. */
export interface WorkerView {
  readonly id: string;
  readonly backend: string;
  readonly device: string;
  /** Unix ms. */
  readonly joinedAt: number;
  readonly connectedSeconds: number;
  /** Moving average of compute ms per example (0 until measured). */
  readonly msPerExample: number;
  /** Examples this worker contributed per second of wall time over the recent steps. */
  readonly examplesPerSecond: number;
  readonly microBatches: number;
  readonly examples: number;
  readonly rejected: number;
  readonly inflight: number;
  /** The weights version the worker last received (−1 before the first). */
  readonly weightsVersion: number;
}

/** A worker's totals over the run, kept after it leaves (and across its reconnections). */
export interface WorkerTotals {
  readonly backend: string;
  microBatches: number;
  examples: number;
  connected: boolean;
}

/** One step of the `/status` history (times in seconds). */
export interface HistoryPoint extends
  Pick<
    StepReport,
    | "step"
    | "loss"
    | "lr"
    | "gradNorm"
    | "updateNorm"
    | "clipped"
    | "trustRatio"
    | "examples"
    | "tokens"
    | "adversary"
  > {
  /** Seconds since the run started. */
  readonly t: number;
  /** examples / step time. */
  readonly examplesPerSecond: number;
  /** The phases the dashboard's step-time chart draws. */
  readonly seconds: {
    readonly step: number;
    readonly compute: number;
    readonly adversary: number;
    readonly transfer: number;
    readonly averaging: number;
    readonly optimizer: number;
    readonly encode: number;
    readonly wait: number;
  };
  /** Examples per second each worker contributed to this step. */
  readonly workers: Record<string, number>;
}

/** Cumulative counts of the run (this process). */
export interface RunCounters {
  readonly steps: number;
  readonly examples: number;
  readonly tokens: number;
  readonly clippedSteps: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly weightsBytesSent: number;
  readonly checkpoints: number;
  readonly evaluations: number;
  readonly workersJoined: number;
  readonly workersLeft: number;
  readonly redispatched: Partial<Record<Redispatch, number>>;
  readonly discarded: Partial<Record<Discard, number>>;
  readonly rejected: Partial<Record<ErrorCode, number>>;
}

/**
 * The `/status` document: what the dashboard (coordinator/dashboard/app.js)
 * draws, and the per-step history (grad norm, trust ratios, clipping, timings)
 * for scripts that follow a run.
 */
export type RunStatus = {
  readonly runId: string;
  /** Unix ms of this document. */
  readonly now: number;
  readonly finished: boolean;
  readonly summary: RunSummary | null;
  readonly config: Record<string, unknown>;
  readonly model: Record<string, unknown>;
  readonly task: Record<string, unknown>;
  readonly progress: {
    readonly step: number;
    readonly totalSteps: number;
    readonly elapsedSeconds: number;
    readonly etaSeconds: number | null;
  };
  readonly loss: number | null;
  readonly lr: number | null;
  readonly gradNorm: number | null;
  readonly trustRatio: StepReport["trustRatio"] | null;
  readonly examplesPerSecond: number;
  readonly adversary: string | null;
  readonly workers: WorkerView[];
  readonly history: HistoryPoint[];
  readonly evaluations: {
    step: number;
    split: string;
    examples: number;
    metrics: Record<string, number>;
  }[];
  readonly lastEvaluation: Record<string, number> | null;
  readonly counters: RunCounters;
};

/** Collects the run's numbers for `/status`, `/metrics` and the dashboard. */
export class RunMonitor {
  readonly history: StepReport[] = [];
  readonly evals: EvalRecord[] = [];
  readonly rejectedByReason = new Map<ErrorCode, number>();
  readonly discardedByReason = new Map<Discard, number>();
  readonly redispatchedByReason = new Map<Redispatch, number>();
  bytesIn = 0;
  bytesOut = 0;
  weightsBytesSent = 0;
  checkpoints = 0;
  examples = 0;
  tokens = 0;
  clippedSteps = 0;
  workersJoined = 0;
  workersLeft = 0;
  summary: RunSummary | null = null;
  /** Per-worker totals, kept after a worker leaves (and across its reconnections). */
  readonly workerTotals = new Map<string, WorkerTotals>();

  #scheduler: Scheduler | null = null;
  /** Called with each step report once it is recorded (the Prometheus histograms). */
  readonly #stepListeners: ((r: StepReport) => void)[] = [];
  /** Examples per worker accepted during the running step. */
  #stepExamples = new Map<string, number>();
  /** Per step: examples per second each worker contributed. */
  #stepWorkers = new Map<number, Record<string, number>>();

  constructor(readonly trainer: Trainer) {}

  /** Gives the monitor the scheduler, whose worker table `/status` and `/metrics` read. */
  attach(scheduler: Scheduler): void {
    this.#scheduler = scheduler;
  }

  /** Calls `listener` with each step report, after the monitor has recorded it. */
  onStep(listener: (r: StepReport) => void): void {
    this.#stepListeners.push(listener);
  }

  /** Scheduler hooks. */
  readonly events: SchedulerEvents = {
    discarded: (_w: WorkerInfo, reason: Discard) => inc(this.discardedByReason, reason),
    redispatched: (reason: Redispatch) => inc(this.redispatchedByReason, reason),
    accepted: (w: WorkerInfo, r: ResultSummary) => {
      this.#stepExamples.set(w.id, (this.#stepExamples.get(w.id) ?? 0) + r.count);
      const t = this.#total(w.id, w.backend);
      t.microBatches++;
      t.examples += r.count;
    },
    weightsSent: (_w: WorkerInfo, bytes: number) => {
      this.weightsBytesSent += bytes;
    },
  };

  #total(id: string, backend: string): WorkerTotals {
    let t = this.workerTotals.get(id);
    if (!t) {
      t = { backend, microBatches: 0, examples: 0, connected: true };
      this.workerTotals.set(id, t);
      if (this.workerTotals.size > DEPARTED_LIMIT) {
        for (const [k, v] of this.workerTotals) {
          if (!v.connected) {
            this.workerTotals.delete(k);
            break;
          }
        }
      }
    }
    return t;
  }

  /** A peer message refused with `code` (the mesh endpoint). */
  rejected(code: ErrorCode): void {
    inc(this.rejectedByReason, code);
  }

  /** `n` bytes of WebSocket frames received (`in`) or sent (`out`). */
  bytes(direction: "in" | "out", n: number): void {
    if (direction === "in") this.bytesIn += n;
    else this.bytesOut += n;
  }

  /** A worker's handshake was accepted. */
  joined(link: WorkerLink): void {
    this.workersJoined++;
    this.#total(link.id, link.backend).connected = true;
  }

  /** A worker disconnected. */
  left(id: string): void {
    this.workersLeft++;
    const t = this.workerTotals.get(id);
    if (t) t.connected = false;
  }

  /** The run is over. */
  finished(summary: RunSummary): void {
    this.summary = summary;
  }

  /** Wraps `inner` so every report also lands here. */
  observer(inner: TrainerObserver = {}): TrainerObserver {
    return {
      log: inner.log,
      step: (r) => {
        this.#record(r);
        inner.step?.(r);
      },
      evaluated: (step, split, result) => {
        this.evals.push({ step, split, result });
        if (this.evals.length > HISTORY_LIMIT) this.evals.shift();
        inner.evaluated?.(step, split, result);
      },
      checkpointed: (step, folder) => {
        this.checkpoints++;
        inner.checkpointed?.(step, folder);
      },
    };
  }

  #record(r: StepReport): void {
    this.history.push(r);
    if (this.history.length > HISTORY_LIMIT) {
      const old = this.history.shift()!;
      this.#stepWorkers.delete(old.step);
    }
    this.examples += r.examples;
    this.tokens += r.tokens;
    if (r.clipped) this.clippedSteps++;
    const seconds = Math.max(1e-9, r.timings.stepMs / 1000);
    const perWorker: Record<string, number> = {};
    for (const [id, n] of this.#stepExamples) perWorker[id] = n / seconds;
    this.#stepExamples.clear();
    this.#stepWorkers.set(r.step, perWorker);
    for (const listener of this.#stepListeners) listener(r);
  }

  /** Seconds since the run started (frozen at the end). */
  elapsedSeconds(): number {
    if (this.summary) return this.summary.elapsedMs / 1000;
    return (performance.now() - this.trainer.startedAt) / 1000;
  }

  /** Wall seconds the recent window covers, and the steps in it. */
  #span(): { seconds: number; steps: StepReport[] } | null {
    const w = this.history.slice(-RATE_WINDOW);
    if (w.length === 0) return null;
    if (w.length === 1) return { seconds: w[0].timings.stepMs / 1000, steps: w };
    // From the end of the first step in the window to the end of the last.
    return { seconds: (w.at(-1)!.elapsedMs - w[0].elapsedMs) / 1000, steps: w.slice(1) };
  }

  /** Examples per second over the recent steps (0 before the first). */
  examplesPerSecond(): number {
    const s = this.#span();
    if (!s || s.seconds <= 0) return 0;
    return s.steps.reduce((a, r) => a + r.examples, 0) / s.seconds;
  }

  /** Estimated seconds to the last step (null before the first step, 0 when done). */
  etaSeconds(): number | null {
    const t = this.trainer;
    if (this.summary || t.step >= t.totalSteps) return 0;
    const s = this.#span();
    if (!s || s.seconds <= 0) return null;
    return (s.seconds / s.steps.length) * (t.totalSteps - t.step);
  }

  /** Examples per second each worker contributed over the recent steps. */
  #workerRates(): Map<string, number> {
    const rates = new Map<string, number>();
    const s = this.#span();
    if (!s || s.seconds <= 0) return rates;
    for (const r of s.steps) {
      const per = this.#stepWorkers.get(r.step) ?? {};
      const stepSeconds = r.timings.stepMs / 1000;
      for (const [id, rate] of Object.entries(per)) {
        // Back to examples, then over the whole window.
        rates.set(id, (rates.get(id) ?? 0) + rate * stepSeconds);
      }
    }
    for (const [id, n] of rates) rates.set(id, n / s.seconds);
    return rates;
  }

  /** The connected workers (none before {@link attach}). */
  workers(): WorkerView[] {
    const now = Date.now();
    const rates = this.#workerRates();
    return [...(this.#scheduler?.workers.values() ?? [])].map((w) => ({
      id: w.id,
      backend: w.backend,
      device: w.device,
      joinedAt: w.joinedAt,
      connectedSeconds: Math.max(0, (now - w.joinedAt) / 1000),
      msPerExample: w.msPerExample,
      examplesPerSecond: rates.get(w.id) ?? 0,
      microBatches: w.microBatches,
      examples: w.examples,
      rejected: w.rejected,
      inflight: w.inflight.size,
      weightsVersion: w.weightsVersion,
    }));
  }

  /** Cumulative counts. */
  counters(): RunCounters {
    return {
      steps: this.trainer.step,
      examples: this.examples,
      tokens: this.tokens,
      clippedSteps: this.clippedSteps,
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      weightsBytesSent: this.weightsBytesSent,
      checkpoints: this.checkpoints,
      evaluations: this.evals.length,
      workersJoined: this.workersJoined,
      workersLeft: this.workersLeft,
      redispatched: Object.fromEntries(this.redispatchedByReason),
      discarded: Object.fromEntries(this.discardedByReason),
      rejected: Object.fromEntries(this.rejectedByReason),
    };
  }

  /** The last `n` steps, trimmed to the plotted fields. */
  points(n = STATUS_HISTORY): HistoryPoint[] {
    return this.history.slice(-n).map((r) => ({
      step: r.step,
      loss: r.loss,
      lr: r.lr,
      gradNorm: r.gradNorm,
      updateNorm: r.updateNorm,
      clipped: r.clipped,
      trustRatio: r.trustRatio,
      examples: r.examples,
      tokens: r.tokens,
      adversary: r.adversary,
      t: r.elapsedMs / 1000,
      examplesPerSecond: r.timings.stepMs > 0 ? r.examples / (r.timings.stepMs / 1000) : 0,
      seconds: {
        step: r.timings.stepMs / 1000,
        compute: r.timings.computeMs / 1000,
        adversary: r.timings.adversaryMs / 1000,
        transfer: r.timings.transferMs / 1000,
        averaging: r.timings.averageMs / 1000,
        optimizer: r.timings.optimizerMs / 1000,
        encode: r.timings.encodeMs / 1000,
        wait: r.timings.waitMs / 1000,
      },
      workers: this.#stepWorkers.get(r.step) ?? {},
    }));
  }

  /** The `/status` document. */
  status(): RunStatus {
    const t = this.trainer;
    const last = this.history.at(-1);
    const m = t.modelConfig;
    const mlm = t.config.training.objective === "mlm";
    // A pre-training run has no classification task or labels: leave their fields out.
    const fields = trainingFields(t.config);
    const { task: _task, ...untasked } = fields;
    return {
      runId: t.runId,
      now: Date.now(),
      finished: this.summary !== null,
      summary: this.summary,
      config: mlm ? untasked : fields,
      model: {
        modelType: m.modelType,
        hiddenSize: m.hiddenSize,
        layers: m.numLayers,
        heads: m.numHeads,
        vocabSize: m.vocabSize,
        ...(mlm ? {} : { numLabels: m.numLabels }),
        parameters: t.layout.total,
      },
      task: t.data.summary(),
      progress: {
        step: t.step,
        totalSteps: t.totalSteps,
        elapsedSeconds: this.elapsedSeconds(),
        etaSeconds: this.etaSeconds(),
      },
      loss: last?.loss ?? null,
      lr: last?.lr ?? null,
      gradNorm: last?.gradNorm ?? null,
      trustRatio: last?.trustRatio ?? null,
      examplesPerSecond: this.examplesPerSecond(),
      adversary: last?.adversary ?? null,
      workers: this.workers(),
      history: this.points(),
      evaluations: this.evals.map((e) => {
        const { examples, ...metrics } = e.result;
        return { step: e.step, split: e.split, examples, metrics };
      }),
      lastEvaluation: this.evals.at(-1)?.result ?? t.lastEval ?? null,
      counters: this.counters(),
    };
  }
}

/** Adds one to `m[k]`. */
function inc<K>(m: Map<K, number>, k: K): void {
  m.set(k, (m.get(k) ?? 0) + 1);
}
