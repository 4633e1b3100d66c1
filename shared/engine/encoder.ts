/**
 * The encoder's forward and backward passes over a {@link Device}: the
 * embeddings (E + δ + position + token type, LayerNorm, dropout) and the
 * transformer layers, written out op by op (docs/model-and-data.md, "The forward
 * pass"; shared/tfjs/model.ts is the tfjs form of the same function):
 *
 *   x0 = word[x] + δ + pos[p] + type[t];   h0 = Drop0(LN(x0))
 *   per layer: qkv = h·Wqkvᵀ + b;  ctx = Attn(qkv);  r1 = h + DropA(ctx·Woᵀ + bo);  h1 = LN(r1)
 *              g = GELU(h1·W1ᵀ + b1);  r2 = h1 + DropF(g·W2ᵀ + b2);  h' = LN(r2)
 *
 * The backward walks the same list in reverse; with `grads` null it forms
 * only the activation gradients (the adversary's δ-only pass, and every pass
 * of a LoRA model, whose frozen weights get no gradient: their weight-gradient
 * products are skipped). LoRA adapters (shared/engine/lora.ts) add their
 * low-rank terms to the adapted products, forward and backward.
 *
 * @module
 */
import type { ModelConfig } from "../model/config.ts";
import type { ParamLayout } from "../model/param_layout.ts";
import type { AttentionShape, BatchIndex, Device, NormState, PassPart } from "./device.ts";
import {
  loraBackward,
  type LoraBuffers,
  loraForward,
  type LoraUse,
  loraUse,
  type LoraWeights,
} from "./lora.ts";
import { LORA_MODULES, type LoraModule } from "../model/lora.ts";

/** One layer's parameters after Q, K and V (weights or their gradients). */
export interface LayerTail<T> {
  readonly oW: T;
  readonly oB: T;
  readonly ln1G: T;
  readonly ln1B: T;
  readonly iW: T;
  readonly iB: T;
  readonly fW: T;
  readonly fB: T;
  readonly ln2G: T;
  readonly ln2B: T;
}

/** One layer's weights as the passes read them: Q, K, V packed into one [3H, H] matrix. */
export interface LayerWeights<T> extends LayerTail<T> {
  readonly qkvW: T;
  readonly qkvB: T;
}

/** One layer's gradients: views into the flat gradient, in layout order. */
export interface LayerGrads<T> extends LayerTail<T> {
  readonly qW: T;
  readonly qB: T;
  readonly kW: T;
  readonly kB: T;
  readonly vW: T;
  readonly vB: T;
}

/** Embedding tables and LayerNorm (weights or their gradients). */
export interface EmbeddingParams<T> {
  readonly word: T;
  readonly pos: T;
  readonly type: T;
  readonly lnG: T;
  readonly lnB: T;
}

/** The encoder's weights. */
export interface EncoderWeights<T> extends EmbeddingParams<T> {
  readonly layers: readonly LayerWeights<T>[];
}

/** The encoder's gradients. */
export interface EncoderGrads<T> extends EmbeddingParams<T> {
  readonly layers: readonly LayerGrads<T>[];
}

/** Dropout multipliers of one task (null where the rate is 0), reused by every pass. */
export interface EncoderMasks<T> {
  readonly embedding: T | null;
  readonly layers: readonly {
    readonly attention: T | null;
    readonly attentionOut: T | null;
    readonly ffnOut: T | null;
  }[];
}

/** The tensor `name` of the layout as a view of `flat`. */
export function paramView<T>(dev: Device<T>, layout: ParamLayout, flat: T, name: string): T {
  const s = layout.byName.get(name);
  if (!s) throw new Error(`native engine: the layout has no parameter ${name}`);
  return dev.view(flat, s.offset, s.size);
}

function layerName(config: ModelConfig, l: number, s: string): string {
  return `${config.modelType}.encoder.layer.${l}.${s}`;
}

