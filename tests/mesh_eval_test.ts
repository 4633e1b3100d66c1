/**
 * Held-out evaluation through the mesh, over real WebSockets between real
 * processes (coordinator/mesh_eval.ts, Scheduler.runEval, the workers'
 * `eval_task`): the final evaluation of a run on 1 and 2 worker processes
 * gives the metrics and the logit bits of local scoring with the same
 * backend; a worker process killed while it holds an evaluation batch loses
 * nothing; a peer's NaN or unassigned `eval_result` is refused by name.
 */
import assert from "node:assert/strict";
import { cpuBackend, initBackend } from "../shared/compute/create.ts";
import type { ComputeBackend } from "../shared/compute/model_compute.ts";
import { parseRunFlags } from "../coordinator/run_config.ts";
import { type Coordinator, startCoordinator } from "../coordinator/coordinator.ts";
import type { Trainer } from "../coordinator/trainer.ts";
import { EVAL_TASK_ID_BASE } from "../coordinator/mesh_eval.ts";
import { batchLogitsOf, type EvalModel } from "../shared/eval/held_out.ts";
import { loadBlas } from "../shared/engine/devices/cpu/blas.ts";
import {
  decodeMessage,
  encodeMessage,
  type Message,
  packFrame,
  PROTOCOL_VERSION,
} from "../shared/wire/protocol.ts";
import { tinyModelDir, tinyRunArgs, tinyTaskDir } from "./support/fixtures.ts";
import { finish, LineReader, spawnDeno, spawnWorker } from "./support/processes.ts";
import { observeMeshLogits } from "./support/mesh_logits.ts";

await initBackend("tfjs-wasm");
const model = await tinyModelDir();
/** 300 held-out examples: 5 evaluation batches of up to 64. */
const task = await tinyTaskDir(48, 300);

/** The trainer's held-out split scored here by `local`: its metrics and logits. */
async function scoreHere(trainer: Trainer, local: EvalModel) {
  let logits: Float32Array[] = [];
  const result = await trainer.data.evaluate({
    config: trainer.modelConfig,
    logitsAll: async (b) => (logits = await batchLogitsOf(local)(b)),
  }, 0);
  return { result, logits };
}

/** Scored here on `backend` (default: tfjs-wasm, the backend of the tfjs-wasm workers). */
async function scoreOnWasm(trainer: Trainer, backend?: ComputeBackend) {
  const model = (backend ?? await initBackend("tfjs-wasm")).model(
    trainer.modelConfig,
    trainer.layout,
  );
  try {
    model.setWeights(trainer.weights);
    return await scoreHere(trainer, model);
  } finally {
    model.dispose();
  }
}

const u32 = (a: Float32Array) => [...new Uint32Array(a.buffer, a.byteOffset, a.length)];

function assertSameLogits(a: Float32Array[], b: Float32Array[]): void {
  assert.equal(a.length, b.length);
  a.forEach((x, i) => assert.deepEqual(u32(x), u32(b[i]), `batch ${i}: not the same bits`));
}

async function coordinator(
  extra: string[] = [],
  opts: Parameters<typeof startCoordinator>[1] = {},
  dir = model,
): Promise<Coordinator> {
  const steps = extra.includes("--steps") ? [] : ["--steps", "2"];
  const { config } = await parseRunFlags(tinyRunArgs(dir, task, [...steps, ...extra]), {}, "");
  return await startCoordinator(config, { log: () => {}, ...opts });
}

function worker(c: Coordinator, backend: "tfjs-wasm" | "cpu" = "tfjs-wasm") {
  const p = backend === "tfjs-wasm"
    ? spawnWorker(c.wsUrl, c.token)
    : spawnDeno("worker/main.ts", ["--url", c.wsUrl, "--token", c.token, "--backend", "cpu"]);
  return { p, out: new LineReader(p.stdout), err: new LineReader(p.stderr) };
}

for (const n of [1, 2]) {
  Deno.test(`the final evaluation on ${n} wasm worker process(es) has the metrics and logit bits of local scoring`, async () => {
    const logs: string[] = [];
    const c = await coordinator([], { log: (l) => logs.push(l) });
    const seen = observeMeshLogits(c.trainer);
    const ws = Array.from({ length: n }, () => worker(c));
    const summary = await c.done;
    await c.close();
    for (const w of ws) assert.equal((await finish(w.p, [w.out, w.err])).code, 0);
    assert.equal(seen.length, 1, "the final evaluation ran on the workers");
    const here = await scoreOnWasm(c.trainer);
    assert.equal(here.result?.examples, 300);
    assert.deepEqual(summary.evaluation, here.result);
    assertSameLogits(seen[0], here.logits);
    assert.equal(c.monitor.evals.length, 1);
  });
}

const blas = loadBlas().blas;
Deno.test({
  name: "a cpu worker process evaluates with the bits of the engine here (one BLAS thread)",
  ignore: !blas,
  async fn() {
    const c = await coordinator();
    const seen = observeMeshLogits(c.trainer);
    const w = worker(c, "cpu");
    const summary = await c.done;
    await c.close();
    assert.equal((await finish(w.p, [w.out, w.err])).code, 0, w.err.lines.join("\n"));
    assert.ok(w.out.lines.some((l) => /backend cpu/.test(l)), w.out.lines.join("\n"));
    // A deterministic run's cpu workers compute on one BLAS thread: so does this reference.
    const before = blas!.threads();
    blas!.setThreads(1);
    try {
      const t = c.trainer;
      const here = await scoreOnWasm(t, cpuBackend(blas!.gemm));
      assert.deepEqual(summary.evaluation, here.result);
      assertSameLogits(seen[0], here.logits);
    } finally {
      if (before !== null) blas!.setThreads(before);
    }
  },
});

