/**
 * Worker compute benchmark: the time of one micro-batch gradient
 * (`ModelCompute.gradient`, shared/compute/model_compute.ts, docs/method.md
 * "One micro-batch gradient": tfjs's `microBatchGradient`, or on cpu the
 * engine's `EngineModel.gradient`) per backend, adversary mode, micro-batch
 * size and sequence length; and, on tfjs-cpu and tfjs-wasm, what the project's two CPU
 * speed-ups (the JavaScript `UnsortedSegmentSum` kernel and explicit-transpose
 * matmul) are worth.
 *
 *   deno task bench [--backends tfjs-wasm,cpu,tfjs-webgpu] [--threads 1,2]
 *                   [--modes off,pgd1,pgd2,freelb2]
 *                   [--micro-batches 8,32] [--seq-lens 64,128] [--quick] [--out FILE]
 *
 * Run with `--help` for every flag. Prints Markdown tables; writes a JSON file
 * (rewritten after every measured row, so a run cut short keeps what it did).
 *
 * ## FLOP count (model FLOPs, analytic; what the GFLOP/s column divides by)
 *
 * For a micro-batch of B examples of L positions (padding included: it is
 * computed like any other position), hidden H, `layers` encoder layers:
 *
 *   forward = 2·P_enc·B·L + 2·P_head·B + layers·4·L²·H·B
 *
 * - P_enc: every parameter of the encoder layers (the "non-embedding"
 *   parameters applied at every position: Q, K, V, attention output,
 *   intermediate and output dense, their biases and LayerNorms). A weight used
 *   once per position costs one multiply and one add.
 * - P_head: pooler and classifier parameters, applied to the first token only,
 *   so once per example.
 * - attention: QKᵀ (2·L²·H) and probs·V (2·L²·H) per layer per example.
 * - Not counted: embedding lookups and their scatter-add gradient, softmax,
 *   GELU, LayerNorm arithmetic, dropout, the adversary's ascent step (all
 *   linear in B·L·H, small next to the matmuls).
 *
 * A full pass (forward + backward to activations and weights) = 3 × forward.
 * A δ-only pass (docs/method.md: only ∇_δ is needed) = 2 × forward: its backward
 * forms activation gradients but no weight gradients.
 *
 * Passes per micro-batch (docs/method.md): off = 1 full; pgd K = K δ-only + 1 full;
 * freelb K = K full.
 *
 * The GFLOP/s reported is this count over the measured time: it is "useful"
 * model arithmetic, not what the backend actually executes.
 *
 * ## Timing
 *
 * Per configuration: one warm-up call (its time is reported as "first call";
 * on webgpu it includes compiling shaders), then timed calls until at least
 * `--min-reps` calls AND at least `--min-seconds` seconds have been spent; the
 * median is reported. Each call is one `microBatchGradient` on the same task,
 * timed with `performance.now()` around the awaited call (which downloads the
 * flat gradient, so the device queue is drained).
 *
 * ## Backends
 *
 * `cpu` runs once per `--threads` count (default 1,2): BLAS threads. Its
 * rows also say how much of the call was spent inside BLAS (every sgemm call
 * timed) and that BLAS's own rate there, and how far its gradient is from
 * the tfjs-wasm row's of the same configuration (max abs difference).
 *
 * `--backends` defaults to tfjs-wasm, cpu when a BLAS loads, plus tfjs-webgpu when any adapter exists
 * (on a GPU-less machine that is Mesa's llvmpipe, a software rasteriser). tfjs-cpu
 * is left out of the default grid: it runs ~5 samples/s and the grid would
 * take many minutes. It still takes part in the speed-up comparison
 * (`--speedup`, default cpu,wasm), with a smaller micro-batch (8 instead of 32):
 * tfjs's built-in cpu `UnsortedSegmentSum` loops over all 30522 vocabulary rows.
 *
 * ## Speed-up comparison
 *
 * Mode off, seq 64, micro-batch 32 on wasm and 8 on cpu. Variants: the project
 * default (JS `UnsortedSegmentSum` + explicit-transpose matmul), and transpose
 * flags instead (`setExplicitTranspose(false)`); each is a measured call whose
 * whole gradient is compared with the default's (max abs diff, must be <= 1e-5;
 * the exit code is 1 otherwise). On cpu also tfjs's built-in kernel: it takes
 * minutes per call (about 8 ms per vocabulary row here), so by default its cost
 * is estimated: built-in and JS kernels are timed on the call's real embedding
 * gradient with a sample of segments, scaled linearly to the full count, and
 * the difference added to the default call's median (`--builtin-segment-sum
 * measure` runs one real call instead). wasm has no built-in kernel to go back to.
 *
 * @module
 */
import { randomBatch, randomWeights } from "./random_checkpoint.ts";
import * as tf from "@tensorflow/tfjs-core";
import { exitOnFlagError, FlagError, type FlagSpecs, parseFlags } from "../shared/cli/flags.ts";
import { type BackendName, cpuBlas } from "../shared/compute/backend.ts";
import { cpuBackend, disposeBackend, initBackend } from "../shared/compute/create.ts";
import type { ModelCompute } from "../shared/compute/model_compute.ts";
import { EngineModel } from "../shared/engine/engine.ts";
import { cpuDevice } from "../shared/engine/devices/cpu/device.ts";
import { kernelProfile } from "../shared/engine/device.ts";
import type { Gemm } from "../shared/engine/devices/cpu/gemm.ts";
import type { GradientResult, GradientTask } from "../shared/compute/task.ts";
import { type AdversaryMode, DEFAULT_ADVERSARY } from "../shared/method/adversary_config.ts";
import type { LabelledBatch } from "../shared/model/batch.ts";
import { deltaGradient } from "../shared/tfjs/gradient.ts";
import {
  batchTensors,
  type DeviceModel,
  targetTensors,
  weightTensors,
} from "../shared/tfjs/model.ts";
import { positionIds } from "../shared/model/targets.ts";
import { type ModelConfig, parseModelConfig } from "../shared/model/config.ts";
import { type ParamLayout, paramLayout } from "../shared/model/param_layout.ts";
import { setExplicitTranspose } from "../shared/tfjs/ops.ts";
import { defaultModelConfigJson } from "../shared/model/default_model.ts";
import { registerUnsortedSegmentSum } from "../shared/tfjs/unsorted_segment_sum.ts";
import { mixSeed } from "../shared/method/rng.ts";
import { table } from "./markdown.ts";

