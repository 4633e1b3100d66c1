import assert from "node:assert/strict";
import { initBackend } from "../shared/compute/create.ts";
import { parseRunFlags } from "../coordinator/run_config.ts";
import { Trainer } from "../coordinator/trainer.ts";
import { Scheduler, type SchedulerEvents } from "../coordinator/scheduler.ts";
import {
  encodeMessage,
  type ErrorCode,
  type EvalResultMessage,
  type Frame,
  type PartialMessage,
  type ResultMessage,
} from "../shared/wire/protocol.ts";
import { batchLogitsOf, type EvalResult } from "../shared/eval/held_out.ts";
import type { HostBatch } from "../shared/model/batch.ts";
import { EVAL_TASK_ID_BASE, MAX_EVAL_BATCHES, meshLogits } from "../coordinator/mesh_eval.ts";
import { WeightsOut } from "../coordinator/weights_out.ts";
import { denseLayout } from "../shared/model/sparse_grad.ts";
import { GradAccumulator } from "../coordinator/grad_accumulator.ts";
import { combineGradients } from "../coordinator/grad_combine.ts";
import { mixSeed, Rng } from "../shared/method/rng.ts";
import { trainingTaskIndex } from "../coordinator/task_ids.ts";
import { InProcessWorker } from "./support/in_process.ts";
import { observeMeshLogits } from "./support/mesh_logits.ts";
import { resultMessage } from "./support/protocol.ts";
import { tinyModelDir, tinyRunArgs, tinyTaskDir } from "./support/fixtures.ts";

await initBackend("tfjs-wasm");
const model = await tinyModelDir();
const task = await tinyTaskDir();

interface Setup {
  workers?: number;
  extra?: string[];
  events?: SchedulerEvents;
  /** Runs once the trainer and scheduler exist, before training. */
  arrange?: (s: Scheduler, t: Trainer, ws: InProcessWorker[]) => void;
}

async function train(
  setup: Setup = {},
): Promise<{ weights: Float32Array; trainer: Trainer; workers: InProcessWorker[] }> {
  const { config } = await parseRunFlags(tinyRunArgs(model, task, setup.extra ?? []), {}, "");
  const trainer = await Trainer.create(config);
  const scheduler = new Scheduler({
    gradLayout: trainer.gradLayout,
    taskTimeoutMs: config.network.taskTimeoutMs,
    events: setup.events,
  });
  const workers = Array.from(
    { length: setup.workers ?? 1 },
    (_, i) => new InProcessWorker(`w${i}`, scheduler, trainer),
  );
  setup.arrange?.(scheduler, trainer, workers);
  const summary = await trainer.run(scheduler);
  assert.equal(summary.steps, 4);
  for (const w of workers) await w.settle();
  return { weights: trainer.weights, trainer, workers };
}

const reference = await train();

Deno.test("the run changes the weights and evaluates", () => {
  assert.ok(reference.trainer.lastEval !== null && reference.trainer.lastEval.examples === 16);
  assert.equal(reference.trainer.weightsVersion, 4);
});

Deno.test("1 and 3 in-process workers end with bit-identical weights", async () => {
  const three = await train({ workers: 3 });
  assert.ok(three.workers.every((w) => w.tasksDone > 0), "every worker took part");
  assert.deepEqual(three.weights, reference.weights);
});

Deno.test("a worker that dies mid-step: its micro-batch is recomputed, weights identical", async () => {
  let redispatched = 0;
  const run = await train({
    workers: 2,
    events: { redispatched: () => redispatched++ },
    arrange: (_s, _t, ws) => {
      ws[0].beforeTask = (step) => {
        if (step === 2) {
          queueMicrotask(() => ws[0].detach());
          return false;
        }
        return true;
      };
    },
  });
  assert.ok(redispatched >= 1);
  assert.deepEqual(run.weights, reference.weights);
});

Deno.test("a straggler past its deadline: another worker answers, first valid answer wins", async () => {
  let timeouts = 0;
  const run = await train({
    workers: 2,
    extra: ["--task-timeout", "0.3"],
    events: { redispatched: (reason) => reason === "timeout" && timeouts++ },
    arrange: (_s, _t, ws) => {
      let hung = false;
      ws[1].beforeTask = (step) => {
        if (step === 1 && !hung) {
          hung = true;
          return false; // swallow one task: it never answers
        }
        return true;
      };
    },
  });
  assert.ok(timeouts >= 1);
  assert.deepEqual(run.weights, reference.weights);
});

Deno.test("a worker joining mid-run gets the current weights first; result unchanged", async () => {
  const run = await train({
    arrange: (s, t, ws) => {
      const late: { w?: InProcessWorker } = {};
      const origin = ws[0].beforeTask;
      ws[0].beforeTask = (step, index) => {
        if (step === 2 && !late.w) {
          late.w = new InProcessWorker("late", s, t);
          ws.push(late.w);
        }
        return origin(step, index);
      };
    },
  });
  assert.ok(run.workers[1].tasksDone > 0, "the late worker computed something");
  assert.deepEqual(run.weights, reference.weights);
});

