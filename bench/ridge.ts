/**
 * A ridge classifier in closed form, for linear probes: targets ±1, a bias
 * column that is not penalised, solved by Gaussian elimination.
 *
 * @module
 */

/** Solves A x = b (A [n, n], row-major) by Gaussian elimination with partial pivoting. */
export function solve(A: Float64Array, b: Float64Array, n: number): Float64Array {
  const a = A.slice(), x = b.slice();
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(a[r * n + c]) > Math.abs(a[p * n + c])) p = r;
    for (let k = 0; k < n; k++) [a[c * n + k], a[p * n + k]] = [a[p * n + k], a[c * n + k]];
    [x[c], x[p]] = [x[p], x[c]];
    for (let r = c + 1; r < n; r++) {
      const f = a[r * n + c] / a[c * n + c];
      for (let k = c; k < n; k++) a[r * n + k] -= f * a[c * n + k];
      x[r] -= f * x[c];
    }
  }
  for (let c = n - 1; c >= 0; c--) {
    for (let k = c + 1; k < n; k++) x[c] -= a[c * n + k] * x[k];
    x[c] /= a[c * n + c];
  }
  return x;
}

/** Ridge classifier on rows `rows` of x [*, H] (a trailing 1 column is the bias). */
export function fitRidge(
  x: Float32Array,
  y: Float32Array,
  rows: readonly number[],
  H: number,
  lambda: number,
): Float64Array {
  const n = H + 1, A = new Float64Array(n * n), b = new Float64Array(n);
  const v = new Float64Array(n);
  for (const i of rows) {
    for (let k = 0; k < H; k++) v[k] = x[i * H + k];
    v[H] = 1;
    for (let r = 0; r < n; r++) {
      b[r] += v[r] * y[i];
      for (let c = 0; c < n; c++) A[r * n + c] += v[r] * v[c];
    }
  }
  for (let k = 0; k < H; k++) A[k * n + k] += lambda;
  return solve(A, b, n);
}

/** Share of `rows` whose sign of the fitted score matches y (±1). */
export function ridgeAccuracy(
  x: Float32Array,
  y: Float32Array,
  rows: readonly number[],
  H: number,
  w: Float64Array,
) {
  let right = 0;
  for (const i of rows) {
    let s = w[H];
    for (let k = 0; k < H; k++) s += w[k] * x[i * H + k];
    if ((s >= 0 ? 1 : -1) === y[i]) right++;
  }
  return right / rows.length;
}
