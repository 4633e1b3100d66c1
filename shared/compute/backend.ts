/**
 * Backend names and choice: what runs a model's computations, by a name that
 * says so, the `--backend`/`--threads`/`--blas` flags, the BLAS the `cpu`
 * backend runs on, and the automatic pick. Setting a backend up is
 * shared/compute/create.ts's; tfjs's own set-up is shared/tfjs/backend.ts's.
 *
 * - `cpu`: the engine of shared/engine/ on the host, every matrix product on
 *   the machine's BLAS through FFI (shared/engine/devices/cpu/blas.ts);
 * - `webgpu`: the engine on a GPU device (shared/engine/devices/webgpu/), the
 *   automatic choice on a hardware GPU; `--backend webgpu` also runs on a
 *   software adapter (tests and CI do);
 * - `tfjs-wasm`, `tfjs-cpu`: tfjs on its WASM or plain-JavaScript backend
 *   (the fallback where no BLAS loads, and the test oracle);
 * - `tfjs-webgpu`: tfjs on WebGPU, kept as a benchmark comparison.
 *
 * The old names `native` (now `cpu`) and `wasm` (now `tfjs-wasm`) are still
 * accepted, with a one-line note.
 *
 * @module
 */
import {
  adapterName,
  isSoftwareAdapter,
  requestGpuAdapter,
} from "../engine/devices/webgpu/adapter.ts";
import { type Blas, BLAS_ENV, isNoBlas, loadBlas } from "../engine/devices/cpu/blas.ts";
import { FlagError, type FlagSpecs } from "../cli/flags.ts";

/** Every backend adaptmesh can compute on, the engine's first: the one list flags and metrics use. */
export const BACKEND_NAMES = ["cpu", "webgpu", "tfjs-wasm", "tfjs-cpu", "tfjs-webgpu"] as const;

/** A backend adaptmesh can compute on. */
export type BackendName = (typeof BACKEND_NAMES)[number];

/** The backends that run tfjs (the others run the engine of shared/engine/). */
export type TfjsBackendName = Extract<BackendName, `tfjs-${string}`>;

/** Whether `name` runs tfjs. */
export function isTfjsBackend(name: BackendName): name is TfjsBackendName {
  return name.startsWith("tfjs-");
}

/** Old backend names still accepted (with a note), and what they are called now. */
export const OLD_BACKEND_NAMES: Readonly<Record<string, BackendName>> = {
  native: "cpu",
  wasm: "tfjs-wasm",
};

/** `--backend` help text. */
export const BACKEND_HELP = `${
  BACKEND_NAMES.join(" | ")
} (default: webgpu on a hardware GPU, else cpu when a BLAS library loads, else tfjs-wasm; old names native = cpu, wasm = tfjs-wasm)`;

/** Whether `s` names a backend (by its current name). */
export function isBackendName(s: string): s is BackendName {
  return (BACKEND_NAMES as readonly string[]).includes(s);
}

/**
 * `s` as a backend name, or an error that lists the names. An old name is
 * accepted and `note` (default: stderr) is told, in one line, what it is
 * called now.
 */
export function parseBackendName(
  s: string,
  what = "--backend",
  note: (line: string) => void = console.error,
): BackendName {
  if (isBackendName(s)) return s;
  const now = Object.hasOwn(OLD_BACKEND_NAMES, s) ? OLD_BACKEND_NAMES[s] : undefined;
  if (now) {
    note(`note: ${what} ${s} is now called ${now}; the old name will be removed`);
    return now;
  }
  throw new Error(`${what} must be one of ${BACKEND_NAMES.join(", ")}, got "${s}"`);
}

/** The flags every command that computes takes: `--backend`, `--threads`, `--blas`. */
export const BACKEND_FLAGS = {
  backend: { type: "string", help: BACKEND_HELP },
  threads: {
    type: "int",
    help: "cpu: BLAS threads (default: every core this process may use)",
  },
  blas: {
    type: "string",
    help:
      `cpu: the BLAS library (path or soname), or "none" for no BLAS (default: $${BLAS_ENV}, else OpenBLAS, BLIS, MKL, CBLAS by their usual names)`,
  },
} as const satisfies FlagSpecs;

