/**
 * A tiny BERT (or RoBERTa) with seeded random weights and a seeded batch,
 * shared by the numerical tests. Weights are drawn wider than the HF init so
 * that every path carries a visible gradient.
 */
import { type ModelConfig, parseModelConfig } from "../../shared/model/config.ts";
import { type ParamLayout, paramLayout } from "../../shared/model/param_layout.ts";
import type { LabelledBatch } from "../../shared/model/batch.ts";
import { Rng } from "../../shared/method/rng.ts";

export interface Tiny {
  config: ModelConfig;
  layout: ParamLayout;
  weights: Float32Array;
  batch: LabelledBatch;
}

/** The tiny model's shape in config.json terms (shared with the checkpoint tests' model). */
export const TINY_SHAPE = {
  hidden_size: 8,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  intermediate_size: 16,
  max_position_embeddings: 32,
  type_vocab_size: 2,
} as const;

/** The tiny model's config.json (dropout off). */
export const TINY_HF_CONFIG = {
  model_type: "bert",
  vocab_size: 40,
  ...TINY_SHAPE,
  layer_norm_eps: 1e-12,
  hidden_dropout_prob: 0,
  attention_probs_dropout_prob: 0,
  pad_token_id: 0,
  num_labels: 3,
} as const;

export function tinyConfig(over: Record<string, unknown> = {}): ModelConfig {
  return parseModelConfig({ ...TINY_HF_CONFIG, ...over });
}

export function tinyWeights(layout: ParamLayout, seed = 1, scale = 0.3): Float32Array {
  const rng = new Rng(seed);
  const w = new Float32Array(layout.total);
  for (const s of layout.specs) {
    const ln = s.name.includes("LayerNorm.weight");
    for (let i = 0; i < s.size; i++) w[s.offset + i] = (ln ? 1 : 0) + scale * rng.normal();
  }
  return w;
}

/** B examples of length L with varying padding (every example keeps ≥ 2 real tokens). */
export function tinyBatch(config: ModelConfig, B = 3, L = 6, seed = 2): LabelledBatch {
  const rng = new Rng(seed);
  const inputIds = new Int32Array(B * L), tokenTypeIds = new Int32Array(B * L);
  const attentionMask = new Uint8Array(B * L);
  const labels = new Float32Array(B);
  for (let b = 0; b < B; b++) {
    const len = L - (b % 3);
    for (let i = 0; i < L; i++) {
      const k = b * L + i;
      if (i < len) {
        inputIds[k] = 2 + rng.int(config.vocabSize - 2);
        tokenTypeIds[k] = i >= len / 2 ? 1 : 0;
        attentionMask[k] = 1;
      } else inputIds[k] = config.padTokenId;
    }
    labels[b] = config.numLabels === 1 ? rng.normal() : rng.int(config.numLabels);
  }
  return { inputIds, tokenTypeIds, attentionMask, labels, size: B, seqLen: L };
}

export function tiny(over: Record<string, unknown> = {}, B = 3, L = 6): Tiny {
  const config = tinyConfig(over);
  const layout = paramLayout(config);
  return { config, layout, weights: tinyWeights(layout), batch: tinyBatch(config, B, L) };
}

/**
 * `perTensor` coordinates of every tensor drawn from Rng(`seed`), plus the
 * first coordinate of one word-embedding row the batch never uses.
 */
export function sampleCoordinates(t: Tiny, perTensor: number, seed: number): number[] {
  const rng = new Rng(seed);
  const out: number[] = [];
  for (const s of t.layout.specs) {
    for (let k = 0; k < perTensor; k++) out.push(s.offset + rng.int(s.size));
  }
  const used = new Set(t.batch.inputIds);
  const unused = [...Array(t.config.vocabSize).keys()].find((v) => !used.has(v))!;
  out.push(t.layout.specs[0].offset + unused * t.config.hiddenSize);
  return out;
}
