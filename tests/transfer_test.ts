/**
 * shared/wire/transfer.ts: chunked transfers reassemble bit for bit, every bad
 * chunk or reference is refused with its own error, the sender's queue keeps
 * a real socket's buffer bounded and never waits on another socket.
 */
import assert from "node:assert/strict";
import {
  CHUNK_HEADER_BYTES,
  DTYPES,
  type Frame,
  MAX_FRAME_BYTES,
  type Message,
  packFrame,
  type ResultMessage,
  type TaskMessage,
  type TransferMessage,
  type WeightsMessage,
  writeChunkHeader,
} from "../shared/wire/protocol.ts";
import {
  BufferPool,
  CHUNK_BYTES,
  ChunkedMessage,
  type FrameSink,
  framesOf,
  LinkClosedError,
  MAX_BUFFERED_BYTES,
  prepareMessage,
  Reassembler,
  Sender,
} from "../shared/wire/transfer.ts";
import { Rng } from "../shared/method/rng.ts";
import { expectError } from "./support/protocol.ts";
import { deliver } from "./support/transfer.ts";

/** Every finite float32 bit pattern class: random bits, minus NaN/Inf, plus the edge cases. */
function f32Bits(n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const bits = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    let b = (rng.int(0x10000) << 16 | rng.int(0x10000)) >>> 0;
    if ((b & 0x7f800000) === 0x7f800000) b &= 0xbfffffff; // make it finite
    bits[i] = b;
  }
  // -0, the smallest subnormal, the largest finite, 1 - ulp.
  bits.set([0x80000000, 0x00000001, 0x7f7fffff, 0x3f7fffff], 0);
  return new Float32Array(bits.buffer);
}

/** Every finite half-precision bit pattern, in a scrambled order, repeated to `n`. */
function f16Bits(n: number): Uint16Array {
  const out = new Uint16Array(n);
  let k = 0;
  for (let i = 0; k < n; i++) {
    const b = (i * 40503) & 0xffff;
    if ((b & 0x7c00) !== 0x7c00) out[k++] = b;
  }
  return out;
}

function sameBits(a: ArrayBufferView, b: ArrayBufferView): void {
  assert.equal(a.byteLength, b.byteLength);
  const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const y = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  for (let i = 0; i < x.length; i++) {
    if (x[i] !== y[i]) assert.fail(`byte ${i} differs: ${x[i]} vs ${y[i]}`);
  }
}

const weights = (data: Float32Array | Uint16Array, version = 3): WeightsMessage => ({
  type: "weights",
  runId: "run-1",
  version,
  encoding: data instanceof Float32Array ? "f32" : "f16",
  data,
});

function result(grad: Float32Array, rows?: Int32Array): ResultMessage {
  return {
    type: "result",
    taskId: 3_000_002,
    step: 3,
    index: 2,
    weightsVersion: 3,
    grad,
    rows,
    loss: 0.5,
    count: 4,
    timings: { computeMs: 1, adversaryMs: 0, encodeMs: 0 },
  };
}

/** The frames `out` goes out as (each a copy, as a socket delivers them). */
function wire(out: ReturnType<typeof prepareMessage>, chunkBytes = 1000): Uint8Array[] {
  const ids = out instanceof Uint8Array ? [] : out.tensors.map((_, i) => 10 + i);
  return [...framesOf(out, ids, chunkBytes)].map((f) => f.build().slice());
}

const receiver = (over: Partial<ConstructorParameters<typeof Reassembler>[0]> = {}) =>
  new Reassembler({ maxTransferBytes: 1 << 30, runId: "run-1", ...over });

Deno.test("f32 weights reassemble bit for bit across many chunks, in any order", () => {
  const data = f32Bits(10_007, 1);
  const out = prepareMessage(weights(data), { inlineBytes: 64 });
  assert.ok(out instanceof ChunkedMessage);
  const frames = wire(out);
  assert.equal(frames.length, 1 + Math.ceil(10_007 / 250) + 1, "declaration, chunks, message");
  const got = deliver(out, { chunkBytes: 1000 }) as WeightsMessage;
  assert.equal(got.type, "weights");
  assert.notEqual(got.data, data, "the receiver has its own copy");
  sameBits(got.data, data);
  // Chunks reversed: same bits.
  const r = receiver();
  const [decl, ...rest] = frames;
  const message = rest.pop()!;
  assert.equal(r.receive(decl), null);
  for (const f of rest.reverse()) assert.equal(r.receive(f), null);
  const back = r.receive(message) as WeightsMessage;
  sameBits(back.data, data);
  assert.equal(r.open, 0);
});

