/**
 * The coordinator ↔ worker wire protocol, in one module: the typed messages,
 * the protocol version, the frame size limit, the msgpack encoding, the
 * formats of chunked transfers and strict validation of everything a peer
 * sends (architecture principle 4).
 *
 * What the messages carry is the core's, defined once there: the adversary
 * settings (shared/tfjs/adversary.ts), the micro-batch (shared/model/batch.ts), the
 * objective (shared/model/param_layout.ts); this module adds only the wire fields
 * around them and checks them where they enter.
 *
 * Frames are msgpack (msgpackr with `moreTypes`, so typed arrays travel as
 * typed arrays). {@link decodeMessage} returns a fresh object holding only the
 * known fields, or throws a {@link ProtocolError} whose `code` says what was
 * wrong; the receiver answers with an `error` message and drops the frame.
 *
 * Large tensors do not travel inside a message frame: `shared/wire/transfer.ts`
 * sends each as a declared transfer ({@link TransferMessage}), bounded binary
 * chunks (a {@link CHUNK_HEADER_BYTES}-byte header, then raw little-endian
 * elements) and then the message itself, whose tensor field holds a
 * reference `{ transfer: id }`; the receiver reassembles and hands the
 * application a whole message. So {@link MAX_FRAME_BYTES} limits one frame,
 * never the model.
 *
 * Error codes used by decoding: `too_large` (frame over the limit),
 * `malformed` (not msgpack, not an object, unknown type, missing or mistyped
 * field, negative or non-integer ids/steps/versions, values out of range),
 * `bad_shape` (array lengths that disagree), `non_finite` (NaN/Inf in a loss,
 * gradient, logits, weights or labels), `bad_version` (a `hello` of another protocol
 * version), `bad_chunk` (a chunk frame that is not one). The other transfer
 * codes are the reassembler's (shared/wire/transfer.ts). `bad_token`,
 * `unknown_task`, `stale` and `internal` are for the peers' own checks.
 *
 * @module
 */
import { Packr, Unpackr } from "msgpackr";
import {
  ADVERSARY_MODES,
  ADVERSARY_NORMS,
  type AdversaryConfig,
} from "../method/adversary_config.ts";
import type { HostBatch, LabelledBatch } from "../model/batch.ts";
import { type Objective, OBJECTIVES } from "../model/param_layout.ts";
import { maxSequenceLength, type ModelConfig } from "../model/config.ts";
import { denseLayout, packedGradProblem, type SparseLayout } from "../model/sparse_grad.ts";
import { isPlainObject } from "../io/plain_object.ts";
import { sameToken } from "./token.ts";

/**
 * The protocol version a `hello` must carry (2: large tensors travel as
 * chunked transfers; 3: held-out evaluation on the workers, `eval_task` and
 * `eval_result`; 4: `wrong_backend`, the refusal of a worker whose backend is
 * not a deterministic run's; 5: `hello.backend` uses the names that say what
 * runs — `cpu`, `webgpu`, `tfjs-wasm`, `tfjs-cpu`, `tfjs-webgpu`, were
 * `native`, `wasm`, `cpu`, `webgpu`; 6: held tasks — `task.hold`, `done`,
 * `flush`, `partial`, `welcome.gradEncoding` — one gradient per worker per
 * step, and the `bad_partial` and `duplicate` refusals; 7: LoRA —
 * `hello.bases`, `welcome.lora` and the `base` message: the frozen base goes
 * to a worker once, named by its hash, and `weights` then carries the
 * trainable tensors only).
 */
export const PROTOCOL_VERSION = 7;

/**
 * Deno's WebSocket refuses to *receive* a message of this many bytes or more
 * (fastwebsockets' default `max_message_size`, `64 << 20`, which Deno never
 * raises): the receiving side fails with "Frame too large" and the
 * connection closes with code 0 and no reason, in either direction. Sending
 * has no limit, so the sender must stay under it.
 */
export const DENO_WEBSOCKET_MESSAGE_LIMIT = 64 * 1024 * 1024;

/**
 * Default largest frame accepted by {@link decodeMessage} and produced by
 * {@link encodeMessage}: a safety limit on one frame, well below
 * {@link DENO_WEBSOCKET_MESSAGE_LIMIT}. Tensors larger than a chunk never
 * travel in one frame (shared/wire/transfer.ts), so this does not limit model size.
 */
export const MAX_FRAME_BYTES = 32 * 1024 * 1024;

/** Every error code a peer may send or a check may throw. */
export const ERROR_CODES = [
  "bad_token",
  "bad_version",
  /** A worker whose backend is not the one a deterministic run is pinned to. */
  "wrong_backend",
  "malformed",
  "too_large",
  "bad_shape",
  "non_finite",
  "unknown_task",
  "stale",
  "internal",
  /**
   * A `partial` whose micro-batch set is not one the coordinator credited to
   * this worker (or a `flush` naming a set the worker does not hold).
   */
  "bad_partial",
  /** A `partial` holding a micro-batch already accepted through another answer. */
  "duplicate",
  // Chunked transfers (shared/wire/transfer.ts):
  /** A declaration that cannot be accepted (reused id, too many open, mismatching message). */
  "bad_transfer",
  /** A chunk or reference naming a transfer that was never declared (or already used). */
  "unknown_transfer",
  /** A chunk frame with a bad header, or whose payload disagrees with its header. */
  "bad_chunk",
  /** A chunk whose dtype is not its transfer's. */
  "chunk_dtype",
  /** A chunk longer than its transfer's declared chunk length. */
  "oversized_chunk",
  /** A chunk reaching past its transfer's declared length. */
  "chunk_out_of_range",
  /** A chunk received twice. */
  "duplicate_chunk",
  /** A chunk covering part of another. */
  "overlapping_chunk",
  /** A message referring to a transfer that is missing chunks. */
  "incomplete_transfer",
] as const;

/** Why a message was refused. */
export type ErrorCode = typeof ERROR_CODES[number];

/** A message that failed validation (or a peer-level refusal), with its code. */
export class ProtocolError extends Error {
  /** Machine-readable reason, sent back to the peer in an `error` message. */
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = "ProtocolError";
    this.code = code;
  }
}

/**
 * How a `weights` message stores the flat parameter buffer: float32, or IEEE
 * half bit patterns (shared/wire/half_float.ts).
 */
export const WEIGHTS_ENCODINGS = ["f32", "f16"] as const;

/** One of {@link WEIGHTS_ENCODINGS}. */
export type WeightsEncoding = typeof WEIGHTS_ENCODINGS[number];

