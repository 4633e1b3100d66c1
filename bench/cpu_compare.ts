/**
 * Summary of one `bench/cpu_compare.sh` run: merges the sgemm, worker-grid,
 * PyTorch and (optionally) cluster results of that run into one JSON file
 * and prints the table — samples/s, model GFLOP/s, % of the BLAS's own
 * sgemm rate on the engine's shapes, native/wasm ratios, PyTorch beside
 * them, where native time goes — and which of issue 14's targets were met.
 *
 *   deno run -A bench/cpu_compare.ts --dir DIR --out FILE
 *
 * DIR holds sgemm.json, worker.json, torch.json, load.json and optionally
 * cluster.json (written by cpu_compare.sh).
 *
 * @module
 */
import { parseFlagsOrExit } from "../shared/cli/flags.ts";
import { table } from "./markdown.ts";

/** What a worker-grid row and a PyTorch row both say of one configuration. */
interface TimedRow {
  mode: string;
  microBatch: number;
  seqLen: number;
  medianMs: number;
  samplesPerSec: number;
  gflops: number;
}

/** A row of worker.json (bench/worker_compute.ts's grid), the fields read here. */
interface WorkerRow extends TimedRow {
  backend: string;
  threads: number | null;
  gflopPerCall: number;
  blasShare: number | null;
  blasGflops: number | null;
  blasCallsPerCall: number | null;
  maxAbsDiffVsWasm: number | null;
  wasmGradMaxAbs: number | null;
  kernels: { kernel: string; ms: number; calls: number }[] | null;
}

/** A row of torch.json (bench/torch_cpu.py). */
interface TorchRow extends TimedRow {
  threads: number;
}

interface ClusterRun {
  path: string;
  command: string;
  wallSeconds: number;
  code: number;
  final: Record<string, unknown> | null;
}

/** The targets of issue 14 (this 2-core machine). */
export const TARGETS = {
  native1OverWasm: 4,
  native2OverWasm: 6,
  shareOfSgemm: 0.3,
  clusterSeconds: 180,
} as const;

const modeKey = (m: string) => m === "pgd K=1" || m === "pgd1" ? "pgd1" : m;

