/**
 * What the engine asks of a device: buffers and the kernels of one training
 * pass. The passes themselves (shared/engine/encoder.ts, heads.ts) are
 * written once against this interface; shared/engine/devices/cpu/device.ts
 * implements it on the host (matrix products through a {@link Gemm}: the
 * machine's BLAS), and a WebGPU device can implement the same kernels as
 * shaders over GPU buffers: one engine, two devices.
 *
 * Conventions every implementation keeps:
 * - `T` is a device buffer or a view into one ({@link Device.view}); all
 *   matrices are row-major float32 with the row stride given where it is not
 *   the column count.
 * - Kernels only enqueue work and write their outputs into buffers: nothing
 *   returns a value to the host, so a GPU device can run a whole pass in one
 *   submission and read back once ({@link Device.read}).
 * - Gradient outputs named `d…` that are marked "accumulate" are added to
 *   (the engine zeroes them once per task), everything else is overwritten.
 * - Integer inputs (token ids, positions, mask, labels) come as host arrays in
 *   a {@link BatchIndex}; a device may upload them once per batch.
 *
 * @module
 */
import type { AdversaryConfig } from "../method/adversary_config.ts";
import type { ModelConfig } from "../model/config.ts";

/**
 * C = alpha·op(A)·op(B) + beta·C, row-major, op = transpose when the flag is
 * set: op(A) is m×k, op(B) is k×n, C is m×n. A, B and C are views whose
 * element 0 is the matrix's first element; lda, ldb, ldc are their row
 * strides (in elements) as stored (A stored k×m when transposed, and so on).
 * With beta = 0, C is overwritten (its old contents, even NaN, are ignored).
 */
export type GemmOn<T> = (
  transA: boolean,
  transB: boolean,
  m: number,
  n: number,
  k: number,
  alpha: number,
  a: T,
  lda: number,
  b: T,
  ldb: number,
  beta: number,
  c: T,
  ldc: number,
) => void;

/** What the random start of δ is keyed by: the task's seed, step and micro-batch index. */
export interface TaskKey {
  readonly seed: number;
  readonly step: number;
  readonly index: number;
}

/**
 * One LayerNorm over `rows` rows of width `cols`: its input, γ, and the mean
 * and 1/std per row that the forward fills and the backward reads.
 */
export interface NormState<T> {
  readonly x: T;
  readonly gamma: T;
  readonly mean: T;
  readonly rstd: T;
  readonly rows: number;
  readonly cols: number;
}

/** The integer side of a micro-batch, on the host. All [B, L] row-major unless said. */
export interface BatchIndex {
  readonly size: number;
  readonly seqLen: number;
  readonly inputIds: Int32Array;
  readonly tokenTypeIds: Int32Array;
  readonly positionIds: Int32Array;
  /** 1 at real tokens, 0 at padding. */
  readonly attentionMask: Uint8Array;
}

/** Some rows of a dropout site's tensor: row i is elements [starts[i], starts[i] + width). */
export interface MaskRows {
  readonly starts: Int32Array;
  readonly width: number;
}

/** Shapes of one attention call. */
export interface AttentionShape {
  readonly batch: BatchIndex;
  readonly heads: number;
  readonly headDim: number;
}

/**
 * An attention forward (see {@link Device.attention}): qkv [N, 3H] in; probs,
 * dropped (probs·dropMask) and ctx written.
 */
export type AttentionKernel<T> = (
  qkv: T,
  probs: T,
  dropMask: T | null,
  dropped: T,
  ctx: T,
  shape: AttentionShape,
) => void;

/** An attention backward: dqkv [N, 3H] (overwrite) from dctx, through dropout and softmax. */
export type AttentionBackwardKernel<T> = (
  dctx: T,
  qkv: T,
  probs: T,
  dropMask: T | null,
  dropped: T,
  dqkv: T,
  shape: AttentionShape,
) => void;

/**
 * What a device did, counted since it was made (every engine device reports
 * the same shape): kernel dispatches (a host device: kernel calls), command
 * submissions, readbacks (a host device: {@link Device.read} calls), bytes
 * uploaded to the device, random numbers made on the host (dropout masks and
 * δ_0 on a host device; 0 where kernels make them), pipelines compiled.
 */
export interface DeviceCounts {
  dispatches: number;
  submits: number;
  readbacks: number;
  uploadBytes: number;
  hostRandom: number;
  pipelinesCompiled: number;
}

/** Zeroed {@link DeviceCounts}. */
export function zeroCounts(): DeviceCounts {
  return {
    dispatches: 0,
    submits: 0,
    readbacks: 0,
    uploadBytes: 0,
    hostRandom: 0,
    pipelinesCompiled: 0,
  };
}

/**
 * The layer kernels each device takes as they are from its layers module
 * (the elementwise, normalisation, activation, row, loss and ascent kernels).
 */
