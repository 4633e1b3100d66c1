/**
 * What `--weights-encoding f16` costs in accuracy: the same micro-batch
 * gradient computed from f32 weights and from the f16-rounded weights a
 * worker receives, compared (relative l2 error of the gradient, cosine,
 * loss difference), over several batches of the built-in task.
 *
 *   deno run -A bench/weights_f16.ts [--model DIR] [--batches 8] [--micro-batch 32] [--max-len 128]
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { parseFlagsOrExit } from "../shared/cli/flags.ts";
import { initBackend } from "../shared/compute/create.ts";
import { loadModel } from "../shared/model/default_model.ts";
import { loadImdb } from "../shared/data/imdb.ts";
import { loadTokenizer } from "../shared/text/tokenizer.ts";
import { EncodedSet } from "../shared/data/batching.ts";
import { weightTensors } from "../shared/tfjs/model.ts";
import { microBatchGradient } from "../shared/tfjs/gradient.ts";
import { DEFAULT_ADVERSARY } from "../shared/method/adversary_config.ts";
import { f16BitsToF32, f32ToF16Bits } from "../shared/wire/half_float.ts";
import { paramLayout } from "../shared/model/param_layout.ts";

const flags = parseFlagsOrExit(
  Deno.args,
  {
    model: { type: "string", help: "checkpoint (default: the built-in model)" },
    batches: { type: "int", default: 8, help: "micro-batches compared" },
    "micro-batch": { type: "int", default: 32, help: "examples per micro-batch" },
    "max-len": { type: "int", default: 128, help: "tokens per example" },
  } as const,
  "deno run -A bench/weights_f16.ts [flags]",
);

await initBackend("tfjs-wasm");
const task = loadImdb();
const ck = await loadModel(flags.model ?? null, { numLabels: 2, seed: 1 });
const layout = paramLayout(ck.config);
const set = new EncodedSet(task.train, await loadTokenizer(ck.dir ?? undefined), flags["max-len"]);
const rounded = f16BitsToF32(f32ToF16Bits(ck.weights));
let maxWeightRel = 0;
for (let i = 0; i < rounded.length; i++) {
  if (ck.weights[i] !== 0) {
    maxWeightRel = Math.max(
      maxWeightRel,
      Math.abs(rounded[i] - ck.weights[i]) / Math.abs(ck.weights[i]),
    );
  }
}
const rows = [];
for (const [name, w] of [["f32", ck.weights], ["f16", rounded]] as const) {
  const weights = weightTensors(layout, w);
  const model = { config: ck.config, layout, weights };
  const grads = [];
  for (let j = 0; j < flags.batches; j++) {
    const idx = Array.from(
      { length: flags["micro-batch"] },
      (_, k) => j * flags["micro-batch"] + k,
    );
    grads.push(
      await microBatchGradient(model, {
        step: 0,
        index: j,
        seed: 1,
        adversary: DEFAULT_ADVERSARY,
        batch: set.batch(idx),
        dropout: { hidden: 0, attention: 0 },
      }),
    );
  }
  rows.push({ name, grads });
  tf.dispose(Object.values(weights));
}
const [a, b] = rows;
let relSum = 0, cosMin = 1, lossDiff = 0;
for (let j = 0; j < flags.batches; j++) {
  const ga = a.grads[j].grad, gb = b.grads[j].grad;
  let d = 0, na = 0, nb = 0, dot = 0;
  for (let i = 0; i < ga.length; i++) {
    d += (ga[i] - gb[i]) ** 2;
    na += ga[i] ** 2;
    nb += gb[i] ** 2;
    dot += ga[i] * gb[i];
  }
  relSum += Math.sqrt(d / na);
  cosMin = Math.min(cosMin, dot / Math.sqrt(na * nb));
  lossDiff = Math.max(lossDiff, Math.abs(a.grads[j].loss - b.grads[j].loss));
}
const result = {
  date: new Date().toISOString(),
  model: ck.dir ?? "fresh init",
  batches: flags.batches,
  microBatch: flags["micro-batch"],
  maxLen: flags["max-len"],
  maxRelativeWeightRounding: maxWeightRel,
  meanRelativeGradientError: relSum / flags.batches,
  minGradientCosine: cosMin,
  maxLossDifference: lossDiff,
  bytesPerWorkerPerStep: { f32: layout.total * 4, f16: layout.total * 2 },
};
console.log(JSON.stringify(result, null, 2));
await Deno.mkdir("bench/results", { recursive: true });
await Deno.writeTextFile(
  `bench/results/weights_f16-${result.date.slice(0, 10)}.json`,
  JSON.stringify(result, null, 2),
);