function readJson<T>(path: string): T | null {
  try {
    return JSON.parse(Deno.readTextFileSync(path)) as T;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

const f1 = (x: number) => x.toFixed(1);
const pct = (x: number) => `${(100 * x).toFixed(0)}%`;

if (import.meta.main) {
  const flags = parseFlagsOrExit(Deno.args, {
    dir: { type: "string", required: true, help: "the run's folder (cpu_compare.sh writes it)" },
    out: { type: "string", required: true, help: "merged JSON output" },
  }, "deno run -A bench/cpu_compare.ts --dir DIR --out FILE");
  const dir = flags.dir;
  const sgemm = readJson<
    & { engineWeightedGflops: Record<string, number>; blas: Record<string, string> }
    & Record<
      string,
      unknown
    >
  >(`${dir}/sgemm.json`);
  const worker = readJson<{ rows: WorkerRow[]; machine: Record<string, unknown> }>(
    `${dir}/worker.json`,
  );
  const torch = readJson<{ rows: TorchRow[]; machine: Record<string, unknown> }>(
    `${dir}/torch.json`,
  );
  const cluster = readJson<{ runs: ClusterRun[] }>(`${dir}/cluster.json`);
  const load = readJson<Record<string, string>>(`${dir}/load.json`);
  if (!sgemm || !worker) {
    console.error(`error: ${dir} lacks sgemm.json or worker.json`);
    Deno.exit(1);
  }
  const rate = (t: number) => sgemm.engineWeightedGflops[String(t)] ?? NaN;
  const modes = [...new Set(worker.rows.map((r) => modeKey(r.mode)))];
  const lines: (string | number)[][] = [];
  const ratios: Record<string, Record<string, number>> = {};
  const shares: Record<string, Record<string, number>> = {};
  for (const mode of modes) {
    const rows = worker.rows.filter((r) => modeKey(r.mode) === mode);
    const wasm = rows.find((r) => r.backend === "tfjs-wasm" || r.backend === "wasm");
    ratios[mode] = {};
    shares[mode] = {};
    const push = (
      name: string,
      sps: number,
      gflops: number,
      threads: number,
      extra: { blas?: string; blasRate?: string; diff?: string } = {},
    ) => {
      const share = gflops / rate(threads);
      lines.push([
        mode,
        name,
        f1(sps),
        f1(gflops),
        Number.isFinite(share) ? pct(share) : "-",
        wasm ? `${(sps / wasm.samplesPerSec).toFixed(2)}×` : "-",
        extra.blas ?? "-",
        extra.blasRate ?? "-",
        extra.diff ?? "-",
      ]);
      return share;
    };
    if (wasm) push("wasm (1 worker, 1 thread)", wasm.samplesPerSec, wasm.gflops, 1);
    for (const r of rows.filter((x) => x.backend === "cpu" || x.backend === "native")) {
      const t = r.threads ?? 1;
      shares[mode][String(t)] = push(
        `native, ${t} thread${t > 1 ? "s" : ""}`,
        r.samplesPerSec,
        r.gflops,
        t,
        {
          blas: r.blasShare === null ? "-" : pct(r.blasShare),
          blasRate: r.blasGflops === null ? "-" : f1(r.blasGflops),
          diff: r.maxAbsDiffVsWasm === null
            ? "-"
            : `${r.maxAbsDiffVsWasm.toExponential(1)} (of ${r.wasmGradMaxAbs?.toExponential(1)})`,
        },
      );
      if (wasm) ratios[mode][String(t)] = r.samplesPerSec / wasm.samplesPerSec;
    }
    for (const r of (torch?.rows ?? []).filter((x) => modeKey(x.mode) === mode)) {
      push(
        `PyTorch CPU, ${r.threads} thread${r.threads > 1 ? "s" : ""}`,
        r.samplesPerSec,
        r.gflops,
        r.threads,
      );
    }
  }
  const main = worker.rows[0];
  console.log(
    `## CPU backends side by side (${
      new Date().toISOString().slice(0, 10)
    }, mb ${main.microBatch}, seq ${main.seqLen})\n`,
  );
  console.log(
    table([
      "mode",
      "engine",
      "samples/s",
      "model GFLOP/s",
      "% of sgemm rate",
      "× wasm",
      "time in BLAS",
      "BLAS GFLOP/s inside",
      "max |g − g_wasm|",
    ], lines),
  );
  console.log(
    `\nsgemm rate = FLOP-weighted rate of ${sgemm.blas.name} on one native gradient's own calls, ` +
      `timed alone: ${
        Object.entries(sgemm.engineWeightedGflops).map(([t, g]) => `${t} thread(s) ${f1(g)}`).join(
          ", ",
        )
      } GFLOP/s` +
      ` (wasm and 1-thread rows against the 1-thread rate).`,
  );
  const pgd = ratios.pgd1 ?? {};
  const pgdShare = shares.pgd1 ?? {};
  const wallOf = (path: string) => cluster?.runs.find((r) => r.path === path);
  const newRun = wallOf("native"), oldRun = wallOf("wasm");
  /** A measured value against a lower bound (absent: not met). */
  const atLeast = (value: number | undefined, target: number) => ({
    value: value ?? null,
    target,
    met: (value ?? 0) >= target,
  });
  const targets = {
    native1OverWasm: atLeast(pgd["1"], TARGETS.native1OverWasm),
    native2OverWasm: atLeast(pgd["2"], TARGETS.native2OverWasm),
    shareOfSgemm1: atLeast(pgdShare["1"], TARGETS.shareOfSgemm),
    shareOfSgemm2: atLeast(pgdShare["2"], TARGETS.shareOfSgemm),
    clusterSeconds: {
      value: newRun?.wallSeconds ?? null,
      target: TARGETS.clusterSeconds,
      met: newRun ? newRun.wallSeconds <= TARGETS.clusterSeconds && newRun.code === 0 : false,
    },
  };
  console.log("\n## Targets (PGD K=1)\n");
  console.log(table(["target", "measured", "goal", "met"], [
    [
      "native 1 thread / wasm",
      pgd["1"] ? `${pgd["1"].toFixed(2)}×` : "-",
      "≥ 4×",
      targets.native1OverWasm.met ? "yes" : "no",
    ],
    [
      "native 2 threads / wasm",
      pgd["2"] ? `${pgd["2"].toFixed(2)}×` : "-",
      "≥ 6×",
      targets.native2OverWasm.met ? "yes" : "no",
    ],
    [
      "model GFLOP/s / sgemm rate, 1 thread",
      pgdShare["1"] ? pct(pgdShare["1"]) : "-",
      "≥ 30%",
      targets.shareOfSgemm1.met ? "yes" : "no",
    ],
    [
      "model GFLOP/s / sgemm rate, 2 threads",
      pgdShare["2"] ? pct(pgdShare["2"]) : "-",
      "≥ 30%",
      targets.shareOfSgemm2.met ? "yes" : "no",
    ],
    [
      "no-flag `deno task cluster` wall time",
      newRun
        ? `${f1(newRun.wallSeconds)} s (old path ${oldRun ? f1(oldRun.wallSeconds) + " s" : "-"})`
        : "not run",
      "≤ 180 s",
      targets.clusterSeconds.met ? "yes" : "no",
    ],
  ]));
  if (cluster) {
    console.log("\n## No-flag `deno task cluster`\n");
    console.log(table(
      ["path", "command", "wall s", "exit", "accuracy", "steps"],
      cluster.runs.map((r) => [
        r.path,
        `\`${r.command}\``,
        f1(r.wallSeconds),
        r.code,
        String(r.final?.accuracy ?? "-"),
        String(r.final?.steps ?? "-"),
      ]),
    ));
  }
  const prof = worker.rows.find((r) =>
    (r.backend === "cpu" || r.backend === "native") && modeKey(r.mode) === "pgd1" && r.threads === 1
  )
    ?.kernels;
  if (prof) {
    const total = prof.reduce((a, k) => a + k.ms, 0);
    console.log("\n## Where native time goes (PGD K=1, 1 thread, one profiled call)\n");
    console.log(table(
      ["kernel", "ms", "share", "calls"],
      prof.slice(0, 12).map((k) => [k.kernel, f1(k.ms), pct(k.ms / total), k.calls]),
    ));
  }
  const report = {
    benchmark: "cpu_compare",
    date: new Date().toISOString(),
    note: "machine shared with other sessions' work while this ran; see load",
    machine: worker.machine,
    load,
    targets,
    ratiosVsWasm: ratios,
    shareOfSgemm: shares,
    sgemm,
    worker,
    torch,
    cluster,
  };
  Deno.mkdirSync(flags.out.slice(0, flags.out.lastIndexOf("/")) || ".", { recursive: true });
  Deno.writeTextFileSync(flags.out, JSON.stringify(report, null, 2) + "\n");
  console.log(`\nwrote ${flags.out}`);
}
