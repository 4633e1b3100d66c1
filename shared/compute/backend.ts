/**
 * Backend selection and set-up: webgpu, native, wasm or cpu, with the kernels
 * and matmul strategy that make training fast on each (docs/platform.md).
 *
 * `native` is the CPU engine of shared/engine/ with every matrix product on
 * the machine's BLAS through FFI (shared/engine/devices/cpu/blas.ts); tfjs runs on wasm
 * underneath it for anything that still uses tensors.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-cpu";
// tfjs-core alone registers no gradients; the full tfjs bundle registers them all.
import "@tensorflow/tfjs";
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm";
import { registerUnsortedSegmentSum } from "../tfjs/unsorted_segment_sum.ts";
import { installMatMulGradient, setExplicitTranspose } from "../tfjs/ops.ts";
import { type Blas, BLAS_ENV, isNoBlas, loadBlas } from "../engine/devices/cpu/blas.ts";
import { FlagError, type FlagSpecs } from "../cli/flags.ts";

/** Every backend adaptmesh can train on, fastest first: the one list flags and metrics use. */
export const BACKEND_NAMES = ["webgpu", "native", "wasm", "cpu"] as const;

/** A backend adaptmesh can train on. */
export type BackendName = (typeof BACKEND_NAMES)[number];

/** `--backend` help text. */
export const BACKEND_HELP = `${
  BACKEND_NAMES.join(" | ")
} (default: webgpu on a hardware GPU, else native when a BLAS library loads, else wasm)`;

/** Whether `s` names a backend. */
export function isBackendName(s: string): s is BackendName {
  return (BACKEND_NAMES as readonly string[]).includes(s);
}

/** `s` as a backend name, or an error that lists the names. */
export function parseBackendName(s: string, what = "--backend"): BackendName {
  if (isBackendName(s)) return s;
  throw new Error(`${what} must be one of ${BACKEND_NAMES.join(", ")}, got "${s}"`);
}

/** The flags every command that computes takes: `--backend`, `--threads`, `--blas`. */
export const BACKEND_FLAGS = {
  backend: { type: "string", help: BACKEND_HELP },
  threads: {
    type: "int",
    help: "native: BLAS threads (default: every core this process may use)",
  },
  blas: {
    type: "string",
    help:
      `native: the BLAS library (path or soname), or "none" for no BLAS (default: $${BLAS_ENV}, else OpenBLAS, BLIS, MKL, CBLAS by their usual names)`,
  },
} as const satisfies FlagSpecs;

/**
 * The backend request of parsed {@link BACKEND_FLAGS}: a validated backend
 * name (undefined: pick), and the native options. Throws a {@link FlagError}.
 */
export function backendRequest(
  flags: { backend?: string; threads?: number; blas?: string },
): { requested: BackendName | undefined; opts: BackendOptions } {
  let requested: BackendName | undefined;
  if (flags.backend !== undefined) {
    if (!isBackendName(flags.backend)) {
      throw new FlagError(
        `--backend must be one of ${BACKEND_NAMES.join(", ")}, got "${flags.backend}"`,
      );
    }
    requested = flags.backend;
  }
  if (flags.threads !== undefined && flags.threads < 1) {
    throw new FlagError(`--threads must be at least 1, got ${flags.threads}`);
  }
  if (flags.blas !== undefined && flags.blas.trim() === "") {
    throw new FlagError("--blas needs a library path or soname, or none");
  }
  return { requested, opts: { threads: flags.threads, blas: flags.blas } };
}

/** How to set up the native backend (ignored by the others). */
export interface BackendOptions {
  /** BLAS threads (default: every core this process may use). */
  readonly threads?: number;
  /**
   * The BLAS library: a path or soname, or `none` for no BLAS (native is then
   * unavailable). Default: `$ADAPTMESH_BLAS`, else the usual sonames.
   */
  readonly blas?: string;
}

/** What was set up, for logs and `/status`. */
export interface BackendInfo {
  readonly name: BackendName;
  /** The device: the GPU adapter's description, or the CPU (and, native, its BLAS). */
  readonly device: string;
  /** native: the library every matrix product goes through. */
  readonly blas?: Blas;
  /** native: BLAS threads asked for. */
  readonly threads?: number;
}

/** Cores this process may run on (respects CPU affinity). */
export function availableCores(): number {
  return Math.max(1, navigator.hardwareConcurrency || 1);
}

function cpuName(): string {
  return `${Deno.build.arch} CPU (${availableCores()} cores)`;
}

/** The BLAS the options ask for: explicit path, "none", or search (null). */
function blasRequest(opts: BackendOptions): string | undefined {
  const v = opts.blas ?? Deno.env.get(BLAS_ENV);
  return v === undefined || v.trim() === "" ? undefined : v.trim();
}

/**
 * Loads the BLAS for the native backend. Null with the reason when none is
 * wanted or none loads; an explicitly named library that does not load is an
 * error (it was asked for by name).
 */
