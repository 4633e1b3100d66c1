/**
 * Linear probe: how much sentiment a checkpoint's frozen features carry,
 * before any adaptation. For the first `--train` IMDB training reviews and
 * the first `--eval` held-out ones, three features per review:
 *
 * - `cls`: the encoder's final hidden state at [CLS] (what the classifier head reads);
 * - `mean`: the final hidden states averaged over the real tokens;
 * - `bow`: the input word embeddings averaged over the real tokens (a bag of words).
 *
 * Each is standardised (mean and spread of the rows it is fitted on) and fitted by a ridge
 * classifier (closed form, targets ±1, bias unpenalised); its penalty is
 * chosen by 4-fold cross-validation on the training reviews only, then the
 * held-out accuracy is reported.
 *
 *   deno run -A bench/probe.ts --models DIR,fresh [--train 1024] [--eval 500] [--max-len 64]
 *
 * `fresh` is the default architecture freshly initialised (seed 42).
 *
 * @module
 */
import { initBackend } from "../shared/compute/create.ts";
import { parseFlagsOrExit } from "../shared/cli/flags.ts";
import { loadImdb } from "../shared/data/imdb.ts";
import type { Example } from "../shared/data/example.ts";
import { EncodedSet } from "../shared/data/batching.ts";
import { FEATURES, frozenFeatures, loadNamedModel, MODELS_FLAG } from "./frozen_features.ts";
import { fitRidge, ridgeAccuracy } from "./ridge.ts";

const flags = parseFlagsOrExit(
  Deno.args,
  {
    models: MODELS_FLAG,
    train: { type: "int", default: 1024, help: "IMDB training reviews the probe is fitted on" },
    eval: { type: "int", default: 500, help: "held-out reviews it is scored on" },
    "max-len": { type: "int", default: 64, help: "tokens per review" },
    out: {
      type: "string",
      default: "",
      help: "JSON result path (default bench/results/probe-DATE.json)",
    },
  } as const,
  "deno run -A bench/probe.ts [--models DIR,fresh] [flags]",
);

/**
 * Copies of `xs` ([*, H] each) with every column standardised by the mean
 * and spread of the rows `fit` of the first: only the data a probe is
 * fitted on sets the scale.
 */
function standardised(H: number, fit: readonly number[], ...xs: Float32Array[]): Float32Array[] {
  const base = xs[0], mean = new Float64Array(H), sd = new Float64Array(H);
  for (let k = 0; k < H; k++) {
    let m = 0, sq = 0;
    for (const i of fit) m += base[i * H + k];
    m /= fit.length;
    for (const i of fit) sq += (base[i * H + k] - m) ** 2;
    mean[k] = m;
    sd[k] = Math.sqrt(sq / fit.length) || 1;
  }
  return xs.map((x) => x.map((v, j) => (v - mean[j % H]) / sd[j % H]));
}

const LAMBDAS = [0.01, 0.1, 1, 10, 100, 1000];

await initBackend("tfjs-wasm");
const task = loadImdb();
const signs = (xs: readonly Example[], n: number) =>
  Float32Array.from(xs.slice(0, n), (e) => (e.label === 1 ? 1 : -1));
const yTrain = signs(task.train, flags.train), yEval = signs(task.eval, flags.eval);
const rows: Record<string, unknown>[] = [];
for (const which of flags.models.split(",")) {
  const { ck, tokenizer } = await loadNamedModel(which);
  const H = ck.config.hiddenSize;
  const features = (examples: readonly Example[], n: number) =>
    frozenFeatures(ck, new EncodedSet(examples, tokenizer, flags["max-len"]), n);
  const fTrain = await features(task.train, flags.train);
  const fEval = await features(task.eval, flags.eval);
  const row: Record<string, unknown> = { model: which };
  for (const f of FEATURES) {
    const all = Array.from({ length: flags.train }, (_, i) => i);
    const cv = LAMBDAS.map((lambda) => {
      let acc = 0;
      for (let fold = 0; fold < 4; fold++) {
        const held = all.filter((i) => i % 4 === fold), fit = all.filter((i) => i % 4 !== fold);
        const [x] = standardised(H, fit, fTrain[f]);
        acc += ridgeAccuracy(x, yTrain, held, H, fitRidge(x, yTrain, fit, H, lambda)) / 4;
      }
      return acc;
    });
    const lambda = LAMBDAS[cv.indexOf(Math.max(...cv))];
    const [xTrain, xEval] = standardised(H, all, fTrain[f], fEval[f]);
    const w = fitRidge(xTrain, yTrain, all, H, lambda);
    const evalRows = Array.from({ length: flags.eval }, (_, i) => i);
    row[f] = {
      lambda,
      cvAccuracy: Math.max(...cv),
      evalAccuracy: ridgeAccuracy(xEval, yEval, evalRows, H, w),
    };
  }
  rows.push(row);
  console.log(JSON.stringify(row));
}
const out = flags.out || `bench/results/probe-${new Date().toISOString().slice(0, 10)}.json`;
await Deno.writeTextFile(
  out,
  JSON.stringify({ date: new Date().toISOString(), flags, lambdas: LAMBDAS, rows }, null, 2) + "\n",
);
console.log(`wrote ${out}`);