Deno.test("bad results are refused with clear errors and never combined", async () => {
  const errors: string[] = [];
  const discarded: string[] = [];
  await train({
    workers: 1,
    // The old path, one result per micro-batch: with n_j = 4 (a power of two) the same bits
    // as the reference's tasks of one micro-batch.
    extra: ["--results", "per-micro-batch"],
    events: { discarded: (_w, reason) => discarded.push(reason) },
    arrange: (s, t) => {
      let n = 0;
      const rogue = {
        id: "rogue",
        backend: "tfjs-wasm",
        device: "test",
        send(_frame: Frame) {
          // Answer each task it is given with one kind of bad result.
          queueMicrotask(() => {
            const tasks = [...s.workers.get("rogue")?.inflight ?? []];
            for (const taskId of tasks) {
              const base: ResultMessage = {
                type: "result",
                taskId,
                step: t.step,
                index: trainingTaskIndex(taskId),
                weightsVersion: t.weightsVersion,
                grad: new Float32Array(t.layout.total),
                loss: 0.5,
                count: 4,
                timings: { computeMs: 1, adversaryMs: 0, encodeMs: 0 },
              };
              const variants: ResultMessage[] = [
                { ...base, grad: new Float32Array(7) },
                { ...base, count: 3 },
                { ...base, taskId: 999_999_999 },
                { ...base, weightsVersion: base.weightsVersion + 5 },
              ];
              const err = s.result("rogue", variants[n++ % variants.length]);
              if (err) errors.push(`${err.code}: ${err.message}`);
              s.request("rogue", 1);
            }
          });
        },
      };
      s.addWorker(rogue);
      s.request("rogue", 1);
    },
  }).then((run) => assert.deepEqual(run.weights, reference.weights));
  assert.ok(
    errors.some((e) => /^bad_shape: result.grad has 7 elements/.test(e)),
    errors.join("\n"),
  );
  assert.ok(errors.some((e) => /^bad_shape: result.count is 3/.test(e)), errors.join("\n"));
  assert.ok(
    errors.some((e) => /^unknown_task: result for task 999999999/.test(e)),
    errors.join("\n"),
  );
  assert.ok(errors.some((e) => /^stale/.test(e)), errors.join("\n"));
  assert.ok(
    discarded.includes("invalid") && discarded.includes("unknown_task") &&
      discarded.includes("stale"),
  );
});

Deno.test("a NaN gradient never reaches the coordinator: the protocol refuses to carry it", () => {
  const grad = new Float32Array(10);
  grad[3] = NaN;
  assert.throws(
    () => encodeMessage(resultMessage({ grad })),
    /non-finite|NaN/i,
  );
});

Deno.test("an MLM run takes dense gradients only: a row-sparse result is refused by name", async () => {
  const total = 10;
  const s = new Scheduler({ gradLayout: denseLayout(total), taskTimeoutMs: 0 });
  s.setWeights(1, new Uint8Array([1]));
  s.addWorker({ id: "w", backend: "tfjs-wasm", device: "test", send: () => {} });
  s.addWorker({ id: "v", backend: "tfjs-wasm", device: "test", send: () => {} });
  const accepted: ResultMessage[] = [];
  const done = s.runStep(0, [{ taskId: 7, index: 0, count: 2, frame: new Uint8Array([2]) }], {
    accept: (r) => accepted.push(r),
  });
  s.request("w", 1);
  const base = resultMessage({
    taskId: 7,
    weightsVersion: 1,
    grad: new Float32Array(total).fill(0.5),
    count: 2,
  });
  const err = s.result("w", { ...base, rows: Int32Array.from([3]), grad: new Float32Array(total) });
  assert.equal(err?.code, "bad_shape");
  assert.match(err?.message ?? "", /dense gradients/);
  // The micro-batch goes to another worker; its dense answer completes the step.
  s.request("v", 1);
  assert.equal(s.result("v", base), null);
  const results = await done;
  assert.equal(results.length, 1);
  assert.equal(results[0].index, 0);
  assert.equal(accepted.length, 1);
  assert.deepEqual([...accepted[0].grad], [...base.grad]);
});

/** Links that record which tasks they hold; the test answers them in an order it picks. */
class FakeMesh {
  readonly scheduler: Scheduler;
  readonly acc: GradAccumulator;
  /** Frame → task id, for the task frames this step sends. */
  readonly frames = new Map<Frame, number>();
  /** Worker → tasks it was sent and has not answered. */
  readonly holding = new Map<string, number[]>();
  readonly grads: Float32Array[] = [];
  readonly counts: number[] = [];
  maxHeld = 0;
  maxBuffered = 0;
  discarded: string[] = [];

  constructor(workers: number, readonly total: number, window: number, taskTimeoutMs = 0) {
    this.scheduler = new Scheduler({
      gradLayout: denseLayout(total),
      window,
      taskTimeoutMs,
      events: { discarded: (_w, reason) => this.discarded.push(reason) },
    });
    this.acc = new GradAccumulator(denseLayout(total));
    this.scheduler.setWeights(1, new Uint8Array([0]));
    for (let k = 0; k < workers; k++) {
      const id = `w${k}`;
      this.holding.set(id, []);
      this.scheduler.addWorker({
        id,
        backend: "tfjs-wasm",
        device: "test",
        send: (f) => {
          const taskId = this.frames.get(f as Frame); // weights (a chunked message) are not tasks
          if (taskId !== undefined) this.holding.get(id)!.push(taskId);
        },
      });
    }
  }

