import assert from "node:assert/strict";
import {
  buildRobertaVocab,
  parseMerges,
  ROBERTA_VOCAB_SIZE,
  robertaSources,
  robertaTokenizerJson,
  vocabJsonText,
  writeRobertaTokenizer,
} from "../shared/text/roberta_vocab.ts";

const SRC = await robertaSources();

Deno.test("the shipped sources are GPT-2's BPE and fairseq's RoBERTa dictionary", () => {
  // GPT-2's own ids (transformers' GPT2Tokenizer docs: "Hello world" → [15496, 995],
  // " Hello world" → [18435, 995]).
  assert.equal(SRC.encoder["Hello"], 15496);
  assert.equal(SRC.encoder["Ġworld"], 995);
  assert.equal(SRC.encoder["ĠHello"], 18435);
  assert.equal(SRC.encoder["<|endoftext|>"], 50256);
  assert.equal(Object.keys(SRC.encoder).length, 50257);
  const merges = parseMerges(SRC.vocabBpe);
  assert.equal(merges.length, 50000);
  assert.deepEqual(merges.slice(0, 3), ["Ġ t", "Ġ a", "h e"]);
  const dict = SRC.dict.trimEnd().split("\n");
  assert.equal(dict.length, 50260);
  assert.deepEqual(dict.slice(0, 2), ["13 850314647", "262 800385005"]);
  assert.deepEqual(dict.slice(-3), ["madeupword0000 0", "madeupword0001 0", "madeupword0002 0"]);
});

Deno.test("RoBERTa ids are 4 + the dictionary line of the GPT-2 token, <mask> last", () => {
  const vocab = buildRobertaVocab(SRC);
  assert.equal(vocab.size, ROBERTA_VOCAB_SIZE);
  const dict = SRC.dict.trimEnd().split("\n").map((l) => l.split(" ")[0]);
  const roberta = (token: string) => 4 + dict.indexOf(String(SRC.encoder[token]));
  for (const token of ["Hello", "Ġworld", "ĠHello", ".", "Ġthe", "!", "<|endoftext|>"]) {
    assert.equal(vocab.get(token), roberta(token), token);
  }
  // Facts of roberta-base / roberta-large's vocab.json.
  assert.deepEqual(
    ["<s>", "<pad>", "</s>", "<unk>", ".", "Ġthe", "Ġworld", "Hello", "ĠHello", "<mask>"].map(
      (t) => vocab.get(t),
    ),
    [0, 1, 2, 3, 4, 5, 232, 31414, 20920, 50264],
  );
  assert.equal(vocab.get("madeupword0000"), 50261);
  const ids = [...vocab.values()].sort((a, b) => a - b);
  assert.ok(ids.every((id, i) => id === i), "ids are exactly 0..50264");
});

Deno.test("buildRobertaVocab refuses sources of the wrong shape", () => {
  const lines = SRC.dict.trimEnd().split("\n");
  const dict = (edit: (l: string[]) => void) => {
    const copy = lines.slice();
    edit(copy);
    return { ...SRC, dict: copy.join("\n") + "\n" };
  };
  assert.throws(() => buildRobertaVocab(dict((l) => l.pop())), /expected 50260 lines, got 50259/);
  assert.throws(() => buildRobertaVocab(dict((l) => (l[9] = l[8]))), /line 10 repeats/);
  assert.throws(() => buildRobertaVocab(dict((l) => (l[3] = "x 5"))), /line 4 should hold a GPT-2/);
  assert.throws(
    () => buildRobertaVocab(dict((l) => (l[50258] = "madeupword0007 0"))),
    /line 50259 should be madeupword0001/,
  );
  assert.throws(() => buildRobertaVocab(dict((l) => (l[0] = "13"))), /not "SYMBOL COUNT"/);
  const encoder = { ...SRC.encoder };
  delete encoder["Hello"];
  assert.throws(() => buildRobertaVocab({ ...SRC, encoder }), /expected ids 0\.\.50256/);
  assert.throws(
    () => robertaTokenizerJson(new Map([["<s>", 0], ["<pad>", 1]]), []),
    /no <\/s> token/,
  );
  assert.throws(() => parseMerges("#version: 0.2\na b c\n"), /line 2 is not a merge/);
});

Deno.test("writeRobertaTokenizer writes tokenizer.json, vocab.json in id order, merges.txt", async () => {
  const dir = await Deno.makeTempDir({ prefix: "roberta_vocab_" });
  try {
    await writeRobertaTokenizer(dir);
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(names, ["merges.txt", "tokenizer.json", "vocab.json"]);
    const vocabText = await Deno.readTextFile(`${dir}/vocab.json`);
    assert.ok(
      vocabText.startsWith('{"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, ".": 4, "Ġthe": 5'),
    );
    assert.ok(vocabText.endsWith('"madeupword0002": 50263, "<mask>": 50264}'));
    const vocab = buildRobertaVocab(SRC);
    assert.equal(vocabText, vocabJsonText(vocab));
    assert.deepEqual(new Map(Object.entries(JSON.parse(vocabText))), vocab);
    assert.equal(await Deno.readTextFile(`${dir}/merges.txt`), SRC.vocabBpe);
    const json = JSON.parse(await Deno.readTextFile(`${dir}/tokenizer.json`));
    assert.deepEqual(json.pre_tokenizer, {
      type: "ByteLevel",
      add_prefix_space: false,
      trim_offsets: true,
      use_regex: true,
    });
    assert.deepEqual(json.post_processor.cls, ["<s>", 0]);
    assert.deepEqual(json.post_processor.sep, ["</s>", 2]);
    assert.equal(json.post_processor.type, "RobertaProcessing");
    assert.equal(json.model.type, "BPE");
    assert.equal(json.model.merges.length, 50000);
    assert.equal(Object.keys(json.model.vocab).length, ROBERTA_VOCAB_SIZE);
    assert.deepEqual(
      json.added_tokens.map((t: { id: number; content: string }) => [t.id, t.content]),
      [[0, "<s>"], [1, "<pad>"], [2, "</s>"], [3, "<unk>"], [50264, "<mask>"]],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