function embeddingParams<T>(
  dev: Device<T>,
  config: ModelConfig,
  layout: ParamLayout,
  flat: T,
): EmbeddingParams<T> {
  const P = (s: string) => paramView(dev, layout, flat, `${config.modelType}.embeddings.${s}`);
  return {
    word: P("word_embeddings.weight"),
    pos: P("position_embeddings.weight"),
    type: P("token_type_embeddings.weight"),
    lnG: P("LayerNorm.weight"),
    lnB: P("LayerNorm.bias"),
  };
}

/** One layer's parameters after Q, K and V (weights or gradients alike), through `P` (name → view). */
function layerTail<T>(P: (s: string) => T): LayerTail<T> {
  return {
    oW: P("attention.output.dense.weight"),
    oB: P("attention.output.dense.bias"),
    ln1G: P("attention.output.LayerNorm.weight"),
    ln1B: P("attention.output.LayerNorm.bias"),
    iW: P("intermediate.dense.weight"),
    iB: P("intermediate.dense.bias"),
    fW: P("output.dense.weight"),
    fB: P("output.dense.bias"),
    ln2G: P("output.LayerNorm.weight"),
    ln2B: P("output.LayerNorm.bias"),
  };
}

/** Views of the encoder's gradients in the flat gradient `flat`. */
export function encoderGrads<T>(
  dev: Device<T>,
  config: ModelConfig,
  layout: ParamLayout,
  flat: T,
): EncoderGrads<T> {
  const layers: LayerGrads<T>[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    const P = (s: string) => paramView(dev, layout, flat, layerName(config, l, s));
    layers.push({
      qW: P("attention.self.query.weight"),
      qB: P("attention.self.query.bias"),
      kW: P("attention.self.key.weight"),
      kB: P("attention.self.key.bias"),
      vW: P("attention.self.value.weight"),
      vB: P("attention.self.value.bias"),
      ...layerTail(P),
    });
  }
  return { ...embeddingParams(dev, config, layout, flat), layers };
}

/**
 * The encoder's weights: views of `flat` (weights in layout order), except Q,
 * K, V, which are copied from the host weights `host` into packed [3H, H] and
 * [3H] buffers (`packed`, one pair per layer, allocated by the caller once).
 */
export function encoderWeights<T>(
  dev: Device<T>,
  config: ModelConfig,
  layout: ParamLayout,
  flat: T,
  host: Float32Array,
  packed: readonly { readonly w: T; readonly b: T }[],
): EncoderWeights<T> {
  const H = config.hiddenSize;
  const layers: LayerWeights<T>[] = [];
  const hostView = (name: string) => {
    const s = layout.byName.get(name)!;
    return host.subarray(s.offset, s.offset + s.size);
  };
  const w3 = new Float32Array(3 * H * H), b3 = new Float32Array(3 * H);
  for (let l = 0; l < config.numLayers; l++) {
    const N = (s: string) => layerName(config, l, s);
    ["query", "key", "value"].forEach((m, j) => {
      w3.set(hostView(N(`attention.self.${m}.weight`)), j * H * H);
      b3.set(hostView(N(`attention.self.${m}.bias`)), j * H);
    });
    dev.write(packed[l].w, w3);
    dev.write(packed[l].b, b3);
    const P = (s: string) => paramView(dev, layout, flat, N(s));
    layers.push({
      qkvW: packed[l].w,
      qkvB: packed[l].b,
      ...layerTail(P),
    });
  }
  return { ...embeddingParams(dev, config, layout, flat), layers };
}

/**
 * What one layer keeps from its forward pass for its backward. After the
 * attention a layer works on `rows` rows: every position (N), or under a
 * classifier the last layer only the first position of each example (B).
 */
interface LayerActs<T> {
  readonly rows: number;
  /** Whether only the first position of each example is computed after the attention. */
  readonly first: boolean;
  readonly qkv: T;
  readonly probs: T;
  readonly dropped: T;
  readonly ctx: T;
  /** The first positions of the layer's input (first-only layers). */
  readonly res: T;
  readonly r1: T;
  readonly mean1: T;
  readonly rstd1: T;
  readonly h1: T;
  readonly g: T;
  readonly deriv: T;
  readonly r2: T;
  readonly mean2: T;
  readonly rstd2: T;
  /** The layer's output (the next layer's input). */
  readonly out: T;
}

