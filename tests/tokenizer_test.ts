import assert from "node:assert/strict";
import {
  loadTokenizer,
  type TextTokenizer,
  tokenizerFromJson,
  truncateLongestFirst,
  wordPieceTokenizer,
  wordPieceTokenizerJson,
} from "../shared/text/tokenizer.ts";
import { bertBaseUncasedVocab, vocabToTxt } from "../shared/text/vocab.ts";
import { writeRobertaTokenizer } from "../shared/text/roberta_vocab.ts";

const VOCAB = bertBaseUncasedVocab();
const BERT: TextTokenizer = await loadTokenizer();

/**
 * Expected pieces written by hand as [token, id] from the bert-base-uncased
 * vocab.txt; every pair is checked against the vocab array itself, so a wrong
 * hand-written id fails here rather than being "confirmed" by the tokenizer.
 */
function ids(...pieces: [string, number][]): number[] {
  for (const [token, id] of pieces) assert.equal(VOCAB[id], token, `vocab id ${id}`);
  return pieces.map(([, id]) => id);
}

/** The [token, id] pieces of space-separated `tokens`, with their ids in order (for {@link ids}). */
function words(tokens: string, wordIds: number[]): [string, number][] {
  const t = tokens.split(" ");
  assert.equal(t.length, wordIds.length, `${tokens}: ${wordIds.length} ids`);
  return t.map((token, i) => [token, wordIds[i]]);
}

const CLS: [string, number] = ["[CLS]", 101];
const SEP: [string, number] = ["[SEP]", 102];

/** [CLS] a [SEP] b [SEP], checked by {@link ids}. */
function pairIds(a: [string, number][], b: [string, number][]): number[] {
  return ids(CLS, ...a, SEP, ...b, SEP);
}
const UNK: [string, number] = ["[UNK]", 100];

function encodeIds(text: string, pair?: string, maxLen = 512): number[] {
  return BERT.encode(text, pair, maxLen).inputIds;
}

Deno.test("bert: special ids and sizes", () => {
  assert.equal(BERT.kind, "wordpiece");
  assert.equal(BERT.vocabSize, 30522);
  assert.deepEqual(
    [BERT.padId, BERT.unkId, BERT.clsId, BERT.sepId, BERT.maskId],
    ids(["[PAD]", 0], UNK, CLS, SEP, ["[MASK]", 103]),
  );
  assert.equal(BERT.idToToken(1996), "the");
  assert.equal(BERT.idToToken(2015), "##s");
  assert.throws(() => BERT.idToToken(30522), RangeError);
  assert.throws(() => BERT.idToToken(-1), RangeError);
});

Deno.test("bert: ordinary text and punctuation", () => {
  assert.deepEqual(
    encodeIds("Hello, world!"),
    ids(CLS, ["hello", 7592], [",", 1010], ["world", 2088], ["!", 999], SEP),
  );
  assert.deepEqual(
    BERT.tokenize("don't stop--now?"),
    ids(
      ["don", 2123],
      ["'", 1005],
      ["t", 1056],
      ["stop", 2644],
      ["-", 1011],
      ["-", 1011],
      ["now", 2085],
      ["?", 1029],
    ),
  );
  // Unicode punctuation (category P*) splits too.
  assert.deepEqual(
    BERT.tokenize("«hi» ¿qué?"),
    ids(["«", 1077], ["hi", 7632], ["»", 1090], ["¿", 1094], ["que", 10861], ["?", 1029]),
  );
});

Deno.test("bert: greedy longest-match WordPiece", () => {
  // "una" is in this vocab, so longest-match-first takes it before "un"
  // (the BERT README's "un ##aff ##able" comes from a different vocabulary).
  assert.deepEqual(
    BERT.tokenize("unaffable"),
    ids(["una", 14477], ["##ffa", 20961], ["##ble", 3468]),
  );
  assert.deepEqual(
    BERT.tokenize("the cats"),
    ids(["the", 1996], ["cats", 8870]),
  );
});

Deno.test("bert: lower-casing and accent stripping", () => {
  const cafeNaive = ids(["cafe", 7668], ["naive", 15743]);
  assert.deepEqual(BERT.tokenize("Café naïve"), cafeNaive);
  // Already decomposed (combining marks) gives the same.
  assert.deepEqual(BERT.tokenize("Cafe\u0301 nai\u0308ve"), cafeNaive);
  assert.deepEqual(BERT.tokenize("ÉCOLE Über"), ids(["ecole", 12431], ["uber", 19169]));
});

