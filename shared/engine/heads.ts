/**
 * The heads on top of the encoder, forward and backward over a
 * {@link Device}, with their losses (shared/tfjs/model.ts `classify`, `meanLoss`,
 * `mlmLogits` and `objectiveLoss` are the tfjs forms):
 *
 *   classifier (first token f):  BERT     logits = Wc·DropH0(tanh(Wp·f + bp)) + bc
 *                                RoBERTa  logits = Wo·DropH1(tanh(Wd·DropH0(f) + bd)) + bo
 *   loss: mean cross-entropy, or mean squared error when numLabels = 1
 *   masked LM (rows at labelled positions):  logits = LN(GELU(Wt·h + bt))·wordᵀ + bias,
 *   loss: mean cross-entropy over the labelled positions
 *
 * Both shapes are one pattern: pre = f (BERT) or DropH0(f) (RoBERTa);
 * t = tanh(pre·Wdᵀ + bd); post = t·mask; logits = post·Woᵀ + bo.
 *
 * @module
 */
import type { ModelConfig } from "../model/config.ts";
import type { ParamLayout } from "../model/param_layout.ts";
import type { Device, NormState, PassPart } from "./device.ts";
import { paramView } from "./encoder.ts";

/** The classifier's two dense layers (weights, or their gradients). */
export interface ClassifierParams<T> {
  readonly denseW: T;
  readonly denseB: T;
  readonly outW: T;
  readonly outB: T;
}

/**
 * Where the classifier's gradients go: the dense layer's may be null (a LoRA
 * model whose BERT pooler is frozen: its weight-gradient product is skipped).
 */
export interface ClassifierGrads<T> {
  readonly denseW: T | null;
  readonly denseB: T | null;
  readonly outW: T;
  readonly outB: T;
}

/** Views of the classifier head's tensors in `flat` (weights or gradients, layout order). */
export function classifierParams<T>(
  dev: Device<T>,
  config: ModelConfig,
  layout: ParamLayout,
  flat: T,
): ClassifierParams<T> {
  const P = (n: string) => paramView(dev, layout, flat, n);
  if (config.modelType === "bert") {
    return {
      denseW: P("bert.pooler.dense.weight"),
      denseB: P("bert.pooler.dense.bias"),
      outW: P("classifier.weight"),
      outB: P("classifier.bias"),
    };
  }
  return {
    denseW: P("classifier.dense.weight"),
    denseB: P("classifier.dense.bias"),
    outW: P("classifier.out_proj.weight"),
    outB: P("classifier.out_proj.bias"),
  };
}

/** The classifier head's dropout multipliers for one task: [B, H] each, null at rate 0. */
export interface ClassifierMasks<T> {
  /** RoBERTa's dropout on the first token (BERT: null). */
  readonly pre: T | null;
  /** The dropout after tanh (BERT's on the pooled vector, RoBERTa's second). */
  readonly post: T | null;
}

/** The classifier head's buffers for a batch of `size` examples. */
export class ClassifierBuffers<T> {
  readonly firstRows: Int32Array;
  readonly pre: T;
  readonly t: T;
  readonly post: T;
  readonly logits: T;
  readonly dlogits: T;
  readonly dpost: T;
  readonly dpre: T;

  /** `compact`: the encoder's output holds only the first positions ([B, H]), else [B·L, H]. */
  constructor(
    dev: Device<T>,
    config: ModelConfig,
    readonly size: number,
    seqLen: number,
    compact: boolean,
  ) {
    const H = config.hiddenSize, C = config.numLabels;
    this.firstRows = Int32Array.from({ length: size }, (_, b) => compact ? b : b * seqLen);
    this.pre = dev.alloc(size * H);
    this.t = dev.alloc(size * H);
    this.post = dev.alloc(size * H);
    this.logits = dev.alloc(size * C);
    this.dlogits = dev.alloc(size * C);
    this.dpost = dev.alloc(size * H);
    this.dpre = dev.alloc(size * H);
  }
}

/** Targets of a classification batch: class ids, or scores for regression (numLabels 1). */
export interface ClassifierTargets {
  readonly classes: Int32Array;
  readonly scores: Float32Array;
}

/** One pass's classifier head: its weights, buffers and dropout masks. */
export interface ClassifierPass<T> extends PassPart<T, ClassifierParams<T>, ClassifierBuffers<T>> {
  readonly masks: ClassifierMasks<T>;
}