Deno.test("f16 weights (every finite half bit pattern) reassemble bit for bit", () => {
  const data = f16Bits(70_001);
  const got = deliver(prepareMessage(weights(data), { inlineBytes: 64 }), { chunkBytes: 4096 });
  assert.ok(got.type === "weights" && got.encoding === "f16" && got.data instanceof Uint16Array);
  sameBits(got.data, data);
});

Deno.test("a result's gradient and rows and a task's batch travel as transfers and come back whole", () => {
  const grad = f32Bits(3000, 2);
  const rows = Int32Array.from({ length: 900 }, (_, i) => 3 * i + 1);
  const out = prepareMessage(result(grad, rows), { inlineBytes: 100, runId: "run-1" });
  assert.ok(out instanceof ChunkedMessage);
  assert.deepEqual(out.tensors.map((t) => t.path.join(".")), ["grad", "rows"]);
  const got = deliver(out, { chunkBytes: 512 }) as ResultMessage;
  sameBits(got.grad, grad);
  assert.deepEqual(got.rows, rows);
  assert.equal(got.taskId, 3_000_002);

  const n = 64 * 40;
  const task: TaskMessage = {
    type: "task",
    taskId: 9,
    runId: "run-1",
    step: 1,
    index: 0,
    weightsVersion: 1,
    seed: 1,
    adversary: { mode: "off", steps: 0, lr: 0, eps: 0, norm: "l2", init: 0 },
    batch: {
      inputIds: Int32Array.from({ length: n }, (_, i) => i % 97),
      tokenTypeIds: new Int32Array(n),
      attentionMask: new Uint8Array(n).fill(1),
      labels: new Float32Array(64).fill(1),
      size: 64,
      seqLen: 40,
    },
    hold: false,
  };
  const t = prepareMessage(task, { inlineBytes: 1000 });
  assert.ok(t instanceof ChunkedMessage);
  assert.equal(t.tensors.length, 3, "ids, types and mask are over 1000 bytes; labels are not");
  assert.deepEqual(deliver(t, { chunkBytes: 700 }), task);
});

Deno.test("small messages stay single frames; a result without runId cannot be chunked", () => {
  const small = prepareMessage(weights(new Float32Array([1, 2, 3])));
  assert.ok(small instanceof Uint8Array);
  assert.equal((deliver(small) as WeightsMessage).data[2], 3);
  assert.throws(
    () => prepareMessage(result(new Float32Array(100)), { inlineBytes: 10 }),
    /needs the run id/,
  );
  // The sender validates before anything is sent.
  const bad = new Float32Array(CHUNK_BYTES / 4 + 1);
  bad[12345] = NaN;
  expectError(() => prepareMessage(weights(bad)), "non_finite", /12345/);
});

/** A declaration frame. */
const decl = (over: Partial<TransferMessage> = {}): Frame =>
  packFrame({
    type: "transfer",
    transfer: 5,
    runId: "run-1",
    version: 3,
    dtype: "f32",
    length: 100,
    chunkLength: 40,
    ...over,
  });

/** A chunk frame of `length` elements of `size` bytes, header fields as given. */
function chunk(
  h: { transfer?: number; dtype?: number; offset: number; length: number },
  payloadElements = h.length,
  size = 4,
): Uint8Array<ArrayBuffer> {
  const f = new Uint8Array(CHUNK_HEADER_BYTES + payloadElements * size);
  writeChunkHeader(f, { transfer: h.transfer ?? 5, dtype: h.dtype ?? DTYPES.f32.code, ...h });
  for (let i = CHUNK_HEADER_BYTES; i < f.length; i++) f[i] = i & 0x3f; // small finite floats
  return f;
}

const commit = (over: Record<string, unknown> = {}) =>
  packFrame({
    type: "weights",
    runId: "run-1",
    version: 3,
    encoding: "f32",
    data: { transfer: 5 },
    ...over,
  });

