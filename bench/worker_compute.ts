/**
 * Worker compute benchmark: the time of one micro-batch gradient
 * (`microBatchGradient`, docs/method.md "One micro-batch gradient"; on native the
 * engine's `NativeModel.gradient`) per backend, adversary mode, micro-batch
 * size and sequence length; and, on cpu and wasm, what the project's two CPU
 * speed-ups (the JavaScript `UnsortedSegmentSum` kernel and explicit-transpose
 * matmul) are worth.
 *
 *   deno task bench [--backends wasm,native,webgpu] [--threads 1,2]
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
 * `native` runs once per `--threads` count (default 1,2): BLAS threads. Its
 * rows also say how much of the call was spent inside BLAS (every sgemm call
 * timed) and that BLAS's own rate there, and how far its gradient is from
 * the wasm row's of the same configuration (max abs difference).
 *
 * `--backends` defaults to wasm, native when a BLAS loads, plus webgpu when any WebGPU adapter exists
 * (on a GPU-less machine that is Mesa's llvmpipe, a software rasteriser). cpu
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
import * as tf from "@tensorflow/tfjs-core";
import { parseArgs } from "node:util";
import { type BackendName, disposeBackend, initBackend, nativeBlas } from "../shared/backend.ts";
import { NativeModel } from "../shared/native/engine.ts";
import { kernelProfile } from "../shared/native/device.ts";
import type { Gemm } from "../shared/native/gemm.ts";
import type { GradientResult, GradientTask } from "../shared/gradient.ts";
import { type AdversaryMode, DEFAULT_ADVERSARY } from "../shared/adversary.ts";
import type { LabelledBatch } from "../shared/batch.ts";
import { deltaGradient, microBatchGradient } from "../shared/gradient.ts";
import {
  batchTensors,
  type DeviceModel,
  positionIds,
  targetTensors,
  weightTensors,
} from "../shared/model.ts";
import { type ModelConfig, parseModelConfig } from "../shared/model_config.ts";
import { type ParamLayout, paramLayout } from "../shared/param_layout.ts";
import { setExplicitTranspose } from "../shared/ops.ts";
import { defaultModelConfigJson } from "../shared/default_model.ts";
import { registerUnsortedSegmentSum } from "../shared/kernels/unsorted_segment_sum.ts";
import { mixSeed, Rng } from "../shared/rng.ts";

// tfjs-backend-cpu registers its own UnsortedSegmentSum on import; keep it before
// initBackend("cpu") replaces it, so the comparison can put it back.
const builtinCpuSegmentSum = tf.getKernel(tf.UnsortedSegmentSum, "cpu");

const HELP = `deno task bench [flags]   (= deno run -A bench/worker_compute.ts)

Times one micro-batch gradient per backend x mode x micro-batch x sequence length.

  --backends LIST      cpu,wasm,native,webgpu subset (default: wasm, native when a
                       BLAS loads, webgpu when an adapter exists; cpu is slow
                       and only joins when named)
  --threads LIST       native: BLAS thread counts, one grid each (default: 1,2)
  --modes LIST         off, pgdK, freelbK (default: off,pgd1,pgd2,freelb2)
  --micro-batches LIST micro-batch sizes (default: 8,32)
  --seq-lens LIST      sequence lengths (default: 64,128)
  --min-reps N         timed calls at least (default: 3; --quick: 2)
  --min-seconds S      timed seconds at least (default: 2; --quick: 0)
  --quick              fewer repetitions (see above)
  --speedup LIST       backends for the speed-up comparison, cpu,wasm subset or
                       "none" (default: cpu,wasm). Mode off, seq 64, micro-batch
                       32 (wasm) or 8 (cpu); toggles the JS UnsortedSegmentSum
                       kernel (cpu only: wasm has no built-in one) and
                       explicit-transpose matmul, and checks the gradient.
  --builtin-segment-sum estimate|measure
                       cpu's built-in kernel takes minutes per call: by default
                       its cost is estimated (timed on a sample of segments,
                       scaled, added to the default call); measure runs 1 call
  --segment-sample N   segments the estimate times (default 256)
  --out FILE           JSON output (default:
                       bench/results/worker_compute-<backends>-<date>.json)
  --help               this text
`;

/** The default small BERT shape (bert-base-uncased vocabulary). */
const MODEL_JSON = defaultModelConfigJson(2);