/**
 * How a `partial` carries its gradient: float32, bfloat16 bit patterns, or
 * IEEE half bit patterns scaled by 2^scale (shared/wire/grad_encoding.ts).
 */
export const GRAD_ENCODINGS = ["f32", "bf16", "f16"] as const;

/** One of {@link GRAD_ENCODINGS}. */
export type GradEncoding = typeof GRAD_ENCODINGS[number];

/** Worker → coordinator, first message: who I am and the run's token. */
export interface HelloMessage {
  type: "hello";
  protocol: number;
  token: string;
  /** Set when reconnecting, to keep the same id. */
  workerId?: string;
  backend: string;
  device: string;
  pid: number;
  host: string;
  /**
   * LoRA: the hashes of the frozen bases this worker holds (in memory or in
   * its base cache, worker/base_cache.ts); a base listed here is not sent.
   */
  bases?: string[];
}

/** Most base hashes a hello may list. */
export const MAX_HELLO_BASES = 64;

/**
 * A LoRA run's settings in the welcome (shared/model/lora.ts `LoraConfig`
 * plus the pooler rule) and the frozen base's hash (shared/model/base_hash.ts).
 */
export interface WelcomeLora {
  r: number;
  alpha: number;
  dropout: number;
  targetModules: string[];
  trainPooler: boolean;
  /** The base's hash: a worker computes on this base and no other. */
  baseHash: string;
  /** Whether a `base` message follows (false: the hello listed the hash). */
  baseFollows: boolean;
}

/** Coordinator → worker: accepted; the run's model and objective. */
export interface WelcomeMessage {
  type: "welcome";
  workerId: string;
  runId: string;
  /** The Hugging Face config.json (validated by `parseModelConfig` on the worker). */
  modelConfig: Record<string, unknown>;
  objective: Objective;
  /** Dropout override; null keeps the config's. */
  dropout: number | null;
  deterministic: boolean;
  /**
   * LoRA: the adapters' settings and the base's hash; absent or null: full
   * fine-tuning. With it, `weights` messages carry the trainable buffer
   * (layout `loraPlan(...).layout`) and results its dense gradient.
   */
  lora?: WelcomeLora | null;
  /** How the worker encodes a `partial`'s gradient (absent on the wire: f32). */
  gradEncoding: GradEncoding;
}

/**
 * Coordinator → worker, LoRA only: the frozen base (flat, the ordinary
 * layout, f32), sent once to a worker that does not hold it, after the
 * welcome. The worker checks that it hashes to `hash`.
 */
export interface BaseMessage {
  type: "base";
  runId: string;
  hash: string;
  data: Float32Array;
}

/** Coordinator → worker: the flat weights of version `version` (LoRA: the trainable buffer). */
export interface WeightsMessage {
  type: "weights";
  runId: string;
  version: number;
  encoding: WeightsEncoding;
  /** Float32Array for `f32`; IEEE half-precision bit patterns for `f16`. */
  data: Float32Array | Uint16Array;
}

/** Worker → coordinator: give me up to `capacity` tasks. */
export interface RequestMessage {
  type: "request";
  capacity: number;
}

/** Coordinator → worker: compute the gradient of one micro-batch. */
export interface TaskMessage {
  type: "task";
  taskId: number;
  runId: string;
  step: number;
  index: number;
  weightsVersion: number;
  seed: number;
  adversary: AdversaryConfig;
  batch: LabelledBatch;
  /**
   * Hold the gradient: add n_j·g_j into the worker's partial sum for
   * (step, weightsVersion) and answer with a `done`; a later `flush` asks for
   * the sum (absent on the wire: false, answer with a `result`).
   */
  hold: boolean;
}

/** Worker-side timings of one task, in milliseconds. */
export interface Timings {
  computeMs: number;
  adversaryMs: number;
  encodeMs: number;
}

/** Worker → coordinator: the gradient g_j of micro-batch `index` of `step`. */
export interface ResultMessage {
  type: "result";
  taskId: number;
  step: number;
  index: number;
  weightsVersion: number;
  /**
   * The gradient: the whole flat layout, or, when `rows` is present, only
   * those rows of the word-embedding matrix followed by every other tensor
   * (shared/model/sparse_grad.ts).
   */
  grad: Float32Array;
  /** Word-embedding rows carried in `grad` (increasing); absent: dense. */
  rows?: Int32Array;
  loss: number;
  count: number;
  timings: Timings;
}

/**
 * Worker → coordinator: held task `taskId` is computed and in the worker's
 * partial sum. `loss` is the micro-batch mean loss, `count` its examples (as
 * a `result`'s); no gradient travels.
 */
export interface DoneMessage {
  type: "done";
  taskId: number;
  step: number;
  index: number;
  weightsVersion: number;
  loss: number;
  count: number;
  timings: Timings;
}

/**
 * Coordinator → worker: send the partial sum of the held micro-batches
 * `indices` (increasing) of `step` on weights `weightsVersion` — exactly the
 * set the coordinator credited to this worker since its last flush.
 */
export interface FlushMessage {
  type: "flush";
  runId: string;
  step: number;
  weightsVersion: number;
  indices: Int32Array;
}

/**
 * Worker → coordinator: Σ n_j·g_j, Σ n_j·loss_j and Σ n_j over the held
 * micro-batches `indices` (increasing), summed in float64 in the order the
 * tasks arrived (index order) and rounded once to `encoding`. `grad` is
 * packed as a result's (`rows`: the union of the word-embedding rows used).
 * n_j is the micro-batch's loss item count (`lossItems`,
 * shared/model/targets.ts).
 */
export interface PartialMessage {
  type: "partial";
  step: number;
  weightsVersion: number;
  indices: Int32Array;
  encoding: GradEncoding;
  /** f16 only: the values travel multiplied by 2^scale (an integer; 0 for f32 and bf16). */
  scale: number;
  /** Float32Array for f32; 16-bit patterns (bf16 or f16) otherwise. */
  grad: Float32Array | Uint16Array;
  rows?: Int32Array;
  /** Σ n_j·loss_j. */
  lossSum: number;
  /** Σ n_j (0 only in an empty partial: a flush the worker could not match). */
  count: number;
  /** Σ over the held micro-batches; `encodeMs` as for a `result`. */
  timings: Timings;
}

/**
 * Coordinator → worker: the logits of one held-out batch of a classification
 * or regression run, forward only (no dropout, no adversary), on weights
 * version `weightsVersion` (sent before, as for a `task`).
 */
