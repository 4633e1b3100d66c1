import assert from "node:assert/strict";
import {
  BERT_BASE_UNCASED_VOCAB_SIZE,
  bertBaseUncasedVocab,
  parseVocabTxt,
  vocabToTxt,
} from "../shared/text/vocab.ts";

// Ids of the original bert-base-uncased vocab.txt (known from the released file).
const KNOWN: [string, number][] = [
  ["[PAD]", 0],
  ["[unused0]", 1],
  ["[unused1]", 2],
  ["[unused98]", 99],
  ["[UNK]", 100],
  ["[CLS]", 101],
  ["[SEP]", 102],
  ["[MASK]", 103],
  ["[unused99]", 104],
  ["[unused993]", 998],
  ["!", 999],
  ['"', 1000],
  ["(", 1006],
  [",", 1010],
  ["-", 1011],
  [".", 1012],
  ["a", 1037],
  ["the", 1996],
  ["##s", 2015],
  ["##ing", 2075],
  ["hello", 7592],
  ["world", 2088],
  ["quick", 4248],
  ["brown", 2829],
  ["fox", 4419],
  ["jumps", 14523],
  ["lazy", 13971],
  ["dog", 3899],
  ["##!", 29612],
  ["##～", 30521],
];

Deno.test("bert-base-uncased vocab has the original size and known ids", () => {
  const vocab = bertBaseUncasedVocab();
  assert.equal(vocab.length, BERT_BASE_UNCASED_VOCAB_SIZE);
  assert.equal(vocab.length, 30522);
  for (const [token, id] of KNOWN) assert.equal(vocab[id], token, `id ${id}`);
});

Deno.test("bert-base-uncased vocab: no marker left, unique, ## pieces counted", () => {
  const vocab = bertBaseUncasedVocab();
  assert.equal(vocab.filter((t) => t.includes("▁")).length, 0);
  assert.equal(new Set(vocab).size, vocab.length);
  // 994 [unusedN] + 5 specials are the only bracketed entries.
  assert.equal(vocab.filter((t) => /^\[unused\d+\]$/.test(t)).length, 994);
  // Every single-character word start has a "##" twin for the ASCII letters.
  for (const c of "abcdefghijklmnopqrstuvwxyz") {
    assert.ok(vocab.includes(c) && vocab.includes("##" + c), c);
  }
  assert.ok(vocab.every((t) => t.length > 0 && t !== "##"));
});

Deno.test("bertBaseUncasedVocab returns an independent copy", () => {
  const a = bertBaseUncasedVocab();
  a[1996] = "changed";
  assert.equal(bertBaseUncasedVocab()[1996], "the");
});

Deno.test("vocab.txt round trip", () => {
  const vocab = bertBaseUncasedVocab();
  const txt = vocabToTxt(vocab);
  assert.ok(txt.startsWith("[PAD]\n[unused0]\n[unused1]\n"));
  assert.ok(txt.endsWith("\n##～\n"));
  assert.deepEqual(parseVocabTxt(txt), vocab);
  assert.deepEqual(parseVocabTxt("a\r\nb\r\n##c"), ["a", "b", "##c"]);
  assert.deepEqual(parseVocabTxt(""), []);
  assert.throws(() => vocabToTxt(["a\nb"]), /line break/);
});
