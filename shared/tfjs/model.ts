/**
 * The BERT / RoBERTa encoder with its sequence-classification head, as plain
 * tfjs ops over a record of weight tensors keyed by Hugging Face names.
 * One forward pass, top to bottom (docs/model-and-data.md, "The forward pass"):
 *
 *   E = word[x]                       (the word embeddings the adversary perturbs)
 *   h = LayerNorm(E + δ + position[p] + token_type[t])
 *   per layer: h = LN(h + Drop(Wo·Attn(h))); h = LN(h + Drop(W2·GELU(W1·h)))
 *   BERT:    logits = Wc·Drop(tanh(Wp·h[CLS]))
 *   RoBERTa: logits = Wout·Drop(tanh(Wd·Drop(h[<s>])))
 *
 * A LoRA model (shared/model/lora.ts) is the same function with the adapters'
 * tensors in the record (`<module>.lora_A.weight`, `…lora_B.weight`): every
 * encoder linear layer that has them adds (Drop(x)·Aᵀ)·Bᵀ·(α/r), see {@link LoraRun}.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { HostBatch } from "../model/batch.ts";
import type { ModelConfig } from "../model/config.ts";
import type { ParamLayout } from "../model/param_layout.ts";
import { dropout, gelu, layerNorm, linear, matMul } from "./ops.ts";
import { dropoutSite } from "../method/dropout_mask.ts";
import { loraDropoutSite, type LoraModule, type LoraPlan } from "../model/lora.ts";
import { isTokenLabelled, maskedTokens, positionIds } from "../model/targets.ts";

/** Weight tensors by Hugging Face name. */
export type Weights = Readonly<Record<string, tf.Tensor>>;

/** A model ready to run: config, layout and weights on the device. */
export interface DeviceModel {
  readonly config: ModelConfig;
  readonly layout: ParamLayout;
  readonly weights: Weights;
  /**
   * LoRA: `weights` are the frozen base, and these (by `plan.layout` name:
   * adapters and head, see `weightTensors(plan.layout, trainable)`) are what
   * trains; their head tensors replace the base's.
   */
  readonly lora?: { readonly plan: LoraPlan; readonly weights: Weights } | null;
}

/** How a pass runs the LoRA adapters found in its weights: α/r, and the dropout on their input. */
export interface LoraRun {
  readonly scale: number;
  /** Dropout rate on the adapters' input (0 in prediction). */
  readonly dropout: number;
}

/** One micro-batch on the device. All [B, L]. */
export interface BatchTensors {
  readonly inputIds: tf.Tensor2D;
  readonly tokenTypeIds: tf.Tensor2D;
  readonly positionIds: tf.Tensor2D;
  /** 1 at real tokens, 0 at padding (float32). */
  readonly mask: tf.Tensor2D;
}

/** Dropout rates and the seed every dropout mask derives from. */
export interface DropoutConfig {
  readonly hidden: number;
  readonly attention: number;
  readonly seed: number;
}

/** No dropout: evaluation, prediction and exact checks. */
export const NO_DROPOUT: DropoutConfig = { hidden: 0, attention: 0, seed: 0 };

/** Uploads a host batch to the device. */
export function batchTensors(config: ModelConfig, batch: HostBatch): BatchTensors {
  const shape: [number, number] = [batch.size, batch.seqLen];
  return {
    inputIds: tf.tensor2d(batch.inputIds, shape, "int32"),
    tokenTypeIds: tf.tensor2d(batch.tokenTypeIds, shape, "int32"),
    positionIds: tf.tensor2d(positionIds(config, batch), shape, "int32"),
    mask: tf.tensor2d(Float32Array.from(batch.attentionMask), shape, "float32"),
  };
}

/** Uploads flat host weights as one tensor per parameter. */
export function weightTensors(layout: ParamLayout, flat: Float32Array): Record<string, tf.Tensor> {
  const out: Record<string, tf.Tensor> = {};
  for (const s of layout.specs) {
    out[s.name] = tf.tensor(flat.subarray(s.offset, s.offset + s.size), [...s.shape], "float32");
  }
  return out;
}

/** E(x): the word-embedding lookup, [B, L, H]. */
export function wordEmbeddings(config: ModelConfig, w: Weights, batch: BatchTensors): tf.Tensor3D {
  return tf.gather(
    w[`${config.modelType}.embeddings.word_embeddings.weight`],
    batch.inputIds,
  ) as tf.Tensor3D;
}

/** Splits [B, L, H] into heads [B·nh, L, hd]. */
function heads(x: tf.Tensor, B: number, L: number, nh: number, hd: number): tf.Tensor {
  return tf.reshape(tf.transpose(tf.reshape(x, [B, L, nh, hd]), [0, 2, 1, 3]), [B * nh, L, hd]);
}

/**
 * The encoder from given word embeddings (E + δ) to the last hidden states [B, L, H].
 * Dropout masks derive from `drop.seed` and the call site (shared/method/dropout_mask.ts), so a
 * pass is reproducible and the same on every backend.
 */