// tfjs-backend-cpu registers its own UnsortedSegmentSum on import; keep it before
// initBackend("tfjs-cpu") replaces it, so the comparison can put it back.
const builtinCpuSegmentSum = tf.getKernel(tf.UnsortedSegmentSum, "cpu");

/** The default small BERT shape (bert-base-uncased vocabulary). */
const MODEL_JSON = defaultModelConfigJson(2);

const SPEEDUP_SEQ = 64;
/** Run seed of every benchmark task (dropout masks derive from it). */
const TASK_SEED = 12345;
const SPEEDUP_MB: Record<SpeedupBackend, number> = { "tfjs-cpu": 8, "tfjs-wasm": 32 };

interface ModeSpec {
  readonly label: string;
  readonly mode: AdversaryMode;
  readonly steps: number;
}

interface Options {
  backends: BackendName[];
  threads: number[];
  modes: ModeSpec[];
  microBatches: number[];
  seqLens: number[];
  minReps: number;
  minSeconds: number;
  quick: boolean;
  speedup: SpeedupBackend[];
  builtinSegmentSum: "estimate" | "measure";
  segmentSample: number;
  out: string;
}

type SpeedupBackend = "tfjs-cpu" | "tfjs-wasm";

const USAGE = `deno task bench [flags]   (= deno run -A bench/worker_compute.ts)

Times one micro-batch gradient per backend x mode x micro-batch x sequence length.
Lists are comma-separated. The speed-up comparison runs mode off, seq 64, micro-batch
32 (wasm) or 8 (cpu); it toggles the JS UnsortedSegmentSum kernel (cpu only: wasm has
no built-in one) and explicit-transpose matmul, and checks the gradient.`;

/** The flags (bench/README.md, "Running"); list flags are strings split by {@link list}. */
const FLAGS = {
  backends: {
    type: "string",
    help: "tfjs-cpu,tfjs-wasm,cpu,tfjs-webgpu subset (default: tfjs-wasm, cpu when a BLAS " +
      "loads, tfjs-webgpu when an adapter exists; tfjs-cpu is slow and only joins when named)",
  },
  threads: { type: "string", default: "1,2", help: "cpu: BLAS thread counts, one grid each" },
  modes: { type: "string", default: "off,pgd1,pgd2,freelb2", help: "off, pgdK, freelbK" },
  "micro-batches": { type: "string", default: "8,32", help: "micro-batch sizes" },
  "seq-lens": { type: "string", default: "64,128", help: "sequence lengths" },
  "min-reps": { type: "int", help: "timed calls at least (default: 3; --quick: 2)" },
  "min-seconds": { type: "number", help: "timed seconds at least (default: 2; --quick: 0)" },
  quick: { type: "boolean", help: "fewer repetitions (see --min-reps, --min-seconds)" },
  speedup: {
    type: "string",
    default: "tfjs-cpu,tfjs-wasm",
    help: 'backends for the speed-up comparison, tfjs-cpu,tfjs-wasm subset or "none"',
  },
  "builtin-segment-sum": {
    type: "string",
    default: "estimate",
    help: "estimate|measure: cpu's built-in kernel takes minutes per call, so by default " +
      "its cost is estimated (timed on a sample of segments, scaled); measure runs 1 call",
  },
  "segment-sample": { type: "int", default: 256, help: "segments the estimate times" },
  out: {
    type: "string",
    help: "JSON output (default: bench/results/worker_compute-<backends>-<date>.json)",
  },
} as const satisfies FlagSpecs;

function list(s: string, flag: string): string[] {
  const items = s.split(",").map((x) => x.trim()).filter((x) => x);
  if (items.length === 0) throw new FlagError(`--${flag}: empty list`);
  return items;
}

/** `s`'s items, each one of `allowed`. */
function listOf<const T extends string>(s: string, flag: string, allowed: readonly T[]): T[] {
  return list(s, flag).map((x) => {
    if (!allowed.includes(x as T)) {
      throw new FlagError(`--${flag}: ${x} is not one of ${allowed.join(", ")}`);
    }
    return x as T;
  });
}

function posInt(n: number, flag: string): number {
  if (!Number.isInteger(n) || n < 1) throw new FlagError(`--${flag}: bad value ${n}`);
  return n;
}

function posInts(s: string, flag: string): number[] {
  return list(s, flag).map((x) => posInt(Number(x), flag));
}

function parseMode(s: string): ModeSpec {
  if (s === "off") return { label: "off", mode: "off", steps: 0 };
  const m = /^(pgd|freelb)(\d*)$/.exec(s);
  if (!m) throw new FlagError(`--modes: bad mode ${s} (off, pgdK or freelbK)`);
  const steps = m[2] ? Number(m[2]) : 1;
  if (steps < 1) throw new FlagError(`--modes: K must be >= 1 in ${s}`);
  return { label: `${m[1]} K=${steps}`, mode: m[1] as AdversaryMode, steps };
}