/** The classifier's logits (`bufs.logits`) from the last hidden states ([N, H] or [B, H]). */
export function classifierForward<T>(pass: ClassifierPass<T>, last: T): void {
  const { dev, config, w, bufs, masks } = pass;
  const H = config.hiddenSize, C = config.numLabels, B = bufs.size;
  dev.gatherRows(last, bufs.firstRows, H, bufs.pre);
  if (masks.pre) dev.mul(bufs.pre, masks.pre, bufs.pre);
  dev.gemm(false, true, B, H, H, 1, bufs.pre, H, w.denseW, H, 0, bufs.t, H);
  dev.biasTanh(bufs.t, w.denseB, B, H);
  const post = masks.post ? bufs.post : bufs.t;
  if (masks.post) dev.mul(bufs.t, masks.post, post);
  dev.gemm(false, true, B, C, H, 1, post, H, w.outW, H, 0, bufs.logits, C);
  dev.addBias(bufs.logits, w.outB, B, C);
}

/** Adds `weight`·(mean loss) to loss[0] and, with `dlogits`, fills `bufs.dlogits`. */
export function classifierLoss<T>(
  pass: ClassifierPass<T>,
  targets: ClassifierTargets,
  loss: T,
  weight: number,
  withGrad: boolean,
): void {
  const { dev, config, bufs } = pass;
  const d = withGrad ? bufs.dlogits : null;
  if (config.numLabels === 1) {
    dev.meanSquaredError(bufs.logits, targets.scores, bufs.size, loss, weight, d);
  } else {
    dev.crossEntropy(bufs.logits, targets.classes, bufs.size, config.numLabels, loss, weight, d);
  }
}

/**
 * From `bufs.dlogits` to ∂loss/∂(last hidden states) in `dLast` ([N, H] or
 * [B, H], overwritten: zero except at the first tokens); head gradients accumulate
 * into `grads` unless it is null.
 */
export function classifierBackward<T>(
  pass: ClassifierPass<T>,
  dLast: T,
  grads: ClassifierGrads<T> | null,
): void {
  const { dev, config, w, bufs, masks } = pass;
  const H = config.hiddenSize, C = config.numLabels, B = bufs.size;
  const post = masks.post ? bufs.post : bufs.t;
  if (grads) {
    dev.colSum(bufs.dlogits, B, C, grads.outB);
    dev.gemm(true, false, C, H, B, 1, bufs.dlogits, C, post, H, 1, grads.outW, H);
  }
  dev.gemm(false, false, B, H, C, 1, bufs.dlogits, C, w.outW, H, 0, bufs.dpost, H);
  if (masks.post) dev.mul(bufs.dpost, masks.post, bufs.dpost);
  dev.tanhBackward(bufs.dpost, bufs.t, grads?.denseB ?? null, B, H);
  if (grads?.denseW) {
    dev.gemm(true, false, H, H, B, 1, bufs.dpost, H, bufs.pre, H, 1, grads.denseW, H);
  }
  dev.gemm(false, false, B, H, H, 1, bufs.dpost, H, w.denseW, H, 0, bufs.dpre, H);
  if (masks.pre) dev.mul(bufs.dpre, masks.pre, bufs.dpre);
  dev.fill(dLast, 0);
  dev.scatterRows(bufs.dpre, bufs.firstRows, H, dLast);
}

/** The masked-LM head's own tensors (weights or gradients); the decoder is the word embeddings. */
export interface MlmParams<T> {
  readonly denseW: T;
  readonly denseB: T;
  readonly lnG: T;
  readonly lnB: T;
  readonly bias: T;
}

/** Views of the MLM head's tensors in `flat`. */
export function mlmParams<T>(dev: Device<T>, layout: ParamLayout, flat: T): MlmParams<T> {
  const P = (n: string) => paramView(dev, layout, flat, `cls.predictions.${n}`);
  return {
    denseW: P("transform.dense.weight"),
    denseB: P("transform.dense.bias"),
    lnG: P("transform.LayerNorm.weight"),
    lnB: P("transform.LayerNorm.bias"),
    bias: P("bias"),
  };
}

/** The labelled positions of an MLM batch (flat indices into B·L) and their token ids. */
export interface MlmTargets {
  readonly positions: Int32Array;
  readonly ids: Int32Array;
}

/**
 * The MLM head's buffers for up to `capacity` labelled positions; {@link
 * MlmBuffers.rows} views the first M rows of each.
 */
export class MlmBuffers<T> {
  readonly #x: T;
  readonly #g: T;
  readonly #deriv: T;
  readonly #t: T;
  readonly #mean: T;
  readonly #rstd: T;
  readonly #logits: T;
  readonly #dt: T;

  constructor(
    private readonly dev: Device<T>,
    private readonly config: ModelConfig,
    readonly capacity: number,
  ) {
    const H = config.hiddenSize, V = config.vocabSize, M = capacity;
    this.#x = dev.alloc(M * H);
    this.#g = dev.alloc(M * H);
    this.#deriv = dev.alloc(M * H);
    this.#t = dev.alloc(M * H);
    this.#mean = dev.alloc(M);
    this.#rstd = dev.alloc(M);
    this.#logits = dev.alloc(M * V);
    this.#dt = dev.alloc(M * H);
  }