export function encode(
  config: ModelConfig,
  w: Weights,
  batch: BatchTensors,
  words: tf.Tensor3D,
  drop: DropoutConfig,
  lora: LoraRun | null = null,
): tf.Tensor3D {
  const p = config.modelType;
  const [B, L, H] = words.shape;
  const nh = config.numHeads, hd = H / nh, eps = config.layerNormEps;
  const hidden = (x: tf.Tensor, site: number) => dropout(x, drop.hidden, drop.seed, site);
  const pre = `${p}.embeddings`;
  let h: tf.Tensor = tf.addN([
    words,
    tf.gather(w[`${pre}.position_embeddings.weight`], batch.positionIds),
    tf.gather(w[`${pre}.token_type_embeddings.weight`], batch.tokenTypeIds),
  ]);
  h = hidden(
    layerNorm(h, w[`${pre}.LayerNorm.weight`], w[`${pre}.LayerNorm.bias`], eps),
    dropoutSite({ at: "embedding" }),
  );
  // Additive key mask, [B·nh, 1, L]: 0 at real tokens, a large negative at padding.
  const keyMask = tf.reshape(
    tf.tile(tf.reshape(tf.mul(tf.sub(1, batch.mask), -1e9), [B, 1, 1, L]), [1, nh, 1, 1]),
    [B * nh, 1, L],
  );
  for (let l = 0; l < config.numLayers; l++) {
    const n = `${p}.encoder.layer.${l}`;
    const W = (s: string) => w[`${n}.${s}.weight`], b = (s: string) => w[`${n}.${s}.bias`];
    /** The linear layer `s`, plus its LoRA term when the weights carry one. */
    const dense = (x: tf.Tensor, s: LoraModule) => {
      const y = linear(x, W(s), b(s));
      const A = w[`${n}.${s}.lora_A.weight`], Bm = w[`${n}.${s}.lora_B.weight`];
      if (!A || !Bm || !lora) return y;
      const xd = dropout(x, lora.dropout, drop.seed, loraDropoutSite(l, s));
      const inDim = x.shape[x.rank - 1];
      const u = matMul(tf.reshape(xd, [-1, inDim]), A, true);
      const delta = tf.mul(matMul(u, Bm, true), lora.scale);
      return tf.add(y, tf.reshape(delta, y.shape));
    };
    const q = heads(dense(h, "attention.self.query"), B, L, nh, hd);
    const k = heads(dense(h, "attention.self.key"), B, L, nh, hd);
    const v = heads(dense(h, "attention.self.value"), B, L, nh, hd);
    const scores = tf.add(tf.mul(matMul(q, k, true), 1 / Math.sqrt(hd)), keyMask);
    const site = dropoutSite({ at: "attention", layer: l });
    const probs = dropout(tf.softmax(scores), drop.attention, drop.seed, site);
    const ctx = tf.reshape(
      tf.transpose(tf.reshape(matMul(probs, v), [B, nh, L, hd]), [0, 2, 1, 3]),
      [B, L, H],
    );
    const attn = hidden(
      dense(ctx, "attention.output.dense"),
      dropoutSite({ at: "attentionOutput", layer: l }),
    );
    h = layerNorm(
      tf.add(h, attn),
      W("attention.output.LayerNorm"),
      b("attention.output.LayerNorm"),
      eps,
    );
    const inter = gelu(dense(h, "intermediate.dense"));
    const out = hidden(dense(inter, "output.dense"), dropoutSite({ at: "ffnOutput", layer: l }));
    h = layerNorm(tf.add(h, out), W("output.LayerNorm"), b("output.LayerNorm"), eps);
  }
  return h as tf.Tensor3D;
}

/** The classification (or regression) head on the first token: logits [B, numLabels]. */
export function classify(
  config: ModelConfig,
  w: Weights,
  sequence: tf.Tensor3D,
  drop: DropoutConfig,
): tf.Tensor2D {
  const [B, , H] = sequence.shape;
  const first = tf.reshape(tf.slice(sequence, [0, 0, 0], [B, 1, H]), [B, H]);
  // Head dropout sites are numbered after the encoder's (shared/method/dropout_mask.ts).
  const headDrop = (x: tf.Tensor, index: number) =>
    dropout(x, drop.hidden, drop.seed, dropoutSite({ at: "head", index }));
  if (config.modelType === "bert") {
    const pooled = tf.tanh(
      linear(first, w["bert.pooler.dense.weight"], w["bert.pooler.dense.bias"]),
    );
    const x = headDrop(pooled, 0);
    return linear(x, w["classifier.weight"], w["classifier.bias"]) as tf.Tensor2D;
  }
  let x = headDrop(first, 0);
  x = tf.tanh(linear(x, w["classifier.dense.weight"], w["classifier.dense.bias"]));
  x = headDrop(x, 1);
  return linear(x, w["classifier.out_proj.weight"], w["classifier.out_proj.bias"]) as tf.Tensor2D;
}