Deno.test("a worker process killed while it holds an evaluation batch: the batch is scored by the other, same numbers", async () => {
  // Wider than the fixture, so a batch takes long enough to be caught in flight.
  const wide = await tinyModelDir(4, {
    hidden_size: 128,
    intermediate_size: 512,
    num_attention_heads: 4,
  });
  const logs: string[] = [];
  const redispatched: string[] = [];
  const c = await coordinator(["--steps", "3", "--eval-every", "1"], {
    log: (l) => logs.push(l),
    events: { redispatched: (reason, _step, index) => redispatched.push(`${reason} ${index}`) },
  }, wide);
  const seen = observeMeshLogits(c.trainer);
  const a = worker(c), b = worker(c);
  const procOf = (id: string) => {
    const pid = logs.map((l) => l.match(new RegExp(`^worker ${id} joined: .*pid (\\d+)\\)`)))
      .find((m) => m)?.[1];
    return [a, b].find((w) => String(w.p.pid) === pid);
  };
  let killed: typeof a | null = null, stopping = false, caughtAt = -1;
  const watch = setInterval(() => {
    if (killed || stopping) return;
    for (const [id, w] of c.scheduler.workers) {
      const held = [...w.inflight].find((t) => t >= EVAL_TASK_ID_BASE);
      const proc = held === undefined ? undefined : procOf(id);
      if (held === undefined || !proc) continue;
      // Frozen while it holds an evaluation batch; killed if the batch is still unanswered
      // once what the socket held has been read (else let go, to try the next one).
      stopping = true;
      proc.p.kill("SIGSTOP");
      setTimeout(() => {
        stopping = false;
        if (!c.scheduler.workers.get(id)?.inflight.has(held)) return void proc.p.kill("SIGCONT");
        killed = proc;
        caughtAt = c.trainer.step;
        proc.p.kill("SIGKILL");
      }, 300);
      return;
    }
  }, 2);
  const summary = await c.done;
  clearInterval(watch);
  await c.close();
  const k = killed as typeof a | null;
  assert.ok(k, "a worker was killed holding an evaluation batch");
  const survivor = k === a ? b : a;
  await finish(k.p, [k.out, k.err]);
  assert.equal((await finish(survivor.p, [survivor.out, survivor.err])).code, 0);
  assert.ok(redispatched.some((r) => r.startsWith("disconnect")), redispatched.join());
  assert.equal(summary.steps, 3);
  // Every evaluation (after steps 1 and 2, and the final one) ran on the workers, and
  // the last one equals local scoring bit for bit — whichever evaluation lost its worker.
  assert.equal(seen.length, 3, `killed during the evaluation after step ${caughtAt}`);
  const here = await scoreOnWasm(c.trainer);
  assert.deepEqual(summary.evaluation, here.result);
  assertSameLogits(seen[2], here.logits);
  await Deno.remove(wide, { recursive: true });
});

/** A raw WebSocket peer that records what the coordinator answers. */
async function rawPeer(url: string): Promise<{ ws: WebSocket; replies: Message[] }> {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const replies: Message[] = [];
  ws.onmessage = (e) => {
    const bytes = new Uint8Array(e.data as ArrayBuffer);
    if (bytes[0] !== 0xc1) replies.push(decodeMessage(bytes)); // chunk frames are not replies
  };
  await new Promise((r, j) => ((ws.onopen = r), (ws.onerror = j)));
  return { ws, replies };
}

const until = async (f: () => boolean, ms = 10_000) => {
  const t0 = Date.now();
  while (!f()) {
    if (Date.now() - t0 > ms) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
};

Deno.test("a peer's NaN logits and unassigned eval_result are refused by name; the run is unaffected", async () => {
  const c = await coordinator();
  const rogue = await rawPeer(c.wsUrl);
  rogue.ws.send(encodeMessage({
    type: "hello",
    protocol: PROTOCOL_VERSION,
    token: c.token,
    backend: "tfjs-wasm",
    device: "test",
    pid: 1,
    host: "test",
  }));
  await until(() => rogue.replies.some((m) => m.type === "welcome"));
  const base = {
    type: "eval_result",
    taskId: EVAL_TASK_ID_BASE + 2,
    step: 2,
    index: 2,
    weightsVersion: 2,
    logits: new Float32Array([0.5, 1, -2, 3]),
    timings: { computeMs: 1, adversaryMs: 0, encodeMs: 0 },
  };
  const nan = new Float32Array(base.logits);
  nan[1] = NaN;
  rogue.ws.send(packFrame({ ...base, logits: nan }));
  rogue.ws.send(encodeMessage(base as Message));
  const errors = () =>
    rogue.replies.flatMap((m) => m.type === "error" ? [`${m.code}: ${m.message}`] : []);
  await until(() => errors().length >= 2);
  rogue.ws.close();
  const said = errors().join("\n");
  assert.match(said, /^non_finite: eval_result\.logits\[1\] is NaN/m);
  assert.match(
    said,
    /^unknown_task: eval_result for task \d+ .*evaluation batch 2.*never assigned to you/m,
  );
  assert.ok((c.monitor.rejectedByReason.get("non_finite") ?? 0) >= 1);
  // A real worker then does the whole run, evaluation included.
  const w = worker(c);
  const summary = await c.done;
  await c.close();
  assert.equal((await finish(w.p, [w.out, w.err])).code, 0);
  assert.deepEqual(summary.evaluation, (await scoreOnWasm(c.trainer)).result);
});
