/**
 * Tensor transfer speed over a real WebSocket on loopback: this process is
 * the server (Hono's `upgradeWebSocket` on `Deno.serve`, as the coordinator),
 * a child process is the client (as a worker); both send through
 * shared/wire/transfer.ts exactly as the mesh does. Measures, per payload size:
 *
 * - down: coordinator → worker, a `weights` message (prepare and validate,
 *   declaration, chunks, reassembly and the receiver's validation) until the
 *   worker's acknowledgement arrives;
 * - up: worker → coordinator, a `result` message with a dense gradient of
 *   that size, timed by the worker from `prepareMessage` to the
 *   coordinator's acknowledgement;
 *
 * and, for comparison, the old path (one msgpack frame each way, which only
 * works below Deno's 64 MiB message limit) at `--baseline-mb`. Up is measured
 * twice per size: each result into fresh memory, and into recycled memory
 * (path "chunked, results recycled"), as coordinator/coordinator.ts does
 * since 2026-12-02: a summed result's gradient goes back to the receive pool.
 *
 *   deno run -A bench/transfer.ts [--sizes-mb 100,1000] [--reps 3] [--baseline-mb 48]
 *     [--out bench/results/transfer-DATE.json]
 *
 * MB are 10^6 bytes; MB/s is payload bytes over wall time. The first two
 * repetitions of a size are cold: the receiver allocates its arrays (on this
 * VM a never-touched page costs ~11 µs, ~90 MB/s), and so does Deno for its
 * per-message buffers until its heap has grown. From the third on, the worker
 * fills recycled weights arrays, as a run does from its third weights version
 * (`steadyMBps`); the coordinator still allocates each result's array.
 *
 * @module
 */
import process from "node:process";
import { Hono } from "hono";
import { upgradeWebSocket } from "hono/deno";
import { parseFlagsOrExit } from "../shared/cli/flags.ts";
import {
  encodeMessage,
  type Message,
  type ResultMessage,
  type WeightsMessage,
} from "../shared/wire/protocol.ts";
import {
  BufferPool,
  CHUNK_BYTES,
  MAX_BUFFERED_BYTES,
  type Outgoing,
  prepareMessage,
  Reassembler,
  Sender,
} from "../shared/wire/transfer.ts";

const RUN = "bench-run";

/** CPU time of this process so far, ms (user + system). */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** A finite, non-trivial payload of `floats` elements (one per size, reused: never modified). */
const payloads = new Map<number, Float32Array>();
function payload(floats: number): Float32Array {
  let a = payloads.get(floats);
  if (a) return a;
  a = new Float32Array(floats);
  for (let i = 0; i < floats; i++) a[i] = ((i * 2654435761) % 1000003) * 1e-6 - 0.5;
  payloads.clear();
  payloads.set(floats, a);
  return a;
}

/** Sends over `sender` as the given path: chunked transfers, or one msgpack frame. */
function outgoing(m: Message, mode: "chunked" | "single"): Outgoing {
  return mode === "chunked" ? prepareMessage(m, { runId: RUN }) : encodeMessage(m, {
    maxBytes: 63 * 1024 * 1024,
  });
}

/**
 * A connection end: sender + reassembler on a WebSocket, whole messages to
 * `onMessage`. `pool`: receive into recycled arrays (the worker recycles the
 * previous weights once new ones are installed; the coordinator has none).
 */
function endpoint(ws: WebSocket, onMessage: (m: Message) => void, pool?: BufferPool) {
  ws.binaryType = "arraybuffer";
  const sender = new Sender(ws);
  const receiver = new Reassembler({
    maxTransferBytes: 4 * 1024 ** 3,
    runId: RUN,
    maxFrameBytes: 63 * 1024 * 1024,
    pool,
  });
  ws.onmessage = (e) => {
    const m = receiver.receive(new Uint8Array(e.data as ArrayBuffer));
    if (m) onMessage(m);
  };
  return sender;
}

