/**
 * Examples → padded micro-batches: tokenized once (cached), padded to the
 * longest example of the micro-batch rounded up to a multiple of 8 (fewer
 * distinct shapes: fewer shader compiles on webgpu).
 *
 * @module
 */
import type { Example } from "./example.ts";
import type { LabelledBatch } from "../model/batch.ts";
import type { Encoding, TextTokenizer } from "../text/tokenizer.ts";

/** Tokenizes examples on first use and builds padded batches from them. */
export class EncodedSet {
  readonly #cache = new Map<number, Encoding>();
  constructor(
    readonly examples: readonly Example[],
    readonly tokenizer: TextTokenizer,
    readonly maxLen: number,
  ) {}

  /** The encoding of example `i`. */
  encoding(i: number): Encoding {
    let e = this.#cache.get(i);
    if (!e) {
      const ex = this.examples[i];
      e = this.tokenizer.encode(ex.text, ex.textPair, this.maxLen);
      this.#cache.set(i, e);
    }
    return e;
  }

  /** A padded, labelled batch of the examples at `indices`, in that order. */
  batch(indices: readonly number[]): LabelledBatch {
    const encs = indices.map((i) => this.encoding(i));
    const longest = Math.max(1, ...encs.map((e) => e.inputIds.length));
    const seqLen = Math.min(this.maxLen, Math.ceil(longest / 8) * 8);
    const size = indices.length;
    const inputIds = new Int32Array(size * seqLen).fill(this.tokenizer.padId);
    const tokenTypeIds = new Int32Array(size * seqLen);
    const attentionMask = new Uint8Array(size * seqLen);
    const labels = new Float32Array(size);
    encs.forEach((e, b) => {
      inputIds.set(e.inputIds, b * seqLen);
      tokenTypeIds.set(e.tokenTypeIds, b * seqLen);
      attentionMask.fill(1, b * seqLen, b * seqLen + e.inputIds.length);
      labels[b] = this.examples[indices[b]].label;
    });
    return { inputIds, tokenTypeIds, attentionMask, labels, size, seqLen };
  }
}