/**
 * The backend request of parsed {@link BACKEND_FLAGS}: a validated backend
 * name (undefined: pick; an old name is noted through `note`, see
 * {@link parseBackendName}), and the cpu options. Throws a {@link FlagError}.
 */
export function backendRequest(
  flags: { backend?: string; threads?: number; blas?: string },
  note: (line: string) => void = console.error,
): { requested: BackendName | undefined; opts: BackendOptions } {
  let requested: BackendName | undefined;
  if (flags.backend !== undefined) {
    try {
      requested = parseBackendName(flags.backend, "--backend", note);
    } catch (e) {
      throw new FlagError((e as Error).message);
    }
  }
  if (flags.threads !== undefined && flags.threads < 1) {
    throw new FlagError(`--threads must be at least 1, got ${flags.threads}`);
  }
  if (flags.blas !== undefined && flags.blas.trim() === "") {
    throw new FlagError("--blas needs a library path or soname, or none");
  }
  return { requested, opts: { threads: flags.threads, blas: flags.blas } };
}

/** How to set up the cpu backend (ignored by the others). */
export interface BackendOptions {
  /** BLAS threads (default: every core this process may use). */
  readonly threads?: number;
  /**
   * The BLAS library: a path or soname, or `none` for no BLAS (cpu is then
   * unavailable). Default: `$ADAPTMESH_BLAS`, else the usual sonames.
   */
  readonly blas?: string;
}

/** Cores this process may run on (respects CPU affinity). */
export function availableCores(): number {
  return Math.max(1, navigator.hardwareConcurrency || 1);
}

/** The host CPU, for device descriptions. */
export function cpuName(): string {
  return `${Deno.build.arch} CPU (${availableCores()} cores)`;
}

/** The BLAS the options ask for: explicit path, "none", or search (null). */
function blasRequest(opts: BackendOptions): string | undefined {
  const v = opts.blas ?? Deno.env.get(BLAS_ENV);
  return v === undefined || v.trim() === "" ? undefined : v.trim();
}

/**
 * Loads the BLAS for the cpu backend. Null with the reason when none is
 * wanted or none loads; an explicitly named library that does not load is an
 * error (it was asked for by name).
 */
export function cpuBlas(
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
 * throws. Says once per process which it is (through `log`, default console.error: stdout is for results).
 */
export function hostBlas(
  opts: BackendOptions & { log?: (line: string) => void } = {},
): Blas | null {
  let line: string;
  let blas: Blas | null = null;
  try {
    const r = cpuBlas({ ...opts, own: true });
    blas = r.blas;
    line = r.blas ? "" : `host compute on tfjs-wasm: ${r.reason}; ${CPU_HINT}`;
  } catch (e) {
    line = `host compute on tfjs-wasm: ${(e as Error).message}`;
  }
  if (blas) {
    blas.setThreads(opts.threads ?? availableCores());
    line = `host compute on cpu: ${blas.describe()}`;
  }
  if (line !== hostSaid) (opts.log ?? console.error)(line);
  hostSaid = line;
  return blas;
}

/** The hint printed when the CPU runs on tfjs-wasm. */
export const CPU_HINT =
  "for the faster cpu backend: apt-get install libopenblas0-pthread (or --blas PATH)";

/** Describes the hardware GPU adapter, or null when there is none (or only a software one). */
export async function hardwareGpu(): Promise<string | null> {
  const adapter = await requestGpuAdapter();
  if (!adapter || isSoftwareAdapter(adapter)) return null;
  return adapterName(adapter);
}

/** A backend chosen automatically, and why the faster one was not. */
export interface BackendPick {
  readonly name: BackendName;
  /** Why cpu was not chosen (null when it was). */
  readonly note: string | null;
}

/**
 * Picks webgpu on a hardware GPU ({@link hardwareGpu}: a software adapter
 * counts as none), else cpu when a BLAS library loads, else tfjs-wasm
 * (`tfjs-webgpu` is a benchmark comparison, never picked). Throws only when
 * a library named by `--blas`/`$ADAPTMESH_BLAS` does not load.
 */
export async function pickBackend(opts: BackendOptions = {}): Promise<BackendPick> {
  if (await hardwareGpu()) return { name: "webgpu", note: null };
  const cpu = cpuBlas(opts);
  return cpu.blas ? { name: "cpu", note: null } : { name: "tfjs-wasm", note: cpu.reason };
}
