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
 * `--link` instead projects the wire at the paper's setting (issue 21, item
 * 5) — also a MODEL: bytes per step per worker from the formats the mesh
 * sends (shared/model/sparse_grad.ts, shared/wire/grad_encoding.ts; the
 * measured run of bench/wan.ts and bench/coordinator_cost.ts carries exactly
 * these), for BERT-base and RoBERTa-large, 8–32 GPU workers, B = 1,024–4,096
 * in micro-batches of `--micro-batch`, on a star whose coordinator link runs
 * at 1, 10 or 100 Gbit/s each way, beside the GPU compute time of the step:
 *
 *   weights out  = W · 4P (f32) or 2P (f16)
 *   results in   = m · (4·(P − V·H) + r·(4H + 4))            per-micro-batch
 *                = W · (e·(P − V·H) + u·(e·H + 4))           per-worker, e = 4 (f32) or 2 (bf16)
 *   wire         = max(out, in) / link rate                  (full duplex)
 *   compute      = ⌈m / W⌉ · b / (examples per second of one GPU) · adversary factor
 *
 * with r the distinct tokens of a micro-batch and u = min(V, ⌈m / W⌉ · r)
 * the rows a worker's partial carries (`--distinct-tokens`), and the GPU's
 * speed a stated assumption (`--gpu-examples-per-second`).
 *
 * @module
 */
import { parseFlagsOrExit } from "../shared/cli/flags.ts";
import { paramLayout } from "../shared/model/param_layout.ts";
import { sparseLayout } from "../shared/model/sparse_grad.ts";
import { shapeConfig } from "./random_checkpoint.ts";
import { table } from "./markdown.ts";

