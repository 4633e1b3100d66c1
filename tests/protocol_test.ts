import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { Packr, Unpackr } from "msgpackr";
import {
  checkToken,
  CHUNK_HEADER_BYTES,
  decodeMessage,
  DENO_WEBSOCKET_MESSAGE_LIMIT,
  dtypeOf,
  dtypeOfCode,
  DTYPES,
  encodeMessage,
  ERROR_CODES,
  type ErrorCode,
  type EvalResultMessage,
  type EvalTaskMessage,
  isChunkFrame,
  MAX_FRAME_BYTES,
  type Message,
  packFrame,
  parseTransfer,
  type PartialMessage,
  PROTOCOL_VERSION,
  ProtocolError,
  readChunkHeader,
  type ResultMessage,
  type TaskMessage,
  toErrorMessage,
  validateBatchRanges,
  validateEvalResultShape,
  validatePartialShape,
  validateResultShape,
  validateWeightsShape,
  writeChunkHeader,
} from "../shared/wire/protocol.ts";
import { denseLayout, type SparseLayout } from "../shared/model/sparse_grad.ts";
import { expectError } from "./support/protocol.ts";

/** A peer that sends whatever it likes, with no validation. */
const rawPeer = new Packr({ moreTypes: true, useRecords: false });
/** A peer that forgot `moreTypes`: typed arrays become msgpack bin. */
const plainPeer = new Packr({ useRecords: false });

function task(): TaskMessage {
  return {
    type: "task",
    taskId: 7,
    runId: "run-1",
    step: 3,
    index: 2,
    weightsVersion: 3,
    seed: 4242,
    adversary: { mode: "pgd", steps: 1, lr: 0.1, eps: 1, norm: "l2", init: 0 },
    batch: {
      inputIds: new Int32Array([101, 2009, 102, 0, 101, 7592, 2088, 102]),
      tokenTypeIds: new Int32Array([0, 0, 0, 0, 0, 0, 1, 1]),
      attentionMask: new Uint8Array([1, 1, 1, 0, 1, 1, 1, 1]),
      labels: new Float32Array([1, 0]),
      size: 2,
      seqLen: 4,
    },
    hold: false,
  };
}

function result(): ResultMessage {
  const grad = new Float32Array(40);
  for (let i = 0; i < grad.length; i++) grad[i] = (i - 20) / 8;
  return {
    type: "result",
    taskId: 7,
    step: 3,
    index: 2,
    weightsVersion: 3,
    grad,
    loss: 0.6931,
    count: 2,
    timings: { computeMs: 12.5, adversaryMs: 6, encodeMs: 0.25 },
  };
}

function evalTask(): EvalTaskMessage {
  const { labels: _labels, ...batch } = task().batch;
  return {
    type: "eval_task",
    taskId: 2 ** 52 + 3,
    runId: "run-1",
    step: 40,
    index: 3,
    weightsVersion: 40,
    batch,
  };
}

function evalResult(): EvalResultMessage {
  return {
    type: "eval_result",
    taskId: 2 ** 52 + 3,
    step: 40,
    index: 3,
    weightsVersion: 40,
    logits: new Float32Array([0.25, -1.5, 3e-8, 7]),
    timings: { computeMs: 3.5, adversaryMs: 0, encodeMs: 0.125 },
  };
}

function allMessages(): Message[] {
  return [
    {
      type: "hello",
      protocol: PROTOCOL_VERSION,
      token: "s3cret",
      backend: "tfjs-wasm",
      device: "cpu x2",
      pid: 1234,
      host: "laptop",
    },
    {
      type: "hello",
      protocol: PROTOCOL_VERSION,
      token: "s3cret",
      workerId: "w-9",
      backend: "webgpu",
      device: "H100",
      pid: 1,
      host: "gpu-box",
    },
    {
      type: "welcome",
      workerId: "w-1",
      runId: "run-1",
      modelConfig: { model_type: "bert", hidden_size: 128, id2label: { "0": "neg", "1": "pos" } },
      objective: "classify",
      dropout: null,
      deterministic: true,
      gradEncoding: "f32",
    },
    {
      type: "welcome",
      workerId: "w-2",
      runId: "run-1",
      modelConfig: {},
      objective: "mlm",
      dropout: 0.1,
      deterministic: false,
      gradEncoding: "bf16",
    },
    {
      type: "weights",
      runId: "run-1",
      version: 0,
      encoding: "f32",
      data: new Float32Array([0.5, -1.25, 3e-8, 65504]),
    },
    { type: "request", capacity: 4 },
    task(),
    result(),
    evalTask(),
    evalResult(),
    { type: "heartbeat", time: 1700000000123.5 },
    { type: "error", code: "stale", message: "step 3 is over" },
    { type: "bye", reason: "SIGTERM" },
  ];
}

