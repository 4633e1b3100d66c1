/**
 * LoRA runs end to end (coordinator/lora_run.ts, worker/base_cache.ts): a
 * real coordinator and worker process train the adapters and agree with an
 * in-process run; continuing a PEFT adapter written by PEFT itself agrees
 * with an independent step-by-step computation on the tfjs oracle; a worker
 * restarted mid-run does not download the base again; the saved PEFT folder
 * loads back and `predict --adapter` gives the run's logits.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { initBackend } from "../shared/compute/create.ts";
import { parseRunFlags } from "../coordinator/run_config.ts";
import { startCoordinator } from "../coordinator/coordinator.ts";
import { Trainer } from "../coordinator/trainer.ts";
import { trainInProcess } from "./support/in_process.ts";
import { tinyModelDir, tinyRunArgs, tinyTaskDir } from "./support/fixtures.ts";
import { finish, LineReader, runDeno, spawnWorker } from "./support/processes.ts";
import { loadPeftAdapter } from "../shared/io/peft.ts";
import { saveCheckpoint } from "../shared/io/checkpoint.ts";
import { TINY_VOCAB, tinyExamples } from "./support/fixtures.ts";
import { tinyConfig, tinyWeights } from "./support/tiny.ts";
import { paramLayout } from "../shared/model/param_layout.ts";
import { adversaryAt } from "../shared/method/adversary_config.ts";
import { learningRate } from "../coordinator/lr_schedule.ts";
import { createOptimizerState, optimizerStep } from "../coordinator/optimizer.ts";
import { microBatchGradient } from "../shared/tfjs/gradient.ts";
import { predictLogits, weightTensors } from "../shared/tfjs/model.ts";
import * as tf from "@tensorflow/tfjs-core";
import { baseHash } from "../shared/model/base_hash.ts";

await initBackend("tfjs-wasm");
const model = await tinyModelDir();
const task = await tinyTaskDir();
const LORA = ["--lora", "4", "--steps", "3", "--adv", "pgd", "--adv-start", "0"];

function maxDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

const reference = await trainInProcess(tinyRunArgs(model, task, LORA));

/** A coordinator of `args` and one worker process on `cache`; resolves after the run. */
async function processRun(args: string[], cache: string) {
  const { config } = await parseRunFlags(args, {}, "");
  const c = await startCoordinator(config, { log: () => {} });
  const p = spawnWorker(c.wsUrl, c.token, ["--base-cache", cache]);
  const out = new LineReader(p.stdout), err = new LineReader(p.stderr);
  await c.done;
  await c.close();
  await finish(p, [out, err]);
  return { c, out };
}

