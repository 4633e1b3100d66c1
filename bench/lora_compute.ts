/**
 * Engine compute per micro-batch, LoRA vs full fine-tuning, side by side in
 * one run: `EngineModel.gradient` on the cpu device (the machine's BLAS, all
 * cores) at the default model's shape and at the BERT-base shape, modes off
 * and PGD K = 1 (ScaLA's default). Full and LoRA calls alternate (one of
 * each per round), so a machine shared with other work slows both alike.
 * Weights are random (`initWeights`, seed 13); the LoRA trainable buffer is
 * PEFT's init with B drawn non-zero. The target: LoRA r = 8 ≤ 0.8× full
 * at BERT-base.
 *
 * Each call is measured twice: wall time, and the process's CPU time
 * (`process.cpuUsage`, user + system). On a machine shared with other work
 * the wall time of a call varies by tens of percent; CPU time with one BLAS
 * thread (`--threads 1`) counts the work itself and is the steadier number.
 *
 *   deno run -A bench/lora_compute.ts [--shapes default,bert-base] [--micro-batch 8]
 *     [--seq-len 64] [--rounds 3] [--modes off,pgd1] [--rank 8] [--targets query,value]
 *     [--out bench/results/lora_compute-<date>.json] [--profile]
 *
 * `--profile` adds, per row, one more call of each with every kernel timed
 * (wall time per Device kernel, shared/engine/device.ts `profiled`).
 *
 * @module
 */
import { parseArgs } from "node:util";
import process from "node:process";
import { initWeights } from "../shared/io/checkpoint.ts";
import { type ModelConfig, parseModelConfig } from "../shared/model/config.ts";
import { paramLayout } from "../shared/model/param_layout.ts";
import { DEFAULT_LORA, initTrainable, loraPlan } from "../shared/model/lora.ts";
import { defaultModelConfigJson } from "../shared/model/default_model.ts";
import { EngineModel } from "../shared/engine/engine.ts";
import { kernelProfile } from "../shared/engine/device.ts";
import { cpuDevice } from "../shared/engine/devices/cpu/device.ts";
import { jsGemm } from "../shared/engine/devices/cpu/gemm.ts";
import { cpuBlas } from "../shared/compute/backend.ts";
import type { GradientTask } from "../shared/compute/task.ts";
import { DEFAULT_ADVERSARY, NO_ADVERSARY } from "../shared/method/adversary_config.ts";
import type { LabelledBatch } from "../shared/model/batch.ts";
import { Rng } from "../shared/method/rng.ts";
import { shapeConfig } from "./random_checkpoint.ts";
import { table } from "./markdown.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    shapes: { type: "string", default: "default,bert-base" },
    "micro-batch": { type: "string", default: "8" },
    "seq-len": { type: "string", default: "64" },
    rounds: { type: "string", default: "3" },
    modes: { type: "string", default: "off,pgd1" },
    rank: { type: "string", default: "8" },
    targets: { type: "string", default: DEFAULT_LORA.targetModules.join(",") },
    out: { type: "string" },
    profile: { type: "boolean", default: false },
    threads: { type: "string" },
  },
  strict: true,
});
const B = Number(flags["micro-batch"]), L = Number(flags["seq-len"]);
const rounds = Number(flags.rounds), rank = Number(flags.rank);
const targets = flags.targets!.split(",");

function config(shape: string): ModelConfig {
  if (shape === "default") return parseModelConfig(defaultModelConfigJson(2));
  return { ...shapeConfig(shape), numLabels: 2 };
}

