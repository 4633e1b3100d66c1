/**
 * Tensors of any size over a connection that limits one frame: the transport
 * under the protocol's messages (formats in shared/wire/protocol.ts).
 *
 * A message whose tensors are all small is one frame. Otherwise each large
 * tensor travels as a declared transfer (a `transfer` frame naming run,
 * weights version, task, dtype and length), then chunks of at most
 * {@link CHUNK_BYTES} (a 32-byte header naming transfer, offset and length,
 * then the raw elements), then the message itself with `{ transfer: id }` in
 * the tensor's field. The {@link Reassembler} copies each chunk into a typed
 * array allocated from the declaration, checks every chunk (unknown
 * transfer, wrong dtype, oversized, out of range, duplicate, overlapping)
 * and hands the application the whole, validated message; a message naming
 * an unknown or incomplete transfer is refused. Application code never sees
 * transfers: it sends {@link Outgoing} values and receives whole messages.
 *
 * Flow control: each connection has a {@link Sender}, an asynchronous FIFO
 * queue that writes a frame only while the socket's `bufferedAmount` (Deno
 * counts bytes handed to `send` and not yet written to the kernel) leaves
 * room under {@link MAX_BUFFERED_BYTES}, polling otherwise. So at most about
 * two chunks wait in user space per socket, and a slow socket never holds up
 * another (each queue waits on its own socket only). Polling
 * `bufferedAmount` was chosen over acknowledgements: it needs no round trips
 * (a 4 MiB chunk is written in a few ms, a round trip would idle the pipe),
 * and TCP already bounds what the receiver holds; the receiver's own memory
 * is bounded by the open transfers it accepts ({@link ReassemblerOptions}).
 *
 * Memory: on a machine where fresh pages are expensive (this development
 * VM maps a never-touched page at ~90 MB/s, against ~5 GB/s to copy into a
 * touched one), allocating each transfer's array is the transfer's main
 * cost. A receiver may therefore draw arrays from a {@link BufferPool} its
 * owner refills with arrays it has finished with (the worker recycles the
 * previous weights once the next are installed).
 *
 * A connection that drops mid-transfer loses only what was in flight: the
 * sender's queue and the receiver's partial transfers are dropped
 * ({@link Sender.close}, {@link Reassembler.clear}); the scheduler re-sends
 * weights and re-dispatches tasks to whoever is connected.
 *
 * @module
 */
import {
  CHUNK_HEADER_BYTES,
  type Dtype,
  dtypeOf,
  dtypeOfCode,
  DTYPES,
  type Frame,
  isChunkFrame,
  MAX_FRAME_BYTES,
  type Message,
  type MessageType,
  packFrame,
  parseTransfer,
  ProtocolError,
  readChunkHeader,
  TENSOR_FIELDS,
  type TensorArray,
  type TransferMessage,
  transferRef,
  unpackFrame,
  validateMessage,
  writeChunkHeader,
} from "./protocol.ts";
import { isPlainObject } from "../io/plain_object.ts";

/** Payload bytes of one chunk (the last of a transfer may be shorter). */
export const CHUNK_BYTES = 4 * 1024 * 1024;

/**
 * Most bytes a {@link Sender} lets wait in its socket's send buffer before
 * writing another frame (two chunks: one being written, one ready). A single
 * frame larger than this is written once the buffer is empty.
 */
export const MAX_BUFFERED_BYTES = 2 * CHUNK_BYTES;

/** Default bound on a peer's transfers that are open (declared, not yet used by a message). */
export const MAX_OPEN_TRANSFERS = 8;

/** A tensor of a {@link ChunkedMessage}: where it sits in the message, and its data. */
export interface OutgoingTensor {
  readonly path: readonly string[];
  readonly dtype: Dtype;
  readonly data: TensorArray;
}

/**
 * A validated message whose large tensors travel as transfers. Prepared once
 * and sent to any number of connections (each writes its own declarations,
 * chunks and message frame). Its tensors must not change while it may still
 * be sent: pass a snapshot of anything the caller updates in place.
 */