Deno.test("each bad chunk is refused with its own error", () => {
  let r = receiver();
  expectError(
    () => r.receive(chunk({ transfer: 99, offset: 0, length: 4 })),
    "unknown_transfer",
    /transfer 99, which was never declared/,
  );

  r = receiver();
  r.receive(decl());
  expectError(
    () => r.receive(chunk({ dtype: DTYPES.f16.code, offset: 0, length: 4 }, 4, 2)),
    "chunk_dtype",
    /chunk of f16 for transfer 5, declared f32/,
  );

  r = receiver();
  r.receive(decl());
  expectError(
    () => r.receive(chunk({ offset: 0, length: 41 })),
    "oversized_chunk",
    /41 elements.*at most 40/,
  );

  r = receiver();
  r.receive(decl());
  expectError(
    () => r.receive(chunk({ offset: 80, length: 21 })),
    "chunk_out_of_range",
    /\[80, 101\).*100 elements/,
  );

  r = receiver();
  r.receive(decl());
  r.receive(chunk({ offset: 0, length: 40 }));
  expectError(() => r.receive(chunk({ offset: 0, length: 40 })), "duplicate_chunk", /twice/);

  r = receiver();
  r.receive(decl());
  r.receive(chunk({ offset: 40, length: 40 }));
  r.receive(chunk({ offset: 0, length: 30 })); // out of order is fine
  expectError(
    () => r.receive(chunk({ offset: 20, length: 30 })),
    "overlapping_chunk",
    /\[20, 50\) of transfer 5 overlaps chunk \[0, 30\)/,
  );
  r = receiver();
  r.receive(decl());
  r.receive(chunk({ offset: 40, length: 40 }));
  expectError(
    () => r.receive(chunk({ offset: 10, length: 31 })),
    "overlapping_chunk",
    /overlaps chunk \[40, 80\)/,
  );

  r = receiver();
  r.receive(decl());
  expectError(
    () => r.receive(chunk({ offset: 0, length: 4 }, 3)),
    "bad_chunk",
    /12 bytes.*16 bytes/,
  );
  expectError(
    () => r.receive(new Uint8Array([0xc1, 1, 1])),
    "bad_chunk",
    /shorter than its 32-byte/,
  );
  const wrongFormat = chunk({ offset: 0, length: 4 });
  wrongFormat[1] = 9;
  expectError(() => r.receive(wrongFormat), "bad_chunk", /format 9/);
  r = receiver();
  r.receive(decl());
  expectError(() => r.receive(chunk({ offset: 0, length: 0 })), "bad_chunk", /empty/);
});

Deno.test("a message naming a missing, incomplete, refused or foreign transfer is refused", () => {
  // Missing chunk: the message names the first gap.
  let r = receiver();
  r.receive(decl());
  r.receive(chunk({ offset: 0, length: 40 }));
  r.receive(chunk({ offset: 80, length: 20 }));
  expectError(
    () => r.receive(commit()),
    "incomplete_transfer",
    /weights\.data names transfer 5, which has 60 of 100 elements \(first missing: \[40, 80\)\)/,
  );
  // ...and the transfer is gone: its last chunk is ignored, a second message is told why.
  assert.equal(r.receive(chunk({ offset: 40, length: 40 })), null);
  expectError(
    () => r.receive(commit()),
    "unknown_transfer",
    /was dropped: the weights\.data message/,
  );

  // Never declared.
  r = receiver();
  expectError(() => r.receive(commit()), "unknown_transfer", /never declared/);

  // A chunk error drops the transfer; the message naming it says what went wrong.
  r = receiver();
  r.receive(decl());
  r.receive(chunk({ offset: 0, length: 40 }));
  expectError(() => r.receive(chunk({ offset: 0, length: 40 })), "duplicate_chunk");
  assert.equal(r.receive(chunk({ offset: 40, length: 40 })), null, "later chunks: ignored quietly");
  expectError(() => r.receive(commit()), "unknown_transfer", /dropped: chunk \[0, 40\).*twice/);

  // Complete, but declared for another version, task or run.
  const full = (d: Partial<TransferMessage> = {}) => {
    const x = receiver({ runId: null });
    x.receive(decl({ length: 40, ...d }));
    x.receive(chunk({ offset: 0, length: 40 }));
    return x;
  };
  expectError(
    () => full().receive(commit({ version: 4 })),
    "bad_transfer",
    /declared for weights version 3, the message says 4/,
  );
  expectError(() => full({ taskId: 7 }).receive(commit()), "bad_transfer", /declared for task 7/);
  expectError(
    () => full({ runId: "run-2" }).receive(commit()),
    "bad_transfer",
    /declared for run run-2, the message says run-1/,
  );
  const ok = full().receive(commit()) as WeightsMessage;
  assert.equal(ok.data.length, 40);
  // A transfer serves one message: a second one naming it is refused.
  const once = full();
  once.receive(commit());
  expectError(() => once.receive(commit()), "unknown_transfer");
});

