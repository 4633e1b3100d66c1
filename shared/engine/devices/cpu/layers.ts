/**
 * The host kernels of the native engine other than matrix products and
 * attention: embeddings, bias, dropout, residual, LayerNorm, GELU, tanh and
 * the losses, each forward and backward, as plain loops over Float32Arrays
 * (float64 arithmetic inside a loop, float32 where a value is stored). They
 * are the CPU side of {@link Device} (shared/engine/device.ts) and keep its
 * signatures and conventions; reductions over rows (bias, γ, β gradients)
 * sum in float64.
 *
 * The formulas are shared/tfjs/model.ts's (tfjs) ones: LayerNorm with the biased
 * variance and 1/√(var + ε); GELU = ½x(1 + erf(x/√2)) and its derivative
 * (tables of shared/engine/devices/cpu/fast_math.ts); softmax and cross-entropy with its
 * `fastExp`.
 *
 * @module
 */
import type { AdversaryConfig } from "../../../method/adversary_config.ts";
import { ascendHost } from "../../../method/adversary.ts";
import { fillDropoutMask } from "../../../method/dropout_mask.ts";
import type { BatchIndex, Device, MaskRows, NormState } from "../../device.ts";
import { fastExp, geluTable } from "./fast_math.ts";

type F32 = Float32Array;

/** Float64 accumulators for column sums, grown on demand (one per process is enough: sync code). */
let acc = new Float64Array(1024);
function accumulator(n: number): Float64Array {
  if (acc.length < n) acc = new Float64Array(n);
  acc.fill(0, 0, n);
  return acc;
}

/** Fills `mask` with the dropout multipliers of (seed, site), or of some rows of it. */
export function dropoutMask(
  mask: F32,
  seed: number,
  site: number,
  rate: number,
  rows?: MaskRows,
): void {
  fillDropoutMask(mask, seed, site, rate, rows);
}

/** out[i] = x[i]·mask[i]. */
export function mul(x: F32, mask: F32, out: F32): void {
  const n = x.length;
  for (let i = 0; i < n; i++) out[i] = x[i] * mask[i];
}

/** out[i] += x[i]. */
export function add(x: F32, out: F32): void {
  const n = x.length;
  for (let i = 0; i < n; i++) out[i] += x[i];
}

/** x0[n, :] = word[id] + pos[position] + type[tokenType] (+ delta[n, :]). */
export const embed: Device<F32>["embed"] = (x0, word, pos, type, delta, batch, H) => {
  const N = batch.size * batch.seqLen;
  const { inputIds, positionIds, tokenTypeIds } = batch;
  for (let n = 0; n < N; n++) {
    const o = n * H, w = inputIds[n] * H, p = positionIds[n] * H, t = tokenTypeIds[n] * H;
    if (delta) {
      for (let j = 0; j < H; j++) x0[o + j] = word[w + j] + delta[o + j] + pos[p + j] + type[t + j];
    } else {
      for (let j = 0; j < H; j++) x0[o + j] = word[w + j] + pos[p + j] + type[t + j];
    }
  }
};

/** Scatter-add of dx0's rows into the rows each token looked up (accumulate). */
export const embedBackward: Device<F32>["embedBackward"] = (dx0, dword, dpos, dtype, batch, H) => {
  const N = batch.size * batch.seqLen;
  const { inputIds, positionIds, tokenTypeIds } = batch;
  for (let n = 0; n < N; n++) {
    const o = n * H, p = positionIds[n] * H, t = tokenTypeIds[n] * H;
    for (let j = 0; j < H; j++) {
      const g = dx0[o + j];
      dpos[p + j] += g;
      dtype[t + j] += g;
    }
    if (dword) {
      const w = inputIds[n] * H;
      for (let j = 0; j < H; j++) dword[w + j] += dx0[o + j];
    }
  }
};

/** y[r, :] += bias. */
export function addBias(y: F32, bias: F32, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let j = 0; j < cols; j++) y[o + j] += bias[j];
  }
}

/** dbias[j] += Σ_r x[r, j]. */
export function colSum(x: F32, rows: number, cols: number, dbias: F32): void {
  const s = accumulator(cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let j = 0; j < cols; j++) s[j] += x[o + j];
  }
  for (let j = 0; j < cols; j++) dbias[j] += s[j];
}