export class ChunkedMessage {
  /** Payload bytes on the wire (tensors, chunk headers; declarations and the message frame not counted). */
  readonly byteLength: number;

  constructor(
    /** The validated message, tensors included. */
    readonly message: Message,
    /** The run its declarations name. */
    readonly runId: string,
    readonly tensors: readonly OutgoingTensor[],
  ) {
    let n = 0;
    for (const t of tensors) {
      const chunks = Math.ceil(t.data.byteLength / CHUNK_BYTES);
      n += t.data.byteLength + chunks * CHUNK_HEADER_BYTES;
    }
    this.byteLength = n;
  }

  /** The declaration of tensor `i` as transfer `id`. */
  declaration(i: number, id: number, chunkLength: number): TransferMessage {
    const t = this.tensors[i];
    const m = this.message;
    const d: TransferMessage = {
      type: "transfer",
      transfer: id,
      runId: this.runId,
      version: m.type === "weights"
        ? m.version
        : m.type === "task" || m.type === "result" || m.type === "partial"
        ? m.weightsVersion
        : 0,
      dtype: t.dtype,
      length: t.data.length,
      chunkLength,
    };
    if (m.type === "task" || m.type === "result") d.taskId = m.taskId;
    return d;
  }

  /** The message with each tensor replaced by a reference to its transfer. */
  skeleton(ids: readonly number[]): Record<string, unknown> {
    const root: Record<string, unknown> = { ...this.message };
    this.tensors.forEach((t, i) => {
      let o = root;
      for (const key of t.path.slice(0, -1)) {
        o[key] = { ...(o[key] as Record<string, unknown>) };
        o = o[key] as Record<string, unknown>;
      }
      o[t.path.at(-1)!] = { transfer: ids[i] };
    });
    return root;
  }
}

/** What a {@link Sender} sends: one encoded frame, or a message with transfers. */
export type Outgoing = Frame | ChunkedMessage;

/** Payload bytes of an {@link Outgoing}. */
export function outgoingBytes(out: Outgoing): number {
  return out.byteLength;
}

/** Options of {@link prepareMessage}. */
export interface PrepareOptions {
  /** The run a result's transfers name (weights and tasks carry their own). */
  readonly runId?: string;
  /** Tensors of more bytes than this travel as transfers (default {@link CHUNK_BYTES}). */
  readonly inlineBytes?: number;
  /** Frame limit for the single-frame case (default {@link MAX_FRAME_BYTES}). */
  readonly maxFrameBytes?: number;
}

/**
 * Validates `m` (as a receiver will) and makes it ready to send: one frame
 * when every tensor is at most `inlineBytes`, else a {@link ChunkedMessage}
 * holding `m`'s own tensors (not copies).
 */
export function prepareMessage(m: Message, opts: PrepareOptions = {}): Outgoing {
  const clean = validateMessage(m, null);
  const inline = opts.inlineBytes ?? CHUNK_BYTES;
  const tensors: OutgoingTensor[] = [];
  for (const path of TENSOR_FIELDS[clean.type] ?? []) {
    const a = at(clean, path);
    if (isTensor(a) && a.byteLength > inline) tensors.push({ path, dtype: dtypeOf(a), data: a });
  }
  if (tensors.length === 0) {
    return packFrame(clean, { maxBytes: opts.maxFrameBytes }, `${clean.type} message`);
  }
  const runId = "runId" in clean ? clean.runId : opts.runId;
  if (runId === undefined) {
    throw new Error(
      `a ${clean.type} message with transfers needs the run id (PrepareOptions.runId)`,
    );
  }
  return new ChunkedMessage(clean, runId, tensors);
}

function at(o: unknown, path: readonly string[]): unknown {
  let v = o;
  for (const key of path) v = (v as Record<string, unknown> | undefined)?.[key];
  return v;
}

