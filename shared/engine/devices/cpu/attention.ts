/**
 * Multi-head self-attention on the host, forward and backward, per
 * (example, head) through a {@link Gemm}: Q, K and V are read in place from
 * the packed [N, 3H] projection through row strides (no transposes, no
 * copies), and each head's context is written in place into [N, H].
 *
 *   S = Q·Kᵀ/√d (padding keys masked)   P = softmax(S)   P' = P·mask   ctx = P'·V
 *
 * Backward: dP' = dctx·Vᵀ, dV = P'ᵀ·dctx, dP = dP'·mask,
 * dS = P ⊙ (dP − rowsum(dP ⊙ P)), dQ = dS·K/√d, dK = dSᵀ·Q/√d.
 *
 * A padding key gets probability exactly 0 (tfjs adds −1e9 before the
 * softmax, whose exp underflows to 0); an example without any real token
 * attends uniformly, which is what −1e9 on every key gives in float32.
 *
 * @module
 */
import type { AttentionShape } from "../../device.ts";
import type { Gemm } from "./gemm.ts";
import { fastExp } from "./fast_math.ts";

type F32 = Float32Array;

/** The real-token count of example b when its mask is a prefix of ones, else −1. */
function prefixLength(mask: Uint8Array, b: number, L: number): number {
  const m0 = b * L;
  let len = 0;
  while (len < L && mask[m0 + len]) len++;
  for (let j = len; j < L; j++) if (mask[m0 + j]) return -1;
  return len;
}

/**
 * Row-wise masked softmax of the [rows, L] scores `p` of example b, in place;
 * with `dropMask`, also `pd` = p·dropMask[maskOffset …].
 */
function maskedSoftmax(
  p: F32,
  mask: Uint8Array,
  b: number,
  L: number,
  rows: number,
  dropMask: F32 | null,
  maskOffset: number,
  pd: F32,
): void {
  const m0 = b * L;
  const len = prefixLength(mask, b, L);
  let real = 0;
  for (let j = 0; j < L; j++) real += mask[m0 + j];
  if (real === 0) p.fill(1 / L, 0, rows * L);
  for (let i = 0; i < rows && real > 0; i++) {
    const o = i * L;
    if (len >= 0) {
      // Keys [0, len) are real, the rest padding: no per-element mask test.
      let max = -Infinity;
      for (let j = 0; j < len; j++) if (p[o + j] > max) max = p[o + j];
      let z = 0;
      for (let j = 0; j < len; j++) {
        const e = fastExp(p[o + j] - max);
        p[o + j] = e;
        z += e;
      }
      const inv = 1 / z;
      for (let j = 0; j < len; j++) p[o + j] *= inv;
      p.fill(0, o + len, o + L);
    } else {
      let max = -Infinity;
      for (let j = 0; j < L; j++) if (mask[m0 + j] && p[o + j] > max) max = p[o + j];
      let z = 0;
      for (let j = 0; j < L; j++) {
        const e = mask[m0 + j] ? fastExp(p[o + j] - max) : 0;
        p[o + j] = e;
        z += e;
      }
      const inv = 1 / z;
      for (let j = 0; j < L; j++) p[o + j] *= inv;
    }
  }
  if (dropMask) {
    const n = rows * L;
    for (let i = 0; i < n; i++) pd[i] = p[i] * dropMask[maskOffset + i];
  }
}

/** dS = P ⊙ (dP − rowsum(dP ⊙ P)) in place on dp ([rows, L]), dP first times the dropout mask. */
function softmaxBackward(
  dp: F32,
  p: F32,
  rows: number,
  L: number,
  dropMask: F32 | null,
  maskOffset: number,
): void {
  for (let i = 0; i < rows; i++) {
    const o = i * L;
    let dot = 0;
    if (dropMask) {
      for (let j = 0; j < L; j++) {
        const g = dp[o + j] * dropMask[maskOffset + o + j];
        dp[o + j] = g;
        dot += g * p[o + j];
      }
    } else {
      for (let j = 0; j < L; j++) dot += dp[o + j] * p[o + j];
    }
    for (let j = 0; j < L; j++) dp[o + j] = p[o + j] * (dp[o + j] - dot);
  }
}

