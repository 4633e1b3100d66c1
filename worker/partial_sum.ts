/**
 * The worker's held micro-batches (docs/protocol.md, "Held tasks"): a `task`
 * with `hold` is computed as any other, but instead of sending its gradient
 * the worker adds n_j·g_j, n_j·loss_j and n_j into one partial sum per
 * (run, step, weights version), answers with a small `done`, and sends the
 * sum once, as a `partial`, when the coordinator's `flush` names exactly the
 * micro-batches it holds. So a step's bytes scale with the workers, not with
 * the micro-batches.
 *
 * The sum is float64, over the whole layout: the word-embedding block is
 * touched only on the rows some held micro-batch used (their union travels,
 * row-sparse, as a result's rows do), every other element densely. Terms are
 * added in the order the tasks arrive — the coordinator sends a deterministic
 * run's group of micro-batches in index order, and messages are handled one at
 * a time, in order — and rounded once, to float32 and then to the run's
 * gradient encoding (shared/wire/grad_encoding.ts), when the sum is sent. A
 * sum for another step or weights version is dropped when the first task of a
 * new one arrives (the coordinator only moves on when it needs no more from
 * the old one), and on every welcome (a reconnected worker starts with
 * nothing credited).
 *
 * @module
 */
import { lossItems } from "../shared/model/targets.ts";
import { type SparseLayout } from "../shared/model/sparse_grad.ts";
import {
  type DoneMessage,
  type FlushMessage,
  type GradEncoding,
  type PartialMessage,
  ProtocolError,
  type ResultMessage,
  type TaskMessage,
  type Timings,
} from "../shared/wire/protocol.ts";
import { encodeGrad } from "../shared/wire/grad_encoding.ts";

/**
 * A task's gradient before it is packed into a `result`
 * (worker/compute.ts `WorkerCompute.gradient`): `grad` dense over the result
 * layout, `rows` the word rows the batch used (the only non-zero ones of the
 * word block), the loss, n_j and the timings.
 */
export interface TaskGradient {
  readonly grad: Float32Array;
  readonly dense: true;
  readonly rows: Int32Array | undefined;
  readonly loss: number;
  readonly count: number;
  readonly timings: Timings;
}

/** What one sum is for. */
interface SumKey {
  readonly runId: string;
  readonly step: number;
  readonly weightsVersion: number;
}

/**
 * Σ n_j·g_j over packed micro-batch gradients, in float64, for one layout;
 * reused from sum to sum (its buffers are allocated once).
 */
export class PartialSum {
  #acc: Float64Array | null = null;
  /** Word-embedding rows touched so far (1: in the sum). */
  #used: Uint8Array;
  #rowList: number[] = [];
  #indices: number[] = [];
  #lossSum = 0;
  #count = 0;
  #computeMs = 0;
  #adversaryMs = 0;

  constructor(readonly layout: SparseLayout) {
    this.#used = new Uint8Array(layout.rowCount);
  }

  /** Micro-batch indices in the sum, in the order they were added. */
  get indices(): readonly number[] {
    return this.#indices;
  }