/** Backward scratch for layers of one row count. */
interface LayerScratch<T> {
  /** ∂/∂(LayerNorm inputs), [rows, H]. */
  readonly dr: T;
  readonly dBranch: T;
  readonly dInter: T;
  readonly dctx: T;
}

function layerActs<T>(
  dev: Device<T>,
  config: ModelConfig,
  B: number,
  L: number,
  attentionDropout: boolean,
  first: boolean,
): LayerActs<T> {
  const H = config.hiddenSize, I = config.intermediateSize, N = B * L;
  const M = first ? B : N, A = B * config.numHeads * L * (first ? 1 : L);
  const probs = dev.alloc(A);
  return {
    rows: M,
    first,
    qkv: dev.alloc(N * 3 * H),
    probs,
    dropped: attentionDropout ? dev.alloc(A) : probs,
    ctx: dev.alloc(M * H),
    res: dev.alloc(first ? M * H : 0),
    r1: dev.alloc(M * H),
    mean1: dev.alloc(M),
    rstd1: dev.alloc(M),
    h1: dev.alloc(M * H),
    g: dev.alloc(M * I),
    deriv: dev.alloc(M * I),
    r2: dev.alloc(M * H),
    mean2: dev.alloc(M),
    rstd2: dev.alloc(M),
    out: dev.alloc(M * H),
  };
}

function layerScratch<T>(dev: Device<T>, config: ModelConfig, M: number): LayerScratch<T> {
  const H = config.hiddenSize, I = config.intermediateSize;
  return {
    dr: dev.alloc(M * H),
    dBranch: dev.alloc(M * H),
    dInter: dev.alloc(M * I),
    dctx: dev.alloc(M * H),
  };
}

/**
 * The encoder's buffers for one batch shape (B, L): activations kept for the
 * backward and the backward's scratch, allocated once and reused by every
 * pass of that shape. With `firstOnly` (a classifier reads only the first
 * position of the last layer), the last layer computes only those B rows
 * after its attention: exactly the same outputs and gradients, less work.
 */
export class EncoderBuffers<T> {
  readonly rows: number;
  /** Row index (into B·L) of each example's first position. */
  readonly firstRows: Int32Array;
  readonly x0: T;
  readonly mean0: T;
  readonly rstd0: T;
  /** The embedding output (layer 0's input). */
  readonly h0: T;
  readonly layers: readonly LayerActs<T>[];
  /** Where the head puts ∂loss/∂(last hidden states): [B, H] first-only, else [N, H]. */
  readonly dLast: T;
  /** ∂/∂(a full layer's output), then ∂/∂(its input), [N, H]. */
  readonly dh: T;
  readonly full: LayerScratch<T>;
  readonly firstScratch: LayerScratch<T> | null;
  readonly dqkv: T;
  readonly dqkvBias: T;

  constructor(
    dev: Device<T>,
    config: ModelConfig,
    readonly size: number,
    readonly seqLen: number,
    attentionDropout: boolean,
    readonly firstOnly: boolean,
  ) {
    const H = config.hiddenSize, last = config.numLayers - 1;
    const N = this.rows = size * seqLen;
    this.firstRows = Int32Array.from({ length: size }, (_, b) => b * seqLen);
    this.x0 = dev.alloc(N * H);
    this.mean0 = dev.alloc(N);
    this.rstd0 = dev.alloc(N);
    this.h0 = dev.alloc(N * H);
    this.layers = Array.from(
      { length: config.numLayers },
      (_, l) => layerActs(dev, config, size, seqLen, attentionDropout, firstOnly && l === last),
    );
    this.dh = dev.alloc(N * H);
    this.full = layerScratch(dev, config, N);
    const pruned = firstOnly && last >= 0;
    this.firstScratch = pruned ? layerScratch(dev, config, size) : null;
    this.dLast = pruned ? dev.alloc(size * H) : this.dh;
    this.dqkv = dev.alloc(N * 3 * H);
    this.dqkvBias = dev.alloc(3 * H);
  }

