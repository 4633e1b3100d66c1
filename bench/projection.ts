/**
 * A MODEL, not a measurement: projects time to accuracy for W workers from
 * (1) the steps to the target accuracy measured by bench/time_to_accuracy.ts,
 * (2) per-example compute time and the adversary's cost factor measured by
 * the worker benchmark, and (3) a stated network and coordinator model. Every
 * assumption is a flag, printed with the result. It is checked against the
 * real 1- and 2-worker step times of bench/mesh_step.ts.
 *
 *   deno run -A bench/projection.ts --tta bench/results/time_to_accuracy-DATE.json
 *     [--mesh bench/results/mesh_step-DATE.json] [--worker-speedup 1] [--bandwidth-mbps 10000]
 *
 * Step time with W workers, global batch B, micro-batch b, m = ⌈B/b⌉ micro-batches:
 *   compute  = ⌈m / min(W, m)⌉ · b · t_ex · c           (rounds of micro-batches; c: adversary factor)
 *   network  = min(W, m) · S_w / BW_out + m · S_g / BW_in + 2 · RTT   (star: weights out, gradients in)
 *   coord    = m · t_expand + t_opt                       (combine + LAMB on the coordinator)
 * and time to accuracy = steps-to-target × step time.
 *
 * @module
 */
import { parseFlagsOrExit } from "../shared/cli/flags.ts";

const flags = parseFlagsOrExit(
  Deno.args,
  {
    tta: {
      type: "string",
      required: true,
      help: "time_to_accuracy JSON (steps to target per recipe)",
    },
    mesh: {
      type: "string",
      default: "bench/results/mesh_step-2026-11-27.json",
      help: "mesh_step JSON (validation)",
    },
    "example-ms": {
      type: "number",
      default: 1000 / 50.4,
      help: "clean ms per example on one worker (wasm core: 19.8)",
    },
    "worker-speedup": {
      type: "number",
      default: 1,
      help: "assumed worker speed relative to one wasm core",
    },
    "pgd1-factor": {
      type: "number",
      default: 1.63,
      help: "cost of PGD K=1 relative to clean (measured)",
    },
    "pgd2-factor": {
      type: "number",
      default: 2.16,
      help: "cost of PGD K=2 relative to clean (measured)",
    },
    "bandwidth-mbps": {
      type: "number",
      default: 10_000,
      help: "coordinator link, each direction, Mbit/s",
    },
    "rtt-ms": { type: "number", default: 0.5, help: "round-trip latency" },
    "weights-mb": {
      type: "number",
      default: 17.5,
      help: "weights frame per worker per step (f32)",
    },
    "grad-mb": {
      type: "number",
      default: 2.2,
      help: "row-sparse gradient per micro-batch of 16 at seq 64",
    },
    "expand-ms": {
      type: "number",
      default: 10,
      help: "coordinator: accumulate one row-sparse result (measured 37 ms for 4)",
    },
    "optimizer-ms": {
      type: "number",
      default: 60,
      help: "coordinator: one LAMB step, 4.4 M parameters",
    },
    workers: { type: "string", default: "1,2,8,32,128", help: "worker counts" },
  } as const,
  "deno run -A bench/projection.ts --tta FILE [flags]",
);

interface Row {
  recipe: string;
  label: string;
  stepsToTarget: number | null;
}
const tta = JSON.parse(await Deno.readTextFile(flags.tta)) as {
  rows: Row[];
  flags: Record<string, unknown>;
  runs: { recipe: string; steps: number }[];
};
const BW = (flags["bandwidth-mbps"] * 1e6) / 8 / 1000; // bytes per ms
const MB = 1e6;

/** The recipe's batch, micro-batch and adversary factor (from its name). */
function shape(recipe: string): { B: number; b: number; c: number } {
  const big = Number(tta.flags["big-batch"] ?? 1024);
  if (recipe === "baseline") return { B: 32, b: 16, c: 1 };
  if (recipe === "lamb") return { B: big, b: 64, c: 1 };
  if (recipe === "scala") return { B: big, b: 64, c: 0.3 + 0.7 * flags["pgd1-factor"] };
  return { B: big, b: 64, c: flags["pgd2-factor"] };
}

/** Modelled step time in ms. */
function stepMs(
  B: number,
  b: number,
  c: number,
  W: number,
  gradMbPerExample: number,
): number {
  const m = Math.ceil(B / b);
  const used = Math.min(W, m);
  const exampleMs = flags["example-ms"] / flags["worker-speedup"];
  const compute = Math.ceil(m / used) * b * exampleMs * c;
  const network = (used * flags["weights-mb"] * MB) / BW + (m * gradMbPerExample * b * MB) / BW +
    2 * flags["rtt-ms"];
  const coord = m * flags["expand-ms"] + flags["optimizer-ms"];
  return compute + network + coord;
}
const gradPerExample = flags["grad-mb"] / 16;

// Validation against the real mesh (B 64, b 16, PGD K=1, 1 and 2 workers on 2 shared cores).
const mesh = JSON.parse(await Deno.readTextFile(flags.mesh)) as {
  rows: { workers: number; stepMs: number }[];
};
console.log("model check against bench/mesh_step.ts (B=64, b=16, PGD K=1, wasm, loopback):");
for (const r of mesh.rows) {
  const predicted = stepMs(64, 16, flags["pgd1-factor"], r.workers, gradPerExample);
  console.log(
    `  ${r.workers} worker(s): measured ${r.stepMs.toFixed(0)} ms, modelled ${
      predicted.toFixed(0)
    } ms`,
  );
}

const Ws = flags.workers.split(",").map(Number);
console.log(
  `\nprojected time to the target accuracy (seconds; worker = ${
    flags["worker-speedup"]
  }× a wasm core, ` +
    `${flags["bandwidth-mbps"]} Mbit/s, RTT ${flags["rtt-ms"]} ms):`,
);
console.log(`| recipe | steps to target | ${Ws.map((w) => `${w} workers`).join(" | ")} |`);
console.log(`|---|---|${Ws.map(() => "---").join("|")}|`);
const out = [];
for (const row of tta.rows) {
  const { B, b, c } = shape(row.recipe);
  const cells = Ws.map((
    W,
  ) => (row.stepsToTarget === null
    ? null
    : (row.stepsToTarget * stepMs(B, b, c, W, gradPerExample)) / 1000)
  );
  out.push({
    recipe: row.recipe,
    stepsToTarget: row.stepsToTarget,
    seconds: Object.fromEntries(Ws.map((w, i) => [w, cells[i]])),
  });
  console.log(
    `| ${row.label} | ${row.stepsToTarget ?? "not reached"} | ${
      cells.map((s) => (s === null ? "—" : s.toFixed(0))).join(" | ")
    } |`,
  );
}
const path = flags.tta.replace(/\.json$/, "") + `-projection-x${flags["worker-speedup"]}.json`;
await Deno.writeTextFile(
  path,
  JSON.stringify({ model: "see bench/projection.ts", assumptions: flags, rows: out }, null, 2),
);
console.log(`wrote ${path}`);
