/**
 * LoRA adapters in the engine's passes (shared/model/lora.ts for the method),
 * through the {@link Device}'s existing kernels only (gemm, mul, add,
 * dropoutMask), so every device runs them. An adapted linear layer adds
 *
 *     u = drop(x)·Aᵀ            [rows, r]      (kept for the backward)
 *     y += s·u·Bᵀ               s = α/r
 *
 * to the frozen product; W + B·A is never formed (the engine's Q, K and V are
 * one packed [3H, H] matrix: each adapter adds into its own column block of
 * the packed output). The backward, from dy:
 *
 *     du = s·dy·B               dB += s·dyᵀ·u        dA += duᵀ·drop(x)
 *     dx += (du·A)·mask
 *
 * @module
 */
import type { Device, MaskRows } from "./device.ts";
import {
  LORA_MODULES,
  type LoraAdapterSpec,
  loraDropoutSite,
  type LoraModule,
  type LoraPlan,
} from "../model/lora.ts";
import type { ModelConfig } from "../model/config.ts";

/** One adapter on a device: A [r, in], B [out, r] (or their gradients). */
export interface LoraPair<T> {
  readonly a: T;
  readonly b: T;
}

/** Something per adapted module of one layer. */
export type PerModule<X> = Partial<Readonly<Record<LoraModule, X>>>;

/** The adapters of the encoder on a device: views of the trainable buffer (or its gradient). */
export interface LoraWeights<T> {
  readonly plan: LoraPlan;
  /** Per layer, the adapted modules' A and B. */
  readonly layers: readonly PerModule<LoraPair<T>>[];
}

/** Views of every adapter's A and B in the flat trainable buffer `flat`. */
export function loraWeights<T>(dev: Device<T>, plan: LoraPlan, flat: T): LoraWeights<T> {
  const layers: Record<string, LoraPair<T>>[] = [];
  for (const ad of plan.adapters) {
    (layers[ad.layer] ??= {})[ad.module] = {
      a: dev.view(flat, ad.a.offset, ad.a.size),
      b: dev.view(flat, ad.b.offset, ad.b.size),
    };
  }
  for (let l = 0; l < layers.length; l++) layers[l] ??= {};
  return { plan, layers };
}

/** What one adapted module keeps from its forward: u, and with dropout the mask and drop(x). */
export interface LoraActs<T> {
  readonly rows: number;
  readonly u: T;
  readonly mask: T | null;
  readonly xd: T | null;
}

/** A dropout mask of the adapters: its buffer, site, and (compact layers) which rows. */
export interface LoraMaskSite<T> {
  readonly buf: T;
  readonly site: number;
  readonly rows?: MaskRows;
}

/** The adapters' buffers for one batch shape. */
export interface LoraBuffers<T> {
  /** Per layer, per adapted module. */
  readonly layers: readonly PerModule<LoraActs<T>>[];
  /** du [N, r], shared by every adapter's backward. */
  readonly du: T;
  /** (du·A) before its dropout mask, [N, max in] (with dropout only). */
  readonly dxd: T | null;
  /** The masks to fill per task. */
  readonly sites: readonly LoraMaskSite<T>[];
}

/**
 * Buffers for a batch of B examples of length L: `firstOnly` says whether the
 * last layer computes only the first position after its attention (then its
 * attention-output and feed-forward adapters see B rows, the others B·L).
 */
export function loraBuffers<T>(
  dev: Device<T>,
  config: ModelConfig,
  plan: LoraPlan,
  B: number,
  L: number,
  firstOnly: boolean,
  dropout: boolean,
): LoraBuffers<T> {
  const N = B * L, r = plan.lora.r, last = config.numLayers - 1;
  const layers: Record<string, LoraActs<T>>[] = [];
  const sites: LoraMaskSite<T>[] = [];
  let maxIn = 0;
  for (const ad of plan.adapters) {
    const compact = firstOnly && ad.layer === last && !ad.module.startsWith("attention.self.");
    const rows = compact ? B : N;
    let mask: T | null = null, xd: T | null = null;
    if (dropout) {
      mask = dev.alloc(rows * ad.inDim);
      xd = dev.alloc(rows * ad.inDim);
      const starts = compact
        ? { starts: Int32Array.from({ length: B }, (_, b) => b * L * ad.inDim), width: ad.inDim }
        : undefined;
      sites.push({ buf: mask, site: loraDropoutSite(ad.layer, ad.module), rows: starts });
      maxIn = Math.max(maxIn, ad.inDim);
    }
    (layers[ad.layer] ??= {})[ad.module] = { rows, u: dev.alloc(rows * r), mask, xd };
  }
  for (let l = 0; l < config.numLayers; l++) layers[l] ??= {};
  return { layers, du: dev.alloc(N * r), dxd: dropout ? dev.alloc(N * maxIn) : null, sites };
}

