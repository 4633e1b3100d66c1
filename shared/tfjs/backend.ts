/**
 * tfjs's own set-up for the `tfjs-*` backends (docs/platform.md, "tfjs
 * backends"): the wasm binaries' folder, the kernels and matmul strategy that
 * make training fast on each, `ADAPTMESH_TF_FLAGS`, and a clean release. The
 * one module that loads tfjs backends; shared/compute/create.ts calls it.
 *
 * @module
 */
import { requestGpuAdapter } from "../engine/devices/webgpu/adapter.ts";
import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-cpu";
// tfjs-core alone registers no gradients; the full tfjs bundle registers them all.
import "@tensorflow/tfjs";
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm";
import { registerUnsortedSegmentSum } from "./unsorted_segment_sum.ts";
import { installMatMulGradient, setExplicitTranspose } from "./ops.ts";
import { cpuName, type TfjsBackendName } from "../compute/backend.ts";

/** tfjs's own name of each `tfjs-*` backend. */
const TFJS_NAME: Readonly<Record<TfjsBackendName, "wasm" | "cpu" | "webgpu">> = {
  "tfjs-wasm": "wasm",
  "tfjs-cpu": "cpu",
  "tfjs-webgpu": "webgpu",
};

/** A tfjs backend set up: its name and the device it runs on. */
export interface TfjsInfo {
  readonly name: TfjsBackendName;
  readonly device: string;
}

/** The folder holding `tfjs-backend-wasm-simd.wasm`, as a path with trailing slash. */
function wasmDir(): string {
  const url = import.meta.resolve("@tensorflow/tfjs-backend-wasm");
  // The resolved module lives in .../tfjs-backend-wasm/dist/...; the .wasm files sit in dist/.
  const path = new URL(url).pathname;
  return path.slice(0, path.lastIndexOf("/dist/") + "/dist/".length);
}

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

let tfActive: TfjsInfo | null = null;

/** Sets up tfjs on `name` (idempotent for the same name) and says on what it runs. */
export async function initTfjs(name: TfjsBackendName): Promise<TfjsInfo> {
  const tfName = TFJS_NAME[name];
  if (tfActive?.name === name && tf.getBackend() === tfName) return tfActive;
  let device = cpuName();
  if (tfName === "wasm") {
    setWasmPaths(wasmDir());
    registerUnsortedSegmentSum("wasm");
  } else if (tfName === "cpu") {
    registerUnsortedSegmentSum("cpu");
  } else {
    await import("@tensorflow/tfjs-backend-webgpu");
    const adapter = await requestGpuAdapter();
    if (!adapter) {
      throw new Error("tfjs-webgpu: no GPU adapter found (is a Vulkan driver installed?)");
    }
    const i = adapter.info;
    device = [i.vendor, i.architecture, i.device, i.description].filter((s) => s).join(" ") ||
      "unknown GPU";
  }
  if (!(await tf.setBackend(tfName))) throw new Error(`backend ${name} failed to initialise`);
  applyTfFlags();
  await tf.ready();
  // wasm is 10x slower with transpose flags; cpu gains too. GPUs handle them natively.
  setExplicitTranspose(tfName !== "webgpu");
  installMatMulGradient();
  tfActive = { name, device };
  return tfActive;
}

/** Releases tfjs's backend (webgpu: destroys the device so the process can exit cleanly). */
export function disposeTfjs(): void {
  if (!tfActive) return;
  const tfName = TFJS_NAME[tfActive.name];
  tf.engine().reset();
  if (tfName === "webgpu") {
    const backend = tf.findBackend("webgpu") as unknown as { device?: GPUDevice } | null;
    tf.removeBackend("webgpu");
    backend?.device?.destroy();
  }
  tfActive = null;
}