  /** Starts a step of n micro-batches with random gradients; every worker asks for one task. */
  start(n: number, seed: number): Promise<unknown> {
    const rng = new Rng(mixSeed(seed));
    const tasks = Array.from({ length: n }, (_, index) => {
      const g = new Float32Array(this.total);
      for (let i = 0; i < this.total; i++) g[i] = (rng.next() - 0.5) * 10 ** (rng.next() * 8 - 4);
      this.grads[index] = g;
      this.counts[index] = 1 + (index % 3);
      const frame = new Uint8Array([index & 0xff, index >> 8]);
      this.frames.set(frame, 100 + index);
      return { taskId: 100 + index, index, count: this.counts[index], frame };
    });
    this.acc.begin(this.counts);
    const done = this.scheduler.runStep(0, tasks, {
      accept: (r) => {
        this.acc.add({ index: r.index, grad: r.grad, loss: r.loss });
        this.maxBuffered = Math.max(this.maxBuffered, this.acc.buffered);
      },
    });
    for (const id of this.holding.keys()) this.scheduler.request(id, 1);
    return done;
  }

  /** Tasks sent to some worker and not answered yet (distinct micro-batches). */
  held(): Set<number> {
    return new Set([...this.holding.values()].flat());
  }

  /** Worker `id` answers task `taskId` correctly and asks for more. */
  answer(id: string, taskId: number): string | null {
    const list = this.holding.get(id)!;
    list.splice(list.indexOf(taskId), 1);
    const index = taskId - 100;
    const err = this.scheduler.result(
      id,
      resultMessage({
        taskId,
        index,
        weightsVersion: 1,
        grad: this.grads[index],
        loss: index / 7,
        count: this.counts[index],
      }),
    );
    this.scheduler.request(id, 1);
    return err?.code ?? null;
  }

  /** Checks the bound after each event: held tasks plus waiting results within the window. */
  check(window: number): void {
    const outstanding = this.held().size + this.acc.buffered;
    this.maxHeld = Math.max(this.maxHeld, outstanding);
    assert.ok(outstanding <= window, `${outstanding} outstanding with window ${window}`);
  }

  expected(): Float32Array {
    return combineGradients(
      this.grads.map((grad, index) => ({ index, grad, count: this.counts[index] })),
      this.total,
    );
  }
}

const u32 = (a: Float32Array) => [...new Uint32Array(a.buffer, a.byteOffset, a.length)];

Deno.test("adversarial arrival (highest index first, the lowest last): results held stay within the window as B grows", async () => {
  const window = 3;
  for (const n of [8, 64, 512]) {
    const mesh = new FakeMesh(4, 5, window);
    const done = mesh.start(n, n);
    mesh.check(window);
    while (mesh.acc.next < n) {
      // Answer the highest-index task anyone holds; the lowest waits as long as anything else can go.
      let best: [string, number] | null = null;
      for (const [id, list] of mesh.holding) {
        for (const t of list) if (!best || t > best[1]) best = [id, t];
      }
      assert.ok(best, `nothing held with ${mesh.acc.next} of ${n} combined: dispatch stalled`);
      assert.equal(mesh.answer(best[0], best[1]), null);
      mesh.check(window);
    }
    const summaries = (await done) as { index: number }[];
    assert.deepEqual(summaries.map((r) => r.index), Array.from({ length: n }, (_, j) => j));
    assert.equal(mesh.maxBuffered, window - 1, `n = ${n}: the buffer fills but never overflows`);
    assert.equal(mesh.scheduler.peakOutstanding, window);
    assert.deepEqual(u32(mesh.acc.finish().grad), u32(mesh.expected()));
  }
});

Deno.test("random arrival orders and worker counts: bounded, and the same bits as combineGradients", async () => {
  for (const [workers, window, seed] of [[1, 2, 1], [2, 2, 2], [3, 5, 3], [5, 4, 4], [8, 8, 5]]) {
    const n = 40;
    const mesh = new FakeMesh(workers, 7, window);
    const rng = new Rng(mixSeed(seed, 99));
    const done = mesh.start(n, 17); // same gradients for every configuration
    while (mesh.acc.next < n) {
      const choices = [...mesh.holding].flatMap(([id, list]) => list.map((t) => [id, t] as const));
      assert.ok(choices.length > 0, "dispatch stalled");
      const [id, t] = choices[Math.floor(rng.next() * choices.length)];
      mesh.answer(id, t);
      mesh.check(window);
    }
    await done;
    assert.ok(mesh.maxBuffered <= window - 1);
    assert.deepEqual(u32(mesh.acc.finish().grad), u32(mesh.expected()), `${workers} workers`);
  }
});

