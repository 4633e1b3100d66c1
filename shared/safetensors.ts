/**
 * Reader and writer of the safetensors format used by Hugging Face:
 *
 *     u64 little-endian N | N bytes of UTF-8 JSON header | raw little-endian data
 *
 * The header maps each tensor name to `{dtype, shape, data_offsets: [begin, end]}`
 * (offsets relative to the start of the data buffer) and may carry a
 * `__metadata__` object of string → string. The reader validates the file as
 * strictly as the reference implementation (contiguous offsets, sizes that
 * match shape × dtype, no trailing bytes) and decodes F32, F16 and BF16 into
 * Float32Array; the writer emits F32 or F16 the way the reference writer does
 * (tensors sorted by name, header padded with spaces to a multiple of 8 bytes).
 *
 * @module
 */

/** Floating-point dtypes this module decodes. */
export type DType = "F32" | "F16" | "BF16";

/** A tensor in host memory: shape and float32 data in row-major order. */
export interface HostTensor {
  shape: number[];
  data: Float32Array;
}

/** Options of {@link readSafetensors}. */
export interface ReadOptions {
  /**
   * Tensors for which this returns true are validated (offsets, contiguity) but
   * not decoded and not returned — e.g. integer `position_ids` buffers, whose
   * dtype would otherwise be rejected.
   */
  skip?: (name: string, dtype: string) => boolean;
}

/** The reference reader refuses headers above 100 MB. */
const MAX_HEADER_BYTES = 100_000_000;

/** Byte sizes of every byte-aligned safetensors dtype (used to validate offsets). */
const DTYPE_BYTES: Readonly<Record<string, number>> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  F8_E8M0: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
  C64: 8,
};

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// Scratch views for the bit-level conversions.
const F32_SCRATCH = new Float32Array(1);
const U32_SCRATCH = new Uint32Array(F32_SCRATCH.buffer);

/** Converts one float32 bit pattern to float16 bits, rounding to nearest even. */
function halfFromF32Bits(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) {
    // Infinity stays infinity; NaN keeps its sign and top payload bits, made quiet.
    return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  }
  const e = exp - 112; // rebias 127 → 15
  if (e >= 0x1f) return sign | 0x7c00; // overflow → ±Inf
  if (e <= 0) {
    // Subnormal half (or zero): value = m × 2^-24 with m = M >> (14 - e).
    const shift = 14 - e;
    if (shift > 24) return sign; // below half the smallest subnormal → ±0
    const m = mant | 0x800000;
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1) === 1)) h++; // may carry into the smallest normal
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++; // carry may reach 0x7c00 = Inf
  return sign | h;
}

/**
 * Converts float32 values to IEEE 754 binary16 bit patterns: round to nearest,
 * ties to even; overflow → ±Inf; subnormals exact; NaN stays NaN (quiet).
 */
export function f32ToF16Bits(x: Float32Array): Uint16Array {
  const out = new Uint16Array(x.length);
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  for (let i = 0; i < x.length; i++) out[i] = halfFromF32Bits(bits[i]);
  return out;
}

/** Converts one float16 bit pattern to float32 bits (exact). */
function f32BitsFromHalf(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0; // Inf / NaN (payload kept)
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0; // ±0
  // Subnormal: mant × 2^-24 is exactly representable as a normal float32.
  F32_SCRATCH[0] = mant * 2 ** -24;
  return (sign | U32_SCRATCH[0]) >>> 0;
}

/** Converts IEEE 754 binary16 bit patterns to float32 values (exact, NaN payload kept). */
export function f16BitsToF32(b: Uint16Array): Float32Array {
  const out = new Float32Array(b.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < b.length; i++) bits[i] = f32BitsFromHalf(b[i]);
  return out;
}

