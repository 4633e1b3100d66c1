/**
 * The coordinator's own cost per step at the paper's model sizes (issue 13,
 * deliverable 5): combining results, LAMB, encoding and sending the weights,
 * bytes per step and peak RSS, for BERT-base and RoBERTa-large shapes.
 *
 *     deno run -A bench/coordinator_cost.ts [--models bert-base,roberta-large]
 *       [--workers 1,2,4] [--parts 4] [--steps 3] [--backend native] [--no-mesh]
 *       [--malloc-tuning] [--mesh-timeout 900] [--micro-batches 4]
 *       [--modes "per-micro-batch=--results per-micro-batch,per-worker="] [--out FILE]
 *
 * Three parts, every configuration in its own process so that each peak RSS
 * (VmHWM from /proc/<pid>/status) is that configuration's alone:
 *
 * - in-process: the real accumulator (coordinator/grad_accumulator.ts) takes
 *   `--parts` row-sparse results of one 1×8-token micro-batch each, in the
 *   worst order (the lowest index last, so every other part waits in the
 *   reorder buffer), then the real optimizer (coordinator/optimizer.ts) runs
 *   LAMB (and the same passes without the divider, to see where its time
 *   goes) and AdamW, and coordinator/weights_out.ts prepares the weights
 *   message; memory bandwidth is measured in the same run (TypedArray.set
 *   and plain streaming loops), so each pass can be put against it.
 * - windowed: the step path at its memory bound — 2 × window results, each a
 *   fresh array, in the worst order the dispatch window allows — for the
 *   coordinator's peak RSS with as many workers as the window lets compute.
 * - mesh: a random checkpoint of the shape is written to a temp folder and a
 *   real coordinator trains `--steps` steps of `--micro-batches` micro-batches
 *   of 1 example × 8 tokens with N local worker processes over loopback
 *   WebSockets, once per `--modes` entry (`name=coordinator flags`: how the
 *   results come back, issue 21); the step reports give the combine,
 *   optimizer and encode times, the monitor the bytes in and out, also in
 *   results' worth (bytes in per step over one micro-batch result's bytes).
 *   A configuration that would not fit in the memory available is skipped,
 *   saying so.
 *
 * `--malloc-tuning` runs the children with glibc malloc told to keep freed
 * memory (see MALLOC_TUNING): on this VM every fresh page costs ~11 µs, and
 * without it every 4 MiB chunk message and every result array is fresh.
 *
 * Writes bench/results/coordinator_cost-<date>.json (with the machine) and
 * prints markdown tables.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { parseFlagsOrExit } from "../shared/cli/flags.ts";
import { type ParamLayout, paramLayout } from "../shared/model/param_layout.ts";
import { expectedGradLength, sparseLayout } from "../shared/model/sparse_grad.ts";
import {
  type CombinedStep,
  dispatchWindow,
  freeArrays,
  GradAccumulator,
  maxResultBytes,
} from "../coordinator/grad_accumulator.ts";
import { WeightsOut } from "../coordinator/weights_out.ts";
import { outgoingBytes } from "../shared/wire/transfer.ts";
import {
  createOptimizerState,
  DEFAULT_OPTIMIZER_CONFIG,
  optimizerStep,
} from "../coordinator/optimizer.ts";
import { table } from "./markdown.ts";
import { shapeConfig, writeShapeCheckpoint, writeSmallTask } from "./random_checkpoint.ts";

const SELF = fileURLToPath(import.meta.url);

const TOKENS = 8; // one example of 8 tokens per micro-batch

/** A field of /proc/<pid>/status in MB (VmHWM: peak resident set; VmRSS: now). */
function procMb(field: "VmHWM" | "VmRSS", pid: number | "self" = "self"): number {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(
      Deno.readTextFileSync(`/proc/${pid}/status`),
    );
    return m ? Math.round(Number(m[1]) / 1024) : NaN;
  } catch {
    return NaN; // the process is gone
  }
}

/** CPU time of this thread in ms (10 ms resolution): the machine is shared. */
function cpuMs(): number {
  const f = Deno.readTextFileSync("/proc/thread-self/stat").split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) * 10;
}

/** Wall and CPU ms of `f`. */
function timed(f: () => void): { wallMs: number; cpuMs: number } {
  const c0 = cpuMs(), t0 = performance.now();
  f();
  return { wallMs: performance.now() - t0, cpuMs: cpuMs() - c0 };
}