/** An adapter at work in one pass: its weights, its buffers, its shape. */
export interface LoraUse<T> {
  readonly w: LoraPair<T>;
  readonly acts: LoraActs<T>;
  readonly spec: LoraAdapterSpec;
  readonly r: number;
  readonly scale: number;
}

/** The adapter on `module` of layer `layer`, if that module is adapted. */
export function loraUse<T>(
  w: LoraWeights<T> | null,
  bufs: LoraBuffers<T> | null,
  layer: number,
  module: LoraModule,
): LoraUse<T> | null {
  const pair = w?.layers[layer][module];
  if (!pair || !bufs) return null;
  const spec = w!.plan.adapters.find((a) => a.layer === layer && a.module === module)!;
  return {
    w: pair,
    acts: bufs.layers[layer][module]!,
    spec,
    r: w!.plan.lora.r,
    scale: w!.plan.scale,
  };
}

/**
 * y [rows, out] (row stride `ldy`) += s·(drop(x)·Aᵀ)·Bᵀ, x [rows, in]
 * contiguous; keeps u (and drop(x)) for the backward.
 */
export function loraForward<T>(dev: Device<T>, use: LoraUse<T>, x: T, y: T, ldy: number): void {
  const { w, acts, spec, r, scale } = use, M = acts.rows, n = spec.inDim;
  let xin = x;
  if (acts.mask) dev.mul(dev.view(x, 0, M * n), acts.mask, xin = acts.xd!);
  dev.gemm(false, true, M, r, n, 1, xin, n, w.a, n, 0, acts.u, r);
  dev.gemm(false, true, M, spec.outDim, r, scale, acts.u, r, w.b, r, 1, y, ldy);
}

/**
 * The backward of {@link loraForward}: from dy [rows, out] (row stride
 * `ldy`), adds the input's gradient into dx [rows, in] and, when `grads` is
 * given, accumulates dA and dB into it. `x` is the forward's input.
 */
export function loraBackward<T>(
  dev: Device<T>,
  use: LoraUse<T>,
  bufs: LoraBuffers<T>,
  x: T,
  dy: T,
  ldy: number,
  dx: T,
  grads: LoraPair<T> | null,
): void {
  const { w, acts, spec, r, scale } = use, M = acts.rows, n = spec.inDim, out = spec.outDim;
  const du = dev.view(bufs.du, 0, M * r);
  dev.gemm(false, false, M, r, out, scale, dy, ldy, w.b, r, 0, du, r);
  if (grads) {
    dev.gemm(true, false, out, r, M, scale, dy, ldy, acts.u, r, 1, grads.b, r);
    dev.gemm(true, false, r, n, M, 1, du, r, acts.xd ?? x, n, 1, grads.a, n);
  }
  if (acts.mask) {
    const dxd = dev.view(bufs.dxd!, 0, M * n);
    dev.gemm(false, false, M, n, r, 1, du, r, w.a, n, 0, dxd, n);
    dev.mul(dxd, acts.mask, dxd);
    dev.add(dxd, dev.view(dx, 0, M * n));
  } else {
    dev.gemm(false, false, M, n, r, 1, du, r, w.a, n, 1, dx, n);
  }
}

/** The Q, K, V adapters' column block in the packed [N, 3H] output. */
export function qkvBlock(module: LoraModule): number {
  return LORA_MODULES.indexOf(module); // query 0, key 1, value 2
}