function isTensor(v: unknown): v is TensorArray {
  return v instanceof Float32Array || v instanceof Uint16Array || v instanceof Int32Array ||
    v instanceof Uint8Array;
}

// ---------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------

/**
 * Where a {@link Sender} writes: a WebSocket, or anything with its `send` and
 * `bufferedAmount`. `send` must be done with the bytes when it returns —
 * Deno's WebSocket copies them (ext/websocket/lib.rs, `send_binary`:
 * `data.to_vec()`), which lets every chunk be built in one reused buffer.
 */
export interface FrameSink {
  send(frame: Uint8Array<ArrayBuffer>): void;
  readonly bufferedAmount: number;
}

/** One frame to write: its size (for flow control) and how to build it, called right before writing. */
interface PendingFrame {
  readonly bytes: number;
  build(): Uint8Array<ArrayBuffer>;
}

/** The chunk buffer shared by every sender of this process (frames are built and written synchronously). */
let scratch = new Uint8Array(0);
function scratchOf(bytes: number): Uint8Array<ArrayBuffer> {
  if (scratch.byteLength < bytes) scratch = new Uint8Array(bytes);
  return scratch;
}

/**
 * The frames of `out`, in order: the declarations, every chunk, the message.
 * `ids[i]` is tensor i's transfer id.
 */
export function* framesOf(
  out: Outgoing,
  ids: readonly number[],
  chunkBytes = CHUNK_BYTES,
  maxFrameBytes = MAX_FRAME_BYTES,
): Generator<PendingFrame> {
  if (out instanceof Uint8Array) {
    yield { bytes: out.byteLength, build: () => out };
    return;
  }
  const limits = { maxBytes: maxFrameBytes };
  const lengths = out.tensors.map((t) =>
    Math.max(1, Math.floor(chunkBytes / DTYPES[t.dtype].bytes))
  );
  for (let i = 0; i < out.tensors.length; i++) {
    const frame = packFrame(out.declaration(i, ids[i], lengths[i]), limits, "transfer declaration");
    yield { bytes: frame.byteLength, build: () => frame };
  }
  for (let i = 0; i < out.tensors.length; i++) {
    const t = out.tensors[i];
    const size = DTYPES[t.dtype].bytes;
    const code = DTYPES[t.dtype].code;
    const src = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    for (let offset = 0; offset < t.data.length; offset += lengths[i]) {
      const length = Math.min(lengths[i], t.data.length - offset);
      const bytes = CHUNK_HEADER_BYTES + length * size;
      yield {
        bytes,
        build: () => {
          const frame = scratchOf(bytes).subarray(0, bytes);
          writeChunkHeader(frame, { transfer: ids[i], dtype: code, offset, length });
          frame.set(src.subarray(offset * size, (offset + length) * size), CHUNK_HEADER_BYTES);
          return frame;
        },
      };
    }
  }
  const frame = packFrame(out.skeleton(ids), limits, `${out.message.type} message`);
  yield { bytes: frame.byteLength, build: () => frame };
}

/** Options of a {@link Sender}. */
export interface SenderOptions {
  /** Flow-control bound (default {@link MAX_BUFFERED_BYTES}). */
  readonly maxBufferedBytes?: number;
  /** Chunk payload size (default {@link CHUNK_BYTES}). */
  readonly chunkBytes?: number;
  readonly maxFrameBytes?: number;
  /** Every frame written, by size (metrics). */
  readonly sent?: (bytes: number) => void;
  /** The sink refused a frame (the socket closed); the sender has stopped. */
  readonly failed?: (e: unknown) => void;
}

/** Thrown by {@link Sender.send} once the sender is closed. */
export class LinkClosedError extends Error {
  override name = "LinkClosedError";
}

/**
 * One connection's send queue with flow control. {@link send} never blocks:
 * a frame goes out at once when the queue is empty and the socket has room,
 * otherwise it is queued and written as the socket drains.
 */
