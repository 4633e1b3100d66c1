/**
 * What a person watching a run sees (docs/architecture.md, principle 7): the run
 * monitor collects every number (steps, losses, timings, workers, bytes,
 * rejections) and serves them as JSON at `/status`, as Prometheus text at
 * `/metrics` (see metrics.ts) and as a live dashboard page at `/`.
 *
 * With `--metrics-token T` every one of these routes (the dashboard's assets
 * included) needs `Authorization: Bearer T` or `?token=T`.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import type { Context, Hono } from "hono";
import type { ErrorCode, ResultMessage } from "../shared/protocol.ts";
import type { EvalResult } from "../shared/evaluate.ts";
import type { Scheduler, SchedulerEvents, WorkerInfo, WorkerLink } from "./scheduler.ts";
import type { RunSummary, StepReport, Trainer, TrainerObserver } from "./trainer.ts";
import { trainingFields } from "./run_config.ts";
import { RunMetrics } from "./metrics.ts";

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
  /** Compute speed from `msPerExample` (0 until measured). */
  readonly computeExamplesPerSecond: number;
  /** Examples this worker contributed per second of wall time over the recent steps. */
  readonly examplesPerSecond: number;
  readonly microBatches: number;
  readonly examples: number;
  readonly rejected: number;
  readonly inflight: number;
  readonly weightsVersion: number;
}

/** One step, trimmed to the plotted fields (times in seconds). */
export interface HistoryPoint extends
  Pick<
    StepReport,
    | "step"
    | "loss"
    | "lr"
    | "gradNorm"
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
  readonly seconds: {
    readonly step: number;
    readonly wait: number;
    readonly compute: number;
    readonly adversary: number;
    readonly transfer: number;
    readonly averaging: number;
    readonly optimizer: number;
    readonly encode: number;
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
  readonly redispatched: Record<string, number>;
  readonly discarded: Record<string, number>;
  readonly rejected: Record<string, number>;
}

/** The `/status` document. */
export type RunStatus = {
  readonly runId: string;
  readonly finished: boolean;
  readonly summary: RunSummary | null;
  /** Unix ms. */
  readonly now: number;
  /** Unix ms. */
  readonly startedAt: number;
  readonly config: Record<string, unknown>;
  readonly model: Record<string, unknown>;
  readonly task: Record<string, unknown>;
  readonly progress: {
    readonly step: number;
    readonly totalSteps: number;
    readonly fraction: number;
    readonly elapsedSeconds: number;
    readonly etaSeconds: number | null;
  };
  readonly step: number;
  readonly totalSteps: number;
  readonly loss: number | null;
  readonly lr: number | null;
  readonly gradNorm: number | null;
  readonly trustRatio: { readonly min: number; readonly mean: number; readonly max: number } | null;
  readonly examplesPerSecond: number;
  readonly adversary: string | null;
  readonly workers: WorkerView[];
  readonly history: HistoryPoint[];
  readonly evaluations: { step: number; split: string; metrics: Record<string, number> }[];
  readonly lastEvaluation: Record<string, number> | null;
  readonly counters: RunCounters;
  /** Kept for older readers: the same as counters.bytesIn / counters.bytesOut. */
  readonly bytesIn: number;
  readonly bytesOut: number;
};

/** Collects the run's numbers for `/status`, `/metrics` and the dashboard. */
export class RunMonitor {
  readonly history: StepReport[] = [];
  readonly evals: EvalRecord[] = [];
  readonly rejectedByReason = new Map<string, number>();
  readonly discardedByReason = new Map<string, number>();
  readonly redispatchedByReason = new Map<string, number>();
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
  /** Unix ms when the monitor (the run) started. */
  readonly startedAtUnix = Date.now();
  /** Per-worker totals, kept after a worker leaves (and across its reconnections). */
  readonly workerTotals = new Map<
    string,
    { backend: string; microBatches: number; examples: number; connected: boolean }
  >();
  /** The Prometheus registry of this run. */
  readonly metrics: RunMetrics;

  #scheduler: Scheduler | null = null;
  /** Workers seen through `joined` (used while no scheduler is attached). */
  #links = new Map<string, { link: WorkerLink; joinedAt: number; info: WorkerInfo | null }>();
  /** Examples per worker accepted during the running step. */
  #stepExamples = new Map<string, number>();
  /** Per step: examples per second each worker contributed. */
  #stepWorkers = new Map<number, Record<string, number>>();

  constructor(readonly trainer: Trainer) {
    this.metrics = new RunMetrics(this);
  }

  /** Gives the monitor the scheduler, whose worker table `/status` and `/metrics` read. */
  attach(scheduler: Scheduler): void {
    this.#scheduler = scheduler;
  }

  /** The scheduler attached with {@link attach} (setter: same as attach). */
  get scheduler(): Scheduler | null {
    return this.#scheduler;
  }
  set scheduler(s: Scheduler | null) {
    this.#scheduler = s;
  }

