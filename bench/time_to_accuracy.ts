/**
 * Time to accuracy on IMDB (docs/method.md, "What speedup means"): the standard
 * small-batch recipe (AdamW, B = 32, no adversary) against LAMB at large
 * batches, alone and with the ScaLA adversary, on the same workers. Each run
 * evaluates a fixed held-out subset as it trains; time is training time
 * only (Σ step times, evaluation excluded). The target is the baseline's
 * best accuracy minus a tolerance. Writes JSON, an SVG plot and a table.
 *
 *   deno run -A bench/time_to_accuracy.ts [--recipes baseline,lamb,scala,scala-k2]
 *     [--seeds 1] [--train-limit 8192] [--eval-limit 500] [--max-len 64] [--workers 2]
 *     [--model DIR] [--lr recipe=x,recipe=y] [--tolerance 0.005] [--adv-lr α] [--adv-eps ε]
 *
 * @module
 */
import { spawnLocalWorkers, stopLocalWorkers } from "../coordinator/local_workers.ts";
import { parseFlagsOrExit } from "../shared/cli/flags.ts";
import { parseRunFlags } from "../coordinator/run_config.ts";
import { DEFAULT_LR } from "../coordinator/optimizer.ts";
import { startCoordinator } from "../coordinator/coordinator.ts";
import { flagArgs } from "./flag_args.ts";

/** A recipe: the flags that define it, and how often (in examples) it is evaluated. */
interface Recipe {
  readonly name: string;
  readonly label: string;
  readonly args: string[];
  readonly lr: number;
  readonly epochs: number;
  readonly globalBatch: number;
}

const flags = parseFlagsOrExit(
  Deno.args,
  {
    recipes: { type: "string", default: "baseline,lamb,scala,scala-k2", help: "recipes to run" },
    seeds: { type: "string", default: "1", help: "comma-separated seeds" },
    "train-limit": { type: "int", default: 8192, help: "IMDB training examples used" },
    "eval-limit": { type: "int", default: 500, help: "held-out examples scored" },
    "max-len": { type: "int", default: 64, help: "tokens per example" },
    workers: { type: "int", default: 2, help: "local worker processes" },
    backend: {
      type: "string",
      default: "tfjs-wasm",
      help: "the local workers' backend (cpu, webgpu, tfjs-wasm, …)",
    },
    model: { type: "string", help: "checkpoint (default: the built-in model)" },
    lr: { type: "string", default: "", help: "overrides, e.g. baseline=3e-4,lamb=5e-3" },
    "big-batch": { type: "int", default: 1024, help: "global batch of the large-batch recipes" },
    "big-epochs": { type: "number", default: 6, help: "epochs of the large-batch recipes" },
    "base-epochs": { type: "number", default: 2, help: "epochs of the baseline" },
    "eval-examples": { type: "int", default: 1024, help: "evaluate every ~N training examples" },
    "adv-lr": { type: "number", default: 0.1, help: "ScaLA recipes: α, the ascent step" },
    "adv-eps": { type: "number", default: 1, help: "ScaLA recipes: ε, the perturbation radius" },
    tolerance: { type: "number", default: 0.005, help: "target = baseline best − tolerance" },
    out: { type: "string", help: "output prefix (default bench/results/time_to_accuracy-DATE)" },
    "only-reused": {
      type: "boolean",
      help: "run nothing: tabulate and plot only the runs found in --reuse",
    },
    reuse: {
      type: "string",
      default: "",
      help:
        "JSON results of earlier runs (comma-separated): a recipe/seed/lr found there is not rerun",
    },
  } as const,
  "deno run -A bench/time_to_accuracy.ts [flags]",
);

const big = flags["big-batch"];
/** A LAMB recipe at the large batch, with the adversary's flags. */
function lamb(name: string, label: string, adv: string[]): Recipe {
  const args = [...flagArgs({ optimizer: "lamb", "global-batch": big, "micro-batch": 64 }), ...adv];
  return { name, label, args, lr: DEFAULT_LR.lamb, epochs: flags["big-epochs"], globalBatch: big };
}

