/**
 * The machine's BLAS through `Deno.dlopen`: `cblas_sgemm` (row-major) as a
 * {@link Gemm}, and the library's own thread control. Tries OpenBLAS, BLIS,
 * MKL and a generic CBLAS by their usual sonames (or one path the user
 * names); never throws when FFI is not permitted or nothing loads — it says
 * why instead (docs/platform.md, "Large frames and BLAS").
 *
 * `OPENBLAS_CORETYPE` is left as the environment has it.
 *
 * @module
 */
import { checkGemmArgs, type Gemm, jsGemm } from "./gemm.ts";

/** Which family of library loaded, as told by the symbols it exports. */
export type BlasVendor = "openblas" | "blis" | "mkl" | "accelerate" | "generic";

/** A loaded BLAS library. */
export interface Blas {
  /** Library family. */
  readonly vendor: BlasVendor;
  /** Human-readable name and version (OpenBLAS: its build config, e.g. "OpenBLAS 0.3.21 … Haswell"). */
  readonly name: string;
  /** The soname or path it was opened by. */
  readonly path: string;
  /** C = alpha·op(A)·op(B) + beta·C through `cblas_sgemm` (row-major). */
  readonly gemm: Gemm;
  /** Whether {@link Blas.setThreads} can change the thread count. */
  readonly threadControl: boolean;
  /** Threads the library uses now, or null when it cannot say. */
  threads(): number | null;
  /** Asks for `n` threads; returns the count in effect after (null: unknown, no control). */
  setThreads(n: number): number | null;
  /** One line for logs: name, path, threads. */
  describe(): string;
  /** Unloads this handle (a shared one is opened again by the next {@link loadBlas}). */
  close(): void;
}

/** What {@link loadBlas} found: a library, or null and why not. */
export type BlasLoad =
  | { readonly blas: Blas; readonly reason: null; readonly tried: readonly string[] }
  | { readonly blas: null; readonly reason: string; readonly tried: readonly string[] };

/** Options for {@link loadBlas}. */
export interface BlasOptions {
  /** Open only this library (a path or soname); no search. */
  readonly path?: string;
  /** Threads to ask for after loading (default: leave the library's own default). */
  readonly threads?: number;
  /**
   * A handle of the caller's own, to {@link Blas.close} when done, instead of
   * the process's shared one (which stays open).
   */
  readonly own?: boolean;
}

/**
 * The environment variable that picks the library: a path or soname, or
 * `none` (also `off`, `0`) to load no BLAS at all (the wasm fallback).
 */
export const BLAS_ENV = "ADAPTMESH_BLAS";

/** True when `value` (a `--blas` flag or {@link BLAS_ENV}) means "load no BLAS". */
export function isNoBlas(value: string | undefined): boolean {
  return value !== undefined && /^(none|off|0|false)$/i.test(value.trim());
}

const CblasRowMajor = 101;
const CblasNoTrans = 111;
const CblasTrans = 112;

const SYMBOLS = {
  cblas_sgemm: {
    parameters: [
      "i32", // order
      "i32", // transA
      "i32", // transB
      "i32", // m
      "i32", // n
      "i32", // k
      "f32", // alpha
      "buffer", // A
      "i32", // lda
      "buffer", // B
      "i32", // ldb
      "f32", // beta
      "buffer", // C
      "i32", // ldc
    ],
    result: "void",
  },
  // OpenBLAS
  openblas_set_num_threads: { parameters: ["i32"], result: "void", optional: true },
  openblas_get_num_threads: { parameters: [], result: "i32", optional: true },
  openblas_get_config: { parameters: [], result: "pointer", optional: true },
  // BLIS (dim_t is 64-bit in Debian's and the default builds)
  bli_thread_set_num_threads: { parameters: ["i64"], result: "void", optional: true },
  bli_thread_get_num_threads: { parameters: [], result: "i64", optional: true },
  bli_info_get_version_str: { parameters: [], result: "pointer", optional: true },
  // MKL
  MKL_Set_Num_Threads: { parameters: ["i32"], result: "void", optional: true },
  MKL_Get_Max_Threads: { parameters: [], result: "i32", optional: true },
} as const satisfies Deno.ForeignLibraryInterface;