/** Encodes `value` with no validation and decodes it as a peer's frame. */
function decodeRaw(value: unknown, limits?: { maxBytes?: number }): Message {
  return decodeMessage(rawPeer.pack(value), limits);
}

/** Each value, decoded as a peer's frame, is refused with `code` (and a message matching its pattern). */
function expectRefused(code: ErrorCode, cases: readonly (readonly [unknown, RegExp?])[]): void {
  for (const [value, pattern] of cases) expectError(() => decodeRaw(value), code, pattern);
}

Deno.test("constants", () => {
  assert.equal(PROTOCOL_VERSION, 7);
  // One frame must stay below what a Deno WebSocket can receive at all.
  assert.equal(DENO_WEBSOCKET_MESSAGE_LIMIT, 64 * 1024 * 1024);
  assert.equal(MAX_FRAME_BYTES, 32 * 1024 * 1024);
  assert.ok(MAX_FRAME_BYTES < DENO_WEBSOCKET_MESSAGE_LIMIT);
  // Every code a peer may see, the transfer layer's included (a wire format: pinned whole).
  const codes =
    "bad_chunk bad_partial bad_shape bad_token bad_transfer bad_version chunk_dtype chunk_out_of_range duplicate duplicate_chunk incomplete_transfer internal malformed non_finite overlapping_chunk oversized_chunk stale too_large unknown_task unknown_transfer wrong_backend";
  assert.equal([...ERROR_CODES].sort().join(" "), codes);
});

Deno.test("every message round-trips", () => {
  for (const m of allMessages()) {
    const bytes = encodeMessage(m);
    assert.ok(bytes instanceof Uint8Array);
    assert.deepStrictEqual(decodeMessage(bytes), m, `round trip of ${m.type}`);
    // ArrayBuffer input (WebSocket binaryType "arraybuffer") works too.
    assert.deepStrictEqual(decodeMessage(bytes.slice().buffer), m);
  }
});

Deno.test("encoded frames stay valid after later encodes", () => {
  const first = encodeMessage(result());
  const copy = first.slice();
  for (let i = 0; i < 50; i++) encodeMessage(task());
  assert.deepStrictEqual(first, copy);
});

Deno.test("typed arrays decode as aligned typed arrays of the same kind, not sharing the frame", () => {
  const t = task();
  const decoded = decodeMessage(encodeMessage(t)) as TaskMessage;
  const b = decoded.batch;
  assert.equal(b.inputIds.constructor, Int32Array);
  assert.equal(b.tokenTypeIds.constructor, Int32Array);
  assert.equal(b.attentionMask.constructor, Uint8Array);
  assert.equal(b.labels.constructor, Float32Array);
  for (const a of [b.inputIds, b.tokenTypeIds, b.attentionMask, b.labels]) {
    assert.equal(a.byteOffset % a.BYTES_PER_ELEMENT, 0);
  }
  // From a frame at an odd byte offset.
  const bytes = encodeMessage(result());
  const shifted = new Uint8Array(bytes.byteLength + 3);
  shifted.set(bytes, 3);
  const frame = shifted.subarray(3);
  const r = decodeMessage(frame) as ResultMessage;
  assert.equal(r.grad.constructor, Float32Array);
  assert.equal(r.grad.byteOffset % 4, 0);
  assert.notEqual(r.grad.buffer, frame.buffer);
  assert.deepStrictEqual(r.grad, result().grad);
  // Subarrays (non-zero byteOffset) are encoded as just their elements.
  const big = new Float32Array([9, 9, 1, 2, 3, 9]);
  const w = decodeMessage(encodeMessage({
    type: "weights",
    runId: "r",
    version: 1,
    encoding: "f32",
    data: big.subarray(2, 5),
  }));
  assert.deepStrictEqual(w, {
    type: "weights",
    runId: "r",
    version: 1,
    encoding: "f32",
    data: new Float32Array([1, 2, 3]),
  });
});

Deno.test("f16 weights round-trip bit for bit", () => {
  // 1.0 = 0x3c00, −2.0 = 0xc000, 65504 (largest half) = 0x7bff, smallest subnormal = 0x0001, −0 = 0x8000.
  const bits = new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000, 0]);
  const m: Message = { type: "weights", runId: "r", version: 5, encoding: "f16", data: bits };
  const d = decodeMessage(encodeMessage(m));
  assert.equal(d.type, "weights");
  if (d.type !== "weights") return;
  assert.equal(d.data.constructor, Uint16Array);
  assert.deepStrictEqual([...d.data], [0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000, 0]);
  validateWeightsShape(d, 6);
  expectError(() => validateWeightsShape(d, 7), "bad_shape", /6 elements, expected 7/);
  // +Inf (0x7c00) and NaN (0x7e00) halves are refused.
  expectError(
    () => decodeRaw({ ...m, data: new Uint16Array([0x3c00, 0x7e00]) }),
    "non_finite",
    /weights\.data\[1\]/,
  );
  // An f16 message must carry a Uint16Array, an f32 one a Float32Array.
  expectError(() => decodeRaw({ ...m, data: new Float32Array(2) }), "malformed", /Uint16Array/);
  expectError(
    () => decodeRaw({ ...m, encoding: "f32", data: new Uint16Array(2) }),
    "malformed",
    /Float32Array/,
  );
});