  /** Forgets the sum. */
  clear(): void {
    for (const r of this.#rowList) this.#used[r] = 0;
    this.#rowList = [];
    this.#indices = [];
    this.#lossSum = 0;
    this.#count = 0;
    this.#computeMs = 0;
    this.#adversaryMs = 0;
  }

  /**
   * Adds micro-batch `index`'s mean gradient `grad` weighted by its n_j =
   * `items`, and its loss. `grad` is packed as `rows` says
   * (shared/model/sparse_grad.ts), or with `dense` the whole layout of which
   * only `rows` of the word block are read. The first term of the dense
   * part, and of each row, is assigned rather than added (x·n + 0: the bits
   * a zeroed sum would give, in one pass).
   */
  add(
    index: number,
    grad: Float32Array,
    rows: Int32Array | undefined,
    items: number,
    loss: number,
    timings: { computeMs: number; adversaryMs: number },
    dense = false,
  ): void {
    const s = this.layout, w = s.rowWidth, block = s.rowCount * w;
    const acc = this.#acc ??= new Float64Array(s.total);
    const first = this.#indices.length === 0;
    const c = items;
    let src = 0;
    if (rows) {
      for (let k = 0; k < rows.length; k++, src += w) {
        const r = rows[k], dst = r * w;
        if (dense) src = dst;
        if (this.#used[r] === 0) {
          this.#used[r] = 1;
          this.#rowList.push(r);
          for (let i = 0; i < w; i++) acc[dst + i] = c * grad[src + i] + 0;
        } else {
          for (let i = 0; i < w; i++) acc[dst + i] += c * grad[src + i];
        }
      }
    }
    // Dense: the rest after the embedding block (rows given), or everything.
    const from = rows ? block : 0;
    if (dense) src = from;
    const n = s.total - from;
    if (first) { for (let i = 0; i < n; i++) acc[from + i] = c * grad[src + i] + 0; }
    else for (let i = 0; i < n; i++) acc[from + i] += c * grad[src + i];
    this.#indices.push(index);
    this.#lossSum += c * loss;
    this.#count += c;
    this.#computeMs += timings.computeMs;
    this.#adversaryMs += timings.adversaryMs;
  }

  /**
   * The sum, packed (the union of the rows used, increasing, then the dense
   * rest) and rounded once to float32; then cleared. `sparse`: whether the
   * layout's embeddings travel row-sparse (a classifier run).
   */
  take(sparse: boolean): {
    indices: Int32Array;
    grad: Float32Array;
    rows?: Int32Array;
    lossSum: number;
    count: number;
    computeMs: number;
    adversaryMs: number;
  } {
    const s = this.layout, w = s.rowWidth, block = s.rowCount * w;
    const acc = this.#acc ?? new Float64Array(s.total);
    const rows = sparse ? Int32Array.from(this.#rowList).sort() : undefined;
    const from = rows ? block : 0;
    const grad = new Float32Array((rows ? rows.length * w : 0) + s.total - from);
    let dst = 0;
    if (rows) {
      for (const r of rows) {
        const at = r * w;
        for (let i = 0; i < w; i++) grad[dst + i] = acc[at + i];
        dst += w;
      }
    }
    for (let i = from; i < s.total; i++) grad[dst++] = acc[i];
    const out = {
      indices: Int32Array.from(this.#indices).sort(),
      grad,
      rows,
      lossSum: this.#lossSum,
      count: this.#count,
      computeMs: this.#computeMs,
      adversaryMs: this.#adversaryMs,
    };
    this.clear();
    return out;
  }
}

/**
 * The worker's held tasks: at most one open partial sum, for one (run,
 * step, weights version), and the answers `done` and `partial`.
 */
export class HeldWork {
  #sum: PartialSum | null = null;
  #key: SumKey | null = null;

  /**
   * `layout`: the run's gradient layout (row-sparse embeddings for a
   * classifier); `encoding`: how partials travel. Drops any open sum (a
   * welcome: nothing is credited to a worker that just joined).
   */
  reset(layout: SparseLayout, encoding: GradEncoding): void {
    if (this.#sum?.layout.total !== layout.total || this.#sum.layout.rowCount !== layout.rowCount) {
      this.#sum = new PartialSum(layout);
    } else this.#sum.clear();
    this.#key = null;
    this.encoding = encoding;
  }

  /** How partials travel (the welcome's `gradEncoding`). */
  encoding: GradEncoding = "f32";

  /** Micro-batches in the open sum. */
  get held(): readonly number[] {
    return this.#sum?.indices ?? [];
  }

  /**
   * Adds held task `task`'s computed `result` (its packed mean gradient) to
   * the sum of its step and weights version — a fresh one when that differs
   * from the open sum's — and returns the `done` that answers it.
   */
  absorb(task: TaskMessage, result: ResultMessage | TaskGradient): DoneMessage {
    const sum = this.#need();
    const key = this.#key;
    if (
      !key || key.runId !== task.runId || key.step !== task.step ||
      key.weightsVersion !== task.weightsVersion
    ) {
      sum.clear();
      this.#key = { runId: task.runId, step: task.step, weightsVersion: task.weightsVersion };
    }
    if (sum.indices.includes(task.index)) {
      throw new ProtocolError("duplicate", `micro-batch ${task.index} is already held`);
    }
    const items = lossItems(task.batch.labels, task.batch);
    const dense = "dense" in result && result.dense;
    sum.add(task.index, result.grad, result.rows, items, result.loss, result.timings, dense);
    return {
      type: "done",
      taskId: task.taskId,
      step: task.step,
      index: task.index,
      weightsVersion: task.weightsVersion,
      loss: result.loss,
      count: result.count,
      timings: result.timings,
    };
  }

  /**
   * The `partial` a `flush` asks for: the open sum when it is for the same
   * run, step and weights version and holds exactly `m.indices`. Otherwise
   * the sum held for that step (whatever it holds: the coordinator refuses a
   * set it did not credit, `bad_partial`, and has those micro-batches
   * recomputed), or an empty partial when none is. The sum is cleared either
   * way.
   */
  flush(m: FlushMessage): PartialMessage {
    const sum = this.#need();
    const key = this.#key;
    const same = key !== null && key.runId === m.runId && key.step === m.step &&
      key.weightsVersion === m.weightsVersion;
    const t = same && sum.indices.length > 0 ? sum.take(sum.layout.rowWidth > 0) : null;
    if (!same) sum.clear();
    if (!t) {
      return {
        type: "partial",
        step: m.step,
        weightsVersion: m.weightsVersion,
        indices: new Int32Array(0),
        encoding: "f32",
        scale: 0,
        grad: new Float32Array(0),
        lossSum: 0,
        count: 0,
        timings: { computeMs: 0, adversaryMs: 0, encodeMs: 0 },
      };
    }
    const enc = encodeGrad(t.grad, this.encoding);
    const out: PartialMessage = {
      type: "partial",
      step: m.step,
      weightsVersion: m.weightsVersion,
      indices: t.indices,
      encoding: enc.encoding,
      scale: enc.scale,
      grad: enc.data,
      lossSum: t.lossSum,
      count: t.count,
      timings: { computeMs: t.computeMs, adversaryMs: t.adversaryMs, encodeMs: 0 },
    };
    if (t.rows) out.rows = t.rows;
    return out;
  }

  #need(): PartialSum {
    if (!this.#sum) throw new ProtocolError("malformed", "no welcome received yet");
    return this.#sum;
  }
}
