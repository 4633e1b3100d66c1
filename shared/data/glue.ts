/**
 * GLUE tasks from their original TSV folders (train.tsv and dev.tsv; MNLI:
 * dev_matched.tsv and dev_mismatched.tsv), read as the Hugging Face / GLUE
 * reference processors read them: tab-separated, NO quoting (a `"` is an
 * ordinary character), a BOM ignored, one row per line.
 *
 * @module
 */

import type { MetricName } from "../eval/glue_metrics.ts";
import type { Example, TaskData } from "./example.ts";
import { emptyEvalSplit, labelOutOfRange } from "./label_check.ts";
import { InputError } from "../io/input_error.ts";

/** The GLUE configuration names. */
export const GLUE_TASKS = [
  "cola",
  "sst2",
  "mrpc",
  "stsb",
  "qqp",
  "mnli",
  "qnli",
  "rte",
  "wnli",
] as const;

/** One GLUE configuration name. */
export type GlueTaskName = typeof GLUE_TASKS[number];

/** Where a task's fields are in a row. A negative index counts from the end. */
interface Layout {
  header: boolean;
  text: number;
  pair?: number;
  label: number;
  /** Skip rows with too few columns instead of failing (the reference does for QQP). */
  skipMalformed?: boolean;
}

interface TaskSpec {
  layout: Layout;
  /** Canonical label strings by id; null for regression. */
  labels: string[] | null;
  metrics: MetricName[];
}

const BINARY = ["0", "1"];
const ENTAILMENT = ["entailment", "not_entailment"];

const SPECS: Record<GlueTaskName, TaskSpec> = {
  // CoLA train/dev: no header; source, label, original notation, sentence.
  cola: {
    layout: { header: false, text: 3, label: 1 },
    labels: BINARY,
    metrics: ["matthews_correlation"],
  },
  sst2: { layout: { header: true, text: 0, label: 1 }, labels: BINARY, metrics: ["accuracy"] },
  // Quality, #1 ID, #2 ID, #1 String, #2 String.
  mrpc: {
    layout: { header: true, text: 3, pair: 4, label: 0 },
    labels: BINARY,
    metrics: ["accuracy", "f1"],
  },
  stsb: {
    layout: { header: true, text: 7, pair: 8, label: -1 },
    labels: null,
    metrics: ["pearson", "spearmanr"],
  },
  // id, qid1, qid2, question1, question2, is_duplicate.
  qqp: {
    layout: { header: true, text: 3, pair: 4, label: 5, skipMalformed: true },
    labels: BINARY,
    metrics: ["accuracy", "f1"],
  },
  mnli: {
    layout: { header: true, text: 8, pair: 9, label: -1 },
    labels: ["contradiction", "entailment", "neutral"],
    metrics: ["accuracy"],
  },
  qnli: {
    layout: { header: true, text: 1, pair: 2, label: -1 },
    labels: ENTAILMENT,
    metrics: ["accuracy"],
  },
  rte: {
    layout: { header: true, text: 1, pair: 2, label: -1 },
    labels: ENTAILMENT,
    metrics: ["accuracy"],
  },
  wnli: {
    layout: { header: true, text: 1, pair: 2, label: -1 },
    labels: BINARY,
    metrics: ["accuracy"],
  },
};

/**
 * The GLUE configuration name for a task or folder spelling ("SST-2",
 * "STS-B", "MNLI", any case), or undefined if it is not a GLUE task.
 */
export function glueTaskName(name: string): GlueTaskName | undefined {
  const key = name.toLowerCase().replace(/[-_]/g, "");
  return (GLUE_TASKS as readonly string[]).includes(key) ? key as GlueTaskName : undefined;
}

/** Splits TSV text into rows of fields, without any quoting; blank lines are dropped. */
export function readTsvRows(text: string): { line: number; fields: string[] }[] {
  const rows: { line: number; fields: string[] }[] = [];
  const lines = text.replace(/^\uFEFF/, "").split(/\r\n|\n|\r/);
  for (const [i, line] of lines.entries()) {
    if (line === "") continue;
    rows.push({ line: i + 1, fields: line.split("\t") });
  }
  return rows;
}

/**
 * The label names by id: `label2id` when its keys are exactly the task's label
 * strings and its ids are 0..n-1, else the canonical order.
 */
