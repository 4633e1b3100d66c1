/**
 * The run record and its guards, through the real commands (issue 23, items
 * 1, 2 and 4): metrics.jsonl survives a SIGKILL and a resume continues it
 * without duplicates; DIR/best and early stopping on a run whose accuracy
 * peaks early; --save-total-limit; the refusals with their exit codes and
 * messages.
 */
import assert from "node:assert/strict";
import { tinyModelDir, tinyRunArgs, tinyTaskDir } from "./support/fixtures.ts";
import { finish, LineReader, runDeno, spawnDeno, spawnWorker } from "./support/processes.ts";
import { withTempDir } from "./support/temp_dir.ts";
import { readLog } from "../coordinator/run_log.ts";

const model = await tinyModelDir();
const task = await tinyTaskDir();

/** Starts a coordinator process and one wasm worker once it says how to join. */
async function coordinatorWithWorker(args: string[]) {
  const p = spawnDeno("coordinator/main.ts", args);
  const out = new LineReader(p.stdout), err = new LineReader(p.stderr);
  const join = await err.waitFor(/deno task worker --url/);
  const w = spawnWorker(join.match(/--url (\S+)/)![1], "test-token");
  const wout = new LineReader(w.stdout), werr = new LineReader(w.stderr);
  return { p, out, err, w, wout, werr };
}

Deno.test("metrics.jsonl: a SIGKILLed run keeps every step it logged; --resume continues it without duplicates", async () => {
  await withTempDir("adaptmesh-record-", async (save) => {
    const args = tinyRunArgs(model, task, [
      ...["--steps", "10", "--save", save, "--checkpoint-every", "2", "--eval-every", "3"],
    ]);
    const first = await coordinatorWithWorker(args);
    await first.err.waitFor(/checkpoint at step 4/);
    first.p.kill("SIGKILL");
    await finish(first.p, [first.out, first.err]);
    first.w.kill("SIGKILL");
    await finish(first.w, [first.wout, first.werr]);

    const killed = await readLog(`${save}/metrics.jsonl`);
    const steps = killed.filter((l) => l.type === "step");
    assert.ok(steps.length >= 4, JSON.stringify(killed));
    assert.deepEqual(steps.map((l) => l.step), steps.map((_, i) => i + 1));
    for (const key of ["loss", "lr", "grad_norm", "update_norm", "examples_per_s", "time_ms"]) {
      assert.ok(key in steps[0], `step lines have ${key}: ${JSON.stringify(steps[0])}`);
    }
    assert.ok("optimizer" in (steps[0].time_ms as Record<string, number>));
    const evals = killed.filter((l) => l.type === "eval");
    assert.equal(evals[0].step, 3);
    assert.equal(typeof evals[0].accuracy, "number");

    // The killed folder is a run: a new run may not write into it by accident.
    const refused = await runDeno(
      "coordinator/main.ts",
      tinyRunArgs(model, task, ["--save", save]),
    );
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /holds an earlier run .*--overwrite.*--resume/);
    assert.equal(refused.stdout, "");

    const second = await coordinatorWithWorker([
      "--resume",
      save,
      "--port",
      "0",
      "--token",
      "test-token",
    ]);
    const s2 = await finish(second.p, [second.out, second.err]);
    assert.equal(s2.code, 0, second.err.lines.join("\n"));
    await finish(second.w, [second.wout, second.werr]);
    const all = await readLog(`${save}/metrics.jsonl`);
    assert.deepEqual(
      all.filter((l) => l.type === "step").map((l) => l.step),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    );
    assert.deepEqual(all.filter((l) => l.type === "eval").map((l) => l.step), [3, 6, 9, 10]);
    assert.equal(all.filter((l) => l.type === "resume").length, 1);
    // trainer_state.json in Hugging Face's layout.
    const latest = (await Deno.readTextFile(`${save}/latest`)).trim();
    const state = JSON.parse(await Deno.readTextFile(`${save}/${latest}/trainer_state.json`));
    assert.equal(state.global_step, 10);
    assert.equal(state.max_steps, 10);
    assert.equal(state.log_history.filter((e: { loss?: number }) => "loss" in e).length, 10);
    assert.ok(state.log_history.some((e: { eval_accuracy?: number }) => "eval_accuracy" in e));
    assert.equal(typeof state.best_metric, "number");
    assert.equal(state.best_model_checkpoint, `${save}/best`);
  });
});

