import assert from "node:assert/strict";
import { loadTask, TASK_NAMES } from "../shared/data/task.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const lines = (...objs: unknown[]) => objs.map((o) => JSON.stringify(o)).join("\n") + "\n";

Deno.test("loadTask: imdb is built in (and the default)", async () => {
  const t = await loadTask({ task: "IMDB" });
  assert.equal(t.name, "imdb");
  assert.equal(t.eval.length, 5000);
  const d = await loadTask({});
  assert.equal(d.name, "imdb");
  await assert.rejects(loadTask({ task: "imdb", data: "/x" }), /takes no --data/);
});

Deno.test("loadTask: GLUE name + folder", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/train.tsv`, "sentence\tlabel\nnice\t1\nbad\t0\n");
    await Deno.writeTextFile(`${dir}/dev.tsv`, "sentence\tlabel\nok\t1\n");
    const t = await loadTask({ task: "SST-2", data: dir });
    assert.equal(t.name, "sst2");
    assert.deepEqual(t.train, [{ text: "nice", label: 1 }, { text: "bad", label: 0 }]);
    await assert.rejects(loadTask({ task: "sst2" }), /--task sst2 needs --data DIR/);
    await assert.rejects(loadTask({ data: dir }), /--data needs --task/);
    await assert.rejects(
      loadTask({ task: "sst2", data: dir, train: "x.jsonl" }),
      /drop --train\/--eval/,
    );
  });
  await assert.rejects(
    loadTask({ task: "nope", data: "/x" }),
    /unknown task "nope"; valid: imdb, cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli/,
  );
  assert.deepEqual(TASK_NAMES.slice(0, 2), ["imdb", "cola"]);
});

Deno.test("loadTask: JSONL with string labels (sorted names, or the checkpoint's label2id)", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(
      `${dir}/train.jsonl`,
      lines(
        { text: "a", label: "pos" },
        { text: "b", text_pair: "c", label: "neg" },
        { text: "d", label: "neutral" },
      ),
    );
    await Deno.writeTextFile(`${dir}/eval.jsonl`, lines({ text: "e", label: "pos" }));
    const t = await loadTask({ train: `${dir}/train.jsonl`, eval: `${dir}/eval.jsonl` });
    assert.equal(t.name, "jsonl");
    assert.deepEqual(t.labelNames, ["neg", "neutral", "pos"]);
    assert.equal(t.numLabels, 3);
    assert.deepEqual(t.metricNames, ["accuracy"]);
    assert.deepEqual(t.train, [
      { text: "a", label: 2 },
      { text: "b", textPair: "c", label: 0 },
      { text: "d", label: 1 },
    ]);
    assert.deepEqual(t.eval, [{ text: "e", label: 2 }]);
    const own = await loadTask({
      train: `${dir}/train.jsonl`,
      eval: `${dir}/eval.jsonl`,
      label2id: { pos: 0, neutral: 1, neg: 2 },
    });
    assert.deepEqual(own.labelNames, ["pos", "neutral", "neg"]);
    assert.deepEqual(own.train.map((e) => e.label), [0, 2, 1]);
    // Eval only (as `evaluate --eval FILE` uses it).
    const evalOnly = await loadTask({ eval: `${dir}/eval.jsonl` });
    assert.deepEqual(evalOnly.train, []);
    assert.deepEqual(evalOnly.labelNames, ["pos"]);
  });
});

Deno.test("loadTask: JSONL with integer ids, float scores, bad mixes", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(
      `${dir}/ids.jsonl`,
      lines({ text: "a", label: 0 }, { text: "b", label: 2 }),
    );
    const ids = await loadTask({ train: `${dir}/ids.jsonl` });
    assert.deepEqual(ids.labelNames, ["0", "1", "2"]);
    assert.deepEqual(ids.train.map((e) => e.label), [0, 2]);
    await Deno.writeTextFile(
      `${dir}/scores.jsonl`,
      lines({ text: "a", text_pair: "b", label: 4.5 }, { text: "c", text_pair: "d", label: 1 }),
    );
    const reg = await loadTask({ train: `${dir}/scores.jsonl` });
    assert.equal(reg.numLabels, 1);
    assert.equal(reg.labelNames, null);
    assert.deepEqual(reg.metricNames, ["pearson", "spearmanr"]);
    assert.deepEqual(reg.train.map((e) => e.label), [4.5, 1]);
    await Deno.writeTextFile(
      `${dir}/mixed.jsonl`,
      lines({ text: "a", label: 0 }, { text: "b", label: "x" }),
    );
    await assert.rejects(loadTask({ train: `${dir}/mixed.jsonl` }), /mix strings and numbers/);
    await Deno.writeTextFile(`${dir}/nolabel.jsonl`, lines({ text: "a", label: 0 }, { text: "b" }));
    await assert.rejects(
      loadTask({ train: `${dir}/nolabel.jsonl` }),
      /nolabel\.jsonl:2: missing "label"/,
    );
    await Deno.writeTextFile(`${dir}/empty.jsonl`, "\n");
    await assert.rejects(loadTask({ train: `${dir}/empty.jsonl` }), /no examples/);
  });
});
