/**
 * Pull-based dispatch of micro-batches to workers (docs/architecture.md,
 * principles 1, 3, 5). Idle workers ask for work; each task goes to the first
 * asking worker, preceded by the current weights when that worker's copy is
 * older. A task whose worker disconnects, or that stays unanswered past a
 * deadline derived from the worker's measured speed, is handed to another
 * worker; the first valid answer wins. Late, duplicate, stale and invalid
 * answers are discarded and counted, never combined.
 *
 * Accepted results are handed to the step's `accept` callback as they arrive
 * and not kept (only their loss, count and timings are), so the coordinator
 * holds no more of them than its accumulator does. Dispatch is bounded by a
 * window: micro-batch j goes out only while j < prefix + window, where the
 * prefix is the number of leading micro-batches (0, 1, …) already accepted.
 * So at most `window` micro-batches are ever dispatched or answered but not
 * yet part of that prefix — the most an index-order accumulator has to keep
 * waiting is window − 1 — whatever the batch size: a slow micro-batch stalls
 * further dispatch instead of growing the buffer (and is re-dispatched when
 * it times out, as any other).
 *
 * Held tasks (docs/protocol.md, "Held tasks"). In a `per-worker` step each
 * micro-batch is still dispatched, timed and re-dispatched on its own, but
 * the worker keeps its gradient in a partial sum and answers with a `done`;
 * the micro-batch is then *credited* to that worker. When a worker has
 * nothing in flight and nothing is left to hand it, it is sent a `flush`
 * naming exactly the micro-batches credited to it since its last flush, and
 * its `partial` is accepted only if it names that same set and none of them
 * was accepted through another answer; the partial goes to `acceptSum`. A
 * worker lost (disconnect, silence, a flush deadline) before its partial is
 * accepted has exactly its credited, not yet accepted micro-batches queued
 * again, and a later partial of it is refused. In a `per-group` step (a
 * deterministic run) the unit of dispatch is a task of G consecutive
 * micro-batches, sent to one worker as G held tasks and a flush of the
 * group; it is timed, re-dispatched and accepted as one, and the accepted
 * partials are summed in group order by the trainer's accumulator.
 *
 * Held-out evaluation runs through the same machinery ({@link Scheduler.runEval}):
 * its forward-only batches are dispatched, timed out, re-dispatched and
 * accepted exactly as a step's micro-batches are (the first valid answer
 * wins; stale, duplicate and invalid answers are refused), and their logits
 * handed to the evaluation's `accept`. One job — a step or an evaluation —
 * runs at a time.
 *
 * The scheduler knows nothing of sockets: a worker is a {@link WorkerLink}
 * that takes encoded frames or prepared chunked messages (shared/wire/transfer.ts),
 * so the same code runs in-process and over WebSockets.
 *
 * @module
 */
import {
  type DoneMessage,
  encodeMessage,
  type ErrorMessage,
  type EvalResultMessage,
  type Frame,
  type PartialMessage,
  ProtocolError,
  type ResultMessage,
  validateEvalResultShape,
  validatePartialShape,
  validateResultShape,
} from "../shared/wire/protocol.ts";
import type { SparseLayout } from "../shared/model/sparse_grad.ts";
import type { Outgoing } from "../shared/wire/transfer.ts";

/** A connected worker, as the scheduler sees it. */
export interface WorkerLink {
  readonly id: string;
  readonly backend: string;
  readonly device: string;
  /**
   * Queues one encoded frame or prepared message (weights travel chunked);
   * throws when the connection is closed.
   */
  send(out: Outgoing): void;
}

/** One micro-batch of the current step (or one evaluation batch), ready to send. */
export interface StepTask {
  readonly taskId: number;
  readonly index: number;
  /** Examples. */
  readonly count: number;
  /** n_j, the loss items (a partial's `count` is their sum); default: `count`. */
  readonly items?: number;
  /** The encoded `task` (or `eval_task`) message. */
  readonly frame: Frame;
}

/**
 * How a step's gradients come back: one `result` per micro-batch; held
 * tasks and one `partial` per worker (per flush); or held tasks in groups of
 * G consecutive micro-batches, one `partial` per group (deterministic runs).
 */
export type ResultMode = "per-micro-batch" | "per-worker" | "per-group";

/** What the scheduler keeps of an accepted result: everything but the gradient. */
export type ResultSummary = Omit<ResultMessage, "grad" | "rows">;

/** What the scheduler keeps of an accepted evaluation result: everything but the logits. */
export type EvalSummary = Omit<EvalResultMessage, "logits">;

/** How {@link Scheduler.runStep} hands results over. */
export interface StepOptions {
  /**
   * Called once per micro-batch with its first valid result, in arrival
   * order (`per-micro-batch`). It must take the result synchronously (add it
   * to a sum, or keep it): the scheduler drops its reference on return. An
   * exception aborts the step with that error.
   */
  readonly accept: (result: ResultMessage) => void;
  /**
   * Called once per accepted partial sum (`per-worker`, `per-group`), in
   * arrival order, under the same rules as `accept`; every micro-batch is in
   * exactly one accepted partial.
   */
  readonly acceptSum?: (partial: PartialMessage) => void;
  /** Default `per-micro-batch`; the tasks' frames must carry `hold` for the other two. */
  readonly results?: ResultMode;
  /** `per-group`: micro-batches per group (the last may be shorter). */
  readonly group?: number;
  /** The run id a `flush` names (held modes). */
  readonly runId?: string;
  /**
   * The dispatch window in units of dispatch (micro-batches, or groups);
   * default the scheduler's. A `per-worker` step sums partials as they
   * arrive and needs none (pass the number of tasks).
   */
  readonly window?: number;
}

/** How {@link Scheduler.runEval} hands logits over. */
export interface EvalOptions {
  /**
   * Called once per evaluation batch with its first valid result, in
   * arrival order (the logits may be kept; nothing else holds them). An
   * exception aborts the evaluation with that error.
   */
  readonly accept: (result: EvalResultMessage) => void;
  /** Logits per example: a valid result carries count · numLabels of them. */
  readonly numLabels: number;
}