  /** Scheduler hooks. */
  readonly events: SchedulerEvents = {
    discarded: (w: WorkerInfo, reason: string) => {
      this.#seen(w);
      this.#inc(this.discardedByReason, reason);
    },
    redispatched: (reason: string) => this.#inc(this.redispatchedByReason, reason),
    accepted: (w: WorkerInfo, r: ResultMessage) => {
      this.#seen(w);
      this.#stepExamples.set(w.id, (this.#stepExamples.get(w.id) ?? 0) + r.count);
      const t = this.#total(w.id, w.backend);
      t.microBatches++;
      t.examples += r.count;
    },
    weightsSent: (w: WorkerInfo, bytes: number) => {
      this.#seen(w);
      this.weightsBytesSent += bytes;
    },
  };

  #inc(m: Map<string, number>, k: string): void {
    m.set(k, (m.get(k) ?? 0) + 1);
  }

  #seen(w: WorkerInfo): void {
    const l = this.#links.get(w.id);
    if (l) l.info = w;
  }

  #total(id: string, backend: string) {
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

  rejected(code: ErrorCode, _detail: string): void {
    this.#inc(this.rejectedByReason, code);
  }

  bytes(direction: "in" | "out", n: number): void {
    if (direction === "in") this.bytesIn += n;
    else this.bytesOut += n;
  }

  joined(link: WorkerLink): void {
    this.workersJoined++;
    this.#links.set(link.id, { link, joinedAt: Date.now(), info: null });
    this.#total(link.id, link.backend).connected = true;
  }

  left(id: string): void {
    this.workersLeft++;
    this.#links.delete(id);
    const t = this.workerTotals.get(id);
    if (t) t.connected = false;
  }

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
    this.metrics.observeStep(r);
  }

  /** Seconds since the run started (frozen at the end). */
  elapsedSeconds(): number {
    if (this.summary) return this.summary.elapsedMs / 1000;
    return (performance.now() - this.trainer.startedAt) / 1000;
  }

  /** The recent reports the rate estimates use (at least 1 when any step is done). */
  #window(): StepReport[] {
    return this.history.slice(-RATE_WINDOW);
  }

  /** Wall seconds the recent window covers, and the steps in it. */
  #span(): { seconds: number; steps: StepReport[] } | null {
    const w = this.#window();
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

  /** The connected workers. */
  workers(): WorkerView[] {
    const now = Date.now();
    const rates = this.#workerRates();
    const infos: {
      info: Partial<WorkerInfo>;
      link: { id: string; backend: string; device: string };
    }[] = [];
    if (this.#scheduler) {
      for (const w of this.#scheduler.workers.values()) infos.push({ info: w, link: w });
    } else {
      for (const l of this.#links.values()) {
        infos.push({ info: l.info ?? { joinedAt: l.joinedAt }, link: l.link });
      }
    }
    return infos.map(({ info, link }) => {
      const ms = info.msPerExample ?? 0;
      const joinedAt = info.joinedAt ?? now;
      return {
        id: link.id,
        backend: link.backend,
        device: link.device,
        joinedAt,
        connectedSeconds: Math.max(0, (now - joinedAt) / 1000),
        msPerExample: ms,
        computeExamplesPerSecond: ms > 0 ? 1000 / ms : 0,
        examplesPerSecond: rates.get(link.id) ?? 0,
        microBatches: info.microBatches ?? 0,
        examples: info.examples ?? 0,
        rejected: info.rejected ?? 0,
        inflight: info.inflight?.size ?? 0,
        weightsVersion: info.weightsVersion ?? -1,
      };
    });
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
      t: r.elapsedMs / 1000,
      loss: r.loss,
      lr: r.lr,
      gradNorm: r.gradNorm,
      clipped: r.clipped,
      trustRatio: r.trustRatio,
      examples: r.examples,
      tokens: r.tokens,
      examplesPerSecond: r.timings.stepMs > 0 ? r.examples / (r.timings.stepMs / 1000) : 0,
      adversary: r.adversary,
      seconds: {
        step: r.timings.stepMs / 1000,
        wait: r.timings.waitMs / 1000,
        compute: r.timings.computeMs / 1000,
        adversary: r.timings.adversaryMs / 1000,
        transfer: r.timings.transferMs / 1000,
        averaging: r.timings.averageMs / 1000,
        optimizer: r.timings.optimizerMs / 1000,
        encode: r.timings.encodeMs / 1000,
      },
      workers: this.#stepWorkers.get(r.step) ?? {},
    }));
  }

  /** The `/status` document. */
  status(): RunStatus {
    const t = this.trainer;
    const last = this.history.at(-1);
    const counters = this.counters();
    const m = t.modelConfig;
    const mlm = t.config.training.objective === "mlm";
    // A pre-training run has no classification task or labels: leave their fields out.
    const fields = trainingFields(t.config);
    const { task: _task, ...untasked } = fields;
    return {
      runId: t.runId,
      finished: this.summary !== null,
      summary: this.summary,
      now: Date.now(),
      startedAt: this.startedAtUnix,
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
        fraction: t.totalSteps > 0 ? t.step / t.totalSteps : 0,
        elapsedSeconds: this.elapsedSeconds(),
        etaSeconds: this.etaSeconds(),
      },
      step: t.step,
      totalSteps: t.totalSteps,
      loss: last?.loss ?? null,
      lr: last?.lr ?? null,
      gradNorm: last?.gradNorm ?? null,
      trustRatio: last?.trustRatio ?? null,
      examplesPerSecond: this.examplesPerSecond(),
      adversary: last?.adversary ?? null,
      workers: this.workers(),
      history: this.points(),
      evaluations: this.evals.map((e) => {
        const { examples: _e, ...metrics } = e.result;
        return { step: e.step, split: e.split, examples: e.result.examples, metrics };
      }),
      lastEvaluation: this.evals.at(-1)?.result ?? t.lastEval ?? null,
      counters,
      bytesIn: counters.bytesIn,
      bytesOut: counters.bytesOut,
    };
  }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/** The dashboard's files: name → (path, content type). */
