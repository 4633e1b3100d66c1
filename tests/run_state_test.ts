/**
 * Checkpoint and resume: a coordinator process stopped with SIGTERM
 * mid-run and resumed from its checkpoint ends bit-identical to an
 * uninterrupted run.
 */
import assert from "node:assert/strict";
import { initBackend } from "../shared/compute/create.ts";
import { loadCheckpoint } from "../shared/io/checkpoint.ts";
import type { Trainer } from "../coordinator/trainer.ts";
import { latestCheckpoint, loadRunState } from "../coordinator/run_state.ts";
import { trainInProcess } from "./support/in_process.ts";
import { tinyModelDir, tinyRunArgs, tinyTaskDir } from "./support/fixtures.ts";
import { finish, LineReader, spawnDeno, spawnWorker } from "./support/processes.ts";

await initBackend("tfjs-wasm");
const model = await tinyModelDir();
const task = await tinyTaskDir();
const longer = ["--steps", "6"];

function uninterrupted(): Promise<Trainer> {
  return trainInProcess(tinyRunArgs(model, task, longer));
}

/** Starts a coordinator process and one worker; returns once the worker is running. */
async function runCoordinator(args: string[]) {
  const p = spawnDeno("coordinator/main.ts", args);
  const out = new LineReader(p.stdout), err = new LineReader(p.stderr);
  const join = await err.waitFor(/deno task worker --url/);
  const url = join.match(/--url (\S+)/)![1];
  const w = spawnWorker(url, "test-token");
  const wout = new LineReader(w.stdout), werr = new LineReader(w.stderr);
  return { p, out, err, w, wout, werr };
}

Deno.test("SIGTERM at step k, then --resume: final weights bit-identical to an uninterrupted run", async () => {
  const reference = await uninterrupted();
  const save = await Deno.makeTempDir({ prefix: "adaptmesh-run-" });
  const first = await runCoordinator([
    ...tinyRunArgs(model, task, longer),
    "--save",
    save,
    "--checkpoint-every",
    "1",
  ]);
  await first.err.waitFor(/checkpoint at step 2/);
  first.p.kill("SIGTERM");
  const s1 = await finish(first.p, [first.out, first.err]);
  assert.equal(s1.code, 0, first.err.lines.join("\n"));
  await finish(first.w, [first.wout, first.werr]);
  const stoppedAt = (await loadRunState(save)).step;
  assert.ok(stoppedAt >= 2 && stoppedAt < 6, `stopped at ${stoppedAt}`);
  assert.match((await latestCheckpoint(save))!, /step-00000\d$/);

  const second = await runCoordinator(["--resume", save, "--port", "0", "--token", "test-token"]);
  const s2 = await finish(second.p, [second.out, second.err]);
  assert.equal(s2.code, 0, second.err.lines.join("\n") + second.out.lines.join("\n"));
  await finish(second.w, [second.wout, second.werr]);
  const final = await loadCheckpoint(`${save}/model`);
  assert.deepEqual(final.weights, reference.weights);
  const state = await loadRunState(save);
  assert.equal(state.step, 6);
  assert.deepEqual(state.optimizer.m, reference.optimizer.m);
});

Deno.test("--resume of a folder without a checkpoint says so", async () => {
  const empty = await Deno.makeTempDir();
  await assert.rejects(loadRunState(empty), /no run checkpoint there/);
});