const SPEEDUP_SEQ = 64;
/** Run seed of every benchmark task (dropout masks derive from it). */
const TASK_SEED = 12345;
const SPEEDUP_MB: Record<"cpu" | "wasm", number> = { cpu: 8, wasm: 32 };

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
  speedup: ("cpu" | "wasm")[];
  builtinSegmentSum: "estimate" | "measure";
  segmentSample: number;
  out: string;
}

class UsageError extends Error {}

function list(s: string, flag: string): string[] {
  const items = s.split(",").map((x) => x.trim()).filter((x) => x);
  if (items.length === 0) throw new UsageError(`${flag}: empty list`);
  return items;
}

function posInts(s: string, flag: string): number[] {
  return list(s, flag).map((x) => {
    const n = Number(x);
    if (!Number.isInteger(n) || n < 1) throw new UsageError(`${flag}: bad value ${x}`);
    return n;
  });
}

function parseMode(s: string): ModeSpec {
  if (s === "off") return { label: "off", mode: "off", steps: 0 };
  const m = /^(pgd|freelb)(\d*)$/.exec(s);
  if (!m) throw new UsageError(`--modes: bad mode ${s} (off, pgdK or freelbK)`);
  const steps = m[2] ? Number(m[2]) : 1;
  if (steps < 1) throw new UsageError(`--modes: K must be >= 1 in ${s}`);
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

async function parseOptions(args: string[]): Promise<Options | null> {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: {
      backends: { type: "string" },
      threads: { type: "string" },
      modes: { type: "string" },
      "micro-batches": { type: "string" },
      "seq-lens": { type: "string" },
      "min-reps": { type: "string" },
      "min-seconds": { type: "string" },
      quick: { type: "boolean" },
      speedup: { type: "string" },
      "builtin-segment-sum": { type: "string" },
      "segment-sample": { type: "string" },
      out: { type: "string" },
      help: { type: "boolean" },
    },
  });
  if (values.help) {
    console.log(HELP);
    return null;
  }
  if (positionals.length) throw new UsageError(`unexpected argument ${positionals[0]}`);
  let backends: BackendName[];
  if (values.backends) {
    backends = list(values.backends, "--backends").map((b) => {
      if (b !== "cpu" && b !== "wasm" && b !== "native" && b !== "webgpu") {
        throw new UsageError(`--backends: unknown backend ${b}`);
      }
      return b;
    });
  } else {
    backends = ["wasm"];
    if (nativeBlas().blas) backends.push("native");
    if (await anyAdapter()) backends.push("webgpu");
  }
  const quick = values.quick ?? false;
  const minReps = values["min-reps"] ? posInts(values["min-reps"], "--min-reps")[0] : quick ? 2 : 3;
  const minSeconds = values["min-seconds"] !== undefined
    ? Number(values["min-seconds"])
    : quick
    ? 0
    : 2;
  if (!Number.isFinite(minSeconds) || minSeconds < 0) {
    throw new UsageError(`--min-seconds: bad value ${values["min-seconds"]}`);
  }
  let speedup: ("cpu" | "wasm")[] = ["cpu", "wasm"];
  if (values.speedup !== undefined) {
    speedup = values.speedup === "none" ? [] : list(values.speedup, "--speedup").map((b) => {
      if (b !== "cpu" && b !== "wasm") throw new UsageError(`--speedup: cpu or wasm, not ${b}`);
      return b;
    });
  }
  const builtinSegmentSum = values["builtin-segment-sum"] ?? "estimate";
  if (builtinSegmentSum !== "estimate" && builtinSegmentSum !== "measure") {
    throw new UsageError(`--builtin-segment-sum: estimate or measure, not ${builtinSegmentSum}`);
  }
  const segmentSample = values["segment-sample"]
    ? posInts(values["segment-sample"], "--segment-sample")[0]
    : 256;
  const date = new Date().toISOString().slice(0, 10);
  return {
    backends: [...new Set(backends)],
    threads: posInts(values.threads ?? "1,2", "--threads"),
    modes: list(values.modes ?? "off,pgd1,pgd2,freelb2", "--modes").map(parseMode),
    microBatches: posInts(values["micro-batches"] ?? "8,32", "--micro-batches"),
    seqLens: posInts(values["seq-lens"] ?? "64,128", "--seq-lens"),
    minReps,
    minSeconds,
    quick,
    speedup,
    builtinSegmentSum,
    segmentSample,
    out: values.out ??
      `bench/results/worker_compute-${[...new Set(backends)].join("+")}-${date}.json`,
  };
}

