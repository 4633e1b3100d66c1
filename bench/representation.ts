/**
 * How much the encoder's output depends on its input, before any
 * adaptation: for each checkpoint, the final hidden state at [CLS] and the
 * mean over the real tokens, for N held-out IMDB reviews; reported as the
 * mean pairwise cosine similarity across reviews (1: every review looks the
 * same to the classifier head) and the spread of each feature across reviews
 * relative to its mean size; and the size (RMS) of the word embeddings and
 * of the encoder's weights and biases.
 *
 *   deno run -A bench/representation.ts --models DIR,fresh [--examples 64] [--max-len 64]
 *
 * `fresh` is the default architecture freshly initialised (seed 42), even
 * where a pre-trained default model is shipped.
 *
 * @module
 */
import { initBackend } from "../shared/compute/create.ts";
import { parseFlagsOrExit } from "../shared/cli/flags.ts";
import { loadImdb } from "../shared/data/imdb.ts";
import { EncodedSet } from "../shared/data/batching.ts";
import { frozenFeatures, loadNamedModel, MODELS_FLAG } from "./frozen_features.ts";

const flags = parseFlagsOrExit(
  Deno.args,
  {
    models: MODELS_FLAG,
    examples: { type: "int", default: 64, help: "held-out reviews" },
    "max-len": { type: "int", default: 64, help: "tokens per review" },
  } as const,
  "deno run -A bench/representation.ts [--models DIR,fresh] [flags]",
);

/** Mean cosine similarity over all pairs of rows of `x` [n, H]. */
function meanPairCosine(x: Float32Array, n: number, H: number): number {
  let sum = 0, pairs = 0;
  const norm = (i: number) => Math.hypot(...x.subarray(i * H, (i + 1) * H));
  const norms = Array.from({ length: n }, (_, i) => norm(i));
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      let d = 0;
      for (let k = 0; k < H; k++) d += x[i * H + k] * x[j * H + k];
      sum += d / (norms[i] * norms[j]);
      pairs++;
    }
  }
  return sum / pairs;
}

/** Mean over features of (std across rows) / (root mean square of the feature). */
function relativeSpread(x: Float32Array, n: number, H: number): number {
  let total = 0;
  for (let k = 0; k < H; k++) {
    let m = 0, sq = 0;
    for (let i = 0; i < n; i++) {
      m += x[i * H + k];
      sq += x[i * H + k] ** 2;
    }
    m /= n;
    const variance = Math.max(0, sq / n - m * m);
    total += Math.sqrt(variance) / Math.sqrt(sq / n);
  }
  return total / H;
}

await initBackend("tfjs-wasm");
const task = loadImdb();
const rows: Record<string, unknown>[] = [];
for (const which of flags.models.split(",")) {
  const { ck, tokenizer } = await loadNamedModel(which);
  const set = new EncodedSet(task.eval, tokenizer, flags["max-len"]);
  const H = ck.config.hiddenSize, n = flags.examples;
  const { cls: c, mean: m } = await frozenFeatures(ck, set, n);
  const rmsOf = (match: (name: string) => boolean) => {
    let sq = 0, count = 0;
    for (const spec of ck.layout.specs) {
      if (!match(spec.name)) continue;
      for (const v of ck.weights.subarray(spec.offset, spec.offset + spec.size)) sq += v * v;
      count += spec.size;
    }
    return Math.sqrt(sq / count);
  };
  const row = {
    model: which,
    wordEmbeddingRms: rmsOf((name) => name.endsWith("word_embeddings.weight")),
    encoderWeightRms: rmsOf((name) => name.includes(".encoder.") && name.endsWith("dense.weight")),
    encoderBiasRms: rmsOf((name) => name.includes(".encoder.") && name.endsWith(".bias")),
    clsCosine: meanPairCosine(c, n, H),
    clsSpread: relativeSpread(c, n, H),
    meanCosine: meanPairCosine(m, n, H),
    meanSpread: relativeSpread(m, n, H),
  };
  rows.push(row);
  console.log(JSON.stringify(row));
}
const out = `bench/results/representation-${new Date().toISOString().slice(0, 10)}.json`;
await Deno.writeTextFile(
  out,
  JSON.stringify({ date: new Date().toISOString(), flags, rows }, null, 2) + "\n",
);
console.log(`wrote ${out}`);
