/**
 * The one matrix-product signature the native engine uses, and a plain
 * JavaScript implementation of it (for tests, and the last fallback when no
 * BLAS library loads). `shared/engine/devices/cpu/blas.ts` provides the same signature on
 * the machine's BLAS (`cblas_sgemm`, row-major).
 *
 * @module
 */
import type { GemmOn } from "../../device.ts";

/** {@link GemmOn} over host arrays: what BLAS and {@link jsGemm} provide. */
export type Gemm = GemmOn<Float32Array>;

/** Throws unless the views hold the matrices the arguments describe. */
export function checkGemmArgs(
  transA: boolean,
  transB: boolean,
  m: number,
  n: number,
  k: number,
  a: Float32Array,
  lda: number,
  b: Float32Array,
  ldb: number,
  c: Float32Array,
  ldc: number,
): void {
  const fits = (name: string, view: Float32Array, rows: number, cols: number, ld: number) => {
    if (ld < Math.max(1, cols)) {
      throw new Error(`gemm: ld${name} ${ld} is less than the ${cols} columns of ${name}`);
    }
    if (rows > 0 && cols > 0 && view.length < (rows - 1) * ld + cols) {
      throw new Error(
        `gemm: ${name} holds ${view.length} elements, fewer than ${rows}×${cols} at stride ${ld}`,
      );
    }
  };
  if (![m, n, k].every((d) => Number.isInteger(d) && d >= 0)) {
    throw new Error(`gemm: dimensions must be non-negative integers, got m=${m} n=${n} k=${k}`);
  }
  fits("a", a, transA ? k : m, transA ? m : k, lda);
  fits("b", b, transB ? n : k, transB ? k : n, ldb);
  fits("c", c, m, n, ldc);
}

/**
 * A plain, correct JS gemm: loops ordered so the innermost runs along
 * contiguous memory (row of B when B is not transposed, a dot product along
 * rows of A and B when B is), float32 rounding at each stored element only.
 */
export const jsGemm: Gemm = (transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) => {
  checkGemmArgs(transA, transB, m, n, k, a, lda, b, ldb, c, ldc);
  for (let i = 0; i < m; i++) {
    const ci = i * ldc;
    if (beta === 0) c.fill(0, ci, ci + n);
    else if (beta !== 1) { for (let j = 0; j < n; j++) c[ci + j] *= beta; }
  }
  if (alpha === 0 || k === 0) return;
  if (!transB) {
    // c[i, :] += alpha·a[i, p]·b[p, :]
    for (let i = 0; i < m; i++) {
      const ci = i * ldc;
      for (let p = 0; p < k; p++) {
        const aip = alpha * (transA ? a[p * lda + i] : a[i * lda + p]);
        if (aip === 0) continue;
        const bp = p * ldb;
        for (let j = 0; j < n; j++) c[ci + j] += aip * b[bp + j];
      }
    }
    return;
  }
  // c[i, j] += alpha·Σ_p a[i, p]·b[j, p]
  for (let i = 0; i < m; i++) {
    const ci = i * ldc;
    for (let j = 0; j < n; j++) {
      const bj = j * ldb;
      let s = 0;
      if (transA) { for (let p = 0; p < k; p++) s += a[p * lda + i] * b[bj + p]; }
      else {
        const ai = i * lda;
        for (let p = 0; p < k; p++) s += a[ai + p] * b[bj + p];
      }
      c[ci + j] += alpha * s;
    }
  }
};
