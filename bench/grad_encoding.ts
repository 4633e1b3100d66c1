/**
 * What 16-bit gradients on the wire cost in precision (issue 21, item 3), on
 * a real partial sum: the no-flag run's model and data (the built-in BERT on
 * IMDB, ScaLA's default adversary), step 0's micro-batches computed by the
 * worker's own code (worker/compute.ts) and summed as a worker holding them
 * would (worker/partial_sum.ts), then encoded as f32, bf16 and f16
 * (shared/wire/grad_encoding.ts) and decoded as the coordinator does.
 *
 *     deno run -A bench/grad_encoding.ts [--micro-batches N] [--out FILE]
 *
 * Prints, per encoding: bytes, ‖decoded − exact‖₂ / ‖exact‖₂, the largest
 * element-wise relative error among elements above 1e-3 of the largest, and
 * the non-zero elements that became 0; writes
 * bench/results/grad_encoding-<date>.json.
 *
 * @module
 */
import { parseFlagsOrExit } from "../shared/cli/flags.ts";
import { initBackend } from "../shared/compute/create.ts";
import { adversaryAt } from "../shared/method/adversary_config.ts";
import { gradLayout } from "../shared/model/sparse_grad.ts";
import { decodeGrad, encodeGrad } from "../shared/wire/grad_encoding.ts";
import { GRAD_ENCODINGS, type PartialMessage } from "../shared/wire/protocol.ts";
import { parseRunFlags } from "../coordinator/run_config.ts";
import { Trainer } from "../coordinator/trainer.ts";
import { WorkerCompute } from "../worker/compute.ts";
import { HeldWork } from "../worker/partial_sum.ts";
import { table } from "./markdown.ts";

const flags = parseFlagsOrExit(Deno.args, {
  "micro-batches": { type: "int", default: 4, help: "micro-batches of step 0 in the partial" },
  out: { type: "string", default: "", help: "JSON output (default bench/results/…)" },
}, "deno run -A bench/grad_encoding.ts [flags]");

const backend = await initBackend("cpu");
const { config } = await parseRunFlags(["--port", "0"], {}, "");
const trainer = await Trainer.create(config);
const compute = new WorkerCompute();
const welcome = trainer.welcome("bench");
compute.welcome(welcome);
compute.weights({
  type: "weights",
  runId: trainer.runId,
  version: trainer.weightsVersion,
  encoding: "f32",
  data: trainer.weights,
});
const held = new HeldWork();
held.reset(gradLayout(trainer.layout, welcome.objective), "f32");
const { adversary, adversaryStart } = config.training;
const micro = trainer.plan.step(0).microBatches.slice(0, flags["micro-batches"]);
for (const [index, ids] of micro.entries()) {
  const task = {
    type: "task" as const,
    taskId: index,
    runId: trainer.runId,
    step: 0,
    index,
    weightsVersion: trainer.weightsVersion,
    seed: config.training.seed,
    adversary: adversaryAt(adversary, 0, trainer.totalSteps, adversaryStart),
    batch: trainer.data.train.batch(ids, 0),
    hold: true,
  };
  held.absorb(task, await compute.task(task));
}
const exact: PartialMessage = held.flush({
  type: "flush",
  runId: trainer.runId,
  step: 0,
  weightsVersion: trainer.weightsVersion,
  indices: Int32Array.from(micro.keys()),
});
const x = exact.grad as Float32Array;
let norm = 0, max = 0, nonZero = 0;
for (const v of x) {
  norm += v * v;
  max = Math.max(max, Math.abs(v));
  if (v !== 0) nonZero++;
}
norm = Math.sqrt(norm);

const rows = GRAD_ENCODINGS.map((encoding) => {
  const enc = encodeGrad(x, encoding);
  const back = decodeGrad(enc);
  let err = 0, worst = 0, flushed = 0;
  for (let i = 0; i < x.length; i++) {
    const d = back[i] - x[i];
    err += d * d;
    if (Math.abs(x[i]) > 1e-3 * max) worst = Math.max(worst, Math.abs(d / x[i]));
    if (x[i] !== 0 && back[i] === 0) flushed++;
  }
  return {
    encoding,
    bytes: enc.data.byteLength,
    scale: enc.scale,
    relL2: Math.sqrt(err) / norm,
    maxRelAboveThousandth: worst,
    flushedToZero: flushed,
  };
});
console.log(
  `${backend.name}: partial of ${micro.length} micro-batches, ${x.length} elements ` +
    `(${nonZero} non-zero), ‖g‖₂ ${norm.toExponential(3)}, max |g| ${max.toExponential(3)}`,
);
console.log(table(
  ["encoding", "bytes", "scale 2^s", "‖err‖₂/‖g‖₂", "max rel err (|g| > 1e-3 max)", "→ 0"],
  rows.map((r) => [
    r.encoding,
    r.bytes.toLocaleString("en-US"),
    String(r.scale),
    r.relL2.toExponential(2),
    r.maxRelAboveThousandth.toExponential(2),
    String(r.flushedToZero),
  ]),
));
const out = flags.out ||
  new URL(`results/grad_encoding-${new Date().toISOString().slice(0, 10)}.json`, import.meta.url)
    .pathname;
await Deno.writeTextFile(
  out,
  JSON.stringify(
    {
      date: new Date().toISOString(),
      backend: backend.name,
      model: "built-in (models/adaptmesh-bert-small), IMDB, default ScaLA adversary",
      microBatches: micro.length,
      elements: x.length,
      nonZero,
      norm,
      max,
      encodings: rows,
    },
    null,
    2,
  ) + "\n",
);
console.log(`wrote ${out}`);
compute.dispose();