Deno.test("DIR/best and early stopping on a run whose accuracy peaks at step 1; --save-total-limit", async () => {
  await withTempDir("adaptmesh-best-", async (save) => {
    // Found by trying: at lr 0.05 this tiny model's accuracy is 0.6875 after steps 1 and 2,
    // then 0.3125 from step 3 on (it flips to predicting the minority class).
    const r = await runDeno(
      "coordinator/cluster.ts",
      tinyRunArgs(model, task, [
        ...["--steps", "14", "--micro-batch", "12", "--adv", "off", "--dropout", "0"],
        ...["--lr", "0.05", "--warmup", "0", "--schedule", "constant", "--eval-every", "1"],
        ...["--early-stopping-patience", "3", "--save", save, "--checkpoint-every", "1"],
        ...["--save-total-limit", "2", "--workers", "1", "--backend", "tfjs-wasm"],
      ]),
    );
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
    assert.equal(result.steps, 4, r.stdout);
    assert.equal(result.early_stopped, true);
    assert.deepEqual(result.best, { step: 1, metric: "accuracy", value: 0.6875 });
    assert.match(
      r.stderr,
      /early stopping at step 4: accuracy has not improved on 0\.6875 \(step 1\) for 3 evaluations/,
    );
    // best/ is the model of step 1: it scores what step 1 scored.
    const scored = await runDeno("shared/cli/evaluate.ts", [
      ...["--model", `${save}/best`, "--eval", task.eval, "--backend", "tfjs-wasm"],
    ]);
    assert.equal(scored.code, 0, scored.stderr);
    assert.equal(JSON.parse(scored.stdout.trim().split("\n").at(-1)!).accuracy, 0.6875);
    // The newest 2 step checkpoints, and the best step's.
    const folders: string[] = [];
    for await (const e of Deno.readDir(save)) if (e.name.startsWith("step-")) folders.push(e.name);
    assert.deepEqual(folders.sort(), ["step-000001", "step-000003", "step-000004"]);
    assert.equal((await Deno.readTextFile(`${save}/latest`)).trim(), "step-000004");
    // --overwrite replaces that run: its checkpoints, best/ and history go.
    const again = await runDeno(
      "coordinator/cluster.ts",
      tinyRunArgs(model, task, [
        ...[
          "--steps",
          "1",
          "--save",
          save,
          "--overwrite",
          "--workers",
          "1",
          "--backend",
          "tfjs-wasm",
        ],
      ]),
    );
    assert.equal(again.code, 0, again.stderr);
    const entries: string[] = [];
    for await (const e of Deno.readDir(save)) entries.push(e.name);
    assert.deepEqual(entries.sort(), ["latest", "metrics.jsonl", "model", "step-000001"]);
    assert.deepEqual((await readLog(`${save}/metrics.jsonl`)).map((l) => `${l.type} ${l.step}`), [
      "step 1",
      "eval 1",
    ]);
  });
});

/** `deno run -A coordinator/main.ts ARGS` (on the tiny fixtures unless `bare`). */
function coordinator(args: string[], bare = false) {
  return runDeno("coordinator/main.ts", bare ? args : tinyRunArgs(model, task, args));
}