Deno.test("declarations: reused ids, too large, too many open, another run, chunks over the frame limit", () => {
  let r = receiver();
  r.receive(decl());
  expectError(() => r.receive(decl()), "bad_transfer", /already open/);
  r = receiver({ maxTransferBytes: 399 });
  expectError(() => r.receive(decl()), "too_large", /100 f32 elements \(400 bytes\).*399-byte/);
  r = receiver({ maxOpenTransfers: 2 });
  r.receive(decl({ transfer: 1 }));
  r.receive(decl({ transfer: 2 }));
  expectError(() => r.receive(decl({ transfer: 3 })), "bad_transfer", /2 transfers already open/);
  r = receiver();
  expectError(() => r.receive(decl({ runId: "old" })), "stale", /run old.*run-1/);
  r = receiver();
  expectError(
    () => r.receive(decl({ chunkLength: MAX_FRAME_BYTES / 4 })),
    "oversized_chunk",
    /frame limit/,
  );
  expectError(() => r.receive(decl({ dtype: "f64" as "f32" })), "malformed", /transfer\.dtype/);
  expectError(() => r.receive(decl({ length: 0 })), "malformed", /transfer\.length/);
  // A frame over the limit, chunk or message, is refused before anything else.
  r = receiver({ maxFrameBytes: 100 });
  expectError(() => r.receive(chunk({ offset: 0, length: 40 })), "too_large", /over the 100-byte/);
  // clear() reports what a disconnect drops.
  r = receiver();
  r.receive(decl());
  r.receive(chunk({ offset: 0, length: 40 }));
  assert.deepEqual(r.clear(), { transfers: 1, receivedBytes: 160, declaredBytes: 400 });
  assert.equal(r.open, 0);
  expectError(() => r.receive(chunk({ offset: 40, length: 40 })), "unknown_transfer");
});

Deno.test("a pool's recycled array is filled by the next transfer of its dtype and length", () => {
  const pool = new BufferPool(2);
  const r = receiver({ pool });
  const first = r.receive(wire(prepareMessage(weights(f32Bits(600, 3)), { inlineBytes: 8 }))[0]);
  assert.equal(first, null);
  r.clear(); // the partial transfer's array goes back to the pool
  assert.equal(pool.size, 1);
  const old = new Float32Array(600).fill(7);
  pool.recycle(old);
  pool.recycle(new Uint16Array(600)); // another dtype: not taken
  assert.equal(pool.size, 2, "capacity 2: the oldest went");
  const data = f32Bits(600, 4);
  let got: Message | null = null;
  for (const f of wire(prepareMessage(weights(data), { inlineBytes: 8 }))) got = r.receive(f);
  assert.ok(got?.type === "weights");
  assert.equal(got.data, old, "filled the recycled array");
  sameBits(got.data, data);
  assert.equal(pool.size, 1);
});

/** A real WebSocket pair in this process: the server's socket and the client. */
async function socketPair(): Promise<{
  server: WebSocket;
  client: WebSocket;
  close: () => Promise<void>;
}> {
  const opened = Promise.withResolvers<WebSocket>();
  const http = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.binaryType = "arraybuffer";
    socket.onopen = () => opened.resolve(socket);
    return response;
  });
  const client = new WebSocket(`ws://127.0.0.1:${http.addr.port}/`);
  client.binaryType = "arraybuffer";
  await new Promise((r) => (client.onopen = r));
  const server = await opened.promise;
  return {
    server,
    client,
    close: async () => {
      const closed = new Promise((r) => (client.onclose = r));
      client.close();
      await closed;
      await http.shutdown();
    },
  };
}

