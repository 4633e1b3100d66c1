/**
 * What a micro-batch's labels mean, on the host, for every implementation of
 * the model (the engine and the tfjs path): position ids, the ignore index of
 * token labels, whether labels are per token (MLM) or per example, n_j, and
 * the masked-token targets of an MLM batch.
 *
 * @module
 */
import type { HostBatch } from "./batch.ts";
import type { ModelConfig } from "./config.ts";
import type { Objective } from "./param_layout.ts";

/** Position ids: 0..L-1 for BERT; RoBERTa counts real tokens from pad+1 and gives padding pad. */
export function positionIds(config: ModelConfig, batch: HostBatch): Int32Array {
  const { size, seqLen, attentionMask } = batch;
  const out = new Int32Array(size * seqLen);
  for (let b = 0; b < size; b++) {
    let count = 0;
    for (let i = 0; i < seqLen; i++) {
      const k = b * seqLen + i;
      if (config.modelType === "bert") out[k] = i;
      else out[k] = attentionMask[k] ? config.padTokenId + ++count : config.padTokenId;
    }
  }
  return out;
}

/** Label value of a token that is not predicted (Hugging Face's convention). */
export const IGNORE_INDEX = -100;

/** Whether `labels` has one value per token (MLM) rather than one per example. */
export function isTokenLabelled(labels: Float32Array, batch: HostBatch): boolean {
  return labels.length === batch.size * batch.seqLen && labels.length !== batch.size;
}

/**
 * Checks a micro-batch's labels against the objective — one per example to
 * classify, one per token with at least one predicted token for MLM — and
 * throws an Error that says what is wrong. The one label check: the worker,
 * the engine and the tfjs path all call it.
 */
export function checkLabels(labels: Float32Array, batch: HostBatch, objective: Objective): void {
  if (objective === "mlm") {
    const n = batch.size * batch.seqLen;
    if (labels.length !== n) {
      throw new Error(`an MLM task needs one label per token (${n}), got ${labels.length}`);
    }
    if (!labels.some((l) => l !== IGNORE_INDEX)) {
      throw new Error("an MLM task needs at least one labelled token");
    }
  } else if (labels.length !== batch.size) {
    throw new Error(
      `a classification task needs one label per example (${batch.size}), got ${labels.length}`,
    );
  }
}

/**
 * n_j of a micro-batch: how many items its mean loss averages over — its
 * examples, or for MLM its predicted tokens — so that Σ n_j·loss_j / Σ n_j
 * is the mean over the whole global batch.
 */
export function lossItems(labels: Float32Array, batch: HostBatch): number {
  if (!isTokenLabelled(labels, batch)) return batch.size;
  let n = 0;
  for (const l of labels) if (l !== IGNORE_INDEX) n++;
  return n;
}

/** The labelled tokens of an MLM batch: flat positions into [B·L] and their original ids. */
export interface MaskedTokens {
  readonly positions: Int32Array;
  readonly ids: Int32Array;
}

/** The tokens of `labels` (one per token) that are predicted: every value but IGNORE_INDEX. */
export function maskedTokens(labels: Float32Array): MaskedTokens {
  const positions: number[] = [], ids: number[] = [];
  labels.forEach((l, i) => {
    if (l !== IGNORE_INDEX) {
      positions.push(i);
      ids.push(l);
    }
  });
  return { positions: Int32Array.from(positions), ids: Int32Array.from(ids) };
}