Deno.test("not msgpack", () => {
  // A truncated array header (0x92: array of 2, only one element follows).
  expectError(() => decodeMessage(new Uint8Array([0x92, 0x01])), "malformed", /not valid msgpack/);
  // A truncated map: fixmap of 1 with a 4-byte key string cut short.
  expectError(() => decodeMessage(new Uint8Array([0x81, 0xa4, 0x74, 0x79])), "malformed");
  // JSON text: '{' = 0x7b decodes as the integer 123, then bytes are left over.
  expectError(
    () => decodeMessage(new TextEncoder().encode('{"type":"bye","reason":"x"}')),
    "malformed",
    /not valid msgpack/,
  );
  // 0xc1 is the one byte msgpack never uses.
  expectError(() => decodeMessage(new Uint8Array([0xc1])), "malformed");
  expectError(() => decodeMessage(new Uint8Array(0)), "malformed");
});

Deno.test("frame over the size limit", () => {
  const bytes = encodeMessage(result());
  expectError(
    () => decodeMessage(bytes, { maxBytes: 100 }),
    "too_large",
    new RegExp(`${bytes.byteLength} bytes is over the 100-byte limit`),
  );
  assert.doesNotThrow(() => decodeMessage(bytes, { maxBytes: bytes.byteLength }));
  expectError(() => encodeMessage(result(), { maxBytes: 100 }), "too_large");
});

Deno.test("not an object, unknown type", () => {
  expectError(() => decodeRaw([1, 2]), "malformed", /must be a map, got array/);
  expectError(() => decodeRaw("hello"), "malformed", /must be a map/);
  expectError(() => decodeRaw(7), "malformed", /must be a map/);
  expectError(() => decodeRaw(null), "malformed", /must be a map/);
  expectError(() => decodeRaw({ reason: "x" }), "malformed", /no type/);
  expectError(
    () => decodeRaw({ type: "launch", x: 1 }),
    "malformed",
    /unknown message type "launch"/,
  );
  expectError(() => decodeRaw({ type: 3 }), "malformed", /unknown message type/);
});

Deno.test("result with NaN at index 17 names index 17", () => {
  const r = result();
  r.grad[17] = NaN;
  r.grad[30] = Infinity;
  const e = expectError(() => decodeRaw(r), "non_finite", /result\.grad\[17\] is NaN/);
  assert.doesNotMatch(e.message, /30/);
  const s = result();
  s.grad[39] = -Infinity;
  expectError(() => decodeRaw(s), "non_finite", /result\.grad\[39\] is -Infinity/);
  // The sender finds it too, before it goes on the wire.
  expectError(() => encodeMessage(r), "non_finite", /\[17\]/);
  expectError(() => decodeRaw({ ...result(), loss: NaN }), "non_finite", /result\.loss is NaN/);
  expectError(() => decodeRaw({ ...result(), loss: Infinity }), "non_finite", /loss/);
  expectError(
    () =>
      decodeRaw({
        type: "weights",
        runId: "r",
        version: 1,
        encoding: "f32",
        data: new Float32Array([1, NaN]),
      }),
    "non_finite",
    /weights\.data\[1\]/,
  );
});

Deno.test("missing fields", () => {
  for (
    const key of ["taskId", "step", "index", "weightsVersion", "grad", "loss", "count", "timings"]
  ) {
    const r: Record<string, unknown> = { ...result() };
    delete r[key];
    expectError(() => decodeRaw(r), "malformed", new RegExp(`result\\.${key} is missing`));
  }
  const t: Record<string, unknown> = { ...task() };
  delete t.adversary;
  expectError(() => decodeRaw(t), "malformed", /task\.adversary is missing/);
  const tb = task();
  const batch: Record<string, unknown> = { ...tb.batch };
  delete batch.labels;
  expectError(() => decodeRaw({ ...tb, batch }), "malformed", /task\.batch\.labels is missing/);
  expectError(
    () => decodeRaw({ ...result(), timings: { computeMs: 1, adversaryMs: 2 } }),
    "malformed",
    /result\.timings\.encodeMs is missing/,
  );
  expectError(
    () => decodeRaw({ type: "hello", protocol: PROTOCOL_VERSION, token: "t" }),
    "malformed",
    /missing/,
  );
  expectError(() => decodeRaw({ type: "welcome", workerId: "w", runId: "r" }), "malformed");
});

