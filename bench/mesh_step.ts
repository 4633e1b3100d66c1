/**
 * Where the time of one training step goes over the real mesh: a
 * coordinator in this process and N worker processes on loopback, the
 * default small BERT on IMDB. Prints a table per worker count and writes
 * JSON to bench/results/.
 *
 *   deno run -A bench/mesh_step.ts [--workers 1,2] [--steps 5] [--global-batch 64]
 *     [--micro-batch 16] [--max-len 64] [--adv pgd] [--weights-encoding f32]
 *
 * @module
 */
import { parseFlagsOrExit } from "../shared/cli/flags.ts";
import { parseRunFlags } from "../coordinator/run_config.ts";
import { startCoordinator } from "../coordinator/coordinator.ts";
import type { StepReport } from "../coordinator/trainer.ts";
import { spawnLocalWorkers, stopLocalWorkers } from "../coordinator/local_workers.ts";
import { flagArgs } from "./flag_args.ts";

const flags = parseFlagsOrExit(
  Deno.args,
  {
    workers: { type: "string", default: "1,2", help: "worker counts to measure" },
    steps: { type: "int", default: 5, help: "steps per run (the first is not averaged)" },
    "global-batch": { type: "int", default: 64, help: "B" },
    "micro-batch": { type: "int", default: 16, help: "b" },
    "max-len": { type: "int", default: 64, help: "tokens per example" },
    adv: { type: "string", default: "pgd", help: "pgd | freelb | off" },
    "adv-steps": { type: "int", default: 1, help: "K" },
    "adv-start": { type: "number", default: 0, help: "first adversarial step (or fraction)" },
    "weights-encoding": { type: "string", default: "f32", help: "f32 | f16" },
    backend: { type: "string", default: "tfjs-wasm", help: "worker backend" },
    out: { type: "string", help: "JSON output path" },
  } as const,
  "deno run -A bench/mesh_step.ts [flags]",
);

const rows = [];
for (const n of flags.workers.split(",").map(Number)) {
  const { config } = await parseRunFlags(
    flagArgs({
      steps: flags.steps,
      "global-batch": flags["global-batch"],
      "micro-batch": flags["micro-batch"],
      "max-len": flags["max-len"],
      adv: flags.adv,
      "adv-steps": flags["adv-steps"],
      "adv-start": flags["adv-start"],
      "weights-encoding": flags["weights-encoding"],
      port: 0,
      "eval-limit": 1,
      quiet: true,
    }),
    {},
    "",
  );
  const reports: StepReport[] = [];
  const c = await startCoordinator(config, {
    log: () => {},
    observer: { step: (r) => reports.push(r) },
  });
  const procs = spawnLocalWorkers(n, c.wsUrl, c.token, { backend: flags.backend, output: "null" });
  await c.done;
  await stopLocalWorkers(procs);
  await c.close();
  const measured = reports.slice(1);
  const mean = (f: (r: StepReport) => number) =>
    measured.reduce((a, r) => a + f(r), 0) / measured.length;
  const row = {
    workers: n,
    steps: measured.length,
    stepMs: mean((r) => r.timings.stepMs),
    waitMs: mean((r) => r.timings.waitMs),
    computeMs: mean((r) => r.timings.computeMs),
    adversaryMs: mean((r) => r.timings.adversaryMs),
    transferMs: mean((r) => r.timings.transferMs),
    averageMs: mean((r) => r.timings.averageMs),
    optimizerMs: mean((r) => r.timings.optimizerMs),
    encodeMs: mean((r) => r.timings.encodeMs),
    examplesPerSecond: mean((r) => r.examples / (r.timings.stepMs / 1000)),
    bytesInPerStep: c.monitor.bytesIn / reports.length,
    bytesOutPerStep: c.monitor.bytesOut / reports.length,
    weightsFrameBytes: reports.at(-1)!.weightsBytes,
  };
  rows.push(row);
}
const f = (x: number) => x.toFixed(0);
console.log(
  `| workers | step ms | wait | Σ compute | Σ adversary | transfer | average | optimizer | encode | ex/s | MB in/step | MB out/step |`,
);
console.log(`|---|---|---|---|---|---|---|---|---|---|---|---|`);
for (const r of rows) {
  console.log(
    `| ${r.workers} | ${f(r.stepMs)} | ${f(r.waitMs)} | ${f(r.computeMs)} | ${f(r.adversaryMs)} | ${
      f(r.transferMs)
    } | ${f(r.averageMs)} | ${f(r.optimizerMs)} | ${f(r.encodeMs)} | ${
      r.examplesPerSecond.toFixed(1)
    } | ${(r.bytesInPerStep / 1e6).toFixed(1)} | ${(r.bytesOutPerStep / 1e6).toFixed(1)} |`,
  );
}
const out = flags.out ?? `bench/results/mesh_step-${new Date().toISOString().slice(0, 10)}.json`;
await Deno.mkdir("bench/results", { recursive: true });
await Deno.writeTextFile(
  out,
  JSON.stringify(
    {
      date: new Date().toISOString(),
      machine: { cores: navigator.hardwareConcurrency, os: Deno.build.os },
      flags,
      rows,
    },
    null,
    2,
  ),
);
console.log(`wrote ${out}`);
