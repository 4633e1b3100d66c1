/**
 * The engine's devices side by side, in one run: samples/s of one
 * micro-batch gradient on the engine's WebGPU device, on the engine's host
 * device (matrix products on the machine's BLAS, jsGemm where none loads)
 * and on tfjs-webgpu (`microBatchGradient`, shared/tfjs/gradient.ts), clean
 * and PGD K = 1, with per micro-batch counts (`counts: {dispatches, submits,
 * readbacks, uploadBytes, hostRandom, pipelinesCompiled}`; null on tfjs) and,
 * on webgpu, the kernel times from timestamp queries (a separate profiled
 * run: one compute pass per dispatch).
 *
 *   deno run -A bench/engine_devices.ts [--device-shape default|bert-base]
 *     [--backends webgpu-engine,cpu-engine,tfjs-webgpu] [--min-seconds S] [--out FILE]
 *
 * `default`: the default model (shared/model/default_model.ts, random
 * weights), micro-batch 8, seq 64. `bert-base`: BERT-base's shape with random
 * weights, micro-batch 32, seq 128 (for a GPU machine). Writes
 * bench/results/engine_devices-<date>.json (machine, adapter, backend per
 * row) and prints a table.
 *
 * @module
 */
import { randomBatch, randomWeights } from "./random_checkpoint.ts";
import { parseArgs } from "node:util";
import { cpuBlas } from "../shared/compute/backend.ts";
import { initBackend } from "../shared/compute/create.ts";
import { EngineModel } from "../shared/engine/engine.ts";
import { countsSince, type DeviceCounts } from "../shared/engine/device.ts";
import { cpuDevice } from "../shared/engine/devices/cpu/device.ts";
import { jsGemm } from "../shared/engine/devices/cpu/gemm.ts";
import { createWebGpuDevice, type WebGpuDevice } from "../shared/engine/devices/webgpu/device.ts";
import type { GradientResult, GradientTask } from "../shared/compute/task.ts";
import { DEFAULT_ADVERSARY, NO_ADVERSARY } from "../shared/method/adversary_config.ts";
import { type ModelConfig, parseModelConfig } from "../shared/model/config.ts";
import { paramLayout } from "../shared/model/param_layout.ts";
import { defaultModelConfigJson } from "../shared/model/default_model.ts";
import { microBatchGradient } from "../shared/tfjs/gradient.ts";
import { weightTensors } from "../shared/tfjs/model.ts";
import { table } from "./markdown.ts";

const BACKENDS = ["webgpu-engine", "cpu-engine", "tfjs-webgpu"] as const;
type Backend = typeof BACKENDS[number];

/** One row of the report. */
interface Row {
  backend: Backend;
  device: string;
  mode: string;
  microBatch: number;
  seqLen: number;
  reps: number;
  medianMs: number;
  samplesPerSec: number;
  /** Per micro-batch, after warm-up (null on tfjs). */
  counts: DeviceCounts | null;
  /** Kernel ms per micro-batch from timestamp queries (webgpu engine), largest first. */
  profile: { kernel: string; ms: number; dispatches: number }[] | null;
  /** max |g − g_cpu| / max |g_cpu| against the cpu engine's gradient of the same task. */
  relDiffVsCpu: number | null;
}

const MODES = [
  { label: "clean", adversary: NO_ADVERSARY },
  { label: "pgd K=1", adversary: { ...DEFAULT_ADVERSARY, mode: "pgd" as const, steps: 1 } },
];

function shapeOf(name: string): { config: ModelConfig; B: number; L: number } {
  if (name === "bert-base") {
    const json = {
      ...defaultModelConfigJson(2),
      hidden_size: 768,
      num_hidden_layers: 12,
      num_attention_heads: 12,
      intermediate_size: 3072,
    };
    return { config: parseModelConfig(json), B: 32, L: 128 };
  }
  if (name !== "default") throw new Error(`--device-shape: default or bert-base, got ${name}`);
  return { config: parseModelConfig(defaultModelConfigJson(2)), B: 8, L: 64 };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b), m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function relDiff(a: Float32Array, b: Float32Array): number {
  let d = 0, s = 0;
  for (let i = 0; i < b.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    s = Math.max(s, Math.abs(b[i]));
  }
  return d / s;
}

function cpuModel(): string {
  try {
    const text = Deno.readTextFileSync("/proc/cpuinfo");
    return /^model name\s*:\s*(.*)$/m.exec(text)?.[1]?.trim() ?? Deno.build.arch;
  } catch {
    return Deno.build.arch;
  }
}

/** Warm-up, then timed calls until both `minReps` and `minSeconds` are reached. */
async function timeCalls(
  run: () => Promise<GradientResult>,
  minReps: number,
  minSeconds: number,
): Promise<{ ms: number[]; first: GradientResult }> {
  const first = await run();
  const ms: number[] = [];
  const start = performance.now();
  while (ms.length < minReps || performance.now() - start < minSeconds * 1000) {
    const t = performance.now();
    await run();
    ms.push(performance.now() - t);
  }
  return { ms, first };
}