Deno.test("wrong field types", () => {
  const adversary = task().adversary;
  const w = allMessages()[2];
  expectRefused("malformed", [
    [{ ...result(), taskId: "7" }, /result\.taskId must be an integer/],
    [{ ...result(), grad: [1, 2, 3] }, /result\.grad must be a Float32Array, got array/],
    [{ ...result(), grad: new Float64Array(40) }, /Float64Array/],
    [{ ...result(), loss: "0.5" }, /result\.loss must be a number/],
    [{ ...result(), timings: [1, 2, 3] }, /timings must be a map/],
    [{ ...task(), batch: [] }, /task\.batch must be a map/],
    [{ ...task(), adversary: { ...adversary, mode: "fgsm" } }, /mode must be one of/],
    [{ ...task(), adversary: { ...adversary, steps: 0 } }, /steps must be an integer ≥ 1/],
    [{ ...task(), adversary: { ...adversary, norm: "l1" } }],
    [{ type: "request", capacity: 0 }, /capacity/],
    [{ type: "heartbeat", time: "now" }],
    [{ type: "error", code: "oops", message: "x" }, /code must be one of/],
    [{ type: "bye", reason: 5 }, /bye\.reason must be a string/],
    [{ ...w, deterministic: "yes" }, /deterministic must be a boolean/],
    [{ ...w, modelConfig: "bert" }, /modelConfig must be a map/],
    [{ ...w, dropout: 1.5 }, /dropout/],
    [{ ...w, objective: "regress" }, /objective/],
  ]);
  // A peer that forgot moreTypes sends typed arrays as msgpack bin: refused, except for bytes.
  expectError(
    () => decodeMessage(plainPeer.pack(result())),
    "malformed",
    /result\.grad must be a Float32Array/,
  );
});

Deno.test("negative or non-integer ids, steps and versions", () => {
  expectError(
    () => decodeRaw({ ...result(), step: -1 }),
    "malformed",
    /result\.step must be an integer ≥ 0, got number -1/,
  );
  expectError(() => decodeRaw({ ...task(), step: -3 }), "malformed", /task\.step/);
  expectError(() => decodeRaw({ ...result(), weightsVersion: 1.5 }), "malformed", /weightsVersion/);
  expectError(() => decodeRaw({ ...result(), taskId: 2 ** 60 }), "malformed", /taskId/);
  expectError(
    () => decodeRaw({ ...result(), count: 0 }),
    "malformed",
    /count must be an integer ≥ 1/,
  );
  expectError(() => decodeRaw({ ...task(), index: -1 }), "malformed", /task\.index/);
  expectError(() => decodeRaw({ ...task(), seed: NaN }), "malformed", /task\.seed/);
  expectError(
    () =>
      decodeRaw({
        type: "weights",
        runId: "r",
        version: -2,
        encoding: "f32",
        data: new Float32Array(1),
      }),
    "malformed",
    /weights\.version/,
  );
  expectError(
    () => decodeRaw({ ...result(), timings: { computeMs: -1, adversaryMs: 0, encodeMs: 0 } }),
    "malformed",
    /computeMs must be ≥ 0/,
  );
});