/** Why a result was not used (each one counted in `/metrics` and `/status`). */
export const DISCARD_REASONS = [
  "stale",
  "duplicate",
  "unknown_task",
  "invalid",
  "bad_partial",
] as const;

/** Why a result was not used. */
export type Discard = (typeof DISCARD_REASONS)[number];

/** Why a micro-batch was handed to another worker (each one counted in `/metrics` and `/status`). */
export const REDISPATCH_REASONS = ["timeout", "disconnect", "invalid"] as const;

/** Why a micro-batch was handed to another worker. */
export type Redispatch = (typeof REDISPATCH_REASONS)[number];

/** What the scheduler reports, for metrics and logs. */
export interface SchedulerEvents {
  /** A micro-batch's answer was accepted (for a held one, with the partial that holds it). */
  accepted?(worker: WorkerInfo, result: ResultSummary): void;
  discarded?(worker: WorkerInfo, reason: Discard, detail: string): void;
  redispatched?(reason: Redispatch, step: number, index: number): void;
  weightsSent?(worker: WorkerInfo, bytes: number): void;
}

/** Per-worker bookkeeping, exposed read-only for `/status`. */
export interface WorkerInfo {
  readonly id: string;
  readonly backend: string;
  readonly device: string;
  readonly joinedAt: number;
  /** Weights version the worker holds (-1: none). */
  weightsVersion: number;
  /** Capacity asked for and not yet filled. */
  wants: number;
  readonly inflight: Set<number>;
  /** Exponential moving average of compute ms per example (0 until measured). */
  msPerExample: number;
  microBatches: number;
  examples: number;
  rejected: number;
  lastResultAt: number;
  /** Exponential moving average of evaluation (forward-only) ms per example (0 until measured). */
  evalMsPerExample: number;
}

/** A flush sent and not yet answered: the units it names and its deadline. */
interface Flush {
  readonly units: readonly Pending[];
  readonly indices: readonly number[];
  timer: ReturnType<typeof setTimeout> | null;
}

/** A registered worker: its bookkeeping and its link. */
export interface ConnectedWorker extends WorkerInfo {
  readonly link: WorkerLink;
  /** Which {@link Scheduler.setWeights} call's weights it was sent last (-1: none). */
  weightsGeneration: number;
  /** `per-worker`: units credited to it (a valid `done`) and not yet flushed. */
  readonly held: Set<Pending>;
  /** `per-worker`: flushes sent, oldest first, whose partial has not come. */
  flushes: Flush[];
}

/** What is running: a training step, or an evaluation. */
type JobKind = "train" | "eval";

/** Either kind of answer. */
type Answer = ResultMessage | EvalResultMessage;

interface Pending {
  /** The unit's first micro-batch (its `taskId` keys the unit in a worker's `inflight`). */
  readonly task: StepTask;
  /** Every micro-batch of the unit: one, or a `per-group` group. */
  readonly tasks: readonly StepTask[];
  /** The unit's place in the step (micro-batch index, or group index). */
  readonly index: number;
  readonly step: number;
  /** Workers computing it now, with the time they were given it. */
  readonly assigned: Map<string, number>;
  /** Workers whose answer for it was invalid. */
  readonly excluded: Set<string>;
  result: ResultSummary | EvalSummary | null;
  /** What each micro-batch of the unit was answered with, once accepted. */
  summaries: (ResultSummary | EvalSummary)[] | null;
  /** `per-worker`: workers whose partial sum holds it (credited, not yet accepted), with their `done`. */
  readonly credited: Map<string, ResultSummary>;
  /** Whether it has been handed to a worker at least once this step. */
  dispatched: boolean;
  timer: ReturnType<typeof setTimeout> | null;
  queued: boolean;
}

/** The running job (a step or an evaluation): its tasks, progress and callbacks. */
interface Job {
  kind: JobKind;
  step: number;
  remaining: number;
  resolve: (r: (ResultSummary | EvalSummary)[]) => void;
  reject: (e: Error) => void;
  accept: (r: Answer) => void;
  /** Evaluation: logits per example. */
  numLabels: number;
  window: number;
  /** The step's micro-batches by index. */
  tasks: Pending[];
  /** Micro-batches 0 … prefix−1 are all accepted. */
  prefix: number;
  /** Micro-batches at index ≥ prefix dispatched at least once (≤ window). */
  ahead: number;
  /** How answers come back (evaluations: `per-micro-batch`). */
  results: ResultMode;
  acceptSum: ((p: PartialMessage) => void) | null;
  runId: string;
}

/** What one batch of each job is called in messages. */
const BATCH_NOUN: Record<JobKind, string> = { train: "micro-batch", eval: "evaluation batch" };

/** The error sent back to a worker whose answer is refused (an `error` message's fields). */
export type ErrorReply = Pick<ErrorMessage, "code" | "message">;

/**
 * A check's refusal of an answer: the error to send back to its worker, or
 * null when nothing needs saying (a duplicate).
 */
interface Refusal {
  readonly reply: ErrorReply | null;
}

/**
 * Thrown when no connected worker can produce a valid gradient for a
 * micro-batch (or valid logits for an evaluation batch).
 */
export class StepFailedError extends Error {
  override name = "StepFailedError";
}

/** Options of a scheduler. */
export interface SchedulerOptions {
  /** The gradient layout results must match (dense, or row-sparse word embeddings). */
  readonly gradLayout: SparseLayout;
  /** Fixed deadline per task in ms; 0 derives it from measured speed. */
  readonly taskTimeoutMs: number;
  /**
   * The dispatch window of a training step: at most this many micro-batches
   * are dispatched or answered without being part of the accepted prefix
   * 0 … k−1 (default: all of them, unbounded; the trainer's
   * `dispatchWindow`). An evaluation dispatches every batch at once.
   */
  readonly window?: number;
  readonly events?: SchedulerEvents;
}

