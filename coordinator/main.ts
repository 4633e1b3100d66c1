/**
 * `deno task coordinator [flags]`: the coordinator alone. It prints the
 * command other machines run to join, trains as workers arrive, and exits 0
 * after the final evaluation (or keeps the dashboard up with `--linger`).
 *
 * @module
 */
import { exitOnFlagError, FlagError, type FlagSpec } from "../shared/cli/flags.ts";
import { InputError } from "../shared/io/input_error.ts";
import { startCoordinator } from "./coordinator.ts";
import { progressPrinter } from "./progress.ts";
import { parseRunFlags, type RunConfig } from "./run_config.ts";
import type { RunSummary, TrainerObserver } from "./trainer.ts";
import type { Objective } from "../shared/model/param_layout.ts";

/**
 * Parses training flags plus `extra` (`objective`: fixed, see `parseRunFlags`),
 * printing help (exit 0) or the error (exit 2).
 */
export function parseOrExit<const E extends Record<string, FlagSpec>>(
  args: string[],
  extra: E,
  usage: string,
  objective?: Objective,
) {
  return exitOnFlagError(() => parseRunFlags(args, extra, usage, objective));
}

/** Installs SIGINT/SIGTERM handlers that checkpoint and stop the run. */
export function stopOnSignals(stop: () => void, log: (l: string) => void): () => void {
  const handler = () => {
    log("signal received: checkpointing and stopping");
    stop();
  };
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, handler);
  return () => signals.forEach((s) => Deno.removeSignalListener(s, handler));
}

/** Waits until SIGINT/SIGTERM. */
function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    const done = () => resolve();
    Deno.addSignalListener("SIGINT", done);
    Deno.addSignalListener("SIGTERM", done);
  });
}

/** The exit status of an error: 2 for the user's input (flags, files, folders), else 1. */
export function exitStatus(e: unknown): number {
  return e instanceof FlagError || e instanceof InputError ? 2 : 1;
}

/** The final stdout line of a run: `{"steps", "stopped", …metrics, "best"?, "early_stopped"?}`. */
export function resultLine(summary: RunSummary): string {
  return JSON.stringify({
    steps: summary.steps,
    stopped: summary.stopped,
    ...summary.evaluation,
    ...(summary.best ? { best: summary.best } : {}),
    ...(summary.earlyStopped ? { early_stopped: true } : {}),
  });
}

/** Prints nothing: the observer of a `--quiet` run. */
const SILENT: TrainerObserver = { log: () => {} };

/**
 * Starts a coordinator for the parsed run, prints where to watch and how to
 * join, lets `withWorkers` start local workers (given the resolved run
 * config: a resumed run's comes from its checkpoint), and serves the run to
 * its end: the final JSON line on stdout — the only thing it prints there;
 * progress, notes and worker lines go to stderr — `--linger`, SIGINT/SIGTERM.
 * With `--quiet` stderr gets only errors. Returns the exit status (2 for a
 * usage error found while loading: a refused `--save`, bad labels, …).
 */
export async function serveRun(
  config: RunConfig,
  joinLabel: string,
  withWorkers: (
    wsUrl: string,
    token: string,
    log: (l: string) => void,
    resolved: RunConfig,
  ) => Promise<() => Promise<void>> = () => Promise.resolve(() => Promise.resolve()),
): Promise<number> {
  const printer = config.ui.quiet
    ? SILENT
    : progressPrinter({ tty: Deno.stderr.isTerminal(), everyMs: 5000 });
  const log = printer.log!;
  let c;
  try {
    c = await startCoordinator(config, { observer: printer, log });
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    return exitStatus(e);
  }
  log(`dashboard: ${c.httpUrl}`);
  log(`${joinLabel}:\n  ${c.joinCommand}`);
  const stopWorkers = await withWorkers(c.wsUrl, c.token, log, c.trainer.config);
  const unlisten = stopOnSignals(() => c.stop(), log);
  let code = 0;
  try {
    const summary = await c.done;
    console.log(resultLine(summary));
    if (config.ui.linger && !summary.stopped) {
      log(`run over; dashboard stays up at ${c.httpUrl} (Ctrl-C to quit)`);
      unlisten();
      await untilSignal();
    }
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    code = 1;
  }
  unlisten();
  await stopWorkers();
  await c.close();
  return code;
}

if (import.meta.main) {
  const { config } = await parseOrExit(Deno.args, {}, "deno task coordinator [training flags]");
  Deno.exit(await serveRun(config, "join from another machine"));
}
