/**
 * The run's Prometheus exposition (`/metrics`). Every series is named
 * `adaptmesh_*` and follows the Prometheus conventions: base units in the
 * name (`_seconds`, `_bytes`), `_total` on counters and only on counters
 * (so a scalar series here is a counter exactly when its name ends in `_total`).
 *
 * The registry is this run's own (never prom-client's global one, and none of
 * its default Node.js metrics, some of which are gauges ending in `_total`;
 * docs/platform.md). Counters and gauges are read from the {@link RunMonitor}
 * at scrape time, so `/metrics` and `/status` always agree; the step-time
 * histograms are observed as the monitor records each step. This module
 * reads the monitor; the monitor knows nothing of it.
 *
 * @module
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { ERROR_CODES } from "../shared/wire/protocol.ts";
import { BACKEND_NAMES } from "../shared/compute/backend.ts";
import { DISCARD_REASONS, REDISPATCH_REASONS } from "./scheduler.ts";
import type { RunMonitor, WorkerView } from "./run_monitor.ts";
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

/** A finite number for a gauge (NaN when unknown; prom-client writes it as `NaN`). */
function num(x: number | null | undefined): number {
  return typeof x === "number" ? x : NaN;
}

/** The last step's report, if any. */
const last = (m: RunMonitor) => m.history.at(-1);

/** One unlabelled series: name, help, and its value read from the monitor at scrape time. */
type Scalar = readonly [name: string, help: string, value: (m: RunMonitor) => number];

/** The unlabelled series; a name ending in `_total` is a counter, any other a gauge. */
const SCALARS: readonly Scalar[] = [
  [
    "adaptmesh_run_finished",
    "1 once the run is over (trained, evaluated, saved).",
    (m) => m.summary ? 1 : 0,
  ],
  ["adaptmesh_run_elapsed_seconds", "Seconds since the run started.", (m) => m.elapsedSeconds()],
  [
    "adaptmesh_run_eta_seconds",
    "Estimated seconds until the last step, from the recent step rate (NaN before the first step).",
    (m) => num(m.etaSeconds()),
  ],
  ["adaptmesh_steps_planned", "Optimizer steps the run will take.", (m) => m.trainer.totalSteps],
  ["adaptmesh_step", "The last completed optimizer step (1-based count).", (m) => m.trainer.step],
  [
    "adaptmesh_weights_version",
    "Version of the weights the workers compute on.",
    (m) => m.trainer.weightsVersion,
  ],
  [
    "adaptmesh_steps_completed_total",
    "Optimizer steps completed (a resumed run counts from its checkpoint).",
    (m) => m.trainer.step,
  ],
  [
    "adaptmesh_examples_processed_total",
    "Training examples whose gradient went into a step.",
    (m) => m.examples,
  ],
  [
    "adaptmesh_tokens_processed_total",
    "Non-padding training tokens whose gradient went into a step.",
    (m) => m.tokens,
  ],
  [
    "adaptmesh_clipped_steps_total",
    "Steps whose gradient was clipped to --clip.",
    (m) => m.clippedSteps,
  ],
  [
    "adaptmesh_examples_per_second",
    "Training examples per second over the recent steps.",
    (m) => m.examplesPerSecond(),
  ],
  [
    "adaptmesh_loss",
    "Training loss of the last step (adversarial when active).",
    (m) => num(last(m)?.loss),
  ],
  ["adaptmesh_learning_rate", "Learning rate of the last step.", (m) => num(last(m)?.lr)],
  [
    "adaptmesh_gradient_norm",
    "Global L2 norm of the averaged gradient of the last step (before clipping).",
    (m) => num(last(m)?.gradNorm),
  ],
  [
    "adaptmesh_update_norm",
    "Global L2 norm of the update the optimizer applied to the weights, last step.",
    (m) => num(last(m)?.updateNorm),
  ],
  [
    "adaptmesh_lamb_trust_ratio_min",
    "Smallest LAMB trust ratio ||w||/||update|| over the decayed tensors, last step.",
    (m) => num(last(m)?.trustRatio.min),
  ],
  [
    "adaptmesh_lamb_trust_ratio_mean",
    "Mean LAMB trust ratio over the decayed tensors, last step.",
    (m) => num(last(m)?.trustRatio.mean),
  ],
  [
    "adaptmesh_lamb_trust_ratio_max",
    "Largest LAMB trust ratio over the decayed tensors, last step.",
    (m) => num(last(m)?.trustRatio.max),
  ],
  [
    "adaptmesh_weights_frame_bytes",
    "Size of the encoded weights frame sent to workers.",
    (m) => num(last(m)?.weightsBytes),
  ],
  [
    "adaptmesh_evaluation_step",
    "Step of the latest evaluation (NaN before the first).",
    (m) => num(m.evals.at(-1)?.step),
  ],
  ["adaptmesh_evaluations_total", "Evaluations of a held-out split.", (m) => m.evals.length],
  [
    "adaptmesh_checkpoints_written_total",
    "Resumable checkpoints written under --save.",
    (m) => m.checkpoints,
  ],
  [
    "adaptmesh_received_bytes_total",
    "Bytes of WebSocket frames received from workers.",
    (m) => m.bytesIn,
  ],
  [
    "adaptmesh_sent_bytes_total",
    "Bytes of WebSocket frames sent to workers (weights included).",
    (m) => m.bytesOut,
  ],
  [
    "adaptmesh_weights_sent_bytes_total",
    "Bytes of weights frames sent to workers.",
    (m) => m.weightsBytesSent,
  ],
  ["adaptmesh_worker_joins_total", "Worker handshakes accepted.", (m) => m.workersJoined],
  ["adaptmesh_worker_leaves_total", "Worker disconnections.", (m) => m.workersLeft],
];