if (Deno.args[0] === "--client") {
  // The worker side: acknowledge weights, answer a request with a result of that many floats.
  const ws = new WebSocket(Deno.args[1]);
  let upTimer: { t0: number; bytes: number; mode: string } | null = null;
  let lastCpu = cpuMs();
  const pool = new BufferPool(2);
  let installed: Float32Array | null = null;
  const sender = endpoint(ws, (m) => {
    if (m.type === "weights") {
      // As worker/client.ts: the previous weights go back to the pool.
      if (installed) pool.recycle(installed);
      installed = m.data as Float32Array;
      sender.send(encodeMessage({ type: "heartbeat", time: m.version }));
      const cpu = cpuMs();
      console.log(JSON.stringify({ down: m.data.byteLength, cpuMs: cpu - lastCpu }));
      lastCpu = cpu;
    } else if (m.type === "request") {
      const mode = m.capacity % 2 === 0 ? "chunked" : "single";
      const grad = payload(Math.floor(m.capacity / 2));
      const result: ResultMessage = {
        type: "result",
        taskId: 1,
        step: 0,
        index: 0,
        weightsVersion: 0,
        grad,
        loss: 1,
        count: 1,
        timings: { computeMs: 0, adversaryMs: 0, encodeMs: 0 },
      };
      lastCpu = cpuMs();
      upTimer = { t0: performance.now(), bytes: grad.byteLength, mode };
      sender.send(outgoing(result, mode));
    } else if (m.type === "heartbeat" && upTimer) {
      const ms = performance.now() - upTimer.t0;
      const cpu = cpuMs();
      console.log(
        JSON.stringify({ up: upTimer.bytes, mode: upTimer.mode, ms, cpuMs: cpu - lastCpu }),
      );
      lastCpu = cpu;
      upTimer = null;
    } else if (m.type === "bye") ws.close(1000, "bye");
  }, pool);
  await new Promise((r) => (ws.onclose = r));
  Deno.exit(0);
}

const flags = parseFlagsOrExit(Deno.args, {
  "sizes-mb": { type: "string", default: "100,1000", help: "payload sizes, MB (10^6 bytes)" },
  reps: {
    type: "int",
    default: 5,
    help: "repetitions per size and direction (the first two are cold: see the module doc)",
  },
  "baseline-mb": {
    type: "number",
    default: 48,
    help: "payload of the single-frame comparison (must stay under 64 MiB); 0: skip",
  },
  out: { type: "string", help: "JSON output (default bench/results/transfer-DATE.json)" },
}, "deno run -A bench/transfer.ts [flags]");

/** The coordinator side's receive pool, as coordinator/coordinator.ts makes it (room for the largest). */
const serverPool = new BufferPool(2, {
  reserveElements: Math.floor(Math.max(...flags["sizes-mb"].split(",").map(Number)) * 1e6 / 4),
  minBytes: CHUNK_BYTES,
});
let serverSender: Sender | null = null;
let onServerMessage: (m: Message) => void = () => {};
const connected = Promise.withResolvers<void>();
const app = new Hono();
app.get(
  "/ws",
  upgradeWebSocket(() => ({
    onOpen(_evt, ws) {
      serverSender = endpoint(ws.raw as WebSocket, (m) => onServerMessage(m), serverPool);
      connected.resolve();
    },
  })),
);
const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, app.fetch);
const client = new Deno.Command(Deno.execPath(), {
  args: [
    "run",
    "-A",
    new URL(import.meta.url).pathname,
    "--client",
    `ws://127.0.0.1:${server.addr.port}/ws`,
  ],
  stdout: "piped",
  stderr: "inherit",
}).spawn();
const clientLines: string[] = [];
const lineWaiters: ((l: string) => void)[] = [];
void (async () => {
  let buf = "";
  for await (const chunk of client.stdout.pipeThrough(new TextDecoderStream())) {
    buf += chunk;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const w = lineWaiters.shift();
      if (w) w(line);
      else clientLines.push(line);
    }
  }
})();
const nextLine = () =>
  clientLines.length > 0
    ? Promise.resolve(clientLines.shift()!)
    : new Promise<string>((r) => lineWaiters.push(r));