/** Converts bfloat16 bit patterns (the top half of a float32) to float32 values. */
export function bf16BitsToF32(b: Uint16Array): Float32Array {
  const out = new Float32Array(b.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < b.length; i++) bits[i] = (b[i] << 16) >>> 0;
  return out;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function product(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Copies `len` bytes at `offset` into a fresh, aligned buffer and views them as 16-bit words. */
function readU16(bytes: Uint8Array, offset: number, count: number): Uint16Array {
  if (LITTLE_ENDIAN) return new Uint16Array(bytes.slice(offset, offset + 2 * count).buffer);
  const dv = new DataView(bytes.buffer, bytes.byteOffset + offset, 2 * count);
  const out = new Uint16Array(count);
  for (let i = 0; i < count; i++) out[i] = dv.getUint16(2 * i, true);
  return out;
}

function readF32(bytes: Uint8Array, offset: number, count: number): Float32Array {
  if (LITTLE_ENDIAN) return new Float32Array(bytes.slice(offset, offset + 4 * count).buffer);
  const dv = new DataView(bytes.buffer, bytes.byteOffset + offset, 4 * count);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = dv.getFloat32(4 * i, true);
  return out;
}

interface Entry {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

function parseEntry(name: string, raw: unknown, dataLength: number): Entry {
  const where = `safetensors: tensor "${name}"`;
  if (!isRecord(raw)) throw new Error(`${where}: header entry is not an object`);
  for (const key of ["dtype", "shape", "data_offsets"]) {
    if (!(key in raw)) throw new Error(`${where}: header entry is missing "${key}"`);
  }
  const { dtype, shape, data_offsets: offsets } = raw;
  if (typeof dtype !== "string") {
    throw new Error(`${where}: dtype must be a string, got ${JSON.stringify(dtype)}`);
  }
  if (!Array.isArray(shape) || !shape.every(isCount)) {
    throw new Error(
      `${where}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`,
    );
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
    throw new Error(
      `${where}: data_offsets must be [begin, end] non-negative integers, got ${
        JSON.stringify(offsets)
      }`,
    );
  }
  const [begin, end] = offsets as number[];
  if (end < begin) throw new Error(`${where}: data_offsets end ${end} is before begin ${begin}`);
  if (end > dataLength) {
    throw new Error(
      `${where}: data_offsets [${begin}, ${end}] lie outside the data buffer of ${dataLength} bytes`,
    );
  }
  const elements = product(shape);
  if (!Number.isSafeInteger(elements)) {
    throw new Error(`${where}: shape ${JSON.stringify(shape)} has too many elements`);
  }
  const size = DTYPE_BYTES[dtype];
  if (size !== undefined && end - begin !== elements * size) {
    throw new Error(
      `${where}: data_offsets [${begin}, ${end}] span ${end - begin} bytes but shape ${
        JSON.stringify(shape)
      } of ${dtype} needs ${elements * size}`,
    );
  }
  return { name, dtype, shape, begin, end };
}

function parseMetadata(raw: unknown): Record<string, string> {
  if (!isRecord(raw)) throw new Error("safetensors: __metadata__ must be an object");
  const pairs: [string, string][] = [];
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v !== "string") {
      throw new Error(
        `safetensors: __metadata__ must map strings to strings, but "${k}" is ${JSON.stringify(v)}`,
      );
    }
    pairs.push([k, v]);
  }
  // fromEntries defines own properties, so a "__proto__" key stays a plain key.
  return Object.fromEntries(pairs);
}

/**
 * Parses a safetensors file. F32, F16 and BF16 tensors are decoded into
 * Float32Array; any other dtype is an error unless `opts.skip` excludes the
 * tensor. Throws an Error naming the problem for every malformed file.
 */
export function readSafetensors(
  bytes: Uint8Array,
  opts: ReadOptions = {},
): { tensors: Map<string, HostTensor>; metadata: Record<string, string> } {
  if (bytes.length < 8) {
    throw new Error(
      `safetensors: file is ${bytes.length} bytes, shorter than the 8-byte header length`,
    );
  }
  const n64 = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_BYTES)) {
    throw new Error(
      `safetensors: header length ${n64} is absurd (limit ${MAX_HEADER_BYTES} bytes)`,
    );
  }
  const n = Number(n64);
  if (8 + n > bytes.length) {
    throw new Error(
      `safetensors: header length ${n} reaches beyond the end of the ${bytes.length}-byte file`,
    );
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + n));
  } catch {
    throw new Error("safetensors: header is not valid UTF-8");
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    throw new Error(`safetensors: header is not valid JSON (${(e as Error).message})`);
  }
  if (!isRecord(header)) throw new Error("safetensors: header is not a JSON object");

  const dataStart = 8 + n;
  const dataLength = bytes.length - dataStart;
  let metadata: Record<string, string> = {};
  const entries: Entry[] = [];
  for (const [name, raw] of Object.entries(header)) {
    if (name === "__metadata__") metadata = parseMetadata(raw);
    else entries.push(parseEntry(name, raw, dataLength));
  }

  // The reference reader requires the tensors to tile the data buffer exactly.
  const byOffset = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const e of byOffset) {
    if (e.begin < cursor) {
      throw new Error(
        `safetensors: tensor "${e.name}" at [${e.begin}, ${e.end}] overlaps the previous tensor (ending at ${cursor})`,
      );
    }
    if (e.begin > cursor) {
      throw new Error(
        `safetensors: gap in the data buffer: bytes [${cursor}, ${e.begin}) before tensor "${e.name}" belong to no tensor`,
      );
    }
    cursor = e.end;
  }
  if (cursor !== dataLength) {
    throw new Error(
      `safetensors: data buffer is ${dataLength} bytes but the tensors cover only ${cursor} (trailing bytes)`,
    );
  }

  const tensors = new Map<string, HostTensor>();
  for (const e of entries) {
    if (opts.skip?.(e.name, e.dtype)) continue;
    const count = product(e.shape);
    const at = dataStart + e.begin;
    let data: Float32Array;
    switch (e.dtype) {
      case "F32":
        data = readF32(bytes, at, count);
        break;
      case "F16":
        data = f16BitsToF32(readU16(bytes, at, count));
        break;
      case "BF16":
        data = bf16BitsToF32(readU16(bytes, at, count));
        break;
      default:
        throw new Error(
          `safetensors: tensor "${e.name}" has unsupported dtype ${
            JSON.stringify(e.dtype)
          } (supported: F32, F16, BF16)`,
        );
    }
    tensors.set(e.name, { shape: [...e.shape], data });
  }
  return { tensors, metadata };
}

