/**
 * The data order of a run: which examples step t trains on, and how they
 * split into micro-batches. A pure function of (seed, example count, B, b,
 * shuffle), so a resumed run sees exactly the batches it would have seen.
 *
 * @module
 */
import { mixSeed, Rng } from "../shared/method/rng.ts";

/** The examples of one step, split into micro-batches of at most b (the last may be smaller). */
export interface StepPlan {
  readonly step: number;
  readonly microBatches: readonly (readonly number[])[];
}

/** Epoch-wise seeded permutations (or file order) laid end to end. */
export class DataPlan {
  readonly #orders = new Map<number, Int32Array>();
  constructor(
    readonly exampleCount: number,
    readonly globalBatch: number,
    readonly microBatch: number,
    readonly seed: number,
    readonly shuffle: boolean,
  ) {
    if (exampleCount === 0) throw new Error("the training split is empty");
  }

  /** Steps in `epochs` passes over the data (the last step may wrap into the next epoch). */
  stepsForEpochs(epochs: number): number {
    return Math.max(1, Math.ceil((epochs * this.exampleCount) / this.globalBatch));
  }

  #order(epoch: number): Int32Array {
    let o = this.#orders.get(epoch);
    if (!o) {
      const idx = Array.from({ length: this.exampleCount }, (_, i) => i);
      if (this.shuffle) new Rng(mixSeed(this.seed, epoch, 0xda7a)).shuffle(idx);
      o = Int32Array.from(idx);
      if (this.#orders.size > 2) this.#orders.clear();
      this.#orders.set(epoch, o);
    }
    return o;
  }

  /** Example index at global position p of the stream. */
  exampleAt(p: number): number {
    const epoch = Math.floor(p / this.exampleCount);
    return this.#order(epoch)[p - epoch * this.exampleCount];
  }

  /** Step t (0-based): examples t·B … t·B+B−1 of the stream, in micro-batches. */
  step(t: number): StepPlan {
    const B = this.globalBatch, b = this.microBatch;
    const all = Array.from({ length: B }, (_, i) => this.exampleAt(t * B + i));
    const microBatches: number[][] = [];
    for (let i = 0; i < B; i += b) microBatches.push(all.slice(i, i + b));
    return { step: t, microBatches };
  }
}