export interface EvalTaskMessage {
  type: "eval_task";
  /** Unique among the run's tasks (training and evaluation). */
  taskId: number;
  runId: string;
  /** Training steps completed when the evaluation started; the result echoes it. */
  step: number;
  /** The batch's position in the held-out split (batch 0, 1, …). */
  index: number;
  weightsVersion: number;
  /** A held-out batch to score: a micro-batch without labels. */
  batch: HostBatch;
}

/** Worker → coordinator: the logits of evaluation batch `index`. */
export interface EvalResultMessage {
  type: "eval_result";
  taskId: number;
  step: number;
  index: number;
  weightsVersion: number;
  /** Row-major [size, numLabels], every element finite (the length is checked against the task). */
  logits: Float32Array;
  /** `adversaryMs` is 0; `encodeMs` as for a `result`. */
  timings: Timings;
}

/**
 * How often a worker sends a `heartbeat` (ms). The coordinator drops a
 * connection that sends nothing for `--worker-silence` (coordinator/server.ts),
 * which must therefore be longer.
 */
export const HEARTBEAT_MS = 10_000;

/** Either side: I am alive (sender's clock, ms). */
export interface HeartbeatMessage {
  type: "heartbeat";
  time: number;
}

/** Either side: your last message was refused. */
export interface ErrorMessage {
  type: "error";
  code: ErrorCode;
  message: string;
}

/** Either side: closing on purpose. */
export interface ByeMessage {
  type: "bye";
  reason: string;
}

/** Every message of the protocol, discriminated by `type`. */
export type Message =
  | HelloMessage
  | WelcomeMessage
  | WeightsMessage
  | BaseMessage
  | RequestMessage
  | TaskMessage
  | ResultMessage
  | DoneMessage
  | FlushMessage
  | PartialMessage
  | EvalTaskMessage
  | EvalResultMessage
  | HeartbeatMessage
  | ErrorMessage
  | ByeMessage;

/** The `type` tags. */
export type MessageType = Message["type"];

/** Size limit for {@link encodeMessage} and {@link decodeMessage}. */
export interface FrameLimits {
  /** Largest frame in bytes (default {@link MAX_FRAME_BYTES}). */
  maxBytes?: number;
}

// useRecords: false keeps frames plain msgpack maps (no msgpackr-only record
// extension), so any msgpack implementation can speak the protocol.
const packr = new Packr({ moreTypes: true, useRecords: false });
const unpackr = new Unpackr({ moreTypes: true, useRecords: false, mapsAsObjects: true });

/** An encoded message, in a buffer of its own. */
export type Frame = Uint8Array<ArrayBuffer>;

/**
 * Validates `m` (as a receiver would, so a worker finds its own NaN before
 * sending it) and encodes it into a frame of its own (a copy out of
 * msgpackr's shared output buffer, so frames can be cached and queued).
 */
export function encodeMessage(m: Message, limits?: FrameLimits): Frame {
  return packFrame(parseMessage(m, null), limits, `${m.type} message`);
}

/**
 * Encodes any value as a frame with no validation (the transfer layer's
 * declarations and messages holding transfer references; tests' bad peers),
 * refusing frames over the limit.
 */
export function packFrame(value: unknown, limits?: FrameLimits, what = "frame"): Frame {
  const out = packr.pack(value);
  const max = limits?.maxBytes ?? MAX_FRAME_BYTES;
  if (out.byteLength > max) {
    throw new ProtocolError(
      "too_large",
      `${what} is ${out.byteLength} bytes, over the ${max}-byte frame limit`,
    );
  }
  return new Uint8Array(out); // copies
}

/**
 * Decodes and validates one frame. Throws {@link ProtocolError} on anything
 * wrong (see the module doc for the codes). Typed arrays in the result are
 * aligned and never share memory with `bytes`.
 */
export function decodeMessage(bytes: Uint8Array | ArrayBuffer, limits?: FrameLimits): Message {
  const frame = bytes instanceof ArrayBuffer ? new Uint8Array(bytes) : bytes;
  return validateMessage(unpackFrame(frame, limits), frame.buffer);
}

/**
 * The msgpack value of one frame, unvalidated: the first half of
 * {@link decodeMessage}, for the transfer layer (which resolves transfer
 * references before {@link validateMessage}). Checks the size limit.
 */
export function unpackFrame(frame: Uint8Array, limits?: FrameLimits): unknown {
  if (!(frame instanceof Uint8Array)) {
    throw new ProtocolError("malformed", `expected a binary frame, got ${describe(frame)}`);
  }
  const max = limits?.maxBytes ?? MAX_FRAME_BYTES;
  if (frame.byteLength > max) {
    throw new ProtocolError(
      "too_large",
      `frame of ${frame.byteLength} bytes is over the ${max}-byte limit`,
    );
  }
  try {
    return unpackr.unpack(frame);
  } catch (e) {
    throw new ProtocolError(
      "malformed",
      `frame is not valid msgpack: ${e instanceof Error ? e.message : String(e)}`,
    );
  }
}

/**
 * Validates a decoded value as a message and rebuilds it with only the known
 * fields: the second half of {@link decodeMessage}. Typed arrays sharing
 * memory with `frame` (the received buffer) are copied; others are kept.
 */
export function validateMessage(raw: unknown, frame: ArrayBufferLike | null): Message {
  return parseMessage(raw, frame);
}

// ---------------------------------------------------------------------------
// Chunked transfers: the wire formats (the state machines are in shared/wire/transfer.ts)
// ---------------------------------------------------------------------------

/** Element types a transfer may carry (`f16`: IEEE half-precision bit patterns). */
export type Dtype = "f32" | "f16" | "i32" | "u8";

/** The typed array of each {@link Dtype}. */
export type TypedArrayOf<D extends Dtype> = D extends "f32" ? Float32Array
  : D extends "f16" ? Uint16Array
  : D extends "i32" ? Int32Array
  : Uint8Array;

/** Any tensor a message may carry. */
export type TensorArray = Float32Array | Uint16Array | Int32Array | Uint8Array;

/** Per dtype: its code in a chunk header, its element size and its typed array. */
export const DTYPES: {
  readonly [D in Dtype]: {
    readonly code: number;
    readonly bytes: number;
    readonly make: (length: number) => TypedArrayOf<D>;
  };
} = {
  f32: { code: 1, bytes: 4, make: (n) => new Float32Array(n) },
  f16: { code: 2, bytes: 2, make: (n) => new Uint16Array(n) },
  i32: { code: 3, bytes: 4, make: (n) => new Int32Array(n) },
  u8: { code: 4, bytes: 1, make: (n) => new Uint8Array(n) },
};