Deno.test("a stalled lowest micro-batch stops further dispatch, times out and is re-dispatched", async () => {
  const window = 2, n = 6;
  const mesh = new FakeMesh(2, 3, window, 40);
  const done = mesh.start(n, 8);
  // w0 holds micro-batch 0 and never answers; w1 answers whatever it gets.
  assert.deepEqual(mesh.holding.get("w0"), [100]);
  assert.deepEqual(mesh.holding.get("w1"), [101]);
  assert.equal(mesh.answer("w1", 101), null);
  mesh.check(window);
  // Micro-batch 2 is outside the window while 0 is missing: w1 waits with nothing to do.
  assert.deepEqual(mesh.holding.get("w1"), []);
  await new Promise((r) => setTimeout(r, 120)); // past the 40 ms deadline: 0 goes to w1
  assert.deepEqual(mesh.holding.get("w1"), [100]);
  mesh.check(window);
  assert.equal(mesh.answer("w1", 100), null);
  assert.equal(mesh.acc.next, 2);
  // The straggler's late answer is discarded as a duplicate, never added twice.
  assert.equal(mesh.answer("w0", 100), null);
  assert.ok(mesh.discarded.includes("duplicate"));
  while (mesh.acc.next < n) {
    const [id, list] = [...mesh.holding].find(([, l]) => l.length > 0)!;
    mesh.answer(id, list[0]);
    mesh.check(window);
  }
  await done;
  assert.deepEqual(u32(mesh.acc.finish().grad), u32(mesh.expected()));
});

Deno.test("runStep refuses tasks out of index order; the scheduler refuses a bad window", () => {
  for (const window of [0, -1, 1.5, NaN]) {
    assert.throws(
      () => new Scheduler({ gradLayout: denseLayout(2), taskTimeoutMs: 0, window }),
      /window must be a positive/,
    );
  }
  const s = new Scheduler({ gradLayout: denseLayout(2), taskTimeoutMs: 0, window: 1 });
  s.setWeights(1, new Uint8Array([0]));
  const task = (index: number) => ({ taskId: index, index, count: 1, frame: new Uint8Array([1]) });
  const accept = () => {};
  assert.throws(() => s.runStep(0, [task(1), task(0)], { accept }), /expected 0 … n−1 in order/);
  assert.throws(() => s.runStep(0, [], { accept }), /no micro-batches/);
});

// ---------------------------------------------------------------------------
// Evaluation on the workers (Scheduler.runEval, coordinator/mesh_eval.ts)
// ---------------------------------------------------------------------------

/** 300 held-out examples: 5 evaluation batches of up to 64. */
const evalTask = await tinyTaskDir(48, 300);

async function evalTrainer(extra: string[] = []): Promise<Trainer> {
  const { config } = await parseRunFlags(tinyRunArgs(model, evalTask, extra), {}, "");
  return await Trainer.create(config);
}

/** The trainer's held-out split scored locally with tfjs-wasm: metrics, batches and logits. */
async function localEvaluation(trainer: Trainer) {
  const local = (await initBackend("tfjs-wasm")).model(trainer.modelConfig, trainer.layout);
  local.setWeights(trainer.weights);
  let batches: readonly HostBatch[] = [];
  let logits: Float32Array[] = [];
  try {
    const result = await trainer.data.evaluate({
      config: trainer.modelConfig,
      logitsAll: async (b) => {
        batches = b;
        logits = await batchLogitsOf(local)(b);
        return logits;
      },
    }, 0);
    return { result, batches, logits };
  } finally {
    local.dispose();
  }
}

/** The same split scored by the scheduler's workers through meshLogits. */
async function meshEvaluation(trainer: Trainer, scheduler: Scheduler, round = 100) {
  if (scheduler.weightsVersion !== trainer.weightsVersion) {
    const v = trainer.weightsVersion;
    scheduler.setWeights(v, new WeightsOut().prepare(trainer.runId, v, trainer.weights, "f32"));
  }
  let logits: Float32Array[] = [];
  const mesh = meshLogits(scheduler, {
    runId: trainer.runId,
    step: trainer.step,
    weightsVersion: trainer.weightsVersion,
    numLabels: trainer.modelConfig.numLabels,
    round,
  });
  const result = await trainer.data.evaluate({
    config: trainer.modelConfig,
    logitsAll: async (b) => (logits = await mesh(b)),
  }, 0);
  return { result, logits };
}

function assertSameLogits(a: Float32Array[], b: Float32Array[]): void {
  assert.equal(a.length, b.length);
  a.forEach((x, i) => assert.deepEqual(u32(x), u32(b[i]), `batch ${i}: not the same bits`));
}

const evalReference = await (async () => {
  const trainer = await evalTrainer();
  return { trainer, ...(await localEvaluation(trainer)) };
})();

