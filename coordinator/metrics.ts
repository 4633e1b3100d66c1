/**
 * The run's Prometheus exposition (`/metrics`). Every series is named
 * `adaptmesh_*` and follows the Prometheus conventions: base units in the
 * name (`_seconds`, `_bytes`), `_total` on counters and only on counters.
 *
 * The registry is this run's own (never prom-client's global one, and none of
 * its default Node.js metrics, some of which are gauges ending in `_total`).
 * Counters and gauges are read from the {@link RunMonitor} at scrape time, so
 * `/metrics` and `/status` always agree; the step-time histograms are
 * observed as each step is reported.
 *
 * @module
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { ERROR_CODES } from "../shared/protocol.ts";
import { BACKEND_NAMES } from "../shared/backend.ts";
import type { RunMonitor } from "./observability.ts";
import type { StepReport } from "./trainer.ts";

/** Buckets of the step-time histograms, in seconds (1 ms … 10 min). */
export const STEP_SECONDS_BUCKETS: readonly number[] = [
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
  120,
  300,
  600,
];

/** The phases of `adaptmesh_step_phase_seconds`, from StepReport.timings. */
export const STEP_PHASES = [
  ["compute", "computeMs"],
  ["adversary", "adversaryMs"],
  ["transfer", "transferMs"],
  ["averaging", "averageMs"],
  ["optimizer", "optimizerMs"],
  ["encode", "encodeMs"],
  ["wait", "waitMs"],
] as const;

const REDISPATCH_REASONS = ["timeout", "disconnect", "invalid"] as const;
const DISCARD_REASONS = ["stale", "duplicate", "unknown_task", "invalid"] as const;

/** A finite number for a gauge (NaN when unknown; prom-client writes it as `NaN`). */
function num(x: number | null | undefined): number {
  return typeof x === "number" ? x : NaN;
}

/** The metrics of one run, in a registry of their own. */
export class RunMetrics {
  readonly registry: Registry = new Registry();
  readonly #phase: Histogram<"phase">;
  readonly #stepSeconds: Histogram;

