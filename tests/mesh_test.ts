/**
 * The mesh over real WebSockets between real processes: worker processes
 * killed, joining late, and peers sending bad frames. Every run must end
 * with weights bit-identical to the same run computed in-process.
 */
import assert from "node:assert/strict";
import { Packr } from "msgpackr";
import { initBackend } from "../shared/backend.ts";
import { parseRunFlags } from "../coordinator/run_config.ts";
import { type Coordinator, startCoordinator } from "../coordinator/coordinator.ts";
import { Trainer } from "../coordinator/trainer.ts";
import { Scheduler } from "../coordinator/scheduler.ts";
import {
  decodeMessage,
  encodeMessage,
  type Message,
  PROTOCOL_VERSION,
} from "../shared/protocol.ts";
import { InProcessWorker } from "./support/in_process.ts";
import { tinyModelDir, tinyRunArgs, tinyTaskDir } from "./support/fixtures.ts";
import { finish, LineReader, spawnWorker } from "./support/processes.ts";

await initBackend("wasm");
const model = await tinyModelDir();
const task = await tinyTaskDir();

async function referenceWeights(): Promise<Float32Array> {
  const { config } = await parseRunFlags(tinyRunArgs(model, task), {}, "");
  const trainer = await Trainer.create(config);
  const scheduler = new Scheduler({ gradLayout: trainer.gradLayout, taskTimeoutMs: 0 });
  const w = new InProcessWorker("ref", scheduler, trainer);
  await trainer.run(scheduler);
  await w.settle();
  return trainer.weights;
}
const reference = await referenceWeights();

async function coordinator(extra: string[] = [], maxFrameBytes?: number): Promise<Coordinator> {
  const { config } = await parseRunFlags(tinyRunArgs(model, task, extra), {}, "");
  return await startCoordinator(config, { log: () => {}, maxFrameBytes });
}

function worker(c: Coordinator) {
  const p = spawnWorker(c.wsUrl, c.token);
  return { p, out: new LineReader(p.stdout), err: new LineReader(p.stderr) };
}

Deno.test("a worker process killed with SIGKILL mid-step: the run finishes bit-identical", async () => {
  const c = await coordinator();
  const a = worker(c), b = worker(c);
  let killed = false;
  const watch = setInterval(() => {
    if (!killed && c.trainer.step >= 2 && c.scheduler.workers.size === 2) {
      killed = true;
      a.p.kill("SIGKILL");
    }
  }, 5);
  const summary = await c.done;
  clearInterval(watch);
  await c.close();
  await finish(a.p, [a.out, a.err]);
  const sb = await finish(b.p, [b.out, b.err]);
  assert.ok(killed, "a worker was killed during the run");
  assert.equal(summary.steps, 4);
  assert.equal(sb.code, 0, b.err.lines.join("\n"));
  assert.deepEqual(c.trainer.weights, reference);
});

Deno.test("a worker process that joins mid-run gets the weights first; result unchanged", async () => {
  const c = await coordinator();
  const a = worker(c);
  let late: ReturnType<typeof worker> | null = null;
  const watch = setInterval(() => {
    if (!late && c.trainer.step >= 1) late = worker(c);
  }, 5);
  await c.done;
  clearInterval(watch);
  await c.close();
  await finish(a.p, [a.out, a.err]);
  assert.ok(late, "a second worker was started mid-run");
  const l = late as ReturnType<typeof worker>;
  await finish(l.p, [l.out, l.err]);
  assert.ok(l.out.lines.some((x) => /joined run/.test(x)), l.out.lines.join("\n"));
  assert.deepEqual(c.trainer.weights, reference);
});

/** A raw WebSocket peer that records what the coordinator answers. */
async function rawPeer(
  url: string,
): Promise<{ ws: WebSocket; replies: Message[]; closed: Promise<void> }> {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const replies: Message[] = [];
  ws.onmessage = (e) => replies.push(decodeMessage(new Uint8Array(e.data as ArrayBuffer)));
  const closed = new Promise<void>((r) => (ws.onclose = () => r()));
  await new Promise((r, j) => ((ws.onopen = r), (ws.onerror = j)));
  return { ws, replies, closed };
}

