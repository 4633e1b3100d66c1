/**
 * Gradients on the wire in 16 bits (`--grad-encoding`, docs/protocol.md
 * "Messages", `partial`): bfloat16 (float32's exponent range, 8 bits of
 * mantissa; no scale needed) or IEEE half (5 exponent bits, 11 of mantissa)
 * with one power-of-two scale per message, chosen so that the largest
 * magnitude lands at or below 65,504 — the largest finite half — and so
 * nothing overflows to infinity. Both round to nearest, ties to even
 * (shared/wire/half_float.ts). A scale of 2^s is exact to apply and to undo, so
 * decoding gives the half value times 2^−s exactly; the receiver sums in
 * float64.
 *
 * @module
 */
import type { GradEncoding } from "./protocol.ts";
import { decode16, f32ToBf16Bits, halfFromF32Bits } from "./half_float.ts";

/** The largest finite IEEE half value. */
export const F16_MAX = 65504;

/** A gradient as it travels: its elements and, for f16, the exponent of its scale. */
export interface EncodedGrad {
  readonly encoding: GradEncoding;
  readonly data: Float32Array | Uint16Array;
  /** The values travel multiplied by 2^scale (f16; 0 otherwise). */
  readonly scale: number;
}

/**
 * The exponent s of the f16 scale for values of largest magnitude `maxAbs`:
 * the largest s with maxAbs · 2^s ≤ {@link F16_MAX} (so rounding never
 * reaches infinity), clamped to [−120, 120]; 0 for an all-zero gradient.
 */
export function f16ScaleFor(maxAbs: number): number {
  if (!(maxAbs > 0) || !Number.isFinite(maxAbs)) return 0;
  let s = Math.floor(Math.log2(F16_MAX / maxAbs));
  // log2 may be off by one ulp at a power of two: settle it exactly.
  while (maxAbs * 2 ** s > F16_MAX) s--;
  while (maxAbs * 2 ** (s + 1) <= F16_MAX) s++;
  return Math.max(-120, Math.min(120, s));
}

/** Largest |x| (NaN propagates as NaN). */
function maxAbsOf(x: Float32Array): number {
  let m = 0;
  for (let i = 0; i < x.length; i++) {
    const a = Math.abs(x[i]);
    if (a > m || a !== a) m = a;
  }
  return m;
}

/**
 * Encodes a float32 gradient for the wire: `f32` as is (no copy), `bf16` its
 * rounded top halves, `f16` rounded half patterns of x · 2^s with s from
 * {@link f16ScaleFor}. Non-finite input stays non-finite (the protocol refuses it).
 */
export function encodeGrad(x: Float32Array, encoding: GradEncoding): EncodedGrad {
  if (encoding === "f32") return { encoding, data: x, scale: 0 };
  if (encoding === "bf16") return { encoding, data: f32ToBf16Bits(x), scale: 0 };
  const scale = f16ScaleFor(maxAbsOf(x));
  const out = new Uint16Array(x.length);
  const f = 2 ** scale;
  const tmp = new Float32Array(1);
  const bits = new Uint32Array(tmp.buffer);
  for (let i = 0; i < x.length; i++) {
    tmp[0] = x[i] * f; // exact: a power-of-two scale within float32's range
    out[i] = halfFromF32Bits(bits[0]);
  }
  return { encoding, data: out, scale };
}

/**
 * The factor that turns a decoded element back into the gradient's value:
 * 2^−scale (exact).
 */
export function decodeFactor(g: Pick<EncodedGrad, "scale">): number {
  return 2 ** -g.scale;
}

/**
 * Decodes `n` elements of a 16-bit gradient starting at `from` into
 * `out[0..n)` as float32 — the values as sent, before {@link decodeFactor}.
 */
export function decodeSpan(
  data: Uint16Array,
  encoding: "bf16" | "f16",
  from: number,
  n: number,
  out: Float32Array,
): void {
  decode16(
    data.subarray(from, from + n),
    n,
    encoding === "bf16" ? "BF16" : "F16",
    new Int32Array(out.buffer, out.byteOffset, n),
  );
}

/** The whole gradient decoded to float32 values (scale undone). */
export function decodeGrad(g: EncodedGrad): Float32Array {
  if (g.encoding === "f32") return g.data as Float32Array;
  const out = new Float32Array(g.data.length);
  decodeSpan(g.data as Uint16Array, g.encoding, 0, g.data.length, out);
  const f = decodeFactor(g);
  if (f !== 1) { for (let i = 0; i < out.length; i++) out[i] *= f; }
  return out;
}

/** Bytes per element of an encoding. */
export function gradElementBytes(encoding: GradEncoding): number {
  return encoding === "f32" ? 4 : 2;
}