  constructor(monitor: RunMonitor) {
    const registers = [this.registry];
    const m = monitor;
    const t = () => m.trainer;
    const last = () => m.history.at(-1);

    /** A counter whose value is read at scrape time. */
    const counter = (name: string, help: string, value: () => number) =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          this.reset();
          this.inc(Math.max(0, value()));
        },
      });
    /** A gauge whose value is read at scrape time. */
    const gauge = (name: string, help: string, value: () => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(value());
        },
      });
    /** A counter by `reason`, known reasons always present (0 until they happen). */
    const byReason = (
      name: string,
      help: string,
      known: readonly string[],
      counts: Map<string, number>,
    ) =>
      new Counter({
        name,
        help,
        labelNames: ["reason"],
        registers,
        collect() {
          this.reset();
          for (const reason of known) this.inc({ reason }, 0);
          for (const [reason, n] of counts) this.inc({ reason }, n);
        },
      });

    new Gauge({
      name: "adaptmesh_run_info",
      help: "Constant 1, labelled with the run's identity and main settings.",
      labelNames: ["run_id", "optimizer", "adversary", "model_type"],
      registers,
      collect() {
        this.reset();
        const c = t().config;
        this.set({
          run_id: t().runId,
          optimizer: c.training.optimizer.kind,
          adversary: c.training.adversary.mode,
          model_type: t().modelConfig.modelType,
        }, 1);
      },
    });
    gauge(
      "adaptmesh_run_finished",
      "1 once the run is over (trained, evaluated, saved).",
      () => m.summary ? 1 : 0,
    );
    gauge(
      "adaptmesh_run_elapsed_seconds",
      "Seconds since the run started.",
      () => m.elapsedSeconds(),
    );
    gauge(
      "adaptmesh_run_eta_seconds",
      "Estimated seconds until the last step, from the recent step rate (NaN before the first step).",
      () => num(m.etaSeconds()),
    );
    gauge("adaptmesh_steps_planned", "Optimizer steps the run will take.", () => t().totalSteps);
    gauge("adaptmesh_step", "The last completed optimizer step (1-based count).", () => t().step);
    gauge(
      "adaptmesh_weights_version",
      "Version of the weights the workers compute on.",
      () => t().weightsVersion,
    );

    counter(
      "adaptmesh_steps_completed_total",
      "Optimizer steps completed (a resumed run counts from its checkpoint).",
      () => t().step,
    );
    counter(
      "adaptmesh_examples_processed_total",
      "Training examples whose gradient went into a step.",
      () => m.examples,
    );
    counter(
      "adaptmesh_tokens_processed_total",
      "Non-padding training tokens whose gradient went into a step.",
      () => m.tokens,
    );
    counter(
      "adaptmesh_clipped_steps_total",
      "Steps whose gradient was clipped to --clip.",
      () => m.clippedSteps,
    );
    gauge(
      "adaptmesh_examples_per_second",
      "Training examples per second over the recent steps.",
      () => m.examplesPerSecond(),
    );

    gauge(
      "adaptmesh_loss",
      "Training loss of the last step (adversarial when active).",
      () => num(last()?.loss),
    );
    gauge("adaptmesh_learning_rate", "Learning rate of the last step.", () => num(last()?.lr));
    gauge(
      "adaptmesh_gradient_norm",
      "Global L2 norm of the averaged gradient of the last step (before clipping).",
      () => num(last()?.gradNorm),
    );
    gauge(
      "adaptmesh_lamb_trust_ratio_min",
      "Smallest LAMB trust ratio ||w||/||update|| over the decayed tensors, last step.",
      () => num(last()?.trustRatio.min),
    );
    gauge(
      "adaptmesh_lamb_trust_ratio_mean",
      "Mean LAMB trust ratio over the decayed tensors, last step.",
      () => num(last()?.trustRatio.mean),
    );
    gauge(
      "adaptmesh_lamb_trust_ratio_max",
      "Largest LAMB trust ratio over the decayed tensors, last step.",
      () => num(last()?.trustRatio.max),
    );
    gauge(
      "adaptmesh_weights_frame_bytes",
      "Size of the encoded weights frame sent to workers.",
      () => num(last()?.weightsBytes),
    );

    new Gauge({
      name: "adaptmesh_evaluation_metric",
      help: "Latest evaluation result, by metric name and split.",
      labelNames: ["metric", "split"],
      registers,
      collect() {
        this.reset();
        const latest = new Map<string, Record<string, number>>();
        for (const e of m.evals) latest.set(e.split, e.result);
        for (const [split, result] of latest) {
          for (const [metric, v] of Object.entries(result)) {
            if (metric !== "examples") this.set({ metric, split }, v);
          }
        }
      },
    });
    gauge(
      "adaptmesh_evaluation_step",
      "Step of the latest evaluation (NaN before the first).",
      () => num(m.evals.at(-1)?.step),
    );
    counter(
      "adaptmesh_evaluations_total",
      "Evaluations of a held-out split.",
      () => m.evals.length,
    );
    counter(
      "adaptmesh_checkpoints_written_total",
      "Resumable checkpoints written under --save.",
      () => m.checkpoints,
    );

    this.#phase = new Histogram({
      name: "adaptmesh_step_phase_seconds",
      help: "Where each step's time went: compute and adversary (summed over micro-batches), " +
        "transfer (wait not explained by compute), averaging, optimizer, encode (weights), " +
        "wait (dispatch to last result).",
      labelNames: ["phase"],
      buckets: [...STEP_SECONDS_BUCKETS],
      registers,
    });
    for (const [phase] of STEP_PHASES) this.#phase.zero({ phase });
    this.#stepSeconds = new Histogram({
      name: "adaptmesh_step_duration_seconds",
      help: "Wall time of each optimizer step.",
      buckets: [...STEP_SECONDS_BUCKETS],
      registers,
    });

    counter(
      "adaptmesh_received_bytes_total",
      "Bytes of WebSocket frames received from workers.",
      () => m.bytesIn,
    );
    counter(
      "adaptmesh_sent_bytes_total",
      "Bytes of WebSocket frames sent to workers (weights included).",
      () => m.bytesOut,
    );
    counter(
      "adaptmesh_weights_sent_bytes_total",
      "Bytes of weights frames sent to workers.",
      () => m.weightsBytesSent,
    );

    new Gauge({
      name: "adaptmesh_workers_connected",
      help: "Workers connected now, by backend.",
      labelNames: ["backend"],
      registers,
      collect() {
        this.reset();
        for (const b of BACKEND_NAMES) this.set({ backend: b }, 0);
        for (const w of m.workers()) this.inc({ backend: w.backend });
      },
    });
    counter("adaptmesh_worker_joins_total", "Worker handshakes accepted.", () => m.workersJoined);
    counter("adaptmesh_worker_leaves_total", "Worker disconnections.", () => m.workersLeft);

    const perWorker = (
      name: string,
      help: string,
      value: (w: ReturnType<RunMonitor["workers"]>[number]) => number,
    ) =>
      new Gauge({
        name,
        help,
        labelNames: ["worker", "backend"],
        registers,
        collect() {
          this.reset();
          for (const w of m.workers()) this.set({ worker: w.id, backend: w.backend }, value(w));
        },
      });
    perWorker(
      "adaptmesh_worker_examples_per_second",
      "Examples per second each connected worker contributed over the recent steps.",
      (w) => w.examplesPerSecond,
    );
    perWorker(
      "adaptmesh_worker_compute_seconds_per_example",
      "Moving average of each connected worker's compute time per example (NaN until measured).",
      (w) => w.msPerExample > 0 ? w.msPerExample / 1000 : NaN,
    );
    perWorker(
      "adaptmesh_worker_inflight_micro_batches",
      "Micro-batches each connected worker is computing now.",
      (w) => w.inflight,
    );
    const workerTotal = (name: string, help: string, key: "microBatches" | "examples") =>
      new Counter({
        name,
        help,
        labelNames: ["worker", "backend"],
        registers,
        collect() {
          this.reset();
          for (const [id, tot] of m.workerTotals) {
            this.inc({ worker: id, backend: tot.backend }, tot[key]);
          }
        },
      });
    workerTotal(
      "adaptmesh_worker_micro_batches_total",
      "Micro-batch results accepted from each worker (departed ones included).",
      "microBatches",
    );
    workerTotal(
      "adaptmesh_worker_examples_total",
      "Examples in the results accepted from each worker.",
      "examples",
    );
    perWorker(
      "adaptmesh_worker_rejected_results",
      "Invalid or unassigned results from each connected worker (this connection).",
      (w) => w.rejected,
    );

    byReason(
      "adaptmesh_redispatches_total",
      "Micro-batches handed to another worker, by reason.",
      REDISPATCH_REASONS,
      m.redispatchedByReason,
    );
    byReason(
      "adaptmesh_discarded_results_total",
      "Worker results not used, by reason.",
      DISCARD_REASONS,
      m.discardedByReason,
    );
    byReason(
      "adaptmesh_rejected_messages_total",
      "Peer messages refused with an error, by error code.",
      ERROR_CODES,
      m.rejectedByReason,
    );
  }

  /** Records one step's timings in the histograms. */
  observeStep(r: StepReport): void {
    for (const [phase, key] of STEP_PHASES) this.#phase.observe({ phase }, r.timings[key] / 1000);
    this.#stepSeconds.observe(r.timings.stepMs / 1000);
  }
}