// ---------------------------------------------------------------- model and data

/** HF-like init: normal(0, 0.02) for matrices and embeddings, 0 biases, LayerNorm 1/0. */
function randomWeights(layout: ParamLayout, seed: number): Float32Array {
  const rng = new Rng(seed);
  const w = new Float32Array(layout.total);
  for (const s of layout.specs) {
    if (s.name.includes("LayerNorm")) {
      if (s.name.endsWith(".weight")) w.fill(1, s.offset, s.offset + s.size);
    } else if (!s.name.endsWith(".bias")) {
      for (let i = 0; i < s.size; i++) w[s.offset + i] = 0.02 * rng.normal();
    }
  }
  return w;
}

/** Random token ids ([CLS] … [SEP]), about 10% padding (each example drops 0–20% of L). */
function randomBatch(config: ModelConfig, B: number, L: number, seed: number): LabelledBatch {
  const rng = new Rng(seed);
  const inputIds = new Int32Array(B * L), tokenTypeIds = new Int32Array(B * L);
  const attentionMask = new Uint8Array(B * L);
  const labels = new Float32Array(B);
  for (let b = 0; b < B; b++) {
    const len = Math.max(3, L - Math.round(rng.next() * 0.2 * L));
    for (let i = 0; i < len; i++) {
      const k = b * L + i;
      inputIds[k] = i === 0 ? 101 : i === len - 1 ? 102 : 1000 + rng.int(config.vocabSize - 1000);
      attentionMask[k] = 1;
    }
    labels[b] = rng.int(config.numLabels);
  }
  return { inputIds, tokenTypeIds, attentionMask, labels, size: B, seqLen: L };
}

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

/** What computes a micro-batch gradient: tfjs tensors, or the native engine. */
type Computer = { kind: "tfjs"; model: DeviceModel } | {
  kind: "native";
  config: ModelConfig;
  engine: NativeModel;
};

