/**
 * The float64 reference for a row-major gemm, straight from the definition
 * (independent of shared/engine/devices/cpu/gemm.ts's jsGemm, which it checks).
 *
 * @module
 */
import type { Gemm } from "../../shared/engine/devices/cpu/gemm.ts";

/**
 * alpha·op(A)·op(B) + beta·C0 in float64, as a packed m×n matrix: op
 * transposes when the flag is set, A, B and C0 are read at row strides lda,
 * ldb, ldc as stored (A stored k×m when transposed, and so on); with beta = 0,
 * C0 is not read.
 */
export function referenceGemm(
  ...[tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c0, ldc]: Parameters<Gemm>
): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) {
        s += (tA ? a[p * lda + i] : a[i * lda + p]) * (tB ? b[j * ldb + p] : b[p * ldb + j]);
      }
      out[i * n + j] = alpha * s + (beta === 0 ? 0 : beta * c0[i * ldc + j]);
    }
  }
  return out;
}