Deno.test("bert: CJK ideographs are split, including above U+FFFF", () => {
  assert.deepEqual(BERT.tokenize("一人"), ids(["一", 1740], ["人", 1756]));
  // U+20000 is a CJK Extension B ideograph: its own word ([UNK] here). The
  // library alone would leave "x𠀀y" as one word, i.e. a single [UNK].
  assert.deepEqual(BERT.tokenize("x\u{20000}y"), ids(["x", 1060], UNK, ["y", 1061]));
  assert.deepEqual(BERT.tokenize("人\u{20000}"), ids(["人", 1756], UNK));
  // U+2F800 (CJK compatibility supplement) is in BERT's list too.
  assert.deepEqual(BERT.tokenize("\u{2F800}x"), ids(UNK, ["x", 1060]));
  // U+2CEB0 (Extension F) is NOT in BERT's list: the word stays whole.
  assert.deepEqual(BERT.tokenize("x\u{2CEB0}y"), ids(UNK));
});

Deno.test("bert: control, format and unassigned characters are dropped", () => {
  const hello = ids(["hello", 7592]);
  assert.deepEqual(BERT.tokenize("hel\u0000lo"), hello); // NUL
  assert.deepEqual(BERT.tokenize("hel\u0007lo"), hello); // BEL (Cc)
  assert.deepEqual(BERT.tokenize("hel\u200Blo"), hello); // zero-width space (Cf)
  assert.deepEqual(BERT.tokenize("hel\uFFFDlo"), hello); // replacement character
  assert.deepEqual(BERT.tokenize("hel\u0378lo"), hello); // unassigned (Cn)
  assert.deepEqual(BERT.tokenize("hel\u{E0000}lo"), hello); // unassigned (Cn), astral
  assert.deepEqual(BERT.tokenize("hel\uFDD0lo"), hello); // noncharacter (Cn)
  // \t \n \r and Unicode spaces separate words.
  assert.deepEqual(
    BERT.tokenize("a\tb\nc\rd\u00A0e\u3000f\u2028g"),
    ids(
      ["a", 1037],
      ["b", 1038],
      ["c", 1039],
      ["d", 1040],
      ["e", 1041],
      ["f", 1042],
      ["g", 1043],
    ),
  );
  assert.deepEqual(BERT.tokenize(""), []);
  assert.deepEqual(BERT.tokenize(" \t\u0000 "), []);
});

Deno.test("bert: unknown characters and words over 100 characters", () => {
  assert.deepEqual(BERT.tokenize("☃"), ids(UNK));
  // A word that cannot be fully pieced together is one [UNK].
  assert.deepEqual(
    BERT.tokenize("hello☃ world"),
    ids(UNK, ["world", 2088]),
  );
  assert.deepEqual(BERT.tokenize("a".repeat(101)), ids(UNK));
  assert.deepEqual(BERT.tokenize("é".repeat(101)), ids(UNK));
  // 100 characters is still tokenized: aaa + 48 × ##aa + ##a.
  const hundred = BERT.tokenize("a".repeat(100));
  assert.deepEqual(
    hundred,
    ids(["aaa", 13360], ...new Array<[string, number]>(48).fill(["##aa", 11057]), ["##a", 2050]),
  );
});

Deno.test("bert: literal special tokens map to their ids (case-sensitive)", () => {
  assert.deepEqual(
    encodeIds("a [SEP] b"),
    ids(CLS, ["a", 1037], SEP, ["b", 1038], SEP),
  );
  assert.deepEqual(BERT.tokenize("[MASK]x"), ids(["[MASK]", 103], ["x", 1060]));
  assert.deepEqual(BERT.tokenize("[sep]"), ids(["[", 1031], ["sep", 19802], ["]", 1033]));
});

