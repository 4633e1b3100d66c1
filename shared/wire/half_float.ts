/**
 * Half-precision conversions: float32 ↔ IEEE binary16 (the wire's
 * `--weights-encoding f16` weights, docs/protocol.md "Messages", and F16
 * safetensors) and float32 ↔ bfloat16 (BF16 safetensors,
 * docs/model-and-data.md). Every conversion works on bit patterns, so it is
 * exact where the format allows and rounds to nearest, ties to even,
 * elsewhere; NaN stays NaN.
 *
 * @module
 */

// Scratch views for the bit-level conversions.
const F32_SCRATCH = new Float32Array(1);
const U32_SCRATCH = new Uint32Array(F32_SCRATCH.buffer);

/**
 * Converts one float32 bit pattern to float16 bits, rounding to nearest even
 * (the element step of {@link f32ToF16Bits}, for callers converting in chunks).
 */
export function halfFromF32Bits(b: number): number {
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

let halfTable: Int32Array | undefined;

/**
 * float32 bits of every float16 pattern, as int32 (a table lookup decodes ~15x
 * faster than branching per element, and int32 values keep V8 on its fast path).
 */
function halfToF32Table(): Int32Array {
  if (halfTable) return halfTable;
  const t = new Int32Array(65536);
  for (let h = 0; h < 65536; h++) t[h] = f32BitsFromHalf(h) | 0;
  return (halfTable = t);
}

/** The two 16-bit float formats: IEEE binary16 and bfloat16 (safetensors' dtype names). */
export type Float16Kind = "F16" | "BF16";

/**
 * Decodes `n` 16-bit words (F16 or BF16) into float32 bit patterns `out[0..n)`:
 * the loop behind {@link f16BitsToF32} and {@link bf16BitsToF32}, for callers that
 * decode in chunks into a buffer of their own.
 */
export function decode16(words: Uint16Array, n: number, dtype: Float16Kind, out: Int32Array): void {
  if (dtype === "F16") {
    const table = halfToF32Table();
    for (let k = 0; k < n; k++) out[k] = table[words[k]];
  } else {
    // An int32 shift, stored as is: (w << 16) >>> 0 would leave the int32 range and be slow.
    for (let k = 0; k < n; k++) out[k] = words[k] << 16;
  }
}

/** Converts IEEE 754 binary16 bit patterns to float32 values (exact, NaN payload kept). */
export function f16BitsToF32(b: Uint16Array): Float32Array {
  const out = new Float32Array(b.length);
  decode16(b, b.length, "F16", new Int32Array(out.buffer));
  return out;
}

/** Converts bfloat16 bit patterns (the top half of a float32) to float32 values. */
export function bf16BitsToF32(b: Uint16Array): Float32Array {
  const out = new Float32Array(b.length);
  decode16(b, b.length, "BF16", new Int32Array(out.buffer));
  return out;
}

/**
 * Converts one float32 bit pattern to bfloat16 bits (its top half), rounding to
 * nearest, ties to even. A carry out of the mantissa correctly moves to the next
 * binade, and from the largest finite values to ±Inf. NaN stays NaN: its sign
 * and top 7 payload bits are kept and it is made quiet, so rounding can never
 * carry a NaN into Inf or the sign bit. (PyTorch instead writes every NaN as
 * 0x7FC0; both are NaN.)
 */
export function bf16FromF32Bits(b: number): number {
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) {
    return ((b >>> 16) | 0x0040) & 0xffff;
  }
  // b < 0xFF800000 here, so b + 0x8000 stays below 2^32.
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * Converts float32 values to bfloat16 bit patterns: round to nearest, ties to
 * even; overflow → ±Inf; NaN stays NaN (quiet, sign and top payload kept).
 */
export function f32ToBf16Bits(x: Float32Array): Uint16Array {
  const out = new Uint16Array(x.length);
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  for (let i = 0; i < x.length; i++) out[i] = bf16FromF32Bits(bits[i]);
  return out;
}
