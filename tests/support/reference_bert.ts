/**
 * An independent BERT/RoBERTa forward pass in plain float64 loops, written
 * from docs/model-and-data.md without tfjs, for checking the tfjs model (logits)
 * and its gradients (by central finite differences). No dropout.
 *
 * LoRA: with a {@link ReferenceLora}, each encoder linear layer that has
 * `<module>.lora_A.weight` / `.lora_B.weight` in it adds (x·Aᵀ)·Bᵀ·scale, and
 * its head tensors replace the base's (written from the PEFT formula, not
 * from the engine).
 */
import type { ModelConfig } from "../../shared/model/config.ts";
import type { ParamLayout } from "../../shared/model/param_layout.ts";
import type { LabelledBatch } from "../../shared/model/batch.ts";

/**
 * erf(x) = 2/√π · e^(−x²) · Σ_{n≥0} 2ⁿ x^(2n+1) / (1·3·…·(2n+1)) (Abramowitz &
 * Stegun 7.1.6), to ~1e-15: every term is positive, so the sum does not cancel.
 * A different route from the engine's erf (shared/engine/devices/cpu/fast_math.ts), so the
 * two check each other.
 */
export function erf(x: number): number {
  const ax = Math.min(Math.abs(x), 6); // erf(6) = 1 in float64
  let term = ax, sum = ax;
  for (let n = 1; term > 1e-17 * sum; n++) {
    term *= 2 * ax * ax / (2 * n + 1);
    sum += term;
  }
  return Math.sign(x) * 2 / Math.sqrt(Math.PI) * Math.exp(-ax * ax) * sum;
}

type M = Float64Array<ArrayBuffer>; // row-major matrices

function get(layout: ParamLayout, w: ArrayLike<number>, name: string): M {
  const s = layout.byName.get(name)!;
  const out = new Float64Array(s.size);
  for (let i = 0; i < s.size; i++) out[i] = w[s.offset + i];
  return out;
}

/** y[n, out] = x[n, in]·Wᵀ + b, W stored [out, in]. */
function dense(x: M, n: number, inD: number, W: M, b: M, outD: number): M {
  const y = new Float64Array(n * outD);
  for (let r = 0; r < n; r++) {
    for (let o = 0; o < outD; o++) {
      let s = b[o];
      for (let i = 0; i < inD; i++) s += x[r * inD + i] * W[o * inD + i];
      y[r * outD + o] = s;
    }
  }
  return y;
}

function layerNorm(x: M, n: number, d: number, g: M, b: M, eps: number): M {
  const y = new Float64Array(n * d);
  for (let r = 0; r < n; r++) {
    let mean = 0;
    for (let i = 0; i < d; i++) mean += x[r * d + i];
    mean /= d;
    let v = 0;
    for (let i = 0; i < d; i++) v += (x[r * d + i] - mean) ** 2;
    v /= d;
    for (let i = 0; i < d; i++) {
      y[r * d + i] = (x[r * d + i] - mean) / Math.sqrt(v + eps) * g[i] + b[i];
    }
  }
  return y;
}

/** A LoRA model's trainable tensors: their layout, values and the scale α/r. */
export interface ReferenceLora {
  readonly layout: ParamLayout;
  readonly w: ArrayLike<number>;
  readonly scale: number;
}

/**
 * What the reference reads: the model's shape, the weights in layout order,
 * the batch, δ if any, and LoRA's trainable tensors if any.
 */
type ReferenceInput = [
  config: ModelConfig,
  layout: ParamLayout,
  w: ArrayLike<number>,
  batch: LabelledBatch,
  delta?: ArrayLike<number> | null,
  lora?: ReferenceLora | null,
];

/** The tensor `name`: from the LoRA trainable tensors when they hold it, else the base. */
function getter(layout: ParamLayout, w: ArrayLike<number>, lora?: ReferenceLora | null) {
  return (name: string): M =>
    lora?.layout.byName.has(name) ? get(lora.layout, lora.w, name) : get(layout, w, name);
}