export function nativeBlas(
  opts: BackendOptions & { own?: boolean } = {},
): { blas: Blas; reason: null } | { blas: null; reason: string } {
  const req = blasRequest(opts);
  if (isNoBlas(req)) {
    return {
      blas: null,
      reason: `BLAS turned off (${opts.blas !== undefined ? "--blas" : BLAS_ENV}=${req})`,
    };
  }
  const r = loadBlas({ ...(req === undefined ? {} : { path: req }), own: opts.own });
  if (r.blas) return { blas: r.blas, reason: null };
  if (req !== undefined) throw new Error(r.reason);
  return { blas: null, reason: r.reason };
}

let hostSaid: string | null = null;

/**
 * A BLAS handle of the caller's own for host-side compute (the
 * coordinator's evaluation), with `opts.threads` threads (default: every
 * core); close it when done. Null when none is wanted or none loads — never
 * throws. Says once per process which it is (through `log`, default console.log).
 */
export function hostBlas(
  opts: BackendOptions & { log?: (line: string) => void } = {},
): Blas | null {
  let line: string;
  let blas: Blas | null = null;
  try {
    const r = nativeBlas({ ...opts, own: true });
    blas = r.blas;
    line = r.blas ? "" : `host compute on wasm: ${r.reason}; ${NATIVE_HINT}`;
  } catch (e) {
    line = `host compute on wasm: ${(e as Error).message}`;
  }
  if (blas) {
    blas.setThreads(opts.threads ?? availableCores());
    line = `host compute on native: ${blas.describe()}`;
  }
  if (line !== hostSaid) (opts.log ?? console.log)(line);
  hostSaid = line;
  return blas;
}

/** The hint printed when the CPU runs on wasm. */
export const NATIVE_HINT =
  "for the faster native backend: apt-get install libopenblas0-pthread (or --blas PATH)";

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

/** A backend chosen automatically, and why the faster ones were not. */
export interface BackendPick {
  readonly name: BackendName;
  /** Why native was not chosen on a CPU (null when it was, or on a GPU). */
  readonly note: string | null;
}

/**
 * Picks webgpu on a hardware GPU, else native when a BLAS library loads, else
 * wasm. Throws only when a library named by `--blas`/`$ADAPTMESH_BLAS` does not load.
 */
export async function pickBackend(opts: BackendOptions = {}): Promise<BackendPick> {
  if (await hardwareGpu()) return { name: "webgpu", note: null };
  const native = nativeBlas(opts);
  return native.blas ? { name: "native", note: null } : { name: "wasm", note: native.reason };
}

let active: BackendInfo | null = null;
let tfActive: BackendInfo | null = null;

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

/**
 * Sets up `name`; idempotent for the same name (native: applies `opts.threads`
 * again). Native needs a BLAS: it throws, saying why, when none loads.
 */
export async function initBackend(
  name: BackendName,
  opts: BackendOptions = {},
): Promise<BackendInfo> {
  if (name === "native") {
    const { blas, reason } = nativeBlas(opts);
    if (!blas) throw new Error(`native: ${reason}; ${NATIVE_HINT}`);
    await initTf("wasm");
    const threads = opts.threads ?? availableCores();
    if (!Number.isInteger(threads) || threads < 1) {
      throw new Error(`--threads must be a positive integer, got ${threads}`);
    }
    blas.setThreads(threads);
    active = { name, device: `${blas.describe()} on ${cpuName()}`, blas, threads };
    return active;
  }
  const info = await initTf(name);
  active = info;
  return info;
}

async function initTf(name: Exclude<BackendName, "native">): Promise<BackendInfo> {
  if (tfActive?.name === name && tf.getBackend() === name) return tfActive;
  let device = cpuName();
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
  tfActive = { name, device };
  return tfActive;
}

/** The backend set up last in this process, if any. */
export function activeBackend(): BackendInfo | null {
  return active;
}

/**
 * Chooses (`requested` undefined: {@link pickBackend}) and sets up a backend,
 * and returns the one line that says which, on what, and — on wasm — how to
 * get the faster one.
 */
export async function startBackend(
  requested: string | undefined,
  opts: BackendOptions = {},
): Promise<{ info: BackendInfo; line: string }> {
  let note: string | null = null;
  let name: BackendName;
  if (requested !== undefined) name = parseBackendName(requested);
  else ({ name, note } = await pickBackend(opts));
  const info = await initBackend(name, opts);
  const how = requested !== undefined ? "" : " (auto)";
  const hint = note ? `; ${note}; ${NATIVE_HINT}` : "";
  return { info, line: `backend ${info.name}${how} on ${info.device}${hint}` };
}

/** Releases the backend (webgpu: destroys the device so the process can exit cleanly). */
export function disposeBackend(): void {
  if (!tfActive) return;
  const name = tfActive.name;
  tf.engine().reset();
  if (name === "webgpu") {
    const backend = tf.findBackend("webgpu") as unknown as { device?: GPUDevice } | null;
    tf.removeBackend("webgpu");
    backend?.device?.destroy();
  }
  active = null;
  tfActive = null;
}