export const LAYER_KERNELS = [
  "dropoutMask",
  "mul",
  "add",
  "embed",
  "embedBackward",
  "addBias",
  "colSum",
  "biasDropoutResidual",
  "layerNorm",
  "layerNormBackward",
  "biasGelu",
  "geluBackward",
  "biasTanh",
  "tanhBackward",
  "gatherRows",
  "scatterRows",
  "crossEntropy",
  "meanSquaredError",
  "ascend",
] as const;

/** One of {@link LAYER_KERNELS}. */
export type LayerKernel = typeof LAYER_KERNELS[number];

/** The {@link LAYER_KERNELS} of `from` (a device's layers module), for a device to spread in. */
export function layerKernels<T>(from: Pick<Device<T>, LayerKernel>): Pick<Device<T>, LayerKernel> {
  const out: Partial<Record<LayerKernel, unknown>> = {};
  for (const k of LAYER_KERNELS) out[k] = from[k];
  return out as Pick<Device<T>, LayerKernel>;
}

/** `b − a`, counter by counter (the counts of what happened between two snapshots). */
export function countsSince(a: DeviceCounts, b: DeviceCounts): DeviceCounts {
  return {
    dispatches: b.dispatches - a.dispatches,
    submits: b.submits - a.submits,
    readbacks: b.readbacks - a.readbacks,
    uploadBytes: b.uploadBytes - a.uploadBytes,
    hostRandom: b.hostRandom - a.hostRandom,
    pipelinesCompiled: b.pipelinesCompiled - a.pipelinesCompiled,
  };
}

/** The buffers and kernels of a training pass on one device. */
export interface Device<T> {
  /** The device's counters so far (a snapshot), where it keeps them. */
  readonly counts?: () => DeviceCounts;
  /** A new zero-filled buffer of `n` floats. */
  alloc(n: number): T;
  /** Elements [offset, offset + n) of `t`, as a buffer the kernels accept. */
  view(t: T, offset: number, n: number): T;
  /** Overwrites `t` with `value`. */
  fill(t: T, value: number): void;
  /**
   * Host copies of `bufs`, after every kernel enqueued before: the one
   * synchronisation point of a pass (a GPU device copies them into one staging
   * buffer and maps it once). `into[i]`, when given, receives buffer i and is
   * returned in its place (no copy when it is the buffer itself, see
   * {@link Device.alias}); otherwise a new array is returned.
   */
  read(bufs: readonly T[], into?: readonly (Float32Array | undefined)[]): Promise<Float32Array[]>;
  /** Copies host data into `t`. */
  write(t: T, data: Float32Array): void;
  /**
   * Present only on a device whose buffers are host memory: `host` itself as a
   * buffer, no copy (the weights and the gradient of a host device live in the
   * caller's arrays).
   */
  readonly alias?: (host: Float32Array) => T;
  /** Frees a buffer made by {@link Device.alloc} (not a view); using it afterwards is an error. */
  release(t: T): void;

  /** C = alpha·op(A)·op(B) + beta·C ({@link GemmOn}). */
  readonly gemm: GemmOn<T>;

  /**
   * Fills `mask` with dropout multipliers of (seed, site) (shared/method/dropout_mask.ts):
   * elements 0..n-1, or with `rows` only the rows [starts[i], starts[i] + width).
   */
  dropoutMask(mask: T, seed: number, site: number, rate: number, rows?: MaskRows): void;
  /** out[i] = x[i]·mask[i] (out may be x). */
  mul(x: T, mask: T, out: T): void;
  /** out[i] += x[i]. */
  add(x: T, out: T): void;

  /** x0[n, :] = word[id] + pos[position] + type[tokenType] (+ delta[n, :]). */
  embed(x0: T, word: T, pos: T, type: T, delta: T | null, batch: BatchIndex, hidden: number): void;
  /** Scatter-add of dx0 rows into the used rows of the three tables (accumulate); dword may be null. */
  embedBackward(
    dx0: T,
    dword: T | null,
    dpos: T,
    dtype: T,
    batch: BatchIndex,
    hidden: number,
  ): void;

  /** y[r, :] += bias. */
  addBias(y: T, bias: T, rows: number, cols: number): void;
  /** dbias[j] += Σ_r x[r, j] (accumulate). */
  colSum(x: T, rows: number, cols: number, dbias: T): void;
  /** out = res + (y + bias)·mask (mask null: no dropout). out may be y or res. */
  biasDropoutResidual(
    y: T,
    bias: T,
    mask: T | null,
    res: T,
    out: T,
    rows: number,
    cols: number,
  ): void;

  /** out = LayerNorm(n.x)·γ + β per row; fills n.mean and n.rstd for the backward. */
  layerNorm(n: NormState<T>, beta: T, out: T, eps: number): void;
  /** dx = ∂LN/∂x·dy (overwrite; may be dy); dgamma, dbeta accumulate when given. */
  layerNormBackward(n: NormState<T>, dy: T, dx: T, dgamma: T | null, dbeta: T | null): void;

