import assert from "node:assert/strict";
import { initBackend } from "../shared/backend.ts";
import { parseRunFlags } from "../coordinator/run_config.ts";
import { Trainer } from "../coordinator/trainer.ts";
import { Scheduler, type SchedulerEvents } from "../coordinator/scheduler.ts";
import { encodeMessage, type Frame, type ResultMessage } from "../shared/protocol.ts";
import { denseLayout } from "../shared/sparse_grad.ts";
import { InProcessWorker } from "./support/in_process.ts";
import { tinyModelDir, tinyRunArgs, tinyTaskDir } from "./support/fixtures.ts";

await initBackend("wasm");
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
    taskTimeoutMs: config.taskTimeoutMs,
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
    events: { discarded: (_w, reason) => discarded.push(reason) },
    arrange: (s, t) => {
      let n = 0;
      const rogue = {
        id: "rogue",
        backend: "wasm",
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
                index: taskId % 1_000_000,
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
    () =>
      encodeMessage({
        type: "result",
        taskId: 1,
        step: 0,
        index: 0,
        weightsVersion: 0,
        grad,
        loss: 1,
        count: 1,
        timings: { computeMs: 1, adversaryMs: 0, encodeMs: 0 },
      }),
    /non-finite|NaN/i,
  );
});

Deno.test("an MLM run takes dense gradients only: a row-sparse result is refused by name", async () => {
  const total = 10;
  const s = new Scheduler({ gradLayout: denseLayout(total), taskTimeoutMs: 0 });
  s.setWeights(1, new Uint8Array([1]));
  s.addWorker({ id: "w", backend: "wasm", device: "test", send: () => {} });
  s.addWorker({ id: "v", backend: "wasm", device: "test", send: () => {} });
  const done = s.runStep(0, [{ taskId: 7, index: 0, count: 2, frame: new Uint8Array([2]) }]);
  s.request("w", 1);
  const base: ResultMessage = {
    type: "result",
    taskId: 7,
    step: 0,
    index: 0,
    weightsVersion: 1,
    grad: new Float32Array(total).fill(0.5),
    loss: 1,
    count: 2,
    timings: { computeMs: 1, adversaryMs: 0, encodeMs: 0 },
  };
  const err = s.result("w", { ...base, rows: Int32Array.from([3]), grad: new Float32Array(total) });
  assert.equal(err?.code, "bad_shape");
  assert.match(err?.message ?? "", /dense gradients/);
  // The micro-batch goes to another worker; its dense answer completes the step.
  s.request("v", 1);
  assert.equal(s.result("v", base), null);
  const results = await done;
  assert.deepEqual([...results[0].grad], [...base.grad]);
});
