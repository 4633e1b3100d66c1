import assert from "node:assert/strict";
import { glueTaskName, loadGlueTask, readTsvRows } from "../shared/data/glue.ts";

/** Writes `files` (name → rows of fields) into a fresh temp folder. */
async function folder(files: Record<string, string[][]>): Promise<string> {
  const dir = await Deno.makeTempDir();
  for (const [name, rows] of Object.entries(files)) {
    await Deno.writeTextFile(`${dir}/${name}`, rows.map((r) => r.join("\t") + "\n").join(""));
  }
  return dir;
}

async function withFolder(
  files: Record<string, string[][]>,
  fn: (dir: string) => void | Promise<void>,
): Promise<void> {
  const dir = await folder(files);
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("glue: task names and folder spellings", () => {
  assert.equal(glueTaskName("SST-2"), "sst2");
  assert.equal(glueTaskName("STS-B"), "stsb");
  assert.equal(glueTaskName("MNLI"), "mnli");
  assert.equal(glueTaskName("CoLA"), "cola");
  assert.equal(glueTaskName("qqp"), "qqp");
  assert.equal(glueTaskName("imdb"), undefined);
  // Each task's label strings are checked where its folder is loaded (labelNames) below.
  assert.throws(
    () => loadGlueTask("sst3", "/tmp"),
    /unknown GLUE task "sst3"; valid: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli/,
  );
});

Deno.test("glue: TSV has no quoting", () => {
  const rows = readTsvRows('\uFEFFa\t"b\n"c\td"\r\n\n e \t\r');
  assert.deepEqual(rows, [
    { line: 1, fields: ["a", '"b'] },
    { line: 2, fields: ['"c', 'd"'] },
    { line: 4, fields: [" e ", ""] },
  ]);
});

Deno.test("glue: CoLA (no header, sentence in column 3)", async () => {
  await withFolder({
    "train.tsv": [
      ["gj04", "1", "", "Our friends won't buy this analysis, let alone the next one we propose."],
      ["gj04", "0", "*", 'He said "go" .'],
    ],
    "dev.tsv": [["cj99", "1", "", "It rained."]],
  }, (dir) => {
    const t = loadGlueTask("CoLA", dir);
    assert.equal(t.name, "cola");
    assert.equal(t.numLabels, 2);
    assert.deepEqual(t.labelNames, ["0", "1"]);
    assert.deepEqual(t.metricNames, ["matthews_correlation"]);
    assert.deepEqual(t.train, [
      { text: "Our friends won't buy this analysis, let alone the next one we propose.", label: 1 },
      { text: 'He said "go" .', label: 0 },
    ]);
    assert.deepEqual(t.eval, [{ text: "It rained.", label: 1 }]);
    assert.deepEqual(t.extraEval, []);
  });
});

Deno.test("glue: SST-2 with a stray quote that CSV would swallow", async () => {
  await withFolder({
    "train.tsv": [
      ["sentence", "label"],
      ['" a film that opens with a quote ', "1"],
      ["plain and dull ", "0"],
      ['it \'s "fine"', "1"],
    ],
    "dev.tsv": [["sentence", "label"], ["great", "1"]],
  }, (dir) => {
    const t = loadGlueTask("SST-2", dir);
    assert.equal(t.name, "sst2");
    assert.deepEqual(t.metricNames, ["accuracy"]);
    assert.deepEqual(t.train, [
      { text: '" a film that opens with a quote ', label: 1 },
      { text: "plain and dull ", label: 0 },
      { text: 'it \'s "fine"', label: 1 },
    ]);
    assert.equal(t.eval.length, 1);
  });
});

Deno.test("glue: MRPC (quality first, strings in 3 and 4)", async () => {
  const header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"];
  await withFolder({
    "train.tsv": [
      header,
      [
        "1",
        "702876",
        "702977",
        'He called " the witness " liar .',
        'Referring to " the witness " .',
      ],
      ["0", "2108705", "2108831", "Yucaipa owned it .", "Yucaipa bought it ."],
    ],
    "dev.tsv": [header, ["1", "1", "2", "a", "b"]],
  }, (dir) => {
    const t = loadGlueTask("mrpc", dir);
    assert.deepEqual(t.metricNames, ["accuracy", "f1"]);
    assert.deepEqual(t.train, [
      {
        text: 'He called " the witness " liar .',
        textPair: 'Referring to " the witness " .',
        label: 1,
      },
      { text: "Yucaipa owned it .", textPair: "Yucaipa bought it .", label: 0 },
    ]);
  });
});

Deno.test("glue: STS-B is regression (columns 7, 8, score last)", async () => {
  const header = ["index", "genre", "filename", "year", "old_index", "source1", "source2"]
    .concat(["sentence1", "sentence2", "score"]);
  const row = (
    s1: string,
    s2: string,
    score: string,
  ) => ["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", s1, s2, score];
  await withFolder({
    "train.tsv": [
      header,
      row("A plane is taking off.", "An air plane is taking off.", "5.000"),
      row("A man plays a flute.", 'A man says "hi".', "0.500"),
    ],
    "dev.tsv": [header, row("a", "b", "3.2")],
  }, async (dir) => {
    const t = loadGlueTask("STS-B", dir);
    assert.equal(t.name, "stsb");
    assert.equal(t.numLabels, 1);
    assert.equal(t.labelNames, null);
    assert.deepEqual(t.metricNames, ["pearson", "spearmanr"]);
    assert.deepEqual(t.train, [
      { text: "A plane is taking off.", textPair: "An air plane is taking off.", label: 5 },
      { text: "A man plays a flute.", textPair: 'A man says "hi".', label: 0.5 },
    ]);
    assert.deepEqual(t.eval[0].label, 3.2);
    await Deno.writeTextFile(
      `${dir}/dev.tsv`,
      [header, row("a", "b", "n/a")].map((r) => r.join("\t")).join("\n"),
    );
    assert.throws(() => loadGlueTask("stsb", dir), /dev\.tsv:2: score "n\/a" is not a number/);
  });
});

Deno.test("glue: QQP skips malformed lines as the reference does", async () => {
  const header = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"];
  await withFolder({
    "train.tsv": [
      header,
      ["1", "3", "4", "How do I learn?", 'What is "learning"?', "0"],
      ["2", "5", "6", "A question split by a newline"],
      ["and the rest", "1"],
      ["3", "7", "8", "Why?", "Why not?", "1"],
    ],
    "dev.tsv": [header, ["9", "1", "2", "a", "b", "1"]],
  }, (dir) => {
    const t = loadGlueTask("qqp", dir);
    assert.deepEqual(t.metricNames, ["accuracy", "f1"]);
    assert.deepEqual(t.train, [
      { text: "How do I learn?", textPair: 'What is "learning"?', label: 0 },
      { text: "Why?", textPair: "Why not?", label: 1 },
    ]);
  });
});

const MNLI_TRAIN_HEADER = [
  "index",
  "promptID",
  "pairID",
  "genre",
  "sentence1_binary_parse",
  "sentence2_binary_parse",
  "sentence1_parse",
  "sentence2_parse",
  "sentence1",
  "sentence2",
  "label1",
  "gold_label",
];
const mnliTrain = (
  s1: string,
  s2: string,
  gold: string,
) => ["0", "1", "1e", "gov", "( x )", "( y )", "(ROOT x)", "(ROOT y)", s1, s2, gold, gold];
// Dev files have label1..label5 before gold_label.
const mnliDev = (s1: string, s2: string, gold: string) =>
  ["0", "1", "1e", "gov", "( x )", "( y )", "(ROOT x)", "(ROOT y)", s1, s2]
    .concat(["neutral", "neutral", gold, gold, gold, gold]);
const MNLI_FILES = {
  "train.tsv": [
    MNLI_TRAIN_HEADER,
    mnliTrain(
      "Conceptually cream skimming has two dimensions.",
      "Product and geography.",
      "neutral",
    ),
    mnliTrain('He said "yes".', "He agreed.", "entailment"),
    mnliTrain("It is hot.", "It is cold.", "contradiction"),
  ],
  "dev_matched.tsv": [MNLI_TRAIN_HEADER, mnliDev("m1", "m2", "entailment")],
  "dev_mismatched.tsv": [MNLI_TRAIN_HEADER, mnliDev("x1", "x2", "contradiction")],
};

Deno.test("glue: MNLI (matched eval, mismatched extra eval, canonical labels)", async () => {
  await withFolder(MNLI_FILES, (dir) => {
    const t = loadGlueTask("MNLI", dir);
    assert.equal(t.numLabels, 3);
    assert.deepEqual(t.labelNames, ["contradiction", "entailment", "neutral"]);
    assert.deepEqual(t.train.map((e) => e.label), [2, 1, 0]);
    assert.deepEqual(t.train[1], { text: 'He said "yes".', textPair: "He agreed.", label: 1 });
    assert.deepEqual(t.eval, [{ text: "m1", textPair: "m2", label: 1 }]);
    assert.equal(t.extraEval.length, 1);
    assert.equal(t.extraEval[0].name, "mismatched");
    assert.deepEqual(t.extraEval[0].examples, [{ text: "x1", textPair: "x2", label: 0 }]);
  });
});

Deno.test("glue: a checkpoint's label2id is used only when it names exactly the labels", async () => {
  await withFolder(MNLI_FILES, (dir) => {
    const own = loadGlueTask("mnli", dir, { contradiction: 0, neutral: 1, entailment: 2 });
    assert.deepEqual(own.labelNames, ["contradiction", "neutral", "entailment"]);
    assert.deepEqual(own.train.map((e) => e.label), [1, 2, 0]);
    const generic = loadGlueTask("mnli", dir, { LABEL_0: 0, LABEL_1: 1, LABEL_2: 2 });
    assert.deepEqual(generic.labelNames, ["contradiction", "entailment", "neutral"]);
    const partial = loadGlueTask("mnli", dir, { contradiction: 0, entailment: 1 });
    assert.deepEqual(partial.labelNames, ["contradiction", "entailment", "neutral"]);
  });
});

Deno.test("glue: QNLI, RTE, WNLI (index, text, pair, label last)", async () => {
  await withFolder({
    "train.tsv": [
      ["index", "question", "sentence", "label"],
      ["0", "What came first?", 'The "egg".', "not_entailment"],
      ["1", "Who?", "Him.", "entailment"],
    ],
    "dev.tsv": [["index", "question", "sentence", "label"], ["0", "a", "b", "entailment"]],
  }, (dir) => {
    for (const name of ["qnli", "rte"]) {
      const t = loadGlueTask(name, dir);
      assert.deepEqual(t.labelNames, ["entailment", "not_entailment"]);
      assert.deepEqual(t.train, [
        { text: "What came first?", textPair: 'The "egg".', label: 1 },
        { text: "Who?", textPair: "Him.", label: 0 },
      ]);
    }
    assert.throws(() => loadGlueTask("wnli", dir), /train\.tsv:2: unknown label "not_entailment"/);
  });
  await withFolder({
    "train.tsv": [["index", "sentence1", "sentence2", "label"], ["0", "I put it.", "It fit.", "1"]],
    "dev.tsv": [["index", "sentence1", "sentence2", "label"], ["0", "a", "b", "0"]],
  }, (dir) => {
    const t = loadGlueTask("WNLI", dir);
    assert.deepEqual(t.train, [{ text: "I put it.", textPair: "It fit.", label: 1 }]);
    assert.deepEqual(t.eval, [{ text: "a", textPair: "b", label: 0 }]);
  });
});

Deno.test("glue: missing files and short rows are clear errors", async () => {
  await withFolder({ "train.tsv": [["sentence", "label"], ["ok", "1"]] }, (dir) => {
    assert.throws(() => loadGlueTask("sst2", dir), /GLUE sst2: .*dev\.tsv not found/);
  });
  await withFolder({
    "train.tsv": [["index", "sentence1", "sentence2", "label"], ["0", "only two"]],
    "dev.tsv": [["index", "sentence1", "sentence2", "label"]],
  }, (dir) => {
    assert.throws(
      () => loadGlueTask("rte", dir),
      /train\.tsv:2: expected at least 4 tab-separated columns, got 2/,
    );
  });
});