  /** g = GELU(u + bias) (erf form); deriv = GELU'(u + bias) when given (for the backward). */
  biasGelu(u: T, bias: T, g: T, deriv: T | null, rows: number, cols: number): void;
  /** dg[i] *= deriv[i] in place (dg becomes du); dbias accumulates Σ_r du when given. */
  geluBackward(dg: T, deriv: T, dbias: T | null, rows: number, cols: number): void;

  /** y = tanh(y + bias) in place. */
  biasTanh(y: T, bias: T, rows: number, cols: number): void;
  /** dy[i] *= 1 − y[i]² in place; dbias accumulates Σ_r of the result when given. */
  tanhBackward(dy: T, y: T, dbias: T | null, rows: number, cols: number): void;

  /**
   * Multi-head self-attention from qkv [N, 3H] (Q | K | V blocks): probs
   * [B, heads, L, L] = softmax(Q·Kᵀ/√d, padding keys masked), dropped =
   * probs·dropMask (null: no dropout, dropped unused), ctx [N, H] = dropped·V.
   */
  readonly attention: AttentionKernel<T>;
  /**
   * {@link Device.attention} for the first query of each example only (the
   * last layer under a classifier): probs, dropMask, dropped [B, heads, L]
   * (rows q = 0 of the full tensors), ctx [B, H].
   */
  readonly attentionFirst: AttentionKernel<T>;
  /** The backward of {@link Device.attentionFirst} into dqkv [N, 3H] (overwrite). */
  readonly attentionFirstBackward: AttentionBackwardKernel<T>;
  /** dqkv [N, 3H] (overwrite) from dctx [N, H], through dropout and softmax. */
  readonly attentionBackward: AttentionBackwardKernel<T>;

  /** out[i, :] = x[rows[i], :]: rows of x (width `cols`) at the given row indices. */
  gatherRows(x: T, rows: Int32Array, cols: number, out: T): void;
  /** dx[rows[i], :] += dout[i, :] (accumulate). */
  scatterRows(dout: T, rows: Int32Array, cols: number, dx: T): void;

  /**
   * Mean softmax cross-entropy of logits [rows, cols] against class ids: adds
   * `weight`·loss to loss[0]; dlogits (when given; may be logits) is the
   * gradient of what was added: weight·(softmax − onehot)/rows.
   */
  crossEntropy(
    logits: T,
    labels: Int32Array,
    rows: number,
    cols: number,
    loss: T,
    weight: number,
    dlogits: T | null,
  ): void;
  /** Mean squared error of logits [rows] against targets: like {@link Device.crossEntropy}. */
  meanSquaredError(
    logits: T,
    targets: Float32Array,
    rows: number,
    loss: T,
    weight: number,
    dlogits: T | null,
  ): void;

  /**
   * δ_0 into delta [B, L, H]: zero (init 0), or the random start of
   * shared/method/adversary.ts `initialDeltaHost` keyed by `key`, the same
   * values on every device.
   */
  initDelta(delta: T, batch: BatchIndex, hidden: number, init: number, key: TaskKey): void;
  /** One adversary ascent step and projection on delta [B, L, H] in place (shared/tfjs/adversary.ts). */
  ascend(delta: T, grad: T, batch: BatchIndex, hidden: number, cfg: AdversaryConfig): void;
}

/**
 * A part of the model (the encoder, a head) as one pass sees it: the device,
 * the model's shape, the part's weights `w` and its buffers for the batch.
 */
export interface PassPart<T, W, B> {
  readonly dev: Device<T>;
  readonly config: ModelConfig;
  readonly w: W;
  readonly bufs: B;
}

/** Time and calls per kernel, filled by {@link profiled}. */
export interface KernelProfile {
  readonly ms: Map<string, number>;
  readonly calls: Map<string, number>;
}

/** An empty {@link KernelProfile}. */
export function kernelProfile(): KernelProfile {
  return { ms: new Map(), calls: new Map() };
}

/**
 * `dev` with every kernel timed into `profile` by `clock` (ms; default wall
 * time: on a device that only enqueues, the enqueue time). For profiling,
 * not the hot path.
 */
export function profiled<T>(
  dev: Device<T>,
  profile: KernelProfile,
  clock: () => number = () => performance.now(),
): Device<T> {
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(dev)) {
    if (typeof fn !== "function") continue;
    out[name] = (...args: unknown[]) => {
      const t = clock();
      try {
        return fn(...args);
      } finally {
        profile.ms.set(name, (profile.ms.get(name) ?? 0) + clock() - t);
        profile.calls.set(name, (profile.calls.get(name) ?? 0) + 1);
      }
    };
  }
  return out as unknown as Device<T>;
}