Deno.test("--lora 4: a coordinator and a worker process train the adapters as in-process; the saved PEFT folder loads back and predict --adapter gives the run's logits", async () => {
  const cache = await Deno.makeTempDir({ prefix: "adaptmesh-bases-" });
  const save = await Deno.makeTempDir({ prefix: "adaptmesh-save-" });
  const { c, out } = await processRun(
    tinyRunArgs(model, task, [...LORA, "--save", save, "--merge", "--overwrite"]),
    cache,
  );
  const lora = c.trainer.lora!;
  const got = lora.trainable, want = reference.lora!.trainable;
  assert.ok(maxDiff(got, want) <= 1e-6, `max diff ${maxDiff(got, want)}`);
  // Training moved the adapters (B starts at zero) and the head; the base is frozen.
  const b0 = lora.plan.adapters[0].b;
  assert.ok(got.subarray(b0.offset, b0.offset + b0.size).some((x) => x !== 0));
  assert.deepEqual(c.trainer.weights, reference.weights);
  assert.ok(out.lines.some((l) => /received base/.test(l)), out.lines.join("\n"));
  // The cache holds the base under its hash.
  assert.ok((await Deno.stat(join(cache, `${lora.baseHash}.f32`))).isFile);

  // DIR/model is a PEFT folder with the trained values.
  const back = await loadPeftAdapter(join(save, "model"), lora.config);
  assert.deepEqual(back.trainable, got);
  const cfg = JSON.parse(await Deno.readTextFile(join(save, "model", "adapter_config.json")));
  assert.equal(cfg.base_model_name_or_path, model);
  assert.equal(cfg.r, 4);
  assert.equal(cfg.lora_alpha, 4);
  // predict --model BASE --adapter DIR/model, and the merged model, give the run's logits.
  const input = join(save, "input.jsonl");
  const texts = tinyExamples(5, 9).map((e) => ({ text: e.text }));
  await Deno.writeTextFile(input, texts.map((t) => JSON.stringify(t)).join("\n") + "\n");
  const run = (args: string[]) =>
    runDeno("shared/cli/predict.ts", [...args, "--input", input, "--backend", "tfjs-wasm"]);
  const viaAdapter = await run(["--model", model, "--adapter", join(save, "model")]);
  const viaMerged = await run(["--model", join(save, "merged")]);
  assert.equal(viaAdapter.code, 0, viaAdapter.stderr);
  assert.equal(viaMerged.code, 0, viaMerged.stderr);
  const logitsOf = (s: string) =>
    s.trim().split("\n").map((l) => JSON.parse(l).logits as number[]).flat();
  const a = logitsOf(viaAdapter.stdout), m = logitsOf(viaMerged.stdout);
  // The run's own logits: the tfjs oracle with the adapters on the base.
  const { EncodedSet } = await import("../shared/data/batching.ts");
  const { loadTokenizer } = await import("../shared/text/tokenizer.ts");
  const set = new EncodedSet(
    texts.map((t) => ({ text: t.text, label: 0 })),
    await loadTokenizer(model),
    16,
  );
  const batch = set.batch([0, 1, 2, 3, 4]);
  const weights = weightTensors(c.trainer.layout, c.trainer.weights);
  const lw = weightTensors(lora.plan.layout, got);
  const runLogits = await predictLogits({
    config: lora.config,
    layout: c.trainer.layout,
    weights,
    lora: { plan: lora.plan, weights: lw },
  }, batch);
  tf.dispose([...Object.values(weights), ...Object.values(lw)]);
  assert.equal(a.length, runLogits.length);
  for (let i = 0; i < a.length; i++) {
    assert.ok(Math.abs(a[i] - runLogits[i]) <= 1e-5, `logit ${i}: ${a[i]} vs ${runLogits[i]}`);
    assert.ok(Math.abs(m[i] - runLogits[i]) <= 1e-5, `merged logit ${i}: ${m[i]}`);
  }
  await Deno.remove(cache, { recursive: true });
  await Deno.remove(save, { recursive: true });
});

Deno.test("a LoRA worker killed and restarted mid-run does not download the base again", async () => {
  const cache = await Deno.makeTempDir({ prefix: "adaptmesh-bases-" });
  const args = tinyRunArgs(model, task, LORA);
  const { config } = await parseRunFlags(args, {}, "");
  const c = await startCoordinator(config, { log: () => {} });
  const spawn = () => {
    const p = spawnWorker(c.wsUrl, c.token, ["--base-cache", cache]);
    return { p, out: new LineReader(p.stdout), err: new LineReader(p.stderr) };
  };
  const a = spawn();
  let b: ReturnType<typeof spawn> | null = null;
  let sentBefore = 0;
  const watch = setInterval(() => {
    if (!b && c.trainer.step >= 1) {
      a.p.kill("SIGKILL");
      sentBefore = c.monitor.bytesOut;
      b = spawn();
    }
  }, 5);
  await c.done;
  clearInterval(watch);
  await c.close();
  await finish(a.p, [a.out, a.err]);
  assert.ok(b, "a worker was restarted");
  const late = b as ReturnType<typeof spawn>;
  await finish(late.p, [late.out, late.err]);
  const baseBytes = c.trainer.weights.byteLength;
  const after = c.monitor.bytesOut - sentBefore;
  assert.ok(a.out.lines.some((l) => /received base/.test(l)), a.out.lines.join("\n"));
  assert.ok(!late.out.lines.some((l) => /received base/.test(l)), late.out.lines.join("\n"));
  assert.ok(late.out.lines.some((l) => /loaded from/.test(l)), late.out.lines.join("\n"));
  // After the restart only trainable tensors (and tasks) travelled: far less than one base.
  assert.ok(after < baseBytes, `sent ${after} bytes after the restart; the base is ${baseBytes}`);
  assert.ok(maxDiff(c.trainer.lora!.trainable, reference.lora!.trainable) <= 1e-6);
  await Deno.remove(cache, { recursive: true });
});

