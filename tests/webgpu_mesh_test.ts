/**
 * The GPU worker through the real mesh: a coordinator and one worker process
 * on `--backend webgpu` (the engine's WebGPU device; here Mesa's software
 * adapter) train 3 LAMB steps with PGD from the first step, and the weights
 * must match an independent computation of the same run — the tfjs path,
 * in-process — as closely as a `--backend cpu` worker's do.
 */
import assert from "node:assert/strict";
import { Scheduler } from "../coordinator/scheduler.ts";
import { Trainer } from "../coordinator/trainer.ts";
import { parseRunFlags } from "../coordinator/run_config.ts";
import { startCoordinator } from "../coordinator/coordinator.ts";
import { initBackend } from "../shared/compute/create.ts";
import { loadBlas } from "../shared/engine/devices/cpu/blas.ts";
import { InProcessWorker } from "./support/in_process.ts";
import { tinyModelDir, tinyRunArgs, tinyTaskDir } from "./support/fixtures.ts";
import { finish, LineReader, spawnWorker } from "./support/processes.ts";

const gpu = (navigator as Navigator & { gpu?: GPU }).gpu;
const adapter = await gpu?.requestAdapter().catch(() => null);
if (!adapter) console.log("webgpu_mesh_test: no WebGPU adapter here; the GPU worker is not tested");

await initBackend("tfjs-wasm");
const blasHere = loadBlas().blas !== null; // (loaded outside the test: the sanitizer sees no leak)
const model = await tinyModelDir();
const task = await tinyTaskDir();
const ARGS = ["--steps", "3", "--adv", "pgd", "--adv-steps", "1", "--adv-start", "0"];

/** The run computed in-process on tfjs: the independent reference. */
async function referenceRun(): Promise<{ start: Float32Array; end: Float32Array }> {
  const { config } = await parseRunFlags(tinyRunArgs(model, task, ARGS), {}, "");
  const trainer = await Trainer.create(config);
  const start = trainer.weights.slice();
  const scheduler = new Scheduler({ gradLayout: trainer.gradLayout, taskTimeoutMs: 0 });
  const w = new InProcessWorker("ref", scheduler, trainer);
  await trainer.run(scheduler);
  await w.settle();
  return { start, end: trainer.weights.slice() };
}

/** The same run through a real coordinator and one worker process on `backend`. */
async function meshRun(backend: string): Promise<{ weights: Float32Array; log: string }> {
  const { config } = await parseRunFlags(tinyRunArgs(model, task, ARGS), {}, "");
  const c = await startCoordinator(config, { log: () => {} });
  const p = spawnWorker(c.wsUrl, c.token, [], backend);
  const out = new LineReader(p.stdout), err = new LineReader(p.stderr);
  const summary = await c.done;
  await c.close();
  const end = await finish(p, [out, err]);
  assert.equal(summary.steps, 3);
  assert.equal(end.code, 0, err.lines.join("\n"));
  return { weights: c.trainer.weights.slice(), log: [...out.lines, ...err.lines].join("\n") };
}

/** max |a − b| over the largest change the run made to any weight. */
function relativeToUpdate(
  a: Float32Array,
  b: Float32Array,
  start: Float32Array,
  end: Float32Array,
) {
  let diff = 0, update = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    update = Math.max(update, Math.abs(end[i] - start[i]));
  }
  return diff / update;
}

Deno.test({
  name:
    "3 LAMB + PGD steps through a real webgpu worker match the tfjs reference as a cpu worker does",
  ignore: !adapter,
  async fn() {
    const ref = await referenceRun();
    const gpuRun = await meshRun("webgpu");
    assert.match(gpuRun.log, /backend webgpu on \S/, "the start line names the adapter");
    const gpuErr = relativeToUpdate(gpuRun.weights, ref.end, ref.start, ref.end);
    assert.ok(gpuErr < 1e-3, `webgpu vs reference: ${gpuErr} of the largest update`);
    if (blasHere) {
      const cpuRun = await meshRun("cpu");
      const cpuErr = relativeToUpdate(cpuRun.weights, ref.end, ref.start, ref.end);
      assert.ok(cpuErr < 1e-3, `cpu vs reference: ${cpuErr} of the largest update`);
      // Both engines are one implementation on two devices: they agree more closely still.
      const between = relativeToUpdate(gpuRun.weights, cpuRun.weights, ref.start, ref.end);
      assert.ok(between < 1e-3, `webgpu vs cpu: ${between}`);
    }
  },
});
