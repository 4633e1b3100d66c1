/**
 * The weights message the coordinator sends each version, prepared once for
 * every worker (shared/wire/transfer.ts: chunked when large).
 *
 * The optimizer updates the weights in place, while a slow worker may still
 * be receiving the previous version, so what is sent is a snapshot. Two
 * snapshot buffers alternate (version v in buffer v mod 2) instead of a fresh
 * copy per version — on this development VM touching fresh memory costs
 * ~11 µs per 4 KiB page, about 5 s per BERT-base copy, against ~0.1 s to copy
 * into a buffer already touched.
 *
 * Why reusing buffer v mod 2 for version v + 2 is safe: the scheduler accepts
 * a result only while its weights version is the current one (stale results
 * are discarded), and buffer v is overwritten only when v + 2 is published,
 * after v + 1 was. So every result that is ever accepted at version v was
 * computed from weights received completely while v was current, before the
 * overwrite; a worker still receiving version v when it is overwritten can
 * only produce stale results from it, and is sent the current version before
 * any current task (the scheduler sends weights whenever a worker's version
 * is not the current one).
 *
 * @module
 */
import { type WeightsEncoding } from "../shared/wire/protocol.ts";
import { f32ToF16Bits } from "../shared/wire/half_float.ts";
import { type Outgoing, prepareMessage } from "../shared/wire/transfer.ts";

/** Prepares each version's weights message from a buffer updated in place. */
export class WeightsOut {
  #buffers: [Float32Array | null, Float32Array | null] = [null, null];

  /** The `weights` message of `version`, ready to send (validated: NaN/Inf is refused here). */
  prepare(
    runId: string,
    version: number,
    weights: Float32Array,
    encoding: WeightsEncoding,
  ): Outgoing {
    // f16 is a fresh converted copy already.
    const data = encoding === "f16" ? f32ToF16Bits(weights) : this.#snapshot(version, weights);
    return prepareMessage({ type: "weights", runId, version, encoding, data });
  }

  #snapshot(version: number, weights: Float32Array): Float32Array {
    const slot = version % 2;
    let b = this.#buffers[slot];
    if (!b || b.length !== weights.length) {
      b = this.#buffers[slot] = new Float32Array(weights.length);
    }
    b.set(weights);
    return b;
  }
}
