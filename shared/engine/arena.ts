/**
 * One device buffer that the buffers of a batch shape are carved from, so
 * that batch shapes of a run (sequence lengths vary by micro-batch) share
 * one allocation the size of the largest instead of one each. Only one
 * shape's views are in use at a time: the engine computes one task at a
 * time and nothing in these buffers outlives a task.
 *
 * A new buffer is filled with NaN, so a kernel reading a value no kernel
 * wrote shows up in the results instead of passing as 0.
 *
 * @module
 */
import type { Device } from "./device.ts";

/** Carves views out of one growing buffer of `dev`. */
export class Arena<T> {
  #buf: T | null = null;
  #capacity = 0;
  #generation = 0;

  constructor(private readonly dev: Device<T>) {}

  /** Floats the current buffer holds. */
  get capacity(): number {
    return this.#capacity;
  }

  /** Counts up whenever the buffer is replaced (views made before are then stale). */
  get generation(): number {
    return this.#generation;
  }

  /** Frees the buffer (views made before are then stale). */
  dispose(): void {
    if (this.#buf) this.dev.release(this.#buf);
    this.#buf = null;
    this.#capacity = 0;
    this.#generation++;
  }

  /**
   * Runs `build` with a device whose `alloc` hands out consecutive views of
   * the buffer, growing the buffer first when `build` needs more than it holds
   * (`build` runs once more with a counting allocator to find out).
   */
  build<R>(build: (dev: Device<T>) => R): R {
    let need = 0;
    const empty = this.dev.alloc(0);
    build({ ...this.dev, alloc: (n) => (need += n, empty) });
    if (need > this.#capacity) {
      if (this.#buf) this.dev.release(this.#buf); // before allocating the new one
      this.#buf = null;
      this.#buf = this.dev.alloc(need);
      this.dev.fill(this.#buf, NaN);
      this.#capacity = need;
      this.#generation++;
    }
    let used = 0;
    const buf = this.#buf!;
    return build({
      ...this.dev,
      alloc: (n) => {
        const v = this.dev.view(buf, used, n);
        used += n;
        return v;
      },
    });
  }
}
