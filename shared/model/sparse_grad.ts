/**
 * Row-sparse word-embedding gradients. The embedding lookup's gradient is
 * zero on every row the micro-batch never looked up, and that matrix is most
 * of a small BERT (30,522 × 128 of 4.4M parameters), so a worker sends only
 * the rows its batch used: bit-for-bit the same gradient, a fraction of the
 * bytes. The word embeddings are the first tensor of the layout.
 *
 * @module
 */
import type { Objective, ParamLayout } from "./param_layout.ts";

/** Where the row-sparse block sits in the flat layout. */
export interface SparseLayout {
  /** Flat length of the whole layout. */
  readonly total: number;
  /** Rows of the word-embedding matrix (vocab size); 0 when gradients are dense. */
  readonly rowCount: number;
  /** Elements per row (hidden size). */
  readonly rowWidth: number;
}

/**
 * The gradient layout of a run: row-sparse word embeddings for a classifier;
 * dense for MLM, whose decoder is tied to the word embeddings and gives every
 * row a gradient (rowCount and rowWidth 0: no sparse block); and dense over
 * the `trainable` layout for a LoRA run (no word-embedding rows train).
 */
export function gradLayout(
  layout: ParamLayout,
  objective: Objective,
  trainable: ParamLayout | null = null,
): SparseLayout {
  if (trainable) return denseLayout(trainable.total);
  return objective === "mlm" ? denseLayout(layout.total) : sparseLayout(layout);
}

/** A layout with no row-sparse block: every result carries all `total` elements. */
export function denseLayout(total: number): SparseLayout {
  return { total, rowCount: 0, rowWidth: 0 };
}

/** The sparse layout of a model's parameter layout. */
export function sparseLayout(layout: ParamLayout): SparseLayout {
  const first = layout.specs[0];
  if (!first.name.endsWith("embeddings.word_embeddings.weight") || first.offset !== 0) {
    throw new Error("the word embeddings must be the layout's first tensor");
  }
  return { total: layout.total, rowCount: first.shape[0], rowWidth: first.shape[1] };
}

/** The sorted distinct token ids of a batch: the only rows with a gradient. */
export function usedRows(inputIds: Int32Array): Int32Array {
  return Int32Array.from(new Set(inputIds)).sort();
}

/**
 * Walks a packed gradient: calls `span(dst, src, n)` for each run of `n`
 * elements at `src` in the packed `grad` that belongs at `dst` in the dense
 * layout — one run per listed row, then the dense rest; one run of `total`
 * when `rows` is undefined (dense). The one place that knows the packing.
 */
export function packedSpans(
  rows: Int32Array | undefined,
  s: SparseLayout,
  span: (dst: number, src: number, n: number) => void,
): void {
  if (!rows) {
    span(0, 0, s.total);
    return;
  }
  const w = s.rowWidth, block = s.rowCount * w;
  for (let k = 0; k < rows.length; k++) span(rows[k] * w, k * w, w);
  span(block, rows.length * w, s.total - block);
}

/** Packs a dense gradient: the listed embedding rows, then the dense rest. */
export function compactGrad(dense: Float32Array, rows: Int32Array, s: SparseLayout): Float32Array {
  const out = new Float32Array(expectedGradLength(rows, s));
  packedSpans(rows, s, (dst, src, n) => out.set(dense.subarray(dst, dst + n), src));
  return out;
}

/** The length a result's `grad` must have. */
export function expectedGradLength(rows: Int32Array | undefined, s: SparseLayout): number {
  return rows ? rows.length * s.rowWidth + s.total - s.rowCount * s.rowWidth : s.total;
}

/**
 * What is wrong with a packed gradient of `gradLength` elements carrying
 * `rows` for layout `s`, or null when it fits: rows where the layout is
 * dense, a length that is not {@link expectedGradLength}, a row beyond the
 * vocabulary (`rows` is already known to be increasing). Checked once, where
 * a result enters (`validateResultShape`, shared/wire/protocol.ts, which turns the
 * reason into a `bad_shape` error); everything after trusts it.
 */
export function packedGradProblem(
  gradLength: number,
  rows: Int32Array | undefined,
  s: SparseLayout,
): string | null {
  if (rows && s.rowWidth === 0) {
    return "rows given, but this run takes dense gradients (MLM: every embedding row has one)";
  }
  const expected = expectedGradLength(rows, s);
  if (gradLength !== expected) return `grad has ${gradLength} elements, expected ${expected}`;
  const last = rows?.[rows.length - 1];
  if (last !== undefined && last >= s.rowCount) {
    return `rows names row ${last}, the vocabulary has ${s.rowCount}`;
  }
  return null;
}

/**
 * One element-wise step over a run of a packed gradient and the dense run it
 * lands on (equal lengths): acc[i] += c·grad[i] for a sum, or another
 * combination, e.g. the accumulator's first assignment.
 */
export type SpanKernel = (acc: Float64Array, grad: Float32Array, c: number) => void;

/** acc[i] += c·grad[i]: the kernel of {@link addPacked}. */
export const addSpan: SpanKernel = (acc, grad, c) => {
  const n = grad.length;
  for (let i = 0; i < n; i++) acc[i] += c * grad[i];
};

/**
 * Runs `kernel` over each run of a packed `grad` ({@link packedSpans}) and the
 * run of `acc` it lands on. Rows that are not listed are not visited.
 * `grad` must fit `s` ({@link packedGradProblem} null: checked where the
 * result entered).
 */
export function applyPacked(
  acc: Float64Array,
  grad: Float32Array,
  rows: Int32Array | undefined,
  s: SparseLayout,
  c: number,
  kernel: SpanKernel,
): void {
  packedSpans(
    rows,
    s,
    (dst, src, n) => kernel(acc.subarray(dst, dst + n), grad.subarray(src, src + n), c),
  );
}

/**
 * acc += c · grad, with `grad` packed (listed rows, then the dense rest) or
 * dense when `rows` is undefined. Rows that are not listed are skipped: their
 * gradient is zero, so the sum is the one the expanded gradient would give,
 * bit for bit. `grad` must fit `s`, as for {@link applyPacked}.
 */
export function addPacked(
  acc: Float64Array,
  grad: Float32Array,
  rows: Int32Array | undefined,
  s: SparseLayout,
  c: number,
): void {
  applyPacked(acc, grad, rows, s, c, addSpan);
}