Deno.test("batch shape and value checks", () => {
  const t = task();
  expectError(
    () => decodeRaw({ ...t, batch: { ...t.batch, inputIds: new Int32Array(7) } }),
    "bad_shape",
    /task\.batch\.inputIds has 7 elements, expected size·seqLen = 8/,
  );
  expectError(
    () => decodeRaw({ ...t, batch: { ...t.batch, seqLen: 5 } }),
    "bad_shape",
    /expected size·seqLen = 10/,
  );
  expectError(
    () => decodeRaw({ ...t, batch: { ...t.batch, attentionMask: new Uint8Array(9) } }),
    "bad_shape",
    /attentionMask/,
  );
  expectError(
    () => decodeRaw({ ...t, batch: { ...t.batch, labels: new Float32Array(3) } }),
    "bad_shape",
    /labels has 3/,
  );
  // MLM labels: one per token, −100 = ignored.
  const mlm = new Float32Array(8).fill(-100);
  mlm[1] = 2009;
  const d = decodeRaw({ ...t, batch: { ...t.batch, labels: mlm } }) as TaskMessage;
  assert.deepStrictEqual(d.batch.labels, mlm);
  const neg = t.batch.inputIds.slice();
  neg[5] = -4;
  expectError(
    () => decodeRaw({ ...t, batch: { ...t.batch, inputIds: neg } }),
    "malformed",
    /inputIds\[5\] = -4 is negative/,
  );
  const negType = t.batch.tokenTypeIds.slice();
  negType[0] = -1;
  expectError(
    () => decodeRaw({ ...t, batch: { ...t.batch, tokenTypeIds: negType } }),
    "malformed",
    /tokenTypeIds\[0\]/,
  );
  const mask = t.batch.attentionMask.slice();
  mask[2] = 2;
  expectError(
    () => decodeRaw({ ...t, batch: { ...t.batch, attentionMask: mask } }),
    "malformed",
    /attentionMask\[2\] = 2/,
  );
  const labels = t.batch.labels.slice();
  labels[1] = NaN;
  expectError(
    () => decodeRaw({ ...t, batch: { ...t.batch, labels } }),
    "non_finite",
    /labels\[1\]/,
  );
  expectError(() => decodeRaw({ ...t, batch: { ...t.batch, size: 0 } }), "malformed", /size/);
  // A mask sent as msgpack bin (a Buffer here, or any peer without typed-array
  // extensions) is accepted and copied off the frame into a plain Uint8Array.
  const frame = rawPeer.pack({
    ...t,
    batch: { ...t.batch, attentionMask: Buffer.from(t.batch.attentionMask) },
  });
  // Proof that it went as bin: a bare msgpackr decode hands back a view of the frame.
  const bare = new Unpackr({ useRecords: false }).unpack(frame) as {
    batch: { attentionMask: Uint8Array };
  };
  assert.equal(bare.batch.attentionMask.buffer, frame.buffer);
  const dm = decodeMessage(frame) as TaskMessage;
  assert.equal(dm.batch.attentionMask.constructor, Uint8Array);
  assert.notEqual(dm.batch.attentionMask.buffer, frame.buffer);
  assert.deepStrictEqual(dm.batch.attentionMask, t.batch.attentionMask);
  expectError(
    () =>
      decodeRaw({ ...t, batch: { ...t.batch, attentionMask: Array.from(t.batch.attentionMask) } }),
    "malformed",
    /attentionMask must be a Uint8Array, got array/,
  );
  // Ranges against the model.
  const bert = { modelType: "bert", padTokenId: 0, vocabSize: 30522, typeVocabSize: 2 } as const;
  validateBatchRanges(t.batch, { ...bert, maxPositions: 512 });
  expectError(
    () => validateBatchRanges(t.batch, { ...bert, vocabSize: 2000, maxPositions: 512 }),
    "malformed",
    /inputIds\[1\] = 2009/,
  );
  expectError(
    () => validateBatchRanges(t.batch, { ...bert, typeVocabSize: 1, maxPositions: 512 }),
    "malformed",
    /tokenTypeIds\[6\]/,
  );
  expectError(
    () => validateBatchRanges(t.batch, { ...bert, maxPositions: 3 }),
    "bad_shape",
    /seqLen 4 exceeds the 3 tokens/,
  );
  // RoBERTa numbers tokens from pad + 1: 6 positions with pad 1 embed 4 tokens, 5 only 3.
  const roberta = { ...bert, modelType: "roberta", padTokenId: 1 } as const;
  validateBatchRanges(t.batch, { ...roberta, maxPositions: 6 });
  expectError(
    () => validateBatchRanges(t.batch, { ...roberta, maxPositions: 5 }),
    "bad_shape",
    /seqLen 4 exceeds the 3 tokens/,
  );
});

Deno.test("hello: version and token", () => {
  const hello = allMessages()[0];
  expectError(
    () => decodeRaw({ ...hello, protocol: 1 }),
    "bad_version",
    /hello\.protocol 1 is not supported \(this side speaks 7\)/,
  );
  // A future hello with other fields still gets the version error, not a shape error.
  expectError(() => decodeRaw({ type: "hello", protocol: 9 }), "bad_version");
  const d = decodeMessage(encodeMessage(hello));
  assert.equal(d.type, "hello");
  if (d.type !== "hello") return;
  checkToken(d, "s3cret");
  expectError(() => checkToken(d, "s3cret!"), "bad_token");
  expectError(() => checkToken(d, "s3creT"), "bad_token");
  expectError(() => checkToken(d, ""), "bad_token");
});

Deno.test("unknown fields are dropped", () => {
  const d = decodeRaw({ type: "bye", reason: "done", extra: { deep: 1 } });
  assert.deepStrictEqual(d, { type: "bye", reason: "done" });
});

Deno.test("validateResultShape checks against the assignment", () => {
  const r = result();
  validateResultShape(r, 40, 2);
  expectError(() => validateResultShape(r, 41, 2), "bad_shape", /40 elements, expected 41/);
  expectError(() => validateResultShape(r, 40, 3), "bad_shape", /count is 2/);
});

