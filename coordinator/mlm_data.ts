/**
 * Pre-training data: the built-in corpora tokenized and packed into
 * sequences `[CLS] tokens [SEP]`, and BERT's masking applied per step —
 * 15% of the real tokens chosen, of those 80% → [MASK], 10% → a random
 * token, 10% unchanged — seeded by (seed, step, example), so a micro-batch
 * stays a pure function of its inputs and a resumed run masks identically.
 *
 * @module
 */
import type { LabelledBatch } from "../shared/model/batch.ts";
import { IGNORE_INDEX } from "../shared/model/targets.ts";
import { mixSeed, Rng } from "../shared/method/rng.ts";
import type { TextTokenizer } from "../shared/text/tokenizer.ts";

/**
 * Packs documents into sequences of exactly `maxLen` tokens (the last may be
 * shorter): the documents' tokens laid end to end with [SEP] between
 * documents, cut into pieces, each wrapped as `[CLS] piece [SEP]`.
 */
export function packSequences(
  docs: readonly string[],
  tokenizer: TextTokenizer,
  maxLen: number,
): Int32Array[] {
  const body = maxLen - 2;
  const out: Int32Array[] = [];
  let piece = new Int32Array(body), n = 0;
  const emit = () => {
    const seq = new Int32Array(n + 2);
    seq[0] = tokenizer.clsId;
    seq.set(piece.subarray(0, n), 1);
    seq[n + 1] = tokenizer.sepId;
    out.push(seq);
    piece = new Int32Array(body);
    n = 0;
  };
  const add = (id: number) => {
    piece[n++] = id;
    if (n === body) emit();
  };
  docs.forEach((doc, d) => {
    if (d > 0 && n > 0) add(tokenizer.sepId);
    for (const id of tokenizer.tokenize(doc)) add(id);
  });
  if (n > 0) emit();
  return out;
}

/** Masked-LM batches over packed sequences. */
export class MlmSet {
  readonly #special: Set<number>;
  /** The longest sequence held: no batch is padded past it (nor past the model's positions). */
  readonly #longest: number;
  constructor(
    readonly sequences: readonly Int32Array[],
    readonly tokenizer: TextTokenizer,
    readonly seed: number,
    readonly maskRate = 0.15,
  ) {
    this.#longest = sequences.reduce((m, s) => Math.max(m, s.length), 0);
    this.#special = new Set([
      tokenizer.clsId,
      tokenizer.sepId,
      tokenizer.padId,
      tokenizer.maskId,
      tokenizer.unkId,
    ]);
  }

  get size(): number {
    return this.sequences.length;
  }

  /**
   * log p(token) over the tokens that can be predicted (special tokens
   * excluded), add-½ smoothed over the `vocabSize` ids: the bias of an MLM
   * decoder that knows only word frequencies. A fresh head starts from it, so
   * no updates are spent learning the unigram distribution.
   */
  unigramLogPrior(vocabSize: number): Float32Array {
    const counts = new Float64Array(vocabSize);
    let total = 0;
    for (const seq of this.sequences) {
      for (const id of seq) {
        if (this.#special.has(id) || id < 0 || id >= vocabSize) continue;
        counts[id]++;
        total++;
      }
    }
    const denominator = Math.log(total + 0.5 * vocabSize);
    return Float32Array.from(counts, (c) => Math.log(c + 0.5) - denominator);
  }

  /** The masked batch of sequences `indices` at `step`; labels per token (IGNORE_INDEX where not predicted). */
  batch(indices: readonly number[], step: number): LabelledBatch {
    const seqs = indices.map((i) => this.sequences[i]);
    const longest = Math.max(...seqs.map((s) => s.length));
    // Padded to a multiple of 8 for the kernels, but never past the packing length.
    const seqLen = Math.min(Math.ceil(longest / 8) * 8, this.#longest);
    const size = seqs.length;
    const inputIds = new Int32Array(size * seqLen).fill(this.tokenizer.padId);
    const tokenTypeIds = new Int32Array(size * seqLen);
    const attentionMask = new Uint8Array(size * seqLen);
    const labels = new Float32Array(size * seqLen).fill(IGNORE_INDEX);
    const V = this.tokenizer.vocabSize;
    seqs.forEach((seq, b) => {
      const rng = new Rng(mixSeed(this.seed, step, indices[b], 0x3a5c));
      const candidates: number[] = [];
      seq.forEach((id, i) => {
        inputIds[b * seqLen + i] = id;
        attentionMask[b * seqLen + i] = 1;
        if (!this.#special.has(id)) candidates.push(i);
      });
      const chosen = candidates.filter(() => rng.next() < this.maskRate);
      if (chosen.length === 0 && candidates.length > 0) {
        chosen.push(candidates[rng.int(candidates.length)]);
      }
      for (const i of chosen) {
        const k = b * seqLen + i;
        labels[k] = seq[i];
        const r = rng.next();
        if (r < 0.8) inputIds[k] = this.tokenizer.maskId;
        else if (r < 0.9) inputIds[k] = rng.int(V);
      }
    });
    return { inputIds, tokenTypeIds, attentionMask, labels, size, seqLen };
  }
}