function perCall(c: DeviceCounts, n: number): DeviceCounts {
  const d = (x: number) => Math.round(x / n);
  return {
    dispatches: d(c.dispatches),
    submits: d(c.submits),
    readbacks: d(c.readbacks),
    uploadBytes: d(c.uploadBytes),
    hostRandom: d(c.hostRandom),
    pipelinesCompiled: d(c.pipelinesCompiled),
  };
}

const USAGE = `deno run -A bench/engine_devices.ts [flags]
  --device-shape default|bert-base   model shape (default: the built-in model, mb 8, seq 64;
                                     bert-base: random weights, mb 32, seq 128)
  --micro-batch N, --seq-len N       override the shape's micro-batch and sequence length
  --backends LIST                    ${BACKENDS.join(",")} (default: all)
  --min-seconds S, --min-reps N      timing per row (default 3 s, 3 reps)
  --out FILE                         JSON output (default bench/results/engine_devices-DATE.json)`;

/** A positive integer flag value, or an error naming the flag. */
function positiveInt(s: string, flag: string): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${flag}: a positive integer, got ${s}`);
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      "device-shape": { type: "string", default: "default" },
      "micro-batch": { type: "string" },
      "seq-len": { type: "string" },
      help: { type: "boolean" },
      backends: { type: "string", default: BACKENDS.join(",") },
      "min-seconds": { type: "string", default: "3" },
      "min-reps": { type: "string", default: "3" },
      out: { type: "string" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const shapeName = values["device-shape"]!;
  const shape = shapeOf(shapeName);
  const config = shape.config;
  const B = values["micro-batch"] ? positiveInt(values["micro-batch"], "--micro-batch") : shape.B;
  const L = values["seq-len"] ? positiveInt(values["seq-len"], "--seq-len") : shape.L;
  const backends = values.backends!.split(",") as Backend[];
  for (const b of backends) if (!BACKENDS.includes(b)) throw new Error(`unknown backend ${b}`);
  const minSeconds = Number(values["min-seconds"]), minReps = Number(values["min-reps"]);
  const layout = paramLayout(config);
  const flat = randomWeights(layout, 1);
  const batch = randomBatch(config, B, L, 7);
  const task = (adversary: GradientTask["adversary"]): GradientTask => ({
    step: 0,
    index: 0,
    seed: 12345,
    adversary,
    batch,
    dropout: { hidden: config.hiddenDropout, attention: config.attentionDropout },
  });
  const date = new Date().toISOString().slice(0, 10);
  const rows: Row[] = [];
  const reference = new Map<string, Float32Array>();
  let adapter: string | null = null;
  /** One row from its timed calls (ms each), kept and printed. */
  const record = (
    backend: Backend,
    device: string,
    mode: string,
    ms: number[],
    relDiffVsCpu: number | null,
    counts: Row["counts"] = null,
    profile: Row["profile"] = null,
  ) => {
    const medianMs = median(ms), samplesPerSec = B / (medianMs / 1000);
    rows.push({
      backend,
      device,
      mode,
      microBatch: B,
      seqLen: L,
      reps: ms.length,
      medianMs,
      samplesPerSec,
      counts,
      profile,
      relDiffVsCpu,
    });
    console.error(
      `[${backend}] ${mode}: ${samplesPerSec.toFixed(1)} samples/s (${medianMs.toFixed(1)} ms)`,
    );
  };

  // The cpu engine first: its gradients are the reference of the others.
  const blas = cpuBlas();
  const cpuName = blas.blas ? blas.blas.describe() : `jsGemm (${blas.reason})`;
  if (blas.blas) blas.blas.setThreads(navigator.hardwareConcurrency);
  const engineRows = async (
    backend: Backend,
    device: string,
    model: EngineModel<unknown>,
    counts: () => DeviceCounts,
    profiled: WebGpuDevice | null,
  ) => {
    model.setWeights(flat);
    for (const m of MODES) {
      const k = task(m.adversary);
      const before = { c: counts(), n: 0 };
      let calls = 0;
      const { ms, first } = await timeCalls(
        async () => {
          if (calls++ === 1) before.c = counts(); // after the warm-up call
          return await model.gradient(k);
        },
        minReps,
        minSeconds,
      );
      const c = perCall(countsSince(before.c, counts()), ms.length);
      let profile: Row["profile"] = null;
      if (profiled) {
        const pm = new EngineModel(profiled.device, config, layout);
        pm.setWeights(flat);
        await pm.gradient(k); // warm-up
        profiled.profile.ms.clear();
        profiled.profile.calls.clear();
        const n = 3;
        for (let i = 0; i < n; i++) await pm.gradient(k);
        pm.dispose();
        profile = [...profiled.profile.ms].map(([kernel, t]) => ({
          kernel,
          ms: t / n,
          dispatches: (profiled.profile.calls.get(kernel) ?? 0) / n,
        })).sort((a, b) => b.ms - a.ms);
      }
      const ref = reference.get(m.label);
      if (!ref) reference.set(m.label, first.grad.slice());
      record(backend, device, m.label, ms, ref ? relDiff(first.grad, ref) : null, c, profile);
    }
    model.dispose();
  };

  if (backends.includes("cpu-engine")) {
    const dev = cpuDevice(blas.blas ? blas.blas.gemm : jsGemm);
    const model = new EngineModel(dev, config, layout) as EngineModel<unknown>;
    await engineRows("cpu-engine", `${cpuName} on ${cpuModel()}`, model, dev.counts!, null);
  }
  if (backends.includes("webgpu-engine")) {
    const gpu = await createWebGpuDevice();
    const prof = await createWebGpuDevice({ profile: true });
    if (!gpu || !prof) console.error("[webgpu-engine] skipped: no WebGPU adapter");
    else {
      adapter = `${gpu.adapter}${gpu.software ? " (software)" : ""}`;
      const model = new EngineModel(gpu.device, config, layout) as EngineModel<unknown>;
      await engineRows("webgpu-engine", adapter, model, gpu.counts, prof.profiling ? prof : null);
      gpu.destroy();
      prof.destroy();
    }
  }
  if (backends.includes("tfjs-webgpu")) {
    const info = await initBackend("tfjs-webgpu");
    const model = { config, layout, weights: weightTensors(layout, flat) };
    for (const m of MODES) {
      const k = task(m.adversary);
      const { ms, first } = await timeCalls(
        () => microBatchGradient(model, k),
        minReps,
        minSeconds,
      );
      const ref = reference.get(m.label);
      record("tfjs-webgpu", info.device, m.label, ms, ref ? relDiff(first.grad, ref) : null);
    }
    for (const t of Object.values(model.weights)) t.dispose();
  }

  const sps = (b: Backend, mode: string) =>
    rows.find((r) => r.backend === b && r.mode === mode)?.samplesPerSec ?? null;
  const ratios = MODES.map((m) => {
    const w = sps("webgpu-engine", m.label), t = sps("tfjs-webgpu", m.label);
    const c = sps("cpu-engine", m.label);
    return {
      mode: m.label,
      webgpuOverTfjsWebgpu: w && t ? w / t : null,
      webgpuOverCpuEngine: w && c ? w / c : null,
    };
  });
  const report = {
    bench: "engine_devices",
    date,
    machine: { cpu: cpuModel(), threads: navigator.hardwareConcurrency, adapter },
    shape: {
      name: shapeName,
      microBatch: B,
      seqLen: L,
      hidden: config.hiddenSize,
      layers: config.numLayers,
      parameters: layout.total,
      dropout: { hidden: config.hiddenDropout, attention: config.attentionDropout },
    },
    rows,
    ratios,
  };
  const out = values.out ??
    `bench/results/engine_devices${shapeName === "default" ? "" : `-${shapeName}`}-${date}.json`;
  await Deno.writeTextFile(out, JSON.stringify(report, null, 2) + "\n");

  const fmt = (x: number | null, d = 1) => x === null ? "-" : x.toFixed(d);
  console.log(`# engine_devices — ${date}, ${report.machine.cpu}, adapter ${adapter ?? "none"}`);
  console.log(`shape ${shapeName}: mb ${B}, seq ${L}, ${layout.total} parameters\n`);
  console.log(table(
    [
      "backend",
      "mode",
      "samples/s",
      "ms/call",
      "dispatches",
      "submits",
      "readbacks",
      "upload KB",
      "host random",
      "pipelines",
      "rel diff vs cpu",
    ],
    rows.map((r) => [
      r.backend,
      r.mode,
      fmt(r.samplesPerSec),
      fmt(r.medianMs),
      ...(r.counts
        ? [
          String(r.counts.dispatches),
          String(r.counts.submits),
          String(r.counts.readbacks),
          fmt(r.counts.uploadBytes / 1024),
          String(r.counts.hostRandom),
          String(r.counts.pipelinesCompiled),
        ]
        : ["-", "-", "-", "-", "-", "-"]),
      r.relDiffVsCpu === null ? "-" : r.relDiffVsCpu.toExponential(1),
    ]),
  ));
  for (const r of ratios) {
    console.log(
      `${r.mode}: webgpu engine / tfjs-webgpu ${fmt(r.webgpuOverTfjsWebgpu)}×, ` +
        `/ cpu engine ${fmt(r.webgpuOverCpuEngine, 2)}×`,
    );
  }
  for (const r of rows.filter((r) => r.profile)) {
    const total = r.profile!.reduce((s, p) => s + p.ms, 0);
    console.log(
      `\nwebgpu kernel times, ${r.mode} (timestamp queries, ms per micro-batch; total ${
        total.toFixed(1)
      }):`,
    );
    console.log(table(
      ["kernel", "ms", "share", "dispatches"],
      r.profile!.slice(0, 12).map((
        p,
      ) => [
        p.kernel,
        p.ms.toFixed(2),
        `${(100 * p.ms / total).toFixed(0)}%`,
        String(p.dispatches),
      ]),
    ));
  }
  console.log(`\nwrote ${out}`);
  Deno.exit(0); // tfjs-webgpu's device keeps the process alive
}

if (import.meta.main) await main();