  /** The last layer's output: [B, H] (first positions) when first-only, else [N, H]. */
  get last(): T {
    return this.layers.length ? this.layers[this.layers.length - 1].out : this.h0;
  }

  /** Whether {@link EncoderBuffers.last} holds only the first positions. */
  get lastIsFirstRows(): boolean {
    return this.layers.length > 0 && this.layers[this.layers.length - 1].first;
  }
}

/** LoRA adapters in a pass: their weights and their buffers for the batch. */
export interface EncoderLora<T> {
  readonly w: LoraWeights<T>;
  readonly bufs: LoraBuffers<T>;
}

/** One pass's encoder: its weights, and the buffers and dropout masks of the batch. */
export interface EncoderPass<T> extends PassPart<T, EncoderWeights<T>, EncoderBuffers<T>> {
  readonly masks: EncoderMasks<T>;
  readonly batch: BatchIndex;
  /** LoRA adapters on the frozen weights `w`, when the model has them. */
  readonly lora?: EncoderLora<T> | null;
}

/** The adapter of `module` in layer `l` of the pass, if any. */
function adapter<T>(pass: EncoderPass<T>, l: number, module: LoraModule): LoraUse<T> | null {
  return pass.lora ? loraUse(pass.lora.w, pass.lora.bufs, l, module) : null;
}

/** The shape of every attention call of a pass over `batch`. */
function attentionShape(config: ModelConfig, batch: BatchIndex): AttentionShape {
  return { batch, heads: config.numHeads, headDim: config.hiddenSize / config.numHeads };
}

/**
 * The forward pass from (E + δ) to the last hidden states (`bufs.last`).
 * `derivs` false skips what only the backward needs (GELU derivatives).
 */
export function encoderForward<T>(pass: EncoderPass<T>, delta: T | null, derivs: boolean): void {
  const { dev, config, w, bufs, masks, batch } = pass;
  const H = config.hiddenSize, I = config.intermediateSize, N = bufs.rows;
  const eps = config.layerNormEps;
  const shape = attentionShape(config, batch);
  dev.embed(bufs.x0, w.word, w.pos, w.type, delta, batch, H);
  dev.layerNorm(embeddingNorm(bufs, w, N, H), w.lnB, bufs.h0, eps);
  if (masks.embedding) dev.mul(bufs.h0, masks.embedding, bufs.h0);
  let h = bufs.h0;
  for (let l = 0; l < config.numLayers; l++) {
    const a = bufs.layers[l], m = masks.layers[l], lw = w.layers[l], M = a.rows;
    dev.gemm(false, true, N, 3 * H, H, 1, h, H, lw.qkvW, H, 0, a.qkv, 3 * H);
    dev.addBias(a.qkv, lw.qkvB, N, 3 * H);
    for (let j = 0; j < 3; j++) {
      const ad = adapter(pass, l, LORA_MODULES[j]);
      if (ad) loraForward(dev, ad, h, dev.view(a.qkv, j * H, N * 3 * H - j * H), 3 * H);
    }
    if (a.first) dev.attentionFirst(a.qkv, a.probs, m.attention, a.dropped, a.ctx, shape);
    else dev.attention(a.qkv, a.probs, m.attention, a.dropped, a.ctx, shape);
    let res = h;
    if (a.first) dev.gatherRows(h, bufs.firstRows, H, res = a.res);
    dev.gemm(false, true, M, H, H, 1, a.ctx, H, lw.oW, H, 0, a.r1, H);
    const adO = adapter(pass, l, "attention.output.dense");
    if (adO) loraForward(dev, adO, a.ctx, a.r1, H);
    dev.biasDropoutResidual(a.r1, lw.oB, m.attentionOut, res, a.r1, M, H);
    dev.layerNorm(attentionNorm(a, lw, H), lw.ln1B, a.h1, eps);
    dev.gemm(false, true, M, I, H, 1, a.h1, H, lw.iW, H, 0, a.g, I);
    const adI = adapter(pass, l, "intermediate.dense");
    if (adI) loraForward(dev, adI, a.h1, a.g, I);
    dev.biasGelu(a.g, lw.iB, a.g, derivs ? a.deriv : null, M, I);
    dev.gemm(false, true, M, H, I, 1, a.g, I, lw.fW, I, 0, a.r2, H);
    const adF = adapter(pass, l, "output.dense");
    if (adF) loraForward(dev, adF, a.g, a.r2, H);
    dev.biasDropoutResidual(a.r2, lw.fB, m.ffnOut, a.h1, a.r2, M, H);
    dev.layerNorm(outputNorm(a, lw, H), lw.ln2B, a.out, eps);
    h = a.out;
  }
}