Deno.test("evaluation on 1 and 3 in-process workers: the local metrics and the same logit bits, every batch in flight at once", async () => {
  assert.equal(evalReference.batches.length, 5);
  assert.equal(evalReference.result?.examples, 300);
  for (const n of [1, 3]) {
    const trainer = await evalTrainer();
    const scheduler = new Scheduler({ gradLayout: trainer.gradLayout, taskTimeoutMs: 0 });
    const ws = Array.from(
      { length: n },
      (_, i) => new InProcessWorker(`e${i}`, scheduler, trainer),
    );
    const { result, logits } = await meshEvaluation(trainer, scheduler);
    assert.deepEqual(result, evalReference.result);
    assertSameLogits(logits, evalReference.logits);
    // Batches go out to every worker at once, not one batch after another.
    if (n === 1) assert.equal(scheduler.peakOutstanding, 1);
    else assert.ok(scheduler.peakOutstanding >= n, `${scheduler.peakOutstanding} at once`);
    assert.ok(ws.every((w) => w.evalsDone > 0), "every worker scored batches");
    // The trainer's own evaluate goes through the mesh too, and says so.
    const logs: string[] = [];
    const viaTrainer = await trainer.evaluate({ log: (l) => logs.push(l) }, scheduler);
    assert.deepEqual(viaTrainer, evalReference.result);
    assert.ok(logs.some((l) => l.includes(`on ${n} worker(s)`)), logs.join("\n"));
    assert.equal(ws.reduce((a, w) => a + w.tasksDone, 0), 0, "no training task was sent");
    for (const w of ws) await w.settle();
  }
});

Deno.test("no worker connected: the evaluation falls back to the coordinator", async () => {
  const trainer = await evalTrainer();
  const scheduler = new Scheduler({ gradLayout: trainer.gradLayout, taskTimeoutMs: 0 });
  const logs: string[] = [];
  const result = await trainer.evaluate({ log: (l) => logs.push(l) }, scheduler);
  assert.ok(logs.some((l) => l.includes("on the coordinator")), logs.join("\n"));
  assert.deepEqual(result, await trainer.evaluate());
  assert.equal(scheduler.weightsVersion, -1, "nothing was prepared for workers");
});

/**
 * Evaluates with two in-process workers, the first of which takes its
 * `beforeEval` from `withhold` (to drop or swallow a batch); checks the
 * result and logits against the single-process reference and returns the
 * re-dispatch reasons and the second worker.
 */
async function twoWorkerEvaluation(
  trainer: Trainer,
  taskTimeoutMs: number,
  names: readonly [string, string],
  withhold: (first: InProcessWorker) => (index: number) => boolean,
): Promise<{ reasons: string[]; second: InProcessWorker }> {
  const reasons: string[] = [];
  const scheduler = new Scheduler({
    gradLayout: trainer.gradLayout,
    taskTimeoutMs,
    events: { redispatched: (reason) => reasons.push(reason) },
  });
  const [first, second] = names.map((name) => new InProcessWorker(name, scheduler, trainer));
  first.beforeEval = withhold(first);
  const { result, logits } = await meshEvaluation(trainer, scheduler);
  assert.deepEqual(result, evalReference.result);
  assertSameLogits(logits, evalReference.logits);
  await first.settle();
  await second.settle();
  return { reasons, second };
}

Deno.test("a worker that dies mid-evaluation: its batch is scored by another, same logits", async () => {
  const trainer = await evalTrainer();
  let held = -1;
  const { reasons, second } = await twoWorkerEvaluation(
    trainer,
    0,
    ["dying", "other"],
    (dying) => (index) => {
      held = index;
      queueMicrotask(() => dying.detach());
      return false; // dies holding the batch
    },
  );
  assert.ok(held >= 0, "the dying worker held a batch");
  assert.ok(reasons.includes("disconnect"), reasons.join());
  assert.equal(second.evalsDone, 5);
});

Deno.test("an evaluation straggler past its deadline: another worker answers", async () => {
  const trainer = await evalTrainer(["--task-timeout", "0.3"]);
  let swallowed = false;
  const { reasons } = await twoWorkerEvaluation(trainer, 300, ["slow", "fast"], () => () => {
    if (swallowed) return true;
    swallowed = true;
    return false; // never answers this one
  });
  assert.ok(swallowed && reasons.includes("timeout"), reasons.join());
});

