/**
 * The adversary's host math (docs/method.md, "One micro-batch gradient"): the
 * random start δ_0 and one ascent step with its projection, over flat
 * [B, L, H] arrays. The engine's host device runs these; shared/tfjs/adversary.ts
 * holds the same as tensor ops.
 *
 * @module
 */
import type { AdversaryConfig } from "./adversary_config.ts";
import { mixSeed } from "./rng.ts";
import { lowbias32 } from "./hash32.ts";

/**
 * What δ_0 depends on: the batch's mask [B, L] and shape (B = size, L =
 * seqLen, H = hidden), the scale of the random start, and the task's key.
 */
export type DeltaStart = [
  mask: Uint8Array,
  size: number,
  seqLen: number,
  hidden: number,
  init: number,
  key: { seed: number; step: number; index: number },
];

/** The per-task key of δ_0's hash: mixSeed(seed, step, index, 0xde17a). */
export function deltaKey(key: { seed: number; step: number; index: number }): number {
  return mixSeed(key.seed, key.step, key.index, 0xde17a);
}

/**
 * Element i's uniform in (−1, 1) under `key`: the top 24 bits k of
 * lowbias32(lowbias32(i ^ key) + key) as (2k + 1 − 2²⁴)·2⁻²⁴, an odd integer
 * times a power of two, so exact in float32 on every device (a shader forms
 * it with integer ops and one exact multiply).
 */
export function deltaUniform(key: number, i: number): number {
  const h = lowbias32((lowbias32((i ^ key) >>> 0) + key) >>> 0);
  return (2 * (h >>> 8) + 1 - 16777216) / 16777216;
}

/** Per example, the float32 scale init/sqrt(max(len, 1)·H) of δ_0 (len: its real tokens). */
export function deltaScales(
  mask: Uint8Array,
  size: number,
  seqLen: number,
  hidden: number,
  init: number,
): Float32Array {
  const out = new Float32Array(size);
  for (let b = 0; b < size; b++) {
    let len = 0;
    for (let i = 0; i < seqLen; i++) len += mask[b * seqLen + i];
    out[b] = init / Math.sqrt(Math.max(len, 1) * hidden);
  }
  return out;
}

/**
 * δ_0 on the host, [B, L, H] flat: zero, or U(−1, 1)·m·init/sqrt(len·H) per
 * example, U from a counter-based hash of (mixSeed(seed, step, index,
 * 0xde17a), flat element index) ({@link deltaUniform}) and the product
 * rounded once to float32, so every device (a GPU kernel included, with no
 * host random numbers) gives the same bits. Writes into `out` when given.
 */
export function initialDeltaHost(
  ...[mask, size, seqLen, hidden, init, key, given]: [...DeltaStart, out?: Float32Array]
): Float32Array {
  const out = given ?? new Float32Array(size * seqLen * hidden);
  if (out.length !== size * seqLen * hidden) {
    throw new Error(
      `initialDeltaHost: out holds ${out.length}, expected ${size * seqLen * hidden}`,
    );
  }
  if (init === 0) return out.fill(0);
  const k = deltaKey(key);
  const scales = deltaScales(mask, size, seqLen, hidden, init);
  for (let b = 0; b < size; b++) {
    const scale = scales[b];
    for (let i = 0; i < seqLen; i++) {
      const m = mask[b * seqLen + i], o = (b * seqLen + i) * hidden;
      for (let h = 0; h < hidden; h++) out[o + h] = m ? deltaUniform(k, o + h) * scale : 0;
    }
  }
  return out;
}

/**
 * The ascent step (shared/tfjs/adversary.ts `ascend`) on the host, in place on `delta` ([B, L, H] flat): the same
 * step and projection, with G = `grad` zeroed at padding (`mask` [B, L], 1
 * real). Sums in float64; `grad` is left unchanged.
 */
export function ascendHost(
  delta: Float32Array,
  grad: Float32Array,
  mask: Uint8Array,
  size: number,
  seqLen: number,
  hidden: number,
  cfg: AdversaryConfig,
): void {
  const n = size * seqLen * hidden;
  if (delta.length !== n || grad.length !== n || mask.length !== size * seqLen) {
    throw new Error("ascendHost: delta, grad and mask do not match [B, L, H]");
  }
  const row = seqLen * hidden;
  for (let b = 0; b < size; b++) {
    const lo = b * row;
    if (cfg.norm === "linf") {
      for (let t = 0; t < seqLen; t++) {
        const m = mask[b * seqLen + t] !== 0, o = lo + t * hidden;
        for (let h = o; h < o + hidden; h++) {
          const g = m ? grad[h] : 0;
          const d = delta[h] + cfg.lr * Math.sign(g);
          delta[h] = d > cfg.eps ? cfg.eps : d < -cfg.eps ? -cfg.eps : d;
        }
      }
      continue;
    }
    let gg = 0;
    for (let t = 0; t < seqLen; t++) {
      if (!mask[b * seqLen + t]) continue;
      for (let h = lo + t * hidden, e = h + hidden; h < e; h++) gg += grad[h] * grad[h];
    }
    const step = cfg.lr / (Math.sqrt(gg) + 1e-12);
    let dd = 0;
    for (let t = 0; t < seqLen; t++) {
      const m = mask[b * seqLen + t] !== 0;
      for (let h = lo + t * hidden, e = h + hidden; h < e; h++) {
        const d = Math.fround(delta[h] + (m ? grad[h] * step : 0));
        delta[h] = d;
        dd += d * d;
      }
    }
    const norm = Math.sqrt(dd);
    if (norm > cfg.eps) {
      const scale = cfg.eps / norm;
      for (let h = lo; h < lo + row; h++) delta[h] *= scale;
    }
  }
}
