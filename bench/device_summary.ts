/**
 * Part d of bench/device_run.sh: one summary of a GPU run from whatever its parts left in the
 * output folder — the card, each part's status and wall time, the engine and PyTorch rows, the
 * time-to-accuracy table, and issue 20's GPU targets checked:
 *
 * - default model, mb 32, seq 128, PGD K = 1 on the webgpu engine ≥ 1,000 samples/s;
 * - BERT-base shape, clean, webgpu engine ≥ 50% of PyTorch fp32 (TF32 off) samples/s;
 * - PGD K = 1 ≤ 1.7× the clean time (webgpu engine, each shape).
 *
 *   deno run -A bench/device_summary.ts --out-dir DIR [--mode gpu|smoke|check] [--card TEXT]
 *     [--adapter TEXT] [--part name:status:seconds]... [--skip name=reason]... [--note TEXT]...
 *     [--total-seconds S] [--exit-bits N]
 *
 * Reads DIR/engine_default.json, engine_bert_base.json, torch_gpu.json, tta.json (or
 * tta.partial.json); writes DIR/summary.json and DIR/summary.md and prints the Markdown. A
 * missing file leaves its rows out and its targets "not measured".
 *
 * @module
 */
import { parseArgs } from "node:util";
import { table } from "./markdown.ts";

/** A row of bench/engine_devices.ts's JSON (the fields read here). */
interface EngineRow {
  backend: string;
  device: string;
  mode: string;
  microBatch: number;
  seqLen: number;
  medianMs: number;
  samplesPerSec: number;
  counts: Record<string, number> | null;
  profile: { kernel: string; ms: number; dispatches: number }[] | null;
  relDiffVsCpu: number | null;
}
interface EngineReport {
  shape: { name: string; microBatch: number; seqLen: number; parameters: number };
  machine: { adapter: string | null };
  rows: EngineRow[];
}
interface TorchRow {
  shape: string;
  precision: string;
  mode: string;
  microBatch: number;
  seqLen: number;
  medianMs: number;
  samplesPerSec: number;
}
interface TorchReport {
  impl: string;
  machine: { gpu: string | null; torch: string; transformers: string | null };
  rows: TorchRow[];
}
interface TtaRow {
  label: string;
  lr: number;
  finalAccuracy: number;
  bestAccuracy: number;
  secondsPerStep: number;
  reached: string;
  stepsToTarget: number | null;
  secondsToTarget: number | null;
}
interface TtaReport {
  target?: number;
  rows?: TtaRow[];
  runs: { recipe: string; steps: number; trainSeconds: number; bestAccuracy: number }[];
  flags: Record<string, unknown>;
}

/** One of the issue's targets: met true/false, or null when not measured (with why). */
export interface Target {
  name: string;
  value: number | null;
  threshold: string;
  met: boolean | null;
  note: string;
}

/** A part of the run as device_run.sh reports it. */
export interface Part {
  name: string;
  status: string;
  seconds: number;
}

/** Parses `name:status:seconds` (status may hold parentheses, never a colon). */
export function parsePart(text: string): Part {
  const m = /^([^:]+):([^:]+):([0-9.]+)$/.exec(text);
  if (!m) throw new Error(`--part: name:status:seconds, got ${JSON.stringify(text)}`);
  return { name: m[1], status: m[2], seconds: Number(m[3]) };
}

async function readJson<T>(path: string): Promise<T | null> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as T;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new Error(`${path}: ${(e as Error).message}`);
  }
}

const engineRow = (r: EngineReport | null, backend: string, mode: string) =>
  r?.rows.find((x) => x.backend === backend && x.mode === mode) ?? null;

