import assert from "node:assert/strict";
import { join } from "node:path";
import {
  bf16BitsToF32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
} from "../shared/wire/half_float.ts";
import {
  type HostTensor,
  planSafetensors,
  readSafetensors,
  SafetensorsFile,
  streamSafetensors,
} from "../shared/io/safetensors.ts";
import { writeSafetensors } from "./support/safetensors.ts";

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
  assert.throws(() => writeSafetensors([["x", u]], "F64" as "F32"), /F32, F16 or BF16 only/);
});

/** bfloat16 bits of one float32 bit pattern. */
const bf16 = (bits: number): number =>
  f32ToBf16Bits(new Float32Array(new Uint32Array([bits]).buffer))[0];

Deno.test("f32ToBf16Bits matches hand-computed bit patterns: ties to even, carries, Inf, NaN", () => {
  const cases: [number, number, string][] = [
    [0x3f800000, 0x3f80, "1.0 exact"],
    [0x3f808000, 0x3f80, "tie between 0x3F80 and 0x3F81 → even 0x3F80"],
    [0x3f818000, 0x3f82, "tie between 0x3F81 and 0x3F82 → even 0x3F82"],
    [0xbf818000, 0xbf82, "negative tie → even"],
    [0x3f808001, 0x3f81, "just above the tie rounds up"],
    [0x3f807fff, 0x3f80, "just below the tie rounds down"],
    [0x3fff8000, 0x4000, "tie on odd 0x3FFF carries into the exponent: 2.0"],
    [0x40490fdb, 0x4049, "pi → 3.140625"],
    [0x3eaaaaab, 0x3eab, "1/3 rounds up"],
    [0x7f7f7fff, 0x7f7f, "largest values below the tie stay finite"],
    [0x7f7f8000, 0x7f80, "tie at the top of the range (odd 0x7F7F) → +Inf"],
    [0x7f7fffff, 0x7f80, "FLT_MAX overflows to +Inf"],
    [0xff7fffff, 0xff80, "-FLT_MAX overflows to -Inf"],
    [0x7f800000, 0x7f80, "+Inf"],
    [0xff800000, 0xff80, "-Inf"],
    [0x7fc00000, 0x7fc0, "quiet NaN"],
    [0x7f800001, 0x7fc0, "NaN with only a low payload bit stays NaN (truncation would give Inf)"],
    [0x7fffffff, 0x7fff, "NaN with every payload bit (rounding would carry into -0)"],
    [0xffffffff, 0xffff, "negative NaN keeps its sign"],
    [0xff800001, 0xffc0, "negative signalling NaN → negative quiet NaN"],
    [0x7fa00000, 0x7fe0, "signalling NaN is made quiet, payload kept"],
    [0x00000000, 0x0000, "+0"],
    [0x80000000, 0x8000, "-0"],
    [0x00000001, 0x0000, "smallest subnormal rounds to 0"],
    [0x00008000, 0x0000, "subnormal tie → even 0"],
    [0x00018000, 0x0002, "subnormal tie → even 2"],
    [0x007fffff, 0x0080, "largest subnormal carries into the smallest normal"],
  ];
  for (const [input, expected, label] of cases) {
    const got = bf16(input);
    assert.equal(got, expected, `${label}: 0x${input.toString(16)} → 0x${got.toString(16)}`);
  }
});