type Lib = Deno.DynamicLibrary<typeof SYMBOLS>;

/** Library names to try, most wanted first, for this OS and architecture. */
export function blasCandidates(): string[] {
  const os = Deno.build.os;
  if (os === "darwin") {
    return [
      "libopenblas.dylib",
      "/opt/homebrew/opt/openblas/lib/libopenblas.dylib",
      "/usr/local/opt/openblas/lib/libopenblas.dylib",
      "libblis.4.dylib",
      "libmkl_rt.2.dylib",
      "/System/Library/Frameworks/Accelerate.framework/Accelerate",
    ];
  }
  if (os === "windows") return ["libopenblas.dll", "openblas.dll", "mkl_rt.2.dll", "blis.dll"];
  const multiarch = `/usr/lib/${Deno.build.arch}-linux-gnu`;
  return [
    "libopenblas.so.0",
    `${multiarch}/openblas-pthread/libopenblas.so.0`,
    `${multiarch}/openblas-openmp/libopenblas.so.0`,
    `${multiarch}/openblas-serial/libopenblas.so.0`,
    "libopenblas.so",
    "libblis.so.4",
    `${multiarch}/blis-pthread/libblis.so.4`,
    `${multiarch}/blis-openmp/libblis.so.4`,
    "libmkl_rt.so",
    "libmkl_rt.so.2",
    "/opt/intel/oneapi/mkl/latest/lib/intel64/libmkl_rt.so.2",
    "libcblas.so.3",
    "libblas.so.3",
  ];
}

function cString(p: Deno.PointerValue): string | null {
  return p ? Deno.UnsafePointerView.getCString(p) : null;
}

/**
 * A quick correctness check of a freshly opened sgemm (some builds compute
 * wrong results on CPUs they mis-detect): every transpose combination on an
 * odd shape, against the plain JavaScript {@link jsGemm}. Returns the problem, or null.
 */
function selfCheck(gemm: Gemm): string | null {
  const m = 37, n = 29, k = 67;
  for (const ta of [false, true]) {
    for (const tb of [false, true]) {
      const a = Float32Array.from({ length: m * k }, (_, i) => Math.sin(i * 0.37 + 1));
      const b = Float32Array.from({ length: k * n }, (_, i) => Math.cos(i * 0.61 + 2));
      const c = new Float32Array(m * n).fill(Number.NaN); // beta = 0 must ignore it
      gemm(ta, tb, m, n, k, 1, a, ta ? m : k, b, tb ? k : n, 0, c, n);
      const ref = new Float32Array(m * n);
      jsGemm(ta, tb, m, n, k, 1, a, ta ? m : k, b, tb ? k : n, 0, ref, n);
      for (let i = 0; i < ref.length; i++) {
        if (!(Math.abs(c[i] - ref[i]) <= 1e-4 * (1 + Math.abs(ref[i])))) {
          return `self-check failed (transA=${ta}, transB=${tb}): element ${i} is ${
            c[i]
          }, expected ${ref[i].toFixed(6)}`;
        }
      }
    }
  }
  return null;
}