/** out = res + (y + bias)·mask (mask null: no dropout). */
export function biasDropoutResidual(
  y: F32,
  bias: F32,
  mask: F32 | null,
  res: F32,
  out: F32,
  rows: number,
  cols: number,
): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    if (mask) {
      for (let j = 0; j < cols; j++) {
        out[o + j] = res[o + j] + Math.fround(y[o + j] + bias[j]) * mask[o + j];
      }
    } else {
      for (let j = 0; j < cols; j++) out[o + j] = res[o + j] + (y[o + j] + bias[j]);
    }
  }
}

/** out = LayerNorm(x)·γ + β per row; keeps mean and 1/√(var + ε) per row. */
export function layerNorm(n: NormState<F32>, beta: F32, out: F32, eps: number): void {
  const { x, gamma, mean, rstd, rows, cols } = n;
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let s = 0, ss = 0;
    for (let j = 0; j < cols; j++) {
      const v = x[o + j];
      s += v;
      ss += v * v;
    }
    const m = s / cols;
    // E[x²] − m² in float64 from float32 inputs: exact enough (no float32 cancellation).
    const rs = 1 / Math.sqrt(Math.max(ss / cols - m * m, 0) + eps);
    mean[r] = m;
    rstd[r] = rs;
    for (let j = 0; j < cols; j++) out[o + j] = (x[o + j] - m) * rs * gamma[j] + beta[j];
  }
}

/**
 * dx = ∂LN/∂x·dy: with x̂ = (x − mean)·rstd and g = dy·γ,
 * dx = rstd·(g − mean(g) − x̂·mean(g·x̂)); dγ += Σ dy·x̂, dβ += Σ dy.
 * dx may be dy.
 */
export function layerNormBackward(
  n: NormState<F32>,
  dy: F32,
  dx: F32,
  dgamma: F32 | null,
  dbeta: F32 | null,
): void {
  const { x, gamma, mean, rstd, rows, cols } = n;
  const sums = dgamma || dbeta ? accumulator(2 * cols) : null;
  for (let r = 0; r < rows; r++) {
    const o = r * cols, m = mean[r], rs = rstd[r];
    let sg = 0, sgx = 0;
    for (let j = 0; j < cols; j++) {
      const xh = (x[o + j] - m) * rs, d = dy[o + j], g = d * gamma[j];
      sg += g;
      sgx += g * xh;
      if (sums) {
        sums[j] += d * xh;
        sums[cols + j] += d;
      }
    }
    sg /= cols;
    sgx /= cols;
    for (let j = 0; j < cols; j++) {
      const xh = (x[o + j] - m) * rs;
      dx[o + j] = rs * (dy[o + j] * gamma[j] - sg - xh * sgx);
    }
  }
  if (sums) {
    if (dgamma) { for (let j = 0; j < cols; j++) dgamma[j] += sums[j]; }
    if (dbeta) { for (let j = 0; j < cols; j++) dbeta[j] += sums[cols + j]; }
  }
}

/**
 * g = GELU(u + bias) = ½z(1 + erf(z/√2)); deriv = GELU'(z) = Φ(z) + z·φ(z)
 * when given. Interpolated in shared/engine/devices/cpu/fast_math.ts's tables (error
 * ≤ 2e-7; tfjs's own erf is within 1.5e-7 of the true one). g may be u.
 */
export function biasGelu(
  u: F32,
  bias: F32,
  g: F32,
  deriv: F32 | null,
  rows: number,
  cols: number,
): void {
  const { lo, hi, perUnit, value, deriv: slope } = geluTable();
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let j = 0; j < cols; j++) {
      const z = u[o + j] + bias[j];
      let gv: number, dv: number;
      if (z > lo && z < hi) {
        const t = (z - lo) * perUnit, i = t | 0, f = t - i;
        const v0 = value[i], d0 = slope[i];
        gv = v0 + f * (value[i + 1] - v0);
        dv = d0 + f * (slope[i + 1] - d0);
      } else if (z >= hi) {
        gv = z;
        dv = 1;
      } else {
        gv = 0;
        dv = 0;
      }
      g[o + j] = gv;
      if (deriv !== null) deriv[o + j] = dv;
    }
  }
}

