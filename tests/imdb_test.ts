import assert from "node:assert/strict";
import { cleanImdbText, IMDB_EVAL_SIZE, IMDB_SPLIT_SEED, loadImdb } from "../shared/data/imdb.ts";

async function sha256Prefix(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0"))
    .join("")
    .slice(0, 16);
}

const data = loadImdb();

Deno.test("imdb: task shape and sizes after dropping duplicates", () => {
  assert.equal(data.name, "imdb");
  assert.equal(data.numLabels, 2);
  assert.deepEqual(data.labelNames, ["neg", "pos"]);
  assert.deepEqual(data.metricNames, ["accuracy"]);
  assert.deepEqual(data.extraEval, []);
  assert.equal(IMDB_SPLIT_SEED, 20220128);
  assert.equal(IMDB_EVAL_SIZE, 5000);
  // 50,000 reviews minus 418 repeated texts.
  assert.equal(data.train.length + data.eval.length, 50000 - 418);
  assert.equal(data.eval.length, 5000);
  assert.equal(data.train.length, 44582);
  const texts = new Set([...data.train, ...data.eval].map((e) => e.text));
  assert.equal(texts.size, 49582);
});

Deno.test("imdb: text cleaned, labels 0/1 and balanced in eval", () => {
  for (const e of [...data.train, ...data.eval]) {
    assert.ok(!/<br\s*\/?>/i.test(e.text), "a <br> tag is left");
    assert.ok(e.label === 0 || e.label === 1);
    assert.equal(e.textPair, undefined);
  }
  const pos = data.eval.filter((e) => e.label === 1).length;
  assert.ok(pos > 2300 && pos < 2700, `eval positives: ${pos}`);
  // The source is sorted by label: a shuffled train has both labels early on.
  const firstHundred = data.train.slice(0, 100).filter((e) => e.label === 1).length;
  assert.ok(firstHundred > 25 && firstHundred < 75, `${firstHundred}`);
  assert.equal(cleanImdbText("a<br />b<br/>c<br>d<BR />e"), "a b c d e");
});

Deno.test("imdb: the split is pinned forever", async () => {
  // These hashes pin the train/eval split for good: if this test fails, the
  // split changed and results are no longer comparable with earlier runs. Do
  // not update the hashes; fix the change instead.
  const evalHashes = await Promise.all(data.eval.slice(0, 4).map((e) => sha256Prefix(e.text)));
  assert.deepEqual(evalHashes, [
    "eff167319ccd3400",
    "2e6da6fb43d4f327",
    "855d96ec0e7d0101",
    "62518979384de263",
  ]);
  assert.deepEqual(data.eval.slice(0, 4).map((e) => e.label), [1, 0, 0, 1]);
  assert.equal(await sha256Prefix(data.train[0].text), "3e98ab90ff4404af");
  assert.equal(await sha256Prefix(data.train.at(-1)!.text), "ff8a351fd3ad26ff");
  assert.equal(data.eval.filter((e) => e.label === 1).length, 2557);
  // A second load gives the same split.
  const again = loadImdb();
  assert.deepEqual(again.eval.slice(0, 50), data.eval.slice(0, 50));
});