async function anyAdapter(): Promise<GPUAdapter | null> {
  const gpu = (globalThis.navigator as Navigator & { gpu?: GPU }).gpu;
  try {
    return (await gpu?.requestAdapter({ powerPreference: "high-performance" })) ?? null;
  } catch {
    return null;
  }
}

/** tfjs-wasm, cpu when a BLAS loads, tfjs-webgpu when an adapter exists. */
async function defaultBackends(): Promise<BackendName[]> {
  const backends: BackendName[] = ["tfjs-wasm"];
  if (cpuBlas().blas) backends.push("cpu");
  if (await anyAdapter()) backends.push("tfjs-webgpu");
  return backends;
}

/** Parses and checks the command line; usage errors are {@link FlagError}s. */
async function parseOptions(args: readonly string[]): Promise<Options> {
  const f = parseFlags(args, FLAGS, USAGE);
  const backends = [
    ...new Set(
      f.backends !== undefined
        ? listOf(f.backends, "backends", ["tfjs-cpu", "tfjs-wasm", "cpu", "tfjs-webgpu"] as const)
        : await defaultBackends(),
    ),
  ];
  const minSeconds = f["min-seconds"] ?? (f.quick ? 0 : 2);
  if (minSeconds < 0) throw new FlagError(`--min-seconds: bad value ${minSeconds}`);
  const builtin = f["builtin-segment-sum"];
  if (builtin !== "estimate" && builtin !== "measure") {
    throw new FlagError(`--builtin-segment-sum: estimate or measure, not ${builtin}`);
  }
  const date = new Date().toISOString().slice(0, 10);
  return {
    backends,
    threads: posInts(f.threads, "threads"),
    modes: list(f.modes, "modes").map(parseMode),
    microBatches: posInts(f["micro-batches"], "micro-batches"),
    seqLens: posInts(f["seq-lens"], "seq-lens"),
    minReps: f["min-reps"] !== undefined ? posInt(f["min-reps"], "min-reps") : f.quick ? 2 : 3,
    minSeconds,
    quick: f.quick,
    speedup: f.speedup === "none"
      ? []
      : listOf(f.speedup, "speedup", ["tfjs-cpu", "tfjs-wasm"] as const),
    builtinSegmentSum: builtin,
    segmentSample: posInt(f["segment-sample"], "segment-sample"),
    out: f.out ?? `bench/results/worker_compute-${backends.join("+")}-${date}.json`,
  };
}

// ---------------------------------------------------------------- model and data

// ---------------------------------------------------------------- FLOP count

interface FlopModel {
  /** Encoder-layer parameters (applied per position). */
  readonly perToken: number;
  /** Pooler + classifier parameters (applied per example). */
  readonly perExample: number;
}

function flopModel(layout: ParamLayout): FlopModel {
  let perToken = 0, perExample = 0;
  for (const s of layout.specs) {
    if (s.name.includes(".encoder.layer.")) perToken += s.size;
    else if (s.name.includes(".pooler.") || s.name.startsWith("classifier.")) {
      perExample += s.size;
    }
  }
  return { perToken, perExample };
}

function forwardFlops(c: ModelConfig, f: FlopModel, B: number, L: number): number {
  return 2 * f.perToken * B * L + 2 * f.perExample * B +
    c.numLayers * 4 * L * L * c.hiddenSize * B;
}

/** Passes per micro-batch (docs/method.md) and the FLOPs they total. */
function callFlops(c: ModelConfig, f: FlopModel, m: ModeSpec, B: number, L: number) {
  const fwd = forwardFlops(c, f, B, L);
  const full = m.mode === "off" ? 1 : m.mode === "pgd" ? 1 : m.steps;
  const deltaOnly = m.mode === "pgd" ? m.steps : 0;
  return { full, deltaOnly, flops: full * 3 * fwd + deltaOnly * 2 * fwd };
}

// ---------------------------------------------------------------- measurement

interface Timing {
  firstMs: number;
  times: number[];
  adversaryTimes: number[];
  grad: Float32Array;
  loss: number;
  leakedTensors: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/** What computes a micro-batch gradient: the compute contract (the engine, or tfjs). */
type Computer = ModelCompute;

function compute(c: Computer, task: GradientTask): Promise<GradientResult> {
  return c.gradient(task);
}

/** The benchmark's task for `batch` under mode `m` (step 0, the model's own dropout). */
function benchTask(config: ModelConfig, batch: LabelledBatch, m: ModeSpec): GradientTask {
  return {
    step: 0,
    index: 0,
    seed: TASK_SEED,
    adversary: { ...DEFAULT_ADVERSARY, mode: m.mode, steps: Math.max(1, m.steps) },
    batch,
    dropout: { hidden: config.hiddenDropout, attention: config.attentionDropout },
  };
}

/** A gemm that also counts its calls, FLOPs and time (the profile of native rows). */
function timedGemm(inner: Gemm) {
  const stats = { calls: 0, flops: 0, ms: 0 };
  const gemm: Gemm = (ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) => {
    const t = performance.now();
    inner(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    stats.ms += performance.now() - t;
    stats.calls++;
    stats.flops += 2 * m * n * k;
  };
  return {
    gemm,
    stats,
    reset() {
      stats.calls = 0;
      stats.flops = 0;
      stats.ms = 0;
    },
  };
}

async function measure(
  computer: Computer,
  batch: LabelledBatch,
  m: ModeSpec,
  reps: { minReps: number; minSeconds: number; warmup: boolean },
  onCall: () => void = () => {},
): Promise<Timing> {
  const config = computer.config;
  const task = benchTask(config, batch, m);
  const before = tf.memory().numTensors;
  let t = performance.now();
  const first = reps.warmup ? await compute(computer, task) : null;
  const firstMs = first ? performance.now() - t : NaN;
  const times: number[] = [], adversaryTimes: number[] = [];
  const start = performance.now();
  let last = first;
  while (times.length < reps.minReps || performance.now() - start < reps.minSeconds * 1000) {
    onCall();
    t = performance.now();
    last = await compute(computer, task);
    times.push(performance.now() - t);
    adversaryTimes.push(last.timings.adversaryMs);
  }
  return {
    firstMs,
    times,
    adversaryTimes,
    grad: last!.grad,
    loss: last!.loss,
    leakedTensors: tf.memory().numTensors - before,
  };
}

function makeModel(config: ModelConfig, layout: ParamLayout, flat: Float32Array): DeviceModel {
  return { config, layout, weights: weightTensors(layout, flat) };
}

function disposeModel(model: DeviceModel): void {
  for (const t of Object.values(model.weights)) t.dispose();
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

function maxAbs(a: Float32Array): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]));
  return d;
}