const FIRST_TASK_DEADLINE_MS = 300_000; // first call: webgpu compiles its shaders
/** A flush's deadline without `--task-timeout`: the partial may be a model's worth over a slow link. */
const FLUSH_DEADLINE_MS = 300_000;
const MIN_DEADLINE_MS = 10_000;

/** Dispatches each step's micro-batches and collects one valid result per micro-batch. */
export class Scheduler {
  readonly workers = new Map<string, ConnectedWorker>();
  #weights: { version: number; out: Outgoing; generation: number } | null = null;
  #generation = 0;
  #pending = new Map<number, Pending>();
  #queue: Pending[] = [];
  /** The running job: a step, or an evaluation. */
  #step: Job | null = null;
  #peakOutstanding = 0;
  /** Tasks of finished steps, to tell duplicates from unknown tasks. */
  #finished = new Set<number>();

  /** Throws on a window that is not a positive integer. */
  constructor(readonly options: SchedulerOptions) {
    const { window } = options;
    if (window !== undefined && (!Number.isSafeInteger(window) || window < 1)) {
      throw new RangeError(`the dispatch window must be a positive integer, got ${window}`);
    }
  }

  /**
   * The weights every task of the next step must be computed on, prepared
   * once for every worker (`prepareMessage`: chunked when large). Its data
   * must be a snapshot: a slow worker may still be receiving it after the
   * next optimizer step. Every worker is sent these before its next task,
   * even one that holds the same version already (from an earlier call with
   * another encoding: f32 weights for an evaluation in an f16 run).
   */
  setWeights(version: number, weights: Outgoing): void {
    this.#weights = { version, out: weights, generation: this.#generation++ };
  }

  /** Current weights version (-1 before the first). */
  get weightsVersion(): number {
    return this.#weights?.version ?? -1;
  }

  /** Registers a worker that completed the handshake. */
  addWorker(link: WorkerLink): WorkerInfo {
    const info: ConnectedWorker = {
      link,
      id: link.id,
      backend: link.backend,
      device: link.device,
      joinedAt: Date.now(),
      weightsVersion: -1,
      wants: 0,
      inflight: new Set<number>(),
      msPerExample: 0,
      microBatches: 0,
      examples: 0,
      rejected: 0,
      lastResultAt: 0,
      evalMsPerExample: 0,
      weightsGeneration: -1,
      held: new Set(),
      flushes: [],
    };
    this.workers.set(link.id, info);
    return info;
  }

  /** Forgets a worker; its unfinished tasks go to others. */
  removeWorker(id: string): void {
    const w = this.workers.get(id);
    if (!w) return;
    this.workers.delete(id);
    for (const taskId of w.inflight) {
      const p = this.#pending.get(taskId);
      if (!p || p.result) continue;
      p.assigned.delete(id);
      if (p.assigned.size === 0) this.#requeue(p, "disconnect");
    }
    // Held micro-batches die with the worker's partial sum.
    const lost = [...w.held, ...w.flushes.flatMap((f) => f.units)];
    for (const f of w.flushes) if (f.timer !== null) clearTimeout(f.timer);
    w.flushes = [];
    w.held.clear();
    this.#uncredit(w, lost, "disconnect");
    this.#checkStuck();
    this.#pump();
  }

  /** A worker asks for up to `capacity` tasks. */
  request(id: string, capacity: number): void {
    const w = this.workers.get(id);
    if (!w) return;
    w.wants = Math.max(w.wants, capacity - w.inflight.size, 0);
    this.#pump();
  }

  /**
   * The most micro-batches of the running (or last) step that were at once
   * dispatched or answered but not yet in the accepted prefix; never more
   * than the step's window.
   */
  get peakOutstanding(): number {
    return this.#peakOutstanding;
  }

