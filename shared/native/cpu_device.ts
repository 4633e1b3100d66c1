/**
 * The host {@link Device}: buffers are Float32Arrays (views are subarrays),
 * matrix products go through the given {@link Gemm} (the machine's BLAS, or
 * {@link jsGemm}), everything else runs the loops of shared/native/layers.ts
 * and attention.ts. Work happens when a kernel is called.
 *
 * @module
 */
import type { Device } from "./device.ts";
import type { Gemm } from "./gemm.ts";
import * as layers from "./layers.ts";
import {
  attentionBackward,
  attentionFirstBackward,
  attentionFirstForward,
  attentionForward,
} from "./attention.ts";

/** A host device whose matrix products run on `gemm`. */
export function cpuDevice(gemm: Gemm): Device<Float32Array> {
  let scratch = new Float32Array(0);
  const need = (n: number) => {
    if (scratch.length < n) scratch = new Float32Array(n);
    return scratch;
  };
  return {
    alloc: (n) => new Float32Array(n),
    view: (t, offset, n) => {
      if (offset < 0 || offset + n > t.length) {
        throw new Error(`view [${offset}, ${offset + n}) outside a buffer of ${t.length}`);
      }
      return t.subarray(offset, offset + n);
    },
    fill: (t, value) => void t.fill(value),
    read: (t) => t,
    write: (t, data) => t.set(data),
    gemm,
    dropoutMask: layers.dropoutMask,
    mul: layers.mul,
    add: layers.add,
    embed: layers.embed,
    embedBackward: layers.embedBackward,
    addBias: layers.addBias,
    colSum: layers.colSum,
    biasDropoutResidual: layers.biasDropoutResidual,
    layerNorm: layers.layerNorm,
    layerNormBackward: layers.layerNormBackward,
    biasGelu: layers.biasGelu,
    geluBackward: layers.geluBackward,
    biasTanh: layers.biasTanh,
    tanhBackward: layers.tanhBackward,
    attention: (qkv, probs, dropMask, dropped, ctx, shape) =>
      attentionForward(gemm, qkv, probs, dropMask, dropped, ctx, shape),
    attentionBackward: (dctx, qkv, probs, dropMask, dropped, dqkv, shape) =>
      attentionBackward(
        gemm,
        dctx,
        qkv,
        probs,
        dropMask,
        dropped,
        dqkv,
        shape,
        need(shape.batch.seqLen ** 2),
      ),
    attentionFirst: (qkv, probs, dropMask, dropped, ctx, shape) =>
      attentionFirstForward(gemm, qkv, probs, dropMask, dropped, ctx, shape),
    attentionFirstBackward: (dctx, qkv, probs, dropMask, dropped, dqkv, shape) =>
      attentionFirstBackward(
        gemm,
        dctx,
        qkv,
        probs,
        dropMask,
        dropped,
        dqkv,
        shape,
        need(shape.batch.seqLen),
      ),
    gatherRows: layers.gatherRows,
    scatterRows: layers.scatterRows,
    crossEntropy: layers.crossEntropy,
    meanSquaredError: layers.meanSquaredError,
    ascend: layers.ascend,
  };
}