  /** Frees the buffers. */
  dispose(): void {
    for (const b of [this.#x, this.#g, this.#deriv, this.#t, this.#mean, this.#rstd]) {
      this.dev.release(b);
    }
    this.dev.release(this.#logits);
    this.dev.release(this.#dt);
  }

  /** Views for M rows (M ≤ capacity). */
  rows(M: number) {
    if (M > this.capacity) throw new Error(`MLM buffers hold ${this.capacity} rows, asked ${M}`);
    const H = this.config.hiddenSize, V = this.config.vocabSize, d = this.dev;
    const v = (t: T, w: number) => d.view(t, 0, M * w);
    return {
      x: v(this.#x, H),
      g: v(this.#g, H),
      deriv: v(this.#deriv, H),
      t: v(this.#t, H),
      mean: v(this.#mean, 1),
      rstd: v(this.#rstd, 1),
      /** The logits, then (in place) their gradient. */
      logits: v(this.#logits, V),
      dt: v(this.#dt, H),
    };
  }
}

/** The MLM head's LayerNorm (after the GELU) over M rows. */
function mlmNorm<T>(
  b: ReturnType<MlmBuffers<T>["rows"]>,
  w: MlmParams<T>,
  rows: number,
  cols: number,
): NormState<T> {
  return { x: b.g, gamma: w.lnG, mean: b.mean, rstd: b.rstd, rows, cols };
}

/** One pass's MLM head: its weights and buffers, the word embeddings (the tied decoder), the targets. */
export interface MlmPass<T> extends PassPart<T, MlmParams<T>, MlmBuffers<T>> {
  readonly word: T;
  readonly targets: MlmTargets;
}

/** MLM logits, loss (`weight`·mean added to loss[0]) and, with `withGrad`, the logits' gradient. */
export function mlmForwardLoss<T>(
  pass: MlmPass<T>,
  last: T,
  loss: T,
  weight: number,
  withGrad: boolean,
): void {
  const { dev, config, w, word, bufs, targets } = pass;
  const H = config.hiddenSize, V = config.vocabSize, M = targets.positions.length;
  const b = bufs.rows(M);
  dev.gatherRows(last, targets.positions, H, b.x);
  dev.gemm(false, true, M, H, H, 1, b.x, H, w.denseW, H, 0, b.g, H);
  dev.biasGelu(b.g, w.denseB, b.g, withGrad ? b.deriv : null, M, H);
  dev.layerNorm(mlmNorm(b, w, M, H), w.lnB, b.t, config.layerNormEps);
  dev.gemm(false, true, M, V, H, 1, b.t, H, word, H, 0, b.logits, V);
  dev.addBias(b.logits, w.bias, M, V);
  dev.crossEntropy(b.logits, targets.ids, M, V, loss, weight, withGrad ? b.logits : null);
}

/**
 * From the logits' gradient (left by {@link mlmForwardLoss}) to ∂loss/∂(last
 * hidden states) in `dLast` (overwritten); the head's gradients and the tied
 * decoder's (into `dword`, dense over the vocabulary) accumulate unless
 * `grads` is null.
 */
export function mlmBackward<T>(
  pass: MlmPass<T>,
  dLast: T,
  grads: MlmParams<T> | null,
  dword: T | null,
): void {
  const { dev, config, w, word, bufs, targets } = pass;
  const H = config.hiddenSize, V = config.vocabSize, M = targets.positions.length;
  const b = bufs.rows(M);
  const dlogits = b.logits;
  if (grads) dev.colSum(dlogits, M, V, grads.bias);
  if (dword) dev.gemm(true, false, V, H, M, 1, dlogits, V, b.t, H, 1, dword, H);
  dev.gemm(false, false, M, H, V, 1, dlogits, V, word, H, 0, b.dt, H);
  dev.layerNormBackward(mlmNorm(b, w, M, H), b.dt, b.dt, grads?.lnG ?? null, grads?.lnB ?? null);
  dev.geluBackward(b.dt, b.deriv, grads?.denseB ?? null, M, H);
  if (grads) dev.gemm(true, false, H, H, M, 1, b.dt, H, b.x, H, 1, grads.denseW, H);
  dev.fill(dLast, 0);
  // dLast rows at the positions: dt·W (each position appears once).
  dev.gemm(false, false, M, H, H, 1, b.dt, H, w.denseW, H, 0, b.g, H);
  dev.scatterRows(b.g, targets.positions, H, dLast);
}
