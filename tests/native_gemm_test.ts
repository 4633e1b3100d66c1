/** jsGemm (shared/engine/devices/cpu/gemm.ts) against a float64 triple loop: every transpose pair, strides. */
import assert from "node:assert/strict";
import { checkGemmArgs, jsGemm } from "../shared/engine/devices/cpu/gemm.ts";
import { Rng } from "../shared/method/rng.ts";
import { referenceGemm } from "./support/gemm_reference.ts";

/** A rows×cols matrix stored at row stride ld ≥ cols, with noise in the gaps, after `lead` floats. */
function matrix(rng: Rng, rows: number, cols: number, ld: number, lead: number): Float32Array {
  const out = new Float32Array(lead + (rows - 1) * ld + cols);
  for (let i = 0; i < out.length; i++) out[i] = rng.uniform(-1, 1);
  return out;
}

Deno.test("jsGemm = float64 triple loop for all four transpose pairs, with strides and views", () => {
  const rng = new Rng(5);
  for (const [m, n, k] of [[5, 7, 3], [1, 9, 4], [6, 1, 8], [8, 8, 1]]) {
    for (const tA of [false, true]) {
      for (const tB of [false, true]) {
        for (const [alpha, beta] of [[1, 0], [0.5, 1], [-2, 0.25]]) {
          const lda = (tA ? m : k) + 2, ldb = (tB ? k : n) + 3, ldc = n + 1;
          const aBuf = matrix(rng, tA ? k : m, tA ? m : k, lda, 3);
          const bBuf = matrix(rng, tB ? n : k, tB ? k : n, ldb, 1);
          const cBuf = matrix(rng, m, n, ldc, 2);
          const a = aBuf.subarray(3), b = bBuf.subarray(1), c = cBuf.subarray(2);
          const want = referenceGemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
          const before = cBuf.slice();
          jsGemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
          for (let i = 0; i < m; i++) {
            for (let j = 0; j < ldc; j++) {
              const at = i * ldc + j;
              if (j >= n) {
                assert.equal(c[at], before[2 + at], "the gap between rows of C is untouched");
                continue;
              }
              const w = want[i * n + j];
              assert.ok(
                Math.abs(c[at] - w) <= 1e-5 * (1 + Math.abs(w)),
                `tA=${tA} tB=${tB} ${m}×${n}×${k} α=${alpha} β=${beta} C[${i},${j}]: ` +
                  `${c[at]} vs ${w}`,
              );
            }
          }
          assert.deepEqual(cBuf.subarray(0, 2), before.subarray(0, 2), "before the view");
        }
      }
    }
  }
});

Deno.test("jsGemm with beta = 0 ignores what C held (NaN included)", () => {
  const a = Float32Array.from([1, 2, 3, 4]), b = Float32Array.from([1, 0, 0, 1]);
  const c = new Float32Array(4).fill(NaN);
  jsGemm(false, false, 2, 2, 2, 1, a, 2, b, 2, 0, c, 2);
  assert.deepEqual([...c], [1, 2, 3, 4]);
  jsGemm(false, true, 2, 2, 0, 1, a, 2, b, 2, 0, c, 2);
  assert.deepEqual([...c], [0, 0, 0, 0], "k = 0 gives beta·C");
});

Deno.test("gemm arguments that do not fit their views get a clear error", () => {
  const small = new Float32Array(5), big = new Float32Array(100);
  assert.throws(
    () => jsGemm(false, false, 3, 3, 3, 1, small, 3, big, 3, 0, big, 3),
    /a holds 5 elements, fewer than 3×3 at stride 3/,
  );
  assert.throws(
    () => checkGemmArgs(false, true, 2, 4, 3, big, 3, big, 2, big, 4),
    /ldb 2 is less than the 3 columns of b/,
  );
  assert.throws(
    () => checkGemmArgs(false, false, 2.5, 1, 1, big, 1, big, 1, big, 1),
    /non-negative integers/,
  );
});
