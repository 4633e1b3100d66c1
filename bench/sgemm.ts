/**
 * The loaded BLAS's own sgemm rate (GFLOP/s) on this project's shapes, per
 * thread count: the ceiling the native backend is measured against.
 *
 *   deno run -A bench/sgemm.ts [--threads 1,2] [--min-seconds 0.5] [--blas PATH] [--out FILE]
 *
 * Two shape sets:
 * - fixed: the default model's products at micro-batch 32 × seq 128 (4096
 *   rows; hidden 128, intermediate 512, head 64) in the transpose forms a
 *   forward and backward pass use, and BERT-base's at 8192 rows.
 * - engine: the exact calls one native micro-batch gradient makes (default
 *   model, --micro-batch 32, --seq-len 128, PGD K = 1), recorded through a counting gemm;
 *   each distinct shape timed alone, and their FLOP-weighted rate (total
 *   FLOPs / total isolated time) — the "sgemm rate on the same shapes" the
 *   model's GFLOP/s is compared with.
 *
 * Timing: 2 warm-up calls, then calls until >= 3 and >= --min-seconds; median.
 *
 * Bits across thread counts: every fixed shape is also computed once at each
 * thread count on the same inputs, and the outputs compared bit for bit
 * (`bitsAcrossThreads`): whether `--deterministic` must pin the thread count.
 *
 * @module
 */
import { parseFlagsOrExit } from "../shared/cli/flags.ts";
import { type Blas, loadBlas } from "../shared/engine/devices/cpu/blas.ts";
import type { Gemm } from "../shared/engine/devices/cpu/gemm.ts";
import { EngineModel } from "../shared/engine/engine.ts";
import { cpuDevice } from "../shared/engine/devices/cpu/device.ts";
import { parseModelConfig } from "../shared/model/config.ts";
import { paramLayout } from "../shared/model/param_layout.ts";
import { defaultModelConfigJson } from "../shared/model/default_model.ts";
import { DEFAULT_ADVERSARY } from "../shared/method/adversary_config.ts";
import type { LabelledBatch } from "../shared/model/batch.ts";
import { Rng } from "../shared/method/rng.ts";

/** One product C[m×n] = op(A)·op(B), op(A) m×k. */
export interface Shape {
  readonly name: string;
  readonly transA: boolean;
  readonly transB: boolean;
  readonly m: number;
  readonly n: number;
  readonly k: number;
}

const sh = (name: string, transA: boolean, transB: boolean, m: number, n: number, k: number) => ({
  name,
  transA,
  transB,
  m,
  n,
  k,
});

/** The model's shapes (rows = mb 32 × seq 128) and BERT-base's (rows = 8192). */
export const FIXED_SHAPES: readonly Shape[] = [
  sh("small: X·Wᵀ [4096×128]·[128×128]", false, true, 4096, 128, 128),
  sh("small: X·Wᵀ [4096×128]·[128×512]", false, true, 4096, 512, 128),
  sh("small: X·Wᵀ [4096×512]·[512×128]", false, true, 4096, 128, 512),
  sh("small: dY·W [4096×128]·[128×128]", false, false, 4096, 128, 128),
  sh("small: dY·W [4096×128]·[128×512]", false, false, 4096, 512, 128),
  sh("small: dW = dYᵀ·X [128×4096]·[4096×128]", true, false, 128, 128, 4096),
  sh("small: dW = dYᵀ·X [512×4096]·[4096×128]", true, false, 512, 128, 4096),
  sh("small: attention Q·Kᵀ [128×64]·[64×128]", false, true, 128, 128, 64),
  sh("small: attention P·V [128×128]·[128×64]", false, false, 128, 64, 128),
  sh("base: X·Wᵀ [8192×768]·[768×768]", false, true, 8192, 768, 768),
  sh("base: X·Wᵀ [8192×768]·[768×3072]", false, true, 8192, 3072, 768),
  sh("base: X·Wᵀ [8192×3072]·[3072×768]", false, true, 8192, 768, 3072),
  sh("base: dW = dYᵀ·X [768×8192]·[8192×768]", true, false, 768, 768, 8192),
];

