/**
 * The micro-batch, host side: the one definition that the data plan builds,
 * the model reads, the gradient consumes and the wire carries (a `task`'s
 * labelled batch, an `eval_task`'s unlabelled one; docs/protocol.md,
 * "Messages"). Row-major [size, seqLen] throughout.
 *
 * @module
 */

/** An unlabelled batch: token ids, token types and attention mask, row-major [size, seqLen]. */
export interface HostBatch {
  readonly inputIds: Int32Array;
  readonly tokenTypeIds: Int32Array;
  /** 1 for a real token, 0 for padding. */
  readonly attentionMask: Uint8Array;
  readonly size: number;
  readonly seqLen: number;
}

/** A labelled batch: what one training micro-batch's gradient is computed on. */
export interface LabelledBatch extends HostBatch {
  /**
   * One value per example (class id, or target score for regression) or one
   * per token (MLM; −100 = ignored, docs/method.md "MLM objective and masking").
   */
  readonly labels: Float32Array;
}