Deno.test("validateResultShape checks the gradient against a row-sparse or dense layout", () => {
  // The one check of a result's gradient (the accumulator and the combine trust it).
  const r = (grad: Float32Array, rows?: Int32Array): ResultMessage => ({
    ...result(),
    grad,
    rows,
    count: 1,
  });
  const bad = (m: ResultMessage, layout: number | SparseLayout, pattern: RegExp) =>
    expectError(() => validateResultShape(m, layout, 1), "bad_shape", pattern);
  const s: SparseLayout = { total: 7, rowCount: 2, rowWidth: 2 };
  bad(r(new Float32Array(5), Int32Array.from([1])), 7, /dense gradients/);
  bad(r(new Float32Array(3), Int32Array.from([0])), denseLayout(5), /dense gradients/);
  bad(r(new Float32Array(6), Int32Array.from([1])), s, /expected 5/);
  bad(r(new Float32Array(5), Int32Array.from([2])), s, /row 2/);
  bad(r(new Float32Array(6)), s, /result.grad has 6 elements, expected 7/);
  // A 4×2 embedding block, then 3 dense values.
  const t: SparseLayout = { total: 4 * 2 + 3, rowCount: 4, rowWidth: 2 };
  bad(r(new Float32Array(6), Int32Array.from([1, 3])), t, /has 6 elements, expected 7/);
  bad(r(new Float32Array(7), Int32Array.from([1, 4])), t, /row 4, the vocabulary has 4/);
  validateResultShape(r(new Float32Array(7), Int32Array.from([1, 3])), t, 1);
  validateResultShape(r(new Float32Array(11)), t, 1);
});

Deno.test("eval_task: a batch without labels, checked like a task's", () => {
  const t = evalTask();
  const raw = { ...t, batch: { ...t.batch } };
  // Labels sent anyway are dropped: an evaluation task never carries them.
  const d = decodeRaw({ ...raw, batch: { ...raw.batch, labels: new Float32Array([1, 0]) } });
  assert.ok(d.type === "eval_task" && !("labels" in d.batch));
  assert.deepStrictEqual(d, t);
  expectError(
    () => decodeRaw({ ...raw, batch: { ...raw.batch, inputIds: new Int32Array(7) } }),
    "bad_shape",
    /eval_task\.batch\.inputIds has 7 elements, expected size·seqLen = 8/,
  );
  expectError(
    () => decodeRaw({ ...raw, batch: { ...raw.batch, attentionMask: new Uint8Array(8).fill(2) } }),
    "malformed",
    /eval_task\.batch\.attentionMask\[0\] = 2 is not 0 or 1/,
  );
  expectError(
    () => decodeRaw({ ...raw, batch: { ...raw.batch, tokenTypeIds: new Int32Array(8).fill(-1) } }),
    "malformed",
    /eval_task\.batch\.tokenTypeIds\[0\] = -1 is negative/,
  );
  expectError(() => decodeRaw({ ...raw, step: -1 }), "malformed", /eval_task\.step/);
  expectError(() => decodeRaw({ ...raw, runId: 3 }), "malformed", /eval_task\.runId/);
  const { batch: _b, ...noBatch } = raw;
  expectError(() => decodeRaw(noBatch), "malformed", /eval_task\.batch is missing/);
});

Deno.test("eval_result: finite logits; their count is checked against the task", () => {
  const r = evalResult();
  const nan = new Float32Array(r.logits);
  nan[2] = NaN;
  expectError(
    () => decodeRaw({ ...r, logits: nan }),
    "non_finite",
    /eval_result\.logits\[2\] is NaN/,
  );
  const inf = new Float32Array(r.logits);
  inf[0] = -Infinity;
  expectError(() => decodeRaw({ ...r, logits: inf }), "non_finite", /logits\[0\] is -Infinity/);
  expectError(
    () => decodeRaw({ ...r, logits: new Float32Array(0) }),
    "bad_shape",
    /eval_result\.logits is empty/,
  );
  expectError(
    () => decodeRaw({ ...r, logits: [1, 2, 3, 4] }),
    "malformed",
    /eval_result\.logits must be a Float32Array/,
  );
  expectError(
    () => decodeRaw({ ...r, logits: new Float64Array(4) }),
    "malformed",
    /eval_result\.logits must be a Float32Array/,
  );
  expectError(
    () => decodeRaw({ ...r, timings: { computeMs: -1, adversaryMs: 0, encodeMs: 0 } }),
    "malformed",
    /eval_result\.timings\.computeMs/,
  );
  expectError(() => decodeRaw({ ...r, taskId: 2 ** 60 }), "malformed", /eval_result\.taskId/);
  const { logits: _l, ...noLogits } = r;
  expectError(() => decodeRaw(noLogits), "malformed", /eval_result\.logits is missing/);
  // A worker finds its own NaN before sending it.
  expectError(() => encodeMessage({ ...r, logits: nan }), "non_finite", /logits\[2\]/);
  validateEvalResultShape(r, 2, 2);
  validateEvalResultShape(r, 4, 1);
  expectError(
    () => validateEvalResultShape(r, 2, 3),
    "bad_shape",
    /eval_result\.logits has 4 elements, expected size · numLabels = 2 · 3 = 6 \(evaluation batch 3\)/,
  );
});