export class Sender {
  #queue: Outgoing[] = [];
  #running = false;
  #closed = false;
  #nextId = 1;
  #idle: (() => void)[] = [];
  readonly #max: number;
  readonly #chunkBytes: number;
  readonly #maxFrame: number;

  constructor(readonly sink: FrameSink, readonly options: SenderOptions = {}) {
    this.#max = options.maxBufferedBytes ?? MAX_BUFFERED_BYTES;
    this.#chunkBytes = options.chunkBytes ?? CHUNK_BYTES;
    this.#maxFrame = options.maxFrameBytes ?? MAX_FRAME_BYTES;
    if (this.#chunkBytes + CHUNK_HEADER_BYTES > this.#maxFrame) {
      throw new Error(`chunks of ${this.#chunkBytes} bytes would exceed the frame limit`);
    }
  }

  /** Items waiting (a transfer being written counts until its last frame). */
  get queued(): number {
    return this.#queue.length + (this.#running ? 1 : 0);
  }

  /** Whether {@link close} was called or the sink failed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Queues `out` (throws {@link LinkClosedError} once closed). */
  send(out: Outgoing): void {
    if (this.#closed) throw new LinkClosedError("the connection is closed");
    if (!this.#running && out instanceof Uint8Array && this.#room(out.byteLength)) {
      this.#write(out);
      return;
    }
    this.#queue.push(out);
    if (!this.#running) void this.#pump();
  }

  /** Resolves when everything queued so far is written (or dropped by a close). */
  drained(): Promise<void> {
    if (!this.#running && this.#queue.length === 0) return Promise.resolve();
    return new Promise((r) => this.#idle.push(r));
  }

  /** Stops: what is queued is dropped. Returns how many items were dropped. */
  close(): number {
    const dropped = this.#queue.length + (this.#running ? 1 : 0);
    this.#closed = true;
    this.#queue = [];
    return dropped;
  }

  #room(bytes: number): boolean {
    const b = this.sink.bufferedAmount;
    return b === 0 || b + bytes <= this.#max;
  }

  #write(frame: Uint8Array<ArrayBuffer>): void {
    try {
      this.sink.send(frame);
    } catch (e) {
      this.close();
      this.options.failed?.(e);
      throw e;
    }
    this.options.sent?.(frame.byteLength);
  }

  async #pump(): Promise<void> {
    this.#running = true;
    try {
      while (this.#queue.length > 0 && !this.#closed) {
        const out = this.#queue.shift()!;
        const ids = out instanceof Uint8Array ? [] : out.tensors.map(() => this.#id());
        for (const f of framesOf(out, ids, this.#chunkBytes, this.#maxFrame)) {
          while (!this.#room(f.bytes)) {
            await new Promise((r) => setTimeout(r, 1));
            if (this.#closed) return;
          }
          if (this.#closed) return;
          this.#write(f.build());
        }
      }
    } catch {
      // #write closed the sender and reported the failure.
    } finally {
      this.#running = false;
      const idle = this.#idle;
      this.#idle = [];
      for (const r of idle) r();
    }
  }

  #id(): number {
    const id = this.#nextId;
    this.#nextId = this.#nextId >= 0xffffffff ? 1 : this.#nextId + 1;
    return id;
  }
}

// ---------------------------------------------------------------------------
// Receiving
// ---------------------------------------------------------------------------

/**
 * Arrays a {@link Reassembler} may fill instead of allocating fresh memory
 * (on some hosts a never-touched page costs far more than a copy:
 * docs/platform.md, "Large frames and BLAS"). An array of a dtype is reused
 * for any later tensor of that dtype that fits in its buffer, as a view of
 * exactly the tensor's length; so results whose length varies (row-sparse
 * gradients) share buffers when the pool allocates them with room to spare
 * (`reserveElements`). Only arrays nobody reads any more may be recycled.
 */
export class BufferPool {
  #free: TensorArray[] = [];
  readonly reserveElements: number;
  readonly minBytes: number;

  /**
   * Keeps at most `capacity` arrays (the oldest are let go), and only those
   * of at least `minBytes` (smaller tensors travel inside their message and
   * are never asked for: the coordinator passes {@link CHUNK_BYTES}). For a
   * miss on a tensor of at least half of `reserveElements`, it allocates
   * `reserveElements`, so that later, longer ones fit.
   */
  constructor(
    readonly capacity = 2,
    opts: { readonly reserveElements?: number; readonly minBytes?: number } = {},
  ) {
    this.reserveElements = opts.reserveElements ?? 0;
    this.minBytes = opts.minBytes ?? 0;
  }

  /** Arrays held. */
  get size(): number {
    return this.#free.length;
  }

  /** Offers `a` (its whole buffer) for reuse: the caller promises nothing reads or writes it any more. */
  recycle(a: TensorArray): void {
    if (this.capacity <= 0 || !(a.buffer instanceof ArrayBuffer) || a.buffer.detached) return;
    if (a.buffer.byteLength < this.minBytes) return;
    if (this.#free.some((f) => f.buffer === a.buffer)) return;
    const elements = a.buffer.byteLength / a.BYTES_PER_ELEMENT;
    const whole = a.byteOffset === 0 && a.length === elements
      ? a
      : viewOf(dtypeOf(a), a.buffer, elements);
    if (this.#free.length >= this.capacity) this.#free.shift();
    this.#free.push(whole);
  }

  /** A recycled array of this dtype viewed at exactly `length` (the smallest that fits), or null. */
  take(dtype: Dtype, length: number): TensorArray | null {
    let best = -1;
    for (let i = 0; i < this.#free.length; i++) {
      const f = this.#free[i];
      if (dtypeOf(f) !== dtype || f.length < length) continue;
      if (best < 0 || f.length < this.#free[best].length) best = i;
    }
    if (best < 0) return null;
    const [f] = this.#free.splice(best, 1);
    return f.length === length ? f : viewOf(dtype, f.buffer as ArrayBuffer, length);
  }

  /** Lets every held array go. */
  clear(): void {
    this.#free = [];
  }

  /** {@link take}, or a new array with room for `reserveElements`, viewed at `length`. */
  allocate(dtype: Dtype, length: number): TensorArray {
    const reused = this.take(dtype, length);
    if (reused) return reused;
    // The reserve is for tensors of its kind (a gradient, dense or row-sparse), not for small ones.
    if (length >= this.reserveElements || 2 * length < this.reserveElements) {
      return DTYPES[dtype].make(length);
    }
    return viewOf(dtype, DTYPES[dtype].make(this.reserveElements).buffer as ArrayBuffer, length);
  }
}

/** The first `length` elements of `buffer` as a `dtype` array. */
function viewOf(dtype: Dtype, buffer: ArrayBuffer, length: number): TensorArray {
  switch (dtype) {
    case "f32":
      return new Float32Array(buffer, 0, length);
    case "f16":
      return new Uint16Array(buffer, 0, length);
    case "i32":
      return new Int32Array(buffer, 0, length);
    case "u8":
      return new Uint8Array(buffer, 0, length);
  }
}

/** Limits of a {@link Reassembler}. */
export interface ReassemblerOptions {
  /** Largest tensor, in bytes, a declaration may announce (the peer's model size); 0 refuses all. */
  maxTransferBytes: number;
  /** Run every declaration must name; null accepts any (until known). */
  runId?: string | null;
  /** Open transfers at once (default {@link MAX_OPEN_TRANSFERS}). */
  maxOpenTransfers?: number;
  /** Largest frame (default {@link MAX_FRAME_BYTES}). */
  maxFrameBytes?: number;
  /** Arrays to fill before allocating new ones (every element is overwritten). */
  pool?: BufferPool;
}

interface Incoming {
  readonly decl: TransferMessage;
  readonly data: TensorArray;
  readonly bytes: Uint8Array;
  readonly size: number;
  /** Chunks received, sorted by offset: [start, end) in elements. */
  readonly starts: number[];
  readonly ends: number[];
  received: number;
}

/** What {@link Reassembler.clear} dropped. */
export interface Dropped {
  readonly transfers: number;
  /** Elements' bytes received into the dropped transfers. */
  readonly receivedBytes: number;
  readonly declaredBytes: number;
}

/** Transfers refused or dropped, remembered so their remaining chunks are ignored quietly. */
const REFUSED_MEMORY = 64;

/**
 * The receiving half of one connection: absorbs declarations and chunks,
 * returns each whole message as it completes. Every refusal is a
 * {@link ProtocolError} naming what was wrong; a transfer with a bad chunk is
 * dropped (its later chunks are ignored, a message naming it is refused).
 */
export class Reassembler {
  /** Largest tensor a declaration may announce, in bytes. */
  maxTransferBytes: number;
  /** Run every declaration must name (null: any). */
  runId: string | null;
  readonly #maxOpen: number;
  readonly #maxFrame: number;
  readonly #pool: BufferPool | null;
  #open = new Map<number, Incoming>();
  #refused = new Map<number, string>();

  constructor(opts: ReassemblerOptions) {
    this.maxTransferBytes = opts.maxTransferBytes;
    this.runId = opts.runId ?? null;
    this.#maxOpen = opts.maxOpenTransfers ?? MAX_OPEN_TRANSFERS;
    this.#maxFrame = opts.maxFrameBytes ?? MAX_FRAME_BYTES;
    this.#pool = opts.pool ?? null;
  }

  /** Transfers declared and not yet used by a message. */
  get open(): number {
    return this.#open.size;
  }

  /** Bytes received so far into open transfers. */
  get receivedBytes(): number {
    let n = 0;
    for (const t of this.#open.values()) n += t.received * t.size;
    return n;
  }

  /**
   * Takes one received frame. Returns the message it completes, or null for
   * a declaration or chunk. Throws {@link ProtocolError}.
   */
  receive(frame: Uint8Array): Message | null {
    if (frame.byteLength > this.#maxFrame) {
      throw new ProtocolError(
        "too_large",
        `frame of ${frame.byteLength} bytes is over the ${this.#maxFrame}-byte limit`,
      );
    }
    if (isChunkFrame(frame)) {
      this.#chunk(frame);
      return null;
    }
    const raw = unpackFrame(frame, { maxBytes: this.#maxFrame });
    if (isPlainObject(raw) && raw.type === "transfer") {
      this.#declare(parseTransfer(raw));
      return null;
    }
    if (isPlainObject(raw)) this.#resolve(raw);
    return validateMessage(raw, frame.buffer);
  }

  /** Drops every open transfer (the connection closed). */
  clear(): Dropped {
    let receivedBytes = 0, declaredBytes = 0;
    for (const t of this.#open.values()) {
      receivedBytes += t.received * t.size;
      declaredBytes += t.data.byteLength;
    }
    const transfers = this.#open.size;
    for (const t of this.#open.values()) this.#pool?.recycle(t.data);
    this.#open.clear();
    this.#refused.clear();
    return { transfers, receivedBytes, declaredBytes };
  }

  #declare(d: TransferMessage): void {
    const fail = (code: "bad_transfer" | "too_large" | "stale" | "oversized_chunk", m: string) => {
      throw new ProtocolError(code, `transfer ${d.transfer}: ${m}`);
    };
    if (this.#open.has(d.transfer)) fail("bad_transfer", "already open (ids must not be reused)");
    if (this.runId !== null && d.runId !== this.runId) {
      fail("stale", `declared for run ${d.runId}, this connection serves run ${this.runId}`);
    }
    const size = DTYPES[d.dtype].bytes;
    const bytes = d.length * size;
    if (bytes > this.maxTransferBytes) {
      fail(
        "too_large",
        `declares ${d.length} ${d.dtype} elements (${bytes} bytes), over this peer's ` +
          `${this.maxTransferBytes}-byte limit (the largest tensor of the run's model)`,
      );
    }
    if (CHUNK_HEADER_BYTES + d.chunkLength * size > this.#maxFrame) {
      fail(
        "oversized_chunk",
        `declares chunks of ${
          d.chunkLength * size
        } bytes, over the ${this.#maxFrame}-byte frame limit`,
      );
    }
    if (this.#open.size >= this.#maxOpen) {
      fail("bad_transfer", `${this.#open.size} transfers already open (at most ${this.#maxOpen})`);
    }
    // A complete transfer overwrites every element, so a recycled array needs no clearing.
    const data = this.#pool?.allocate(d.dtype, d.length) ?? DTYPES[d.dtype].make(d.length);
    this.#refused.delete(d.transfer);
    this.#open.set(d.transfer, {
      decl: d,
      data,
      bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
      size,
      starts: [],
      ends: [],
      received: 0,
    });
  }

  #chunk(frame: Uint8Array): void {
    const h = readChunkHeader(frame);
    const t = this.#open.get(h.transfer);
    if (!t) {
      if (this.#refused.has(h.transfer)) return; // its refusal was already reported
      throw new ProtocolError(
        "unknown_transfer",
        `chunk for transfer ${h.transfer}, which was never declared (or is already used)`,
      );
    }
    try {
      const id = `transfer ${h.transfer}`;
      const dtype = dtypeOfCode(h.dtype);
      if (dtype !== t.decl.dtype) {
        throw new ProtocolError(
          "chunk_dtype",
          `chunk of ${
            dtype ?? `unknown dtype code ${h.dtype}`
          } for ${id}, declared ${t.decl.dtype}`,
        );
      }
      if (h.length === 0) throw new ProtocolError("bad_chunk", `empty chunk for ${id}`);
      if (h.length > t.decl.chunkLength) {
        throw new ProtocolError(
          "oversized_chunk",
          `chunk of ${h.length} elements for ${id}, whose chunks are at most ${t.decl.chunkLength}`,
        );
      }
      const payload = frame.byteLength - CHUNK_HEADER_BYTES;
      if (payload !== h.length * t.size) {
        throw new ProtocolError(
          "bad_chunk",
          `chunk for ${id} carries ${payload} bytes, its header says ${h.length} ${dtype} elements (${
            h.length * t.size
          } bytes)`,
        );
      }
      const end = h.offset + h.length;
      if (end > t.decl.length) {
        throw new ProtocolError(
          "chunk_out_of_range",
          `chunk [${h.offset}, ${end}) of ${id} reaches past its ${t.decl.length} elements`,
        );
      }
      insertRange(t, h.offset, end, id);
      t.bytes.set(frame.subarray(CHUNK_HEADER_BYTES), h.offset * t.size);
      t.received += h.length;
    } catch (e) {
      this.#drop(h.transfer, (e as Error).message);
      throw e;
    }
  }

  /** Replaces every transfer reference in `raw` by its reassembled tensor. */
  #resolve(raw: Record<string, unknown>): void {
    const type = raw.type as MessageType;
    const refs: { path: readonly string[]; id: number }[] = [];
    for (const path of TENSOR_FIELDS[type] ?? []) {
      const id = transferRef(at(raw, path));
      if (id !== null) refs.push({ path, id });
    }
    if (refs.length === 0) return;
    const what = `${type}.${refs.map((r) => r.path.join(".")).join(", ")}`;
    try {
      for (const { path, id } of refs) {
        const t = this.#open.get(id);
        const field = `${type}.${path.join(".")}`;
        if (!t) {
          const why = this.#refused.get(id);
          throw new ProtocolError(
            "unknown_transfer",
            why === undefined
              ? `${field} names transfer ${id}, which was never declared (or is already used)`
              : `${field} names transfer ${id}, which was dropped: ${why}`,
          );
        }
        if (t.received < t.decl.length) {
          throw new ProtocolError(
            "incomplete_transfer",
            `${field} names transfer ${id}, which has ${t.received} of ${t.decl.length} elements ` +
              `(first missing: ${firstGap(t)})`,
          );
        }
        checkBelongs(t.decl, raw, field);
      }
    } catch (e) {
      for (const { id } of refs) this.#drop(id, `the ${what} message naming it was refused`);
      throw e;
    }
    for (const { path, id } of refs) {
      const t = this.#open.get(id)!;
      this.#open.delete(id);
      let o = raw;
      for (const key of path.slice(0, -1)) o = o[key] as Record<string, unknown>;
      o[path.at(-1)!] = t.data;
    }
  }

  #drop(id: number, why: string): void {
    const t = this.#open.get(id);
    if (t) this.#pool?.recycle(t.data); // never handed out: ours to reuse
    this.#open.delete(id);
    this.#refused.set(id, why);
    if (this.#refused.size > REFUSED_MEMORY) {
      this.#refused.delete(this.#refused.keys().next().value!);
    }
  }
}

/** Records chunk [start, end) in `t`'s sorted ranges, refusing duplicates and overlaps. */
function insertRange(t: Incoming, start: number, end: number, id: string): void {
  const { starts, ends } = t;
  // Chunks usually arrive in order: the common case appends.
  let i = starts.length;
  if (i > 0 && starts[i - 1] > start) {
    let lo = 0, hi = starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (starts[mid] <= start) lo = mid + 1;
      else hi = mid;
    }
    i = lo;
  }
  // i: first chunk starting after `start`; i - 1 starts at or before it.
  const prev = i - 1;
  if (prev >= 0 && starts[prev] === start && ends[prev] === end) {
    throw new ProtocolError("duplicate_chunk", `chunk [${start}, ${end}) of ${id} arrived twice`);
  }
  if (prev >= 0 && ends[prev] > start) {
    throw new ProtocolError(
      "overlapping_chunk",
      `chunk [${start}, ${end}) of ${id} overlaps chunk [${starts[prev]}, ${ends[prev]})`,
    );
  }
  if (i < starts.length && starts[i] < end) {
    throw new ProtocolError(
      "overlapping_chunk",
      `chunk [${start}, ${end}) of ${id} overlaps chunk [${starts[i]}, ${ends[i]})`,
    );
  }
  starts.splice(i, 0, start);
  ends.splice(i, 0, end);
}

/** The first missing element range of an incomplete transfer, as text. */
function firstGap(t: Incoming): string {
  let at = 0;
  for (let i = 0; i < t.starts.length; i++) {
    if (t.starts[i] > at) return `[${at}, ${t.starts[i]})`;
    at = t.ends[i];
  }
  return `[${at}, ${t.decl.length})`;
}

/** A transfer serves only the message it was declared for: same weights version, same task. */
function checkBelongs(d: TransferMessage, raw: Record<string, unknown>, field: string): void {
  const type = raw.type;
  // A LoRA `base` belongs to no weights version (declared as 0) and no task.
  const version = type === "weights" ? raw.version : type === "base" ? 0 : raw.weightsVersion;
  const problems: string[] = [];
  if (version !== d.version) {
    problems.push(`declared for weights version ${d.version}, the message says ${String(version)}`);
  }
  if (type === "weights" || type === "base") {
    if (d.taskId !== undefined) problems.push(`declared for task ${d.taskId}`);
  } else if (raw.taskId !== d.taskId) {
    problems.push(
      `declared for task ${d.taskId ?? "(none)"}, the message is task ${String(raw.taskId)}`,
    );
  }
  if (typeof raw.runId === "string" && raw.runId !== d.runId) {
    problems.push(`declared for run ${d.runId}, the message says ${raw.runId}`);
  }
  if (problems.length > 0) {
    throw new ProtocolError(
      "bad_transfer",
      `${field} names transfer ${d.transfer}, which was ${problems.join("; ")}`,
    );
  }
}