const until = async (f: () => boolean, ms = 10_000) => {
  const t0 = Date.now();
  while (!f()) {
    if (Date.now() - t0 > ms) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
};

function hello(over: Record<string, unknown> = {}): Message {
  return {
    type: "hello",
    protocol: PROTOCOL_VERSION,
    token: "test-token",
    backend: "wasm",
    device: "test",
    pid: 1,
    host: "test",
    ...over,
  } as Message;
}

Deno.test("bad peers are refused with clear errors; the run is unaffected", async () => {
  const c = await coordinator([], 64 * 1024);
  const errorsOf = (p: { replies: Message[] }) =>
    p.replies.filter((m) => m.type === "error").map((m) =>
      m.type === "error" ? `${m.code}: ${m.message}` : ""
    );

  // Wrong token: refused and disconnected.
  const badToken = await rawPeer(c.wsUrl);
  badToken.ws.send(encodeMessage(hello({ token: "nope" })));
  await badToken.closed;
  assert.match(errorsOf(badToken).join(), /^bad_token/);

  // Wrong protocol version: the message names both versions.
  const packr = new Packr({ moreTypes: true, useRecords: false });
  const oldVersion = await rawPeer(c.wsUrl);
  oldVersion.ws.send(packr.pack({ ...hello(), protocol: 99 }));
  await oldVersion.closed;
  assert.match(errorsOf(oldVersion).join(), /bad_version.*99.*1|bad_version.*1.*99/);

  // Malformed msgpack as the first frame.
  const garbage = await rawPeer(c.wsUrl);
  garbage.ws.send(new Uint8Array([0xc1, 0xff, 0x00, 0x13]));
  await garbage.closed;
  assert.match(errorsOf(garbage).join(), /^malformed/);

  // A joined peer sending an oversized frame, bad shapes, a NaN gradient and a result never assigned.
  const rogue = await rawPeer(c.wsUrl);
  rogue.ws.send(encodeMessage(hello()));
  await until(() => rogue.replies.some((m) => m.type === "welcome"));
  rogue.ws.send(new Uint8Array(100 * 1024));
  const grad = new Float32Array(c.trainer.layout.total);
  const result = {
    type: "result",
    taskId: 5,
    step: 0,
    index: 0,
    weightsVersion: 0,
    grad,
    loss: 1,
    count: 4,
    timings: { computeMs: 1, adversaryMs: 0, encodeMs: 0 },
  };
  rogue.ws.send(encodeMessage(result as Message)); // never assigned
  rogue.ws.send(packr.pack({ ...result, taskId: 6, grad: "not an array" }));
  const nan = new Float32Array(c.trainer.layout.total);
  nan[17] = NaN;
  rogue.ws.send(packr.pack({ ...result, grad: nan }));
  await until(() => errorsOf(rogue).length >= 4);
  const said = errorsOf(rogue).join("\n");
  assert.match(said, /too_large/);
  assert.match(said, /unknown_task: result for task 5/);
  assert.match(said, /non_finite.*17/);
  rogue.ws.close();
  await rogue.closed;

  // A real worker now does the whole run.
  const w = worker(c);
  await c.done;
  await c.close();
  assert.equal((await finish(w.p, [w.out, w.err])).code, 0);
  assert.deepEqual(c.trainer.weights, reference);
  assert.ok((c.monitor.rejectedByReason.get("bad_token") ?? 0) >= 1);
});

Deno.test("a worker that joins, takes a task and goes silent is dropped; the run finishes bit-identical", async () => {
  const logs: string[] = [];
  const { config } = await parseRunFlags(
    tinyRunArgs(model, task, ["--worker-silence", "1.5"]),
    {},
    "",
  );
  const c = await startCoordinator(config, { log: (l) => logs.push(l) });
  const silent = await rawPeer(c.wsUrl);
  let closeCode = 0;
  silent.ws.addEventListener("close", (e) => (closeCode = e.code));
  silent.ws.send(encodeMessage(hello()));
  await until(() => silent.replies.some((m) => m.type === "welcome"));
  const welcome = silent.replies.find((m) => m.type === "welcome");
  const id = welcome?.type === "welcome" ? welcome.workerId : "";
  silent.ws.send(encodeMessage({ type: "request", capacity: 1 }));
  await until(() => (c.scheduler.workers.get(id)?.inflight.size ?? 0) > 0);
  // It holds micro-batch 0 of step 0 and never answers, nor sends anything else.
  const w = worker(c);
  await silent.closed;
  assert.equal(closeCode, 4000);
  assert.ok(!c.scheduler.workers.has(id));
  assert.ok(
    logs.some((l) => l.includes(`worker ${id} sent nothing for 1.5 s: dropped`)),
    logs.join("\n"),
  );
  await c.done;
  await c.close();
  assert.equal((await finish(w.p, [w.out, w.err])).code, 0);
  assert.deepEqual(c.trainer.weights, reference);
});