/** The dtype of a typed array that may travel. */
export function dtypeOf(a: TensorArray): Dtype {
  if (a instanceof Float32Array) return "f32";
  if (a instanceof Uint16Array) return "f16";
  if (a instanceof Int32Array) return "i32";
  return "u8";
}

/** The dtype whose header code is `code`, or null. */
export function dtypeOfCode(code: number): Dtype | null {
  for (const d of Object.keys(DTYPES) as Dtype[]) if (DTYPES[d].code === code) return d;
  return null;
}

/**
 * Either side, before the chunks of one tensor: transfer `transfer` carries
 * `length` elements of `dtype`, in chunks of at most `chunkLength` elements,
 * for run `runId`, weights version `version` and (task and result tensors)
 * task `taskId`. The message that uses it follows the chunks and names it.
 */
export interface TransferMessage {
  type: "transfer";
  /** Id, unique among the sender's open transfers on this connection (u32). */
  transfer: number;
  runId: string;
  /** The weights version the tensor belongs to (a weights message's, or a task's). */
  version: number;
  /** The task a task's or result's tensor belongs to; absent for weights. */
  taskId?: number;
  dtype: Dtype;
  /** Total elements (≥ 1). */
  length: number;
  /** Largest chunk, in elements (≥ 1). */
  chunkLength: number;
}

/** What a message's tensor field holds when the tensor travels as a transfer. */
export interface TransferRef {
  transfer: number;
}

/** Validates a decoded `transfer` declaration. */
export function parseTransfer(raw: unknown): TransferMessage {
  if (!isPlainObject(raw) || raw.type !== "transfer") {
    fail("malformed", `expected a transfer declaration, got ${describe(raw)}`);
  }
  const ctx = "transfer";
  const transfer = int(raw, ctx, "transfer");
  if (transfer > 0xffffffff) fail("malformed", `transfer.transfer ${transfer} is not a u32`);
  const m: TransferMessage = {
    type: "transfer",
    transfer,
    runId: str(raw, ctx, "runId"),
    version: int(raw, ctx, "version"),
    dtype: oneOf(raw, ctx, "dtype", Object.keys(DTYPES) as Dtype[]),
    length: int(raw, ctx, "length", 1),
    chunkLength: int(raw, ctx, "chunkLength", 1),
  };
  if (m.chunkLength > 0xffffffff) fail("malformed", `transfer.chunkLength is not a u32`);
  if (raw.taskId !== undefined && raw.taskId !== null) m.taskId = int(raw, ctx, "taskId");
  return m;
}

/** The value a transfer reference holds, or null when `v` is not a reference. */
export function transferRef(v: unknown): number | null {
  if (!isPlainObject(v)) return null;
  const keys = Object.keys(v);
  if (keys.length !== 1 || keys[0] !== "transfer") return null;
  const id = v.transfer;
  if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) {
    fail("malformed", `a transfer reference must name a u32 id, got ${describe(id)}`);
  }
  return id;
}

/**
 * The tensor fields of each message type that may travel as a transfer, as
 * paths into the message. Anything not listed always travels inline.
 */
export const TENSOR_FIELDS: { readonly [T in MessageType]?: readonly (readonly string[])[] } = {
  weights: [["data"]],
  base: [["data"]],
  task: [["batch", "inputIds"], ["batch", "tokenTypeIds"], ["batch", "attentionMask"], [
    "batch",
    "labels",
  ]],
  result: [["grad"], ["rows"]],
  partial: [["grad"], ["rows"]],
};

/** First byte of a chunk frame: 0xc1 is never used by msgpack, so no message frame starts so. */
export const CHUNK_MAGIC = 0xc1;

/** Version of the chunk header layout. */
export const CHUNK_FORMAT = 1;

/**
 * Bytes before a chunk's payload. Little-endian: u8 magic 0xc1, u8 format 1,
 * u8 dtype code, u8 0; u32 transfer id; u32 offset low, u32 offset high
 * (elements); u32 length (elements); 12 bytes of zeros (so the payload starts
 * 32-byte aligned in the frame).
 */
export const CHUNK_HEADER_BYTES = 32;

/** One chunk's header. */
export interface ChunkHeader {
  transfer: number;
  dtype: number;
  /** First element. */
  offset: number;
  /** Elements carried. */
  length: number;
}

/** Writes a chunk header at the start of `frame`. */
export function writeChunkHeader(frame: Uint8Array, h: ChunkHeader): void {
  const v = new DataView(frame.buffer, frame.byteOffset, CHUNK_HEADER_BYTES);
  v.setUint8(0, CHUNK_MAGIC);
  v.setUint8(1, CHUNK_FORMAT);
  v.setUint8(2, h.dtype);
  v.setUint8(3, 0);
  v.setUint32(4, h.transfer, true);
  v.setUint32(8, h.offset % 0x1_0000_0000, true);
  v.setUint32(12, Math.floor(h.offset / 0x1_0000_0000), true);
  v.setUint32(16, h.length, true);
  v.setUint32(20, 0, true);
  v.setUint32(24, 0, true);
  v.setUint32(28, 0, true);
}

/** Whether a received frame is a chunk (else it is a msgpack message). */
export function isChunkFrame(frame: Uint8Array): boolean {
  return frame.byteLength > 0 && frame[0] === CHUNK_MAGIC;
}

/** Reads and checks a chunk frame's header (`bad_chunk` when it is not one). */
export function readChunkHeader(frame: Uint8Array): ChunkHeader {
  if (frame.byteLength < CHUNK_HEADER_BYTES) {
    fail(
      "bad_chunk",
      `chunk frame of ${frame.byteLength} bytes is shorter than its ${CHUNK_HEADER_BYTES}-byte header`,
    );
  }
  const v = new DataView(frame.buffer, frame.byteOffset, CHUNK_HEADER_BYTES);
  if (v.getUint8(0) !== CHUNK_MAGIC) fail("bad_chunk", "not a chunk frame");
  const format = v.getUint8(1);
  if (format !== CHUNK_FORMAT) {
    fail("bad_chunk", `chunk format ${format} is not supported (this side speaks ${CHUNK_FORMAT})`);
  }
  const high = v.getUint32(12, true);
  if (high >= 0x20_0000) fail("bad_chunk", "chunk offset is beyond 2^53 elements");
  return {
    dtype: v.getUint8(2),
    transfer: v.getUint32(4, true),
    offset: high * 0x1_0000_0000 + v.getUint32(8, true),
    length: v.getUint32(16, true),
  };
}