Deno.test("bad evaluation results are refused with clear errors and never used", async () => {
  const trainer = await evalTrainer();
  const scheduler = new Scheduler({ gradLayout: trainer.gradLayout, taskTimeoutMs: 0 });
  const errors: string[] = [];
  let n = 0;
  scheduler.addWorker({
    id: "rogue",
    backend: "tfjs-wasm",
    device: "test",
    send() {
      queueMicrotask(() => {
        for (const taskId of [...scheduler.workers.get("rogue")?.inflight ?? []]) {
          const index = taskId - EVAL_TASK_ID_BASE - 100 * MAX_EVAL_BATCHES;
          const base: EvalResultMessage = {
            type: "eval_result",
            taskId,
            step: trainer.step,
            index,
            weightsVersion: trainer.weightsVersion,
            logits: new Float32Array(128),
            timings: { computeMs: 1, adversaryMs: 0, encodeMs: 0 },
          };
          const training: ResultMessage = {
            type: "result",
            taskId,
            step: trainer.step,
            index,
            weightsVersion: trainer.weightsVersion,
            grad: new Float32Array(trainer.layout.total),
            loss: 1,
            count: 64,
            timings: { computeMs: 1, adversaryMs: 0, encodeMs: 0 },
          };
          type Reply = { code: string; message: string } | null;
          const variants: (() => Reply[])[] = [
            () => [
              scheduler.evalResult("rogue", { ...base, taskId: 12345 }),
              scheduler.evalResult("rogue", { ...base, logits: new Float32Array(3) }),
            ],
            () => [scheduler.evalResult("rogue", { ...base, index: index + 1 })],
            () => [scheduler.result("rogue", training)],
            () => [scheduler.evalResult("rogue", { ...base, weightsVersion: 7 })],
          ];
          for (const err of variants[n++ % variants.length]()) {
            if (err) errors.push(`${err.code}: ${err.message}`);
          }
          scheduler.request("rogue", 1);
        }
      });
    },
  });
  scheduler.request("rogue", 1);
  const honest = new InProcessWorker("honest", scheduler, trainer);
  const { result, logits } = await meshEvaluation(trainer, scheduler);
  assert.deepEqual(result, evalReference.result);
  assertSameLogits(logits, evalReference.logits);
  const said = errors.join("\n");
  assert.match(
    said,
    /^bad_shape: eval_result\.logits has 3 elements, expected size · numLabels = 64 · 2 = 128/m,
  );
  assert.match(said, /^bad_shape: task \d+ is evaluation batch \d+, eval_result says \d+/m);
  assert.match(
    said,
    /^malformed: task \d+ is an evaluation batch: answer it with an eval_result, not a result/m,
  );
  assert.match(said, /^stale: stale result: weights version 7/m);
  assert.match(said, /^unknown_task: eval_result for task 12345/m);
  await honest.settle();
});

Deno.test("an f16 run evaluates on f32 weights and trains on f16 ones again afterwards", async () => {
  const f16 = ["--deterministic=false", "--weights-encoding", "f16", "--steps", "3"];
  const run = async (extra: string[]) => {
    const trainer = await evalTrainer([...f16, ...extra]);
    const logits = observeMeshLogits(trainer);
    const scheduler = new Scheduler({ gradLayout: trainer.gradLayout, taskTimeoutMs: 0 });
    const w = new InProcessWorker("w", scheduler, trainer);
    const evals: EvalResult[] = [];
    await trainer.run(scheduler, { evaluated: (_s, _split, r) => evals.push(r) });
    await w.settle();
    return { trainer, evals, logits, evalsDone: w.evalsDone };
  };
  const plain = await run([]);
  const midway = await run(["--eval-every", "1"]);
  assert.equal(midway.evals.length, 3);
  assert.ok(midway.evalsDone >= 15, "every evaluation ran on the worker");
  assert.deepEqual(u32(midway.trainer.weights), u32(plain.trainer.weights));
  // The final evaluation is the f32 model's, as computed locally: the same logit bits.
  assert.equal(midway.logits.length, 3);
  const last = midway.logits[2];
  const local = await localEvaluation(midway.trainer);
  assert.deepEqual(midway.evals.at(-1), local.result);
  assertSameLogits(last, local.logits);
});

Deno.test("runEval refuses a bad label count, tasks out of order and a second job", () => {
  const s = new Scheduler({ gradLayout: denseLayout(2), taskTimeoutMs: 0 });
  s.setWeights(1, new Uint8Array([0]));
  const task = (index: number) => ({ taskId: index, index, count: 1, frame: new Uint8Array([1]) });
  const accept = () => {};
  assert.throws(() => s.runEval(0, [task(0)], { accept, numLabels: 0 }), /numLabels/);
  assert.throws(
    () => s.runEval(0, [task(1), task(0)], { accept, numLabels: 2 }),
    /the evaluation after step 0: task 0 is batch 1; expected 0 … n−1 in order/,
  );
  assert.throws(() => s.runEval(0, [], { accept, numLabels: 2 }), /has no batches/);
  void s.runEval(3, [task(0)], { accept, numLabels: 2 }).catch(() => {});
  assert.throws(
    () => s.runStep(4, [task(0)], { accept }),
    /the evaluation after step 3 is still running/,
  );
  s.abort(new Error("done"));
});

// ---------------------------------------------------------------------------
// Held tasks: one partial per worker per step (issue 21)
// ---------------------------------------------------------------------------

/** The tiny run with 12 micro-batches of 2 per step, without --deterministic unless asked. */
function heldArgs(extra: string[], deterministic: boolean): string[] {
  const args = tinyRunArgs(model, task, ["--global-batch", "24", "--micro-batch", "2", ...extra]);
  return deterministic ? args : args.filter((a) => a !== "--deterministic");
}

interface HeldRun {
  weights: Float32Array;
  workers: InProcessWorker[];
  /** Per step: loss, examples, and how many times each micro-batch was accepted. */
  steps: { loss: number; examples: number; accepted: number[] }[];
  discarded: string[];
  redispatched: string[];
}