Deno.test("refused before training, exit 2 with a message: bad labels, empty eval split, batches, flag rules", async () => {
  await withTempDir("adaptmesh-refuse-", async (dir) => {
    const write = (name: string, rows: unknown[]) =>
      Deno.writeTextFile(`${dir}/${name}`, rows.map((r) => JSON.stringify(r) + "\n").join(""));
    await write("neg.jsonl", [{ text: "a good film", label: 1 }, { text: "dull", label: -1 }]);
    await write("ok.jsonl", [{ text: "a good film", label: 1 }, { text: "dull", label: 0 }]);
    await Deno.writeTextFile(`${dir}/empty.jsonl`, "\n");
    const cases: [string[], RegExp][] = [
      [["--train", `${dir}/neg.jsonl`], /neg\.jsonl:2: label -1 is outside \[0, 2\)/],
      [["--eval", `${dir}/neg.jsonl`], /neg\.jsonl:2: label -1 is outside \[0, 2\)/],
      [["--eval", `${dir}/empty.jsonl`], /empty\.jsonl: the evaluation split holds no examples/],
      [["--micro-batch", "16"], /--micro-batch 16 is larger than --global-batch 12/],
      [["--max-len", "2"], /--max-len must be >= 4, got 2/],
      [["--port", "70000"], /--port must be <= 65535, got 70000/],
      [["--early-stopping-patience", "2"], /--early-stopping-patience needs --eval-every N/],
      [
        ["--eval-every", "1", "--metric-for-best", "f1"],
        /--metric-for-best f1: .* reports accuracy/,
      ],
      [["--save", `${dir}/ok.jsonl`], /--save .*ok\.jsonl: (not a folder|cannot write there)/],
    ];
    for (const [args, re] of cases) {
      const r = await coordinator(args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, re, args.join(" "));
      assert.equal(r.stdout, "", args.join(" "));
    }
    // GLUE: an SST-2 dev row labelled -1.
    const glue = `${dir}/SST-2`;
    await Deno.mkdir(glue);
    await Deno.writeTextFile(`${glue}/train.tsv`, "sentence\tlabel\ngood\t1\nbad\t0\n");
    await Deno.writeTextFile(`${glue}/dev.tsv`, "sentence\tlabel\ngood\t1\nbad\t-1\n");
    const g = await coordinator(
      ["--model", model, "--task", "sst2", "--data", glue, "--port", "0"],
      true,
    );
    assert.equal(g.code, 2, g.stderr);
    assert.match(g.stderr, /SST-2\/dev\.tsv:3: label -1 is outside \[0, 2\)/);
    // evaluate: a label the checkpoint has no class for, and predict's --batch-size rule.
    await write("three.jsonl", [{ text: "good", label: 1 }, { text: "bad", label: 2 }]);
    const e = await runDeno("shared/cli/evaluate.ts", [
      "--model",
      model,
      "--eval",
      `${dir}/three.jsonl`,
    ]);
    assert.equal(e.code, 2, e.stderr);
    assert.match(e.stderr, /three\.jsonl:2: label 2 is outside \[0, 2\)/);
    const p = await runDeno("shared/cli/predict.ts", [
      ...["--model", model, "--input", `${dir}/ok.jsonl`, "--batch-size", "0"],
    ]);
    assert.equal(p.code, 2);
    assert.match(p.stderr, /--batch-size must be >= 1, got 0/);
  });
});

Deno.test("--resume: flags that differ from the checkpoint's are listed (exit 2); a longer --steps extends the run", async () => {
  await withTempDir("adaptmesh-resume-flags-", async (save) => {
    const r1 = await runDeno(
      "coordinator/cluster.ts",
      tinyRunArgs(model, task, [
        "--steps",
        "2",
        "--save",
        save,
        "--workers",
        "1",
        "--backend",
        "tfjs-wasm",
      ]),
    );
    assert.equal(r1.code, 0, r1.stderr);
    const differ = await coordinator(
      ["--resume", save, "--lr", "0.02", "--seed", "7", "--steps", "4", "--port", "0"],
      true,
    );
    assert.equal(differ.code, 2, differ.stderr);
    assert.match(
      differ.stderr,
      /training flags differ from the checkpoint's: .*--lr 0\.02 \(checkpoint: 0\.01\)/,
    );
    assert.match(differ.stderr, /--seed 7 \(checkpoint: 42\)/);
    assert.doesNotMatch(differ.stderr, /--steps 4/);
    const longer = await runDeno("coordinator/cluster.ts", [
      ...["--resume", save, "--steps", "4", "--port", "0", "--token", "test-token"],
      ...["--workers", "1", "--backend", "tfjs-wasm", "--quiet"],
    ]);
    assert.equal(longer.code, 0, longer.stderr);
    assert.equal(JSON.parse(longer.stdout.trim()).steps, 4);
    const steps = (await readLog(`${save}/metrics.jsonl`)).filter((l) => l.type === "step");
    assert.deepEqual(steps.map((l) => l.step), [1, 2, 3, 4]);
  });
});