/** Cheap deterministic values of magnitude ~`scale` (never zero, never denormal). */
function fill(a: Float32Array, scale: number, seed: number): Float32Array {
  let x = seed >>> 0;
  for (let i = 0; i < a.length; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    a[i] = ((x >>> 8) / 16777216 - 0.5 + 1e-3) * scale;
  }
  return a;
}

function machine() {
  const cpu = /model name\s*:\s*(.*)/.exec(Deno.readTextFileSync("/proc/cpuinfo"))?.[1] ?? "?";
  const memTotal = /MemTotal:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/meminfo"))?.[1];
  return {
    cpu,
    cores: navigator.hardwareConcurrency,
    memoryGB: Math.round(Number(memTotal) / 1024 / 1024),
    os: Deno.build.os,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    loadAverage: Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).map(Number),
    shared: "2 vCPUs shared with other work (other developers' builds and tests ran at the " +
      "same time): wall times are noisy, CPU times (this thread) less so",
  };
}

/** MemAvailable in MB. */
function availableMb(): number {
  const m = /MemAvailable:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/meminfo"));
  return m ? Math.round(Number(m[1]) / 1024) : 0;
}

/** Memory bandwidth of one core, three ways, best of 3 (GB/s counting bytes read + written). */
function bandwidth(n = 50_000_000) {
  const src = fill(new Float32Array(n), 1, 1), dst = new Float32Array(n);
  const acc = new Float64Array(n);
  const best = (bytes: number, f: () => void) => {
    f();
    let t = Infinity;
    for (let k = 0; k < 3; k++) t = Math.min(t, timed(f).wallMs);
    return +(bytes / (t / 1000) / 1e9).toFixed(2);
  };
  return {
    elements: n,
    setGBs: best(8 * n, () => dst.set(src)),
    copyLoopGBs: best(8 * n, () => {
      for (let i = 0; i < n; i++) dst[i] = src[i] * 1.5;
    }),
    // The accumulator's pattern: acc (f64) += c · g (f32), read 12 B and write 8 B per element.
    accumulateLoopGBs: best(20 * n, () => {
      for (let i = 0; i < n; i++) acc[i] += 3 * src[i];
    }),
  };
}

/** Bytes LAMB moves per step over `layout` (see optimizer.ts: two passes on decayed tensors). */
function lambBytes(layout: ParamLayout): number {
  let b = 0;
  // Decayed: pass 1 reads g, m, v, w and writes m, v, u (f64); pass 2 reads u, w, writes w.
  // Others: one pass reads g, m, v, w and writes m, v, w.
  for (const s of layout.specs) b += s.size * (s.decay ? 16 + 16 + 16 : 16 + 12);
  return b;
}

/**
 * LAMB's two passes as coordinator/optimizer.ts runs them, with the division
 * and square root replaced by a multiplication and an addition: the same
 * loads, stores and loop, so optimizer time minus this is what the
 * divider costs (a profile of where LAMB's time goes).
 */
function lambWithoutDivider(
  layout: ParamLayout,
  weights: Float32Array,
  grad: Float32Array,
  m: Float32Array,
  v: Float32Array,
  u: Float64Array,
): number {
  const b1 = 0.9, c1 = 0.1, b2 = 0.999, c2 = 0.001, k1 = 1.1, k2 = 1e-6, lambda = 0.01;
  let sq = 0;
  for (const spec of layout.specs) {
    const o = spec.offset, n = spec.size;
    let wSq = 0, uSq = 0;
    for (let i = 0; i < n; i++) {
      const gi = grad[o + i];
      const mi = Math.fround(b1 * m[o + i] + c1 * gi);
      const vi = Math.fround(b2 * v[o + i] + c2 * gi * gi);
      m[o + i] = mi;
      v[o + i] = vi;
      const wi = weights[o + i];
      const ui = (mi * k1) * (vi + k2) + lambda * wi;
      u[i] = ui;
      wSq += wi * wi;
      uSq += ui * ui;
    }
    const scale = 1e-9 * Math.sqrt(wSq) / Math.sqrt(uSq + 1);
    for (let i = 0; i < n; i++) {
      const d = scale * u[i];
      sq += d * d;
      weights[o + i] = weights[o + i] - d;
    }
  }
  return sq;
}

