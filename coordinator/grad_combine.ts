/**
 * Combining micro-batch results into the global-batch gradient and loss
 * (docs/method.md, "Combining micro-batches"): G = Σ n_j·g_j / Σ n_j, summed in
 * micro-batch index order in float64 and rounded to float32 once, so the
 * result does not depend on which worker answered first. Also the global
 * gradient norm and optional clipping.
 *
 * @module
 */
import { addPacked, denseLayout, type SparseLayout } from "../shared/model/sparse_grad.ts";

/**
 * One micro-batch gradient g_j of the micro-batch mean loss over n_j =
 * `count` items (examples; masked tokens for MLM).
 */
export interface GradPart {
  /** Micro-batch index j within the step (fixes the summation order). */
  index: number;
  /** g_j in the layout's flat order, or packed as {@link rows} says. */
  grad: Float32Array;
  /** n_j, the number of items the micro-batch loss is the mean over. */
  count: number;
  /** The word-embedding rows `grad` carries (row-sparse packing); absent: dense. */
  rows?: Int32Array;
}

/** One micro-batch mean loss over n_j = `count` items. */
export interface LossPart {
  /** Micro-batch index j within the step (fixes the summation order). */
  index: number;
  /** The micro-batch mean loss. */
  loss: number;
  /** n_j, the number of items the loss is the mean over. */
  count: number;
}

/** Checks indices and counts and returns the parts sorted by index (a copy). */
function ordered<T extends { index: number; count: number }>(parts: readonly T[]): T[] {
  if (parts.length === 0) throw new Error("nothing to combine: no micro-batch results");
  for (const p of parts) {
    if (!Number.isSafeInteger(p.index) || p.index < 0) {
      throw new RangeError(`micro-batch index must be a non-negative integer, got ${p.index}`);
    }
    if (!Number.isSafeInteger(p.count) || p.count < 1) {
      throw new RangeError(
        `micro-batch ${p.index}: count must be a positive integer, got ${p.count}`,
      );
    }
  }
  const sorted = [...parts].sort((a, b) => a.index - b.index);
  for (let k = 1; k < sorted.length; k++) {
    if (sorted[k].index === sorted[k - 1].index) {
      throw new Error(`duplicate micro-batch index ${sorted[k].index}`);
    }
  }
  return sorted;
}

/**
 * G = Σ_j n_j·g_j / Σ_j n_j over `parts`, each of the flat length of
 * `layout` (a plain length for dense parts). Parts are summed in ascending
 * `index` order into a Float64Array and divided and rounded to float32 once
 * at the end, so any permutation of `parts` gives the same bits; row-sparse
 * parts are accumulated without expanding them and give the bits their dense
 * expansion would. Throws on an empty list, a duplicate index or a
 * non-positive count. Each part's gradient is trusted to fit `layout`: a
 * result's is checked once, where it enters (`validateResultShape`,
 * shared/wire/protocol.ts, called by the scheduler on receipt).
 */
export function combineGradients(
  parts: readonly GradPart[],
  layout: number | SparseLayout,
): Float32Array {
  const s = typeof layout === "number" ? denseLayout(layout) : layout;
  const sorted = ordered(parts);
  const acc = new Float64Array(s.total);
  let n = 0;
  for (const p of sorted) {
    addPacked(acc, p.grad, p.rows, s, p.count);
    n += p.count;
  }
  const out = new Float32Array(s.total);
  for (let i = 0; i < s.total; i++) out[i] = acc[i] / n;
  return out;
}

/** Σ_j n_j·loss_j / Σ_j n_j, summed in ascending `index` order in float64. */
export function combineLosses(parts: readonly LossPart[]): number {
  const sorted = ordered(parts);
  let sum = 0, n = 0;
  for (const p of sorted) {
    sum += p.count * p.loss;
    n += p.count;
  }
  return sum / n;
}

/** ‖g‖₂, squares accumulated in float64 in index order. */
export function globalNorm(g: Float32Array): number {
  let sq = 0;
  for (let i = 0; i < g.length; i++) sq += g[i] * g[i];
  return Math.sqrt(sq);
}

/**
 * Global-norm clipping in place: if ‖g‖₂ > `maxNorm`, every element is
 * multiplied by maxNorm/‖g‖₂ (computed in float64, each result rounded to
 * float32). Returns the norm before clipping and whether it clipped. Throws
 * if the norm is not finite (clipping cannot repair NaN or Inf). `norm`:
 * ‖g‖₂ when the caller already has it (as {@link globalNorm} computes it).
 */
export function clipByGlobalNorm(
  g: Float32Array,
  maxNorm: number,
  norm: number = globalNorm(g),
): { norm: number; clipped: boolean } {
  if (!(maxNorm > 0 && Number.isFinite(maxNorm))) {
    throw new RangeError(`maxNorm must be a positive finite number, got ${maxNorm}`);
  }
  if (!Number.isFinite(norm)) throw new Error(`gradient norm is ${norm}; cannot clip`);
  if (norm <= maxNorm) return { norm, clipped: false };
  const scale = maxNorm / norm;
  for (let i = 0; i < g.length; i++) g[i] = g[i] * scale;
  return { norm, clipped: true };
}
