/**
 * Large checkpoints in and out, at RoBERTa-large's size (issue 13, deliverable 4).
 *
 *     deno run -A bench/large_checkpoint.ts [--shard-size 500MB] [--layers 24] [--no-predict]
 *
 * A RoBERTa-large-shaped model (hidden 1024, 24 layers, 16 heads, intermediate
 * 4096, vocab 50,265, 514 positions, one token type, pad 1; 355 M parameters)
 * with random weights (HF's initialiser, seeded) is saved sharded in F32, loaded
 * back and compared bit for bit, converted to F16 and BF16 (sharded too) and
 * loaded back against the rounding of the F32 values; then `deno task predict`
 * runs on the F32 folder, which carries RoBERTa's real tokenizer files. Every
 * phase runs in its own process, so each peak RSS (VmHWM) is that phase's
 * alone. Writes `bench/results/large_checkpoint-<date>.json` and prints it.
 *
 * @module
 */
import { join } from "node:path";
import { parseFlagsOrExit } from "../shared/cli/flags.ts";
import {
  initWeights,
  loadCheckpoint,
  parseByteSize,
  saveCheckpoint,
} from "../shared/io/checkpoint.ts";
import { type ModelConfig, parseModelConfig } from "../shared/model/config.ts";
import { paramLayout } from "../shared/model/param_layout.ts";
import { ROBERTA_VOCAB_SIZE, writeRobertaTokenizer } from "../shared/text/roberta_vocab.ts";
import {
  bf16BitsToF32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
} from "../shared/wire/half_float.ts";
import { type DType } from "../shared/io/safetensors.ts";
import { ROBERTA_LARGE_CONFIG } from "./model_shapes.ts";

const USAGE =
  "Usage: deno run -A bench/large_checkpoint.ts [--shard-size 500MB] [--layers 24] [--no-predict]";
const SEED = 13;

/** roberta-large's config.json, with `layers` encoder layers. */
function robertaLarge(layers: number): ModelConfig {
  return parseModelConfig({ ...ROBERTA_LARGE_CONFIG, num_hidden_layers: layers });
}

/** Peak resident set of this process so far, in MB (VmHWM). */
function peakRssMb(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
}

const ms = (t0: number): number => Math.round(performance.now() - t0);

/** Index of the first differing 32-bit word, or -1 when `a` and `b` hold the same bits. */
function firstDifference(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return 0;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return i;
  return -1;
}

/** The F32 values rounded through `dtype`, tensor by tensor (bounded scratch), in place. */
function roundInPlace(w: Float32Array, dtype: DType): void {
  const step = 1 << 22;
  for (let i = 0; i < w.length; i += step) {
    const part = w.subarray(i, Math.min(w.length, i + step));
    part.set(
      dtype === "F16" ? f16BitsToF32(f32ToF16Bits(part)) : bf16BitsToF32(f32ToBf16Bits(part)),
    );
  }
}

/** Files of a folder with their sizes in bytes. */
function filesOf(dir: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const e of [...Deno.readDirSync(dir)].sort((a, b) => a.name < b.name ? -1 : 1)) {
    out[e.name] = Deno.statSync(join(dir, e.name)).size;
  }
  return out;
}

type PhaseResult = Record<string, unknown>;

/** One phase, run inside a child process: prints its result as one JSON line. */
async function phase(name: string, args: Record<string, string>): Promise<PhaseResult> {
  const config = robertaLarge(Number(args.layers));
  const maxShardBytes = Number(args.shardBytes);
  const dir = (dtype: string) => join(args.root, dtype.toLowerCase());
  switch (name) {
    case "save-f32": {
      let t0 = performance.now();
      const weights = initWeights(config, SEED);
      const initMs = ms(t0);
      const rssBeforeSave = peakRssMb();
      t0 = performance.now();
      await saveCheckpoint(dir("F32"), { config, weights }, { dtype: "F32", maxShardBytes });
      const saveMs = ms(t0);
      await writeRobertaTokenizer(dir("F32"));
      return { initMs, saveMs, peakRssBeforeSaveMb: rssBeforeSave, peakRssMb: peakRssMb() };
    }
    case "load-f32": {
      const t0 = performance.now();
      const ck = await loadCheckpoint(dir("F32"));
      const loadMs = ms(t0);
      const peakLoad = peakRssMb();
      const expected = initWeights(config, SEED);
      const diff = firstDifference(ck.weights, expected);
      return { loadMs, peakRssMb: peakLoad, bitExact: diff < 0, firstDifference: diff };
    }
    case "save-f16":
    case "save-bf16": {
      const dtype = (name === "save-f16" ? "F16" : "BF16") as DType;
      const ck = await loadCheckpoint(dir("F32"));
      const rssAfterLoad = peakRssMb();
      const t0 = performance.now();
      await saveCheckpoint(dir(dtype), { config: ck.config, weights: ck.weights }, {
        dtype,
        maxShardBytes,
      });
      return { saveMs: ms(t0), peakRssAfterLoadMb: rssAfterLoad, peakRssMb: peakRssMb() };
    }
    case "load-f16":
    case "load-bf16": {
      const dtype = (name === "load-f16" ? "F16" : "BF16") as DType;
      const t0 = performance.now();
      const ck = await loadCheckpoint(dir(dtype));
      const loadMs = ms(t0);
      const peakLoad = peakRssMb();
      const expected = initWeights(config, SEED);
      roundInPlace(expected, dtype);
      const diff = firstDifference(ck.weights, expected);
      return { loadMs, peakRssMb: peakLoad, equalsRounding: diff < 0, firstDifference: diff };
    }
  }
  throw new Error(`unknown phase ${name}`);
}