/** One in-process step's measurements. */
interface InProcessStep {
  step: number;
  peakBuffered: number;
  addOneResultMs: number;
  addOneResultCpuMs: number;
  finishMs: number;
  finishCpuMs: number;
  lambWallMs: number;
  lambCpuMs: number;
  encodeMs: number;
  encodeCpuMs: number;
  encodeBytes: number;
}

/** The in-process part for one shape: accumulate, LAMB, AdamW, the weights message; peak RSS. */
function inProcess(name: string, parts: number, steps: number) {
  const config = shapeConfig(name);
  const layout = paramLayout(config, "classify");
  const s = sparseLayout(layout);
  const total = layout.total;
  const per100M = (ms: number) => +(ms * 1e8 / total).toFixed(1);
  const weights = fill(new Float32Array(total), 0.04, 2);
  // One micro-batch of 1×8 tokens: 8 distinct word-embedding rows.
  const rows = Int32Array.from({ length: TOKENS }, (_, k) => 1000 + 97 * k).sort();
  const grad = fill(new Float32Array(expectedGradLength(rows, s)), 2e-3, 3);
  const acc = new GradAccumulator(s);
  const state = createOptimizerState(total);
  const lamb = { ...DEFAULT_OPTIMIZER_CONFIG };
  const weightsOut = new WeightsOut();
  // Both snapshot buffers touched once (the run's first two versions pay for fresh pages).
  weightsOut.prepare("bench", 0, weights, "f32");
  weightsOut.prepare("bench", 1, weights, "f32");
  const stepsOut: InProcessStep[] = [];
  let combined: CombinedStep | null = null;
  for (let k = 0; k < steps; k++) {
    acc.begin(Array.from({ length: parts }, () => 1));
    // Worst arrival order: parts − 1 … 1 wait in the buffer, part 0 releases them all.
    // (They share one gradient buffer here: the buffer's memory is counted in the mesh part.)
    const c0 = cpuMs();
    for (let j = parts - 1; j >= 0; j--) acc.add({ index: j, grad, rows, loss: 0.5 });
    const addCpuMs = (cpuMs() - c0) / parts;
    const peakBuffered = acc.peakBuffered, addMs = acc.sumMs / parts;
    let done: CombinedStep | null = null;
    const finish = timed(() => (done = acc.finish()));
    combined = done!;
    const g = (combined as CombinedStep).grad;
    const opt = timed(() => optimizerStep(layout, weights, g, state, 1e-3, lamb));
    let prepared = 0;
    const snap = timed(() => {
      prepared = outgoingBytes(weightsOut.prepare("bench", k + 2, weights, "f32"));
    });
    stepsOut.push({
      step: k + 1,
      peakBuffered,
      addOneResultMs: +addMs.toFixed(1),
      addOneResultCpuMs: +addCpuMs.toFixed(1),
      finishMs: +finish.wallMs.toFixed(1),
      finishCpuMs: finish.cpuMs,
      lambWallMs: +opt.wallMs.toFixed(1),
      lambCpuMs: opt.cpuMs,
      encodeMs: +snap.wallMs.toFixed(1),
      encodeCpuMs: snap.cpuMs,
      encodeBytes: prepared,
    });
  }
  const lastGrad = (combined as CombinedStep | null)!.grad;
  const maxSize = Math.max(...layout.specs.map((x) => x.size));
  const scratchU = new Float64Array(maxSize);
  lambWithoutDivider(layout, weights, lastGrad, state.m, state.v, scratchU); // warm
  const noDivider = timed(() =>
    lambWithoutDivider(layout, weights, lastGrad, state.m, state.v, scratchU)
  );
  const adamw = timed(() =>
    optimizerStep(layout, weights, lastGrad, state, 1e-3, { ...lamb, kind: "adamw" })
  );
  const steady = stepsOut.length > 1 ? stepsOut.slice(1) : stepsOut; // the first step warms up
  const mean = (f: (r: InProcessStep) => number) =>
    steady.length ? steady.reduce((a, r) => a + f(r), 0) / steady.length : NaN;
  const packed = grad.length;
  const maxDecayed = Math.max(...layout.specs.filter((x) => x.decay).map((x) => x.size));
  const lambMs = mean((r) => r.lambWallMs);
  return {
    model: name,
    parameters: total,
    resultElements: packed,
    resultBytes: 4 * packed + 4 * rows.length,
    parts,
    steps: stepsOut,
    addOneResultMs: +mean((r) => r.addOneResultMs).toFixed(1),
    addOneResultMsPer100M: per100M(mean((r) => r.addOneResultMs)),
    addOneResultCpuMs: +mean((r) => r.addOneResultCpuMs).toFixed(1),
    addOneResultCpuMsPer100M: per100M(mean((r) => r.addOneResultCpuMs)),
    finishMs: +mean((r) => r.finishMs).toFixed(1),
    finishCpuMs: +mean((r) => r.finishCpuMs).toFixed(0),
    finishCpuMsPer100M: per100M(mean((r) => r.finishCpuMs)),
    lambWallMs: +lambMs.toFixed(1),
    lambCpuMs: +mean((r) => r.lambCpuMs).toFixed(0),
    lambMsPer100M: per100M(lambMs),
    lambCpuMsPer100M: per100M(mean((r) => r.lambCpuMs)),
    lambBytes: lambBytes(layout),
    lambGBs: +(lambBytes(layout) / (lambMs / 1000) / 1e9).toFixed(2),
    // acc += c·g over the packed length (20 B per element).
    addGBs: +(20 * packed / (mean((r) => r.addOneResultMs) / 1000) / 1e9).toFixed(2),
    adamwWallMs: +adamw.wallMs.toFixed(1),
    lambWithoutDividerMs: +noDivider.wallMs.toFixed(1),
    lambWithoutDividerCpuMs: noDivider.cpuMs,
    encodeMs: +mean((r) => r.encodeMs).toFixed(1),
    encodeCpuMs: +mean((r) => r.encodeCpuMs).toFixed(0),
    encodeBytes: stepsOut.at(-1)?.encodeBytes ?? 0,
    dispatchWindow: dispatchWindow(maxResultBytes(s, TOKENS)),
    memoryModelMB: {
      weights: Math.round(4 * total / 2 ** 20),
      moments: Math.round(8 * total / 2 ** 20),
      accumulator: Math.round(8 * total / 2 ** 20),
      lambScratch: Math.round(8 * maxDecayed / 2 ** 20),
      oneResult: Math.round((4 * packed + 4 * rows.length) / 2 ** 20),
      weightsSnapshots: Math.round(8 * total / 2 ** 20), // coordinator/weights_out.ts keeps two
    },
    peakRssMB: procMb("VmHWM"),
  };
}

