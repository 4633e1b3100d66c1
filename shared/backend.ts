/**
 * Backend selection and set-up: cpu, wasm or webgpu, with the kernels and
 * matmul strategy that make training fast on each (platform-notes.md).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-cpu";
// tfjs-core alone registers no gradients; the full tfjs bundle registers them all.
import "@tensorflow/tfjs";
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm";
import { registerUnsortedSegmentSum } from "./kernels/unsorted_segment_sum.ts";
import { installMatMulGradient, setExplicitTranspose } from "./ops.ts";

/** A tfjs backend adaptmesh can train on. */
export type BackendName = "cpu" | "wasm" | "webgpu";

/** What was set up, for logs and `/status`. */
export interface BackendInfo {
  readonly name: BackendName;
  /** The device: the GPU adapter's description, or the CPU. */
  readonly device: string;
}

/** The folder holding `tfjs-backend-wasm-simd.wasm`, as a path with trailing slash. */
function wasmDir(): string {
  const url = import.meta.resolve("@tensorflow/tfjs-backend-wasm");
  // The resolved module lives in .../tfjs-backend-wasm/dist/...; the .wasm files sit in dist/.
  const path = new URL(url).pathname;
  return path.slice(0, path.lastIndexOf("/dist/") + "/dist/".length);
}

/** Describes the hardware GPU adapter, or null when there is none (or only a software one). */
export async function hardwareGpu(): Promise<string | null> {
  const gpu = (globalThis.navigator as Navigator & { gpu?: GPU }).gpu;
  if (!gpu) return null;
  try {
    const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
    if (!adapter) return null;
    const info = adapter.info;
    const text = [info.vendor, info.architecture, info.device, info.description]
      .filter((s) => s).join(" ");
    const software = /llvmpipe|lavapipe|swiftshader|software/i.test(text) ||
      (adapter as GPUAdapter & { isFallbackAdapter?: boolean }).isFallbackAdapter === true;
    return software ? null : (text || "unknown GPU");
  } catch {
    return null;
  }
}

/** Picks webgpu on a hardware GPU, else wasm (the fast CPU path). */
export async function pickBackend(): Promise<BackendName> {
  return (await hardwareGpu()) ? "webgpu" : "wasm";
}

let active: BackendInfo | null = null;

/**
 * tfjs environment flags from `ADAPTMESH_TF_FLAGS` (a JSON object, e.g.
 * `{"WEBGPU_CPU_FORWARD": false}`), for tuning a backend without code changes.
 */
function applyTfFlags(): void {
  const raw = Deno.env.get("ADAPTMESH_TF_FLAGS");
  if (!raw) return;
  let flags: unknown;
  try {
    flags = JSON.parse(raw);
  } catch (e) {
    throw new Error(`ADAPTMESH_TF_FLAGS is not JSON: ${(e as Error).message}`);
  }
  if (typeof flags !== "object" || flags === null || Array.isArray(flags)) {
    throw new Error("ADAPTMESH_TF_FLAGS must be a JSON object of tfjs flags");
  }
  for (const [k, v] of Object.entries(flags)) tf.env().set(k, v as number | boolean);
}

/** Sets up `name` as the tfjs backend; idempotent for the same name. */
export async function initBackend(name: BackendName): Promise<BackendInfo> {
  if (active?.name === name && tf.getBackend() === name) return active;
  let device = `${Deno.build.arch} CPU (${navigator.hardwareConcurrency} cores)`;
  if (name === "wasm") {
    setWasmPaths(wasmDir());
    registerUnsortedSegmentSum("wasm");
  } else if (name === "cpu") {
    registerUnsortedSegmentSum("cpu");
  } else {
    await import("@tensorflow/tfjs-backend-webgpu");
    const gpu = (globalThis.navigator as Navigator & { gpu?: GPU }).gpu;
    const adapter = await gpu?.requestAdapter({ powerPreference: "high-performance" });
    if (!adapter) throw new Error("webgpu: no GPU adapter found (is a Vulkan driver installed?)");
    const i = adapter.info;
    device = [i.vendor, i.architecture, i.device, i.description].filter((s) => s).join(" ") ||
      "unknown GPU";
  }
  if (!(await tf.setBackend(name))) throw new Error(`backend ${name} failed to initialise`);
  applyTfFlags();
  await tf.ready();
  // wasm is 10x slower with transpose flags; cpu gains too. GPUs handle them natively.
  setExplicitTranspose(name !== "webgpu");
  installMatMulGradient();
  active = { name, device };
  return active;
}

/** Releases the backend (webgpu: destroys the device so the process can exit cleanly). */
export function disposeBackend(): void {
  if (!active) return;
  const name = active.name;
  tf.engine().reset();
  if (name === "webgpu") {
    const backend = tf.findBackend("webgpu") as unknown as { device?: GPUDevice } | null;
    tf.removeBackend("webgpu");
    backend?.device?.destroy();
  }
  active = null;
}