function randomFill(a: Float32Array, seed: number): Float32Array {
  const rng = new Rng(seed);
  for (let i = 0; i < a.length; i++) a[i] = rng.uniform(-1, 1);
  return a;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/** Median seconds of one call of `shape` on `gemm`. */
export function timeShape(gemm: Gemm, s: Shape, minSeconds: number): number {
  const a = randomFill(new Float32Array(s.m * s.k), 1);
  const b = randomFill(new Float32Array(s.k * s.n), 2);
  const c = new Float32Array(s.m * s.n);
  const lda = s.transA ? s.m : s.k, ldb = s.transB ? s.k : s.n;
  const call = () => gemm(s.transA, s.transB, s.m, s.n, s.k, 1, a, lda, b, ldb, 0, c, s.n);
  call();
  call();
  const times: number[] = [];
  const start = performance.now();
  while (times.length < 3 || performance.now() - start < minSeconds * 1000) {
    const t = performance.now();
    call();
    times.push((performance.now() - t) / 1000);
  }
  return median(times);
}

/** The distinct gemm calls of one native micro-batch gradient (default model, mb × seq, PGD K=1). */
export async function engineShapes(
  gemm: Gemm,
  B = 32,
  L = 128,
): Promise<{ shapes: (Shape & { count: number })[]; error: string | null }> {
  const seen = new Map<string, Shape & { count: number }>();
  const recording: Gemm = (ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) => {
    const key = `${ta ? "T" : "N"}${tb ? "T" : "N"} ${m}×${n}×${k}`;
    const hit = seen.get(key);
    if (hit) hit.count++;
    else seen.set(key, { ...sh(`engine: ${key}`, ta, tb, m, n, k), count: 1 });
    gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  };
  try {
    const config = parseModelConfig(defaultModelConfigJson(2));
    const layout = paramLayout(config);
    const rng = new Rng(42);
    const w = new Float32Array(layout.total);
    for (let i = 0; i < w.length; i++) w[i] = 0.02 * rng.normal();
    for (const s of layout.specs) {
      if (s.name.includes("LayerNorm") && s.name.endsWith(".weight")) {
        w.fill(1, s.offset, s.offset + s.size);
      }
    }
    const inputIds = new Int32Array(B * L).map((_, i) =>
      i % L === 0 ? 101 : 1000 + rng.int(config.vocabSize - 1000)
    );
    const batch: LabelledBatch = {
      inputIds,
      tokenTypeIds: new Int32Array(B * L),
      attentionMask: new Uint8Array(B * L).fill(1),
      labels: new Float32Array(B).map(() => rng.int(2)),
      size: B,
      seqLen: L,
    };
    const model = new EngineModel(cpuDevice(recording), config, layout);
    model.setWeights(w);
    await model.gradient({
      step: 0,
      index: 0,
      seed: 1,
      adversary: { ...DEFAULT_ADVERSARY, mode: "pgd", steps: 1 },
      batch,
      dropout: { hidden: 0.1, attention: 0.1 },
    });
    return { shapes: [...seen.values()], error: null };
  } catch (e) {
    return { shapes: [], error: (e as Error).message };
  }
}

interface ShapeRow {
  set: "fixed" | "engine";
  name: string;
  transA: boolean;
  transB: boolean;
  m: number;
  n: number;
  k: number;
  /** Calls per micro-batch gradient (engine set). */
  count: number | null;
  threads: number;
  medianMs: number;
  gflops: number;
}

function cpuModel(): string | null {
  try {
    return /^model name\s*:\s*(.*)$/m.exec(Deno.readTextFileSync("/proc/cpuinfo"))?.[1]?.trim() ??
      null;
  } catch {
    return null;
  }
}

/** For each fixed shape: how many output elements differ between the thread counts' results. */
export function bitsAcrossThreads(
  blas: Blas,
  threadCounts: number[],
  shapes: readonly Shape[] = FIXED_SHAPES,
): { name: string; elements: number; differing: number }[] {
  return shapes.map((s) => {
    const a = randomFill(new Float32Array(s.m * s.k), 3);
    const b = randomFill(new Float32Array(s.k * s.n), 4);
    const outs = threadCounts.map((t) => {
      blas.setThreads(t);
      const c = new Float32Array(s.m * s.n);
      blas.gemm(
        s.transA,
        s.transB,
        s.m,
        s.n,
        s.k,
        1,
        a,
        s.transA ? s.m : s.k,
        b,
        s.transB ? s.k : s.n,
        0,
        c,
        s.n,
      );
      return new Uint32Array(c.buffer);
    });
    let differing = 0;
    for (let i = 0; i < outs[0].length; i++) {
      if (outs.some((o) => o[i] !== outs[0][i])) differing++;
    }
    return { name: s.name, elements: s.m * s.n, differing };
  });
}

async function run(blas: Blas, threadCounts: number[], minSeconds: number, B: number, L: number) {
  const rows: ShapeRow[] = [];
  const engine = await engineShapes(blas.gemm, B, L);
  if (engine.error) console.error(`engine shapes skipped: ${engine.error}`);
  const weighted: Record<string, number> = {};
  for (const threads of threadCounts) {
    blas.setThreads(threads);
    const sets: ["fixed" | "engine", readonly (Shape & { count?: number })[]][] = [
      ["fixed", FIXED_SHAPES],
      ["engine", engine.shapes],
    ];
    let flops = 0, seconds = 0;
    for (const [set, shapes] of sets) {
      for (const s of shapes) {
        const sec = timeShape(blas.gemm, s, minSeconds);
        const f = 2 * s.m * s.n * s.k;
        const row: ShapeRow = {
          set,
          name: s.name,
          transA: s.transA,
          transB: s.transB,
          m: s.m,
          n: s.n,
          k: s.k,
          count: s.count ?? null,
          threads,
          medianMs: sec * 1000,
          gflops: f / sec / 1e9,
        };
        rows.push(row);
        if (set === "engine") {
          flops += f * s.count!;
          seconds += sec * s.count!;
        }
        console.error(
          `  ${threads}t ${s.name}${s.count ? ` ×${s.count}` : ""}: ${
            row.medianMs.toFixed(3)
          } ms, ${row.gflops.toFixed(1)} GFLOP/s`,
        );
      }
    }
    if (seconds > 0) weighted[String(threads)] = flops / seconds / 1e9;
  }
  return { rows, weighted, engineError: engine.error };
}

if (import.meta.main) {
  const flags = parseFlagsOrExit(Deno.args, {
    threads: { type: "string", default: "1,2", help: "BLAS thread counts" },
    "min-seconds": { type: "number", default: 0.5, help: "timed seconds per shape at least" },
    blas: { type: "string", help: "the BLAS library (default: the usual sonames)" },
    "micro-batch": { type: "int", default: 32, help: "the engine set's micro-batch" },
    "seq-len": { type: "int", default: 128, help: "the engine set's sequence length" },
    out: { type: "string", help: "JSON output (default: bench/results/sgemm-<date>.json)" },
  }, "deno run -A bench/sgemm.ts [flags]");
  const threadCounts = flags.threads.split(",").map((t) => Number(t.trim()));
  if (!threadCounts.every((t) => Number.isInteger(t) && t >= 1)) {
    console.error(`error: --threads needs positive integers, got "${flags.threads}"`);
    Deno.exit(2);
  }
  const loaded = loadBlas(flags.blas ? { path: flags.blas } : {});
  if (!loaded.blas) {
    console.error(`error: ${loaded.reason}`);
    Deno.exit(1);
  }
  const blas = loaded.blas;
  const date = new Date().toISOString();
  const out = flags.out ?? `bench/results/sgemm-${date.slice(0, 10)}.json`;
  console.error(`sgemm on ${blas.describe()}`);
  const r = await run(
    blas,
    threadCounts,
    flags["min-seconds"],
    flags["micro-batch"],
    flags["seq-len"],
  );
  const report = {
    benchmark: "sgemm",
    date,
    machine: {
      deno: Deno.version,
      build: Deno.build,
      hardwareConcurrency: navigator.hardwareConcurrency,
      cpuModel: cpuModel(),
      openblasCoretype: Deno.env.get("OPENBLAS_CORETYPE") ?? null,
    },
    blas: { vendor: blas.vendor, name: blas.name, path: blas.path },
    settings: {
      threads: threadCounts,
      minSeconds: flags["min-seconds"],
      engineMicroBatch: flags["micro-batch"],
      engineSeqLen: flags["seq-len"],
    },
    rows: r.rows,
    /** FLOP-weighted sgemm rate over one micro-batch gradient's calls, per thread count. */
    engineWeightedGflops: r.weighted,
    engineError: r.engineError,
    bitsAcrossThreads: threadCounts.length > 1 ? bitsAcrossThreads(blas, threadCounts) : null,
  };
  const dir = out.includes("/") ? out.slice(0, out.lastIndexOf("/")) : ".";
  Deno.mkdirSync(dir, { recursive: true });
  Deno.writeTextFileSync(out, JSON.stringify(report, null, 2) + "\n");
  const header = ["shape", ...threadCounts.map((t) => `${t} thread${t > 1 ? "s" : ""} GFLOP/s`)];
  const names = [...new Set(r.rows.map((x) => x.name))];
  const lines = names.map((n) => {
    const cells = threadCounts.map((t) =>
      r.rows.find((x) => x.name === n && x.threads === t)?.gflops.toFixed(1) ?? "-"
    );
    const count = r.rows.find((x) => x.name === n)?.count;
    return `| ${n}${count ? ` (×${count})` : ""} | ${cells.join(" | ")} |`;
  });
  console.log(`# sgemm — ${date}\n\n${blas.describe()}\n`);
  console.log(`| ${header.join(" | ")} |\n|${header.map(() => "---").join("|")}|`);
  console.log(lines.join("\n"));
  for (const [t, g] of Object.entries(r.weighted)) {
    console.log(`\nengine-weighted rate, ${t} thread(s): ${g.toFixed(1)} GFLOP/s`);
  }
  if (report.bitsAcrossThreads) {
    const diff = report.bitsAcrossThreads.filter((x) => x.differing > 0);
    console.log(
      `\nbits across ${
        threadCounts.join(" vs ")
      } threads: ${diff.length} of ${report.bitsAcrossThreads.length} shapes differ` +
        (diff.length
          ? ` (e.g. ${diff[0].name}: ${diff[0].differing} of ${diff[0].elements} elements)`
          : ""),
    );
  }
  console.log(`\nwrote ${out}`);
}
