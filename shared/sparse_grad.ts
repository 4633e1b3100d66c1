/**
 * Row-sparse word-embedding gradients. The embedding lookup's gradient is
 * zero on every row the micro-batch never looked up, and that matrix is most
 * of a small BERT (30,522 × 128 of 4.4M parameters), so a worker sends only
 * the rows its batch used: bit-for-bit the same gradient, a fraction of the
 * bytes. The word embeddings are the first tensor of the layout.
 *
 * @module
 */
import { ProtocolError } from "./protocol.ts";
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
 * row a gradient (rowCount and rowWidth 0: no sparse block).
 */
export function gradLayout(layout: ParamLayout, objective: Objective): SparseLayout {
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

/** Packs a dense gradient: the listed embedding rows, then the dense rest. */
export function compactGrad(dense: Float32Array, rows: Int32Array, s: SparseLayout): Float32Array {
  const block = s.rowCount * s.rowWidth;
  const out = new Float32Array(rows.length * s.rowWidth + (s.total - block));
  rows.forEach((r, i) =>
    out.set(dense.subarray(r * s.rowWidth, (r + 1) * s.rowWidth), i * s.rowWidth)
  );
  out.set(dense.subarray(block), rows.length * s.rowWidth);
  return out;
}

/** The length a result's `grad` must have. */
export function expectedGradLength(rows: Int32Array | undefined, s: SparseLayout): number {
  return rows ? rows.length * s.rowWidth + s.total - s.rowCount * s.rowWidth : s.total;
}

/**
 * Checks a result's packed gradient against the layout: its length, and that
 * every listed row is in the vocabulary. Throws a `bad_shape` ProtocolError.
 */
export function checkPacked(
  grad: Float32Array,
  rows: Int32Array | undefined,
  s: SparseLayout,
): void {
  if (rows && s.rowWidth === 0) {
    throw new ProtocolError(
      "bad_shape",
      "result.rows given, but this run takes dense gradients (MLM: every embedding row has one)",
    );
  }
  const expected = expectedGradLength(rows, s);
  if (grad.length !== expected) {
    throw new ProtocolError(
      "bad_shape",
      `result.grad has ${grad.length} elements, expected ${expected}`,
    );
  }
  const last = rows?.[rows.length - 1];
  if (last !== undefined && last >= s.rowCount) {
    throw new ProtocolError(
      "bad_shape",
      `result.rows names row ${last}, the vocabulary has ${s.rowCount}`,
    );
  }
}

/** Unpacks a result's gradient into the dense layout (zeros on absent rows). */
export function expandGrad(
  grad: Float32Array,
  rows: Int32Array | undefined,
  s: SparseLayout,
): Float32Array {
  checkPacked(grad, rows, s);
  if (!rows) return grad;
  const out = new Float32Array(s.total);
  rows.forEach((r, i) =>
    out.set(grad.subarray(i * s.rowWidth, (i + 1) * s.rowWidth), r * s.rowWidth)
  );
  out.set(grad.subarray(rows.length * s.rowWidth), s.rowCount * s.rowWidth);
  return out;
}

/**
 * acc += c · grad, with `grad` packed (listed rows, then the dense rest) or
 * dense when `rows` is undefined. Rows that are not listed are skipped: their
 * gradient is zero, so the sum is the one the expanded gradient would give,
 * bit for bit. Call {@link checkPacked} first.
 */
export function addPacked(
  acc: Float64Array,
  grad: Float32Array,
  rows: Int32Array | undefined,
  s: SparseLayout,
  c: number,
): void {
  if (!rows) {
    for (let i = 0; i < s.total; i++) acc[i] += c * grad[i];
    return;
  }
  const w = s.rowWidth;
  for (let k = 0; k < rows.length; k++) {
    const dst = rows[k] * w, src = k * w;
    for (let i = 0; i < w; i++) acc[dst + i] += c * grad[src + i];
  }
  const block = s.rowCount * w, rest = rows.length * w;
  for (let i = 0; i < s.total - block; i++) acc[block + i] += c * grad[rest + i];
}