/**
 * The coordinator's step path at its memory bound: `2 × window` results of
 * one micro-batch each, every one a fresh array (as the receiver makes
 * them), arriving in the worst order the scheduler allows (within each
 * window, the highest index first and the lowest last, so window − 1 wait),
 * then LAMB and the weights message. Peak RSS is what a run with at least
 * `window` workers would need for the coordinator's own buffers.
 */
function windowed(name: string) {
  const config = shapeConfig(name);
  const layout = paramLayout(config, "classify");
  const s = sparseLayout(layout);
  const window = dispatchWindow(maxResultBytes(s, TOKENS));
  const parts = 2 * window;
  const weights = fill(new Float32Array(layout.total), 0.04, 2);
  const rows = Int32Array.from({ length: TOKENS }, (_, k) => 1000 + 97 * k).sort();
  const length = expectedGradLength(rows, s);
  // As the trainer does: each result's arrays are freed once summed.
  const acc = new GradAccumulator(s, { release: freeArrays });
  const state = createOptimizerState(layout.total);
  const weightsOut = new WeightsOut();
  acc.begin(Array.from({ length: parts }, () => 1));
  let maxBuffered = 0;
  for (let base = 0; base < parts; base += window) {
    const hi = Math.min(parts, base + window);
    for (let j = hi - 1; j >= base; j--) {
      const grad = fill(new Float32Array(length), 2e-3, 10 + j);
      acc.add({ index: j, grad, rows: rows.slice(), loss: 0.5 }); // each its own, as off the wire
      maxBuffered = Math.max(maxBuffered, acc.buffered);
    }
  }
  const { grad } = acc.finish();
  optimizerStep(layout, weights, grad, state, 1e-3, { ...DEFAULT_OPTIMIZER_CONFIG });
  weightsOut.prepare("bench", 1, weights, "f32");
  weightsOut.prepare("bench", 2, weights, "f32");
  return {
    model: name,
    parameters: layout.total,
    window,
    parts,
    peakBuffered: acc.peakBuffered,
    resultMB: Math.round(4 * length / 2 ** 20),
    peakRssMB: procMb("VmHWM"),
  };
}

