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
 * Partial sums (docs/protocol.md, "Held tasks": Σ n_j·g_j over a set of
 * micro-batches, from one worker) are added by {@link GradAccumulator.addSum}:
 * in a deterministic run's step, tasks of consecutive micro-batches, each
 * added when every lower micro-batch has been (the same reorder logic, on the
 * task's first index) — so the sum depends on the task size, not on who
 * computed what or when; otherwise as they arrive (the order of a float64 sum
 * of a handful of partials only moves the last bits). A partial in 16 bits
 * (bf16, or f16 with its power-of-two scale; shared/wire/grad_encoding.ts) is
 * decoded span by span into a small float32 scratch and added in float64.
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
  packedSpans,
  type SpanKernel,
  type SparseLayout,
} from "../shared/model/sparse_grad.ts";
import type { BufferPool } from "../shared/wire/transfer.ts";
import type { GradEncoding, TensorArray } from "../shared/wire/protocol.ts";
import { decodeFactor, decodeSpan } from "../shared/wire/grad_encoding.ts";

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

/**
 * A partial sum as the accumulator takes it: Σ n_j·g_j, Σ n_j·loss_j and
 * Σ n_j over the micro-batches `indices` (increasing).
 */
export interface SumPart {
  readonly indices: ArrayLike<number>;
  /** Σ n_j·g_j, packed as `rows` says, in `encoding`. */
  readonly grad: Float32Array | Uint16Array;
  readonly encoding: GradEncoding;
  /** f16: the values were multiplied by 2^scale; 0 otherwise. */
  readonly scale: number;
  readonly rows?: Int32Array;
  readonly lossSum: number;
  readonly count: number;
}

/**
 * In which order a step's parts are added: micro-batch index order (results,
 * and a deterministic run's tasks), or as they arrive (partial sums of a
 * non-deterministic run).
 */
export type SumOrder = "index" | "arrival";