await connected.promise;
const sender = serverSender!;
const loadAtStart = Deno.loadavg();

/** MB/s at which this machine hands out never-touched memory (allocate 256 MB, touch each page). */
function freshMemoryMBps(): number {
  const t0 = performance.now();
  const a = new Uint8Array(256e6);
  for (let i = 0; i < a.length; i += 4096) a[i] = 1;
  return Math.round(256 / ((performance.now() - t0) / 1000));
}
/** MB/s of copying into memory already touched. */
function copyMBps(): number {
  const a = new Uint8Array(64e6).fill(1), b = new Uint8Array(64e6).fill(2);
  const t0 = performance.now();
  for (let r = 0; r < 4; r++) a.set(b);
  return Math.round(256 / ((performance.now() - t0) / 1000));
}
const memory = { freshPagesMBps: freshMemoryMBps(), copyMBps: copyMBps() };
console.log(
  `memory: fresh pages at ${memory.freshPagesMBps} MB/s, copies at ${memory.copyMBps} MB/s`,
);

let version = 0;
/** One transfer: wall ms, and CPU ms of the coordinator side and of the worker side. */
interface Trial {
  ms: number;
  serverCpuMs: number;
  clientCpuMs: number;
}

async function down(bytes: number, mode: "chunked" | "single"): Promise<Trial> {
  const data = payload(Math.floor(bytes / 4));
  const v = ++version;
  const acked = new Promise<void>((r) => {
    onServerMessage = (m) => {
      if (m.type === "heartbeat" && m.time === v) r();
    };
  });
  const t0 = performance.now(), c0 = cpuMs();
  const m: WeightsMessage = { type: "weights", runId: RUN, version: v, encoding: "f32", data };
  sender.send(outgoing(m, mode));
  await acked;
  const ms = performance.now() - t0, serverCpuMs = cpuMs() - c0;
  const line = JSON.parse(await nextLine()) as { cpuMs: number };
  return { ms, serverCpuMs, clientCpuMs: line.cpuMs };
}

async function up(bytes: number, mode: "chunked" | "single", recycle: boolean): Promise<Trial> {
  onServerMessage = (m) => {
    if (m.type !== "result") return;
    sender.send(encodeMessage({ type: "heartbeat", time: 0 }));
    // The accumulator, once it has summed a result, hands its gradient back (or frees it).
    if (recycle) serverPool.recycle(m.grad);
  };
  const floats = Math.floor(bytes / 4);
  const c0 = cpuMs();
  // capacity = 2·floats (+1 for the single-frame path): the client's instruction.
  sender.send(
    encodeMessage({ type: "request", capacity: 2 * floats + (mode === "single" ? 1 : 0) }),
  );
  const line = JSON.parse(await nextLine()) as { ms: number; cpuMs: number };
  return { ms: line.ms, serverCpuMs: cpuMs() - c0, clientCpuMs: line.cpuMs };
}

