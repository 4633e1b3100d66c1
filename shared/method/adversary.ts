/**
 * The adversary's host math (docs/method.md, "One micro-batch gradient"): the
 * random start δ_0 and one ascent step with its projection, over flat
 * [B, L, H] arrays. The engine's host device runs these; shared/tfjs/adversary.ts
 * holds the same as tensor ops.
 *
 * @module
 */
import type { AdversaryConfig } from "./adversary_config.ts";
import { mixSeed, Rng } from "./rng.ts";

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

/**
 * δ_0 on the host, [B, L, H] flat: zero, or U(-1, 1)·m·init/sqrt(len·H) per
 * example, drawn from a stream keyed by (seed, step, index) so every backend
 * (and the native engine) agrees. Writes into `out` when given.
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
  const rng = new Rng(mixSeed(key.seed, key.step, key.index, 0xde17a));
  for (let b = 0; b < size; b++) {
    let len = 0;
    for (let i = 0; i < seqLen; i++) len += mask[b * seqLen + i];
    const scale = init / Math.sqrt(Math.max(len, 1) * hidden);
    for (let i = 0; i < seqLen; i++) {
      const m = mask[b * seqLen + i];
      for (let h = 0; h < hidden; h++) {
        const u = rng.uniform(-1, 1); // drawn even at padding so the stream does not depend on lengths
        out[(b * seqLen + i) * hidden + h] = m ? u * scale : 0;
      }
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