function compute(c: Computer, task: GradientTask): Promise<GradientResult> {
  return c.kind === "tfjs"
    ? microBatchGradient(c.model, task)
    : Promise.resolve(c.engine.gradient(task));
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
  const config = computer.kind === "tfjs" ? computer.model.config : computer.config;
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
function profileNative(
  config: ModelConfig,
  layout: ParamLayout,
  gemm: Gemm,
  flat: Float32Array,
  task: GradientTask,
): { kernel: string; ms: number; calls: number }[] {
  const profile = kernelProfile();
  const engine = new NativeModel(config, layout, gemm, { profile });
  engine.setWeights(flat);
  engine.gradient(task);
  profile.ms.clear();
  profile.calls.clear();
  engine.gradient(task);
  return [...profile.ms.entries()]
    .map(([kernel, ms]) => ({ kernel, ms, calls: profile.calls.get(kernel) ?? 0 }))
    .sort((a, b) => b.ms - a.ms);
}

interface SpeedupRow {
  backend: "cpu" | "wasm";
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

function table(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

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

async function main(): Promise<number> {
  let opts: Options | null;
  try {
    opts = await parseOptions(Deno.args);
  } catch (e) {
    console.error(`error: ${(e as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (!opts) return 0;

  const config = parseModelConfig(MODEL_JSON);
  const layout = paramLayout(config);
  const flat = randomWeights(layout, 42);
  const fm = flopModel(layout);
  const gpu = await gpuInfo();
  if (opts.backends.includes("webgpu") && !gpu) {
    console.error("error: webgpu requested but no WebGPU adapter is available");
    return 2;
  }
  const report = {
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
      weightSeed: 42,
      dropout: { hidden: config.hiddenDropout, attention: config.attentionDropout },
    },
    rows: [] as Row[],
    speedup: [] as SpeedupRow[],
    segmentSumEstimate: null as SegmentSumSite[] | null,
  };
  const outDir = opts.out.includes("/") ? opts.out.slice(0, opts.out.lastIndexOf("/")) : ".";
  Deno.mkdirSync(outDir, { recursive: true });
  const save = () => Deno.writeTextFileSync(opts.out, JSON.stringify(report, null, 2) + "\n");

  console.log(
    `# worker_compute — ${report.date}\n\nmachine: ${cpuModel() ?? Deno.build.arch}, ` +
      `${navigator.hardwareConcurrency} threads; GPU adapter: ${
        gpu ? `${gpu.description} (vendor ${gpu.vendor})` : "none"
      }\nmodel: BERT vocab ${config.vocabSize}, hidden ${config.hiddenSize}, ` +
      `${config.numLayers} layers, ${config.numHeads} heads, intermediate ` +
      `${config.intermediateSize}, ${layout.total} parameters; dropout ${config.hiddenDropout}\n` +
      `timing: 1 warm-up + >= ${opts.minReps} calls and >= ${opts.minSeconds} s, median\n`,
  );

  let webgpuDevice: GPUDevice | undefined;
  try {
    // ---- the grid (native once per thread count)
    type Run = { backend: BackendName; threads: number | null };
    const runs = opts.backends.flatMap((backend): Run[] =>
      backend === "native"
        ? opts.threads.map((threads) => ({ backend, threads }))
        : [{ backend, threads: null }]
    );
    /** wasm gradients by configuration, for the native rows' check. */
    const wasmGrads = new Map<string, Float32Array>();
    for (const { backend, threads } of runs) {
      const info = await initBackend(backend, threads ? { threads } : {});
      if (backend === "webgpu") {
        webgpuDevice = (tf.backend() as unknown as { device?: GPUDevice }).device;
      }
      console.error(`[${backend}${threads ? ` ${threads} threads` : ""}] ${info.device}`);
      const timed = info.blas ? timedGemm(info.blas.gemm) : null;
      let computer: Computer;
      if (backend === "native") {
        const engine = new NativeModel(config, layout, timed!.gemm);
        engine.setWeights(flat);
        computer = { kind: "native", config, engine };
      } else {
        computer = { kind: "tfjs", model: makeModel(config, layout, flat) };
      }
      try {
        for (const L of opts.seqLens) {
          for (const B of opts.microBatches) {
            const batch = randomBatch(config, B, L, 7 + B * 1000 + L);
            const padding = 1 - batch.attentionMask.reduce((a, b) => a + b, 0) / (B * L);
            for (const m of opts.modes) {
              const fc = callFlops(config, fm, m, B, L);
              const shares: number[] = [];
              const blas = { calls: 0, flops: 0, ms: 0, n: 0 };
              let lastCallStart = 0;
              const onCall = () => {
                if (timed && lastCallStart) {
                  shares.push(timed.stats.ms / (performance.now() - lastCallStart));
                  blas.calls += timed.stats.calls;
                  blas.flops += timed.stats.flops;
                  blas.ms += timed.stats.ms;
                  blas.n++;
                }
                timed?.reset();
                lastCallStart = performance.now();
              };
              const t = await measure(computer, batch, m, { ...opts, warmup: true }, onCall);
              onCall();
              const med = median(t.times);
              const key = `${m.label}/${B}/${L}`;
              if (backend === "wasm") wasmGrads.set(key, t.grad);
              const ref = backend === "native" ? wasmGrads.get(key) : undefined;
              const row: Row = {
                backend,
                threads,
                device: info.device,
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
                blasShare: timed ? shares.reduce((a, b) => a + b, 0) / shares.length : null,
                blasCallsPerCall: timed ? blas.calls / blas.n : null,
                blasGflops: timed && blas.ms > 0 ? blas.flops / 1e9 / (blas.ms / 1000) : null,
                maxAbsDiffVsWasm: ref ? maxAbsDiff(t.grad, ref) : null,
                wasmGradMaxAbs: ref ? maxAbs(ref) : null,
                kernels: backend === "native"
                  ? profileNative(
                    config,
                    layout,
                    info.blas!.gemm,
                    flat,
                    benchTask(config, batch, m),
                  )
                  : null,
              };
              report.rows.push(row);
              save();
              console.error(
                `  ${backend}${threads ? `/${threads}t` : ""} ${m.label} mb ${B} seq ${L}: first ${
                  Math.round(t.firstMs)
                } ms, ` +
                  `median ${f1(med)} ms (${t.times.length} reps), ${f1(row.samplesPerSec)} ` +
                  `samples/s, ${f2(row.gflops)} GFLOP/s` +
                  (row.blasShare !== null
                    ? `, ${(100 * row.blasShare).toFixed(0)}% in BLAS at ${
                      f1(row.blasGflops ?? 0)
                    } GFLOP/s`
                    : "") +
                  (row.maxAbsDiffVsWasm !== null
                    ? `, max |g - g_wasm| ${row.maxAbsDiffVsWasm.toExponential(2)}`
                    : "") +
                  (t.leakedTensors ? `, LEAKED ${t.leakedTensors} tensors` : ""),
              );
            }
          }
        }
      } finally {
        if (computer.kind === "tfjs") disposeModel(computer.model);
      }
    }
    if (report.rows.length) console.log(`## Grid\n\n${gridTable(report.rows)}\n`);

    // ---- the speed-up comparison
    for (const backend of opts.speedup) {
      await initBackend(backend);
      const B = SPEEDUP_MB[backend], L = SPEEDUP_SEQ;
      const batch = randomBatch(config, B, L, 7 + B * 1000 + L);
      const off = parseMode("off");
      const flops = callFlops(config, fm, off, B, L).flops;
      const model = makeModel(config, layout, flat);
      const reps = { ...opts, warmup: true };
      const rowOf = (
        variant: string,
        fast: boolean,
        explicit: boolean,
        t: { firstMs: number; reps: number; medianMs: number },
        check: { diff: number; gradMaxAbs: number; kind: SpeedupRow["gradCheck"] },
        defaultMs: number,
      ): SpeedupRow => ({
        backend,
        variant,
        fastSegmentSum: fast,
        explicitTranspose: explicit,
        microBatch: B,
        seqLen: L,
        estimated: check.kind === "kernel output",
        firstCallMs: t.firstMs,
        reps: t.reps,
        medianMs: t.medianMs,
        samplesPerSec: B / (t.medianMs / 1000),
        gflops: flops / 1e9 / (t.medianMs / 1000),
        defaultSpeedup: t.medianMs / defaultMs,
        maxAbsDiff: check.diff,
        gradMaxAbs: check.gradMaxAbs,
        gradCheck: check.kind,
      });
      const push = (row: SpeedupRow) => {
        report.speedup.push(row);
        save();
        console.error(
          `  speed-up ${backend} ${row.variant}: median ${f1(row.medianMs)} ms` +
            `${row.estimated ? " (estimated)" : ""}, ${f2(row.samplesPerSec)} samples/s, ` +
            `max abs diff ${row.maxAbsDiff.toExponential(2)} (${row.gradCheck})` +
            `${row.maxAbsDiff > 1e-5 ? " ABOVE 1e-5" : ""}`,
        );
      };
      try {
        // Project default: both speed-ups on (initBackend set them).
        const d = await measure({ kind: "tfjs", model }, batch, off, reps);
        const defaultMs = median(d.times);
        const full = (t: Timing) => ({
          diff: maxAbsDiff(t.grad, d.grad),
          gradMaxAbs: maxAbs(t.grad),
          kind: "full gradient" as const,
        });
        const stats = (t: Timing) => ({
          firstMs: t.firstMs,
          reps: t.times.length,
          medianMs: median(t.times),
        });
        push(rowOf("default", true, true, stats(d), full(d), defaultMs));

        // Transpose flags instead of explicit transposes.
        setExplicitTranspose(false);
        let t: Timing;
        try {
          t = await measure({ kind: "tfjs", model }, batch, off, reps);
        } finally {
          setExplicitTranspose(true);
        }
        push(rowOf("no explicit transpose", true, false, stats(t), full(t), defaultMs));

        // tfjs's own cpu UnsortedSegmentSum (wasm has none to go back to).
        if (backend === "cpu" && builtinCpuSegmentSum) {
          if (opts.builtinSegmentSum === "measure") {
            useBuiltinSegmentSum();
            try {
              t = await measure({ kind: "tfjs", model }, batch, off, {
                minReps: 1,
                minSeconds: 0,
                warmup: false,
              });
            } finally {
              registerUnsortedSegmentSum("cpu");
            }
            push(rowOf("built-in segment sum", false, true, stats(t), full(t), defaultMs));
          } else {
            const sites = await segmentSumCosts(model, batch, opts.segmentSample);
            report.segmentSumEstimate = sites;
            const extra = sites.reduce((a, s) => a + s.builtinEstimateMs - s.jsMs, 0);
            push(rowOf(
              "built-in segment sum",
              false,
              true,
              { firstMs: NaN, reps: 0, medianMs: defaultMs + extra },
              {
                diff: Math.max(...sites.map((s) => s.maxAbsDiff)),
                gradMaxAbs: NaN,
                kind: "kernel output",
              },
              defaultMs,
            ));
          }
        }
      } finally {
        disposeModel(model);
      }
    }
    if (report.speedup.length) {
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
    save();
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