/** B examples of L positions, ~10% padding, random ids and labels. */
function batch(c: ModelConfig): LabelledBatch {
  const rng = new Rng(5);
  const inputIds = new Int32Array(B * L), tokenTypeIds = new Int32Array(B * L);
  const attentionMask = new Uint8Array(B * L), labels = new Float32Array(B);
  for (let b = 0; b < B; b++) {
    const len = L - rng.int(Math.floor(L / 5) + 1);
    for (let i = 0; i < len; i++) {
      inputIds[b * L + i] = 1000 + rng.int(c.vocabSize - 1000);
      attentionMask[b * L + i] = 1;
    }
    labels[b] = rng.int(2);
  }
  return { inputIds, tokenTypeIds, attentionMask, labels, size: B, seqLen: L };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b), m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function cpuModel(): string {
  try {
    const line = Deno.readTextFileSync("/proc/cpuinfo").split("\n").find((l) =>
      l.startsWith("model name")
    );
    return line?.split(":")[1].trim() ?? "unknown";
  } catch {
    return "unknown";
  }
}

const blas = cpuBlas();
const threads = Number(flags.threads ?? navigator.hardwareConcurrency);
if (blas.blas) blas.blas.setThreads(threads);
const gemmName = blas.blas ? blas.blas.describe() : `jsGemm (${blas.reason})`;
console.error(`cpu device: ${gemmName}, ${threads} BLAS threads`);

interface Row {
  shape: string;
  mode: string;
  params: number;
  trainable: number;
  fullMs: number[];
  loraMs: number[];
  fullMedianMs: number;
  loraMedianMs: number;
  /** LoRA / full, median wall times. */
  ratio: number;
  /** CPU ms (user + system) of each call. */
  fullCpuMs: number[];
  loraCpuMs: number[];
  /** LoRA / full, mean CPU times. */
  cpuRatio: number;
  /** Per-kernel ms of one call each (`--profile`). */
  profile?: {
    kernel: string;
    fullMs: number;
    loraMs: number;
    fullCalls: number;
    loraCalls: number;
  }[];
}