Deno.test("over a real WebSocket: 24 MB arrive exact and the send buffer stays within the bound", async () => {
  const { server, client, close } = await socketPair();
  const chunkBytes = 1 << 20, maxBuffered = 2 << 20;
  let peak = 0;
  const sink: FrameSink = {
    send(f) {
      server.send(f);
      peak = Math.max(peak, server.bufferedAmount);
    },
    get bufferedAmount() {
      return server.bufferedAmount;
    },
  };
  const sender = new Sender(sink, { chunkBytes, maxBufferedBytes: maxBuffered });
  const r = receiver({ runId: "run-1" });
  const got = Promise.withResolvers<Message>();
  client.onmessage = (e) => {
    const m = r.receive(new Uint8Array(e.data as ArrayBuffer));
    if (m) got.resolve(m);
  };
  const data = f32Bits(6_000_000, 5);
  sender.send(prepareMessage(weights(data), { inlineBytes: chunkBytes }));
  assert.equal(sender.queued, 1);
  const m = await got.promise;
  assert.ok(m.type === "weights");
  sameBits(m.data, data);
  assert.ok(peak > 0, "the socket did buffer");
  assert.ok(
    peak <= maxBuffered + chunkBytes + CHUNK_HEADER_BYTES,
    `bufferedAmount reached ${peak}, over ${maxBuffered} + one chunk`,
  );
  await sender.drained();
  await close();
});

Deno.test("a stalled socket holds only its own queue; a closed sender drops its queue and refuses sends", async () => {
  const written: number[] = [];
  const stalled: FrameSink = {
    send: (f) => void written.push(f.byteLength),
    bufferedAmount: 1 << 30,
  };
  const frames: Uint8Array[] = [];
  const free: FrameSink = { send: (f) => void frames.push(f.slice()), bufferedAmount: 0 };
  const a = new Sender(stalled, { chunkBytes: 1024 }), b = new Sender(free, { chunkBytes: 1024 });
  const out = prepareMessage(weights(f32Bits(5000, 6)), { inlineBytes: 64 });
  a.send(out);
  b.send(out);
  await b.drained();
  const r = receiver();
  let m: Message | null = null;
  for (const f of frames) m = r.receive(f);
  assert.ok(m?.type === "weights", "the free socket got everything");
  assert.equal(written.length, 0, "the stalled one wrote nothing (its buffer is full)");
  assert.equal(a.queued, 1);
  assert.equal(a.close(), 1);
  await a.drained();
  assert.throws(() => a.send(new Uint8Array(1)), LinkClosedError);
  // A sink that throws (the socket closed) stops the sender and reports it.
  let failure: unknown = null;
  const dead = new Sender({
    send: () => {
      throw new Error("readyState not OPEN");
    },
    bufferedAmount: 0,
  }, { failed: (e) => (failure = e) });
  assert.throws(() => dead.send(new Uint8Array(3)), /readyState/);
  assert.ok(dead.closed && failure instanceof Error);
  assert.equal(MAX_BUFFERED_BYTES, 2 * CHUNK_BYTES);
});

Deno.test("a pool reuses a buffer for any later tensor that fits, and reserves room on a miss", () => {
  const pool = new BufferPool(2, { reserveElements: 1000 });
  const r = receiver({ pool });
  const receive = (n: number, seed: number) => {
    const data = f32Bits(n, seed);
    let got: Message | null = null;
    for (const f of wire(prepareMessage(weights(data), { inlineBytes: 8 }))) got = r.receive(f);
    assert.ok(got?.type === "weights");
    sameBits(got.data, data);
    return got.data;
  };
  // A miss allocates 1000 elements and hands out a view of the tensor's 600.
  const a = receive(600, 1);
  assert.equal(a.length, 600);
  assert.equal(a.buffer.byteLength, 4000);
  pool.recycle(a);
  // A longer tensor (as a row-sparse gradient with more rows) fills the same buffer.
  const b = receive(900, 2);
  assert.equal(b.buffer, a.buffer, "the recycled buffer was reused");
  pool.recycle(b);
  // One longer than the buffer gets its own memory; the pooled buffer stays for later.
  const c = receive(1200, 3);
  assert.notEqual(c.buffer, a.buffer);
  assert.equal(pool.size, 1);
  // The smallest buffer that fits is the one taken.
  pool.recycle(c);
  assert.equal(receive(700, 4).buffer, a.buffer);
});

Deno.test("a pool keeps only arrays a transfer could fill (minBytes)", () => {
  const pool = new BufferPool(4, { minBytes: 4096 });
  pool.recycle(new Float32Array(100)); // 400 bytes: travels inline, never asked for
  assert.equal(pool.size, 0);
  const big = new Float32Array(1024);
  pool.recycle(big);
  assert.equal(pool.size, 1);
  assert.equal(pool.take("f32", 1024), big);
});