/** The embeddings' LayerNorm (x0 → h0). */
function embeddingNorm<T>(
  bufs: EncoderBuffers<T>,
  w: EncoderWeights<T>,
  rows: number,
  cols: number,
): NormState<T> {
  return { x: bufs.x0, gamma: w.lnG, mean: bufs.mean0, rstd: bufs.rstd0, rows, cols };
}

/** A layer's LayerNorm after the attention (r1 → h1). */
function attentionNorm<T>(a: LayerActs<T>, lw: LayerWeights<T>, cols: number): NormState<T> {
  return { x: a.r1, gamma: lw.ln1G, mean: a.mean1, rstd: a.rstd1, rows: a.rows, cols };
}

/** A layer's LayerNorm after the feed-forward block (r2 → out). */
function outputNorm<T>(a: LayerActs<T>, lw: LayerWeights<T>, cols: number): NormState<T> {
  return { x: a.r2, gamma: lw.ln2G, mean: a.mean2, rstd: a.rstd2, rows: a.rows, cols };
}

/**
 * The backward pass from `bufs.dLast` (∂loss/∂ last hidden states, filled by
 * the head; overwritten) to ∂loss/∂(E + δ), which it returns (a buffer of
 * `bufs`). Parameter gradients accumulate into `grads`; null skips them all
 * (no weight-gradient product is run). The adapters' gradients accumulate
 * into `loraGrads` (views of the trainable gradient) when given.
 */
