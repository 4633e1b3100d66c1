/**
 * A running coordinator: the trainer, the scheduler and the HTTP server
 * wired together. `deno task coordinator`, `deno task cluster` and the
 * tests all start one through {@link startCoordinator}.
 *
 * @module
 */
import { Hono } from "hono";
import { encodeMessage, MAX_FRAME_BYTES } from "../shared/wire/protocol.ts";
import { formatMetrics } from "./progress.ts";
import type { RunConfig } from "./run_config.ts";
import { Scheduler, type SchedulerEvents } from "./scheduler.ts";
import { type MeshContext, mountMesh } from "./server.ts";
import { type RunSummary, Trainer, type TrainerObserver } from "./trainer.ts";
import { RunMetrics } from "./metrics.ts";
import { mountMonitorRoutes } from "./monitor_routes.ts";
import { RunMonitor } from "./run_monitor.ts";
import { peerText } from "../shared/wire/peer_text.ts";

/** A coordinator that is listening and training. */
export interface Coordinator {
  readonly trainer: Trainer;
  readonly scheduler: Scheduler;
  readonly monitor: RunMonitor;
  /** The Prometheus registry behind `/metrics`. */
  readonly metrics: RunMetrics;
  /** ws://host:port/ws */
  readonly wsUrl: string;
  /** http://host:port/ */
  readonly httpUrl: string;
  readonly token: string;
  /** The command another machine runs to join. */
  readonly joinCommand: string;
  /** Resolves when the run is over (trained, evaluated, saved, workers told). */
  readonly done: Promise<RunSummary>;
  /** Checkpoints and stops the run (SIGINT/SIGTERM). */
  stop(): void;
  /** Closes the server. */
  close(): Promise<void>;
}

/** Options beyond the run configuration. */
export interface CoordinatorOptions {
  readonly observer?: TrainerObserver;
  readonly log?: (line: string) => void;
  readonly maxFrameBytes?: number;
  /** Scheduler event hooks added to the monitor's (tests). */
  readonly events?: SchedulerEvents;
  /**
   * Receive results into recycled memory (default true); false: each into
   * fresh memory, freed once summed (benchmarks compare the two).
   */
  readonly recycleResults?: boolean;
}

/** Loads the run, starts listening, and starts training as workers join. */
export async function startCoordinator(
  given: RunConfig,
  opts: CoordinatorOptions = {},
): Promise<Coordinator> {
  const log = opts.log ?? ((l: string) => console.error(l));
  const trainer = await Trainer.create(given, { recycleResults: opts.recycleResults !== false });
  // The resolved run config: a resumed run's settings come from its checkpoint.
  const { network } = trainer.config;
  for (const note of trainer.notes) log(`note: ${note}`);
  const monitor = new RunMonitor(trainer);
  /** Stopped or over: answers to abandoned tasks are expected then, not worth a log line. */
  let winding = false;
  const metrics = new RunMetrics(monitor);
  const events: SchedulerEvents = {
    accepted: (w, r) => {
      monitor.events.accepted?.(w, r);
      opts.events?.accepted?.(w, r);
    },
    discarded: (w, reason, detail) => {
      monitor.events.discarded?.(w, reason, detail);
      opts.events?.discarded?.(w, reason, detail);
      if (reason === "invalid" || (reason === "unknown_task" && !winding)) {
        log(`rejected a result from ${w.id}: ${peerText(detail)}`);
      }
    },
    redispatched: (reason, step, index) => {
      monitor.events.redispatched?.(reason, step, index);
      opts.events?.redispatched?.(reason, step, index);
    },
    weightsSent: (w, bytes) => monitor.events.weightsSent?.(w, bytes),
  };
  const scheduler = new Scheduler({
    gradLayout: trainer.gradLayout,
    window: trainer.dispatchWindow,
    taskTimeoutMs: network.taskTimeoutMs,
    events,
  });
  monitor.attach(scheduler);
  const mesh: MeshContext = {
    scheduler,
    // Results land in the trainer's recycled memory; its accumulator hands each one back.
    receivePool: trainer.receivePool,
    token: network.token,
    maxFrameBytes: opts.maxFrameBytes ?? MAX_FRAME_BYTES,
    // A deterministic run's pinned backend (kept across resumes by its checkpoints).
    requireBackend: () => trainer.pinnedBackend,
    welcome: (id, hello) => trainer.welcome(id, hello),
    baseFor: (hello) => trainer.baseFor(hello),
    rejected: (code) => monitor.rejected(code),
    bytes: (dir, n) => monitor.bytes(dir, n),
    log,
    silenceMs: network.workerSilenceMs,
    joined: (link) => {
      trainer.joinedWith(link.backend);
      monitor.joined(link);
    },
    left: (id) => {
      monitor.left(id);
      log(`worker ${id} left`);
    },
  };
  const app = new Hono();
  const meshHandle = mountMesh(app, mesh);
  mountMonitorRoutes(app, { monitor, metrics, token: network.metricsToken });
  const server = Deno.serve(
    { hostname: network.host, port: network.port, onListen: () => {} },
    app.fetch,
  );
  const port = server.addr.port;
  const shownHost = network.host === "0.0.0.0" || network.host === "::"
    ? Deno.hostname()
    : network.host;
  const wsUrl = `ws://${shownHost}:${port}/ws`;
  const httpUrl = `http://${shownHost}:${port}/`;
  const joinCommand = `deno task worker --url ${wsUrl} --token ${network.token}`;
  const observer = monitor.observer(opts.observer);
  const done = (async () => {
    const summary = await trainer.run(scheduler, observer);
    winding = true;
    scheduler.broadcast(
      encodeMessage({ type: "bye", reason: summary.stopped ? "run stopped" : "run finished" }),
    );
    if (summary.evaluation) log(`final evaluation: ${formatMetrics(summary.evaluation)}`);
    monitor.finished(summary);
    return summary;
  })();
  let closed = false;
  return {
    trainer,
    scheduler,
    monitor,
    metrics,
    wsUrl,
    httpUrl,
    token: network.token,
    joinCommand,
    done,
    stop: () => {
      winding = true;
      trainer.stop(scheduler);
    },
    close: async () => {
      if (closed) return;
      closed = true;
      meshHandle.close();
      await server.shutdown();
    },
  };
}