Deno.test("a worker holding bases of other hashes (and a corrupt copy of this one) receives the right base", async () => {
  const cache = await Deno.makeTempDir({ prefix: "adaptmesh-bases-" });
  const layout = reference.layout, base = reference.weights;
  // Another base, cached correctly under its own hash.
  const other = base.map((x) => x + 1);
  const otherHash = baseHash(layout, other);
  await Deno.writeFile(join(cache, `${otherHash}.f32`), new Uint8Array(other.buffer));
  // A file named by this run's hash whose content is another base.
  const right = reference.lora!.baseHash;
  await Deno.writeFile(join(cache, `${right}.f32`), new Uint8Array(other.buffer));
  const { c, out } = await processRun(tinyRunArgs(model, task, LORA), cache);
  assert.ok(out.lines.some((l) => /does not hash to its name/.test(l)), out.lines.join("\n"));
  assert.ok(out.lines.some((l) => /received base/.test(l)), out.lines.join("\n"));
  assert.ok(maxDiff(c.trainer.lora!.trainable, reference.lora!.trainable) <= 1e-6);
  // The cache now holds the right base under its name, and the other base untouched.
  const again = new Float32Array((await Deno.readFile(join(cache, `${right}.f32`))).buffer);
  assert.equal(baseHash(layout, again), right);
  assert.ok((await Deno.stat(join(cache, `${otherHash}.f32`))).isFile);
  await Deno.remove(cache, { recursive: true });
});