/** dg *= deriv in place (dg becomes du); dbias += Σ_r du when given. */
export function geluBackward(
  dg: F32,
  deriv: F32,
  dbias: F32 | null,
  rows: number,
  cols: number,
): void {
  if (!dbias) {
    const n = rows * cols;
    for (let i = 0; i < n; i++) dg[i] *= deriv[i];
    return;
  }
  const s = accumulator(cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let j = 0; j < cols; j++) {
      const v = dg[o + j] * deriv[o + j];
      dg[o + j] = v;
      s[j] += v;
    }
  }
  for (let j = 0; j < cols; j++) dbias[j] += s[j];
}

/** y = tanh(y + bias) in place. */
export function biasTanh(y: F32, bias: F32, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let j = 0; j < cols; j++) y[o + j] = Math.tanh(y[o + j] + bias[j]);
  }
}

/** dy *= 1 − y² in place; dbias += Σ_r of the result when given. */
export function tanhBackward(
  dy: F32,
  y: F32,
  dbias: F32 | null,
  rows: number,
  cols: number,
): void {
  const n = rows * cols;
  for (let i = 0; i < n; i++) dy[i] *= 1 - y[i] * y[i];
  if (dbias) colSum(dy, rows, cols, dbias);
}

/** out[i, :] = x[rows[i], :]. */
export function gatherRows(x: F32, rows: Int32Array, cols: number, out: F32): void {
  for (let i = 0; i < rows.length; i++) {
    out.set(x.subarray(rows[i] * cols, (rows[i] + 1) * cols), i * cols);
  }
}

/** dx[rows[i], :] += dout[i, :]. */
export function scatterRows(dout: F32, rows: Int32Array, cols: number, dx: F32): void {
  for (let i = 0; i < rows.length; i++) {
    const o = rows[i] * cols, s = i * cols;
    for (let j = 0; j < cols; j++) dx[o + j] += dout[s + j];
  }
}

/**
 * loss[0] += weight · mean_r(−log softmax(logits[r])[label r]); dlogits (may
 * be logits) = weight·(softmax − onehot)/rows, the gradient of what was added.
 */
export function crossEntropy(
  logits: F32,
  labels: Int32Array,
  rows: number,
  cols: number,
  loss: F32,
  weight: number,
  dlogits: F32 | null,
): void {
  let total = 0;
  const w = weight / rows;
  for (let r = 0; r < rows; r++) {
    const o = r * cols, y = labels[r];
    if (!(y >= 0 && y < cols)) throw new Error(`cross-entropy: label ${y} is not in [0, ${cols})`);
    let max = -Infinity;
    for (let j = 0; j < cols; j++) if (logits[o + j] > max) max = logits[o + j];
    let z = 0;
    for (let j = 0; j < cols; j++) z += fastExp(logits[o + j] - max);
    const logZ = Math.log(z) + max;
    total += logZ - logits[o + y];
    if (dlogits) {
      const inv = 1 / z;
      for (let j = 0; j < cols; j++) {
        dlogits[o + j] = (fastExp(logits[o + j] - max) * inv - (j === y ? 1 : 0)) * w;
      }
    }
  }
  loss[0] += weight * (total / rows);
}

/** loss[0] += weight · mean_r (logits[r] − targets[r])²; dlogits = weight·2(logits − targets)/rows. */
export function meanSquaredError(
  logits: F32,
  targets: Float32Array,
  rows: number,
  loss: F32,
  weight: number,
  dlogits: F32 | null,
): void {
  let total = 0;
  for (let r = 0; r < rows; r++) {
    const d = logits[r] - targets[r];
    total += d * d;
    if (dlogits) dlogits[r] = 2 * d * weight / rows;
  }
  loss[0] += weight * (total / rows);
}

/** The adversary's ascent step on delta in place (shared/tfjs/adversary.ts's host form). */
export function ascend(
  delta: F32,
  grad: F32,
  batch: BatchIndex,
  hidden: number,
  cfg: AdversaryConfig,
): void {
  ascendHost(delta, grad, batch.attentionMask, batch.size, batch.seqLen, hidden, cfg);
}
