/**
 * `deno task coordinator [flags]`: the coordinator alone. It prints the
 * command other machines run to join, trains as workers arrive, and exits 0
 * after the final evaluation (or keeps the dashboard up with `--linger`).
 *
 * @module
 */
import { FlagError, HelpRequested } from "../shared/cli/flags.ts";
import { startCoordinator } from "./coordinator.ts";
import { progressPrinter } from "./progress.ts";
import { parseRunFlags } from "./run_config.ts";

const USAGE = "deno task coordinator [training flags]";

/** Parses flags, printing help (exit 0) or the error (exit 2). */
export async function parseOrExit<
  const E extends Record<string, import("../shared/cli/flags.ts").FlagSpec>,
>(
  args: string[],
  extra: E,
  usage: string,
) {
  try {
    return await parseRunFlags(args, extra, usage);
  } catch (e) {
    if (e instanceof HelpRequested) {
      console.log(e.text.trimEnd());
      Deno.exit(0);
    }
    if (e instanceof FlagError) {
      console.error(`error: ${e.message}\nRun with --help for usage.`);
      Deno.exit(2);
    }
    throw e;
  }
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
export function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    const done = () => resolve();
    Deno.addSignalListener("SIGINT", done);
    Deno.addSignalListener("SIGTERM", done);
  });
}

if (import.meta.main) {
  const { config } = await parseOrExit(Deno.args, {}, USAGE);
  const printer = progressPrinter({ tty: Deno.stdout.isTerminal(), everyMs: 5000 });
  const log = printer.log!;
  let c;
  try {
    c = await startCoordinator(config, { observer: printer, log });
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    Deno.exit(1);
  }
  log(`dashboard: ${c.httpUrl}`);
  log(`join from another machine:\n  ${c.joinCommand}`);
  const unlisten = stopOnSignals(() => c.stop(), log);
  try {
    const summary = await c.done;
    console.log(
      JSON.stringify({ steps: summary.steps, stopped: summary.stopped, ...summary.evaluation }),
    );
    if (config.linger && !summary.stopped) {
      log(`run over; dashboard stays up at ${c.httpUrl} (Ctrl-C to quit)`);
      unlisten();
      await untilSignal();
    }
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    await c.close();
    Deno.exit(1);
  }
  unlisten();
  await c.close();
  Deno.exit(0);
}
