/**
 * The engine's WebGPU {@link Device}: every kernel as a WGSL compute shader
 * over GPU buffers (shared/engine/devices/webgpu/gemm.ts, layers.ts,
 * attention.ts), recorded into one command encoder and submitted once per
 * {@link Device.read}, which copies every buffer it reads into one staging
 * buffer and maps it once. A pass therefore costs one submission and one
 * readback; pipelines, bind groups and parameter slots are made once per
 * shape and reused (shared/engine/devices/webgpu/runtime.ts).
 *
 * Buffers: `alloc` makes one GPUBuffer (up to the adapter's maxBufferSize);
 * a view is (buffer, element offset, length), bound from the aligned offset
 * below it, so the engine's flat weight and gradient buffers may exceed the
 * storage binding limit. The kernels that can see a tensor larger than one
 * binding (the word table: embed, embedBackward, the MLM decoder's gemms,
 * gatherRows/scatterRows, fill/add/mul) split it by rows into bindings.
 * `fill(t, 0)` zeroes only what kernels and writes touched since t was last
 * zeroed (runtime.ts tracks it), so a gradient's unused word rows cost nothing.
 *
 * @module
 */
import { type Device, layerKernels } from "../../device.ts";
import { isSoftwareAdapter, requestGpuAdapter } from "./adapter.ts";
import { webgpuAttention } from "./attention.ts";
import { webgpuGemm } from "./gemm.ts";
import { webgpuLayers } from "./layers.ts";
import { type DeviceCounts, type GpuTensor, Runtime } from "./runtime.ts";

export type { DeviceCounts, GpuTensor } from "./runtime.ts";

/** Options of {@link createWebGpuDevice}. */
export interface WebGpuOptions {
  /** Time every dispatch with timestamp queries (slower: one compute pass per dispatch). */
  readonly profile?: boolean;
  /**
   * The matrix-product kernel: "tiled" (workgroup memory; default on hardware)
   * or "direct" (registers only; default on a software adapter).
   */
  readonly gemm?: "tiled" | "direct";
  /** An adapter to use (default: `navigator.gpu.requestAdapter()`). */
  readonly adapter?: GPUAdapter;
  /** Caps the storage binding size (bytes) below the adapter's, to exercise the split paths. */
  readonly maxBindingBytes?: number;
}

/** A WebGPU engine device and what it reports. */
export interface WebGpuDevice {
  readonly device: Device<GpuTensor>;
  /** The adapter's description (e.g. "llvmpipe (LLVM 15.0.6, 256 bits)"). */
  readonly adapter: string;
  /** Whether the adapter is a software (fallback) one. */
  readonly software: boolean;
  /** The counters since the device was made. */
  counts(): DeviceCounts;
  /** Kernel time (ms, from timestamp queries) and dispatches per kernel name, when profiling. */
  readonly profile: { readonly ms: Map<string, number>; readonly calls: Map<string, number> };
  /** Whether `profile` is filled (the option was set and the adapter has timestamp queries). */
  readonly profiling: boolean;
  /** The GPU device underneath. */
  readonly gpu: GPUDevice;
  /** Destroys the GPU device. */
  destroy(): void;
}

/** The adapter's limits as a plain record, to request all of them. */
function limitsOf(adapter: GPUAdapter): Record<string, number> {
  const out: Record<string, number> = {};
  const l = adapter.limits as unknown as Record<string, number>;
  for (const k in adapter.limits) if (typeof l[k] === "number") out[k] = l[k];
  return out;
}

/** Opens a WebGPU device on the default (or given) adapter; null when there is no adapter. */
export async function createWebGpuDevice(
  options: WebGpuOptions = {},
): Promise<WebGpuDevice | null> {
  if (typeof navigator === "undefined" || !navigator.gpu) return null;
  const adapter = options.adapter ?? await requestGpuAdapter();
  if (!adapter) return null;
  const timing = options.profile === true && adapter.features.has("timestamp-query");
  const gpu = await adapter.requestDevice({
    requiredLimits: limitsOf(adapter),
    requiredFeatures: timing ? ["timestamp-query"] : [],
  });
  const rt = new Runtime(gpu, { profile: timing, maxBindingBytes: options.maxBindingBytes });
  const info = adapter.info;
  const software = isSoftwareAdapter(adapter);
  return {
    device: webgpuDevice(rt, { gemm: options.gemm ?? (software ? "direct" : "tiled") }),
    adapter: info.description || `${info.vendor} ${info.device}`.trim(),
    software,
    counts: () => ({ ...rt.counts }),
    profile: rt.profile,
    profiling: timing,
    gpu,
    destroy: () => gpu.destroy(),
  };
}

/** The {@link Device} over a {@link Runtime}. */
export function webgpuDevice(
  rt: Runtime,
  options: { readonly gemm?: "tiled" | "direct" } = {},
): Device<GpuTensor> {
  const empty: GpuTensor = { buf: rt.createBuffer(256), offset: 0, length: 0 };
  const dummy: GpuTensor = { buf: empty.buf, offset: 0, length: 1 };
  /** One scratch buffer for kernels that need temporary memory between two dispatches. */
  let scratchBuf: GpuTensor | null = null;
  const scratch = (n: number): GpuTensor => {
    if (!scratchBuf || scratchBuf.length < n) {
      if (scratchBuf) rt.destroyLater(scratchBuf.buf);
      const len = Math.max(n, 2 * (scratchBuf?.length ?? 0), 1024);
      scratchBuf = { buf: rt.createBuffer(len * 4), offset: 0, length: len };
    }
    return { buf: scratchBuf.buf, offset: 0, length: n };
  };
  const layers = webgpuLayers(rt, scratch, dummy, options.gemm === "direct");
  return {
    alloc: (n) => n === 0 ? empty : { buf: rt.createBuffer(n * 4), offset: 0, length: n },
    view: (t, offset, n) => {
      if (offset < 0 || offset + n > t.length) {
        throw new Error(`view [${offset}, ${offset + n}) outside a buffer of ${t.length}`);
      }
      return { buf: t.buf, offset: t.offset + offset, length: n };
    },
    fill: layers.fill,
    read: (bufs, into) => rt.read(bufs, into),
    write: (t, data) => rt.write(t, data),
    release: (t) => {
      if (t.buf !== empty.buf) rt.destroyLater(t.buf);
    },
    gemm: webgpuGemm(rt, options.gemm === "direct"),
    ...layerKernels<GpuTensor>(layers),
    ...webgpuAttention(rt, scratch, options.gemm === "direct"),
    initDelta: layers.initDelta,
    counts: () => ({ ...rt.counts }),
  };
}
