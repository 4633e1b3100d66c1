/**
 * Dropout masks from a counter-based hash: whether element `i` of dropout
 * site `s` survives is a pure function of (seed, s, i), computed with 32-bit
 * unsigned integer arithmetic only (`Math.imul`, `>>>`, `^`, wrapping `+`),
 * so the same function written in WGSL (u32 ops wrap the same way) gives the
 * same bits on every backend: tfjs cpu, wasm and webgpu, and the native engine.
 *
 * ## Numbering
 *
 * - `seed`: the pass's dropout seed, `mixSeed(task.seed, task.step, task.index)`
 *   (shared/tfjs/gradient.ts), so a mask depends on (run seed, step, micro-batch)
 *   and on nothing a worker holds.
 * - `site`: which dropout in the model, in call order of the forward pass,
 *   given by {@link dropoutSite} (used by shared/tfjs/model.ts and
 *   shared/engine/engine.ts alike): 0 after the embedding LayerNorm; per
 *   encoder layer l, `1 + 3l` on the attention probabilities, `2 + 3l` on the
 *   attention output, `3 + 3l` on the feed-forward output; the classifier
 *   head's dropouts are `1_000_000 + i` (BERT: i = 0 on the pooled vector;
 *   RoBERTa: i = 0 on the `<s>` vector, i = 1 after the dense + tanh).
 * - element index `i`: the row-major flat index into the tensor the dropout
 *   applies to: hidden [B, L, H] → (b·L + t)·H + h; attention probabilities
 *   [B·heads, L, L] → ((b·heads + a)·L + q)·L + k; head vectors [B, H] → b·H + h.
 *
 * ## The rule
 *
 *   key       = mixSeed(seed, site)                       (shared/method/rng.ts)
 *   bits(i)   = lowbias32(lowbias32(i ^ key) + key)       (u32, wrapping add)
 *   threshold = min(floor(rate · 2³²), 2³² − 1)
 *   keep i   ⇔ bits(i) ≥ threshold                         (P(keep) = 1 − rate)
 *   mask[i]   = keep ? scale : 0,  scale = f32(1 / f32(1 − rate))
 *
 * `lowbias32` is Chris Wellons's 32-bit integer hash (x ^= x >> 16;
 * x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16). The scale is
 * the float32 value tfjs's inverted dropout multiplies survivors by, so
 * `x · mask` is tfjs's `dropout(x)` for the same keep decisions.
 *
 * @module
 */
import { lowbias32 } from "./hash32.ts";
import { mixSeed } from "./rng.ts";

/** Site number of the classifier head's first dropout (later ones count up from it). */
export const HEAD_SITE = 1_000_000;

/** Site number of the first LoRA adapter's input dropout (shared/model/lora.ts). */
export const LORA_SITE = 2_000_000;

/**
 * A dropout of the model: after the embedding LayerNorm; in encoder layer
 * `layer`, on the attention probabilities, the attention output or the
 * feed-forward output; the classifier head's `index`-th; or the input of
 * the LoRA adapter in slot `slot` of encoder layer `layer`.
 */
export type DropoutPlace =
  | { readonly at: "embedding" }
  | { readonly at: "attention" | "attentionOutput" | "ffnOutput"; readonly layer: number }
  | { readonly at: "head"; readonly index: number }
  | { readonly at: "lora"; readonly layer: number; readonly slot: number };

/**
 * The site number of a dropout (see "Numbering" above): the one definition
 * both implementations of the model use, so their masks agree.
 */
export function dropoutSite(place: DropoutPlace): number {
  switch (place.at) {
    case "embedding":
      return 0;
    case "attention":
      return 1 + 3 * place.layer;
    case "attentionOutput":
      return 2 + 3 * place.layer;
    case "ffnOutput":
      return 3 + 3 * place.layer;
    case "head":
      return HEAD_SITE + place.index;
    case "lora": // slot: the adapted module's place among the (at most 8) adaptable ones
      return LORA_SITE + 8 * place.layer + place.slot;
  }
}

/** The per-site key every element's bits derive from. */
export function dropoutKey(seed: number, site: number): number {
  return mixSeed(seed, site);
}

/** The 32 random bits of element `index` under `key` (both u32). */
export function dropoutBits(key: number, index: number): number {
  return lowbias32((lowbias32((index ^ key) >>> 0) + key) >>> 0);
}

function checkRate(rate: number): void {
  if (!(rate >= 0 && rate < 1)) throw new Error(`dropout rate must be in [0, 1), got ${rate}`);
}

/** Elements whose bits are at least this survive: floor(rate · 2³²), at most 2³² − 1. */
export function dropoutThreshold(rate: number): number {
  checkRate(rate);
  return Math.min(Math.floor(rate * 4294967296), 4294967295);
}

/** What survivors are multiplied by: the float32 of 1 / float32(1 − rate). */
export function dropoutScale(rate: number): number {
  checkRate(rate);
  return Math.fround(1 / Math.fround(1 - rate));
}

/**
 * Fills `out` with the multipliers of site `site` (0 or {@link dropoutScale})
 * for elements 0..out.length-1, and returns it. With `rows`, `out` holds only
 * some rows of the site's tensor: out[i·width + j] is element
 * rows.starts[i] + j (the engine's compact first-token rows).
 */
export function fillDropoutMask(
  out: Float32Array,
  seed: number,
  site: number,
  rate: number,
  rows?: { readonly starts: Int32Array; readonly width: number },
): Float32Array {
  if (out.length > 4294967296) throw new Error(`dropout: ${out.length} elements exceed 2³²`);
  const key = dropoutKey(seed, site);
  const threshold = dropoutThreshold(rate), scale = dropoutScale(rate);
  const width = rows ? rows.width : out.length, count = rows ? rows.starts.length : 1;
  if (width * count !== out.length) {
    throw new Error(`dropout: ${count} rows of ${width} do not fill ${out.length} elements`);
  }
  for (let r = 0, o = 0; r < count; r++, o += width) {
    const start = rows ? rows.starts[r] : 0;
    for (let j = 0; j < width; j++) {
      // Inlined dropoutBits: this loop runs over every activation of a pass.
      let x = ((start + j) ^ key) >>> 0;
      x ^= x >>> 16;
      x = Math.imul(x, 0x7feb352d);
      x ^= x >>> 15;
      x = Math.imul(x, 0x846ca68b);
      x ^= x >>> 16;
      x = ((x >>> 0) + key) >>> 0;
      x ^= x >>> 16;
      x = Math.imul(x, 0x7feb352d);
      x ^= x >>> 15;
      x = Math.imul(x, 0x846ca68b);
      x ^= x >>> 16;
      out[o + j] = x >>> 0 >= threshold ? scale : 0;
    }
  }
  return out;
}

/** The multipliers (0 or scale) of `n` elements of site `site`: a new array. */
export function dropoutMask(seed: number, site: number, rate: number, n: number): Float32Array {
  return fillDropoutMask(new Float32Array(n), seed, site, rate);
}