/** The mesh part for one shape and worker count, in this (child) process. */
async function mesh(opts: {
  modelDir: string;
  workers: number;
  steps: number;
  backend: string;
  recycle: boolean;
  microBatches: number;
  modeFlags: string[];
}) {
  const { parseRunFlags } = await import("../coordinator/run_config.ts");
  const { startCoordinator } = await import("../coordinator/coordinator.ts");
  const { spawnLocalWorkers, stopLocalWorkers } = await import("../coordinator/local_workers.ts");
  const task = await writeSmallTask(await Deno.makeTempDir({ prefix: "adaptmesh-cost-task-" }));
  const { config } = await parseRunFlags(
    [
      ...["--model", opts.modelDir, "--train", task.train, "--eval", task.eval],
      ...["--steps", String(opts.steps), "--global-batch", String(opts.microBatches)],
      ...["--micro-batch", "1", "--max-len", String(TOKENS), "--adv", "off", "--dropout", "0"],
      ...["--eval-limit", "1", "--task-timeout", "1800", "--port", "0", "--token", "bench"],
      "--quiet",
      ...opts.modeFlags,
    ],
    {},
    "",
  );
  type Report = import("../coordinator/trainer.ts").StepReport;
  const reports: (Report & {
    rssMB: number;
    hwmMB: number;
    workersHwmMB: number[];
    bytesIn: number;
  })[] = [];
  let pids: number[] = [];
  const loadedHwm = { mb: NaN };
  const c = await startCoordinator(config, {
    recycleResults: opts.recycle,
    log: () => {},
    observer: {
      step: (r) =>
        reports.push({
          ...r,
          rssMB: procMb("VmRSS"),
          hwmMB: procMb("VmHWM"),
          workersHwmMB: pids.map((p) => procMb("VmHWM", p)),
          bytesIn: c.monitor.bytesIn,
        }),
    },
  });
  loadedHwm.mb = procMb("VmHWM");
  const procs = spawnLocalWorkers(opts.workers, c.wsUrl, c.token, {
    backend: opts.backend,
    output: "null",
  });
  pids = procs.map((p) => p.pid);
  const summary = await c.done;
  const afterEvalHwm = procMb("VmHWM");
  await stopLocalWorkers(procs);
  await c.close();
  const measured = reports.length > 1 ? reports.slice(1) : reports;
  const mean = (f: (r: Report) => number) =>
    measured.reduce((a, r) => a + f(r), 0) / Math.max(1, measured.length);
  const counters = c.monitor;
  // One micro-batch result: the dense rest and the rows of one 1 × 8-token micro-batch.
  const resultBytes = maxResultBytes(c.trainer.gradLayout, TOKENS);
  // Bytes between the first and the last step report: the steps after the first.
  const inPerStep = measured.length && reports.length > 1
    ? (reports.at(-1)!.bytesIn - reports[0].bytesIn) / measured.length
    : counters.bytesIn / Math.max(1, reports.length);
  return {
    workers: opts.workers,
    microBatches: opts.microBatches,
    modeFlags: opts.modeFlags.join(" "),
    resultBytes,
    resultsWorthInPerStep: Math.round(100 * inPerStep / resultBytes) / 100,
    backend: opts.backend,
    steps: summary.steps,
    measuredSteps: measured.length,
    stepMs: Math.round(mean((r) => r.timings.stepMs)),
    waitMs: Math.round(mean((r) => r.timings.waitMs)),
    computeMs: Math.round(mean((r) => r.timings.computeMs)),
    combineMs: Math.round(mean((r) => r.timings.averageMs)),
    optimizerMs: Math.round(mean((r) => r.timings.optimizerMs)),
    encodeMs: Math.round(mean((r) => r.timings.encodeMs)),
    transferMs: Math.round(mean((r) => r.timings.transferMs)),
    weightsBytes: reports.at(-1)?.weightsBytes ?? 0,
    bytesInPerStep: Math.round(counters.bytesIn / Math.max(1, reports.length)),
    bytesOutPerStep: Math.round(counters.bytesOut / Math.max(1, reports.length)),
    coordinatorPeakRssMB: {
      afterLoad: loadedHwm.mb,
      duringSteps: Math.max(...reports.map((r) => r.hwmMB)),
      withFinalEvaluation: afterEvalHwm,
    },
    workersPeakRssMB: reports.length
      ? pids.map((_, k) => Math.max(...reports.map((r) => r.workersHwmMB[k] ?? NaN)))
      : [],
  };
}

