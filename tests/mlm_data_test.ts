import assert from "node:assert/strict";
import { MlmSet, packSequences } from "../coordinator/mlm_data.ts";
import { wordPieceTokenizer } from "../shared/text/tokenizer.ts";
import { TINY_VOCAB } from "./support/fixtures.ts";

const tok = wordPieceTokenizer(TINY_VOCAB);
const id = (w: string) => TINY_VOCAB.indexOf(w);

Deno.test("packing: documents end to end, [SEP] between them, each piece wrapped [CLS] … [SEP]", () => {
  const words = (docs: string[], maxLen: number) =>
    packSequences(docs, tok, maxLen).map((s) => [...s].map((i) => TINY_VOCAB[i]));
  assert.deepEqual(words(["the movie was good", "a plot"], 6), [
    ["[CLS]", "the", "movie", "was", "good", "[SEP]"],
    ["[CLS]", "a", "plot", "[SEP]"],
  ]);
  assert.deepEqual(words(["the movie", "a plot is fun"], 8), [
    ["[CLS]", "the", "movie", "[SEP]", "a", "plot", "is", "[SEP]"],
    ["[CLS]", "fun", "[SEP]"],
  ]);
  assert.equal(packSequences(["the"], tok, 8)[0][1], id("the"));
});

Deno.test("masking: ~15% of real tokens, 80/10/10, labels only there, deterministic per (seed, step, example)", () => {
  const text = Array.from({ length: 400 }, (_, i) => ["good", "bad", "movie", "plot", "the"][i % 5])
    .join(" ");
  const seqs = packSequences(Array(40).fill(text), tok, 128);
  const set = new MlmSet(seqs, tok, 7);
  const idx = Array.from({ length: 64 }, (_, i) => i);
  const b = set.batch(idx, 3);
  let chosen = 0, masked = 0, kept = 0, real = 0;
  for (let k = 0; k < b.labels.length; k++) {
    const orig = seqs[Math.floor(k / b.seqLen)][k % b.seqLen];
    if (b.attentionMask[k]) real++;
    if (b.labels[k] === -100) {
      if (b.attentionMask[k]) assert.equal(b.inputIds[k], orig, "unchosen tokens are unchanged");
      continue;
    }
    chosen++;
    assert.equal(b.labels[k], orig);
    assert.ok(orig !== tok.clsId && orig !== tok.sepId, "specials are never chosen");
    if (b.inputIds[k] === tok.maskId) masked++;
    else if (b.inputIds[k] === orig) kept++;
  }
  const rate = chosen / real;
  assert.ok(rate > 0.13 && rate < 0.17, `chosen rate ${rate}`);
  assert.ok(Math.abs(masked / chosen - 0.8) < 0.03, `mask share ${masked / chosen}`);
  assert.ok(kept / chosen > 0.07 && kept / chosen < 0.14, `kept share ${kept / chosen}`);
  assert.deepEqual(set.batch(idx, 3), b);
  assert.notDeepEqual(set.batch(idx, 4).inputIds, b.inputIds);
});

Deno.test("unigram prior: log of add-½ smoothed counts of the predictable tokens, specials left out", () => {
  // "the" ×3, "movie" ×1 in the bodies; [CLS]/[SEP] are never predicted and do not count.
  const seqs = packSequences(["the movie the", "the"], tok, 16);
  const prior = new MlmSet(seqs, tok, 1).unigramLogPrior(TINY_VOCAB.length);
  const V = TINY_VOCAB.length, total = 4 + 0.5 * V;
  assert.ok(Math.abs(prior[id("the")] - Math.log(3.5 / total)) < 1e-6);
  assert.ok(Math.abs(prior[id("movie")] - Math.log(1.5 / total)) < 1e-6);
  assert.ok(Math.abs(prior[id("plot")] - Math.log(0.5 / total)) < 1e-6);
  assert.ok(Math.abs(prior[tok.clsId] - Math.log(0.5 / total)) < 1e-6);
  const mass = prior.reduce((s, l) => s + Math.exp(l), 0);
  assert.ok(Math.abs(mass - 1) < 1e-5, `probabilities sum to ${mass}`);
});

Deno.test("a batch is padded to a multiple of 8 but never past the packing length", () => {
  const text = Array.from({ length: 60 }, (_, i) => ["good", "bad", "movie"][i % 3]).join(" ");
  const seqs = packSequences([text], tok, 13); // 13 = a model's whole length, not a multiple of 8
  assert.ok(seqs.length > 2 && seqs[0].length === 13);
  const set = new MlmSet(seqs, tok, 1);
  assert.equal(set.batch([0, 1], 0).seqLen, 13, "full sequences: the packing length, not 16");
  const last = seqs.length - 1;
  if (seqs[last].length <= 8) assert.equal(set.batch([last], 0).seqLen, 8);
});