Deno.test("bert: pairs, token types, empty pair", () => {
  const e = BERT.encode("The quick brown fox", "jumps over the lazy dog", 512);
  assert.deepEqual(
    e.inputIds,
    pairIds(
      words("the quick brown fox", [1996, 4248, 2829, 4419]),
      words("jumps over the lazy dog", [14523, 2058, 1996, 13971, 3899]),
    ),
  );
  assert.deepEqual(e.tokenTypeIds, [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]);
  // An empty pair is still a pair: [CLS] a [SEP] [SEP].
  const empty = BERT.encode("hello", "", 512);
  assert.deepEqual(empty.inputIds, ids(CLS, ["hello", 7592], SEP, SEP));
  assert.deepEqual(empty.tokenTypeIds, [0, 0, 0, 1]);
  assert.deepEqual(BERT.encode("", undefined, 512), { inputIds: [101, 102], tokenTypeIds: [0, 0] });
});

Deno.test("bert: longest-first truncation", () => {
  // 6 + 4 tokens into 9 - 3 = 6: (5,4) (4,4) (4,3) (3,3).
  const e = BERT.encode("one two three four five six", "a b c d", 9);
  assert.deepEqual(
    e.inputIds,
    pairIds(words("one two three", [2028, 2048, 2093]), words("a b c", [1037, 1038, 1039])),
  );
  assert.deepEqual(e.tokenTypeIds, [0, 0, 0, 0, 0, 1, 1, 1, 1]);
  // Tie with an odd budget: 4 + 4 into 7 → the second loses the extra token.
  const tie = BERT.encode("a b c d", "e f g h", 10).inputIds;
  assert.equal(tie.length, 10);
  assert.deepEqual(
    tie.slice(0, 6),
    ids(CLS, ["a", 1037], ["b", 1038], ["c", 1039], ["d", 1040], SEP),
  );
  assert.deepEqual(tie.slice(6), ids(["e", 1041], ["f", 1042], ["g", 1043], SEP));
  // Single sequence: cut from the end; exactly fitting input untouched.
  assert.deepEqual(
    encodeIds("one two three four five six", undefined, 5),
    ids(CLS, ["one", 2028], ["two", 2048], ["three", 2093], SEP),
  );
  assert.equal(encodeIds("one two three", undefined, 5).length, 5);
  // Long pair: every length ends at most maxLen, exactly maxLen when truncated.
  const long = "word ".repeat(300);
  for (const maxLen of [3, 4, 64, 128, 511, 512]) {
    assert.equal(BERT.encode(long, long, maxLen).inputIds.length, maxLen);
  }
  assert.equal(BERT.encode(long, undefined, 128).inputIds.length, 128);
  assert.throws(() => BERT.encode("a", "b", 2), RangeError);
  assert.throws(() => BERT.encode("a", undefined, 1), RangeError);
});

Deno.test("truncateLongestFirst: counts by hand", () => {
  const a = [1, 2, 3, 4, 5, 6, 7, 8], b = [11, 12, 13];
  assert.deepEqual(truncateLongestFirst(a, b, 7), [[1, 2, 3, 4], [11, 12, 13]]);
  assert.deepEqual(truncateLongestFirst(a, b, 5), [[1, 2, 3], [11, 12]]);
  // Tie at (3, 3): the second list loses the last token.
  assert.deepEqual(truncateLongestFirst(b, a, 5), [[11, 12, 13], [1, 2]]);
  assert.deepEqual(truncateLongestFirst([1, 2], [3, 4], 3), [[1, 2], [3]]);
  assert.deepEqual(truncateLongestFirst(a, b, 11), [a, b]);
  assert.deepEqual(truncateLongestFirst(a, undefined, 3), [[1, 2, 3], undefined]);
  assert.deepEqual(truncateLongestFirst(a, b, 0), [[], []]);
});

