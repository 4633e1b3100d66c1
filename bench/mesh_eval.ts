/**
 * Held-out evaluation wall time: on the coordinator (the local path: the
 * native engine where a BLAS loads, else tfjs wasm) against on 1 and 2 local
 * worker processes through the mesh (coordinator/mesh_eval.ts), for the
 * default model on IMDB. Each configuration trains one tiny step first (the
 * run must exist), then times only the final evaluation, as the trainer logs
 * it, and then the same weights on the coordinator. `workerComputeSeconds`
 * is the sum of the workers' reported compute over the batches: against the
 * wall time it shows the mesh's own overhead and how much the workers ran
 * in parallel. Prints one JSON object and writes it to bench/results/.
 *
 *   deno run -A bench/mesh_eval.ts [--eval-limit 1000] [--max-len 128] [--backend native]
 *
 * @module
 */
import { parseFlagsOrExit } from "../shared/cli/flags.ts";
import { parseRunFlags } from "../coordinator/run_config.ts";
import { startCoordinator } from "../coordinator/coordinator.ts";
import { spawnLocalWorkers, stopLocalWorkers } from "../coordinator/local_workers.ts";
import { initBackend } from "../shared/compute/create.ts";
import { flagArgs } from "./flag_args.ts";

const flags = parseFlagsOrExit(Deno.args, {
  "eval-limit": { type: "int", default: 1000, help: "held-out examples scored" },
  "max-len": { type: "int", default: 128, help: "tokens per example" },
  backend: { type: "string", default: "cpu", help: "the workers' backend" },
  workers: { type: "string", default: "1,2", help: "worker counts to time, comma-separated" },
  out: {
    type: "string",
    default: "",
    help: "result file (default bench/results/mesh_eval-DATE.json)",
  },
}, "deno run -A bench/mesh_eval.ts [flags]");

const runArgs = flagArgs({
  steps: 1,
  "global-batch": 8,
  "micro-batch": 8,
  "max-len": flags["max-len"],
  "eval-limit": flags["eval-limit"],
  adv: "off",
  port: 0,
  quiet: true,
});

const seconds = (lines: string[], re: RegExp) => {
  const m = lines.map((l) => l.match(re)).find((x) => x);
  if (!m) throw new Error(`no line matching ${re}:\n${lines.join("\n")}`);
  return Number(m[1]);
};

await initBackend("tfjs-wasm");
const loadBefore = Deno.loadavg();
const { config } = await parseRunFlags(runArgs, {}, "");
const rows: Record<string, unknown>[] = [];

const cores = navigator.hardwareConcurrency;
for (const n of flags.workers.split(",").map(Number)) {
  const lines: string[] = [];
  const log = (l: string) => lines.push(l);
  const c = await startCoordinator(config, { log, observer: { log } });
  // The workers' own compute time per evaluation batch, as their results report it.
  const computeMs: number[] = [];
  const take = c.scheduler.evalResult.bind(c.scheduler);
  c.scheduler.evalResult = (id, m) => {
    computeMs.push(m.timings.computeMs);
    return take(id, m);
  };
  const threads = flags.backend === "cpu" ? Math.max(1, Math.floor(cores / n)) : undefined;
  const procs = spawnLocalWorkers(n, c.wsUrl, c.token, {
    backend: flags.backend,
    threads,
    output: "null",
  });
  const summary = await c.done;
  await stopLocalWorkers(procs);
  await c.close();
  rows.push({
    where: `${n} ${flags.backend} worker(s)${threads ? `, ${threads} BLAS thread(s) each` : ""}`,
    evalSeconds: seconds(lines, /on \d+ worker\(s\) in ([\d.]+) s/),
    batches: computeMs.length,
    workerComputeSeconds: computeMs.reduce((a, b) => a + b, 0) / 1000,
    result: summary.evaluation,
  });
  // The same weights on the coordinator, once the workers are gone: what runs with no worker.
  const here: string[] = [];
  const result = await c.trainer.evaluate({ log: (l) => here.push(l) });
  rows.push({
    where: "coordinator (same weights)",
    evalSeconds: seconds(here, /on the coordinator in ([\d.]+) s/),
    result,
  });
}

const date = new Date().toISOString().slice(0, 10);
const report = {
  date,
  what: "held-out evaluation wall time, default model on IMDB, local vs through the mesh",
  machine: `${cores} cores, shared with other work at the time (numbers are one noisy run each)`,
  loadAverage1m: { before: loadBefore[0], after: Deno.loadavg()[0] },
  evalLimit: flags["eval-limit"],
  maxLen: flags["max-len"],
  rows,
};
const text = JSON.stringify(report, null, 2);
console.log(text);
const out = flags.out || `bench/results/mesh_eval-${date}.json`;
await Deno.writeTextFile(out, text + "\n");