/** The sizes of one attention call over the first `rows` queries; qkv rows are ld = 3H apart. */
function attentionDims(shape: AttentionShape, rows: number) {
  const { batch, heads: nh, headDim: hd } = shape;
  const L = batch.seqLen, H = nh * hd;
  return { B: batch.size, L, nh, hd, H, ld: 3 * H, RL: rows * L, scale: 1 / Math.sqrt(hd) };
}

/** One head's block of `n` probabilities at `offset`, and what multiplies V (dropped, or p itself). */
function headProbs(probs: F32, dropMask: F32 | null, dropped: F32, offset: number, n: number) {
  const p = probs.subarray(offset, offset + n);
  return { p, pd: dropMask ? dropped.subarray(offset, offset + n) : p };
}

/**
 * Attention for the first `rows` queries of each example: L, every query
 * (shared/engine/device.ts `attention`); 1, the first only (`attentionFirst`,
 * the last layer under a classifier, whose head reads nothing else). probs,
 * dropMask and dropped are [B, heads, rows, L], ctx is [B, rows, H]; K and V
 * come from every position of qkv [N, 3H].
 */
export function attentionForward(
  gemm: Gemm,
  qkv: F32,
  probs: F32,
  dropMask: F32 | null,
  dropped: F32,
  ctx: F32,
  shape: AttentionShape,
  rows: number,
): void {
  const { batch } = shape;
  const { B, L, nh, hd, H, ld, RL, scale } = attentionDims(shape, rows);
  for (let b = 0; b < B; b++) {
    const base = b * L * ld;
    for (let a = 0; a < nh; a++) {
      const po = (b * nh + a) * RL;
      const { p, pd } = headProbs(probs, dropMask, dropped, po, RL);
      const q = qkv.subarray(base + a * hd), k = qkv.subarray(base + H + a * hd);
      gemm(false, true, rows, L, hd, scale, q, ld, k, ld, 0, p, L);
      maskedSoftmax(p, batch.attentionMask, b, L, rows, dropMask, po, pd);
      const v = qkv.subarray(base + 2 * H + a * hd);
      gemm(false, false, rows, hd, L, 1, pd, L, v, ld, 0, ctx.subarray(b * rows * H + a * hd), H);
    }
  }
}

/**
 * The backward of {@link attentionForward} into dqkv [N, 3H] (overwritten:
 * Q's gradient is zero at every query past the first `rows`); `scratch` holds
 * at least rows·L floats.
 */
export function attentionBackward(
  gemm: Gemm,
  dctx: F32,
  qkv: F32,
  probs: F32,
  dropMask: F32 | null,
  dropped: F32,
  dqkv: F32,
  shape: AttentionShape,
  scratch: F32,
  rows: number,
): void {
  const { B, L, nh, hd, H, ld, RL, scale } = attentionDims(shape, rows);
  const dp = scratch.subarray(0, RL);
  for (let b = 0; b < B; b++) {
    const base = b * L * ld;
    for (let i = rows; i < L; i++) dqkv.fill(0, base + i * ld, base + i * ld + H);
    for (let a = 0; a < nh; a++) {
      const po = (b * nh + a) * RL;
      const { p, pd } = headProbs(probs, dropMask, dropped, po, RL);
      const dc = dctx.subarray(b * rows * H + a * hd);
      const qo = base + a * hd, ko = qo + H, vo = ko + H;
      gemm(false, true, rows, L, hd, 1, dc, H, qkv.subarray(vo), ld, 0, dp, L);
      gemm(true, false, L, hd, rows, 1, pd, L, dc, H, 0, dqkv.subarray(vo), ld);
      softmaxBackward(dp, p, rows, L, dropMask, po);
      gemm(false, false, rows, hd, L, scale, dp, L, qkv.subarray(ko), ld, 0, dqkv.subarray(qo), ld);
      gemm(true, false, L, hd, rows, scale, dp, L, qkv.subarray(qo), ld, 0, dqkv.subarray(ko), ld);
    }
  }
}