Deno.test("f32ToBf16Bits picks the nearer bfloat16 (ties to even), checked in float64", () => {
  // Independent reference: the two bfloat16 neighbours of x, compared exactly in float64.
  const value = (b: number): number => bf16BitsToF32(new Uint16Array([b]))[0];
  let state = 12345;
  const next = (): number => (state = (Math.imul(state, 1664525) + 1013904223) >>> 0);
  for (let n = 0; n < 20000; n++) {
    let bits = next();
    if (n % 5 === 0) bits = (bits & 0xffff0000) | 0x8000; // force exact ties
    if (n % 7 === 0) bits = ((bits & 0x80ffffff) | 0x7f000000) >>> 0; // the top binade
    if ((bits & 0x7f800000) === 0x7f800000) continue; // Inf/NaN: the hand cases above
    const x = new Float32Array(new Uint32Array([bits]).buffer)[0];
    const lo = bits >>> 16, hi = lo + 1; // same sign; hi is one step larger in magnitude
    // Past the largest bfloat16 the next step is 2^128 (which then stands for Inf).
    const vHi = (hi & 0x7fff) === 0x7f80 ? Math.sign(x) * 2 ** 128 : value(hi);
    const dLo = Math.abs(x - value(lo)), dHi = Math.abs(vHi - x);
    const want = dLo < dHi ? lo : dHi < dLo ? hi : (lo & 1) === 0 ? lo : hi;
    assert.equal(bf16(bits), want, `0x${bits.toString(16)}`);
  }
});

Deno.test("BF16 round trip equals bf16 rounding; NaN and Inf survive", () => {
  const x = new Float32Array(3000).map((_, i) => Math.sin(i * 0.71) * (i % 37) * 1e3);
  x[0] = NaN;
  x[1] = -Infinity;
  x[2] = 3.4e38; // rounds to +Inf
  x[3] = -0;
  const bytes = writeSafetensors([["x", { shape: [3000], data: x }]], "BF16", { format: "pt" });
  assert.match(new TextDecoder().decode(bytes.subarray(8, 100)), /"dtype":"BF16"/);
  const got = readSafetensors(bytes).tensors.get("x")!.data;
  assert.ok(Number.isNaN(got[0]));
  assert.equal(got[1], -Infinity);
  assert.equal(got[2], Infinity);
  assert.ok(Object.is(got[3], -0));
  assert.deepEqual(got, bf16BitsToF32(f32ToBf16Bits(x)));
  for (let i = 4; i < x.length; i++) {
    assert.ok(Math.abs(got[i] - x[i]) <= Math.abs(x[i]) * 2 ** -8, `index ${i}`);
    assert.equal(f32Bits(got[i]) & 0xffff, 0, "a bf16 value has 16 zero low bits");
  }
});

/** A sink that keeps a copy of every piece written to it. */
function collector(): { pieces: Uint8Array[]; write(b: Uint8Array): Promise<void> } {
  const pieces: Uint8Array[] = [];
  return { pieces, write: (b) => Promise.resolve(void pieces.push(b.slice())) };
}

const concat = (pieces: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(pieces.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of pieces) (out.set(p, at), at += p.length);
  return out;
};

Deno.test("streamSafetensors writes the same bytes as writeSafetensors, in bounded pieces", async () => {
  const big = new Float32Array(2_500_000).map((_, i) => Math.cos(i * 0.001) * 7);
  const tensors: [string, HostTensor][] = [
    ["z.big", { shape: [2500, 1000], data: big }],
    ["a.small", { shape: [3], data: new Float32Array([1, -2, 3.5]) }],
    ["m.empty", { shape: [0], data: new Float32Array(0) }],
  ];
  for (const dtype of ["F32", "F16", "BF16"] as const) {
    const sink = collector();
    const plan = planSafetensors(tensors, dtype, { format: "pt" });
    const written = await streamSafetensors(plan, sink);
    const whole = writeSafetensors(tensors, dtype, { format: "pt" });
    assert.equal(written, whole.length);
    assert.equal(plan.size, whole.length);
    assert.deepEqual(concat(sink.pieces), whole, dtype);
    const largest = Math.max(...sink.pieces.map((p) => p.length));
    if (dtype === "F32") {
      assert.equal(largest, big.length * 4, "an F32 tensor is one view of its own data");
    } else {
      // 2.5 M elements in pieces of at most 1 Mi elements: never one buffer for the file.
      assert.ok(largest <= 2 * 2 ** 20, `${dtype}: largest piece ${largest} bytes`);
      assert.ok(sink.pieces.length >= 1 + 3 + 1, `${dtype}: ${sink.pieces.length} pieces`);
    }
  }
});

