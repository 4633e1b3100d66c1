/**
 * The step's gradient, summed as results arrive (docs/method.md, "Combining
 * micro-batches"), so the coordinator never holds every micro-batch result
 * of a step at once: memory is one float64 accumulator plus the few results
 * that arrived ahead of their turn.
 *
 * Results are added strictly in micro-batch index order: result j is added
 * when results 0 … j−1 have been, and one that arrives earlier waits in a
 * reorder buffer. The sum is therefore the one `combineGradients`
 * (coordinator/grad_combine.ts) computes from the same parts — the same float64 additions in the same
 * order, divided and rounded to float32 once — bit for bit, whatever the
 * arrival order and however many workers answered. The buffer is bounded by
 * whoever feeds it: the scheduler dispatches micro-batch j only while
 * j < next + window (coordinator/scheduler.ts), so at most window − 1
 * results ever wait here.
 *
 * Row-sparse results (shared/model/sparse_grad.ts) stay packed while they wait and
 * are added without being expanded. Every part is trusted to fit the layout:
 * a result's gradient is checked once, where it enters (`validateResultShape`
 * in shared/wire/protocol.ts, called by the scheduler on receipt).
 *
 * @module
 */
import {
  addSpan,
  applyPacked,
  type SpanKernel,
  type SparseLayout,
} from "../shared/model/sparse_grad.ts";
import type { BufferPool } from "../shared/wire/transfer.ts";

/** One micro-batch result as the accumulator takes it. */
export interface AccumulatorPart {
  /** Micro-batch index j within the step. */
  readonly index: number;
  /** g_j, dense or packed as `rows` says. */
  readonly grad: Float32Array;
  /** The word-embedding rows `grad` carries; absent: dense. */
  readonly rows?: Int32Array;
  /** The micro-batch mean loss. */
  readonly loss: number;
}

/** The combined step. */
export interface CombinedStep {
  /**
   * G = Σ n_j·g_j / Σ n_j, rounded to float32 once. It shares memory with the
   * accumulator: valid until the next {@link GradAccumulator.begin}.
   */
  readonly grad: Float32Array;
  /** Σ n_j·loss_j / Σ n_j, in index order. */
  readonly loss: number;
  /** Σ n_j. */
  readonly items: number;
  /** ‖G‖₂, squares summed in float64 in index order (the bits of `globalNorm(grad)`). */
  readonly norm: number;
}

/**
 * Sums one step's micro-batch results in index order as they arrive; reused
 * step after step (its float64 buffer is allocated once).
 */
export class GradAccumulator {
  #acc: Float64Array | null = null;
  #counts: readonly number[] = [];
  #next = 0;
  #items = 0;
  #lossSum = 0;
  #waiting = new Map<number, AccumulatorPart>();
  #peak = 0;
  #open = false;
  #sumMs = 0;

  /**
   * `layout`: what every part must match (dense, or row-sparse word
   * embeddings). `release`, if given, is called with each part once it has
   * been added: {@link releaseInto} hands its gradient back to the pool the
   * results are received into, or frees its arrays ({@link freeArrays}) so
   * that a step's results do not wait for the garbage collector.
   */
  constructor(
    readonly layout: SparseLayout,
    readonly options: { readonly release?: (part: AccumulatorPart) => void } = {},
  ) {}

  /**
   * Starts a step of `counts.length` micro-batches, micro-batch j the mean
   * over `counts[j]` items (n_j, from the batch the coordinator made).
   * Discards whatever a previous, unfinished step had added.
   */
  begin(counts: readonly number[]): void {
    if (counts.length === 0) throw new Error("nothing to combine: a step needs micro-batches");
    counts.forEach((c, j) => {
      if (!Number.isSafeInteger(c) || c < 1) {
        throw new RangeError(`micro-batch ${j}: count must be a positive integer, got ${c}`);
      }
    });
    this.#acc ??= new Float64Array(this.layout.total);
    this.#counts = [...counts];
    this.#next = 0;
    this.#items = 0;
    this.#lossSum = 0;
    this.#waiting.clear();
    this.#peak = 0;
    this.#sumMs = 0;
    this.#open = true;
  }

  /** Micro-batches of the step (0 before the first {@link begin}). */
  get parts(): number {
    return this.#counts.length;
  }

  /** How many parts have been added to the sum: parts 0 … next−1. */
  get next(): number {
    return this.#next;
  }

  /** Parts that arrived ahead of their turn and wait in the reorder buffer. */
  get buffered(): number {
    return this.#waiting.size;
  }

  /** Wall time spent adding parts into the sum during this step, in ms. */
  get sumMs(): number {
    return this.#sumMs;
  }

  /** The most parts that waited at once during this step. */
  get peakBuffered(): number {
    return this.#peak;
  }