/**
 * Coordinator-side check of a result against the task it assigned, the one
 * check of a result's shape (on receipt; the accumulator and the combine
 * trust it): the gradient must fit the run's gradient layout — dense, or
 * packed rows inside the vocabulary where the layout is row-sparse
 * (shared/model/sparse_grad.ts); a number is a dense layout of that length — and
 * `count` must be the micro-batch's size.
 */
export function validateResultShape(
  m: ResultMessage,
  layout: number | SparseLayout,
  expectedCount: number,
): void {
  const s = typeof layout === "number" ? denseLayout(layout) : layout;
  const problem = packedGradProblem(m.grad.length, m.rows, s);
  if (problem !== null) throw new ProtocolError("bad_shape", `result.${problem}`);
  if (m.count !== expectedCount) {
    throw new ProtocolError(
      "bad_shape",
      `result.count is ${m.count}, but micro-batch ${m.index} of step ${m.step} has ${expectedCount} examples`,
    );
  }
}

/**
 * Coordinator-side check of a partial's shape against the run's gradient
 * layout (as {@link validateResultShape}) and its Σ n_j against the
 * micro-batches it names (`expectedCount`, from the batches the coordinator
 * made).
 */
export function validatePartialShape(
  m: PartialMessage,
  layout: number | SparseLayout,
  expectedCount: number,
): void {
  const s = typeof layout === "number" ? denseLayout(layout) : layout;
  const problem = packedGradProblem(m.grad.length, m.rows, s);
  if (problem !== null) throw new ProtocolError("bad_shape", `partial.${problem}`);
  if (m.count !== expectedCount) {
    throw new ProtocolError(
      "bad_shape",
      `partial.count is ${m.count}, but micro-batches ${m.indices.join(", ")} of step ${m.step} ` +
        `hold ${expectedCount} loss items`,
    );
  }
}

/**
 * Coordinator-side check of an eval result against the task it assigned:
 * `size · numLabels` logits.
 */
export function validateEvalResultShape(
  m: EvalResultMessage,
  size: number,
  numLabels: number,
): void {
  const expected = size * numLabels;
  if (m.logits.length !== expected) {
    throw new ProtocolError(
      "bad_shape",
      `eval_result.logits has ${m.logits.length} elements, expected size · numLabels = ${size} · ${numLabels} = ${expected} (evaluation batch ${m.index})`,
    );
  }
}

/** Worker-side check of a weights message against the model's layout size. */
export function validateWeightsShape(m: WeightsMessage, expectedLength: number): void {
  if (m.data.length !== expectedLength) {
    throw new ProtocolError(
      "bad_shape",
      `weights.data has ${m.data.length} elements, expected ${expectedLength}`,
    );
  }
}

/**
 * Worker-side check of a batch against the model: token ids below
 * `vocabSize`, token types below `typeVocabSize`, `seqLen` at most
 * {@link maxSequenceLength}.
 */
export function validateBatchRanges(
  batch: HostBatch,
  model: Pick<
    ModelConfig,
    "modelType" | "vocabSize" | "typeVocabSize" | "maxPositions" | "padTokenId"
  >,
): void {
  const longest = maxSequenceLength(model);
  if (batch.seqLen > longest) {
    throw new ProtocolError(
      "bad_shape",
      `batch.seqLen ${batch.seqLen} exceeds the ${longest} tokens the model can embed`,
    );
  }
  const bad = firstAtLeast(batch.inputIds, model.vocabSize);
  if (bad >= 0) {
    throw new ProtocolError(
      "malformed",
      `batch.inputIds[${bad}] = ${batch.inputIds[bad]} is not below vocab size ${model.vocabSize}`,
    );
  }
  const badType = firstAtLeast(batch.tokenTypeIds, model.typeVocabSize);
  if (badType >= 0) {
    throw new ProtocolError(
      "malformed",
      `batch.tokenTypeIds[${badType}] = ${
        batch.tokenTypeIds[badType]
      } is not below ${model.typeVocabSize}`,
    );
  }
}

/**
 * Coordinator-side check of a hello's token (constant time in the token's
 * content: shared/wire/token.ts). The protocol version is already checked by
 * {@link decodeMessage}.
 */
export function checkToken(m: HelloMessage, expectedToken: string): void {
  if (!sameToken(m.token, expectedToken)) {
    throw new ProtocolError("bad_token", "wrong or missing run token");
  }
}

/** The `error` message that answers `e` (a ProtocolError keeps its code, anything else is `internal`). */
export function toErrorMessage(e: unknown): ErrorMessage {
  if (e instanceof ProtocolError) return { type: "error", code: e.code, message: e.message };
  return { type: "error", code: "internal", message: e instanceof Error ? e.message : String(e) };
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

type Obj = Record<string, unknown>;

function fail(code: ErrorCode, message: string): never {
  throw new ProtocolError(code, message);
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "object") return (v as object).constructor?.name ?? "object";
  if (typeof v === "number" || typeof v === "boolean") return `${typeof v} ${v}`;
  return typeof v;
}

function field(o: Obj, ctx: string, key: string): unknown {
  if (!Object.hasOwn(o, key) || o[key] === undefined) fail("malformed", `${ctx}.${key} is missing`);
  return o[key];
}

function str(o: Obj, ctx: string, key: string): string {
  const v = field(o, ctx, key);
  if (typeof v !== "string") {
    fail("malformed", `${ctx}.${key} must be a string, got ${describe(v)}`);
  }
  return v;
}

function bool(o: Obj, ctx: string, key: string): boolean {
  const v = field(o, ctx, key);
  if (typeof v !== "boolean") {
    fail("malformed", `${ctx}.${key} must be a boolean, got ${describe(v)}`);
  }
  return v;
}

/** A safe integer ≥ `min`. */
function int(o: Obj, ctx: string, key: string, min = 0): number {
  const v = field(o, ctx, key);
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min) {
    fail("malformed", `${ctx}.${key} must be an integer ≥ ${min}, got ${describe(v)}`);
  }
  return v;
}

/** A finite number ≥ `min` (no lower bound when `min` is -Infinity). */
function num(o: Obj, ctx: string, key: string, min = -Infinity): number {
  const v = field(o, ctx, key);
  if (typeof v !== "number") {
    fail("malformed", `${ctx}.${key} must be a number, got ${describe(v)}`);
  }
  if (!Number.isFinite(v)) fail("non_finite", `${ctx}.${key} is ${v}`);
  if (v < min) fail("malformed", `${ctx}.${key} must be ≥ ${min}, got ${v}`);
  return v;
}