/** The ScaLA recipes' adversary: PGD with the α and ε of the flags. */
const adversary = { adv: "pgd", "adv-lr": flags["adv-lr"], "adv-eps": flags["adv-eps"] };
const RECIPES: Record<string, Recipe> = {
  baseline: {
    name: "baseline",
    label: "AdamW, B=32, no adversary",
    args: flagArgs({ optimizer: "adamw", "global-batch": 32, "micro-batch": 16, adv: "off" }),
    lr: DEFAULT_LR.adamw,
    epochs: flags["base-epochs"],
    globalBatch: 32,
  },
  lamb: lamb("lamb", `LAMB, B=${big}, no adversary`, flagArgs({ adv: "off" })),
  scala: lamb(
    "scala",
    `ScaLA: LAMB, B=${big}, PGD K=1 from 30%`,
    flagArgs({ ...adversary, "adv-steps": 1, "adv-start": 0.3 }),
  ),
  "scala-k2": lamb(
    "scala-k2",
    `ScaLA: LAMB, B=${big}, PGD K=2 from the start`,
    flagArgs({ ...adversary, "adv-steps": 2, "adv-start": 0 }),
  ),
};
const lrOverride = new Map(
  flags.lr.split(",").filter((s) => s).map((kv) => {
    const [k, v] = kv.split("=");
    return [k, Number(v)] as const;
  }),
);

interface Point {
  step: number;
  examples: number;
  trainSeconds: number;
  accuracy: number;
}
interface RunResult {
  recipe: string;
  seed: number;
  lr: number;
  steps: number;
  trainSeconds: number;
  secondsPerStep: number;
  curve: Point[];
  finalAccuracy: number;
  bestAccuracy: number;
}

async function runOnce(r: Recipe, seed: number): Promise<RunResult> {
  const lr = lrOverride.get(r.name) ?? r.lr;
  const evalEvery = Math.max(1, Math.round(flags["eval-examples"] / r.globalBatch));
  const { config } = await parseRunFlags(
    [
      ...r.args,
      ...flagArgs({
        lr,
        epochs: r.epochs,
        seed,
        "train-limit": flags["train-limit"],
        "eval-limit": flags["eval-limit"],
        "max-len": flags["max-len"],
        "eval-every": evalEvery,
        warmup: 0.1,
        port: 0,
        quiet: true,
        model: flags.model || undefined,
      }),
    ],
    {},
    "",
  );
  let trainMs = 0, examples = 0;
  const curve: Point[] = [];
  const c = await startCoordinator(config, {
    log: () => {},
    observer: {
      step: (s) => {
        trainMs += s.timings.stepMs;
        examples += s.examples;
      },
      evaluated: (step, _split, result) => {
        curve.push({ step, examples, trainSeconds: trainMs / 1000, accuracy: result.accuracy });
        console.error(
          `  ${r.name} seed ${seed} step ${step}: accuracy ${result.accuracy.toFixed(4)} after ${
            (trainMs / 1000).toFixed(0)
          } s`,
        );
      },
    },
  });
  const procs = spawnLocalWorkers(flags.workers, c.wsUrl, c.token, {
    backend: flags.backend,
    output: "null",
  });
  const summary = await c.done;
  await stopLocalWorkers(procs);
  await c.close();
  return {
    recipe: r.name,
    seed,
    lr,
    steps: summary.steps,
    trainSeconds: trainMs / 1000,
    secondsPerStep: trainMs / 1000 / summary.steps,
    curve,
    finalAccuracy: curve.at(-1)?.accuracy ?? NaN,
    bestAccuracy: Math.max(...curve.map((p) => p.accuracy)),
  };
}