/** y[n, out] += scale·(x·Aᵀ)·Bᵀ, A [r, in], B [out, r]. */
function addLowRank(y: M, x: M, n: number, inD: number, A: M, B: M, outD: number, scale: number) {
  const r = A.length / inD;
  const u = new Float64Array(r);
  for (let row = 0; row < n; row++) {
    for (let k = 0; k < r; k++) {
      let s = 0;
      for (let i = 0; i < inD; i++) s += x[row * inD + i] * A[k * inD + i];
      u[k] = s;
    }
    for (let o = 0; o < outD; o++) {
      let s = 0;
      for (let k = 0; k < r; k++) s += u[k] * B[o * r + k];
      y[row * outD + o] += scale * s;
    }
  }
}

/** Last hidden states [B·L, H], word embeddings perturbed by `delta` [B, L, H] if given. */
export function referenceSequence(
  ...[config, layout, w, batch, delta, lora]: ReferenceInput
): Float64Array {
  const p = config.modelType, H = config.hiddenSize, I = config.intermediateSize;
  const { size: B, seqLen: L } = batch;
  const nh = config.numHeads, hd = H / nh;
  const P = getter(layout, w, lora);
  const word = P(`${p}.embeddings.word_embeddings.weight`);
  const pos = P(`${p}.embeddings.position_embeddings.weight`);
  const typ = P(`${p}.embeddings.token_type_embeddings.weight`);
  const N = B * L;
  let h: M = new Float64Array(N * H);
  for (let b = 0; b < B; b++) {
    let count = 0;
    for (let i = 0; i < L; i++) {
      const k = b * L + i;
      const real = batch.attentionMask[k] === 1;
      const position = p === "bert" ? i : real ? config.padTokenId + ++count : config.padTokenId;
      for (let j = 0; j < H; j++) {
        h[k * H + j] = word[batch.inputIds[k] * H + j] + (delta ? delta[k * H + j] : 0) +
          pos[position * H + j] + typ[batch.tokenTypeIds[k] * H + j];
      }
    }
  }
  const eps = config.layerNormEps;
  h = layerNorm(
    h,
    N,
    H,
    P(`${p}.embeddings.LayerNorm.weight`),
    P(`${p}.embeddings.LayerNorm.bias`),
    eps,
  );
  for (let l = 0; l < config.numLayers; l++) {
    const n = `${p}.encoder.layer.${l}`;
    const lin = (x: M, s: string, i: number, o: number) => {
      const y = dense(x, N, i, P(`${n}.${s}.weight`), P(`${n}.${s}.bias`), o);
      const a = `${n}.${s}.lora_A.weight`, b = `${n}.${s}.lora_B.weight`;
      if (lora?.layout.byName.has(a)) addLowRank(y, x, N, i, P(a), P(b), o, lora.scale);
      return y;
    };
    const q = lin(h, "attention.self.query", H, H);
    const k = lin(h, "attention.self.key", H, H);
    const v = lin(h, "attention.self.value", H, H);
    const ctx = new Float64Array(N * H);
    for (let b = 0; b < B; b++) {
      for (let a = 0; a < nh; a++) {
        for (let i = 0; i < L; i++) {
          const scores = new Float64Array(L);
          let max = -Infinity;
          for (let j = 0; j < L; j++) {
            if (!batch.attentionMask[b * L + j]) {
              scores[j] = -Infinity;
              continue;
            }
            let s = 0;
            for (let d = 0; d < hd; d++) {
              s += q[(b * L + i) * H + a * hd + d] * k[(b * L + j) * H + a * hd + d];
            }
            scores[j] = s / Math.sqrt(hd);
            max = Math.max(max, scores[j]);
          }
          let z = 0;
          for (let j = 0; j < L; j++) z += scores[j] === -Infinity ? 0 : Math.exp(scores[j] - max);
          for (let j = 0; j < L; j++) {
            const pr = scores[j] === -Infinity ? 0 : Math.exp(scores[j] - max) / z;
            for (let d = 0; d < hd; d++) {
              ctx[(b * L + i) * H + a * hd + d] += pr * v[(b * L + j) * H + a * hd + d];
            }
          }
        }
      }
    }
    const attn = lin(ctx, "attention.output.dense", H, H);
    for (let i = 0; i < N * H; i++) attn[i] += h[i];
    h = layerNorm(
      attn,
      N,
      H,
      P(`${n}.attention.output.LayerNorm.weight`),
      P(`${n}.attention.output.LayerNorm.bias`),
      eps,
    );
    const inter = lin(h, "intermediate.dense", H, I).map((x) =>
      0.5 * x * (1 + erf(x / Math.SQRT2))
    );
    const out = lin(inter, "output.dense", I, H);
    for (let i = 0; i < N * H; i++) out[i] += h[i];
    h = layerNorm(
      out,
      N,
      H,
      P(`${n}.output.LayerNorm.weight`),
      P(`${n}.output.LayerNorm.bias`),
      eps,
    );
  }
  return h;
}