Deno.test("continuing the PEFT adapter PEFT wrote: 3 LAMB + PGD steps equal an independent step-by-step computation", async () => {
  const fixture = new URL("./fixtures/peft_tiny_bert/", import.meta.url).pathname;
  // The fixture's base: the tiny BERT of tests/support/tiny.ts, 3 labels.
  const dir = await Deno.makeTempDir({ prefix: "adaptmesh-model-" });
  const config = tinyConfig();
  const layout = paramLayout(config), weights = tinyWeights(layout);
  await Deno.writeTextFile(join(dir, "vocab.txt"), TINY_VOCAB.join("\n") + "\n");
  await saveCheckpoint(dir, { config, weights });
  const rows = (n: number, seed: number) =>
    tinyExamples(n, seed).map((e, i) => JSON.stringify({ text: e.text, label: i % 3 }));
  await Deno.writeTextFile(join(dir, "train.jsonl"), rows(24, 1).join("\n") + "\n");
  await Deno.writeTextFile(join(dir, "eval.jsonl"), rows(6, 2).join("\n") + "\n");
  const args = tinyRunArgs(
    dir,
    { train: join(dir, "train.jsonl"), eval: join(dir, "eval.jsonl") },
    [
      "--adapter",
      fixture,
      "--steps",
      "3",
      "--adv",
      "pgd",
      "--adv-start",
      "0",
      "--dropout",
      "0",
    ],
  );
  const trained = await trainInProcess(args);

  // Independently: the tfjs oracle's gradient per micro-batch, Σ n_j g_j / Σ n_j, LAMB.
  const { config: runConfig } = await parseRunFlags(args, {}, "");
  const t = await Trainer.create(runConfig);
  const adapter = await loadPeftAdapter(fixture, t.modelConfig);
  const plan = adapter.plan, trainable = adapter.trainable.slice();
  const state = createOptimizerState(plan.layout.total);
  const { training } = t.config;
  const base = weightTensors(t.layout, t.weights);
  for (let step = 0; step < 3; step++) {
    const adversary = adversaryAt(training.adversary, step, t.totalSteps, training.adversaryStart);
    const acc = new Float64Array(plan.layout.total);
    let n = 0;
    const lw = weightTensors(plan.layout, trainable);
    for (const [index, indices] of t.plan.step(step).microBatches.entries()) {
      const batch = t.data.train.batch(indices, step);
      const r = await microBatchGradient(
        { config: t.modelConfig, layout: t.layout, weights: base, lora: { plan, weights: lw } },
        {
          step,
          index,
          seed: training.seed,
          adversary,
          batch,
          dropout: { hidden: 0, attention: 0 },
        },
      );
      for (let i = 0; i < acc.length; i++) acc[i] += batch.size * r.grad[i];
      n += batch.size;
    }
    tf.dispose(Object.values(lw));
    const grad = Float32Array.from(acc, (x) => x / n);
    const opt = training.optimizer;
    const lr = learningRate(step + 1, t.totalSteps, opt.lr, t.warmupSteps, training.schedule.kind);
    optimizerStep(plan.layout, trainable, grad, state, lr, opt);
  }
  tf.dispose(Object.values(base));
  const got = trained.lora!.trainable;
  const d = maxDiff(got, trainable);
  assert.ok(d <= 1e-6, `max diff ${d}`);
  assert.ok(maxDiff(got, adapter.trainable) > 1e-4, "the adapter was trained");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a LoRA run resumed from a checkpoint (trainable state, optimizer, base by hash) ends as the run it continues", async () => {
  const save = await Deno.makeTempDir({ prefix: "adaptmesh-save-" });
  const full = await trainInProcess(
    tinyRunArgs(model, task, [
      ...LORA,
      "--save",
      save,
      "--overwrite",
      "--checkpoint-every",
      "1",
      "--save-total-limit",
      "5",
    ]),
  );
  assert.deepEqual(full.lora!.trainable, reference.lora!.trainable);
  const meta = JSON.parse(await Deno.readTextFile(join(save, "step-000001", "run_state.json")));
  assert.equal(meta.lora.baseHash, reference.lora!.baseHash);
  await Deno.writeTextFile(join(save, "latest"), "step-000001\n");
  const resumed = await trainInProcess(["--resume", save, "--port", "0", "--token", "t"]);
  assert.equal(resumed.step, 3);
  assert.deepEqual(resumed.lora!.trainable, reference.lora!.trainable);
  // Another base (another --model) is refused by hash.
  await Deno.writeTextFile(join(save, "latest"), "step-000001\n");
  const other = await tinyModelDir(7);
  const stored = JSON.parse(await Deno.readTextFile(join(save, "step-000001", "run_state.json")));
  stored.runConfig.model = other;
  await Deno.writeTextFile(join(save, "step-000001", "run_state.json"), JSON.stringify(stored));
  await assert.rejects(
    trainInProcess(["--resume", save, "--port", "0", "--token", "t"]),
    /base model's hash/,
  );
  await Deno.remove(save, { recursive: true });
});

Deno.test("a base larger than a chunk travels as a chunked transfer and arrives whole", async () => {
  const { deliver } = await import("./support/transfer.ts");
  const { prepareMessage, CHUNK_BYTES } = await import("../shared/wire/transfer.ts");
  const data = Float32Array.from({ length: CHUNK_BYTES / 2 + 7 }, (_, i) => i % 97);
  const m = deliver(prepareMessage({ type: "base", runId: "r", hash: "a".repeat(64), data }));
  assert.equal(m.type, "base");
  if (m.type === "base") assert.deepEqual(m.data, data);
});