function labelOrder(canonical: string[], label2id?: Record<string, number>): string[] {
  if (!label2id) return canonical;
  const keys = Object.keys(label2id);
  if (keys.length !== canonical.length || !canonical.every((l) => Object.hasOwn(label2id, l))) {
    return canonical;
  }
  const byId = new Array<string | undefined>(canonical.length);
  for (const l of canonical) {
    const id = label2id[l];
    if (!Number.isInteger(id) || id < 0 || id >= byId.length || byId[id] !== undefined) {
      return canonical;
    }
    byId[id] = l;
  }
  return byId as string[];
}

function readFile(path: string, task: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`GLUE ${task}: ${path} not found`);
    throw new Error(`GLUE ${task}: cannot read ${path}: ${(e as Error).message}`);
  }
}

function field(fields: string[], index: number): string | undefined {
  return fields[index < 0 ? fields.length + index : index];
}

function parseSplit(
  path: string,
  task: GlueTaskName,
  labelNames: string[] | null,
): Example[] {
  const { layout } = SPECS[task];
  const ids = new Map(labelNames?.map((l, i) => [l, i]) ?? []);
  const rows = readTsvRows(readFile(path, task));
  const examples: Example[] = [];
  // A label counted from the end must still be a column of its own.
  const lastText = Math.max(layout.text, layout.pair ?? 0);
  const needed = layout.label < 0
    ? lastText + 1 - layout.label
    : Math.max(lastText, layout.label) + 1;
  for (const { line, fields } of layout.header ? rows.slice(1) : rows) {
    const where = `${path}:${line}`;
    if (fields.length < needed) {
      if (layout.skipMalformed) continue;
      throw new Error(
        `${where}: expected at least ${needed} tab-separated columns, got ${fields.length}`,
      );
    }
    const text = field(fields, layout.text)!;
    const rawLabel = field(fields, layout.label)!;
    let label: number;
    if (labelNames === null) {
      label = rawLabel.trim() === "" ? NaN : Number(rawLabel);
      if (!Number.isFinite(label)) {
        throw new Error(`${where}: score ${JSON.stringify(rawLabel)} is not a number`);
      }
    } else {
      const id = ids.get(rawLabel);
      if (
        id === undefined && /^-?\d+$/.test(rawLabel) && labelNames.every((l) => /^\d+$/.test(l))
      ) {
        throw labelOutOfRange(where, rawLabel, labelNames.length);
      }
      if (id === undefined) {
        throw new InputError(
          `${where}: unknown label ${JSON.stringify(rawLabel)} (expected one of ${
            labelNames.join(", ")
          })`,
        );
      }
      label = id;
    }
    const ex: Example = { text, label };
    if (layout.pair !== undefined) ex.textPair = field(fields, layout.pair)!;
    examples.push(ex);
  }
  return examples;
}

/**
 * Loads a GLUE task from its folder. `name` is a GLUE configuration name or
 * folder spelling; `label2id` (from a checkpoint's config.json) is used when
 * its keys are exactly the task's label strings, else the canonical order.
 */
export function loadGlueTask(
  name: string,
  dir: string,
  label2id?: Record<string, number>,
): TaskData {
  const task = glueTaskName(name);
  if (task === undefined) {
    throw new Error(`unknown GLUE task ${JSON.stringify(name)}; valid: ${GLUE_TASKS.join(", ")}`);
  }
  const spec = SPECS[task];
  const labelNames = spec.labels === null ? null : labelOrder(spec.labels, label2id);
  const split = (file: string) => parseSplit(`${dir}/${file}`, task, labelNames);
  const isMnli = task === "mnli";
  const evalSplit = (file: string) => {
    const examples = split(file);
    if (examples.length === 0) throw emptyEvalSplit(`${dir}/${file}`);
    return examples;
  };
  return {
    name: task,
    numLabels: labelNames === null ? 1 : labelNames.length,
    labelNames,
    metricNames: spec.metrics.slice(),
    train: split("train.tsv"),
    eval: evalSplit(isMnli ? "dev_matched.tsv" : "dev.tsv"),
    extraEval: isMnli ? [{ name: "mismatched", examples: evalSplit("dev_mismatched.tsv") }] : [],
  };
}
