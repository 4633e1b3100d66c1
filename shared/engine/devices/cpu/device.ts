/**
 * The host {@link Device}: buffers are Float32Arrays (views are subarrays),
 * matrix products go through the given {@link Gemm} (the machine's BLAS, or
 * {@link jsGemm}), everything else runs the loops of shared/engine/devices/cpu/layers.ts
 * and attention.ts. Work happens when a kernel is called.
 *
 * @module
 */
import {
  type AttentionShape,
  type Device,
  type DeviceCounts,
  layerKernels,
  zeroCounts,
} from "../../device.ts";
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
  const c: DeviceCounts = zeroCounts();
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

/** How {@link cpuDevice} computes. */
export interface CpuDeviceOptions {
  /**
   * Give a row of a matrix product the same bits wherever it sits in the
   * matrix ({@link rowStableGemm} for the device's `gemm`; the attention's
   * products are per example already): identical examples get identical
   * logits at any place in any batch. For scoring (predict, evaluate, the
   * coordinator's own evaluation); training keeps the plain calls.
   */
  readonly rowStable?: boolean;
}

/**
 * A host device whose matrix products run on `gemm` (with {@link Device.counts});
 * `opts.rowStable`: see {@link CpuDeviceOptions}.
 */
export function cpuDevice(gemm: Gemm, opts: CpuDeviceOptions = {}): Device<F32> {
  return counted(hostDevice(gemm, opts.rowStable ? rowStableGemm(gemm) : gemm));
}

/**
 * Rows per call of {@link rowStableGemm}. OpenBLAS 0.3.21's Haswell sgemm
 * (bench/sgemm_rows.ts) computes the rows of one call in blocks of 12 whose
 * halves take different code paths, and a remainder by a third; a call of 8
 * rows computes all 8 alike (so do 1–4), but not alike the rows of a 1- or
 * 4-row call: so every call must have the same row count.
 */
export const ROW_STABLE_ROWS = 8;

/**
 * `gemm` with every row of C computed in a call of exactly `rows` rows: M is
 * split into calls of `rows`, and the last, shorter part is padded with zero
 * rows in scratch (its rows of C copied in when `beta` is not 0, and back
 * after). A row's bits then depend on its own inputs only — not on its place
 * in the matrix nor on M — on a BLAS whose rows within such a call are
 * computed alike (measured for OpenBLAS; tests/row_stable_test.ts).
 */
export function rowStableGemm(gemm: Gemm, rows = ROW_STABLE_ROWS): Gemm {
  let pa = new Float32Array(0), pc = new Float32Array(0);
  return (transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) => {
    let r = 0;
    for (; r + rows <= m; r += rows) {
      const ar = transA ? a.subarray(r) : a.subarray(r * lda);
      gemm(transA, transB, rows, n, k, alpha, ar, lda, b, ldb, beta, c.subarray(r * ldc), ldc);
    }
    const rest = m - r;
    if (rest <= 0) return;
    if (pa.length < rows * k) pa = new Float32Array(rows * k);
    if (pc.length < rows * n) pc = new Float32Array(rows * n);
    // op(A)'s remaining rows, stored as A is (transA: k × rows, else rows × k), zeros after.
    pa.fill(0, 0, rows * k);
    for (let i = 0; i < rest; i++) {
      if (transA) { for (let p = 0; p < k; p++) pa[p * rows + i] = a[p * lda + r + i]; }
      else pa.set(a.subarray((r + i) * lda, (r + i) * lda + k), i * k);
    }
    pc.fill(0, 0, rows * n);
    if (beta !== 0) {
      for (let i = 0; i < rest; i++) pc.set(c.subarray((r + i) * ldc, (r + i) * ldc + n), i * n);
    }
    gemm(transA, transB, rows, n, k, alpha, pa, transA ? rows : k, b, ldb, beta, pc, n);
    for (let i = 0; i < rest; i++) c.set(pc.subarray(i * n, i * n + n), (r + i) * ldc);
  };
}

/** The host device: `gemm` for attention, `rowGemm` for the device's own matrix products. */
function hostDevice(gemm: Gemm, rowGemm: Gemm): Device<F32> {
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
    gemm: rowGemm,
    ...layerKernels<F32>(layers),
    attention: full.attention,
    attentionBackward: full.attentionBackward,
    attentionFirst: first.attention,
    attentionFirstBackward: first.attentionBackward,
    initDelta: (delta, batch, hidden, init, key) => {
      const { attentionMask, size, seqLen } = batch;
      initialDeltaHost(attentionMask, size, seqLen, hidden, init, key, delta);
    },
  };
}