/** Orders strings by Unicode code point, as Rust's `String` ordering does. */
function byCodePoint(a: string, b: string): number {
  const ai = a[Symbol.iterator](), bi = b[Symbol.iterator]();
  for (;;) {
    const x = ai.next(), y = bi.next();
    if (x.done || y.done) return x.done ? (y.done ? 0 : -1) : 1;
    const d = x.value.codePointAt(0)! - y.value.codePointAt(0)!;
    if (d !== 0) return d;
  }
}

/**
 * Serialises tensors as a safetensors file in `dtype` (F32 or F16), tensors in
 * sorted-name order with contiguous offsets, and `metadata` as `__metadata__`.
 */
export function writeSafetensors(
  tensors: Map<string, HostTensor> | [string, HostTensor][],
  dtype: "F32" | "F16",
  metadata?: Record<string, string>,
): Uint8Array {
  if (dtype !== "F32" && dtype !== "F16") {
    throw new Error(`safetensors: cannot write dtype ${JSON.stringify(dtype)} (F32 or F16 only)`);
  }
  const list = tensors instanceof Map ? [...tensors.entries()] : [...tensors];
  const seen = new Set<string>();
  for (const [name, t] of list) {
    if (name === "__metadata__") {
      throw new Error('safetensors: "__metadata__" is not a tensor name');
    }
    if (seen.has(name)) throw new Error(`safetensors: duplicate tensor name "${name}"`);
    seen.add(name);
    if (!Array.isArray(t.shape) || !t.shape.every(isCount)) {
      throw new Error(
        `safetensors: tensor "${name}" has an invalid shape ${JSON.stringify(t.shape)}`,
      );
    }
    if (product(t.shape) !== t.data.length) {
      throw new Error(
        `safetensors: tensor "${name}" has shape ${
          JSON.stringify(t.shape)
        } but ${t.data.length} values`,
      );
    }
  }
  if (metadata !== undefined) parseMetadata(metadata);
  list.sort((a, b) => byCodePoint(a[0], b[0]));

  const width = dtype === "F32" ? 4 : 2;
  // Built by hand: a JS object would move integer-like names to the front.
  const parts: string[] = [];
  if (metadata !== undefined) parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  let offset = 0;
  for (const [name, t] of list) {
    const end = offset + t.data.length * width;
    const info = { dtype, shape: t.shape, data_offsets: [offset, end] };
    parts.push(`${JSON.stringify(name)}:${JSON.stringify(info)}`);
    offset = end;
  }
  const json = new TextEncoder().encode(`{${parts.join(",")}}`);
  const headerLength = Math.ceil(json.length / 8) * 8;
  const dataStart = 8 + headerLength;
  const out = new Uint8Array(dataStart + offset);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(headerLength), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, dataStart); // pad with spaces

  let at = dataStart; // a multiple of 8, so typed views below are aligned
  for (const [, t] of list) {
    if (dtype === "F32") {
      if (LITTLE_ENDIAN) new Float32Array(out.buffer, at, t.data.length).set(t.data);
      else for (let i = 0; i < t.data.length; i++) dv.setFloat32(at + 4 * i, t.data[i], true);
    } else {
      const h = f32ToF16Bits(t.data);
      if (LITTLE_ENDIAN) new Uint16Array(out.buffer, at, h.length).set(h);
      else for (let i = 0; i < h.length; i++) dv.setUint16(at + 2 * i, h[i], true);
    }
    at += t.data.length * width;
  }
  return out;
}