const recipes = flags.recipes.split(",").map((n) => {
  const r = RECIPES[n];
  if (!r) throw new Error(`unknown recipe ${n}; known: ${Object.keys(RECIPES).join(", ")}`);
  return r;
});
const seeds = flags.seeds.split(",").map(Number);
const earlier: RunResult[] = [];
for (const file of flags.reuse.split(",").filter((f) => f)) {
  const saved = JSON.parse(await Deno.readTextFile(file)) as {
    flags: typeof flags;
    runs: RunResult[];
  };
  for (
    const key of [
      "train-limit",
      "eval-limit",
      "max-len",
      "workers",
      "model",
      "big-batch",
      "big-epochs",
      "base-epochs",
      "eval-examples",
      "adv-lr",
      "adv-eps",
    ] as const
  ) {
    // Files from before the α/ε flags ran with their defaults.
    const was = saved.flags[key] ?? (key === "adv-lr" ? 0.1 : key === "adv-eps" ? 1 : undefined);
    if (was !== flags[key]) {
      throw new Error(
        `--reuse ${file}: it ran with --${key} ${was}, this run uses ${flags[key]}`,
      );
    }
  }
  earlier.push(...saved.runs);
}
const prefix = flags.out ??
  `bench/results/time_to_accuracy-${new Date().toISOString().slice(0, 10)}`;
await Deno.mkdir("bench/results", { recursive: true });
const runs: RunResult[] = [];
for (const r of recipes) {
  for (const seed of seeds) {
    const lr = lrOverride.get(r.name) ?? r.lr;
    const found = earlier.find((x) => x.recipe === r.name && x.seed === seed && x.lr === lr);
    if (found) {
      console.error(`reusing ${r.label}, seed ${seed} (lr ${lr})`);
      runs.push(found);
      continue;
    }
    if (flags["only-reused"]) continue;
    console.error(`running ${r.label}, seed ${seed}`);
    runs.push(await runOnce(r, seed));
    // Written after every run, so an interrupted comparison keeps what it measured.
    await Deno.writeTextFile(`${prefix}.partial.json`, JSON.stringify({ flags, runs }, null, 2));
  }
}

// The target: the baseline's best accuracy, averaged over its seeds, minus the tolerance.
const baselineBests = runs.filter((x) => x.recipe === "baseline").map((x) => x.bestAccuracy);
const baselineBest = baselineBests.length
  ? baselineBests.reduce((a, b) => a + b, 0) / baselineBests.length
  : NaN;
const target = isFinite(baselineBest) ? baselineBest - flags.tolerance : NaN;
const reach = (run: RunResult) => run.curve.find((p) => p.accuracy >= target) ?? null;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const spread = (xs: number[]) => xs.length > 1 ? (Math.max(...xs) - Math.min(...xs)) / 2 : 0;
const shown = recipes.filter((r) => runs.some((x) => x.recipe === r.name));
const rows = shown.map((r) => {
  const rs = runs.filter((x) => x.recipe === r.name);
  const hits = rs.map(reach);
  const times = hits.filter((h) => h !== null).map((h) => h!.trainSeconds);
  return {
    recipe: r.name,
    label: r.label,
    lr: rs[0].lr,
    seeds: rs.length,
    finalAccuracy: mean(rs.map((x) => x.finalAccuracy)),
    finalSpread: spread(rs.map((x) => x.finalAccuracy)),
    bestAccuracy: mean(rs.map((x) => x.bestAccuracy)),
    bestSpread: spread(rs.map((x) => x.bestAccuracy)),
    secondsPerStep: mean(rs.map((x) => x.secondsPerStep)),
    reached: `${times.length}/${rs.length}`,
    secondsToTarget: times.length ? mean(times) : null,
    stepsToTarget: times.length ? mean(hits.filter((h) => h).map((h) => h!.step)) : null,
  };
});
const baseTime = rows.find((r) => r.recipe === "baseline")?.secondsToTarget ?? null;
console.log(
  `target accuracy ${target.toFixed(4)} (baseline best, mean over seeds, ${
    baselineBest.toFixed(4)
  } − ${flags.tolerance})`,
);
console.log(
  "| recipe | lr | seeds | final accuracy | best accuracy | s/step | reached | steps to target | s to target | speedup |",
);
console.log("|---|---|---|---|---|---|---|---|---|---|");
for (const r of rows) {
  const speed = baseTime && r.secondsToTarget
    ? (baseTime / r.secondsToTarget).toFixed(2) + "x"
    : "—";
  console.log(
    `| ${r.label} | ${r.lr} | ${r.seeds} | ${r.finalAccuracy.toFixed(4)} ± ${
      r.finalSpread.toFixed(4)
    } | ${r.bestAccuracy.toFixed(4)} ± ${r.bestSpread.toFixed(4)} | ${
      r.secondsPerStep.toFixed(1)
    } | ${r.reached} | ${r.stepsToTarget ?? "—"} | ${
      r.secondsToTarget?.toFixed(0) ?? "—"
    } | ${speed} |`,
  );
}

