/**
 * The mesh over real WebSockets between real processes: worker processes
 * killed, joining late, and peers sending bad frames or bad transfers; a
 * model whose weights and gradients are over Deno's 64 MiB message limit,
 * with workers killed while receiving weights and while sending a result.
 * Every run must end with weights bit-identical to the same run computed
 * in-process.
 */
import assert from "node:assert/strict";
import { Packr } from "msgpackr";
import { initBackend } from "../shared/compute/create.ts";
import { parseRunFlags } from "../coordinator/run_config.ts";
import { type Coordinator, startCoordinator } from "../coordinator/coordinator.ts";
import { Trainer } from "../coordinator/trainer.ts";
import { Scheduler } from "../coordinator/scheduler.ts";
import {
  CHUNK_HEADER_BYTES,
  decodeMessage,
  DENO_WEBSOCKET_MESSAGE_LIMIT,
  DTYPES,
  encodeMessage,
  type Message,
  packFrame,
  PROTOCOL_VERSION,
  writeChunkHeader,
} from "../shared/wire/protocol.ts";
import { InProcessWorker, trainInProcess } from "./support/in_process.ts";
import { tinyModelDir, tinyRunArgs, tinyTaskDir } from "./support/fixtures.ts";
import { finish, LineReader, spawnWorker } from "./support/processes.ts";

await initBackend("tfjs-wasm");
const model = await tinyModelDir();
const task = await tinyTaskDir();

async function referenceWeights(): Promise<Float32Array> {
  return (await trainInProcess(tinyRunArgs(model, task))).weights;
}
const reference = await referenceWeights();

async function coordinator(extra: string[] = [], maxFrameBytes?: number): Promise<Coordinator> {
  const { config } = await parseRunFlags(tinyRunArgs(model, task, extra), {}, "");
  return await startCoordinator(config, { log: () => {}, maxFrameBytes });
}

/** A worker process joined to `c`, its output read line by line; `finish()` waits for it and drains. */
function worker(c: Coordinator) {
  const p = spawnWorker(c.wsUrl, c.token);
  const out = new LineReader(p.stdout), err = new LineReader(p.stderr);
  return { p, out, err, finish: () => finish(p, [out, err]) };
}

type WorkerProc = ReturnType<typeof worker>;

/** The end of a run a `watch` interval steers: the summary, once `c` is closed and `first` drained. */
async function endRun(c: Coordinator, watch: ReturnType<typeof setInterval>, first: WorkerProc) {
  const summary = await c.done;
  clearInterval(watch);
  await c.close();
  await first.finish();
  return summary;
}

/** A worker the watch was to start: asserted started. */
function started(w: WorkerProc | null, what: string): WorkerProc {
  assert.ok(w, what);
  return w;
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
  const summary = await endRun(c, watch, a);
  const sb = await b.finish();
  assert.ok(killed, "a worker was killed during the run");
  assert.equal(summary.steps, 4);
  assert.equal(sb.code, 0, b.err.lines.join("\n"));
  assert.deepEqual(c.trainer.weights, reference);
});

Deno.test("a worker process that joins mid-run gets the weights first; result unchanged", async () => {
  const c = await coordinator();
  const a = worker(c);
  let late: WorkerProc | null = null;
  let paused = false;
  const watch = setInterval(() => {
    // The first worker is frozen until the late one has joined, so that it joins mid-run
    // however fast the run goes.
    if (!late && c.trainer.step >= 1) {
      a.p.kill("SIGSTOP");
      paused = true;
      late = worker(c);
    }
    if (paused && c.scheduler.workers.size === 2) {
      paused = false;
      a.p.kill("SIGCONT");
    }
  }, 5);
  await endRun(c, watch, a);
  const l = started(late, "a second worker was started mid-run");
  await l.finish();
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
    backend: "tfjs-wasm",
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
  assert.match(
    errorsOf(oldVersion).join(),
    new RegExp(`bad_version.*99.*speaks ${PROTOCOL_VERSION}`),
  );

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
  // Bad transfers: a chunk nobody declared, a declaration larger than the model, one for
  // another run, and a result naming a transfer that is missing chunks.
  const chunk = new Uint8Array(CHUNK_HEADER_BYTES + 16);
  writeChunkHeader(chunk, { transfer: 77, dtype: DTYPES.f32.code, offset: 0, length: 4 });
  rogue.ws.send(chunk);
  const declare = (over: Record<string, unknown>) =>
    packFrame({
      type: "transfer",
      transfer: 1,
      runId: c.trainer.runId,
      version: 0,
      taskId: 5,
      dtype: "f32",
      length: c.trainer.layout.total,
      chunkLength: 4,
      ...over,
    });
  rogue.ws.send(declare({ length: c.trainer.layout.total + 1 }));
  rogue.ws.send(declare({ runId: "another-run" }));
  rogue.ws.send(declare({}));
  writeChunkHeader(chunk, { transfer: 1, dtype: DTYPES.f32.code, offset: 0, length: 4 });
  rogue.ws.send(chunk);
  rogue.ws.send(packr.pack({ ...result, grad: { transfer: 1 } }));
  await until(() => errorsOf(rogue).length >= 8);
  const said = errorsOf(rogue).join("\n");
  assert.match(said, /too_large/);
  assert.match(said, /unknown_task: result for task 5/);
  assert.match(said, /non_finite.*17/);
  assert.match(said, /unknown_transfer: chunk for transfer 77, which was never declared/);
  assert.match(said, /too_large: transfer 1: declares \d+ f32 elements/);
  assert.match(said, /stale: transfer 1: declared for run another-run/);
  assert.match(said, /incomplete_transfer: result\.grad names transfer 1, which has 4 of \d+/);
  rogue.ws.close();
  await rogue.closed;

  // A real worker now does the whole run.
  const w = worker(c);
  await c.done;
  await c.close();
  assert.equal((await w.finish()).code, 0);
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
  assert.equal((await w.finish()).code, 0);
  assert.deepEqual(c.trainer.weights, reference);
});