function oneOf<T extends string>(o: Obj, ctx: string, key: string, options: readonly T[]): T {
  const v = field(o, ctx, key);
  if (typeof v !== "string" || !(options as readonly string[]).includes(v)) {
    fail(
      "malformed",
      `${ctx}.${key} must be one of ${options.map((x) => JSON.stringify(x)).join(", ")}, got ${
        typeof v === "string" ? JSON.stringify(v) : describe(v)
      }`,
    );
  }
  return v as T;
}

function object(o: Obj, ctx: string, key: string): Obj {
  const v = field(o, ctx, key);
  if (!isPlainObject(v)) fail("malformed", `${ctx}.${key} must be a map, got ${describe(v)}`);
  return v;
}

type TypedCtor<T> = {
  new (src: ArrayLike<number>): T;
  readonly BYTES_PER_ELEMENT: number;
  readonly name: string;
};

/**
 * A typed array of exactly `ctor`'s kind. Copied when it shares memory with
 * the received frame, is misaligned, or is a subclass (e.g. a Node Buffer).
 */
function typed<T extends Int32Array | Uint8Array | Uint16Array | Float32Array>(
  o: Obj,
  ctx: string,
  key: string,
  ctor: TypedCtor<T>,
  frame: ArrayBufferLike | null,
): T {
  const v = field(o, ctx, key);
  if (!(v instanceof (ctor as unknown as typeof Uint8Array))) {
    fail("malformed", `${ctx}.${key} must be a ${ctor.name}, got ${describe(v)}`);
  }
  const a = v as unknown as T;
  if (
    a.constructor !== ctor || (frame !== null && a.buffer === frame) ||
    a.byteOffset % ctor.BYTES_PER_ELEMENT !== 0
  ) {
    return new ctor(a);
  }
  return a;
}

/** Index of the first NaN or ±Inf, or −1. One tight loop. */
function firstNonFinite(a: Float32Array): number {
  const n = a.length;
  for (let i = 0; i < n; i++) {
    const x = a[i];
    if (x - x !== 0) return i;
  }
  return -1;
}

/** Index of the first half-precision NaN or ±Inf bit pattern, or −1. */
function firstNonFiniteF16(a: Uint16Array): number {
  const n = a.length;
  for (let i = 0; i < n; i++) if ((a[i] & 0x7c00) === 0x7c00) return i;
  return -1;
}

function firstNegative(a: Int32Array): number {
  const n = a.length;
  for (let i = 0; i < n; i++) if (a[i] < 0) return i;
  return -1;
}

function firstAtLeast(a: Int32Array, limit: number): number {
  const n = a.length;
  for (let i = 0; i < n; i++) if (a[i] >= limit) return i;
  return -1;
}

function checkFinite(a: Float32Array, what: string): void {
  const bad = firstNonFinite(a);
  if (bad >= 0) fail("non_finite", `${what}[${bad}] is ${a[bad]} (first non-finite element)`);
}

const TYPES: readonly MessageType[] = [
  "hello",
  "welcome",
  "weights",
  "base",
  "request",
  "task",
  "result",
  "done",
  "flush",
  "partial",
  "eval_task",
  "eval_result",
  "heartbeat",
  "error",
  "bye",
];

/** Validates a decoded value and rebuilds it with only the known fields. */
function parseMessage(raw: unknown, frame: ArrayBufferLike | null): Message {
  if (!isPlainObject(raw)) fail("malformed", `message must be a map, got ${describe(raw)}`);
  const type = raw.type;
  if (typeof type !== "string" || !(TYPES as readonly string[]).includes(type)) {
    fail(
      "malformed",
      type === undefined
        ? "message has no type"
        : `unknown message type ${
          typeof type === "string" ? JSON.stringify(type) : describe(type)
        }`,
    );
  }
  switch (type as MessageType) {
    case "hello":
      return parseHello(raw);
    case "welcome":
      return parseWelcome(raw);
    case "weights":
      return parseWeights(raw, frame);
    case "base":
      return parseBase(raw, frame);
    case "request":
      return { type: "request", capacity: int(raw, "request", "capacity", 1) };
    case "task":
      return parseTask(raw, frame);
    case "result":
      return parseResult(raw, frame);
    case "done":
      return parseDone(raw);
    case "flush":
      return parseFlush(raw, frame);
    case "partial":
      return parsePartial(raw, frame);
    case "eval_task":
      return parseEvalTask(raw, frame);
    case "eval_result":
      return parseEvalResult(raw, frame);
    case "heartbeat":
      return { type: "heartbeat", time: num(raw, "heartbeat", "time") };
    case "error":
      return {
        type: "error",
        code: oneOf(raw, "error", "code", ERROR_CODES),
        message: str(raw, "error", "message"),
      };
    case "bye":
      return { type: "bye", reason: str(raw, "bye", "reason") };
  }
}

function parseHello(o: Obj): HelloMessage {
  const protocol = int(o, "hello", "protocol");
  if (protocol !== PROTOCOL_VERSION) {
    fail(
      "bad_version",
      `hello.protocol ${protocol} is not supported (this side speaks ${PROTOCOL_VERSION})`,
    );
  }
  const m: HelloMessage = {
    type: "hello",
    protocol,
    token: str(o, "hello", "token"),
    backend: str(o, "hello", "backend"),
    device: str(o, "hello", "device"),
    pid: int(o, "hello", "pid"),
    host: str(o, "hello", "host"),
  };
  if (o.workerId !== undefined && o.workerId !== null) m.workerId = str(o, "hello", "workerId");
  if (o.bases !== undefined && o.bases !== null) m.bases = hashList(o.bases);
  return m;
}

/** A base hash: 64 lowercase hex digits (shared/model/base_hash.ts). */
const HASH = /^[0-9a-f]{64}$/;

function hashList(v: unknown): string[] {
  if (!Array.isArray(v) || v.length > MAX_HELLO_BASES) {
    fail("malformed", `hello.bases must be a list of at most ${MAX_HELLO_BASES} hashes`);
  }
  return v.map((h, i) => {
    if (typeof h !== "string" || !HASH.test(h)) {
      fail("malformed", `hello.bases[${i}] is not a base hash (64 lowercase hex digits)`);
    }
    return h;
  });
}

