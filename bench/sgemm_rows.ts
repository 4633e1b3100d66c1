/**
 * Does an sgemm row's result depend on its place in the matrix? Multiplies
 * A (every row the same) by B through the machine's BLAS
 * (shared/engine/devices/cpu/blas.ts) and prints, per shape, which rows
 * come out bit-identical to row 0 (each distinct result gets a class digit),
 * the row counts M for which every row is identical, and what computing in
 * chunks of 8 rows costs. `deno run -A bench/sgemm_rows.ts [threads]`.
 *
 * @module
 */
import { loadBlas } from "../shared/engine/devices/cpu/blas.ts";

const threads = Number(Deno.args[0] ?? 1);
const load = loadBlas({ threads });
if (!load.blas) throw new Error(`no BLAS: ${load.reason}`);
const blas = load.blas;
console.log(blas.describe());

let seed = 1;
const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) - 0.5;

/** The class of each row of A·B when every row of A is `row` (0: same bits as the first class). */
function rowClasses(M: number, N: number, K: number, row: Float32Array, B: Float32Array): number[] {
  const A = new Float32Array(M * K);
  for (let r = 0; r < M; r++) A.set(row, r * K);
  const C = new Float32Array(M * N);
  blas.gemm(false, false, M, N, K, 1, A, K, B, N, 0, C, N);
  const keys = new Map<string, number>();
  return Array.from({ length: M }, (_, r) => {
    const k = C.subarray(r * N, r * N + N).join();
    if (!keys.has(k)) keys.set(k, keys.size);
    return keys.get(k)!;
  });
}

for (const [N, K] of [[128, 128], [384, 128], [512, 128], [128, 512], [768, 768]]) {
  const row = Float32Array.from({ length: K }, rnd), B = Float32Array.from({ length: K * N }, rnd);
  const uniform: number[] = [];
  for (let M = 1; M <= 64; M++) {
    if (rowClasses(M, N, K, row, B).every((c) => c === 0)) uniform.push(M);
  }
  console.log(`N=${N} K=${K}: every row identical only for M = ${uniform.join(" ")}`);
  if (N === 128 && K === 128) {
    for (const M of [5, 12, 16, 24, 32, 64]) {
      console.log(`  M=${M}: ${rowClasses(M, N, K, row, B).join("")}`);
    }
  }
}

const M = 4096, N = 384, K = 128;
const A = Float32Array.from({ length: M * K }, rnd);
const B = Float32Array.from({ length: K * N }, rnd), C = new Float32Array(M * N);
for (const chunk of [M, 8]) {
  const t0 = performance.now();
  for (let it = 0; it < 10; it++) {
    for (let r = 0; r < M; r += chunk) {
      const m = Math.min(chunk, M - r);
      blas.gemm(false, false, m, N, K, 1, A.subarray(r * K), K, B, N, 0, C.subarray(r * N), N);
    }
  }
  const ms = (performance.now() - t0) / 10;
  console.log(`${M}×${N}×${K} in chunks of ${chunk} rows: ${ms.toFixed(2)} ms`);
}