  /**
   * Takes micro-batch `part.index`'s result: adds it now if every lower index
   * has been added (then every waiting part whose turn it now is), otherwise
   * keeps it until then. Throws on an index outside the step, one already
   * taken, or a non-finite loss. The gradient is trusted to fit the layout
   * (checked on receipt, see the module doc).
   */
  add(part: AccumulatorPart): void {
    if (!this.#open) throw new Error("add() outside a step: call begin() first");
    const j = part.index;
    if (!Number.isSafeInteger(j) || j < 0 || j >= this.#counts.length) {
      throw new RangeError(
        `micro-batch index ${j} is not in this step's 0 … ${this.#counts.length - 1}`,
      );
    }
    if (j < this.#next || this.#waiting.has(j)) {
      throw new Error(`micro-batch ${j} was already added`);
    }
    if (!Number.isFinite(part.loss)) {
      throw new RangeError(`micro-batch ${j}: loss is ${part.loss}`);
    }
    if (j !== this.#next) {
      this.#waiting.set(j, part);
      this.#peak = Math.max(this.#peak, this.#waiting.size);
      return;
    }
    const t0 = performance.now();
    this.#sum(part);
    for (let p = this.#waiting.get(this.#next); p; p = this.#waiting.get(this.#next)) {
      this.#waiting.delete(this.#next);
      this.#sum(p);
    }
    this.#sumMs += performance.now() - t0;
  }

  /** Adds the part whose turn it is (index === next). */
  #sum(p: AccumulatorPart): void {
    const acc = this.#acc!, c = this.#counts[p.index];
    const first = p.index === 0, s = this.layout;
    // The first part assigns; only the embedding rows it does not carry are zeroed apart.
    if (first && p.rows) acc.fill(0, 0, s.rowCount * s.rowWidth);
    applyPacked(acc, p.grad, p.rows, s, c, first ? assignSpan : addSpan);
    this.#lossSum += c * p.loss;
    this.#items += c;
    this.#next++;
    this.options.release?.(p);
  }

  /**
   * Ends the step: G = Σ n_j·g_j / Σ n_j rounded to float32, the loss and
   * ‖G‖₂. Throws unless every part has been added. G is written over the
   * accumulator's own memory (see {@link CombinedStep.grad}).
   */
  finish(): CombinedStep {
    if (!this.#open) throw new Error("finish() outside a step: call begin() first");
    if (this.#next !== this.#counts.length) {
      throw new Error(
        `the step is incomplete: ${this.#next} of ${this.#counts.length} micro-batches added` +
          (this.#waiting.size ? ` (${this.#waiting.size} waiting for a lower index)` : ""),
      );
    }
    this.#open = false;
    const acc = this.#acc!, n = this.#items;
    const { grad, norm } = divideInPlace(acc, this.layout.total, n);
    return { grad, loss: this.#lossSum / n, items: n, norm };
  }
}

/**
 * Frees a part's arrays now rather than at the next garbage collection:
 * their buffers are detached (`ArrayBuffer.prototype.transfer(0)`), so they
 * read as empty afterwards. For results nothing else reads — the trainer's,
 * whose buffers came off the wire. Without it, results of hundreds of MB
 * that are no longer referenced stay resident until V8 collects them (five
 * or six of them at once, measured).
 */
export function freeArrays(part: AccumulatorPart): void {
  for (const a of [part.grad, part.rows]) {
    const b = a?.buffer;
    if (b instanceof ArrayBuffer && !b.detached) b.transfer(0);
  }
}

/**
 * What becomes of a part once it is summed: its gradient goes back to `pool`
 * (the memory results are received into, coordinator/server.ts), where the
 * next result's transfer fills it; without a pool, its arrays are freed at
 * once ({@link freeArrays}).
 */
export function releaseInto(pool: BufferPool | undefined): (part: AccumulatorPart) => void {
  return pool ? (part) => pool.recycle(part.grad) : freeArrays;
}

/**
 * acc[i] = c·grad[i] + 0: the first part's kernel. What zeroing acc and then
 * adding would give, bit for bit (x + 0 turns −0 into +0, as a sum from a
 * zeroed buffer does), in one pass instead of two.
 */
const assignSpan: SpanKernel = (acc, grad, c) => {
  const n = grad.length;
  for (let i = 0; i < n; i++) acc[i] = c * grad[i] + 0;
};

/**
 * out[i] = fround(acc[i] / n) for i < total, written into the first half of
 * acc's own bytes (out[i] occupies bytes 4i … 4i+3, inside acc[⌊i/2⌋], which
 * has already been read), and ‖out‖₂ summed in float64 in index order.
 */
function divideInPlace(
  acc: Float64Array,
  total: number,
  n: number,
): { grad: Float32Array; norm: number } {
  const out = new Float32Array(acc.buffer, acc.byteOffset, total);
  let sq = 0;
  for (let i = 0; i < total; i++) {
    const g = Math.fround(acc[i] / n);
    out[i] = g;
    sq += g * g;
  }
  return { grad: out, norm: Math.sqrt(sq) };
}

/**
 * Result memory the coordinator allows by default: window × the largest
 * result stays within this (4 GiB), whatever the batch size.
 */
export const RESULT_BUDGET_BYTES = 4 * 1024 ** 3;

/**
 * The most bytes one result's gradient can take: the dense layout, or the
 * packed rows — at most one per token of a micro-batch, at most the
 * vocabulary — plus every other tensor.
 */
export function maxResultBytes(s: SparseLayout, tokensPerMicroBatch: number): number {
  if (s.rowWidth === 0) return 4 * s.total;
  const rows = Math.min(s.rowCount, Math.max(1, tokensPerMicroBatch));
  return 4 * (s.total - s.rowCount * s.rowWidth + rows * s.rowWidth) + 4 * rows;
}

/**
 * The scheduler's dispatch window for results of `resultBytes`: as many as
 * fit in `budgetBytes`, and never fewer than 2 (so two workers can overlap).
 */
export function dispatchWindow(
  resultBytes: number,
  budgetBytes: number = RESULT_BUDGET_BYTES,
): number {
  if (!(resultBytes > 0) || !(budgetBytes > 0)) {
    throw new RangeError(
      `result and budget sizes must be positive, got ${resultBytes} and ${budgetBytes}`,
    );
  }
  return Math.max(2, Math.floor(budgetBytes / resultBytes));
}
