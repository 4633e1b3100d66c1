/**
 * The host {@link Device}: buffers are Float32Arrays (views are subarrays),
 * matrix products go through the given {@link Gemm} (the machine's BLAS, or
 * {@link jsGemm}), everything else runs the loops of shared/engine/devices/cpu/layers.ts
 * and attention.ts. Work happens when a kernel is called.
 *
 * @module
 */
import type { AttentionShape, Device, DeviceCounts } from "../../device.ts";
import type { Gemm } from "./gemm.ts";
import * as layers from "./layers.ts";
import { initialDeltaHost } from "../../../method/adversary.ts";
import { attentionBackward, attentionForward } from "./attention.ts";

type F32 = Float32Array;

/** Members of a device that are not kernels (not counted as dispatches). */
const NOT_KERNELS = new Set(["alloc", "view", "read", "write", "alias", "release", "counts"]);

/**
 * `dev` with {@link Device.counts}: kernel calls as dispatches, read calls as
 * readbacks, dropout-mask and δ_0 elements as host random numbers; nothing
 * is submitted, uploaded or compiled on a host device.
 */
function counted(dev: Device<F32>): Device<F32> {
  const c: DeviceCounts = {
    dispatches: 0,
    submits: 0,
    readbacks: 0,
    uploadBytes: 0,
    hostRandom: 0,
    pipelinesCompiled: 0,
  };
  const out: Record<string, unknown> = { counts: () => ({ ...c }) };
  for (const [name, fn] of Object.entries(dev)) {
    if (typeof fn !== "function" || NOT_KERNELS.has(name)) {
      if (name !== "counts") out[name] = fn;
      continue;
    }
    out[name] = (...args: unknown[]) => {
      c.dispatches++;
      if (name === "dropoutMask") c.hostRandom += (args[0] as F32).length;
      if (name === "initDelta" && args[3] !== 0) c.hostRandom += (args[0] as F32).length;
      return fn(...args);
    };
  }
  const read = dev.read;
  out.read = (bufs: readonly F32[], into?: readonly (F32 | undefined)[]) => {
    c.readbacks++;
    return read(bufs, into);
  };
  return out as unknown as Device<F32>;
}

/** A host device whose matrix products run on `gemm` (with {@link Device.counts}). */
export function cpuDevice(gemm: Gemm): Device<F32> {
  return counted(hostDevice(gemm));
}

function hostDevice(gemm: Gemm): Device<F32> {
  let scratch = new Float32Array(0);
  const need = (n: number) => {
    if (scratch.length < n) scratch = new Float32Array(n);
    return scratch;
  };
  /** The attention kernels over every query, or with `first` the first of each example only. */
  function attention(first: boolean): Pick<Device<F32>, "attention" | "attentionBackward"> {
    const queries = (shape: AttentionShape) => first ? 1 : shape.batch.seqLen;
    return {
      attention: (qkv, probs, dropMask, dropped, ctx, shape) => {
        const rows = queries(shape);
        attentionForward(gemm, qkv, probs, dropMask, dropped, ctx, shape, rows);
      },
      attentionBackward: (dctx, qkv, probs, dropMask, dropped, dqkv, shape) => {
        const rows = queries(shape), tmp = need(rows * shape.batch.seqLen);
        attentionBackward(gemm, dctx, qkv, probs, dropMask, dropped, dqkv, shape, tmp, rows);
      },
    };
  }
  const full = attention(false), first = attention(true);
  return {
    alloc: (n) => new Float32Array(n),
    view: (t, offset, n) => {
      if (offset < 0 || offset + n > t.length) {
        throw new Error(`view [${offset}, ${offset + n}) outside a buffer of ${t.length}`);
      }
      return t.subarray(offset, offset + n);
    },
    fill: (t, value) => void t.fill(value),
    read: (bufs, into) =>
      Promise.resolve(bufs.map((t, i) => {
        const dst = into?.[i];
        if (!dst) return t.slice();
        if (dst !== t) dst.set(t);
        return dst;
      })),
    write: (t, data) => t.set(data),
    alias: (host) => host,
    release: () => {},
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
    attention: full.attention,
    attentionBackward: full.attentionBackward,
    attentionFirst: first.attention,
    attentionFirstBackward: first.attentionBackward,
    gatherRows: layers.gatherRows,
    scatterRows: layers.scatterRows,
    crossEntropy: layers.crossEntropy,
    meanSquaredError: layers.meanSquaredError,
    ascend: layers.ascend,
    initDelta: (delta, batch, hidden, init, key) => {
      const { attentionMask, size, seqLen } = batch;
      initialDeltaHost(attentionMask, size, seqLen, hidden, init, key, delta);
    },
  };
}