const flags = parseFlagsOrExit(
  Deno.args,
  {
    tta: {
      type: "string",
      help: "time_to_accuracy JSON (steps to target per recipe; required without --link)",
    },
    link: {
      type: "boolean",
      help: "project the wire at the paper's setting instead (see the module doc)",
    },
    "link-gbps": { type: "string", default: "1,10,100", help: "--link: link rates, Gbit/s" },
    "link-workers": { type: "string", default: "8,16,32", help: "--link: GPU workers" },
    "link-batches": { type: "string", default: "1024,4096", help: "--link: global batches B" },
    "micro-batch": { type: "int", default: 32, help: "--link: examples per micro-batch b" },
    "seq-len": { type: "int", default: 128, help: "--link: tokens per example" },
    "distinct-tokens": {
      type: "int",
      default: 1500,
      help: "--link: distinct token ids in one micro-batch (b × seq-len tokens)",
    },
    "gpu-examples-per-second": {
      type: "string",
      default: "bert-base=800,roberta-large=250",
      help: "--link: clean training examples/s of one GPU at seq-len (an assumption)",
    },
    "adversary-factor": {
      type: "number",
      default: 1.63,
      help: "--link: compute of a ScaLA step over a clean one (PGD K=1, measured on CPU)",
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
  "deno run -A bench/projection.ts --tta FILE [flags] | --link [flags]",
);

if (flags.link) {
  await linkProjection();
  Deno.exit(0);
}
if (!flags.tta) {
  console.error("--tta FILE is required (or --link)");
  Deno.exit(2);
}

interface Row {
  recipe: string;
  label: string;
  stepsToTarget: number | null;
}
const tta = JSON.parse(await Deno.readTextFile(flags.tta!)) as {
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
const path = flags.tta!.replace(/\.json$/, "") + `-projection-x${flags["worker-speedup"]}.json`;
await Deno.writeTextFile(
  path,
  JSON.stringify({ model: "see bench/projection.ts", assumptions: flags, rows: out }, null, 2),
);
console.log(`wrote ${path}`);

/** `--link`: the wire against the compute at the paper's setting (a projection; module doc). */
async function linkProjection(): Promise<void> {
  const rates = flags["link-gbps"].split(",").map(Number);
  const Ws = flags["link-workers"].split(",").map(Number);
  const Bs = flags["link-batches"].split(",").map(Number);
  const b = flags["micro-batch"], r = flags["distinct-tokens"];
  const speed = Object.fromEntries(
    flags["gpu-examples-per-second"].split(",").map((kv) => {
      const [k, v] = kv.split("=");
      return [k, Number(v)];
    }),
  );
  const rows: Record<string, number | string>[] = [];
  for (const model of ["bert-base", "roberta-large"]) {
    const layout = paramLayout(shapeConfig(model), "classify");
    const s = sparseLayout(layout);
    const P = s.total, V = s.rowCount, H = s.rowWidth, rest = P - V * H;
    const result = 4 * rest + Math.min(V, r) * (4 * H + 4);
    for (const B of Bs) {
      const m = Math.ceil(B / b);
      for (const W of Ws) {
        const perWorker = Math.ceil(m / W);
        const u = Math.min(V, perWorker * r);
        const partial = (e: number) => e * rest + u * (e * H + 4);
        const bytes = {
          weightsF32: W * 4 * P,
          weightsF16: W * 2 * P,
          perMicroBatch: m * result,
          perWorkerF32: W * partial(4),
          perWorkerBf16: W * partial(2),
        };
        const computeS = perWorker * b / speed[model] * flags["adversary-factor"];
        for (const gbps of rates) {
          const Bps = gbps * 1e9 / 8;
          const wire = (out: number, inn: number) => Math.max(out, inn) / Bps;
          rows.push({
            model,
            workers: W,
            globalBatch: B,
            microBatches: m,
            linkGbps: gbps,
            computeS,
            bytesPerWorkerPerStepPerMicroBatch: (bytes.weightsF32 + bytes.perMicroBatch) / W,
            bytesPerWorkerPerStepPerWorker: (bytes.weightsF32 + bytes.perWorkerF32) / W,
            bytesPerWorkerPerStepBf16F16: (bytes.weightsF16 + bytes.perWorkerBf16) / W,
            wireSPerMicroBatch: wire(bytes.weightsF32, bytes.perMicroBatch),
            wireSPerWorker: wire(bytes.weightsF32, bytes.perWorkerF32),
            wireSPerWorkerBf16F16: wire(bytes.weightsF16, bytes.perWorkerBf16),
          });
        }
      }
    }
  }
  const f = (x: number | string, d = 2) => (typeof x === "number" ? x.toFixed(d) : x);
  console.log(
    `A PROJECTION, not a measurement: star topology, the coordinator's link at each rate ` +
      `(full duplex), b = ${b}, ${flags["seq-len"]} tokens, ${r} distinct tokens per ` +
      `micro-batch, GPU ${flags["gpu-examples-per-second"]} examples/s × ${
        flags["adversary-factor"]
      } (ScaLA); weights f32 (f16 in the last column).`,
  );
  console.log(table(
    [
      "model",
      "W",
      "B",
      "Gbit/s",
      "compute s",
      "GB/worker/step: per-micro-batch / per-worker / +bf16,f16 weights",
      "wire s: per-micro-batch",
      "per-worker",
      "per-worker bf16 + f16 weights",
    ],
    rows.map((x) =>
      [
        x.model,
        x.workers,
        x.globalBatch,
        x.linkGbps,
        f(x.computeS),
        `${f(Number(x.bytesPerWorkerPerStepPerMicroBatch) / 1e9)} / ${
          f(Number(x.bytesPerWorkerPerStepPerWorker) / 1e9)
        } / ${f(Number(x.bytesPerWorkerPerStepBf16F16) / 1e9)}`,
        f(x.wireSPerMicroBatch),
        f(x.wireSPerWorker),
        f(x.wireSPerWorkerBf16F16),
      ].map(String)
    ),
  ));
  const out = `bench/results/projection-link-${new Date().toISOString().slice(0, 10)}.json`;
  await Deno.writeTextFile(
    out,
    JSON.stringify(
      { projection: "see bench/projection.ts (--link)", assumptions: flags, rows },
      null,
      2,
    ) +
      "\n",
  );
  console.log(`wrote ${out}`);
}