/** Logits [B, numLabels] for the batch, word embeddings perturbed by `delta` [B, L, H] if given. */
export function referenceLogits(
  ...[config, layout, w, batch, delta, lora]: ReferenceInput
): Float64Array {
  const p = config.modelType, H = config.hiddenSize;
  const { size: B, seqLen: L } = batch;
  const P = getter(layout, w, lora);
  const h = referenceSequence(config, layout, w, batch, delta, lora);
  const first = new Float64Array(B * H);
  for (let b = 0; b < B; b++) for (let j = 0; j < H; j++) first[b * H + j] = h[b * L * H + j];
  const C = config.numLabels;
  if (p === "bert") {
    const pooled = dense(first, B, H, P("bert.pooler.dense.weight"), P("bert.pooler.dense.bias"), H)
      .map(Math.tanh);
    return dense(pooled, B, H, P("classifier.weight"), P("classifier.bias"), C);
  }
  const x = dense(first, B, H, P("classifier.dense.weight"), P("classifier.dense.bias"), H).map(
    Math.tanh,
  );
  return dense(x, B, H, P("classifier.out_proj.weight"), P("classifier.out_proj.bias"), C);
}

/** The micro-batch mean loss: cross-entropy, or squared error when numLabels = 1. */
export function referenceLoss(
  ...[config, layout, w, batch, delta, lora]: ReferenceInput
): number {
  const logits = referenceLogits(config, layout, w, batch, delta, lora);
  const C = config.numLabels, B = batch.size;
  let total = 0;
  for (let b = 0; b < B; b++) {
    if (C === 1) {
      total += (logits[b] - batch.labels[b]) ** 2;
      continue;
    }
    let max = -Infinity;
    for (let c = 0; c < C; c++) max = Math.max(max, logits[b * C + c]);
    let z = 0;
    for (let c = 0; c < C; c++) z += Math.exp(logits[b * C + c] - max);
    total += Math.log(z) + max - logits[b * C + batch.labels[b]];
  }
  return total / B;
}

/** Central finite difference of `f` along coordinate i of x (float64 copy). */
export function centralDiff(
  f: (x: Float64Array) => number,
  x: ArrayLike<number>,
  i: number,
  h = 1e-5,
): number {
  const xp = Float64Array.from(x), xm = Float64Array.from(x);
  xp[i] += h;
  xm[i] -= h;
  return (f(xp) - f(xm)) / (2 * h);
}

/** Masked-LM loss: mean cross-entropy at positions whose label is not -100 (labels per token). */
export function referenceMlmLoss(
  config: ModelConfig,
  layout: ParamLayout,
  w: ArrayLike<number>,
  batch: LabelledBatch,
): number {
  const H = config.hiddenSize, V = config.vocabSize;
  const P = (n: string) => get(layout, w, n);
  const h = referenceSequence(config, layout, w, batch);
  const word = P(`${config.modelType}.embeddings.word_embeddings.weight`);
  const bias = P("cls.predictions.bias");
  let total = 0, count = 0;
  for (let k = 0; k < batch.labels.length; k++) {
    if (batch.labels[k] === -100) continue;
    const x = h.slice(k * H, (k + 1) * H);
    const t = dense(
      x,
      1,
      H,
      P("cls.predictions.transform.dense.weight"),
      P("cls.predictions.transform.dense.bias"),
      H,
    )
      .map((v) => 0.5 * v * (1 + erf(v / Math.SQRT2)));
    const n = layerNorm(
      t,
      1,
      H,
      P("cls.predictions.transform.LayerNorm.weight"),
      P("cls.predictions.transform.LayerNorm.bias"),
      config.layerNormEps,
    );
    const logits = new Float64Array(V);
    let max = -Infinity;
    for (let v = 0; v < V; v++) {
      let s = bias[v];
      for (let j = 0; j < H; j++) s += n[j] * word[v * H + j];
      logits[v] = s;
      max = Math.max(max, s);
    }
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(logits[v] - max);
    total += Math.log(z) + max - logits[batch.labels[k]];
    count++;
  }
  return total / count;
}