function useBuiltinSegmentSum(): void {
  tf.unregisterKernel(tf.UnsortedSegmentSum, "cpu");
  tf.registerKernel(builtinCpuSegmentSum!);
}

/** Cost of one embedding-gradient scatter-add, JS kernel vs tfjs's built-in (cpu). */
interface SegmentSumSite {
  site: string;
  rows: number;
  width: number;
  numSegments: number;
  /** The built-in kernel ran with this many segments; its time is scaled linearly. */
  sampledSegments: number;
  jsMs: number;
  builtinSampleMs: number;
  builtinEstimateMs: number;
  /** JS vs built-in output on the sampled segments. */
  maxAbsDiff: number;
}

/**
 * tfjs's cpu UnsortedSegmentSum loops over every segment (equal, cast,
 * multiply, sum over all rows each time): minutes for the 30522-row word
 * embedding. Rather than run it, time it on `sample` segments (its cost is the
 * same for every segment, so linear in their number) for each embedding looked
 * up in the forward pass, on the micro-batch's real upstream gradient, and
 * compare its output with the JS kernel's: that is the embedding gradient
 * (exactly for position and token type; for words, with ids folded mod
 * `sample`).
 */
async function segmentSumCosts(
  model: DeviceModel,
  batch: LabelledBatch,
  sample: number,
): Promise<SegmentSumSite[]> {
  const { config } = model;
  const rows = batch.size * batch.seqLen, width = config.hiddenSize;
  // The upstream gradient of all three lookups is ∇_E loss = ∇_δ loss at δ = 0
  // (h = E + δ + position + token type), with the same dropout masks as the call.
  const bt = batchTensors(config, batch);
  const targets = targetTensors(batch.labels, batch);
  const zero = tf.zeros([batch.size, batch.seqLen, width]) as tf.Tensor3D;
  const drop = {
    hidden: config.hiddenDropout,
    attention: config.attentionDropout,
    seed: mixSeed(TASK_SEED, 0, 0),
  };
  const g = tf.tidy(() => deltaGradient(model, bt, targets, zero, drop));
  const dy = await g.data() as Float32Array;
  tf.dispose([
    g,
    zero,
    ...Object.values(bt),
    ...Object.values(targets).filter((v) => v instanceof tf.Tensor),
  ]);
  const sites: [string, number, Int32Array][] = [
    ["word_embeddings", config.vocabSize, batch.inputIds],
    ["position_embeddings", config.maxPositions, positionIds(config, batch)],
    ["token_type_embeddings", config.typeVocabSize, batch.tokenTypeIds],
  ];
  const out: SegmentSumSite[] = [];
  for (const [site, n, siteIds] of sites) {
    const S = Math.min(n, sample);
    const x = tf.tensor2d(dy, [rows, width]);
    // Ids folded into the sampled segments: every row still lands somewhere.
    const ids = tf.tensor1d(siteIds.map((i) => i % S), "int32");
    const run = async (segments: number) => {
      const t = performance.now();
      const y = tf.unsortedSegmentSum(x, ids, segments);
      const v = await y.data() as Float32Array;
      y.dispose();
      return { ms: performance.now() - t, v };
    };
    try {
      registerUnsortedSegmentSum("cpu");
      const jsFull = await run(n);
      const jsSample = await run(S);
      useBuiltinSegmentSum();
      let builtin: { ms: number; v: Float32Array };
      try {
        builtin = await run(S);
      } finally {
        registerUnsortedSegmentSum("cpu");
      }
      out.push({
        site,
        rows,
        width,
        numSegments: n,
        sampledSegments: S,
        jsMs: jsFull.ms,
        builtinSampleMs: builtin.ms,
        builtinEstimateMs: builtin.ms * n / S,
        maxAbsDiff: maxAbsDiff(jsSample.v, builtin.v),
      });
    } finally {
      x.dispose();
      ids.dispose();
    }
  }
  return out;
}

// ---------------------------------------------------------------- machine

async function gpuInfo(): Promise<Record<string, unknown> | null> {
  const adapter = await anyAdapter();
  if (!adapter) return null;
  const i = adapter.info;
  const text = `${i.vendor} ${i.architecture} ${i.device} ${i.description}`;
  return {
    vendor: i.vendor,
    architecture: i.architecture,
    device: i.device,
    description: i.description,
    software: /llvmpipe|lavapipe|swiftshader|software/i.test(text),
    maxStorageBuffersPerShaderStage: adapter.limits.maxStorageBuffersPerShaderStage,
  };
}