interface Row {
  path: "chunked" | "chunked, results recycled" | "single frame (msgpack, the old path)";
  direction: "down (coordinator → worker, weights)" | "up (worker → coordinator, result)";
  bytes: number;
  ms: number[];
  bestMBps: number;
  medianMBps: number;
  /** CPU ms per trial, coordinator side and worker side. */
  coordinatorCpuMs: number[];
  workerCpuMs: number[];
  /** What the busier side's median CPU time allows if each side had a core to itself. */
  cpuBoundMBps: number;
  /** Median MB/s of the repetitions after the first two (null with fewer than 4). */
  steadyMBps: number | null;
}
const rows: Row[] = [];
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
async function measure(bytes: number, mode: "chunked" | "single") {
  const runs = mode === "chunked"
    ? ["down", "up", "up recycled"] as const
    : ["down", "up"] as const;
  for (const run of runs) {
    const dir = run === "down" ? "down" : "up";
    const recycle = run === "up recycled";
    serverPool.clear(); // each run starts from no recycled memory
    const trials: Trial[] = [];
    for (let r = 0; r < flags.reps; r++) {
      trials.push(dir === "down" ? await down(bytes, mode) : await up(bytes, mode, recycle));
    }
    const mbps = trials.map((t) => bytes / 1e6 / (t.ms / 1000));
    const round = (x: number) => Math.round(x * 10) / 10;
    const busier = Math.max(
      median(trials.map((t) => t.serverCpuMs)),
      median(trials.map((t) => t.clientCpuMs)),
    );
    const row: Row = {
      path: mode === "single"
        ? "single frame (msgpack, the old path)"
        : recycle
        ? "chunked, results recycled"
        : "chunked",
      direction: dir === "down"
        ? "down (coordinator → worker, weights)"
        : "up (worker → coordinator, result)",
      bytes,
      ms: trials.map((t) => round(t.ms)),
      bestMBps: Math.round(Math.max(...mbps)),
      medianMBps: Math.round(median(mbps)),
      coordinatorCpuMs: trials.map((t) => round(t.serverCpuMs)),
      workerCpuMs: trials.map((t) => round(t.clientCpuMs)),
      cpuBoundMBps: Math.round(bytes / 1e6 / (busier / 1000)),
      steadyMBps: trials.length >= 4 ? Math.round(median(mbps.slice(2))) : null,
    };
    rows.push(row);
    console.log(
      `${row.path.padEnd(38)} ${dir.padEnd(5)} ${(bytes / 1e6).toFixed(0).padStart(5)} MB: ` +
        `best ${row.bestMBps} MB/s, median ${row.medianMBps} MB/s, steady ${row.steadyMBps} MB/s ` +
        `(${row.ms.join(", ")} ms); ` +
        `CPU ms coordinator ${row.coordinatorCpuMs.join(", ")}, worker ${
          row.workerCpuMs.join(", ")
        } → ${row.cpuBoundMBps} MB/s with a core each`,
    );
  }
}

if (flags["baseline-mb"] > 0) {
  const b = Math.round(flags["baseline-mb"] * 1e6);
  await measure(b, "single");
  await measure(b, "chunked");
}
for (const s of flags["sizes-mb"].split(",").map(Number)) {
  await measure(Math.round(s * 1e6), "chunked");
}

sender.send(encodeMessage({ type: "bye", reason: "done" }));
await client.status;
await server.shutdown();

const date = new Date().toISOString().slice(0, 10);
const out = flags.out ?? `bench/results/transfer-${date}.json`;
const cpu = (() => {
  try {
    return Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? "unknown";
  } catch {
    return "unknown";
  }
})();
await Deno.writeTextFile(
  out,
  JSON.stringify(
    {
      benchmark: "bench/transfer.ts",
      date,
      machine: {
        cpu,
        cores: navigator.hardwareConcurrency,
        loadAverageAtStart: loadAtStart,
        loadAverageAtEnd: Deno.loadavg(),
        memory,
        shared: true,
        note:
          "development machine shared with other work while this ran (load averages above): quote ratios, not absolutes. " +
          "memory.freshPagesMBps is how fast the VM maps never-touched memory: every array a receiver allocates costs that",
      },
      deno: Deno.version.deno,
      transport: { chunkBytes: CHUNK_BYTES, maxBufferedBytes: MAX_BUFFERED_BYTES },
      units:
        "MB = 10^6 bytes; MB/s = payload bytes / wall time, including prepare/validate on both sides",
      rows,
    },
    null,
    2,
  ) + "\n",
);
console.log(`wrote ${out}`);
