/**
 * The project's 32-bit integer hashes, each defined once: FNV-1a over a
 * string, and two xorshift-multiply finalizers of the same shape (MurmurHash3's
 * `fmix32`, Chris Wellons's `lowbias32`). Unsigned 32-bit arithmetic only
 * (`Math.imul`, `>>>`, `^`), so the same bits on every platform and in WGSL.
 * Used by shared/data/corpus.ts (the held-out split of a pre-training corpus,
 * docs/model-and-data.md, "Data"), shared/method/dropout_mask.ts (the dropout rule)
 * and shared/io/checkpoint.ts (one seeded stream per fresh tensor, by name).
 *
 * @module
 */

/** FNV-1a of a string's UTF-16 code units, from `seed` (the FNV offset basis by default). */
export function fnv1a(text: string, seed = 0x811c9dc5): number {
  let h = seed >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** x ^= x >> 16; x *= a; x ^= x >> s; x *= b; x ^= x >> 16, on u32. */
function xorMultiply(v: number, a: number, s: number, b: number): number {
  let x = v >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, a);
  x ^= x >>> s;
  x = Math.imul(x, b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** MurmurHash3's 32-bit finalizer. */
export function fmix32(h: number): number {
  return xorMultiply(h, 0x85ebca6b, 13, 0xc2b2ae35);
}

/** Chris Wellons's `lowbias32` (a finalizer with lower bias than fmix32). */
export function lowbias32(v: number): number {
  return xorMultiply(v, 0x7feb352d, 15, 0x846ca68b);
}