  /**
   * Runs one step: dispatches `tasks` (micro-batches 0 … n−1, in index
   * order), hands each micro-batch's first valid result to `options.accept`
   * and resolves with their summaries, ordered by micro-batch index.
   */
  runStep(
    step: number,
    tasks: readonly StepTask[],
    options: StepOptions,
  ): Promise<ResultSummary[]> {
    const results = options.results ?? "per-micro-batch";
    if (results !== "per-micro-batch" && (!options.acceptSum || options.runId === undefined)) {
      throw new Error(`a ${results} step needs acceptSum and runId`);
    }
    const group = results === "per-group" ? options.group ?? 1 : 1;
    if (!Number.isSafeInteger(group) || group < 1) {
      throw new RangeError(`the group must be a positive integer, got ${group}`);
    }
    return this.#start("train", step, tasks, {
      accept: options.accept as (r: Answer) => void,
      window: options.window ?? this.options.window ?? tasks.length,
      numLabels: 0,
      results,
      group,
      acceptSum: options.acceptSum ?? null,
      runId: options.runId ?? "",
    }) as Promise<ResultSummary[]>;
  }

  /**
   * Runs one evaluation: dispatches `tasks` (encoded `eval_task` messages
   * for batches 0 … n−1, in order, on the current weights) through the same
   * machinery as a step — pull-based dispatch, deadlines, re-dispatch on
   * disconnect or timeout, the first valid answer wins — hands each batch's
   * first valid result (its logits, count · numLabels of them) to
   * `options.accept` and resolves with their summaries in batch order.
   * `step` is the training step the tasks name.
   */
  runEval(
    step: number,
    tasks: readonly StepTask[],
    options: EvalOptions,
  ): Promise<EvalSummary[]> {
    if (!Number.isSafeInteger(options.numLabels) || options.numLabels < 1) {
      throw new RangeError(`numLabels must be a positive integer, got ${options.numLabels}`);
    }
    return this.#start("eval", step, tasks, {
      accept: options.accept as (r: Answer) => void,
      window: tasks.length,
      numLabels: options.numLabels,
      results: "per-micro-batch",
      group: 1,
      acceptSum: null,
      runId: "",
    }) as Promise<EvalSummary[]>;
  }

  #start(
    kind: JobKind,
    step: number,
    tasks: readonly StepTask[],
    options: {
      accept: (r: Answer) => void;
      window: number;
      numLabels: number;
      results: ResultMode;
      group: number;
      acceptSum: ((p: PartialMessage) => void) | null;
      runId: string;
    },
  ): Promise<(ResultSummary | EvalSummary)[]> {
    const what = kind === "train" ? `step ${step}` : `the evaluation after step ${step}`;
    if (this.#step) {
      throw new Error(
        `${
          this.#step.kind === "train" ? "step" : "the evaluation after step"
        } ${this.#step.step} is still running`,
      );
    }
    if (!this.#weights) throw new Error("no weights set");
    if (tasks.length === 0) {
      throw new Error(`${what} has no ${kind === "train" ? "micro-batches" : "batches"}`);
    }
    tasks.forEach((t, j) => {
      if (t.index !== j) {
        throw new Error(
          `${what}: task ${j} is ${
            kind === "train" ? "micro-batch" : "batch"
          } ${t.index}; expected 0 … n−1 in order`,
        );
      }
    });
    const { window, group } = options;
    this.#clearJob();
    const units: StepTask[][] = [];
    for (let j = 0; j < tasks.length; j += group) units.push(tasks.slice(j, j + group));
    const pendings = units.map((unit, index): Pending => ({
      task: unit[0],
      tasks: unit,
      index,
      step,
      assigned: new Map(),
      excluded: new Set(),
      result: null,
      summaries: null,
      credited: new Map(),
      dispatched: false,
      timer: null,
      queued: true,
    }));
    this.#peakOutstanding = 0;
    const promise = new Promise<(ResultSummary | EvalSummary)[]>((resolve, reject) => {
      this.#step = {
        kind,
        step,
        remaining: pendings.length,
        resolve,
        reject,
        accept: options.accept,
        numLabels: options.numLabels,
        window,
        tasks: pendings,
        prefix: 0,
        ahead: 0,
        results: options.results,
        acceptSum: options.acceptSum,
        runId: options.runId,
      };
    });
    for (const p of pendings) {
      for (const t of p.tasks) this.#pending.set(t.taskId, p);
      this.#queue.push(p);
    }
    this.#pump();
    return promise;
  }

  /**
   * Abandons the running step or evaluation (its results are discarded);
   * the promise rejects with `reason`.
   */
  abort(reason: Error): void {
    const s = this.#step;
    this.#step = null;
    this.#clearJob();
    s?.reject(reason);
  }

  /** Forgets the job's units, the workers' held micro-batches and every deadline. */
  #clearJob(): void {
    for (const p of this.#pending.values()) this.#retire(p);
    this.#pending.clear();
    this.#queue = [];
    for (const w of this.workers.values()) {
      for (const f of w.flushes) if (f.timer !== null) clearTimeout(f.timer);
      w.flushes = [];
      w.held.clear();
    }
  }

  /**
   * Takes a decoded result from worker `id`. Returns the error to send back
   * to that worker, or null when nothing needs saying.
   */
  result(id: string, m: ResultMessage): ErrorReply | null {
    return this.#answer(id, m, "train");
  }

  /**
   * Takes a decoded evaluation result from worker `id`, under the same rules
   * as {@link result}: unknown, duplicate, stale and invalid ones (logits
   * not count · numLabels long) are refused and never handed on.
   */
  evalResult(id: string, m: EvalResultMessage): ErrorReply | null {
    return this.#answer(id, m, "eval");
  }

  /**
   * Takes a `done` from worker `id`: held task `m.taskId` is in its partial
   * sum. In a `per-worker` step a valid one credits the micro-batch to the
   * worker (it is answered, not yet accepted); the same checks as a result's
   * come first — unknown task, not this worker's, stale, wrong index or
   * count. In a `per-group` step it only proves progress (the worker's speed).
   * Returns the error to send back, or null.
   */
  done(id: string, m: DoneMessage): ErrorReply | null {
    const w = this.workers.get(id);
    if (!w) return null;
    const p = this.#pending.get(m.taskId);
    const s = this.#step;
    if (!p || !s || s.kind !== "train" || s.results === "per-micro-batch") {
      const wasAssigned = w.inflight.has(m.taskId);
      if (p && s) {
        return this.#notYours(w, `done for task ${m.taskId}, which is not held: send a result`)
          .reply;
      }
      return this.#unknownTask(w, m, "train", wasAssigned).reply;
    }
    const task = p.tasks.find((t) => t.taskId === m.taskId)!;
    if (s.results === "per-group") {
      if (!p.assigned.has(w.id)) {
        return this.#notYours(w, `done for task ${m.taskId}, which is not assigned to you`).reply;
      }
      if (m.weightsVersion === this.weightsVersion && m.step === p.step) this.#speed(w, m);
      return null;
    }
    const wasAssigned = w.inflight.delete(m.taskId);
    const refusal = this.#claim(w, m, p, wasAssigned) ?? this.#stale(w, m, p) ??
      this.#invalidDone(w, m, p, task);
    if (refusal) return refusal.reply;
    // Credited even when another worker's partial already holds it: this
    // worker's sum does too, so its flush must name it (and is then refused).
    const summary = summarizeDone(m);
    p.credited.set(w.id, summary);
    w.held.add(p);
    if (p.assigned.size === 0) this.#retire(p);
    this.#speed(w, m);
    this.#pump();
    return null;
  }

  /**
   * Takes a `partial` from worker `id`. Refused, in this order: another step
   * or weights version (`stale`); a micro-batch already accepted through
   * another answer (`duplicate`); a set that is not exactly one the
   * coordinator credited to this worker and flushed (`bad_partial`); a
   * gradient or Σ n_j that does not fit (`bad_shape`). Otherwise accepted:
   * handed to the step's `acceptSum`, every micro-batch it names answered.
   * A refusal queues again the micro-batches of the flush it answered that
   * no one else holds. Returns the error to send back, or null.
   */
  partial(id: string, m: PartialMessage): ErrorReply | null {
    const w = this.workers.get(id);
    if (!w) return null;
    const s = this.#step;
    if (
      !s || s.kind !== "train" || s.results === "per-micro-batch" || m.step !== s.step ||
      m.weightsVersion !== this.weightsVersion
    ) {
      const detail = s && s.kind === "train" && s.results === "per-micro-batch"
        ? `partial for step ${m.step}: this step takes results`
        : `partial for step ${m.step}, weights ${m.weightsVersion}; current step ${
          s?.step ?? "(none)"
        }, weights ${this.weightsVersion}`;
      this.options.events?.discarded?.(w, "stale", detail);
      return { code: "stale", message: `stale partial: ${detail}` };
    }
    return s.results === "per-worker"
      ? this.#partialOfWorker(w, m, s)
      : this.#partialOfGroup(w, m, s);
  }

  /** {@link partial} in a `per-worker` step. */
  #partialOfWorker(w: ConnectedWorker, m: PartialMessage, s: Job): ErrorReply | null {
    const f = w.flushes.find((f) => sameIndices(f.indices, m.indices)) ?? null;
    const unitOf = (j: number) => (j < s.tasks.length ? s.tasks[j] : null);
    const taken = [...m.indices].filter((j) => unitOf(j)?.result);
    if (taken.length > 0) {
      if (f) this.#dropFlush(w, f, "invalid");
      const detail = `partial holds micro-batch(es) ${taken.join(", ")}, already accepted`;
      this.options.events?.discarded?.(w, "duplicate", detail);
      this.#pump();
      return { code: "duplicate", message: detail };
    }
    if (!f) {
      // Flushes are answered in order: this answers the oldest one, which is lost.
      const oldest = w.flushes[0];
      if (oldest) this.#dropFlush(w, oldest, "invalid");
      w.rejected++;
      const detail = `partial names micro-batches [${m.indices.join(", ")}] of step ${m.step}; ` +
        (oldest
          ? `the set credited to you and flushed is [${oldest.indices.join(", ")}]`
          : "no flush of yours is waiting for an answer");
      this.options.events?.discarded?.(w, "bad_partial", detail);
      this.#checkStuck();
      this.#pump();
      return { code: "bad_partial", message: detail };
    }
    try {
      validatePartialShape(m, this.options.gradLayout, itemsOf(f.units));
    } catch (e) {
      for (const p of f.units) p.excluded.add(w.id);
      this.#dropFlush(w, f, "invalid");
      return this.#refuseInvalid(w, e);
    }
    this.#dropFlush(w, f, null);
    const summaries = f.units.map((p) => p.credited.get(w.id)!);
    this.#acceptUnits(w, f.units, summaries, m, s);
    return null;
  }

  /** {@link partial} in a `per-group` step: the partial answers one group. */
  #partialOfGroup(w: ConnectedWorker, m: PartialMessage, s: Job): ErrorReply | null {
    const first = m.indices[0];
    const p = first !== undefined ? s.tasks.find((q) => q.task.index === first) : undefined;
    if (p?.result) {
      const detail = `group ${p.index} (micro-batches from ${first}) already accepted`;
      this.options.events?.discarded?.(w, "duplicate", detail);
      return { code: "duplicate", message: detail };
    }
    const expected = p?.tasks.map((t) => t.index) ?? [];
    if (!p || !p.assigned.has(w.id) || !sameIndices(expected, m.indices)) {
      w.rejected++;
      const detail = `partial names micro-batches [${m.indices.join(", ")}] of step ${m.step}, ` +
        `which is not a group assigned to you`;
      if (p?.assigned.delete(w.id)) {
        w.inflight.delete(p.task.taskId);
        if (p.assigned.size === 0) this.#requeue(p, "invalid");
      }
      this.options.events?.discarded?.(w, "bad_partial", detail);
      this.#pump();
      return { code: "bad_partial", message: detail };
    }
    p.assigned.delete(w.id);
    w.inflight.delete(p.task.taskId);
    try {
      validatePartialShape(m, this.options.gradLayout, itemsOf([p]));
    } catch (e) {
      p.excluded.add(w.id);
      if (p.assigned.size === 0) this.#requeue(p, "invalid");
      return this.#refuseInvalid(w, e);
    }
    const summaries = p.tasks.map((t): ResultSummary => ({
      type: "result",
      taskId: t.taskId,
      step: m.step,
      index: t.index,
      weightsVersion: m.weightsVersion,
      loss: m.count > 0 ? m.lossSum / m.count : 0,
      count: t.count,
      timings: {
        computeMs: m.timings.computeMs / p.tasks.length,
        adversaryMs: m.timings.adversaryMs / p.tasks.length,
        encodeMs: m.timings.encodeMs / p.tasks.length,
      },
    }));
    this.#acceptUnits(w, [p], [summaries], m, s);
    return null;
  }

  /** Refuses a partial that does not fit (`bad_shape`, …): counted invalid, the step checked for being stuck. */
  #refuseInvalid(w: ConnectedWorker, e: unknown): ErrorReply {
    w.rejected++;
    const reply: ErrorReply = {
      code: e instanceof ProtocolError ? e.code : "malformed",
      message: e instanceof Error ? e.message : String(e),
    };
    this.options.events?.discarded?.(w, "invalid", reply.message);
    this.#checkStuck();
    this.#pump();
    return reply;
  }

  /**
   * Accepts a partial for `units` (their micro-batches' summaries, in unit
   * order): hands it on, marks them answered, advances the prefix, and ends
   * the step on its last unit.
   */
  #acceptUnits(
    w: ConnectedWorker,
    units: readonly Pending[],
    summaries: readonly (ResultSummary | ResultSummary[])[],
    m: PartialMessage,
    s: Job,
  ): void {
    units.forEach((p, k) => {
      const sum = summaries[k];
      p.summaries = Array.isArray(sum) ? sum : [sum];
      p.result = p.summaries[0];
      p.credited.delete(w.id);
      this.#retire(p);
    });
    if (!this.#acceptInto(s, () => s.acceptSum!(m))) return;
    w.lastResultAt = Date.now();
    for (const p of units) {
      for (const r of p.summaries as ResultSummary[]) {
        w.microBatches++;
        w.examples += r.count;
        this.options.events?.accepted?.(w, r);
      }
    }
    s.remaining -= units.length;
    if (s.remaining === 0) this.#finish(s);
    this.#pump();
  }

  /**
   * Ends flush `f` of worker `w`: its deadline is cleared, and — unless its
   * partial was accepted (`reason` null) — its micro-batches lose this
   * worker's credit and are queued again where no one else holds them.
   */
  #dropFlush(w: ConnectedWorker, f: Flush, reason: Redispatch | null): void {
    if (f.timer !== null) clearTimeout(f.timer);
    f.timer = null;
    w.flushes = w.flushes.filter((x) => x !== f);
    if (reason !== null) this.#uncredit(w, f.units, reason);
  }

  /** Takes `w`'s credit off `units`; those left with no holder and no worker computing them are queued again. */
  #uncredit(w: ConnectedWorker, units: readonly Pending[], reason: Redispatch): void {
    for (const p of units) {
      p.credited.delete(w.id);
      if (!p.result && p.assigned.size === 0) this.#requeue(p, reason);
    }
  }

  /** Refuses a `done` for another index, or with another count than the micro-batch's. */
  #invalidDone(w: ConnectedWorker, m: DoneMessage, p: Pending, task: StepTask): Refusal | null {
    const problem = m.index !== task.index
      ? `task ${m.taskId} is micro-batch ${task.index}, done says ${m.index}`
      : m.count !== task.count
      ? `done.count is ${m.count}, but micro-batch ${m.index} of step ${m.step} has ${task.count} examples`
      : null;
    if (problem === null) return null;
    w.rejected++;
    p.excluded.add(w.id);
    this.options.events?.discarded?.(w, "invalid", problem);
    if (p.assigned.size === 0) this.#requeue(p, "invalid");
    this.#checkStuck();
    this.#pump();
    return { reply: { code: "bad_shape", message: problem } };
  }

  /** Sends `w` a flush of everything credited to it and not yet flushed, with a deadline. */
  #flush(w: ConnectedWorker, s: Job): void {
    const units = [...w.held].filter((p) => !p.result).sort((a, b) => a.index - b.index);
    w.held.clear();
    if (units.length === 0) return;
    const indices = units.map((p) => p.task.index);
    const frame = encodeMessage({
      type: "flush",
      runId: s.runId,
      step: s.step,
      weightsVersion: this.weightsVersion,
      indices: Int32Array.from(indices),
    });
    const f: Flush = { units, indices, timer: null };
    w.flushes.push(f);
    try {
      w.link.send(frame);
    } catch {
      this.#dropFlush(w, f, "disconnect");
      return;
    }
    f.timer = setTimeout(() => {
      f.timer = null;
      if (!w.flushes.includes(f)) return;
      this.#dropFlush(w, f, "timeout");
      this.#pump();
    }, this.#flushDeadline());
  }

  /** How long a flush may wait for its partial: `--task-timeout` when given, else 300 s. */
  #flushDeadline(): number {
    return this.options.taskTimeoutMs > 0 ? this.options.taskTimeoutMs : FLUSH_DEADLINE_MS;
  }

  /** Records a worker's compute speed (which sets its deadlines). */
  #speed(w: ConnectedWorker, m: DoneMessage): void {
    const ms = m.timings.computeMs / Math.max(1, m.count);
    w.msPerExample = w.msPerExample === 0 ? ms : 0.7 * w.msPerExample + 0.3 * ms;
    w.lastResultAt = Date.now();
  }

  /**
   * Checks an answer in a fixed order — whose task it is, whether it was
   * answered already, whether it is stale, whether it is valid — and accepts
   * it when every check passes. The first refusal decides how the answer is
   * counted (one both duplicate and stale is a duplicate). The order and
   * each check's outcome: docs/protocol.md, "The connection" (Result acceptance).
   */
  #answer(id: string, m: Answer, kind: JobKind): ErrorReply | null {
    const w = this.workers.get(id);
    if (!w) return null;
    const p = this.#pending.get(m.taskId);
    const wasAssigned = w.inflight.delete(m.taskId);
    if (!p) return this.#unknownTask(w, m, kind, wasAssigned).reply;
    const s = this.#step!;
    const refusal = this.#claim(w, m, p, wasAssigned) ??
      this.#answeredAlready(w, m, p, s) ??
      this.#stale(w, m, p) ??
      this.#invalid(w, m, p, s, kind);
    if (refusal) return refusal.reply;
    this.#accept(w, m, p, s);
    return null;
  }

  /**
   * An answer for no task of the running job: a duplicate when the task was
   * this worker's in a finished job, else one it was never given.
   */
  #unknownTask(
    w: ConnectedWorker,
    m: Answer | DoneMessage,
    kind: JobKind,
    wasAssigned: boolean,
  ): Refusal {
    if (this.#finished.has(m.taskId) && wasAssigned) {
      return this.#duplicate(w, `task ${m.taskId} already done`);
    }
    return this.#notYours(
      w,
      `${m.type} for task ${m.taskId} (step ${m.step}, ${
        BATCH_NOUN[kind]
      } ${m.index}), which was never assigned to you`,
    );
  }

  /**
   * Takes the task off the worker's assignment; refuses the answer when the
   * task is not assigned to it (a duplicate when it was, before a re-dispatch
   * took it back).
   */
  #claim(
    w: ConnectedWorker,
    m: Answer | DoneMessage,
    p: Pending,
    wasAssigned: boolean,
  ): Refusal | null {
    if (!p.assigned.has(w.id)) {
      return wasAssigned
        ? this.#duplicate(w, `task ${m.taskId} reassigned`)
        : this.#notYours(w, `${m.type} for task ${m.taskId}, which is not assigned to you`);
    }
    p.assigned.delete(w.id);
    return null;
  }

  /** Refuses, silently, a second answer for a task another worker answered first. */
  #answeredAlready(w: ConnectedWorker, m: Answer, p: Pending, s: Job): Refusal | null {
    if (!p.result) return null;
    return this.#duplicate(w, `${BATCH_NOUN[s.kind]} ${m.index} already answered`);
  }

  /** Refuses an answer computed on other weights or for another step; the task goes to another worker. */
  #stale(w: ConnectedWorker, m: Answer | DoneMessage, p: Pending): Refusal | null {
    if (m.weightsVersion === this.weightsVersion && m.step === p.step) return null;
    this.options.events?.discarded?.(
      w,
      "stale",
      `weights ${m.weightsVersion}, step ${m.step}; current ${this.weightsVersion}, ${p.step}`,
    );
    if (p.assigned.size === 0) this.#requeue(p, "invalid");
    this.#pump();
    return {
      reply: {
        code: "stale",
        message: `stale result: weights version ${m.weightsVersion} is not ${this.weightsVersion}`,
      },
    };
  }

  /**
   * Refuses an answer of the wrong kind, index or shape ({@link checkAnswerShape});
   * this worker is not given the task again, and the job fails when no worker is left for it.
   */
  #invalid(w: ConnectedWorker, m: Answer, p: Pending, s: Job, kind: JobKind): Refusal | null {
    try {
      checkAnswerShape(m, kind, s, p.task, this.options.gradLayout);
      return null;
    } catch (e) {
      w.rejected++;
      p.excluded.add(w.id);
      const reply: ErrorReply = {
        code: e instanceof ProtocolError ? e.code : "malformed",
        message: e instanceof Error ? e.message : String(e),
      };
      this.options.events?.discarded?.(w, "invalid", reply.message);
      if (p.assigned.size === 0) this.#requeue(p, "invalid");
      this.#checkStuck();
      this.#pump();
      return { reply };
    }
  }

  /** Counts a duplicate answer; nothing is said back (the worker did nothing wrong). */
  #duplicate(w: WorkerInfo, detail: string): Refusal {
    this.options.events?.discarded?.(w, "duplicate", detail);
    return { reply: null };
  }

  /** Refuses an answer for a task this worker was not given. */
  #notYours(w: WorkerInfo, message: string): Refusal {
    w.rejected++;
    this.options.events?.discarded?.(w, "unknown_task", message);
    return { reply: { code: "unknown_task", message } };
  }

  /**
   * Runs `accept` (the job taking an answer) and moves the job's accepted
   * prefix past every task with a result; an error from `accept` aborts the
   * run, and false says so.
   */
  #acceptInto(s: Job, accept: () => void): boolean {
    try {
      accept();
    } catch (e) {
      this.abort(e instanceof Error ? e : new Error(String(e)));
      return false;
    }
    while (s.prefix < s.tasks.length && s.tasks[s.prefix].result) {
      s.prefix++;
      s.ahead--;
    }
    return true;
  }

  /**
   * Takes an answer that passed every check: hands it on, advances the
   * accepted prefix, credits the worker, and ends the job on its last answer.
   */
  #accept(w: ConnectedWorker, m: Answer, p: Pending, s: Job): void {
    p.result = summarize(m);
    p.summaries = [p.result];
    this.#retire(p);
    if (!this.#acceptInto(s, () => s.accept(m))) return;
    this.#credit(w, m, p);
    if (--s.remaining === 0) this.#finish(s);
    this.#pump();
  }

  /** Records an accepted answer's worker speed (which sets its deadlines) and counts. */
  #credit(w: ConnectedWorker, m: Answer, p: Pending): void {
    w.lastResultAt = Date.now();
    if (m.type === "result") {
      const ms = m.timings.computeMs / Math.max(1, m.count);
      w.msPerExample = w.msPerExample === 0 ? ms : 0.7 * w.msPerExample + 0.3 * ms;
      w.microBatches++;
      w.examples += m.count;
      this.options.events?.accepted?.(w, m);
    } else {
      // Forward-only speed, kept apart: it must not shorten training deadlines.
      const ms = m.timings.computeMs / Math.max(1, p.task.count);
      w.evalMsPerExample = w.evalMsPerExample === 0 ? ms : 0.7 * w.evalMsPerExample + 0.3 * ms;
    }
  }

  /** Every task of the job is answered: resolves it with their summaries, in index order. */
  #finish(s: Job): void {
    const results = s.tasks.flatMap((q) => q.summaries!);
    for (const taskId of this.#pending.keys()) this.#finished.add(taskId);
    if (this.#finished.size > 100_000) this.#finished.clear();
    this.#step = null;
    this.#clearJob();
    s.resolve(results);
  }

  #retire(p: Pending): void {
    if (p.timer !== null) clearTimeout(p.timer);
    p.timer = null;
    p.queued = false;
  }

  #requeue(p: Pending, reason: Redispatch): void {
    // A unit credited to a live worker is answered: its partial is coming.
    if (p.result || p.queued || p.credited.size > 0) return;
    p.queued = true;
    this.#queue.unshift(p);
    this.options.events?.redispatched?.(reason, p.step, p.task.index);
  }

  /** Fails the step when some micro-batch has no worker left that may compute it. */
  #checkStuck(): void {
    if (!this.#step || this.workers.size === 0) return;
    for (const p of this.#queue) {
      if (p.result || p.assigned.size > 0 || p.credited.size > 0) continue;
      if ([...this.workers.keys()].every((id) => p.excluded.has(id))) {
        const from = `was rejected from every connected worker (${[...p.excluded].join(", ")})`;
        this.abort(
          new StepFailedError(
            this.#step.kind === "train"
              ? `micro-batch ${p.task.index} of step ${p.step} ${from}: see their errors; ` +
                `a non-finite gradient everywhere means the run diverged (lower --lr)`
              : `evaluation batch ${p.task.index} (after step ${p.step}) ${from}: see their errors`,
          ),
        );
        return;
      }
    }
  }

  /**
   * A task's deadline on worker `w`. An evaluation batch uses the worker's
   * forward-only speed, or, before that is measured, its training speed (a
   * forward pass is cheaper than a gradient, so that is a generous bound).
   */
  #deadline(w: WorkerInfo, count: number, kind: JobKind): number {
    if (this.options.taskTimeoutMs > 0) return this.options.taskTimeoutMs;
    const ms = kind === "eval" && w.evalMsPerExample > 0 ? w.evalMsPerExample : w.msPerExample;
    if (ms === 0) return FIRST_TASK_DEADLINE_MS;
    return Math.max(MIN_DEADLINE_MS, 4 * ms * count + 2000);
  }

  #pump(): void {
    const s = this.#step;
    if (!s || !this.#weights) return;
    const end = s.prefix + s.window;
    // A unit credited to a worker (a held one, answered with a done) is not handed out again.
    const open = (w: ConnectedWorker, p: Pending) =>
      p.index < end && !p.result && p.credited.size === 0 && !p.excluded.has(w.id) &&
      !p.assigned.has(w.id);
    for (const w of this.workers.values()) {
      while (w.wants > 0) {
        const i = this.#queue.findIndex((p) => open(w, p));
        if (i < 0) break;
        const p = this.#queue[i];
        this.#queue.splice(i, 1);
        p.queued = false;
        this.#assign(w, p);
      }
      // Nothing in flight and nothing left to hand it: its sum is due.
      if (
        s.results === "per-worker" && w.held.size > 0 && w.inflight.size === 0 &&
        !this.#queue.some((p) => open(w, p))
      ) this.#flush(w, s);
    }
  }

  #assign(w: ConnectedWorker, p: Pending): void {
    const weights = this.#weights!;
    try {
      if (w.weightsGeneration !== weights.generation) {
        w.link.send(weights.out);
        w.weightsVersion = weights.version;
        w.weightsGeneration = weights.generation;
        this.options.events?.weightsSent?.(w, weights.out.byteLength);
      }
      for (const t of p.tasks) w.link.send(t.frame);
      const s = this.#step!;
      if (s.results === "per-group") {
        w.link.send(encodeMessage({
          type: "flush",
          runId: s.runId,
          step: s.step,
          weightsVersion: weights.version,
          indices: Int32Array.from(p.tasks, (t) => t.index),
        }));
      }
    } catch {
      // The socket died under us: the close handler removes the worker.
      this.#requeue(p, "disconnect");
      return;
    }
    w.wants--;
    if (!p.dispatched) {
      p.dispatched = true;
      const s = this.#step!;
      s.ahead++;
      this.#peakOutstanding = Math.max(this.#peakOutstanding, s.ahead);
    }
    w.inflight.add(p.task.taskId);
    p.assigned.set(w.id, Date.now());
    if (p.timer !== null) clearTimeout(p.timer);
    p.timer = setTimeout(() => {
      p.timer = null;
      if (p.result || !this.#pending.has(p.task.taskId)) return;
      this.#requeue(p, "timeout");
      this.#pump();
    }, this.#deadline(w, p.tasks.reduce((n, t) => n + t.count, 0), this.#step!.kind));
  }

  /** Tells every worker the run is over. */
  broadcast(frame: Frame): void {
    for (const w of this.workers.values()) {
      try {
        w.link.send(frame);
      } catch { /* already gone */ }
    }
  }
}

