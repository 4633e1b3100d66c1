/**
 * What a person watching a run sees: the run monitor collects every number
 * (steps, losses, timings, workers, bytes, rejections) and serves them as
 * JSON at `/status`. (Prometheus `/metrics` and the dashboard `/` build on it.)
 *
 * @module
 */
import type { Hono } from "hono";
import type { ErrorCode, ResultMessage } from "../shared/protocol.ts";
import type { EvalResult } from "../shared/evaluate.ts";
import type { SchedulerEvents, WorkerInfo, WorkerLink } from "./scheduler.ts";
import type { RunSummary, StepReport, Trainer, TrainerObserver } from "./trainer.ts";

/** Collects the run's numbers for `/status`, `/metrics` and the dashboard. */
export class RunMonitor {
  readonly history: StepReport[] = [];
  readonly evals: { step: number; split: string; result: EvalResult }[] = [];
  readonly rejectedByReason = new Map<string, number>();
  readonly discardedByReason = new Map<string, number>();
  readonly redispatchedByReason = new Map<string, number>();
  bytesIn = 0;
  bytesOut = 0;
  checkpoints = 0;
  summary: RunSummary | null = null;

  constructor(readonly trainer: Trainer) {}

  /** Scheduler hooks. */
  readonly events: SchedulerEvents = {
    discarded: (_w: WorkerInfo, reason: string) => this.#inc(this.discardedByReason, reason),
    redispatched: (reason: string) => this.#inc(this.redispatchedByReason, reason),
    accepted: (_w: WorkerInfo, _r: ResultMessage) => {},
  };

  #inc(m: Map<string, number>, k: string): void {
    m.set(k, (m.get(k) ?? 0) + 1);
  }

  rejected(code: ErrorCode, _detail: string): void {
    this.#inc(this.rejectedByReason, code);
  }

  bytes(direction: "in" | "out", n: number): void {
    if (direction === "in") this.bytesIn += n;
    else this.bytesOut += n;
  }

  joined(_link: WorkerLink): void {}
  left(_id: string): void {}

  finished(summary: RunSummary): void {
    this.summary = summary;
  }

  /** Wraps `inner` so every report also lands here. */
  observer(inner: TrainerObserver = {}): TrainerObserver {
    return {
      log: inner.log,
      step: (r) => {
        this.history.push(r);
        if (this.history.length > 10_000) this.history.shift();
        inner.step?.(r);
      },
      evaluated: (step, split, result) => {
        this.evals.push({ step, split, result });
        inner.evaluated?.(step, split, result);
      },
      checkpointed: (step, folder) => {
        this.checkpoints++;
        inner.checkpointed?.(step, folder);
      },
    };
  }

  /** The `/status` document. */
  status(): Record<string, unknown> {
    const t = this.trainer;
    const last = this.history.at(-1);
    return {
      runId: t.runId,
      step: t.step,
      totalSteps: t.totalSteps,
      loss: last?.loss ?? null,
      finished: this.summary !== null,
      workers: [...t.config ? [] : []],
      evals: this.evals,
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
    };
  }
}

/** Mounts `/status` (and, later, `/metrics` and `/`). */
export function mountObservability(
  app: Hono,
  monitor: RunMonitor,
  _opts: { token: string | null },
): void {
  app.get("/status", (c) => c.json(monitor.status()));
}
