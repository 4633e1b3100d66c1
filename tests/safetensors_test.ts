import assert from "node:assert/strict";
import {
  bf16BitsToF32,
  f16BitsToF32,
  f32ToF16Bits,
  type HostTensor,
  readSafetensors,
  writeSafetensors,
} from "../shared/safetensors.ts";

/** Builds a safetensors file from a literal header text and raw data bytes. */
function build(header: string, data: number[] | Uint8Array, headerLength?: bigint): Uint8Array {
  const json = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, headerLength ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

const half = (x: number): number => f32ToF16Bits(new Float32Array([x]))[0];
const f32Bits = (x: number): number => new Uint32Array(new Float32Array([x]).buffer)[0];

Deno.test("f32ToF16Bits matches hand-computed bit patterns", () => {
  const cases: [number, number][] = [
    [1.0, 0x3c00],
    [-2.0, 0xc000],
    [0, 0x0000],
    [-0, 0x8000],
    [65504, 0x7bff],
    [65519, 0x7bff], // just below the tie with 65536
    [65520, 0x7c00], // tie between 65504 and 65536 → even → Inf
    [1e10, 0x7c00],
    [-1e10, 0xfc00],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [5.960464477539063e-8, 0x0001], // smallest subnormal 2^-24
    [6.097555160522461e-5, 0x03ff], // largest subnormal
    [6.103515625e-5, 0x0400], // smallest normal 2^-14
    [1 / 3, 0x3555],
    [2 ** -25, 0x0000], // tie between 0 and 2^-24 → even → 0
    [3 * 2 ** -25, 0x0002], // tie between 1 and 2 subnormal units → even → 2
    [2 ** -25 * (1 + 2 ** -23), 0x0001], // just above the tie
    [1e-8, 0x0000],
    [-1e-8, 0x8000],
    [1e-45, 0x0000], // float32 subnormal
    [1 + 2 ** -11, 0x3c00], // tie → even (down)
    [1 + 3 * 2 ** -11, 0x3c02], // tie → even (up)
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // above the tie
    [2049, 0x6800], // tie between 2048 and 2050 → 2048
    [2051, 0x6802], // tie between 2050 and 2052 → 2052
    [0.1, 0x2e66],
  ];
  for (const [x, bits] of cases) {
    assert.equal(half(x), bits, `${x} → 0x${half(x).toString(16)}, want 0x${bits.toString(16)}`);
  }
  const nan = half(NaN);
  assert.equal(nan & 0x7c00, 0x7c00);
  assert.notEqual(nan & 0x03ff, 0, "NaN must stay NaN, not become Inf");
  // A NaN whose payload lives only in the low float32 bits must still be NaN.
  const lowNaN = new Float32Array(new Uint32Array([0xff800001]).buffer);
  const lowBits = f32ToF16Bits(lowNaN)[0];
  assert.equal(lowBits & 0xfc00, 0xfc00);
  assert.notEqual(lowBits & 0x03ff, 0);
});

Deno.test("f16BitsToF32 decodes hand-picked patterns exactly", () => {
  const out = f16BitsToF32(
    new Uint16Array([
      0x3c00,
      0xc000,
      0x0001,
      0x03ff,
      0x0400,
      0x7bff,
      0x3555,
      0x7c00,
      0xfc00,
      0x8000,
    ]),
  );
  assert.deepEqual([...out.subarray(0, 7)], [
    1,
    -2,
    2 ** -24,
    1023 * 2 ** -24,
    2 ** -14,
    65504,
    0.333251953125,
  ]);
  assert.equal(out[7], Infinity);
  assert.equal(out[8], -Infinity);
  assert.ok(Object.is(out[9], -0));
  assert.ok(Number.isNaN(f16BitsToF32(new Uint16Array([0x7e00]))[0]));
  assert.ok(Number.isNaN(f16BitsToF32(new Uint16Array([0xfc01]))[0]));
});

Deno.test("every non-NaN f16 pattern survives f16 → f32 → f16", () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const back = f32ToF16Bits(f16BitsToF32(all));
  for (let i = 0; i < 65536; i++) {
    const isNaN = (i & 0x7c00) === 0x7c00 && (i & 0x3ff) !== 0;
    if (isNaN) assert.ok((back[i] & 0x7c00) === 0x7c00 && (back[i] & 0x3ff) !== 0);
    else assert.equal(back[i], i, `pattern 0x${i.toString(16)}`);
  }
});