/** The issue's three GPU targets from the parts' reports. */
export function checkTargets(
  def: EngineReport | null,
  bert: EngineReport | null,
  torch: TorchReport | null,
): Target[] {
  const out: Target[] = [];
  const pgd = engineRow(def, "webgpu-engine", "pgd K=1");
  const at3212 = def && def.shape.microBatch === 32 && def.shape.seqLen === 128;
  out.push({
    name: "default model, mb 32, seq 128, PGD K=1, webgpu engine",
    value: pgd && at3212 ? pgd.samplesPerSec : null,
    threshold: "≥ 1,000 samples/s",
    met: pgd && at3212 ? pgd.samplesPerSec >= 1000 : null,
    note: !def
      ? "no engine_default.json"
      : !pgd
      ? "no webgpu-engine PGD K=1 row"
      : !at3212
      ? `not measured at mb 32, seq 128 (ran mb ${def.shape.microBatch}, seq ${def.shape.seqLen}: ${
        pgd.samplesPerSec.toFixed(1)
      } samples/s)`
      : `${(pgd.samplesPerSec / 1000).toFixed(2)}× the target`,
  });
  const clean = engineRow(bert, "webgpu-engine", "clean");
  const tf =
    torch?.rows.find((r) =>
      r.shape === "bert-base" && r.precision === "fp32" && r.mode === "off" &&
      (!bert || (r.microBatch === bert.shape.microBatch && r.seqLen === bert.shape.seqLen))
    ) ?? null;
  const ratio = clean && tf ? clean.samplesPerSec / tf.samplesPerSec : null;
  out.push({
    name: "BERT-base shape, clean, webgpu engine vs PyTorch fp32 (TF32 off)",
    value: ratio,
    threshold: "≥ 50% of PyTorch's samples/s",
    met: ratio === null ? null : ratio >= 0.5,
    note: !clean
      ? "no webgpu-engine clean row at bert-base"
      : !tf
      ? "no PyTorch bert-base fp32 clean row at the same mb and seq"
      : `${clean.samplesPerSec.toFixed(1)} vs ${tf.samplesPerSec.toFixed(1)} samples/s = ${
        (100 * ratio!).toFixed(0)
      }%`,
  });
  for (const [label, rep] of [["default model", def], ["BERT-base shape", bert]] as const) {
    const c = engineRow(rep, "webgpu-engine", "clean");
    const p = engineRow(rep, "webgpu-engine", "pgd K=1");
    const x = c && p ? p.medianMs / c.medianMs : null;
    out.push({
      name: `${label}${
        rep ? ` (mb ${rep.shape.microBatch}, seq ${rep.shape.seqLen})` : ""
      }: PGD K=1 time / clean time, webgpu engine`,
      value: x,
      threshold: "≤ 1.7×",
      met: x === null ? null : x <= 1.7,
      note: x === null ? "no webgpu-engine clean and PGD rows" : `${x.toFixed(2)}×`,
    });
  }
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      "out-dir": { type: "string" },
      mode: { type: "string", default: "gpu" },
      card: { type: "string", default: "none" },
      adapter: { type: "string", default: "none" },
      part: { type: "string", multiple: true, default: [] },
      skip: { type: "string", multiple: true, default: [] },
      note: { type: "string", multiple: true, default: [] },
      "total-seconds": { type: "string", default: "0" },
      "exit-bits": { type: "string", default: "0" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help || !values["out-dir"]) {
    console.log(
      "deno run -A bench/device_summary.ts --out-dir DIR [--mode M] [--card T] [--adapter T] " +
        "[--part name:status:seconds]... [--skip name=reason]... [--note T]...",
    );
    Deno.exit(values.help ? 0 : 2);
  }
  const dir = values["out-dir"]!;
  const parts = values.part!.map(parsePart);
  const skips = Object.fromEntries(values.skip!.map((s) => {
    const i = s.indexOf("=");
    return [s.slice(0, i), s.slice(i + 1)];
  }));
  const def = await readJson<EngineReport>(`${dir}/engine_default.json`);
  const bert = await readJson<EngineReport>(`${dir}/engine_bert_base.json`);
  const torch = await readJson<TorchReport>(`${dir}/torch_gpu.json`);
  const tta = (await readJson<TtaReport>(`${dir}/tta.json`)) ??
    (await readJson<TtaReport>(`${dir}/tta.partial.json`));
  const targets = checkTargets(def, bert, torch);
  const summary = {
    bench: "device_run",
    date: new Date().toISOString(),
    mode: values.mode,
    card: values.card,
    adapter: values.adapter,
    totalSeconds: Number(values["total-seconds"]),
    exitBits: Number(values["exit-bits"]),
    parts: parts.map((p) => ({ ...p, skipped: skips[p.name] ?? null })),
    notes: values.note,
    targets,
    engine: { default: def, bertBase: bert },
    torch,
    timeToAccuracy: tta,
  };
  await Deno.writeTextFile(`${dir}/summary.json`, JSON.stringify(summary, null, 2) + "\n");

  const f = (x: number | null | undefined, d = 1) =>
    x === null || x === undefined || !isFinite(x) ? "—" : x.toFixed(d);
  const md: string[] = [
    `# device_run (${values.mode}) — ${summary.date.slice(0, 10)}`,
    "",
    `- card: ${values.card}`,
    `- WebGPU adapter: ${values.adapter}`,
    `- wall time: ${summary.totalSeconds} s before the summary; exit bits ${summary.exitBits}`,
    ...values.note!.map((n) => `- note: ${n}`),
    "",
    table(
      ["part", "what", "status", "wall s"],
      parts.map((p) => [
        p.name,
        {
          a1: "engine_devices.ts, default model",
          a2: "engine_devices.ts, BERT-base shape",
          b: "torch_gpu.py",
          c: "time_to_accuracy.ts",
          d: "device_summary.ts",
        }[p.name] ?? "",
        skips[p.name] ? `skipped: ${skips[p.name]}` : p.status,
        f(p.seconds),
      ]),
    ),
    "",
    "## Issue 20's GPU targets",
    "",
    table(
      ["target", "threshold", "value", "met", "note"],
      targets.map((t) => [
        t.name,
        t.threshold,
        f(t.value, 2),
        t.met === null ? "not measured" : t.met ? "**met**" : "**missed**",
        t.note,
      ]),
    ),
  ];
  const engineRows = [def, bert].flatMap((r) =>
    r ? r.rows.map((x) => ({ shape: r.shape.name, ...x })) : []
  );
  if (engineRows.length) {
    md.push(
      "",
      "## Engine and tfjs-webgpu (bench/engine_devices.ts)",
      "",
      table(
        [
          "shape",
          "backend",
          "mode",
          "mb",
          "seq",
          "samples/s",
          "ms/call",
          "dispatches",
          "readbacks",
        ],
        engineRows.map((r) => [
          r.shape,
          r.backend,
          r.mode,
          r.microBatch,
          r.seqLen,
          f(r.samplesPerSec),
          f(r.medianMs, 2),
          r.counts ? String(r.counts.dispatches) : "-",
          r.counts ? String(r.counts.readbacks) : "-",
        ]),
      ),
    );
    for (const r of engineRows.filter((x) => x.profile?.length)) {
      const total = r.profile!.reduce((s, p) => s + p.ms, 0);
      md.push(
        "",
        `Kernel profile, ${r.shape}, ${r.mode} (ms per micro-batch, top 6 of total ${
          f(total, 2)
        }): ` +
          r.profile!.slice(0, 6).map((p) => `${p.kernel} ${f(p.ms, 2)}`).join(", "),
      );
    }
  }
  if (torch?.rows.length) {
    md.push(
      "",
      `## PyTorch (bench/torch_gpu.py, ${torch.impl}, torch ${torch.machine.torch}${
        torch.machine.transformers ? `, transformers ${torch.machine.transformers}` : ""
      })`,
      "",
      table(
        ["shape", "precision", "mode", "mb", "seq", "samples/s", "ms/call"],
        torch.rows.map((r) => [
          r.shape,
          r.precision,
          r.mode,
          r.microBatch,
          r.seqLen,
          f(r.samplesPerSec),
          f(r.medianMs, 2),
        ]),
      ),
    );
  }
  if (tta) {
    md.push("", "## Time to accuracy (bench/time_to_accuracy.ts, one webgpu worker)", "");
    md.push(
      `flags: ${
        ["train-limit", "eval-limit", "max-len", "base-epochs", "big-batch", "big-epochs"]
          .map((k) => `--${k} ${tta.flags[k]}`).join(" ")
      }; target ${f(tta.target, 4)}`,
      "",
    );
    if (tta.rows) {
      md.push(table(
        [
          "recipe",
          "final acc.",
          "best acc.",
          "s/step",
          "reached",
          "steps to target",
          "s to target",
        ],
        tta.rows.map((r) => [
          r.label,
          f(r.finalAccuracy, 4),
          f(r.bestAccuracy, 4),
          f(r.secondsPerStep, 2),
          r.reached,
          f(r.stepsToTarget, 1),
          f(r.secondsToTarget, 1),
        ]),
      ));
    } else {
      md.push(table(
        ["recipe (partial: the run was cut short)", "steps", "train s", "best acc."],
        tta.runs.map((r) => [r.recipe, r.steps, f(r.trainSeconds), f(r.bestAccuracy, 4)]),
      ));
    }
  }
  const text = md.join("\n") + "\n";
  await Deno.writeTextFile(`${dir}/summary.md`, text);
  console.log(text);
  console.log(`wrote ${dir}/summary.json and ${dir}/summary.md`);
}

if (import.meta.main) await main();