/** Logits of the whole model, with the word embeddings perturbed by `delta` when given. */
export function forward(
  config: ModelConfig,
  w: Weights,
  batch: BatchTensors,
  delta: tf.Tensor3D | null,
  drop: DropoutConfig,
  lora: LoraRun | null = null,
): tf.Tensor2D {
  const e = wordEmbeddings(config, w, batch);
  const words = delta ? tf.add(e, delta) as tf.Tensor3D : e;
  return classify(config, w, encode(config, w, batch, words, drop, lora), drop);
}

/**
 * The weights a pass reads: the base's, or for a LoRA model the base's with
 * the trainable tensors `trainable` (by trainable-layout name) added and
 * their head tensors in place of the base's.
 */
export function passWeights(model: DeviceModel, trainable?: Weights): Weights {
  if (!model.lora) return model.weights;
  return { ...model.weights, ...(trainable ?? model.lora.weights) };
}

/**
 * Mean loss over the batch: cross-entropy for classification, squared error
 * for regression (numLabels = 1). `labels` holds class ids or target scores.
 */
export function meanLoss(config: ModelConfig, logits: tf.Tensor2D, labels: tf.Tensor1D): tf.Scalar {
  if (config.numLabels === 1) {
    return tf.mean(tf.square(tf.sub(tf.reshape(logits, [-1]), labels))) as tf.Scalar;
  }
  const oneHot = tf.oneHot(tf.cast(labels, "int32"), config.numLabels);
  return tf.neg(tf.mean(tf.sum(tf.mul(tf.logSoftmax(logits), oneHot), -1))) as tf.Scalar;
}

/**
 * Masked-LM logits [M, vocab] at flat positions (into B·L) of the sequence:
 * transform = LN(GELU(dense(h))), then the decoder tied to the word
 * embeddings plus `cls.predictions.bias`.
 */
export function mlmLogits(
  config: ModelConfig,
  w: Weights,
  sequence: tf.Tensor3D,
  positions: tf.Tensor1D,
): tf.Tensor2D {
  const H = config.hiddenSize;
  const h = tf.gather(tf.reshape(sequence, [-1, H]), positions);
  const pre = "cls.predictions";
  const t = layerNorm(
    gelu(linear(h, w[`${pre}.transform.dense.weight`], w[`${pre}.transform.dense.bias`])),
    w[`${pre}.transform.LayerNorm.weight`],
    w[`${pre}.transform.LayerNorm.bias`],
    config.layerNormEps,
  );
  const word = w[`${config.modelType}.embeddings.word_embeddings.weight`];
  return tf.add(matMul(t, word, true), w[`${pre}.bias`]) as tf.Tensor2D;
}

/** What a loss compares against: class ids / scores, or masked token ids at positions. */
export type Targets =
  | { readonly kind: "classify"; readonly labels: tf.Tensor1D }
  | { readonly kind: "mlm"; readonly positions: tf.Tensor1D; readonly ids: tf.Tensor1D };

/**
 * Uploads targets: `labels` has one value per example (classification), or
 * one per token (MLM: the original id at masked positions, IGNORE_INDEX elsewhere).
 */
export function targetTensors(labels: Float32Array, batch: HostBatch): Targets {
  if (!isTokenLabelled(labels, batch)) {
    return { kind: "classify", labels: tf.tensor1d(labels, "float32") };
  }
  const { positions, ids } = maskedTokens(labels);
  return {
    kind: "mlm",
    positions: tf.tensor1d(positions, "int32"),
    ids: tf.tensor1d(ids, "int32"),
  };
}

/** The mean loss of the objective, with the word embeddings perturbed by `delta` when given. */
export function objectiveLoss(
  config: ModelConfig,
  w: Weights,
  batch: BatchTensors,
  delta: tf.Tensor3D | null,
  drop: DropoutConfig,
  targets: Targets,
  lora: LoraRun | null = null,
): tf.Scalar {
  const e = wordEmbeddings(config, w, batch);
  const words = delta ? tf.add(e, delta) as tf.Tensor3D : e;
  const sequence = encode(config, w, batch, words, drop, lora);
  if (targets.kind === "classify") {
    return meanLoss(config, classify(config, w, sequence, drop), targets.labels);
  }
  const logits = mlmLogits(config, w, sequence, targets.positions);
  const picked = tf.sum(
    tf.mul(tf.logSoftmax(logits), tf.oneHot(targets.ids, config.vocabSize)),
    -1,
  );
  return tf.neg(tf.mean(picked)) as tf.Scalar;
}

/** Logits [size·numLabels] of a host batch, without dropout or perturbation. */
export async function predictLogits(model: DeviceModel, batch: HostBatch): Promise<Float32Array> {
  const bt = batchTensors(model.config, batch);
  try {
    const lora = model.lora ? { scale: model.lora.plan.scale, dropout: 0 } : null;
    const logits = tf.tidy(() =>
      forward(model.config, passWeights(model), bt, null, NO_DROPOUT, lora)
    );
    const out = await logits.data() as Float32Array;
    logits.dispose();
    return out;
  } finally {
    for (const t of Object.values(bt)) t.dispose();
  }
}