/** What {@link GradAccumulator}'s `release` is handed once a part is summed. */
export interface SummedArrays {
  readonly grad: TensorArray;
  readonly rows?: Int32Array;
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
  /** Micro-batches summed so far (in index order, the same as #next). */
  #added = 0;
  #order: SumOrder = "index";
  /** Arrival order: which micro-batches are in the sum. */
  #taken = new Uint8Array(0);
  /** Index order: partial sums waiting, by their first index. */
  #waitingSums = new Map<number, SumPart>();
  #scratch: Float32Array | null = null;
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
    readonly options: { readonly release?: (part: SummedArrays) => void } = {},
  ) {}

  /**
   * Starts a step of `counts.length` micro-batches, micro-batch j the mean
   * over `counts[j]` items (n_j, from the batch the coordinator made).
   * Discards whatever a previous, unfinished step had added. `order`: how
   * parts are added (results and {@link addSum} in a deterministic run:
   * "index"; partial sums otherwise: "arrival").
   */
  begin(counts: readonly number[], order: SumOrder = "index"): void {
    if (counts.length === 0) throw new Error("nothing to combine: a step needs micro-batches");
    counts.forEach((c, j) => {
      if (!Number.isSafeInteger(c) || c < 1) {
        throw new RangeError(`micro-batch ${j}: count must be a positive integer, got ${c}`);
      }
    });
    this.#acc ??= new Float64Array(this.layout.total);
    this.#counts = [...counts];
    this.#next = 0;
    this.#added = 0;
    this.#order = order;
    this.#taken = new Uint8Array(counts.length);
    this.#waitingSums.clear();
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
    return this.#waiting.size + this.#waitingSums.size;
  }

  /** Micro-batches in the sum so far. */
  get added(): number {
    return this.#added;
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
    if (this.#order !== "index") throw new Error("add() takes results of an index-order step");
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
    const first = this.#added === 0, s = this.layout;
    // The first part assigns; only the embedding rows it does not carry are zeroed apart.
    if (first && p.rows) acc.fill(0, 0, s.rowCount * s.rowWidth);
    applyPacked(acc, p.grad, p.rows, s, c, first ? assignSpan : addSpan);
    this.#lossSum += c * p.loss;
    this.#items += c;
    this.#next++;
    this.#added++;
    this.options.release?.(p);
  }

  /**
   * Takes a partial sum over micro-batches `part.indices`: in an index-order
   * step they must be consecutive, and the part is added once every lower
   * micro-batch has been (kept until then); in an arrival-order step it is
   * added now. Throws on an empty set, an index outside the step or already
   * taken, a non-finite loss sum, or a count that is not the micro-batches'
   * Σ n_j. The gradient is trusted to fit the layout (checked on receipt,
   * `validatePartialShape`).
   */
  addSum(part: SumPart): void {
    if (!this.#open) throw new Error("addSum() outside a step: call begin() first");
    const ix = part.indices, n = this.#counts.length;
    if (ix.length === 0) throw new Error("a partial sum names no micro-batch");
    let items = 0;
    for (let k = 0; k < ix.length; k++) {
      const j = ix[k];
      if (!Number.isSafeInteger(j) || j < 0 || j >= n) {
        throw new RangeError(`micro-batch index ${j} is not in this step's 0 … ${n - 1}`);
      }
      if (k > 0 && j <= ix[k - 1]) throw new Error("partial sum indices must increase");
      if (this.#order === "index" && k > 0 && j !== ix[k - 1] + 1) {
        throw new Error(`an index-order partial sum must be consecutive micro-batches, got ${j}`);
      }
      if (this.#taken[j] === 1) throw new Error(`micro-batch ${j} was already added`);
      items += this.#counts[j];
    }
    if (items !== part.count) {
      throw new RangeError(`partial sum count ${part.count}, its micro-batches hold ${items}`);
    }
    if (!Number.isFinite(part.lossSum)) {
      throw new RangeError(`partial sum loss is ${part.lossSum}`);
    }
    for (let k = 0; k < ix.length; k++) this.#taken[ix[k]] = 1;
    const t0 = performance.now();
    if (this.#order === "arrival") {
      this.#sumPartial(part);
    } else if (ix[0] !== this.#next) {
      this.#waitingSums.set(ix[0], part);
      this.#peak = Math.max(this.#peak, this.#waitingSums.size);
    } else {
      this.#sumPartial(part);
      for (let p = this.#waitingSums.get(this.#next); p; p = this.#waitingSums.get(this.#next)) {
        this.#waitingSums.delete(this.#next);
        this.#sumPartial(p);
      }
    }
    this.#sumMs += performance.now() - t0;
  }

  /** Adds a partial sum (its turn, or any time in an arrival-order step). */
  #sumPartial(p: SumPart): void {
    const acc = this.#acc!, s = this.layout;
    const first = this.#added === 0;
    if (first && p.rows) acc.fill(0, 0, s.rowCount * s.rowWidth);
    const kernel = first ? assignSpan : addSpan;
    if (p.encoding === "f32") {
      applyPacked(acc, p.grad as Float32Array, p.rows, s, 1, kernel);
    } else {
      const data = p.grad as Uint16Array, c = decodeFactor(p), enc = p.encoding;
      const scratch = this.#scratch ??= new Float32Array(DECODE_CHUNK);
      packedSpans(p.rows, s, (dst, src, n) => {
        for (let o = 0; o < n; o += DECODE_CHUNK) {
          const len = Math.min(DECODE_CHUNK, n - o);
          const view = scratch.subarray(0, len);
          decodeSpan(data, enc, src + o, len, view);
          kernel(acc.subarray(dst + o, dst + o + len), view, c);
        }
      });
    }
    this.#lossSum += p.lossSum;
    this.#items += p.count;
    this.#next += p.indices.length;
    this.#added += p.indices.length;
    this.options.release?.(p);
  }

  /**
   * Ends the step: G = Σ n_j·g_j / Σ n_j rounded to float32, the loss and
   * ‖G‖₂. Throws unless every part has been added. G is written over the
   * accumulator's own memory (see {@link CombinedStep.grad}).
   */
  finish(): CombinedStep {
    if (!this.#open) throw new Error("finish() outside a step: call begin() first");
    if (this.#added !== this.#counts.length) {
      const waiting = this.#waiting.size + this.#waitingSums.size;
      throw new Error(
        `the step is incomplete: ${this.#added} of ${this.#counts.length} micro-batches added` +
          (waiting ? ` (${waiting} waiting for a lower index)` : ""),
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
export function freeArrays(part: SummedArrays): void {
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
export function releaseInto(pool: BufferPool | undefined): (part: SummedArrays) => void {
  return pool ? (part) => pool.recycle(part.grad) : freeArrays;
}

/** Elements of a 16-bit partial decoded at a time (256 KB of float32 scratch). */
const DECODE_CHUNK = 65536;

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