const rows: Row[] = [];
for (const shape of flags.shapes!.split(",")) {
  const c = config(shape);
  const layout = paramLayout(c);
  const weights = initWeights(c, 13);
  const plan = loraPlan(c, { ...DEFAULT_LORA, r: rank, alpha: rank, targetModules: targets });
  const trainable = initTrainable(plan, layout, weights, 13);
  const rng = new Rng(3);
  for (const ad of plan.adapters) {
    for (let i = 0; i < ad.b.size; i++) trainable[ad.b.offset + i] = 0.02 * rng.normal();
  }
  const dev = () => cpuDevice(blas.blas ? blas.blas.gemm : jsGemm);
  const full = new EngineModel(dev(), c, layout);
  full.setWeights(weights);
  const lora = new EngineModel(dev(), c, layout);
  lora.setWeights(weights);
  lora.setLora(plan, trainable);
  const fullOut = new Float32Array(layout.total), loraOut = new Float32Array(plan.layout.total);
  const data = batch(c);
  for (const mode of flags.modes!.split(",")) {
    const adversary = mode === "off"
      ? NO_ADVERSARY
      : { ...DEFAULT_ADVERSARY, steps: Number(mode.replace("pgd", "")) };
    const task: GradientTask = {
      step: 0,
      index: 0,
      seed: 1,
      adversary,
      batch: data,
      dropout: { hidden: 0.1, attention: 0.1 },
    };
    await full.gradient(task, fullOut); // warm-up: buffers, page faults
    await lora.gradient(task, loraOut);
    const fullMs: number[] = [], loraMs: number[] = [];
    const fullCpuMs: number[] = [], loraCpuMs: number[] = [];
    const timed = async (call: () => Promise<unknown>, wall: number[], cpu: number[]) => {
      const c = process.cpuUsage(), t = performance.now();
      await call();
      wall.push(performance.now() - t);
      const u = process.cpuUsage(c);
      cpu.push((u.user + u.system) / 1000);
    };
    for (let r = 0; r < rounds; r++) {
      await timed(() => full.gradient(task, fullOut), fullMs, fullCpuMs);
      await timed(() => lora.gradient(task, loraOut), loraMs, loraCpuMs);
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const row: Row = {
      shape,
      mode,
      params: layout.total,
      trainable: plan.layout.total,
      fullMs,
      loraMs,
      fullMedianMs: median(fullMs),
      loraMedianMs: median(loraMs),
      ratio: median(loraMs) / median(fullMs),
      fullCpuMs,
      loraCpuMs,
      cpuRatio: mean(loraCpuMs) / mean(fullCpuMs),
    };
    if (flags.profile) {
      const pf = kernelProfile(), pl = kernelProfile();
      const fm = new EngineModel(dev(), c, layout, { profile: pf });
      fm.setWeights(weights);
      await fm.gradient(task, fullOut);
      pf.ms.clear(), pf.calls.clear();
      await fm.gradient(task, fullOut);
      const lm = new EngineModel(dev(), c, layout, { profile: pl });
      lm.setWeights(weights);
      lm.setLora(plan, trainable);
      await lm.gradient(task, loraOut);
      pl.ms.clear(), pl.calls.clear();
      await lm.gradient(task, loraOut);
      fm.dispose();
      lm.dispose();
      const kernels = new Set([...pf.ms.keys(), ...pl.ms.keys()]);
      row.profile = [...kernels].map((k) => ({
        kernel: k,
        fullMs: pf.ms.get(k) ?? 0,
        loraMs: pl.ms.get(k) ?? 0,
        fullCalls: pf.calls.get(k) ?? 0,
        loraCalls: pl.calls.get(k) ?? 0,
      })).sort((a, b) => b.fullMs - a.fullMs);
      for (const k of row.profile.slice(0, 8)) {
        console.error(
          `  ${k.kernel}: full ${k.fullMs.toFixed(1)} ms (${k.fullCalls}), ` +
            `LoRA ${k.loraMs.toFixed(1)} ms (${k.loraCalls})`,
        );
      }
    }
    rows.push(row);
    console.error(
      `${shape} ${mode}: full ${row.fullMedianMs.toFixed(1)} ms, LoRA r=${rank} ` +
        `${row.loraMedianMs.toFixed(1)} ms, ratio ${row.ratio.toFixed(3)}; CPU ratio ` +
        row.cpuRatio.toFixed(3),
    );
  }
  full.dispose();
  lora.dispose();
}

console.log(
  table(
    [
      "shape",
      "mode",
      "params",
      `LoRA r=${rank} trainable`,
      "full ms (median)",
      "LoRA ms (median)",
      "LoRA / full (wall)",
      "full CPU ms (mean)",
      "LoRA CPU ms (mean)",
      "LoRA / full (CPU)",
    ],
    rows.map((r) => [
      r.shape,
      r.mode,
      r.params.toLocaleString("en-US"),
      r.trainable.toLocaleString("en-US"),
      r.fullMedianMs.toFixed(1),
      r.loraMedianMs.toFixed(1),
      r.ratio.toFixed(3),
      (r.fullCpuMs.reduce((a, b) => a + b, 0) / r.fullCpuMs.length).toFixed(1),
      (r.loraCpuMs.reduce((a, b) => a + b, 0) / r.loraCpuMs.length).toFixed(1),
      r.cpuRatio.toFixed(3),
    ]),
  ),
);
const date = new Date().toISOString().slice(0, 10);
const out = flags.out ?? `bench/results/lora_compute-${date}.json`;
await Deno.writeTextFile(
  out,
  JSON.stringify(
    {
      date,
      machine: {
        cpu: cpuModel(),
        cores: navigator.hardwareConcurrency,
        blasThreads: threads,
        gemm: gemmName,
        loadAverage: Deno.loadavg(),
      },
      settings: { microBatch: B, seqLen: L, rounds, rank, alpha: rank, targets, dropout: 0.1 },
      rows,
    },
    null,
    1,
  ) + "\n",
);
console.error(`wrote ${out}`);
