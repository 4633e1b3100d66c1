/**
 * Writes the pre-training corpus exactly as `deno task pretrain` sees it —
 * the built-in sources, the same held-out split, packed by `packSequences`
 * into 64-token sequences with the default vocabulary — as flat binary
 * arrays, for the reference pre-training in `reference_pretrain.py`:
 *
 *   deno run -A bench/reference_pretrain/export_tokens.ts OUT_DIR [--max-len 64] [--seed 1]
 *
 * OUT_DIR/train.u16, OUT_DIR/heldout.u16: sequences × maxLen token ids
 * (little-endian uint16, [PAD] = 0 after a short last sequence);
 * OUT_DIR/heldout_masked.u16 + heldout_labels.i32: the first 256 held-out
 * sequences masked as `evaluateMlm` masks them (step 0, the run's seed),
 * labels -1 where nothing is predicted; OUT_DIR/meta.json: counts and ids.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { MlmSet, packSequences } from "../../coordinator/mlm_data.ts";
import { loadCorpus } from "../../shared/data/corpus.ts";
import { loadTokenizer } from "../../shared/text/tokenizer.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    "max-len": { type: "string", default: "64" },
    seed: { type: "string", default: "1" },
    "held-eval": { type: "string", default: "256" },
  },
});
const out = positionals[0];
if (!out) {
  throw new Error("usage: export_tokens.ts OUT_DIR [--max-len 64] [--seed 1] [--held-eval 256]");
}
const maxLen = Number(values["max-len"]);
const seed = Number(values.seed);
const heldEval = Number(values["held-eval"]);

const tokenizer = await loadTokenizer("models/adaptmesh-bert-small");
if (tokenizer.vocabSize > 65536) throw new Error(`${tokenizer.vocabSize} ids do not fit in uint16`);
const corpus = await loadCorpus();
const train = packSequences(corpus.train.map((d) => d.text), tokenizer, maxLen);
const held = packSequences(corpus.heldOut.map((d) => d.text), tokenizer, maxLen);

function flat(seqs: readonly Int32Array[]): Uint16Array {
  const a = new Uint16Array(seqs.length * maxLen); // [PAD] = 0
  seqs.forEach((s, i) => a.set(s, i * maxLen));
  return a;
}
const bytes = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

await Deno.mkdir(out, { recursive: true });
await Deno.writeFile(`${out}/train.u16`, bytes(flat(train)));
await Deno.writeFile(`${out}/heldout.u16`, bytes(flat(held)));

// The held-out evaluation set, masked exactly as the pre-training run's evaluation masks it.
const set = new MlmSet(held, tokenizer, seed);
const n = Math.min(heldEval, set.size);
const batch = set.batch(Array.from({ length: n }, (_, i) => i), 0);
if (batch.seqLen !== maxLen) {
  throw new Error(`held-out batch is ${batch.seqLen} wide, not ${maxLen}`);
}
await Deno.writeFile(`${out}/heldout_masked.u16`, bytes(Uint16Array.from(batch.inputIds)));
await Deno.writeFile(
  `${out}/heldout_labels.i32`,
  bytes(Int32Array.from(batch.labels, (l) => (l < 0 ? -1 : l))),
);
const meta = {
  maxLen,
  seed,
  vocabSize: tokenizer.vocabSize,
  ids: {
    pad: tokenizer.padId,
    cls: tokenizer.clsId,
    sep: tokenizer.sepId,
    mask: tokenizer.maskId,
    unk: tokenizer.unkId,
  },
  train: train.length,
  heldout: held.length,
  heldoutEval: n,
  sizes: corpus.sizes,
};
await Deno.writeTextFile(`${out}/meta.json`, JSON.stringify(meta, null, 1) + "\n");
console.log(JSON.stringify(meta));