/**
 * glibc malloc settings that keep freed memory for reuse instead of mapping
 * fresh pages for every large buffer (4 MiB chunk messages, result arrays):
 * on this VM a fresh page costs ~11 µs. `--malloc-tuning` sets them for the
 * children (and so for their workers, which inherit the environment).
 */
const MALLOC_TUNING: Record<string, string> = {
  MALLOC_MMAP_THRESHOLD_: String(32 * 2 ** 20),
  MALLOC_TRIM_THRESHOLD_: String(2 ** 32),
  MALLOC_TOP_PAD_: String(256 * 2 ** 20),
};

/** Runs this file again as a child with `args`; its last stdout line is its JSON. */
async function child(
  args: string[],
  timeoutS: number,
  env: Record<string, string> = {},
): Promise<Record<string, unknown>> {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--v8-flags=--max-old-space-size=8192", SELF, ...args],
    env,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      cmd.kill("SIGKILL");
    } catch { /* gone */ }
  }, timeoutS * 1000);
  const out = await cmd.output();
  clearTimeout(timer);
  const text = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
  if (out.code !== 0 || !text.startsWith("{")) {
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-6).join(" | ");
    return {
      failed: out.signal === "SIGKILL" ? `killed after ${timeoutS} s` : `exit ${out.code}`,
      stderr: err,
    };
  }
  return JSON.parse(text);
}

const flags = parseFlagsOrExit(
  Deno.args,
  {
    models: { type: "string", default: "bert-base,roberta-large", help: "shapes to measure" },
    workers: { type: "string", default: "1,2,4", help: "local worker counts (mesh part)" },
    parts: { type: "int", default: 4, help: "results combined per in-process step" },
    steps: { type: "int", default: 3, help: "steps per configuration (the first is not averaged)" },
    backend: { type: "string", default: "cpu", help: "worker backend (mesh part)" },
    "no-mesh": { type: "boolean", default: false, help: "only the in-process part" },
    "mesh-only": { type: "boolean", default: false, help: "only the mesh part" },
    recycle: {
      type: "string",
      default: "on",
      help:
        "mesh part: results into recycled memory (on, as the coordinator does), fresh (off), or both (on,off)",
    },
    "malloc-tuning": {
      type: "boolean",
      default: false,
      help: "run the children with glibc malloc keeping freed memory (MALLOC_*_ variables)",
    },
    "mesh-timeout": { type: "int", default: 900, help: "seconds per mesh configuration" },
    "worker-mb": {
      type: "int",
      default: 0,
      help:
        "expected peak RSS of one worker in MB for the memory check (0: 6 bytes/parameter + 1 GB)",
    },
    out: { type: "string", help: "JSON output path" },
    phase: { type: "string", default: "", help: "(internal) child phase" },
    model: { type: "string", default: "", help: "(internal) shape of a child" },
    "model-dir": { type: "string", default: "", help: "(internal) checkpoint of a mesh child" },
    n: { type: "int", default: 1, help: "(internal) workers of a mesh child" },
    "micro-batches": { type: "int", default: 4, help: "mesh part: micro-batches per step" },
    modes: {
      type: "string",
      default: "per-micro-batch=--results per-micro-batch,per-worker=",
      help: "mesh part: name=coordinator flags, comma-separated (flags separated by spaces)",
    },
    "mode-flags": { type: "string", default: "", help: "(internal) a mesh child's mode flags" },
  } as const,
  "deno run -A bench/coordinator_cost.ts [flags]",
);

if (flags.phase === "inprocess") {
  console.log(JSON.stringify(inProcess(flags.model, flags.parts, flags.steps)));
  Deno.exit(0);
}
if (flags.phase === "windowed") {
  console.log(JSON.stringify(windowed(flags.model)));
  Deno.exit(0);
}
if (flags.phase === "mesh") {
  const r = await mesh({
    modelDir: flags["model-dir"],
    workers: flags.n,
    steps: flags.steps,
    backend: flags.backend,
    recycle: flags.recycle !== "off",
    microBatches: flags["micro-batches"],
    modeFlags: flags["mode-flags"].split(" ").filter(Boolean),
  });
  console.log(JSON.stringify(r));
  Deno.exit(0);
}