function wrap(lib: Lib, path: string, onClose: (b: Blas) => void): Blas {
  const s = lib.symbols;
  const sgemm = s.cblas_sgemm;
  const gemm: Gemm = (transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) => {
    checkGemmArgs(transA, transB, m, n, k, a, lda, b, ldb, c, ldc);
    if (m === 0 || n === 0) return;
    sgemm(
      CblasRowMajor,
      transA ? CblasTrans : CblasNoTrans,
      transB ? CblasTrans : CblasNoTrans,
      m,
      n,
      k,
      alpha,
      a,
      lda,
      b,
      ldb,
      beta,
      c,
      ldc,
    );
  };
  let vendor: BlasVendor = "generic";
  let name = "CBLAS";
  let threads: () => number | null = () => null;
  let setThreads: ((n: number) => void) | null = null;
  if (s.openblas_get_config) {
    vendor = "openblas";
    name = cString(s.openblas_get_config()) ?? "OpenBLAS";
    const get = s.openblas_get_num_threads;
    if (get) threads = () => get();
    const set = s.openblas_set_num_threads;
    if (set) setThreads = (n) => set(n);
  } else if (s.bli_info_get_version_str) {
    vendor = "blis";
    name = `BLIS ${cString(s.bli_info_get_version_str()) ?? ""}`.trim();
    const get = s.bli_thread_get_num_threads;
    if (get) threads = () => Number(get());
    const set = s.bli_thread_set_num_threads;
    if (set) setThreads = (n) => set(BigInt(n));
  } else if (s.MKL_Get_Max_Threads) {
    vendor = "mkl";
    name = "Intel MKL";
    const get = s.MKL_Get_Max_Threads;
    threads = () => get();
    const set = s.MKL_Set_Num_Threads;
    if (set) setThreads = (n) => set(n);
  } else if (path.includes("Accelerate")) {
    vendor = "accelerate";
    name = "Apple Accelerate";
  }
  const blas: Blas = {
    vendor,
    name,
    path,
    gemm,
    threadControl: setThreads !== null,
    threads,
    setThreads(n: number): number | null {
      if (!Number.isInteger(n) || n < 1) {
        throw new RangeError(`BLAS threads must be a positive integer, got ${n}`);
      }
      if (!setThreads) return threads();
      setThreads(n);
      return threads() ?? n;
    },
    describe(): string {
      const t = threads();
      const tt = t === null
        ? (setThreads ? "threads: unknown" : "threads: set by the library (no control)")
        : `${t} thread${t === 1 ? "" : "s"}`;
      return `${name} (${path}), ${tt}`;
    },
    close(): void {
      onClose(blas);
      lib.close();
    },
  };
  return blas;
}

const cache = new Map<string, Blas>();

function open(path: string, own: boolean): { blas: Blas } | { error: string } {
  const hit = own ? undefined : cache.get(path);
  if (hit) return { blas: hit };
  let lib: Lib;
  try {
    lib = Deno.dlopen(path, SYMBOLS);
  } catch (e) {
    const msg = (e as Error).message.split("\n")[0].replace(/(Could not open library: )+/g, "");
    return { error: msg.startsWith(`${path}: `) ? msg.slice(path.length + 2) : msg };
  }
  const blas = wrap(lib, path, (b) => {
    if (cache.get(path) === b) cache.delete(path);
  });
  const bad = selfCheck(blas.gemm);
  if (bad) {
    lib.close();
    return { error: bad };
  }
  if (!own) cache.set(path, blas);
  return { blas };
}

/** Whether this process may call `Deno.dlopen`, and if not, why. */
export function ffiDenied(): string | null {
  try {
    const state = Deno.permissions.querySync({ name: "ffi" }).state;
    return state === "granted" ? null : `FFI is not permitted (run with --allow-ffi or -A)`;
  } catch (e) {
    return `FFI is not available: ${(e as Error).message}`;
  }
}

/**
 * Opens the machine's BLAS: `opts.path` alone when given, else the first of
 * {@link blasCandidates} that loads and passes a small self-check. Never
 * throws; `reason` says why nothing loaded. The same library is opened once
 * per process (unless `opts.own`).
 */
export function loadBlas(opts: BlasOptions = {}): BlasLoad {
  const denied = ffiDenied();
  if (denied) return { blas: null, reason: denied, tried: [] };
  const names = opts.path !== undefined ? [opts.path] : blasCandidates();
  const errors: string[] = [];
  for (const name of names) {
    const r = open(name, opts.own ?? false);
    if ("blas" in r) {
      if (opts.threads !== undefined) r.blas.setThreads(opts.threads);
      return { blas: r.blas, reason: null, tried: names.slice(0, names.indexOf(name) + 1) };
    }
    errors.push(`${name}: ${r.error}`);
  }
  const reason = opts.path !== undefined
    ? `cannot load BLAS library ${opts.path}: ${errors[0]}`
    : "no BLAS library found (OpenBLAS, BLIS, MKL or CBLAS by their usual names)";
  return { blas: null, reason, tried: names };
}