/** Accuracy against training seconds, one line per run, as SVG. */
function plot(): string {
  const W = 960, H = 420, m = { l: 60, r: 330, t: 20, b: 45 };
  const xmax = Math.max(...runs.flatMap((r) => r.curve.map((p) => p.trainSeconds)), 1);
  const accs = runs.flatMap((r) => r.curve.map((p) => p.accuracy));
  const ymin = Math.min(0.5, ...accs), ymax = Math.max(...accs, target || 0) + 0.01;
  const x = (v: number) => m.l + (v / xmax) * (W - m.l - m.r);
  const y = (v: number) => H - m.b - ((v - ymin) / (ymax - ymin)) * (H - m.t - m.b);
  const colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="black"/>`,
    `<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="black"/>`,
    `<text x="${(m.l + W - m.r) / 2}" y="${
      H - 10
    }" text-anchor="middle">training seconds (evaluation excluded)</text>`,
    `<text x="15" y="${(m.t + H - m.b) / 2}" transform="rotate(-90 15 ${
      (m.t + H - m.b) / 2
    })" text-anchor="middle">IMDB accuracy</text>`,
  ];
  for (let i = 0; i <= 5; i++) {
    const v = ymin + ((ymax - ymin) * i) / 5, t = (xmax * i) / 5;
    parts.push(`<text x="${m.l - 5}" y="${y(v) + 4}" text-anchor="end">${v.toFixed(2)}</text>`);
    parts.push(`<text x="${x(t)}" y="${H - m.b + 15}" text-anchor="middle">${t.toFixed(0)}</text>`);
  }
  if (isFinite(target)) {
    // Labelled inside the plot, above the line's left end: the legend owns the right margin.
    parts.push(
      `<line x1="${m.l}" y1="${y(target)}" x2="${W - m.r}" y2="${
        y(target)
      }" stroke="#888" stroke-dasharray="4 3"/>`,
    );
    parts.push(
      `<text x="${m.l + 5}" y="${y(target) - 4}" fill="#666">target ${target.toFixed(3)}</text>`,
    );
  }
  shown.forEach((r, i) => {
    const color = colors[i % colors.length];
    for (const run of runs.filter((q) => q.recipe === r.name)) {
      const pts = run.curve.map((p) =>
        `${x(p.trainSeconds).toFixed(1)},${y(p.accuracy).toFixed(1)}`
      ).join(" ");
      parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts}"/>`);
    }
    parts.push(
      `<rect x="${W - m.r + 5}" y="${m.t + 20 + i * 18}" width="12" height="3" fill="${color}"/>`,
    );
    parts.push(`<text x="${W - m.r + 22}" y="${m.t + 25 + i * 18}">${r.label}</text>`);
  });
  parts.push("</svg>");
  return parts.join("\n");
}

await Deno.writeTextFile(`${prefix}.svg`, plot());
await Deno.writeTextFile(
  `${prefix}.json`,
  JSON.stringify(
    {
      date: new Date().toISOString(),
      machine: { cores: navigator.hardwareConcurrency, backend: flags.backend },
      flags,
      target,
      baselineBest,
      rows,
      runs,
    },
    null,
    2,
  ),
);
await Deno.remove(`${prefix}.partial.json`).catch(() => {});
console.log(`wrote ${prefix}.json and ${prefix}.svg`);