export function encoderBackward<T>(
  pass: EncoderPass<T>,
  grads: EncoderGrads<T> | null,
  loraGrads: LoraWeights<T> | null = null,
): T {
  const { dev, config, w, bufs, masks, batch } = pass;
  const lb = pass.lora?.bufs ?? null;
  /** The adapter of `module` in layer `l` and where its gradients go. */
  const adapted = (l: number, module: LoraModule) => {
    const use = adapter(pass, l, module);
    return use ? { use, g: loraGrads?.layers[l][module] ?? null } : null;
  };
  const H = config.hiddenSize, I = config.intermediateSize, N = bufs.rows;
  const shape = attentionShape(config, batch);
  let dh = bufs.dLast; // ∂/∂(this layer's output); after the layer, ∂/∂(its input)
  for (let l = config.numLayers - 1; l >= 0; l--) {
    const a = bufs.layers[l], m = masks.layers[l], lw = w.layers[l], M = a.rows;
    const s = a.first ? bufs.firstScratch! : bufs.full;
    const g = grads ? grads.layers[l] : null;
    const input = l === 0 ? bufs.h0 : bufs.layers[l - 1].out;
    // out = LN(r2), r2 = h1 + DropF(g·W2ᵀ + b2)
    dev.layerNormBackward(outputNorm(a, lw, H), dh, s.dr, g?.ln2G ?? null, g?.ln2B ?? null);
    let df = s.dr;
    if (m.ffnOut) dev.mul(s.dr, m.ffnOut, df = s.dBranch);
    if (g) {
      dev.colSum(df, M, H, g.fB);
      dev.gemm(true, false, H, I, M, 1, df, H, a.g, I, 1, g.fW, I);
    }
    dev.gemm(false, false, M, I, H, 1, df, H, lw.fW, I, 0, s.dInter, I);
    const adF = adapted(l, "output.dense");
    if (adF) loraBackward(dev, adF.use, lb!, a.g, df, H, s.dInter, adF.g);
    dev.geluBackward(s.dInter, a.deriv, g?.iB ?? null, M, I);
    if (g) dev.gemm(true, false, I, H, M, 1, s.dInter, I, a.h1, H, 1, g.iW, H);
    dev.gemm(false, false, M, H, I, 1, s.dInter, I, lw.iW, H, 1, s.dr, H); // s.dr is now ∂/∂h1
    const adI = adapted(l, "intermediate.dense");
    if (adI) loraBackward(dev, adI.use, lb!, a.h1, s.dInter, I, s.dr, adI.g);
    // h1 = LN(r1), r1 = res + DropA(ctx·Woᵀ + bo)
    dev.layerNormBackward(attentionNorm(a, lw, H), s.dr, dh, g?.ln1G ?? null, g?.ln1B ?? null);
    let da = dh;
    if (m.attentionOut) dev.mul(dh, m.attentionOut, da = s.dBranch);
    if (g) {
      dev.colSum(da, M, H, g.oB);
      dev.gemm(true, false, H, H, M, 1, da, H, a.ctx, H, 1, g.oW, H);
    }
    dev.gemm(false, false, M, H, H, 1, da, H, lw.oW, H, 0, s.dctx, H);
    const adO = adapted(l, "attention.output.dense");
    if (adO) loraBackward(dev, adO.use, lb!, a.ctx, da, H, s.dctx, adO.g);
    if (a.first) {
      dev.attentionFirstBackward(s.dctx, a.qkv, a.probs, m.attention, a.dropped, bufs.dqkv, shape);
    } else {
      dev.attentionBackward(s.dctx, a.qkv, a.probs, m.attention, a.dropped, bufs.dqkv, shape);
    }
    if (g) {
      dev.fill(bufs.dqkvBias, 0);
      dev.colSum(bufs.dqkv, N, 3 * H, bufs.dqkvBias);
      [[g.qW, g.qB], [g.kW, g.kB], [g.vW, g.vB]].forEach(([dW, db], j) => {
        const dq = dev.view(bufs.dqkv, j * H, N * 3 * H - j * H);
        dev.gemm(true, false, H, H, N, 1, dq, 3 * H, input, H, 1, dW, H);
        dev.add(dev.view(bufs.dqkvBias, j * H, H), db);
      });
    }
    if (a.first) {
      // The residual reaches the input at the first positions only.
      dev.fill(bufs.dh, 0);
      dev.scatterRows(dh, bufs.firstRows, H, bufs.dh);
      dh = bufs.dh;
    }
    dev.gemm(false, false, N, H, 3 * H, 1, bufs.dqkv, 3 * H, lw.qkvW, H, 1, dh, H); // ∂/∂input
    for (let j = 0; j < 3; j++) {
      const ad = adapted(l, LORA_MODULES[j]);
      if (!ad) continue;
      const dq = dev.view(bufs.dqkv, j * H, N * 3 * H - j * H);
      loraBackward(dev, ad.use, lb!, input, dq, 3 * H, dh, ad.g);
    }
  }
  // h0 = Drop0(LN(x0))
  if (masks.embedding) dev.mul(dh, masks.embedding, dh);
  const dx0 = bufs.full.dr;
  const norm = embeddingNorm(bufs, w, N, H);
  dev.layerNormBackward(norm, dh, dx0, grads?.lnG ?? null, grads?.lnB ?? null);
  if (grads) dev.embedBackward(dx0, grads.word, grads.pos, grads.type, batch, H);
  return dx0;
}