Deno.test("SafetensorsFile reads tensors one at a time into the caller's buffer", async () => {
  const dir = await Deno.makeTempDir({ prefix: "st_file_test_" });
  try {
    const big = new Float32Array((1 << 20) + 5).map((_, i) => Math.sin(i * 0.01) * 100);
    const tensors: [string, HostTensor][] = [
      ["big", { shape: [big.length], data: big }],
      ["w", { shape: [2, 2], data: new Float32Array([1, -0, 1e-40, -7.25]) }],
    ];
    for (const dtype of ["F32", "F16", "BF16"] as const) {
      const path = join(dir, `${dtype}.safetensors`);
      const bytes = writeSafetensors(tensors, dtype, { format: "pt" });
      await Deno.writeFile(path, bytes);
      const expected = readSafetensors(bytes);
      const file = await SafetensorsFile.open(path);
      try {
        assert.deepEqual(file.metadata, { format: "pt" });
        assert.equal(file.size, bytes.length);
        assert.deepEqual([...file.tensors.keys()], ["big", "w"]);
        assert.deepEqual(file.tensors.get("w")!.shape, [2, 2]);
        assert.equal(file.tensors.get("w")!.dtype, dtype);
        // Into a subarray of a larger buffer: exactly that range is written.
        const flat = new Float32Array(big.length + 6).fill(9);
        const out = await file.read("big", flat.subarray(1, 1 + big.length));
        assert.equal(out.buffer, flat.buffer);
        assert.equal(flat[0], 9);
        assert.equal(flat[big.length + 1], 9);
        const want = expected.tensors.get("big")!.data;
        assert.deepEqual(new Uint32Array(out.buffer, out.byteOffset, out.length), bitsOf(want));
        const w = await file.read("w");
        assert.deepEqual(bitsOf(w), bitsOf(expected.tensors.get("w")!.data), dtype);
        await assert.rejects(
          file.read("w", new Float32Array(3)),
          /4 values but the buffer holds 3/,
        );
        await assert.rejects(file.read("nope"), /no tensor "nope"/);
      } finally {
        file.close();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const bitsOf = (x: Float32Array): Uint32Array => new Uint32Array(x.buffer, x.byteOffset, x.length);

Deno.test("SafetensorsFile validates the header as strictly as readSafetensors", async () => {
  const dir = await Deno.makeTempDir({ prefix: "st_file_test_" });
  try {
    const ok = { dtype: "F32", shape: [2], data_offsets: [0, 8] };
    const eight = new Array(8).fill(0);
    const cases: [string, Uint8Array, RegExp][] = [
      ["short", new Uint8Array(3), /3 bytes, shorter than the 8-byte/],
      ["beyond", build(JSON.stringify({ x: ok }), eight, 10_000n), /beyond the end/],
      ["truncated data", build(JSON.stringify({ x: ok }), [0, 0, 0, 0]), /outside the data/],
      ["trailing", build(JSON.stringify({ x: ok }), [...eight, 1]), /trailing/],
      ["not JSON", build("{nope", eight), /not valid JSON/],
    ];
    for (const [label, bytes, pattern] of cases) {
      const path = join(dir, `${label}.safetensors`);
      await Deno.writeFile(path, bytes);
      await assert.rejects(SafetensorsFile.open(path), pattern, label);
    }
    const i64 = build(
      JSON.stringify({ ids: { dtype: "I64", shape: [1], data_offsets: [0, 8] } }),
      eight,
    );
    await Deno.writeFile(join(dir, "i64.safetensors"), i64);
    const file = await SafetensorsFile.open(join(dir, "i64.safetensors"));
    try {
      assert.equal(file.tensors.get("ids")!.dtype, "I64");
      await assert.rejects(file.read("ids"), /unsupported dtype "I64"/);
    } finally {
      file.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