Deno.test("toErrorMessage", () => {
  assert.deepStrictEqual(toErrorMessage(new ProtocolError("stale", "old step")), {
    type: "error",
    code: "stale",
    message: "old step",
  });
  assert.deepStrictEqual(toErrorMessage(new Error("boom")), {
    type: "error",
    code: "internal",
    message: "boom",
  });
  assert.deepStrictEqual(decodeMessage(encodeMessage(toErrorMessage("x"))), {
    type: "error",
    code: "internal",
    message: "x",
  });
});

Deno.test("a 20 MB gradient validates quickly", () => {
  const r = result();
  r.grad = new Float32Array(5_000_000);
  for (let i = 0; i < r.grad.length; i += 997) r.grad[i] = i * 1e-7;
  const bytes = encodeMessage(r);
  const t0 = performance.now();
  const d = decodeMessage(bytes) as ResultMessage;
  const ms = performance.now() - t0;
  assert.equal(d.grad.length, 5_000_000);
  assert.equal(d.grad[997], Math.fround(997e-7));
  assert.ok(ms < 2000, `decode of 20 MB took ${ms.toFixed(1)} ms`);
  r.grad[4_999_999] = NaN;
  expectError(() => decodeRaw(r), "non_finite", /result\.grad\[4999999\]/);
});

Deno.test("chunk headers round-trip, offsets beyond 2^32 included; no msgpack frame looks like a chunk", () => {
  const f = new Uint8Array(CHUNK_HEADER_BYTES + 8);
  for (const offset of [0, 1, 0xffffffff, 0x1_0000_0001, 2 ** 40 + 12345]) {
    writeChunkHeader(f, { transfer: 0xfffffffe, dtype: DTYPES.f16.code, offset, length: 4 });
    assert.deepEqual(readChunkHeader(f), {
      transfer: 0xfffffffe,
      dtype: DTYPES.f16.code,
      offset,
      length: 4,
    });
    assert.ok(isChunkFrame(f));
  }
  for (const m of allMessages()) assert.ok(!isChunkFrame(encodeMessage(m)), m.type);
  // A chunk frame handed to the message decoder is not msgpack.
  expectError(() => decodeMessage(f), "malformed", /not valid msgpack/);
  expectError(() => readChunkHeader(f.subarray(0, 31)), "bad_chunk", /shorter/);
  const far = f.slice();
  new DataView(far.buffer).setUint32(12, 0x20_0000, true);
  expectError(() => readChunkHeader(far), "bad_chunk", /2\^53/);
});

Deno.test("dtypes: codes, sizes and the typed array of each", () => {
  for (const [name, d] of Object.entries(DTYPES)) {
    assert.equal(dtypeOfCode(d.code), name);
    const a = d.make(3);
    assert.equal(a.length, 3);
    assert.equal(a.BYTES_PER_ELEMENT, d.bytes);
    assert.equal(dtypeOf(a), name);
  }
  assert.equal(dtypeOfCode(0), null);
  assert.equal(dtypeOfCode(5), null);
});

Deno.test("transfer declarations are validated field by field", () => {
  const good = {
    type: "transfer",
    transfer: 1,
    runId: "r",
    version: 0,
    dtype: "f32",
    length: 10,
    chunkLength: 4,
  };
  assert.deepStrictEqual(parseTransfer(good), good);
  assert.deepStrictEqual(parseTransfer({ ...good, taskId: 7, extra: 1 }), { ...good, taskId: 7 });
  expectError(() => parseTransfer({ ...good, transfer: -1 }), "malformed", /transfer\.transfer/);
  expectError(() => parseTransfer({ ...good, transfer: 2 ** 32 }), "malformed", /u32/);
  expectError(() => parseTransfer({ ...good, dtype: "f64" }), "malformed", /transfer\.dtype/);
  expectError(() => parseTransfer({ ...good, length: 0 }), "malformed", /transfer\.length/);
  expectError(() => parseTransfer({ ...good, chunkLength: 1.5 }), "malformed", /chunkLength/);
  expectError(() => parseTransfer({ ...good, runId: 3 }), "malformed", /transfer\.runId/);
  expectError(() => parseTransfer({ ...good, version: undefined }), "malformed", /missing/);
  // The message decoder does not take declarations: they are the transfer layer's.
  expectError(() => decodeMessage(packFrame(good)), "malformed", /unknown message type "transfer"/);
});