function cpuModel(): string | null {
  try {
    const text = Deno.readTextFileSync("/proc/cpuinfo");
    return /^model name\s*:\s*(.*)$/m.exec(text)?.[1]?.trim() ?? null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- output

interface Row {
  backend: BackendName;
  /** native: BLAS threads. */
  threads: number | null;
  device: string;
  mode: string;
  adversary: AdversaryMode;
  K: number;
  microBatch: number;
  seqLen: number;
  paddingFraction: number;
  fullPasses: number;
  deltaOnlyPasses: number;
  gflopPerCall: number;
  firstCallMs: number;
  reps: number;
  medianMs: number;
  minMs: number;
  maxMs: number;
  medianAdversaryMs: number;
  samplesPerSec: number;
  gflops: number;
  loss: number;
  leakedTensors: number;
  /** native: share of the call's time spent inside sgemm (mean over timed calls). */
  blasShare: number | null;
  /** native: sgemm calls per micro-batch and their own GFLOP/s. */
  blasCallsPerCall: number | null;
  blasGflops: number | null;
  /** native: max |g − g_wasm| against the wasm row of the same configuration, and max |g_wasm|. */
  maxAbsDiffVsWasm: number | null;
  wasmGradMaxAbs: number | null;
  /** native: one profiled call, per engine kernel (ms, calls), most time first. */
  kernels: { kernel: string; ms: number; calls: number }[] | null;
}

/** One profiled native call (after a warm-up): where the time goes, kernel by kernel. */
async function profileNative(
  config: ModelConfig,
  layout: ParamLayout,
  gemm: Gemm,
  flat: Float32Array,
  task: GradientTask,
): Promise<{ kernel: string; ms: number; calls: number }[]> {
  const profile = kernelProfile();
  const engine = new EngineModel(cpuDevice(gemm), config, layout, { profile });
  engine.setWeights(flat);
  await engine.gradient(task);
  profile.ms.clear();
  profile.calls.clear();
  await engine.gradient(task);
  return [...profile.ms.entries()]
    .map(([kernel, ms]) => ({ kernel, ms, calls: profile.calls.get(kernel) ?? 0 }))
    .sort((a, b) => b.ms - a.ms);
}

interface SpeedupRow {
  backend: SpeedupBackend;
  variant: string;
  fastSegmentSum: boolean;
  explicitTranspose: boolean;
  microBatch: number;
  seqLen: number;
  /** True when the time is default + (built-in − JS) kernel time, not a measured call. */
  estimated: boolean;
  firstCallMs: number;
  reps: number;
  medianMs: number;
  samplesPerSec: number;
  gflops: number;
  /** Speed of the project default (both speed-ups) over this variant. */
  defaultSpeedup: number;
  /** Max |g − g_default| over all parameters; must stay <= 1e-5. */
  maxAbsDiff: number;
  gradMaxAbs: number;
  /** What maxAbsDiff compares: the whole gradient, or (estimated rows) the kernel's output. */
  gradCheck: "full gradient" | "kernel output";
}

const f1 = (x: number) => x.toFixed(1);
const f2 = (x: number) => x.toFixed(2);

function gridTable(rows: Row[]): string {
  return table(
    [
      "backend",
      "threads",
      "mode",
      "mb",
      "seq",
      "GFLOP/call",
      "first call ms",
      "reps",
      "median ms",
      "samples/s",
      "GFLOP/s",
      "time in BLAS",
      "BLAS GFLOP/s",
      "max abs diff vs wasm",
    ],
    rows.map((r) => [
      r.backend,
      r.threads ?? "-",
      r.mode,
      r.microBatch,
      r.seqLen,
      f2(r.gflopPerCall),
      Math.round(r.firstCallMs),
      r.reps,
      f1(r.medianMs),
      f1(r.samplesPerSec),
      f2(r.gflops),
      r.blasShare === null ? "-" : `${(100 * r.blasShare).toFixed(0)}%`,
      r.blasGflops === null ? "-" : f1(r.blasGflops),
      r.maxAbsDiffVsWasm === null ? "-" : r.maxAbsDiffVsWasm.toExponential(2),
    ]),
  );
}

function speedupTable(rows: SpeedupRow[]): string {
  return table(
    [
      "backend",
      "mb",
      "seq",
      "JS segment-sum",
      "explicit transpose",
      "first call ms",
      "reps",
      "median ms",
      "samples/s",
      "GFLOP/s",
      "default is x faster",
      "max abs grad diff",
    ],
    rows.map((r) => [
      r.backend,
      r.microBatch,
      r.seqLen,
      r.fastSegmentSum ? "yes" : "no (tfjs built-in)",
      r.explicitTranspose ? "yes" : "no (transpose flags)",
      r.estimated ? "-" : Math.round(r.firstCallMs),
      r.estimated ? "est." : r.reps,
      f1(r.medianMs),
      f2(r.samplesPerSec),
      f2(r.gflops),
      f2(r.defaultSpeedup),
      r.maxAbsDiff.toExponential(2) + (r.gradCheck === "kernel output" ? " (kernel)" : ""),
    ]),
  );
}

// ---------------------------------------------------------------- main

/** The benchmark's model: the default small BERT with seeded random weights, and its FLOP model. */
interface Bench {
  readonly config: ModelConfig;
  readonly layout: ParamLayout;
  readonly flat: Float32Array;
  readonly fm: FlopModel;
}

/** Seed of the random weights (in the JSON's settings). */
const WEIGHT_SEED = 42;

function benchModel(): Bench {
  const config = parseModelConfig(MODEL_JSON);
  const layout = paramLayout(config);
  return { config, layout, flat: randomWeights(layout, WEIGHT_SEED), fm: flopModel(layout) };
}

/** The JSON file (bench/README.md, "Running", Output); people read its field names. */
interface Report {
  benchmark: "worker_compute";
  date: string;
  machine: Record<string, unknown>;
  model: { config: typeof MODEL_JSON; parameters: number; flopModel: FlopModel };
  settings: Record<string, unknown>;
  rows: Row[];
  speedup: SpeedupRow[];
  segmentSumEstimate: SegmentSumSite[] | null;
}

/** The report, rewritten to `out` after every measured row so a run cut short keeps what it did. */
class ReportFile {
  constructor(readonly report: Report, readonly out: string) {
    const dir = out.includes("/") ? out.slice(0, out.lastIndexOf("/")) : ".";
    Deno.mkdirSync(dir, { recursive: true });
  }
  save(): void {
    Deno.writeTextFileSync(this.out, JSON.stringify(this.report, null, 2) + "\n");
  }
}

function newReport(opts: Options, bench: Bench, gpu: Record<string, unknown> | null): Report {
  const { config, layout, fm } = bench;
  return {
    benchmark: "worker_compute",
    date: new Date().toISOString(),
    machine: {
      deno: Deno.version,
      build: Deno.build,
      hardwareConcurrency: navigator.hardwareConcurrency,
      cpuModel: cpuModel(),
      gpuAdapter: gpu,
    },
    model: { config: MODEL_JSON, parameters: layout.total, flopModel: fm },
    settings: {
      backends: opts.backends,
      threads: opts.threads,
      modes: opts.modes.map((m) => m.label),
      microBatches: opts.microBatches,
      seqLens: opts.seqLens,
      minReps: opts.minReps,
      minSeconds: opts.minSeconds,
      quick: opts.quick,
      speedup: opts.speedup,
      builtinSegmentSum: opts.builtinSegmentSum,
      segmentSample: opts.segmentSample,
      weightSeed: WEIGHT_SEED,
      dropout: { hidden: config.hiddenDropout, attention: config.attentionDropout },
    },
    rows: [],
    speedup: [],
    segmentSumEstimate: null,
  };
}

function printHeader(report: Report, opts: Options, bench: Bench): void {
  const { config, layout } = bench;
  const gpu = report.machine.gpuAdapter as { description: string; vendor: string } | null;
  console.log(
    `# worker_compute — ${report.date}\n\nmachine: ${cpuModel() ?? Deno.build.arch}, ` +
      `${navigator.hardwareConcurrency} threads; GPU adapter: ${
        gpu ? `${gpu.description} (vendor ${gpu.vendor})` : "none"
      }\nmodel: BERT vocab ${config.vocabSize}, hidden ${config.hiddenSize}, ` +
      `${config.numLayers} layers, ${config.numHeads} heads, intermediate ` +
      `${config.intermediateSize}, ${layout.total} parameters; dropout ${config.hiddenDropout}\n` +
      `timing: 1 warm-up + >= ${opts.minReps} calls and >= ${opts.minSeconds} s, median\n`,
  );
}

/** One grid backend: native once per BLAS thread count, the others once. */
interface GridRun {
  readonly backend: BackendName;
  readonly threads: number | null;
}

/** A grid backend made ready: its computer, and (with a BLAS) the timed gemm behind it. */
interface GridBackend {
  readonly run: GridRun;
  readonly device: string;
  readonly computer: Computer;
  readonly timed: ReturnType<typeof timedGemm> | null;
  /** The untimed BLAS gemm (for the kernel profile). */
  readonly gemm: Gemm | null;
}

async function openGridBackend(run: GridRun, bench: Bench): Promise<GridBackend> {
  const { backend, threads } = run;
  const { config, layout, flat } = bench;
  const info = await initBackend(backend, threads ? { threads } : {});
  console.error(`[${backend}${threads ? ` ${threads} threads` : ""}] ${info.device}`);
  const timed = info.blas ? timedGemm(info.blas.gemm) : null;
  // cpu: the same engine, its gemm timed.
  const computer = (timed ? cpuBackend(timed.gemm, { device: info.device }) : info)
    .model(config, layout);
  computer.setWeights(flat);
  return { run, device: info.device, computer, timed, gemm: info.blas?.gemm ?? null };
}

/** BLAS totals over the timed calls of one configuration (native rows). */
class BlasTally {
  readonly shares: number[] = [];
  calls = 0;
  flops = 0;
  ms = 0;
  n = 0;
  #lastCallStart = 0;
  constructor(readonly timed: ReturnType<typeof timedGemm> | null) {}
  /** Called before each timed call and once after the last: closes the previous call's tally. */
  readonly onCall = (): void => {
    const timed = this.timed;
    if (timed && this.#lastCallStart) {
      this.shares.push(timed.stats.ms / (performance.now() - this.#lastCallStart));
      this.calls += timed.stats.calls;
      this.flops += timed.stats.flops;
      this.ms += timed.stats.ms;
      this.n++;
    }
    timed?.reset();
    this.#lastCallStart = performance.now();
  };
}

/** Times one grid configuration (backend, mode, B, L) into its row; `ref` is wasm's gradient. */
async function timeGridRow(
  gb: GridBackend,
  bench: Bench,
  opts: Options,
  m: ModeSpec,
  batch: LabelledBatch,
  ref: Float32Array | undefined,
): Promise<{ row: Row; grad: Float32Array }> {
  const { config, layout, flat, fm } = bench;
  const { backend, threads } = gb.run;
  const B = batch.size, L = batch.seqLen;
  const padding = 1 - batch.attentionMask.reduce((a, b) => a + b, 0) / (B * L);
  const fc = callFlops(config, fm, m, B, L);
  const blas = new BlasTally(gb.timed);
  const t = await measure(gb.computer, batch, m, { ...opts, warmup: true }, blas.onCall);
  blas.onCall();
  const med = median(t.times);
  const timed = gb.timed;
  const row: Row = {
    backend,
    threads,
    device: gb.device,
    mode: m.label,
    adversary: m.mode,
    K: m.steps,
    microBatch: B,
    seqLen: L,
    paddingFraction: Number(padding.toFixed(4)),
    fullPasses: fc.full,
    deltaOnlyPasses: fc.deltaOnly,
    gflopPerCall: fc.flops / 1e9,
    firstCallMs: t.firstMs,
    reps: t.times.length,
    medianMs: med,
    minMs: Math.min(...t.times),
    maxMs: Math.max(...t.times),
    medianAdversaryMs: median(t.adversaryTimes),
    samplesPerSec: B / (med / 1000),
    gflops: fc.flops / 1e9 / (med / 1000),
    loss: t.loss,
    leakedTensors: t.leakedTensors,
    blasShare: timed ? blas.shares.reduce((a, b) => a + b, 0) / blas.shares.length : null,
    blasCallsPerCall: timed ? blas.calls / blas.n : null,
    blasGflops: timed && blas.ms > 0 ? blas.flops / 1e9 / (blas.ms / 1000) : null,
    maxAbsDiffVsWasm: ref ? maxAbsDiff(t.grad, ref) : null,
    wasmGradMaxAbs: ref ? maxAbs(ref) : null,
    kernels: backend === "cpu"
      ? await profileNative(config, layout, gb.gemm!, flat, benchTask(config, batch, m))
      : null,
  };
  return { row, grad: t.grad };
}

function logGridRow(row: Row): void {
  const threads = row.threads ? `/${row.threads}t` : "";
  console.error(
    `  ${row.backend}${threads} ${row.mode} mb ${row.microBatch} seq ${row.seqLen}: first ${
      Math.round(row.firstCallMs)
    } ms, ` +
      `median ${f1(row.medianMs)} ms (${row.reps} reps), ${f1(row.samplesPerSec)} ` +
      `samples/s, ${f2(row.gflops)} GFLOP/s` +
      (row.blasShare !== null
        ? `, ${(100 * row.blasShare).toFixed(0)}% in BLAS at ${f1(row.blasGflops ?? 0)} GFLOP/s`
        : "") +
      (row.maxAbsDiffVsWasm !== null
        ? `, max |g - g_wasm| ${row.maxAbsDiffVsWasm.toExponential(2)}`
        : "") +
      (row.leakedTensors ? `, LEAKED ${row.leakedTensors} tensors` : ""),
  );
}

/** The batch of configuration (B, L): the same seed for every backend and mode. */
function gridBatch(config: ModelConfig, B: number, L: number): LabelledBatch {
  return randomBatch(config, B, L, 7 + B * 1000 + L);
}

/**
 * The grid: every backend (native once per thread count) × seq × micro-batch ×
 * mode. Native rows are checked against the wasm row of the same
 * configuration. Returns the webgpu device if one was opened (to destroy at exit).
 */
async function runGrid(
  bench: Bench,
  opts: Options,
  file: ReportFile,
): Promise<GPUDevice | undefined> {
  let webgpuDevice: GPUDevice | undefined;
  const runs = opts.backends.flatMap((backend): GridRun[] =>
    backend === "cpu"
      ? opts.threads.map((threads) => ({ backend, threads }))
      : [{ backend, threads: null }]
  );
  /** wasm gradients by configuration, for the native rows' check. */
  const wasmGrads = new Map<string, Float32Array>();
  for (const run of runs) {
    const gb = await openGridBackend(run, bench);
    if (run.backend === "tfjs-webgpu") {
      webgpuDevice = (tf.backend() as unknown as { device?: GPUDevice }).device;
    }
    try {
      for (const L of opts.seqLens) {
        for (const B of opts.microBatches) {
          const batch = gridBatch(bench.config, B, L);
          for (const m of opts.modes) {
            const key = `${m.label}/${B}/${L}`;
            const ref = run.backend === "cpu" ? wasmGrads.get(key) : undefined;
            const { row, grad } = await timeGridRow(gb, bench, opts, m, batch, ref);
            if (run.backend === "tfjs-wasm") wasmGrads.set(key, grad);
            file.report.rows.push(row);
            file.save();
            logGridRow(row);
          }
        }
      }
    } finally {
      gb.computer.dispose();
    }
  }
  return webgpuDevice;
}

/** What a speed-up row is checked by: the whole gradient, or (estimated rows) the kernel's output. */
interface GradCheck {
  readonly diff: number;
  readonly gradMaxAbs: number;
  readonly kind: SpeedupRow["gradCheck"];
}

/** The timing a speed-up row reports. */
interface CallStats {
  readonly firstMs: number;
  readonly reps: number;
  readonly medianMs: number;
}

function callStats(t: Timing): CallStats {
  return { firstMs: t.firstMs, reps: t.times.length, medianMs: median(t.times) };
}

/**
 * The speed-up comparison on one backend (mode off, seq 64): the project
 * default, transpose flags instead of explicit transposes, and on cpu tfjs's
 * built-in segment sum (estimated unless `--builtin-segment-sum measure`).
 */
async function runSpeedup(
  backend: SpeedupBackend,
  bench: Bench,
  opts: Options,
  file: ReportFile,
): Promise<void> {
  const { config, layout, flat, fm } = bench;
  await initBackend(backend);
  const B = SPEEDUP_MB[backend], L = SPEEDUP_SEQ;
  const batch = gridBatch(config, B, L);
  const off = parseMode("off");
  const flops = callFlops(config, fm, off, B, L).flops;
  const model = makeModel(config, layout, flat); // for the segment-sum costs
  const computer = (await initBackend(backend)).model(config, layout);
  computer.setWeights(flat);
  const reps = { ...opts, warmup: true };
  let defaultMs = NaN;
  const push = (variant: string, fast: boolean, explicit: boolean, t: CallStats, c: GradCheck) => {
    const row: SpeedupRow = {
      backend,
      variant,
      fastSegmentSum: fast,
      explicitTranspose: explicit,
      microBatch: B,
      seqLen: L,
      estimated: c.kind === "kernel output",
      firstCallMs: t.firstMs,
      reps: t.reps,
      medianMs: t.medianMs,
      samplesPerSec: B / (t.medianMs / 1000),
      gflops: flops / 1e9 / (t.medianMs / 1000),
      defaultSpeedup: t.medianMs / defaultMs,
      maxAbsDiff: c.diff,
      gradMaxAbs: c.gradMaxAbs,
      gradCheck: c.kind,
    };
    file.report.speedup.push(row);
    file.save();
    console.error(
      `  speed-up ${backend} ${row.variant}: median ${f1(row.medianMs)} ms` +
        `${row.estimated ? " (estimated)" : ""}, ${f2(row.samplesPerSec)} samples/s, ` +
        `max abs diff ${row.maxAbsDiff.toExponential(2)} (${row.gradCheck})` +
        `${row.maxAbsDiff > 1e-5 ? " ABOVE 1e-5" : ""}`,
    );
  };
  try {
    // Project default: both speed-ups on (initBackend set them).
    const d = await measure(computer, batch, off, reps);
    defaultMs = median(d.times);
    const full = (t: Timing): GradCheck => ({
      diff: maxAbsDiff(t.grad, d.grad),
      gradMaxAbs: maxAbs(t.grad),
      kind: "full gradient",
    });
    push("default", true, true, callStats(d), full(d));

    // Transpose flags instead of explicit transposes.
    setExplicitTranspose(false);
    let t: Timing;
    try {
      t = await measure(computer, batch, off, reps);
    } finally {
      setExplicitTranspose(true);
    }
    push("no explicit transpose", true, false, callStats(t), full(t));

    // tfjs's own cpu UnsortedSegmentSum (wasm has none to go back to).
    if (backend !== "tfjs-cpu" || !builtinCpuSegmentSum) return;
    if (opts.builtinSegmentSum === "measure") {
      useBuiltinSegmentSum();
      try {
        t = await measure(computer, batch, off, { minReps: 1, minSeconds: 0, warmup: false });
      } finally {
        registerUnsortedSegmentSum("cpu");
      }
      push("built-in segment sum", false, true, callStats(t), full(t));
    } else {
      const sites = await segmentSumCosts(model, batch, opts.segmentSample);
      file.report.segmentSumEstimate = sites;
      const extra = sites.reduce((a, s) => a + s.builtinEstimateMs - s.jsMs, 0);
      push("built-in segment sum", false, true, {
        firstMs: NaN,
        reps: 0,
        medianMs: defaultMs + extra,
      }, {
        diff: Math.max(...sites.map((s) => s.maxAbsDiff)),
        gradMaxAbs: NaN,
        kind: "kernel output",
      });
    }
  } finally {
    disposeModel(model);
    computer.dispose();
  }
}

/** The speed-up table and its verdict on stdout (progress went to stderr). */
function printSpeedups(report: Report): void {
  if (!report.speedup.length) return;
  console.log(
    `## Speed-ups (mode off; default = JS segment-sum + explicit transpose)\n\n${
      speedupTable(report.speedup)
    }\n`,
  );
  const worst = Math.max(...report.speedup.map((r) => r.maxAbsDiff));
  console.log(
    `max abs gradient difference vs default: ${worst.toExponential(2)} ` +
      `(${worst <= 1e-5 ? "within" : "ABOVE"} 1e-5)\n`,
  );
}

/** Parse, build the model, time the grid and the speed-ups, write the tables and JSON. */
async function main(): Promise<number> {
  const opts = await exitOnFlagError(() => parseOptions(Deno.args));
  const bench = benchModel();
  const gpu = await gpuInfo();
  if (opts.backends.includes("tfjs-webgpu") && !gpu) {
    console.error("error: tfjs-webgpu requested but no WebGPU adapter is available");
    return 2;
  }
  const file = new ReportFile(newReport(opts, bench, gpu), opts.out);
  const report = file.report;
  printHeader(report, opts, bench);
  let webgpuDevice: GPUDevice | undefined;
  try {
    webgpuDevice = await runGrid(bench, opts, file);
    if (report.rows.length) console.log(`## Grid\n\n${gridTable(report.rows)}\n`);
    for (const backend of opts.speedup) await runSpeedup(backend, bench, opts, file);
    printSpeedups(report);
    file.save();
    console.log(`wrote ${opts.out}`);
  } finally {
    disposeBackend();
    // disposeBackend destroys the webgpu device only when webgpu is the active
    // backend; destroy it here too so the process exits cleanly either way.
    webgpuDevice?.destroy();
  }
  return report.speedup.some((r) => r.maxAbsDiff > 1e-5) ? 1 : 0;
}

Deno.exitCode = await main();