function parseWelcomeLora(o: Obj): WelcomeLora {
  const ctx = "welcome.lora";
  const targets = field(o, ctx, "targetModules");
  if (
    !Array.isArray(targets) || targets.length === 0 || targets.some((t) => typeof t !== "string")
  ) {
    fail("malformed", `${ctx}.targetModules must be a non-empty list of module names`);
  }
  const hash = str(o, ctx, "baseHash");
  if (!HASH.test(hash)) fail("malformed", `${ctx}.baseHash is not a base hash`);
  const dropout = num(o, ctx, "dropout", 0);
  if (dropout >= 1) fail("malformed", `${ctx}.dropout must be in [0, 1), got ${dropout}`);
  return {
    r: int(o, ctx, "r", 1),
    alpha: num(o, ctx, "alpha", Number.MIN_VALUE),
    dropout,
    targetModules: [...targets as string[]],
    trainPooler: bool(o, ctx, "trainPooler"),
    baseHash: hash,
    baseFollows: bool(o, ctx, "baseFollows"),
  };
}

function parseBase(o: Obj, frame: ArrayBufferLike | null): BaseMessage {
  const hash = str(o, "base", "hash");
  if (!HASH.test(hash)) fail("malformed", "base.hash is not a base hash");
  const data = typed(o, "base", "data", Float32Array, frame);
  checkFinite(data, "base.data");
  return { type: "base", runId: str(o, "base", "runId"), hash, data };
}

function parseWelcome(o: Obj): WelcomeMessage {
  let dropout: number | null = null;
  if (field(o, "welcome", "dropout") !== null) {
    dropout = num(o, "welcome", "dropout", 0);
    if (dropout >= 1) fail("malformed", `welcome.dropout must be in [0, 1), got ${dropout}`);
  }
  const m: WelcomeMessage = {
    type: "welcome",
    workerId: str(o, "welcome", "workerId"),
    runId: str(o, "welcome", "runId"),
    modelConfig: object(o, "welcome", "modelConfig"),
    objective: oneOf(o, "welcome", "objective", OBJECTIVES),
    dropout,
    deterministic: bool(o, "welcome", "deterministic"),
    gradEncoding: o.gradEncoding === undefined || o.gradEncoding === null
      ? "f32"
      : oneOf(o, "welcome", "gradEncoding", GRAD_ENCODINGS),
  };
  if (o.lora !== undefined && o.lora !== null) {
    m.lora = parseWelcomeLora(object(o, "welcome", "lora"));
  }
  return m;
}

function parseWeights(o: Obj, frame: ArrayBufferLike | null): WeightsMessage {
  const runId = str(o, "weights", "runId");
  const version = int(o, "weights", "version");
  const encoding = oneOf(o, "weights", "encoding", WEIGHTS_ENCODINGS);
  if (encoding === "f32") {
    const data = typed(o, "weights", "data", Float32Array, frame);
    checkFinite(data, "weights.data");
    return { type: "weights", runId, version, encoding, data };
  }
  const data = typed(o, "weights", "data", Uint16Array, frame);
  const bad = firstNonFiniteF16(data);
  if (bad >= 0) {
    fail(
      "non_finite",
      `weights.data[${bad}] is a half-precision NaN/Inf (0x${data[bad].toString(16)})`,
    );
  }
  return { type: "weights", runId, version, encoding, data };
}

function parseAdversary(o: Obj): AdversaryConfig {
  const ctx = "task.adversary";
  const mode = oneOf(o, ctx, "mode", ADVERSARY_MODES);
  const steps = int(o, ctx, "steps", mode === "off" ? 0 : 1);
  return {
    mode,
    steps,
    lr: num(o, ctx, "lr", 0),
    eps: num(o, ctx, "eps", 0),
    norm: oneOf(o, ctx, "norm", ADVERSARY_NORMS),
    init: num(o, ctx, "init", 0),
  };
}

function parseBatch(o: Obj, frame: ArrayBufferLike | null): LabelledBatch {
  const ctx = "task.batch";
  const inputs = parseBatchInputs(o, frame, ctx);
  const { size, seqLen } = inputs;
  const labels = typed(o, ctx, "labels", Float32Array, frame);
  const n = size * seqLen;
  if (labels.length !== size && labels.length !== n) {
    fail(
      "bad_shape",
      `${ctx}.labels has ${labels.length} elements, expected size = ${size} or size·seqLen = ${n}`,
    );
  }
  checkFinite(labels, `${ctx}.labels`);
  return { ...inputs, labels };
}

/** A batch's token ids, token types and mask (everything but labels), checked. */
function parseBatchInputs(o: Obj, frame: ArrayBufferLike | null, ctx: string): HostBatch {
  const size = int(o, ctx, "size", 1);
  const seqLen = int(o, ctx, "seqLen", 1);
  const inputIds = typed(o, ctx, "inputIds", Int32Array, frame);
  const tokenTypeIds = typed(o, ctx, "tokenTypeIds", Int32Array, frame);
  const attentionMask = typed(o, ctx, "attentionMask", Uint8Array, frame);
  const n = size * seqLen;
  for (
    const [name, a] of [["inputIds", inputIds], ["tokenTypeIds", tokenTypeIds], [
      "attentionMask",
      attentionMask,
    ]] as const
  ) {
    if (a.length !== n) {
      fail("bad_shape", `${ctx}.${name} has ${a.length} elements, expected size·seqLen = ${n}`);
    }
  }
  let bad = firstNegative(inputIds);
  if (bad >= 0) fail("malformed", `${ctx}.inputIds[${bad}] = ${inputIds[bad]} is negative`);
  bad = firstNegative(tokenTypeIds);
  if (bad >= 0) fail("malformed", `${ctx}.tokenTypeIds[${bad}] = ${tokenTypeIds[bad]} is negative`);
  for (let i = 0; i < n; i++) {
    if (attentionMask[i] > 1) {
      fail("malformed", `${ctx}.attentionMask[${i}] = ${attentionMask[i]} is not 0 or 1`);
    }
  }
  return { inputIds, tokenTypeIds, attentionMask, size, seqLen };
}

function parseTask(o: Obj, frame: ArrayBufferLike | null): TaskMessage {
  return {
    type: "task",
    taskId: int(o, "task", "taskId"),
    runId: str(o, "task", "runId"),
    step: int(o, "task", "step"),
    index: int(o, "task", "index"),
    weightsVersion: int(o, "task", "weightsVersion"),
    seed: int(o, "task", "seed"),
    adversary: parseAdversary(object(o, "task", "adversary")),
    batch: parseBatch(object(o, "task", "batch"), frame),
    hold: o.hold === undefined || o.hold === null ? false : bool(o, "task", "hold"),
  };
}

function parseTimings(o: Obj, ctx: string): Timings {
  const t = object(o, ctx, "timings");
  return {
    computeMs: num(t, `${ctx}.timings`, "computeMs", 0),
    adversaryMs: num(t, `${ctx}.timings`, "adversaryMs", 0),
    encodeMs: num(t, `${ctx}.timings`, "encodeMs", 0),
  };
}