// ---------------------------------------------------------------------------
// Held tasks: done, flush, partial (protocol 5)
// ---------------------------------------------------------------------------

function partial(over: Partial<PartialMessage> = {}): PartialMessage {
  return {
    type: "partial",
    step: 3,
    weightsVersion: 3,
    indices: new Int32Array([0, 2, 5]),
    encoding: "f32",
    scale: 0,
    grad: new Float32Array([0.5, -1, 2, 0]),
    rows: new Int32Array([1]),
    lossSum: 1.25,
    count: 6,
    timings: { computeMs: 3, adversaryMs: 1, encodeMs: 0 },
    ...over,
  };
}

Deno.test("done, flush and partial round-trip; task.hold and welcome.gradEncoding default when absent", () => {
  const done: Message = {
    type: "done",
    taskId: 3_000_002,
    step: 3,
    index: 2,
    weightsVersion: 3,
    loss: 0.7,
    count: 2,
    timings: { computeMs: 1, adversaryMs: 0, encodeMs: 0 },
  };
  const flush: Message = {
    type: "flush",
    runId: "run-1",
    step: 3,
    weightsVersion: 3,
    indices: new Int32Array([0, 2, 5]),
  };
  for (
    const m of [done, flush, partial(), partial({ encoding: "bf16", grad: new Uint16Array(4) })]
  ) {
    assert.deepEqual(decodeMessage(encodeMessage(m)), m);
  }
  const f16 = partial({ encoding: "f16", scale: -3, grad: new Uint16Array([0x3c00, 0, 0, 1]) });
  assert.deepEqual(decodeMessage(encodeMessage(f16)), f16);
  const { hold: _hold, ...old } = task();
  assert.equal((decodeRaw(old) as TaskMessage).hold, false);
  const welcome = decodeRaw({
    type: "welcome",
    workerId: "w",
    runId: "r",
    modelConfig: {},
    objective: "classify",
    dropout: null,
    deterministic: false,
  });
  assert.equal(welcome.type === "welcome" && welcome.gradEncoding, "f32");
});

Deno.test("half-precision partials with NaN or Inf patterns are refused as non_finite", () => {
  const bad: [string, number][] = [
    ["bf16", 0x7f80], // +Inf
    ["bf16", 0xff80], // −Inf
    ["bf16", 0x7fc0], // NaN
    ["f16", 0x7c00], // +Inf
    ["f16", 0xfc00], // −Inf
    ["f16", 0x7e00], // NaN
  ];
  for (const [encoding, word] of bad) {
    const grad = new Uint16Array([0x3c00, word, 0]);
    const raw = { ...partial({ grad }), encoding, scale: 0 };
    expectError(() => decodeRaw(raw), "non_finite", /partial\.grad\[1\]/);
    expectError(() => encodeMessage(raw as PartialMessage), "non_finite");
  }
  expectError(() => decodeRaw(partial({ grad: new Float32Array([1, NaN]) })), "non_finite");
  // The largest finite patterns pass.
  decodeRaw({ ...partial({ grad: new Uint16Array([0x7f7f, 0xff7f]) }), encoding: "bf16" });
  decodeRaw({ ...partial({ grad: new Uint16Array([0x7bff, 0xfbff]) }), encoding: "f16" });
});

Deno.test("partial and flush fields are checked: indices, encoding, scale, shape and count", () => {
  expectRefused("malformed", [
    [partial({ indices: new Int32Array([2, 2]) }), /partial\.indices must be increasing/],
    [{ ...partial(), encoding: "f8" }, /partial\.encoding/],
    [partial({ scale: 3 }), /scale must be 0 for f32/],
    [{ ...partial({ encoding: "f16", grad: new Uint16Array(4) }), scale: 0.5 }, /integer/],
    [{ ...partial(), grad: new Uint16Array(4) }, /partial\.grad must be a Float32Array/],
    [
      { type: "flush", runId: "r", step: 1, weightsVersion: 1, indices: new Int32Array(0) },
      /empty/,
    ],
  ]);
  const s: SparseLayout = { total: 7, rowCount: 4, rowWidth: 1 };
  validatePartialShape(partial(), s, 6);
  expectError(() => validatePartialShape(partial(), s, 5), "bad_shape", /partial\.count is 6/);
  expectError(
    () => validatePartialShape(partial({ grad: new Float32Array(3) }), s, 6),
    "bad_shape",
    /partial\.grad has 3 elements, expected 4/,
  );
  assert.ok(ERROR_CODES.includes("bad_partial") && ERROR_CODES.includes("duplicate"));
});