/** Trains the held-task run with `n` in-process workers; `arrange` sets up faults. */
async function trainHeld(
  n: number,
  opts: {
    extra?: string[];
    deterministic?: boolean;
    arrange?: (s: Scheduler, t: Trainer, ws: InProcessWorker[]) => void;
  } = {},
): Promise<HeldRun> {
  const { config } = await parseRunFlags(
    heldArgs(opts.extra ?? [], opts.deterministic ?? false),
    {},
    "",
  );
  const trainer = await Trainer.create(config);
  const steps: HeldRun["steps"] = [];
  const discarded: string[] = [], redispatched: string[] = [];
  let accepted = new Array<number>(12).fill(0);
  const scheduler = new Scheduler({
    gradLayout: trainer.gradLayout,
    taskTimeoutMs: config.network.taskTimeoutMs,
    events: {
      accepted: (_w, r) => accepted[r.index]++,
      discarded: (_w, reason) => discarded.push(reason),
      redispatched: (reason) => redispatched.push(reason),
    },
  });
  const workers = Array.from(
    { length: n },
    (_, i) => new InProcessWorker(`w${i}`, scheduler, trainer),
  );
  opts.arrange?.(scheduler, trainer, workers);
  const summary = await trainer.run(scheduler, {
    step: (r) => {
      steps.push({ loss: r.loss, examples: r.examples, accepted });
      accepted = new Array<number>(12).fill(0);
    },
  });
  assert.equal(summary.steps, 4);
  for (const w of workers) await w.settle();
  return { weights: trainer.weights, workers, steps, discarded, redispatched };
}

/** Largest |a − b| relative to the largest |b|. */
function relDiff(a: Float32Array, b: Float32Array): number {
  let d = 0, m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / m;
}

/** Kills worker `w` (in-process: it stops answering and the scheduler forgets it). */
function kill(w: InProcessWorker): void {
  queueMicrotask(() => w.detach());
}

const heldReference = await trainHeld(1);

Deno.test("per-worker results: one partial per worker per step, every micro-batch accepted once", async () => {
  const run = await trainHeld(3);
  for (const s of run.steps) assert.deepEqual(s.accepted, new Array(12).fill(1));
  // Each worker flushes when the step has nothing left for it: at most a few partials each.
  const partials = run.workers.reduce((a, w) => a + w.partials, 0);
  assert.ok(partials <= 3 * 4 + 2, `${partials} partials over 4 steps of 3 workers`);
  assert.ok(heldReference.workers[0].partials === 4, "1 worker: one partial per step");
  assert.ok(relDiff(run.weights, heldReference.weights) < 1e-5);
});

Deno.test("workers killed mid-step after absorbing micro-batches, before reporting: each micro-batch counted exactly once", async () => {
  const run = await trainHeld(3, {
    arrange: (s, t, ws) => {
      // w0 dies on its flush at step 1 (it holds micro-batches, never reports them);
      ws[0].beforeFlush = (step) => {
        if (step !== 1) return true;
        kill(ws[0]);
        return false;
      };
      // w1 dies at step 2 after absorbing two micro-batches (its third task never answers).
      let absorbed = 0;
      ws[1].beforeTask = (step) => {
        if (step !== 2) return true;
        if (++absorbed <= 2) return true;
        kill(ws[1]);
        return false;
      };
      // A fresh worker joins at step 2, so the run keeps two.
      const origin = ws[2].beforeTask;
      ws[2].beforeTask = (step, index) => {
        if (step === 2 && ws.length === 3) ws.push(new InProcessWorker("late", s, t));
        return origin(step, index);
      };
    },
  });
  assert.ok(
    run.redispatched.filter((r) => r === "disconnect").length >= 2,
    run.redispatched.join(),
  );
  for (const [k, s] of run.steps.entries()) {
    assert.deepEqual(s.accepted, new Array(12).fill(1), `step ${k}`);
    assert.equal(s.examples, heldReference.steps[k].examples);
    // Σ n_j·loss_j / Σ n_j: the same terms, summed in another order.
    assert.ok(
      Math.abs(s.loss - heldReference.steps[k].loss) < 1e-9 * Math.abs(s.loss),
      `step ${k}`,
    );
  }
  assert.ok(relDiff(run.weights, heldReference.weights) < 1e-5);
});

Deno.test("deterministic runs: tasks of G micro-batches, 1 vs 2 vs 3 workers bit-identical with random kills", async () => {
  const extra = ["--group", "3"];
  const one = await trainHeld(1, { deterministic: true, extra });
  for (const s of one.steps) assert.deepEqual(s.accepted, new Array(12).fill(1));
  for (let seed = 1; seed <= 3; seed++) {
    for (const n of [2, 3]) {
      const rng = new Rng(mixSeed(seed, n));
      const run = await trainHeld(n, {
        deterministic: true,
        extra,
        arrange: (s, t, ws) => {
          // n − 1 workers die, each at a random step and point: mid-group (a task
          // never answered) or holding a whole group (its flush never answered).
          for (let k = 0; k < n - 1; k++) {
            const w = ws[k], step = rng.int(4), atFlush = rng.next() < 0.5, after = rng.int(3);
            let seen = 0;
            const die = () => {
              kill(w);
              ws.push(new InProcessWorker(`${w.id}-again`, s, t));
              return false;
            };
            if (atFlush) w.beforeFlush = (st) => (st === step ? die() : true);
            else w.beforeTask = (st) => (st === step && seen++ >= after ? die() : true);
          }
        },
      });
      for (const s of run.steps) assert.deepEqual(s.accepted, new Array(12).fill(1));
      assert.deepEqual(run.weights, one.weights, `seed ${seed}, ${n} workers`);
      assert.deepEqual(run.steps.map((s) => s.loss), one.steps.map((s) => s.loss));
    }
  }
  // The bits depend on G: another task size sums in another order.
  const g1 = await trainHeld(1, { deterministic: true, extra: ["--group", "1"] });
  assert.notDeepEqual(g1.weights, one.weights);
});