const started = new Date();
const info = machine();
console.error(`measuring memory bandwidth …`);
const bw = bandwidth();
console.error(`bandwidth: ${JSON.stringify(bw)}`);
const models = flags.models.split(",").filter(Boolean);
const env = flags["malloc-tuning"] ? MALLOC_TUNING : {};
const workerCounts = flags.workers.split(",").map(Number);
const inproc: Record<string, unknown>[] = [];
const windowedRows: Record<string, unknown>[] = [];
for (const m of flags["mesh-only"] ? [] : models) {
  const params = paramLayout(shapeConfig(m), "classify").total;
  const needMb = Math.round(36 * params / 2 ** 20), haveMb = availableMb();
  if (needMb > 0.9 * haveMb) {
    inproc.push({ model: m, skipped: `needs ~${needMb} MB, ${haveMb} MB available` });
    console.error(JSON.stringify(inproc.at(-1)));
    continue;
  }
  console.error(`in-process: ${m} …`);
  const r = await child(
    [
      "--phase",
      "inprocess",
      "--model",
      m,
      "--parts",
      String(flags.parts),
      "--steps",
      String(flags.steps),
    ],
    1800,
    env,
  );
  console.error(JSON.stringify(r));
  inproc.push({ model: m, ...r });
  const s = sparseLayout(paramLayout(shapeConfig(m), "classify"));
  const resultMb = maxResultBytes(s, TOKENS) / 2 ** 20;
  const windowNeedMb = Math.round(needMb + dispatchWindow(maxResultBytes(s, TOKENS)) * resultMb);
  if (windowNeedMb > 0.9 * availableMb()) {
    windowedRows.push({
      model: m,
      skipped: `needs ~${windowNeedMb} MB, ${availableMb()} MB available`,
    });
    console.error(JSON.stringify(windowedRows.at(-1)));
    continue;
  }
  console.error(`windowed: ${m} …`);
  const wr = await child(["--phase", "windowed", "--model", m], 1800, env);
  console.error(JSON.stringify(wr));
  windowedRows.push({ model: m, ...wr });
}
const meshRows: Record<string, unknown>[] = [];
if (!flags["no-mesh"]) {
  for (const m of models) {
    const params = paramLayout(shapeConfig(m), "classify").total;
    const dir = await Deno.makeTempDir({ prefix: `adaptmesh-${m}-` });
    try {
      console.error(`writing a random ${m} checkpoint …`);
      await writeShapeCheckpoint(m, dir);
      for (const n of workerCounts) {
        // Coordinator ≈ 40 B/parameter (weights, moments, accumulator, scratch, two weights
        // snapshots, evaluation) + the results in flight; each worker ≈ --worker-mb, or
        // 22 B/parameter + 300 MB (a native BERT-base worker peaked at 2.5 GB).
        const workerMb = flags["worker-mb"] || Math.round(22 * params / 2 ** 20 + 300);
        const sl = sparseLayout(paramLayout(shapeConfig(m), "classify"));
        const inFlight = Math.min(n, dispatchWindow(maxResultBytes(sl, TOKENS)));
        const coordMb = Math.round((40 * params + inFlight * maxResultBytes(sl, TOKENS)) / 2 ** 20);
        const needMb = coordMb + n * workerMb;
        const haveMb = availableMb();
        if (needMb > 0.85 * haveMb) {
          const row = {
            model: m,
            workers: n,
            skipped: `needs ~${needMb} MB (coordinator ~${coordMb}, ` +
              `${n} × ~${workerMb} per worker), ${haveMb} MB available`,
          };
          console.error(JSON.stringify(row));
          meshRows.push(row);
          continue;
        }
        for (const recycle of flags.recycle.split(",")) {
          for (const entry of flags.modes.split(",").filter(Boolean)) {
            const [mode, modeFlags = ""] = entry.split("=");
            console.error(`mesh: ${m}, ${n} worker(s), ${mode}, results recycled ${recycle} …`);
            const r = await child(
              [
                ...["--phase", "mesh", "--model-dir", dir, "--n", String(n)],
                ...["--steps", String(flags.steps), "--backend", flags.backend],
                ...["--recycle", recycle, "--micro-batches", String(flags["micro-batches"])],
                `--mode-flags=${modeFlags}`,
              ],
              flags["mesh-timeout"],
              env,
            );
            console.error(JSON.stringify(r));
            meshRows.push({ model: m, mode, recycleResults: recycle === "on", ...r });
          }
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }
}

const result = {
  date: started.toISOString(),
  machine: info,
  flags,
  childEnvironment: env,
  bandwidth: bw,
  targets: { lambMsPer100M: 300, addOneResultMsPer100M: 150, transferMBsPerWorker: 500 },
  inProcess: inproc,
  windowed: windowedRows,
  mesh: meshRows,
};
const out = flags.out ??
  `bench/results/coordinator_cost-${started.toISOString().slice(0, 10)}.json`;
await Deno.mkdir("bench/results", { recursive: true });
await Deno.writeTextFile(out, JSON.stringify(result, null, 2) + "\n");

const f0 = (x: unknown) => (typeof x === "number" ? x.toFixed(0) : "—");
const f1 = (x: unknown) => (typeof x === "number" ? x.toFixed(1) : "—");
console.log(
  `\nbandwidth (one core): set ${bw.setGBs} GB/s, copy loop ${bw.copyLoopGBs}, accumulate loop ${bw.accumulateLoopGBs}\n`,
);
console.log(table(
  [
    "model",
    "params",
    "add 1 result ms (per 100M)",
    "finish ms",
    "LAMB ms (per 100M; CPU)",
    "LAMB without divider ms",
    "LAMB GB/s",
    "AdamW ms",
    "encode ms",
    "window",
    "peak RSS MB",
  ],
  inproc.map((r) => [
    String(r.model),
    `${f1(Number(r.parameters) / 1e6)} M`,
    `${f1(r.addOneResultMs)} (${f1(r.addOneResultMsPer100M)})`,
    f1(r.finishMs),
    `${f0(r.lambWallMs)} (${f0(r.lambMsPer100M)}; ${f0(r.lambCpuMs)})`,
    f0(r.lambWithoutDividerMs),
    f1(r.lambGBs),
    f0(r.adamwWallMs),
    f0(r.encodeMs),
    String(r.dispatchWindow ?? "—"),
    String(r.peakRssMB ?? r.failed ?? r.skipped),
  ]),
));
if (windowedRows.length) {
  console.log(
    "\n" + table(
      [
        "model",
        "window",
        "results (fresh arrays, worst order)",
        "most waiting",
        "result MB",
        "coordinator peak RSS MB",
      ],
      windowedRows.map((r) =>
        [r.model, r.window ?? "—", r.parts ?? "—", r.peakBuffered ?? "—", r.resultMB ?? "—"]
          .concat([r.peakRssMB ?? r.failed ?? r.skipped]).map(String)
      ),
    ),
  );
}
if (meshRows.length) {
  console.log(
    "\n" + table(
      [
        "model",
        "workers",
        "mode",
        "results into",
        "step ms",
        "combine ms",
        "optimizer ms",
        "encode ms",
        "MB in/step",
        "MB out/step",
        "results' worth in/step",
        "coordinator peak RSS MB (steps / with eval)",
        "worker peak RSS MB",
      ],
      meshRows.map((r) => {
        if (r.skipped || r.failed) {
          return [String(r.model), String(r.workers ?? ""), String(r.skipped ?? r.failed)]
            .concat(new Array<string>(10).fill(""));
        }
        const rss = r.coordinatorPeakRssMB as Record<string, number>;
        return [
          String(r.model),
          String(r.workers),
          String(r.mode ?? ""),
          r.recycleResults === false ? "fresh memory" : "recycled memory",
          f0(r.stepMs),
          f0(r.combineMs),
          f0(r.optimizerMs),
          f0(r.encodeMs),
          f1(Number(r.bytesInPerStep) / 1e6),
          f1(Number(r.bytesOutPerStep) / 1e6),
          f1(r.resultsWorthInPerStep),
          `${rss.duringSteps} / ${rss.withFinalEvaluation}`,
          (r.workersPeakRssMB as number[]).join(", "),
        ];
      }),
    ),
  );
}
console.log(`\nwrote ${out}`);
