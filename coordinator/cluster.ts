/**
 * `deno task cluster [flags]`: a coordinator and `--workers N` local worker
 * processes in one command. With no flags it adapts the built-in small BERT
 * to IMDB with ScaLA, shows progress, prints the dashboard URL and the final
 * evaluation.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { startCoordinator } from "./coordinator.ts";
import { progressPrinter } from "./progress.ts";
import { parseOrExit, stopOnSignals, untilSignal } from "./main.ts";

const USAGE = "deno task cluster [--workers N] [--backend B] [training flags]";
const { config, flags } = await parseOrExit(Deno.args, {
  workers: {
    type: "int",
    default: navigator.hardwareConcurrency,
    help: "local worker processes (default: one per core)",
  },
  backend: {
    type: "string",
    help: "backend of the local workers: webgpu | wasm | cpu (default: auto)",
  },
}, USAGE);
if (flags.workers < 0) {
  console.error("error: --workers must be >= 0");
  Deno.exit(2);
}
if (flags.backend && !["webgpu", "wasm", "cpu"].includes(flags.backend)) {
  console.error(`error: --backend must be webgpu, wasm or cpu, got "${flags.backend}"`);
  Deno.exit(2);
}

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
log(`more machines can join with:\n  ${c.joinCommand}`);
const workerMain = fileURLToPath(new URL("../worker/main.ts", import.meta.url));
const children = Array.from({ length: flags.workers }, () =>
  new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      workerMain,
      "--url",
      c.wsUrl,
      "--token",
      c.token,
      ...(flags.backend ? ["--backend", flags.backend] : []),
    ],
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn());
log(`started ${children.length} local worker(s)`);
const unlisten = stopOnSignals(() => c.stop(), log);
let code = 0;
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
  code = 1;
}
unlisten();
// Workers exit on the coordinator's bye; give them a moment, then make sure.
const exits = await Promise.race([
  Promise.all(children.map((p) => p.status)),
  new Promise<null>((r) => setTimeout(() => r(null), 10_000)),
]);
if (exits === null) { for (const p of children) p.kill("SIGKILL"); }
await c.close();
Deno.exit(code);