function parseDone(o: Obj): DoneMessage {
  return {
    type: "done",
    taskId: int(o, "done", "taskId"),
    step: int(o, "done", "step"),
    index: int(o, "done", "index"),
    weightsVersion: int(o, "done", "weightsVersion"),
    loss: num(o, "done", "loss"),
    count: int(o, "done", "count", 1),
    timings: parseTimings(o, "done"),
  };
}

/** Micro-batch indices: strictly increasing, ≥ 0 (empty allowed where `empty`). */
function indexSet(o: Obj, ctx: string, frame: ArrayBufferLike | null, empty: boolean): Int32Array {
  const a = typed(o, ctx, "indices", Int32Array, frame);
  if (!empty && a.length === 0) fail("malformed", `${ctx}.indices is empty`);
  for (let i = 0; i < a.length; i++) {
    if (a[i] < 0 || (i > 0 && a[i] <= a[i - 1])) {
      fail("malformed", `${ctx}.indices must be increasing non-negative (index ${i} is ${a[i]})`);
    }
  }
  return a;
}

function parseFlush(o: Obj, frame: ArrayBufferLike | null): FlushMessage {
  return {
    type: "flush",
    runId: str(o, "flush", "runId"),
    step: int(o, "flush", "step"),
    weightsVersion: int(o, "flush", "weightsVersion"),
    indices: indexSet(o, "flush", frame, false),
  };
}

/** Index of the first bfloat16 NaN or ±Inf bit pattern (exponent bits all ones), or −1. */
function firstNonFiniteBf16(a: Uint16Array): number {
  const n = a.length;
  for (let i = 0; i < n; i++) if ((a[i] & 0x7f80) === 0x7f80) return i;
  return -1;
}

function parsePartial(o: Obj, frame: ArrayBufferLike | null): PartialMessage {
  const ctx = "partial";
  const step = int(o, ctx, "step");
  const weightsVersion = int(o, ctx, "weightsVersion");
  const indices = indexSet(o, ctx, frame, true);
  const encoding = oneOf(o, ctx, "encoding", GRAD_ENCODINGS);
  const scale = num(o, ctx, "scale");
  if (!Number.isSafeInteger(scale) || Math.abs(scale) > 200) {
    fail("malformed", `${ctx}.scale must be an integer in [-200, 200], got ${scale}`);
  }
  if (encoding !== "f16" && scale !== 0) {
    fail("malformed", `${ctx}.scale must be 0 for ${encoding}, got ${scale}`);
  }
  const lossSum = num(o, ctx, "lossSum");
  const count = int(o, ctx, "count");
  const timings = parseTimings(o, ctx);
  let grad: Float32Array | Uint16Array;
  if (encoding === "f32") {
    grad = typed(o, ctx, "grad", Float32Array, frame);
    checkFinite(grad, `${ctx}.grad`);
  } else {
    const g = typed(o, ctx, "grad", Uint16Array, frame);
    const bad = encoding === "bf16" ? firstNonFiniteBf16(g) : firstNonFiniteF16(g);
    if (bad >= 0) {
      fail(
        "non_finite",
        `${ctx}.grad[${bad}] is a ${encoding} NaN/Inf pattern (0x${g[bad].toString(16)})`,
      );
    }
    grad = g;
  }
  const m: PartialMessage = {
    type: "partial",
    step,
    weightsVersion,
    indices,
    encoding,
    scale,
    grad,
    lossSum,
    count,
    timings,
  };
  if (o.rows !== undefined) m.rows = rowIds(o, ctx, frame);
  return m;
}

/** Word-embedding row ids: strictly increasing, ≥ 0. */
function rowIds(o: Obj, ctx: string, frame: ArrayBufferLike | null): Int32Array {
  const rows = typed(o, ctx, "rows", Int32Array, frame);
  for (let i = 0; i < rows.length; i++) {
    if (rows[i] < 0 || (i > 0 && rows[i] <= rows[i - 1])) {
      fail(
        "malformed",
        `${ctx}.rows must be increasing non-negative row ids (index ${i} is ${rows[i]})`,
      );
    }
  }
  return rows;
}

function parseResult(o: Obj, frame: ArrayBufferLike | null): ResultMessage {
  const taskId = int(o, "result", "taskId");
  const step = int(o, "result", "step");
  const index = int(o, "result", "index");
  const weightsVersion = int(o, "result", "weightsVersion");
  const loss = num(o, "result", "loss");
  const count = int(o, "result", "count", 1);
  const t = object(o, "result", "timings");
  const timings: Timings = {
    computeMs: num(t, "result.timings", "computeMs", 0),
    adversaryMs: num(t, "result.timings", "adversaryMs", 0),
    encodeMs: num(t, "result.timings", "encodeMs", 0),
  };
  const grad = typed(o, "result", "grad", Float32Array, frame);
  checkFinite(grad, "result.grad");
  const m: ResultMessage = {
    type: "result",
    taskId,
    step,
    index,
    weightsVersion,
    grad,
    loss,
    count,
    timings,
  };
  if (o.rows !== undefined) m.rows = rowIds(o, "result", frame);
  return m;
}

function parseEvalTask(o: Obj, frame: ArrayBufferLike | null): EvalTaskMessage {
  const ctx = "eval_task";
  return {
    type: "eval_task",
    taskId: int(o, ctx, "taskId"),
    runId: str(o, ctx, "runId"),
    step: int(o, ctx, "step"),
    index: int(o, ctx, "index"),
    weightsVersion: int(o, ctx, "weightsVersion"),
    batch: parseBatchInputs(object(o, ctx, "batch"), frame, `${ctx}.batch`),
  };
}

function parseEvalResult(o: Obj, frame: ArrayBufferLike | null): EvalResultMessage {
  const ctx = "eval_result";
  const taskId = int(o, ctx, "taskId");
  const step = int(o, ctx, "step");
  const index = int(o, ctx, "index");
  const weightsVersion = int(o, ctx, "weightsVersion");
  const t = object(o, ctx, "timings");
  const timings: Timings = {
    computeMs: num(t, `${ctx}.timings`, "computeMs", 0),
    adversaryMs: num(t, `${ctx}.timings`, "adversaryMs", 0),
    encodeMs: num(t, `${ctx}.timings`, "encodeMs", 0),
  };
  const logits = typed(o, ctx, "logits", Float32Array, frame);
  if (logits.length === 0) fail("bad_shape", `${ctx}.logits is empty`);
  checkFinite(logits, `${ctx}.logits`);
  return { type: "eval_result", taskId, step, index, weightsVersion, logits, timings };
}
