/**
 * What the representation benches read from a checkpoint before any
 * adaptation: the model named on the command line (a folder, or `fresh`),
 * and its frozen features per example.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { freshDefaultModel, loadModel } from "../shared/model/default_model.ts";
import type { LoadedCheckpoint } from "../shared/io/checkpoint.ts";
import {
  batchTensors,
  encode,
  NO_DROPOUT,
  weightTensors,
  wordEmbeddings,
} from "../shared/tfjs/model.ts";
import type { EncodedSet } from "../shared/data/batching.ts";
import { loadTokenizer, type TextTokenizer } from "../shared/text/tokenizer.ts";

/** The `--models` flag: comma-separated checkpoint folders, or `fresh`. */
export const MODELS_FLAG = {
  type: "string",
  default: "fresh",
  help: "comma-separated checkpoint folders; fresh: the default architecture, freshly initialised",
} as const;

/**
 * A checkpoint folder with a fresh 2-label head (seed 42), or for `fresh`
 * the default architecture freshly initialised (seed 42), even where a
 * pre-trained default model is shipped; with its tokenizer.
 */
export async function loadNamedModel(
  which: string,
): Promise<{ ck: LoadedCheckpoint; tokenizer: TextTokenizer }> {
  const dir = which === "fresh" ? null : which;
  const ck = dir
    ? await loadModel(dir, { numLabels: 2, seed: 42 })
    : freshDefaultModel({ numLabels: 2, seed: 42 });
  return { ck, tokenizer: await loadTokenizer(dir ?? undefined) };
}

/** The frozen features of an example. */
export const FEATURES = ["cls", "mean", "bow"] as const;
/** One of {@linkcode FEATURES}. */
export type Feature = typeof FEATURES[number];

/**
 * Features of the first `n` examples of `set`, 64 at a time, without
 * dropout: one [n, H] row-major array per feature —
 * `cls` the final hidden state at [CLS], `mean` the final hidden states
 * averaged over the real tokens, `bow` the input word embeddings averaged
 * over the real tokens.
 */
export async function frozenFeatures(
  ck: LoadedCheckpoint,
  set: EncodedSet,
  n: number,
): Promise<Record<Feature, Float32Array>> {
  const H = ck.config.hiddenSize;
  const out = {
    cls: new Float32Array(n * H),
    mean: new Float32Array(n * H),
    bow: new Float32Array(n * H),
  };
  const weights = weightTensors(ck.layout, ck.weights);
  try {
    for (let start = 0; start < n; start += 64) {
      const idx = Array.from({ length: Math.min(64, n - start) }, (_, i) => start + i);
      const bt = batchTensors(ck.config, set.batch(idx));
      const parts = tf.tidy(() => {
        const words = wordEmbeddings(ck.config, weights, bt);
        const seq = encode(ck.config, weights, bt, words, NO_DROPOUT);
        const mask = tf.expandDims(tf.cast(bt.mask, "float32"), -1);
        const count = tf.sum(mask, 1);
        const m = idx.length;
        return {
          cls: tf.reshape(tf.slice(seq, [0, 0, 0], [m, 1, H]), [m, H]),
          mean: tf.div(tf.sum(tf.mul(seq, mask), 1), count),
          bow: tf.div(tf.sum(tf.mul(words, mask), 1), count),
        };
      });
      for (const f of FEATURES) out[f].set(await parts[f].data() as Float32Array, start * H);
      tf.dispose([...Object.values(parts), ...Object.values(bt)]);
    }
  } finally {
    tf.dispose(Object.values(weights));
  }
  return out;
}