const ASSETS: Record<string, { url: () => URL; type: string }> = {
  "app.js": {
    url: () => new URL("./dashboard/app.js", import.meta.url),
    type: "text/javascript; charset=utf-8",
  },
  "style.css": {
    url: () => new URL("./dashboard/style.css", import.meta.url),
    type: "text/css; charset=utf-8",
  },
  "uPlot.iife.min.js": {
    url: () => npmFile("uplot/dist/uPlot.iife.min.js"),
    type: "text/javascript; charset=utf-8",
  },
  "uPlot.min.css": {
    url: () => npmFile("uplot/dist/uPlot.min.css"),
    type: "text/css; charset=utf-8",
  },
};

/** A file inside an npm package of the import map, as a file: URL. */
function npmFile(specifier: string): URL {
  try {
    const url = new URL(import.meta.resolve(specifier));
    if (url.protocol === "file:") return url;
  } catch { /* fall through */ }
  // Without a node_modules resolution, the package folder next to deno.json.
  return new URL(`../node_modules/${specifier}`, import.meta.url);
}

const fileCache = new Map<string, Uint8Array>();

async function readAsset(url: URL): Promise<Uint8Array> {
  const key = url.href;
  let data = fileCache.get(key);
  if (!data) {
    data = await Deno.readFile(url.protocol === "file:" ? fileURLToPath(url) : url);
    fileCache.set(key, data);
  }
  return data;
}

/** Constant-time string comparison. */
function sameToken(given: string, expected: string): boolean {
  const a = new TextEncoder().encode(given), b = new TextEncoder().encode(expected);
  let diff = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) diff |= (a[i] ?? 0) ^ b[i];
  return diff === 0;
}

/** The token a request presents (bearer header first, then `?token=`), or null. */
function presentedToken(c: Context): string | null {
  const auth = c.req.header("authorization");
  const m = auth?.match(/^Bearer\s+(.+)$/i);
  if (m) return m[1].trim();
  return c.req.query("token") ?? null;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

/** Mounts `/metrics`, `/status`, `/` and the dashboard's assets under `/dashboard/`. */
export function mountObservability(
  app: Hono,
  monitor: RunMonitor,
  opts: { token: string | null },
): void {
  const token = opts.token;
  const denied = (c: Context): Response | null => {
    if (token === null || token === "") return null;
    const given = presentedToken(c);
    if (given !== null && sameToken(given, token)) return null;
    return c.text(
      "401 unauthorized: this coordinator runs with --metrics-token; send " +
        "'Authorization: Bearer TOKEN' or add ?token=TOKEN\n",
      401,
      { "WWW-Authenticate": 'Bearer realm="adaptmesh"', "Cache-Control": "no-store" },
    );
  };

  app.get("/metrics", async (c) => {
    const no = denied(c);
    if (no) return no;
    const text = await monitor.metrics.registry.metrics();
    return c.body(text, 200, {
      "Content-Type": monitor.metrics.registry.contentType,
      "Cache-Control": "no-store",
    });
  });

  app.get("/status", (c) => {
    const no = denied(c);
    if (no) return no;
    c.header("Cache-Control", "no-store");
    return c.json(monitor.status());
  });

  const page = async (c: Context) => {
    const no = denied(c);
    if (no) return no;
    const html = new TextDecoder().decode(
      await readAsset(new URL("./dashboard/index.html", import.meta.url)),
    );
    // The page was opened with ?token=T: its assets need the same token.
    const given = c.req.query("token");
    const query = token && given ? `?token=${escapeHtml(encodeURIComponent(given))}` : "";
    return c.html(html.replaceAll("__TOKEN_QUERY__", query), 200, { "Cache-Control": "no-store" });
  };
  app.get("/", page);
  // Browsers ask for it on any page, the 401 page included: answer without noise.
  app.get("/favicon.ico", (c) => c.body(null, 204));

  app.get("/dashboard/:file", async (c) => {
    const no = denied(c);
    if (no) return no;
    const asset = ASSETS[c.req.param("file")];
    if (!asset) return c.text("not found\n", 404);
    try {
      const data = await readAsset(asset.url());
      return c.body(data.slice().buffer, 200, {
        "Content-Type": asset.type,
        "Cache-Control": "no-cache",
      });
    } catch (e) {
      return c.text(`dashboard asset missing: ${(e as Error).message}\n`, 500);
    }
  });
}