Deno.test("wordPieceTokenizerJson: the reference BertTokenizerFast layout", () => {
  const json = wordPieceTokenizerJson(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "x"]);
  assert.deepEqual(json.normalizer, {
    type: "BertNormalizer",
    clean_text: true,
    handle_chinese_chars: true,
    strip_accents: null,
    lowercase: true,
  });
  assert.deepEqual(json.pre_tokenizer, { type: "BertPreTokenizer" });
  const model = json.model as Record<string, unknown>;
  assert.equal(model.type, "WordPiece");
  assert.equal(model.continuing_subword_prefix, "##");
  assert.equal(model.max_input_chars_per_word, 100);
  assert.deepEqual(model.vocab, {
    "[PAD]": 0,
    "[UNK]": 1,
    "[CLS]": 2,
    "[SEP]": 3,
    "[MASK]": 4,
    x: 5,
  });
  const added = json.added_tokens as { content: string; id: number; special: boolean }[];
  assert.deepEqual(added.map((t) => [t.content, t.id, t.special]), [
    ["[PAD]", 0, true],
    ["[UNK]", 1, true],
    ["[CLS]", 2, true],
    ["[SEP]", 3, true],
    ["[MASK]", 4, true],
  ]);
  assert.equal((json.post_processor as { type: string }).type, "TemplateProcessing");
  assert.throws(() => wordPieceTokenizerJson(["[PAD]", "[UNK]", "[CLS]", "[SEP]"]), /\[MASK\]/);
});

const TINY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "Hello", "##s", "!"];

Deno.test("wordPieceTokenizer: cased option and a tiny vocab", () => {
  const uncased = wordPieceTokenizer(TINY);
  assert.deepEqual(uncased.tokenize("Hello worlds!"), [5, 6, 8, 9]);
  const cased = wordPieceTokenizer(TINY, { lowercase: false });
  assert.deepEqual(cased.tokenize("Hello hello Héllo"), [7, 5, 1]);
  assert.equal(cased.vocabSize, 10);
  // A token named like an Object.prototype member is an ordinary token.
  const odd = wordPieceTokenizer([...TINY, "constructor", "__proto__"]);
  assert.deepEqual(odd.tokenize("constructor"), [10]);
  assert.deepEqual(odd.tokenize("toString"), [1]);
});

Deno.test("loadTokenizer: vocab.txt, tokenizer_config.json, tokenizer.json, errors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/vocab.txt`, vocabToTxt(TINY));
    const fromTxt = await loadTokenizer(dir);
    assert.deepEqual(fromTxt.encode("Hello world", undefined, 16).inputIds, [2, 5, 6, 3]);
    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, '{"do_lower_case": false}');
    assert.deepEqual((await loadTokenizer(dir)).tokenize("Hello"), [7]);
    // tokenizer.json wins over vocab.txt.
    const other = TINY.slice();
    [other[5], other[6]] = [other[6], other[5]];
    await Deno.writeTextFile(
      `${dir}/tokenizer.json`,
      JSON.stringify(wordPieceTokenizerJson(other)),
    );
    assert.deepEqual((await loadTokenizer(dir)).tokenize("hello world"), [6, 5]);
    await Deno.writeTextFile(`${dir}/tokenizer.json`, "{not json");
    await assert.rejects(loadTokenizer(dir), /tokenizer\.json/);
    const empty = await Deno.makeTempDir({ dir });
    await assert.rejects(
      loadTokenizer(empty),
      /no tokenizer\.json, vocab\.txt, or vocab\.json \+ merges\.txt/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assert.throws(() => tokenizerFromJson({ model: { type: "Unigram", vocab: [] } }), /Unigram/);
});

/**
 * A tiny byte-level BPE vocabulary in the RoBERTa layout, as the `vocab.json`
 * and `merges.txt` a RoBERTa-style folder holds: "Ġ" is the byte-level form
 * of a space; merges build "hello" and "Ġworld".
 */
async function writeTinyRoberta(dir: string): Promise<void> {
  const tokens = ["<s>", "<pad>", "</s>", "<unk>", "h", "e", "l", "o", "Ġ", "w", "r", "d", "!"]
    .concat(["he", "ll", "hell", "hello", "Ġw", "or", "Ġwor", "Ġworl", "Ġworld", "<mask>"]);
  const vocab = Object.fromEntries(tokens.map((t, id) => [t, id]));
  const merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d"];
  await Deno.writeTextFile(`${dir}/vocab.json`, JSON.stringify(vocab));
  await Deno.writeTextFile(`${dir}/merges.txt`, ["#version: 0.2", ...merges].join("\n") + "\n");
}

/** `fn` on a fresh temporary folder, removed afterwards. */
async function inTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "roberta_tok_" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** [cls, pad, sep, unk, mask, vocabSize]: RoBERTa's layout puts them at 0, 1, 2, 3, last, last + 1. */
function specialIds(tok: TextTokenizer): number[] {
  return [tok.clsId, tok.padId, tok.sepId, tok.unkId, tok.maskId, tok.vocabSize];
}

