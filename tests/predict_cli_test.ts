/** `deno task predict` and `deno task evaluate` as subprocesses on a tiny HF folder. */
import assert from "node:assert/strict";
import { loadCheckpoint, saveCheckpoint } from "../shared/io/checkpoint.ts";
import { loadTokenizer } from "../shared/text/tokenizer.ts";
import { EncodedSet } from "../shared/data/batching.ts";
import { referenceLogits } from "./support/reference_bert.ts";
import { tinyModelDir, tinyTaskDir } from "./support/fixtures.ts";
import { runDeno } from "./support/processes.ts";
import { tinyRobertaDir } from "./support/roberta_fixture.ts";

/** One line of predict's output. */
interface Prediction {
  logits: number[];
  label: string;
}

/** Writes `rows` to `input` (JSONL), runs `deno task predict` on them: one parsed line per row. */
async function predict(
  model: string,
  input: string,
  rows: readonly { text: string; text_pair?: string }[],
): Promise<Prediction[]> {
  await Deno.writeTextFile(input, rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
  const r = await runDeno("shared/cli/predict.ts", ["--model", model, "--input", input]);
  assert.equal(r.code, 0, r.stderr);
  const lines: Prediction[] = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(lines.length, rows.length);
  return lines;
}

Deno.test("predict prints the logits of an independent float64 BERT for each input line", async () => {
  const model = await tinyModelDir(5);
  const input = await Deno.makeTempFile({ suffix: ".jsonl" });
  const rows = [{ text: "the movie was great fun" }, {
    text: "boring dull plot",
    text_pair: "the actor is not good",
  }];
  const lines = await predict(model, input, rows);
  const ck = await loadCheckpoint(model);
  const set = new EncodedSet(
    rows.map((x) => ({ text: x.text, textPair: x.text_pair, label: 0 })),
    await loadTokenizer(model),
    512,
  );
  for (let i = 0; i < 2; i++) {
    const expected = referenceLogits(ck.config, ck.layout, ck.weights, set.batch([i]));
    assert.equal(lines[i].logits.length, 2);
    for (let c = 0; c < 2; c++) {
      assert.ok(
        Math.abs(lines[i].logits[c] - expected[c]) < 1e-4,
        `${lines[i].logits} vs ${expected}`,
      );
    }
    assert.equal(lines[i].label, `LABEL_${expected[0] > expected[1] ? 0 : 1}`);
  }
});

Deno.test("evaluate ends with one JSON line of metrics and the example count", async () => {
  const model = await tinyModelDir(5);
  const task = await tinyTaskDir(8, 10);
  const r = await runDeno("shared/cli/evaluate.ts", ["--model", model, "--eval", task.eval]);
  assert.equal(r.code, 0, r.stderr);
  const last = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
  assert.equal(last.examples, 10);
  assert.ok(last.accuracy >= 0 && last.accuracy <= 1);
  const bad = await runDeno("shared/cli/evaluate.ts", ["--model", model]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--task NAME.*--eval FILE/);
});

Deno.test("predict on a sharded BF16 RoBERTa with the real tokenizer.json matches float64", async () => {
  const model = await tinyRobertaDir({ dtype: "BF16" });
  const input = await Deno.makeTempFile({ suffix: ".jsonl" });
  try {
    const files = [...Deno.readDirSync(model)].map((e) => e.name).sort();
    assert.ok(files.includes("model.safetensors.index.json") && files.includes("tokenizer.json"));
    assert.ok(!files.includes("model.safetensors"), `${files}`);
    const rows = [
      { text: "Hello world!" },
      { text: "The movie was great fun, naïve café 🤗", text_pair: "but far too long." },
    ];
    const lines = await predict(model, input, rows);
    const ck = await loadCheckpoint(model);
    const tok = await loadTokenizer(model);
    assert.deepEqual(tok.encode(rows[0].text, undefined, 512).inputIds, [0, 31414, 232, 328, 2]);
    const set = new EncodedSet(
      rows.map((x) => ({ text: x.text, textPair: x.text_pair, label: 0 })),
      tok,
      512,
    );
    for (let i = 0; i < 2; i++) {
      const expected = referenceLogits(ck.config, ck.layout, ck.weights, set.batch([i]));
      for (let c = 0; c < 2; c++) {
        assert.ok(
          Math.abs(lines[i].logits[c] - expected[c]) < 1e-4,
          `${lines[i].logits} vs ${expected}`,
        );
      }
    }
  } finally {
    await Deno.remove(model, { recursive: true });
    await Deno.remove(input);
  }
});

Deno.test("predict prints softmax probabilities beside the logits, and warns on stderr about an untrained head", async () => {
  const model = await tinyModelDir(5);
  const input = await Deno.makeTempFile({ suffix: ".jsonl" });
  await Deno.writeTextFile(input, '{"text": "a great film"}\n{"text": "dull"}\n');
  const r = await runDeno("shared/cli/predict.ts", ["--model", model, "--input", input]);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /warning/);
  for (const line of r.stdout.trim().split("\n")) {
    const { logits, probabilities } = JSON.parse(line) as Prediction & { probabilities: number[] };
    const exps = logits.map((l) => Math.exp(l));
    const sum = exps.reduce((a, b) => a + b, 0);
    assert.equal(probabilities.length, 2);
    probabilities.forEach((p, c) => assert.ok(Math.abs(p - exps[c] / sum) < 1e-12, line));
  }
  // The same encoder saved with only an MLM head: predict initialises a classifier fresh.
  const ck = await loadCheckpoint(model);
  const bare = await Deno.makeTempDir();
  await Deno.copyFile(`${model}/vocab.txt`, `${bare}/vocab.txt`);
  const mlm = await loadCheckpoint(model, { objective: "mlm" });
  await saveCheckpoint(bare, { config: ck.config, weights: mlm.weights, objective: "mlm" });
  const fresh = await runDeno("shared/cli/predict.ts", ["--model", bare, "--input", input]);
  assert.equal(fresh.code, 0, fresh.stderr);
  assert.match(fresh.stderr, /warning: .* has no trained classifier head/);
  assert.equal(fresh.stdout.trim().split("\n").length, 2);
});

Deno.test("predict on a regression checkpoint prints no probabilities", async () => {
  const model = await tinyModelDir(5, { num_labels: 1 });
  const input = await Deno.makeTempFile({ suffix: ".jsonl" });
  await Deno.writeTextFile(input, '{"text": "a great film"}\n');
  const r = await runDeno("shared/cli/predict.ts", ["--model", model, "--input", input]);
  assert.equal(r.code, 0, r.stderr);
  const line = JSON.parse(r.stdout.trim());
  assert.equal(line.logits.length, 1);
  assert.ok(!("probabilities" in line));
});