Deno.test("weights and gradients over 64 MiB travel chunked; workers killed mid-weights and mid-result cost only those transfers", async () => {
  // 1.1 M positions × hidden 16: 70 MB of f32 weights, and a dense position-embedding
  // gradient of about that size in every result: over Deno's 64 MiB message limit both ways.
  const big = await tinyModelDir(3, { max_position_embeddings: 1_100_000 });
  const args = tinyRunArgs(big, task, [
    "--steps",
    "2",
    "--global-batch",
    "2",
    "--micro-batch",
    "2",
    "--max-len",
    "8",
  ]);
  const { config } = await parseRunFlags(args, {}, "");
  const ref = await Trainer.create(config);
  const weightsBytes = ref.layout.total * 4;
  assert.ok(weightsBytes > DENO_WEBSOCKET_MESSAGE_LIMIT, `weights are ${weightsBytes} bytes`);
  const scheduler = new Scheduler({ gradLayout: ref.gradLayout, taskTimeoutMs: 0 });
  const inProcess = new InProcessWorker("ref", scheduler, ref);
  await ref.run(scheduler);
  await inProcess.settle();

  const logs: string[] = [];
  let bytesInAtAccept = 0, accepted = 0;
  const c = await startCoordinator(config, {
    log: (l) => logs.push(l),
    events: {
      accepted: () => {
        bytesInAtAccept = c.monitor.bytesIn;
        accepted++;
      },
    },
  });
  // B starts only once A is dead, so every byte counted before the kill went to A.
  const a = worker(c);
  let b: WorkerProc | null = null;
  let third: WorkerProc | null = null;
  let killedA = false, killedB = false, bytesOutAtKill = 0, stopping = false;
  const watch = setInterval(() => {
    // A: killed while the first weights (70 MB) stream to it (and maybe to B).
    if (!killedA && c.monitor.bytesOut > 20e6) {
      killedA = true;
      bytesOutAtKill = c.monitor.bytesOut;
      a.p.kill("SIGKILL");
      b = worker(c);
    }
    // B, now alone, while it uploads a result: frozen, and if its result is still not
    // accepted once the coordinator has read what the socket held, killed (else let go,
    // to try its next upload). A third worker takes over.
    if (b && !killedB && !stopping && c.monitor.bytesIn - bytesInAtAccept > 2e6) {
      const bw = b;
      stopping = true;
      const before = accepted;
      bw.p.kill("SIGSTOP");
      setTimeout(() => {
        stopping = false;
        if (accepted !== before) return void bw.p.kill("SIGCONT");
        killedB = true;
        third = worker(c);
        bw.p.kill("SIGKILL");
      }, 300);
    }
  }, 2);
  const summary = await endRun(c, watch, a);
  const bw = started(b, "B was started");
  await bw.finish();
  assert.ok(killedA && killedB && third, "both kills happened");
  // Less than one copy of the weights had been sent in all: A died before it had its weights.
  assert.ok(bytesOutAtKill < weightsBytes, `${bytesOutAtKill} bytes out when A was killed`);
  const t = third as WorkerProc;
  const st = await t.finish();
  assert.equal(st.code, 0, [...t.out.lines, ...t.err.lines, ...logs].join("\n"));
  assert.equal(summary.steps, 2);
  assert.deepEqual(c.trainer.weights, ref.weights, "bit-identical to the in-process run");
  // Each close is logged with its code and what it cost.
  const idOf = (p: Deno.ChildProcess) =>
    logs.map((l) => l.match(new RegExp(`worker (\\S+) joined: .*pid ${p.pid}\\)`))).find((m) => m)
      ?.[1];
  const [ida, idb] = [idOf(a.p), idOf(bw.p)];
  assert.ok(ida && idb, logs.join("\n"));
  const closeOf = (id: string) => logs.find((l) => l.startsWith(`worker ${id}: connection closed`));
  assert.match(closeOf(ida) ?? "", /by the worker or the network: code \d+ \(.*\)/);
  assert.match(
    closeOf(idb) ?? "",
    /code \d+ .*dropped 1 partial transfer\(s\) from it \(\d+\.\d MB of 70\.\d MB\)/,
  );
  // The worker says why its connection closed, too.
  assert.ok(
    t.out.lines.some((l) => /connection closed by this worker \(bye\): code \d+ /.test(l)),
    t.out.lines.join("\n"),
  );
  await Deno.remove(big, { recursive: true });
});