async function runPhase(name: string, args: Record<string, string>): Promise<PhaseResult> {
  const t0 = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--v8-flags=--max-old-space-size=16384",
      import.meta.filename!,
      "--phase",
      name,
      "--args",
      JSON.stringify(args),
    ],
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (out.code !== 0) throw new Error(`phase ${name} failed (exit ${out.code}): ${text}`);
  const result = JSON.parse(text.split("\n").at(-1)!) as PhaseResult;
  console.error(`${name}: ${JSON.stringify(result)} (${ms(t0)} ms with process start)`);
  return result;
}

/** `deno task predict` on `model` under /usr/bin/time: wall time, peak RSS, the logits. */
async function predict(model: string, backend: string | undefined): Promise<PhaseResult> {
  const input = await Deno.makeTempFile({ suffix: ".jsonl" });
  const rows = [{ text: "Hello world!" }, {
    text: "The movie was great fun, and I would watch it again.",
    text_pair: "It was far too long.",
  }];
  await Deno.writeTextFile(input, rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
  const args = ["-f", "TIME %e %M", Deno.execPath(), "run", "-A", "shared/cli/predict.ts"];
  args.push("--model", model, "--input", input, ...(backend ? ["--backend", backend] : []));
  const t0 = performance.now();
  const out = await new Deno.Command("/usr/bin/time", { args, env: { NO_COLOR: "1" } }).output();
  const wallMs = ms(t0);
  await Deno.remove(input);
  const stderr = new TextDecoder().decode(out.stderr);
  const time = /TIME ([\d.]+) (\d+)/.exec(stderr);
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n").filter((l) => l !== "");
  const result = {
    backend: backend ?? "(default)",
    exit: out.code,
    wallMs,
    peakRssMb: time ? Math.round(Number(time[2]) / 1024) : null,
    backendLine: stderr.split("\n").find((l) => /backend/i.test(l)) ?? null,
    logits: lines.map((l) => JSON.parse(l).logits),
    error: out.code === 0
      ? null
      : stderr.split("\n").filter((l) => !l.startsWith("TIME")).join("\n").slice(-2000),
  };
  console.error(`predict (${result.backend}): ${JSON.stringify(result)}`);
  return result;
}

if (import.meta.main) {
  const flags = parseFlagsOrExit(
    Deno.args,
    {
      "shard-size": { type: "string", default: "500MB", help: "largest weights file" },
      layers: { type: "int", default: 24, help: "encoder layers (24: roberta-large)" },
      "no-predict": { type: "boolean", help: "skip the forward passes" },
      phase: { type: "string", help: "(internal) run one phase" },
      args: { type: "string", help: "(internal) phase arguments" },
    } as const,
    USAGE,
  );
  if (flags.phase !== undefined) {
    console.log(JSON.stringify(await phase(flags.phase, JSON.parse(flags.args ?? "{}"))));
    Deno.exit(0);
  }
  const shardBytes = parseByteSize(flags["shard-size"]);
  const config = robertaLarge(flags.layers);
  const params = paramLayout(config).total;
  const root = await Deno.makeTempDir({ prefix: "large_checkpoint_" });
  const args = { root, layers: String(flags.layers), shardBytes: String(shardBytes) };
  const started = new Date();
  const loadBefore = Deno.loadavg();
  try {
    const phases: Record<string, PhaseResult> = {};
    for (const p of ["save-f32", "load-f32", "save-f16", "load-f16", "save-bf16", "load-bf16"]) {
      phases[p] = await runPhase(p, args);
    }
    const files: Record<string, Record<string, number>> = {};
    for (const d of ["f32", "f16", "bf16"]) files[d] = filesOf(join(root, d));
    const index = JSON.parse(
      await Deno.readTextFile(join(root, "f32", "model.safetensors.index.json")),
    );
    const predictions = flags["no-predict"] ? [] : [
      await predict(join(root, "f32"), "tfjs-wasm"),
      await predict(join(root, "f32"), undefined),
    ];
    const report = {
      bench: "large_checkpoint",
      date: started.toISOString().slice(0, 10),
      machine: `${navigator.hardwareConcurrency} cores, ${
        Math.round(Deno.systemMemoryInfo().total / 2 ** 30)
      } GiB; shared with other sessions' processes while it ran (times are indicative)`,
      loadAverage: { before: loadBefore, after: Deno.loadavg() },
      deno: Deno.version.deno,
      model: {
        shape: "roberta-large",
        hidden: 1024,
        layers: flags.layers,
        heads: 16,
        intermediate: 4096,
        vocab: ROBERTA_VOCAB_SIZE,
        parameters: params,
        f32Bytes: params * 4,
      },
      maxShardBytes: shardBytes,
      indexTotalSize: index.metadata.total_size,
      files,
      phases,
      predict: predictions,
      notes: [
        "peakRssMb is VmHWM of the phase's own process; a load holds the flat F32 buffer (1x the model) plus runtime overhead, a save adds only bounded 16-bit scratch",
        "load-f32 compares every 32-bit word with freshly regenerated weights (after measuring its peak); load-f16/bf16 compare with the F32 values rounded through F16/BF16",
      ],
    };
    const out = `bench/results/large_checkpoint-${report.date}.json`;
    await Deno.writeTextFile(out, JSON.stringify(report, null, 2) + "\n");
    console.log(JSON.stringify(report, null, 2));
    console.error(`wrote ${out}`);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}