Deno.test("f32ToF16Bits agrees with DataView.setFloat16 on random and boundary values", () => {
  const dv = new DataView(new ArrayBuffer(2));
  let state = 12345;
  const next = () => (state = (Math.imul(state, 1664525) + 1013904223) >>> 0);
  const n = 50_000;
  const x = new Float32Array(n);
  const bits = new Uint32Array(x.buffer);
  for (let i = 0; i < n; i++) {
    // Half the values have exponents near the f16 range (incl. subnormal and overflow edges).
    const r = next();
    bits[i] = i % 2 === 0 ? r : (r & 0x807fffff) | ((100 + (next() % 45)) << 23);
    // Exact ties: mantissa with the dropped 13 bits = 0x1000.
    if (i % 7 === 0) bits[i] = (bits[i] & 0xffffe000) | 0x1000;
  }
  const got = f32ToF16Bits(x);
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(x[i])) continue;
    dv.setFloat16(0, x[i]);
    assert.equal(got[i], dv.getUint16(0), `x=${x[i]} (0x${bits[i].toString(16)})`);
  }
});

Deno.test("bf16BitsToF32 decodes the top half of a float32", () => {
  const out = bf16BitsToF32(new Uint16Array([0x3f80, 0xc020, 0x7f80, 0x0000, 0x8000, 0x4049]));
  assert.deepEqual([...out.subarray(0, 3)], [1, -2.5, Infinity]);
  assert.ok(Object.is(out[3], 0) && Object.is(out[4], -0));
  assert.equal(out[5], 3.140625);
  assert.ok(Number.isNaN(bf16BitsToF32(new Uint16Array([0x7fc0]))[0]));
});

Deno.test("readSafetensors parses a hand-built file with F32, F16, BF16, scalar and empty tensors", () => {
  const header = JSON.stringify({
    "__metadata__": { "format": "pt", "note": "hand built" },
    "b": { "dtype": "F16", "shape": [2], "data_offsets": [8, 12] },
    "a": { "dtype": "F32", "shape": [2, 1], "data_offsets": [0, 8] },
    "c": { "dtype": "BF16", "shape": [1, 2], "data_offsets": [12, 16] },
    "s": { "dtype": "F32", "shape": [], "data_offsets": [16, 20] },
    "e": { "dtype": "F32", "shape": [0, 3], "data_offsets": [20, 20] },
  });
  assert.notEqual(header.length % 8, 0, "exercise an unaligned data buffer");
  const data = [
    ...[0x00, 0x00, 0xc0, 0x3f], // 1.5f
    ...[0x00, 0x00, 0x00, 0xc0], // -2f
    ...[0x00, 0x3c, 0x00, 0xc0], // f16 1, -2
    ...[0x80, 0x3f, 0x20, 0xc0], // bf16 1, -2.5
    ...[0x00, 0x00, 0x80, 0x40], // 4f
  ];
  const { tensors, metadata } = readSafetensors(build(header, data));
  assert.deepEqual(metadata, { format: "pt", note: "hand built" });
  assert.deepEqual([...tensors.keys()].sort(), ["a", "b", "c", "e", "s"]);
  assert.deepEqual(tensors.get("a")!.shape, [2, 1]);
  assert.deepEqual([...tensors.get("a")!.data], [1.5, -2]);
  assert.deepEqual([...tensors.get("b")!.data], [1, -2]);
  assert.deepEqual([...tensors.get("c")!.data], [1, -2.5]);
  assert.deepEqual(tensors.get("s")!.shape, []);
  assert.deepEqual([...tensors.get("s")!.data], [4]);
  assert.deepEqual(tensors.get("e")!.shape, [0, 3]);
  assert.equal(tensors.get("e")!.data.length, 0);
  assert.ok(tensors.get("a")!.data instanceof Float32Array);
});

Deno.test("readSafetensors accepts a file without metadata and with header padding", () => {
  const header = '{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}   ';
  const { tensors, metadata } = readSafetensors(build(header, [0, 0, 0x80, 0x3f]));
  assert.deepEqual(metadata, {});
  assert.deepEqual([...tensors.get("x")!.data], [1]);
});

Deno.test("readSafetensors reads a subarray view of a larger buffer", () => {
  const file = build('{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', [0, 0, 0x20, 0x41]);
  const big = new Uint8Array(file.length + 3);
  big.set(file, 3);
  assert.deepEqual([...readSafetensors(big.subarray(3)).tensors.get("x")!.data], [10]);
});

Deno.test("writeSafetensors produces the reference layout byte for byte", () => {
  const bytes = writeSafetensors([["a", { shape: [2], data: new Float32Array([1, 2]) }]], "F32", {
    format: "pt",
  });
  const json =
    '{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
  const padded = json + " ".repeat((8 - (json.length % 8)) % 8);
  const expected = build(padded, [0, 0, 0x80, 0x3f, 0, 0, 0, 0x40]);
  assert.deepEqual(bytes, expected);
});

