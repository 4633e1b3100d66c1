/**
 * The backends the numerical tests run on: the tfjs ones (tfjs-cpu and
 * tfjs-wasm always, tfjs-webgpu when any adapter exists), and the engine's
 * matrix products on the host (the machine's BLAS when one loads, and the
 * plain JS gemm always).
 */
import type { TfjsBackendName } from "../../shared/compute/backend.ts";
import { loadBlas } from "../../shared/engine/devices/cpu/blas.ts";
import { type Gemm, jsGemm } from "../../shared/engine/devices/cpu/gemm.ts";
import type { Blas } from "../../shared/engine/devices/cpu/blas.ts";

/** The tfjs backends to test (the engine's are not: see {@link testGemms}). */
export async function testBackends(): Promise<TfjsBackendName[]> {
  const gpu = (globalThis.navigator as Navigator & { gpu?: GPU }).gpu;
  let adapter: GPUAdapter | null = null;
  try {
    adapter = (await gpu?.requestAdapter()) ?? null;
  } catch {
    adapter = null;
  }
  if (!adapter) console.warn("no WebGPU adapter here: tfjs-webgpu cases are skipped");
  return adapter ? ["tfjs-cpu", "tfjs-wasm", "tfjs-webgpu"] : ["tfjs-cpu", "tfjs-wasm"];
}

/** A gemm the engine can run on, by name, with its BLAS (null for jsGemm). */
export interface TestGemm {
  readonly name: string;
  readonly gemm: Gemm;
  readonly blas: Blas | null;
}

/**
 * The engine's gemms to test: the process's shared BLAS handle when
 * one loads (opened at import, so no test is charged with it), and jsGemm.
 */
export function testGemms(): TestGemm[] {
  const r = loadBlas();
  if (!r.blas) console.warn(`no BLAS here (${r.reason}): cpu cases run on jsGemm only`);
  return [
    ...(r.blas ? [{ name: "blas", gemm: r.blas.gemm, blas: r.blas }] : []),
    { name: "jsGemm", gemm: jsGemm, blas: null },
  ];
}