/** Gauges per connected worker, labelled `worker` and `backend`. */
const PER_WORKER:
  readonly (readonly [name: string, help: string, value: (w: WorkerView) => number])[] = [
    [
      "adaptmesh_worker_examples_per_second",
      "Examples per second each connected worker contributed over the recent steps.",
      (w) => w.examplesPerSecond,
    ],
    [
      "adaptmesh_worker_compute_seconds_per_example",
      "Moving average of each connected worker's compute time per example (NaN until measured).",
      (w) => w.msPerExample > 0 ? w.msPerExample / 1000 : NaN,
    ],
    [
      "adaptmesh_worker_inflight_micro_batches",
      "Micro-batches each connected worker is computing now.",
      (w) => w.inflight,
    ],
    [
      "adaptmesh_worker_rejected_results",
      "Invalid or unassigned results from each connected worker (this connection).",
      (w) => w.rejected,
    ],
  ];

/** Counters per worker over the run (departed ones included), labelled `worker` and `backend`. */
const WORKER_TOTALS: readonly (readonly [
  name: string,
  help: string,
  key: "microBatches" | "examples",
])[] = [
  [
    "adaptmesh_worker_micro_batches_total",
    "Micro-batch results accepted from each worker (departed ones included).",
    "microBatches",
  ],
  [
    "adaptmesh_worker_examples_total",
    "Examples in the results accepted from each worker.",
    "examples",
  ],
];

/** Counters by `reason`: every known reason is always present (0 until it happens). */
const BY_REASON: readonly (readonly [
  name: string,
  help: string,
  known: readonly string[],
  counts: (m: RunMonitor) => ReadonlyMap<string, number>,
])[] = [
  [
    "adaptmesh_redispatches_total",
    "Micro-batches handed to another worker, by reason.",
    REDISPATCH_REASONS,
    (m) => m.redispatchedByReason,
  ],
  [
    "adaptmesh_discarded_results_total",
    "Worker results not used, by reason.",
    DISCARD_REASONS,
    (m) => m.discardedByReason,
  ],
  [
    "adaptmesh_rejected_messages_total",
    "Peer messages refused with an error, by error code.",
    ERROR_CODES,
    (m) => m.rejectedByReason,
  ],
];

/** The metrics of one run, in a registry of their own. */
export class RunMetrics {
  readonly registry: Registry = new Registry();
  readonly #phase: Histogram<"phase">;
  readonly #stepSeconds: Histogram;

  constructor(monitor: RunMonitor) {
    const m = monitor;
    const registers = [this.registry];
    const t = () => m.trainer;

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
    for (const [name, help, value] of SCALARS) {
      if (name.endsWith("_total")) {
        new Counter({
          name,
          help,
          registers,
          collect() {
            this.reset();
            this.inc(Math.max(0, value(m)));
          },
        });
      } else {
        new Gauge({
          name,
          help,
          registers,
          collect() {
            this.set(value(m));
          },
        });
      }
    }

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
    m.onStep((r) => this.#observeStep(r));

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
    for (const [name, help, value] of PER_WORKER) {
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
    }
    for (const [name, help, key] of WORKER_TOTALS) {
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
    }
    for (const [name, help, known, counts] of BY_REASON) {
      new Counter({
        name,
        help,
        labelNames: ["reason"],
        registers,
        collect() {
          this.reset();
          for (const reason of known) this.inc({ reason }, 0);
          for (const [reason, n] of counts(m)) this.inc({ reason }, n);
        },
      });
    }
  }

  /** Records one step's timings in the histograms. */
  #observeStep(r: StepReport): void {
    for (const [phase, key] of STEP_PHASES) this.#phase.observe({ phase }, r.timings[key] / 1000);
    this.#stepSeconds.observe(r.timings.stepMs / 1000);
  }
}