Deno.test("writeSafetensors sorts names, pads the header to 8 bytes, and offsets are contiguous", () => {
  const t = (n: number): HostTensor => ({ shape: [n], data: new Float32Array(n).fill(n) });
  const bytes = writeSafetensors(
    new Map([["b", t(3)], ["a", t(1)], ["10", t(2)], ["2", t(5)]]),
    "F16",
  );
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal(n % 8, 0);
  const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
  assert.match(text, /^\{.*\} *$/);
  const header = JSON.parse(text) as Record<string, { data_offsets: number[]; dtype: string }>;
  // Key order in the text (JSON.parse would reorder integer-like keys).
  const order = [...text.matchAll(/"([^"]+)":\{"dtype"/g)].map((m) => m[1]);
  assert.deepEqual(order, ["10", "2", "a", "b"]);
  assert.deepEqual(header["10"].data_offsets, [0, 4]);
  assert.deepEqual(header["2"].data_offsets, [4, 14]);
  assert.deepEqual(header["a"].data_offsets, [14, 16]);
  assert.deepEqual(header["b"].data_offsets, [16, 22]);
  assert.equal(header["a"].dtype, "F16");
  assert.equal(bytes.length, 8 + n + 22);
  assert.equal(text.includes("__metadata__"), false);
});

Deno.test("F32 round trip is bit-exact, including -0, subnormals, Inf and NaN", () => {
  const special = new Float32Array([0, -0, 1e-45, -3.4e38, Infinity, -Infinity, NaN, Math.PI]);
  const random = new Float32Array(1000).map((_, i) => Math.sin(i * 12.9898) * 43758.5453);
  const tensors = new Map<string, HostTensor>([
    ["special", { shape: [2, 4], data: special }],
    ["random", { shape: [10, 10, 10], data: random }],
    ["empty", { shape: [0], data: new Float32Array(0) }],
  ]);
  const back = readSafetensors(writeSafetensors(tensors, "F32", { k: "v" }));
  assert.deepEqual(back.metadata, { k: "v" });
  for (const [name, t] of tensors) {
    const got = back.tensors.get(name)!;
    assert.deepEqual(got.shape, t.shape);
    assert.deepEqual(
      new Uint32Array(got.data.buffer, got.data.byteOffset, got.data.length),
      new Uint32Array(t.data.buffer, t.data.byteOffset, t.data.length),
    );
  }
});

Deno.test("F16 round trip equals f16 rounding and stays within half-precision tolerance", () => {
  const x = new Float32Array(4096).map((_, i) => Math.sin(i * 0.37) * (i % 100) * 3.3);
  x[0] = 1e6; // overflow → Inf
  x[1] = 1e-7; // subnormal
  const back = readSafetensors(writeSafetensors([["x", { shape: [64, 64], data: x }]], "F16"));
  const got = back.tensors.get("x")!.data;
  assert.deepEqual(got, f16BitsToF32(f32ToF16Bits(x)));
  assert.equal(got[0], Infinity);
  assert.ok(Math.abs(got[1] - 1e-7) <= 2 ** -25);
  for (let i = 2; i < x.length; i++) {
    assert.ok(Math.abs(got[i] - x[i]) <= Math.abs(x[i]) * 2 ** -11 + 2 ** -25, `index ${i}`);
  }
  assert.equal(f32Bits(got[5]) & 0x1fff, 0, "an f16 value has 13 zero low mantissa bits");
});

