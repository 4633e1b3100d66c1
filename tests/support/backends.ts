/** The backends the numerical tests run on: cpu and wasm always, webgpu when any adapter exists. */
import type { BackendName } from "../../shared/backend.ts";

export async function testBackends(): Promise<BackendName[]> {
  const gpu = (globalThis.navigator as Navigator & { gpu?: GPU }).gpu;
  let adapter: GPUAdapter | null = null;
  try {
    adapter = (await gpu?.requestAdapter()) ?? null;
  } catch {
    adapter = null;
  }
  if (!adapter) console.warn("no WebGPU adapter here: webgpu cases are skipped");
  return adapter ? ["cpu", "wasm", "webgpu"] : ["cpu", "wasm"];
}
