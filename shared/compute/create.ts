/**
 * The one factory that turns a backend choice into a compute: it sets the
 * backend up in this process (the BLAS of `cpu`, tfjs for `tfjs-*`) and
 * returns a {@link ComputeBackend} whose `model()` is a {@link ModelCompute}
 * — the engine (shared/engine/) on a device, or tfjs. Nothing else in the
 * code chooses between them.
 *
 * @module
 */
import {
  availableCores,
  type BackendName,
  type BackendOptions,
  CPU_HINT,
  cpuBlas,
  cpuName,
  hostBlas,
  isTfjsBackend,
  parseBackendName,
  pickBackend,
  type TfjsBackendName,
} from "./backend.ts";
import type { ComputeBackend, ModelCompute } from "./model_compute.ts";
import { EngineCompute } from "./engine_compute.ts";
import type { Blas } from "../engine/devices/cpu/blas.ts";
import type { Gemm } from "../engine/devices/cpu/gemm.ts";
import { cpuDevice } from "../engine/devices/cpu/device.ts";
import { EngineModel } from "../engine/engine.ts";
import type { ModelConfig } from "../model/config.ts";
import type { ParamLayout } from "../model/param_layout.ts";
import { disposeTfjs, initTfjs } from "../tfjs/backend.ts";
import { TfjsCompute } from "../tfjs/compute.ts";
import { createWebGpuDevice, type WebGpuDevice } from "../engine/devices/webgpu/device.ts";
import { requestGpuAdapter } from "../engine/devices/webgpu/adapter.ts";

/** Why `--backend webgpu` cannot start: this process sees no WebGPU adapter at all. */
export const NO_WEBGPU_ADAPTER =
  "webgpu: no WebGPU adapter (navigator.gpu.requestAdapter() gave none); on an NVIDIA machine " +
  "install the Vulkan loader (libvulkan1) and point VK_DRIVER_FILES at the NVIDIA ICD json, " +
  "or use cpu";

/** The process's one WebGPU device (made on first use, destroyed by {@link disposeBackend}). */
let gpu: WebGpuDevice | null = null;

/**
 * The engine on a GPU device (backend `webgpu`): shared/engine/devices/webgpu/
 * on the adapter `navigator.gpu` gives — a hardware GPU where there is one,
 * else a software adapter such as Mesa's llvmpipe (which the automatic choice
 * never picks, but `--backend webgpu` runs on: that is how tests exercise it).
 */
async function webgpuBackend(): Promise<ComputeBackend> {
  gpu ??= await createWebGpuDevice();
  if (!gpu) throw new Error(NO_WEBGPU_ADAPTER);
  const { device: dev } = gpu;
  const device = `${gpu.adapter}${gpu.software ? " (software adapter)" : ""}`;
  return {
    name: "webgpu",
    device,
    model: (config, layout) =>
      new EngineCompute(new EngineModel(dev, config, layout), "webgpu", device),
  };
}

/**
 * Why `name` cannot be set up on this machine (null: it can be tried), for
 * commands that start others on it (`deno task cluster`): webgpu needs an
 * adapter.
 */
export async function backendUnavailable(name: BackendName): Promise<string | null> {
  if (name !== "webgpu") return null;
  return (await requestGpuAdapter()) ? null : NO_WEBGPU_ADAPTER;
}

/**
 * The engine on the host (backend `cpu`) with matrix products by `gemm`
 * (the BLAS's, or jsGemm in tests). With a `blas` that controls threads,
 * each model puts it at `threads` (one in a deterministic run) before every
 * call: the setting is per process and shared with any other user.
 */
export function cpuBackend(
  gemm: Gemm,
  opts: { readonly blas?: Blas; readonly threads?: number; readonly device?: string } = {},
): ComputeBackend {
  const { blas, threads } = opts;
  const device = opts.device ?? (blas ? `${blas.describe()} on ${cpuName()}` : cpuName());
  return {
    name: "cpu",
    device,
    ...(blas ? { blas } : {}),
    ...(threads !== undefined ? { threads } : {}),
    model(config, layout, o = {}) {
      const want = o.deterministic ? 1 : (threads ?? null);
      const before = () => {
        if (!blas?.threadControl || want === null) return;
        if (blas.threads() !== want) blas.setThreads(want);
      };
      const engine = new EngineModel(cpuDevice(gemm, { rowStable: o.rowStable }), config, layout);
      return new EngineCompute(engine, "cpu", device, { before });
    },
  };
}

