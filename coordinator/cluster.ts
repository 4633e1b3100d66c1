/**
 * `deno task cluster [flags]`: a coordinator and `--workers N` local worker
 * processes in one command. With no flags it adapts the built-in small BERT
 * to IMDB with ScaLA, shows progress, prints the dashboard URL and the final
 * evaluation.
 *
 * @module
 */
import { parseOrExit, serveRun } from "./main.ts";
import { spawnLocalWorkers, stopLocalWorkers } from "./local_workers.ts";

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
}, "deno task cluster [--workers N] [--backend B] [training flags]");
if (flags.workers < 0) {
  console.error("error: --workers must be >= 0");
  Deno.exit(2);
}
if (flags.backend && !["webgpu", "wasm", "cpu"].includes(flags.backend)) {
  console.error(`error: --backend must be webgpu, wasm or cpu, got "${flags.backend}"`);
  Deno.exit(2);
}
Deno.exit(
  await serveRun(config, "more machines can join with", (url, token, log) => {
    const children = spawnLocalWorkers(flags.workers, url, token, { backend: flags.backend });
    log(`started ${children.length} local worker(s)`);
    return Promise.resolve(() => stopLocalWorkers(children));
  }),
);
