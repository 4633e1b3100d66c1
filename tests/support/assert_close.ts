/**
 * The numerical tests' comparison of two arrays relative to the larger
 * magnitude of the expected one.
 */
import assert from "node:assert/strict";

/**
 * Asserts |got_i − want_i| ≤ tol · max(max|want|, floor) for every i (and equal
 * lengths, and a scale above zero: an all-zero `want` proves nothing).
 */
export function assertClose(
  got: Float32Array,
  want: Float32Array,
  what: string,
  tol = 1e-4,
  floor = 0,
): void {
  assert.equal(got.length, want.length, `${what}: lengths`);
  let scale = floor;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  assert.ok(scale > 0, `${what}: all zero`);
  for (let i = 0; i < want.length; i++) {
    assert.ok(
      Math.abs(got[i] - want[i]) <= tol * scale,
      `${what}[${i}]: got ${got[i]} vs want ${want[i]} (max |want| ${scale})`,
    );
  }
}