Deno.test("readSafetensors rejects every kind of malformed file with a clear error", () => {
  const e = (name: string, entry: unknown): string => JSON.stringify({ [name]: entry });
  const ok = { dtype: "F32", shape: [2], data_offsets: [0, 8] };
  const eight = new Array(8).fill(0);
  const cases: [string, Uint8Array, RegExp][] = [
    ["short file", new Uint8Array(5), /5 bytes, shorter than the 8-byte/],
    ["empty file", new Uint8Array(0), /shorter than/],
    ["header beyond file", build(e("x", ok), eight, 10_000n), /beyond the end/],
    ["absurd header", build(e("x", ok), eight, 1n << 40n), /absurd/],
    ["absurd u64 max", build(e("x", ok), eight, (1n << 64n) - 1n), /absurd/],
    ["not JSON", build("{not json", eight), /not valid JSON/],
    ["JSON array", build("[1,2]", []), /not a JSON object/],
    ["JSON string", build('"x"', []), /not a JSON object/],
    ["JSON null", build("null", []), /not a JSON object/],
    ["bad UTF-8", build("{}", []).map((b, i) => (i === 8 ? 0xff : b)), /UTF-8/],
    ["entry not object", build(e("x", 3), []), /"x".*not an object/],
    ["missing dtype", build(e("x", { shape: [2], data_offsets: [0, 8] }), eight), /"x".*"dtype"/],
    ["missing shape", build(e("x", { dtype: "F32", data_offsets: [0, 8] }), eight), /"shape"/],
    ["missing offsets", build(e("x", { dtype: "F32", shape: [2] }), eight), /"data_offsets"/],
    ["dtype not string", build(e("x", { ...ok, dtype: 5 }), eight), /dtype must be a string/],
    [
      "unsupported I64",
      build(e("x", { ...ok, shape: [1] }).replace("F32", "I64"), eight),
      /"x".*unsupported dtype "I64"/,
    ],
    ["unknown dtype", build(e("x", { ...ok, dtype: "Q4" }), eight), /unsupported dtype "Q4"/],
    ["negative dim", build(e("x", { ...ok, shape: [-2] }), eight), /non-negative integers/],
    ["fractional dim", build(e("x", { ...ok, shape: [1.5] }), eight), /non-negative integers/],
    ["shape not array", build(e("x", { ...ok, shape: "2" }), eight), /shape must be an array/],
    [
      "offsets not pair",
      build(e("x", { ...ok, data_offsets: [0] }), eight),
      /data_offsets must be/,
    ],
    [
      "offsets negative",
      build(e("x", { ...ok, data_offsets: [-8, 0] }), eight),
      /data_offsets must be/,
    ],
    ["size mismatch", build(e("x", { ...ok, shape: [3] }), eight), /span 8 bytes .* needs 12/],
    ["end before begin", build(e("x", { ...ok, data_offsets: [8, 0] }), eight), /before begin/],
    [
      "out of buffer",
      build(e("x", { ...ok, data_offsets: [4, 12] }), eight),
      /outside the data buffer/,
    ],
    [
      "overlap",
      build(JSON.stringify({ a: ok, b: { ...ok, shape: [1], data_offsets: [4, 8] } }), eight),
      /overlaps/,
    ],
    [
      "gap",
      build(JSON.stringify({ a: { ...ok, shape: [1], data_offsets: [4, 8] } }), eight),
      /gap in the data buffer/,
    ],
    ["trailing bytes", build(e("x", ok), [...eight, 0, 0, 0, 0]), /trailing/],
    ["data without tensors", build("{}", [1, 2]), /trailing/],
    [
      "metadata value not string",
      build(JSON.stringify({ __metadata__: { format: 1 }, x: ok }), eight),
      /__metadata__ must map strings to strings.*"format"/,
    ],
    [
      "metadata not object",
      build(JSON.stringify({ __metadata__: ["pt"], x: ok }), eight),
      /__metadata__ must be an object/,
    ],
  ];
  for (const [label, bytes, pattern] of cases) {
    assert.throws(() => readSafetensors(bytes), pattern, label);
  }
});

Deno.test("readSafetensors skip option leaves out tensors of unsupported dtypes", () => {
  const header = JSON.stringify({
    "embeddings.position_ids": { dtype: "I64", shape: [1, 2], data_offsets: [0, 16] },
    "w": { dtype: "F32", shape: [1], data_offsets: [16, 20] },
  });
  const bytes = build(header, [...new Array(16).fill(0), 0, 0, 0x80, 0x3f]);
  assert.throws(() => readSafetensors(bytes), /unsupported dtype "I64"/);
  const { tensors } = readSafetensors(bytes, { skip: (name) => name.endsWith("position_ids") });
  assert.deepEqual([...tensors.keys()], ["w"]);
  // Skipped tensors are still checked for size against their dtype.
  const bad = build(header.replace("[1,2]", "[1,3]"), [...new Array(16).fill(0), 0, 0, 0x80, 0x3f]);
  assert.throws(() => readSafetensors(bad, { skip: () => true }), /needs 24/);
});

Deno.test("writeSafetensors rejects inconsistent input", () => {
  const t = { shape: [3], data: new Float32Array(2) };
  assert.throws(() => writeSafetensors([["x", t]], "F32"), /shape \[3\] but 2 values/);
  const u = { shape: [2], data: new Float32Array(2) };
  assert.throws(() => writeSafetensors([["x", u], ["x", u]], "F32"), /duplicate tensor name "x"/);
  assert.throws(() => writeSafetensors([["__metadata__", u]], "F32"), /not a tensor name/);
  assert.throws(
    () => writeSafetensors([["x", { shape: [-2], data: new Float32Array(0) }]], "F16"),
    /invalid shape/,
  );
  assert.throws(
    () => writeSafetensors([["x", u]], "F32", { a: 1 } as unknown as Record<string, string>),
    /__metadata__ must map strings/,
  );
  assert.throws(() => writeSafetensors([["x", u]], "BF16" as "F32"), /F32 or F16 only/);
});