Deno.test("roberta: byte-level BPE from vocab.json and merges.txt", async () => {
  const tok = await inTempDir(async (dir) => {
    await writeTinyRoberta(dir);
    return await loadTokenizer(dir);
  });
  assert.equal(tok.kind, "bpe");
  assert.deepEqual(specialIds(tok), [0, 1, 2, 3, 22, 23]);
  assert.deepEqual(tok.tokenize("hello world!"), [16, 21, 12]);
  assert.deepEqual(tok.tokenize("hello"), [16]);
  // No prefix space: " world" and "world" differ.
  assert.deepEqual(tok.tokenize("world"), [9, 18, 6, 11]);
  const single = tok.encode("hello world!", undefined, 512);
  assert.deepEqual(single, { inputIds: [0, 16, 21, 12, 2], tokenTypeIds: [0, 0, 0, 0, 0] });
  // <s> a </s></s> b </s>, all token type 0.
  const pair = tok.encode("hello", "hello world", 512);
  assert.deepEqual(pair.inputIds, [0, 16, 2, 2, 16, 21, 2]);
  assert.deepEqual(pair.tokenTypeIds, [0, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(tok.encode("hello", "", 512).inputIds, [0, 16, 2, 2, 2]);
  // 4 specials; budget 7 - 4 = 3 for 1 + 3 tokens → (1, 2).
  assert.deepEqual(tok.encode("hello", "hello world!", 7).inputIds, [0, 16, 2, 2, 16, 21, 2]);
  assert.throws(() => tok.encode("a", "b", 3), RangeError);
  assert.deepEqual(tok.tokenize("hello<mask>"), [16, 22]);
  assert.equal(tok.idToToken(21), "Ġworld");
});

Deno.test("roberta-base/large tokenizer: known token ids of real strings", async () => {
  // RoBERTa's real tokenizer files: tokenizer.json, vocab.json, merges.txt.
  const [tok, fromVocabJson] = await inTempDir(async (dir) => {
    await writeRobertaTokenizer(dir);
    const tok = await loadTokenizer(dir);
    await Deno.remove(`${dir}/tokenizer.json`);
    return [tok, await loadTokenizer(dir)]; // vocab.json + merges.txt, as RobertaTokenizer reads
  });
  assert.equal(tok.kind, "bpe");
  assert.deepEqual(specialIds(tok), [0, 1, 2, 3, 50264, 50265]);
  // The ids roberta-base / roberta-large give (transformers' RobertaTokenizer docs).
  const single = (t: string) => tok.encode(t, undefined, 512).inputIds;
  assert.deepEqual(single("Hello world"), [0, 31414, 232, 2]);
  assert.deepEqual(single(" Hello world"), [0, 20920, 232, 2]);
  assert.deepEqual(single("Hello world!"), [0, 31414, 232, 328, 2]);
  assert.deepEqual(tok.encode("Hello world", undefined, 512).tokenTypeIds, [0, 0, 0, 0]);
  // <mask> is a special token that swallows the space before it (lstrip).
  assert.deepEqual(single("Hello <mask>!"), [0, 31414, 50264, 328, 2]);
  // <s> A </s></s> B </s>.
  const pair = tok.encode("Hello", "Hello world", 512).inputIds;
  assert.deepEqual(pair, [0, 31414, 2, 2, 31414, 232, 2]);
  assert.deepEqual(
    [4, 5, 6, 50260, 50261, 50263].map((id) => tok.idToToken(id)),
    [".", "Ġthe", ",", "<|endoftext|>", "madeupword0000", "madeupword0002"],
  );
  // Byte-level: any text maps to known ids, never <unk>.
  const ids = tok.tokenize("naïve café 日本語 🤗\ttabs");
  assert.ok(ids.length > 0 && ids.every((id) => id > 3 && id < 50265), `${ids}`);
  for (const t of ["Hello world!", " Hello world", "naïve café 日本語 🤗", "It's 2024.\n"]) {
    assert.deepEqual(fromVocabJson.encode(t, undefined, 512), tok.encode(t, undefined, 512), t);
  }
  assert.equal(fromVocabJson.maskId, 50264);
});