/** A `done` as the summary of the result it stands for. */
function summarizeDone(m: DoneMessage): ResultSummary {
  const { type: _type, ...rest } = m;
  return { type: "result", ...rest };
}

/** Whether two increasing index lists are the same set. */
function sameIndices(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Σ n_j over the units' micro-batches. */
function itemsOf(units: readonly Pending[]): number {
  let n = 0;
  for (const p of units) for (const t of p.tasks) n += t.items ?? t.count;
  return n;
}

/** An accepted answer without its tensors (what the scheduler keeps). */
function summarize(m: Answer): ResultSummary | EvalSummary {
  if (m.type === "result") {
    const { grad: _grad, rows: _rows, ...summary } = m;
    return summary;
  }
  const { logits: _logits, ...summary } = m;
  return summary;
}

/**
 * Throws the ProtocolError that refuses an answer of the wrong kind (a
 * `result` for an evaluation batch, or the reverse), for another batch index,
 * or whose gradient or logits do not fit the task (validateResultShape,
 * validateEvalResultShape).
 */
function checkAnswerShape(
  m: Answer,
  kind: JobKind,
  job: Job,
  task: StepTask,
  gradLayout: SparseLayout,
): void {
  if (m.type === "result" && job.kind === "train" && job.results !== "per-micro-batch") {
    throw new ProtocolError(
      "malformed",
      `task ${m.taskId} is held: answer it with a done, and the flush with a partial`,
    );
  }
  if (kind !== job.kind) {
    throw new ProtocolError(
      "malformed",
      job.kind === "train"
        ? `task ${m.taskId} is a training micro-batch: answer it with a result, not an ${m.type}`
        : `task ${m.taskId} is an evaluation batch: answer it with an eval_result, not a ${m.type}`,
    );
  }
  if (m.index !== task.index) {
    throw new ProtocolError(
      "bad_shape",
      `task ${m.taskId} is ${BATCH_NOUN[job.kind]} ${task.index}, ${m.type} says ${m.index}`,
    );
  }
  if (m.type === "result") validateResultShape(m, gradLayout, task.count);
  else validateEvalResultShape(m, task.count, job.numLabels);
}