/** tfjs on `name` (set up already, see shared/tfjs/backend.ts). */
function tfjsBackend(name: TfjsBackendName, device: string): ComputeBackend {
  return {
    name,
    device,
    model: (config, layout) => new TfjsCompute(name, device, config, layout),
  };
}

let active: ComputeBackend | null = null;

/**
 * Sets up `name` and returns it; tfjs backends are idempotent for the same
 * name, cpu applies `opts.threads` again. cpu needs a BLAS and webgpu an
 * adapter: each throws, saying why, without one.
 */
export async function initBackend(
  name: BackendName,
  opts: BackendOptions = {},
): Promise<ComputeBackend> {
  if (name === "webgpu") return active = await webgpuBackend();
  if (isTfjsBackend(name)) {
    const info = await initTfjs(name);
    active = tfjsBackend(info.name, info.device);
    return active;
  }
  const { blas, reason } = cpuBlas(opts);
  if (!blas) throw new Error(`cpu: ${reason}; ${CPU_HINT}`);
  await initTfjs("tfjs-wasm"); // for anything that still uses tensors
  const threads = opts.threads ?? availableCores();
  if (!Number.isInteger(threads) || threads < 1) {
    throw new Error(`--threads must be a positive integer, got ${threads}`);
  }
  blas.setThreads(threads);
  active = cpuBackend(blas.gemm, { blas, threads });
  return active;
}

/** The backend set up last in this process, if any. */
export function activeBackend(): ComputeBackend | null {
  return active;
}

/**
 * Chooses (`requested` undefined: {@link pickBackend}; an old name is
 * accepted with a note) and sets up a backend, and returns the one line that
 * says which, on what, and — on tfjs-wasm picked automatically — how to get
 * the faster one.
 */
export async function startBackend(
  requested: string | undefined,
  opts: BackendOptions = {},
): Promise<{ backend: ComputeBackend; line: string }> {
  let note: string | null = null;
  let name: BackendName;
  if (requested !== undefined) name = parseBackendName(requested);
  else ({ name, note } = await pickBackend(opts));
  const backend = await initBackend(name, opts);
  const how = requested !== undefined ? "" : " (auto)";
  const hint = note ? `; ${note}; ${CPU_HINT}` : "";
  return { backend, line: `backend ${backend.name}${how} on ${backend.device}${hint}` };
}

/** Releases the backend (webgpu, tfjs-webgpu: destroys the device so the process can exit cleanly). */
export function disposeBackend(): void {
  disposeTfjs();
  gpu?.destroy();
  gpu = null;
  active = null;
}

/**
 * The coordinator's own compute for `config`/`layout`: the engine on the host
 * with a BLAS handle of its own where one loads (see {@link hostBlas}; one
 * thread when `deterministic`; row-stable, see `cpuDevice`), else tfjs-wasm —
 * and tfjs-wasm for `maskedLm` scoring, which only tfjs has. Dispose it when done (that closes
 * the BLAS handle).
 */
export async function hostCompute(
  config: ModelConfig,
  layout: ParamLayout,
  opts: { readonly deterministic?: boolean; readonly maskedLm?: boolean } = {},
): Promise<ModelCompute> {
  const blas = opts.maskedLm ? null : hostBlas({ threads: opts.deterministic ? 1 : undefined });
  if (!blas) {
    const info = await initTfjs("tfjs-wasm");
    return tfjsBackend(info.name, info.device).model(config, layout);
  }
  // It only scores: an example's logits independent of its place in the batch.
  const engine = new EngineModel(cpuDevice(blas.gemm, { rowStable: true }), config, layout);
  const device = `${blas.describe()} on ${cpuName()}`;
  return new EngineCompute(engine, "cpu", device, { release: () => blas.close() });
}