Deno.test("partial refusals: a wrong micro-batch set, a duplicate and a stale step, each with its own code; the run completes", async () => {
  const tamper = (n: { k: number }) => (p: PartialMessage): PartialMessage[] => {
    switch (n.k++ % 4) {
      case 0: // a set it was not credited: the last micro-batch left out
        return [{ ...p, indices: p.indices.slice(0, -1) }];
      case 1: // the same partial twice
        return [p, p];
      case 2: // another step, then the real one
        return [{ ...p, step: p.step + 7 }, p];
      default:
        return [p];
    }
  };
  const perWorker = await trainHeld(2, {
    arrange: (_s, _t, ws) => void (ws[1].tamper = tamper({ k: 0 })),
  });
  // A deterministic run's groups: a duplicate arrives while the step still runs.
  const grouped = await trainHeld(2, {
    deterministic: true,
    extra: ["--group", "3"],
    arrange: (_s, _t, ws) => void (ws[1].tamper = tamper({ k: 0 })),
  });
  const codes = [...perWorker.workers[1].refusals, ...grouped.workers[1].refusals].map((r) =>
    r.code
  );
  for (const code of ["bad_partial", "duplicate", "stale"]) {
    assert.ok(codes.includes(code as ErrorCode), codes.join());
  }
  for (const reason of ["bad_partial", "duplicate", "stale"]) {
    assert.ok([...perWorker.discarded, ...grouped.discarded].includes(reason), reason);
  }
  for (const run of [perWorker, grouped]) {
    for (const s of run.steps) assert.deepEqual(s.accepted, new Array(12).fill(1));
  }
  assert.ok(relDiff(perWorker.weights, heldReference.weights) < 1e-5);
  const clean = await trainHeld(1, { deterministic: true, extra: ["--group", "3"] });
  assert.deepEqual(grouped.weights, clean.weights);
});

Deno.test("bf16 and f16 partials: the run trains, and the weights stay close to f32's", async () => {
  for (const enc of ["bf16", "f16"]) {
    const run = await trainHeld(2, { extra: ["--grad-encoding", enc] });
    for (const s of run.steps) assert.deepEqual(s.accepted, new Array(12).fill(1));
    const d = relDiff(run.weights, heldReference.weights);
    assert.ok(d > 0 && d < 1e-2, `${enc}: ${d}`);
  }
});

Deno.test("2 workers, 16 micro-batches per step: bytes received per step in results' worth, per-worker vs per-micro-batch", async () => {
  const bytes = async (results: string) => {
    const { config } = await parseRunFlags(
      tinyRunArgs(model, task, ["--global-batch", "32", "--micro-batch", "2", "--results", results])
        .filter((a) => a !== "--deterministic"),
      {},
      "",
    );
    const trainer = await Trainer.create(config);
    const scheduler = new Scheduler({ gradLayout: trainer.gradLayout, taskTimeoutMs: 0 });
    const ws = [0, 1].map((i) => new InProcessWorker(`w${i}`, scheduler, trainer));
    await trainer.run(scheduler);
    for (const w of ws) await w.settle();
    return { total: ws.reduce((a, w) => a + w.bytesSent, 0), steps: trainer.step };
  };
  const old = await bytes("per-micro-batch");
  const held = await bytes("per-worker");
  const result = old.total / (old.steps * 16); // one result, framed
  const worth = (b: { total: number; steps: number }) => b.total / b.steps / result;
  console.log(
    `results' worth received per step: per-micro-batch ${worth(old).toFixed(2)}, ` +
      `per-worker ${worth(held).toFixed(2)} (one result ${Math.round(result)} bytes)`,
  );
  assert.ok(Math.abs(worth(old) - 16) < 1e-9);
  assert.ok(worth(held) <= 4.5, `${worth(held)}`);
});

Deno.test("per-worker stragglers past their deadline: the micro-batch goes to another worker, is never handed to one that holds it, and is counted once", async () => {
  const run = await trainHeld(2, {
    extra: ["--task-timeout", "0.3"],
    arrange: (_s, _t, ws) => {
      // w1 answers two micro-batches of step 1 late: both workers may end up holding them.
      ws[1].delayTask = (step, index) => (step === 1 && index < 4 ? 600 : 0);
      ws[0].delayTask = (step, index) => (step === 2 && index === 0 ? 600 : 0);
    },
  });
  assert.ok(run.redispatched.includes("timeout"), run.redispatched.join());
  for (const w of run.workers) {
    assert.ok(!w.refusals.some((r) => r.code === "bad_partial"), JSON.stringify(w.refusals));
  }
  for (const s of run.steps) assert.deepEqual(s.accepted, new Array(12).fill(1));
  assert.ok(relDiff(run.weights, heldReference.weights) < 1e-5);
});
