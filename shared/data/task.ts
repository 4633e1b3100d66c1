/**
 * Picks the data set for a run from the command-line choices: the built-in
 * IMDB task, a GLUE task folder, or train/eval JSONL files.
 *
 * @module
 */

import type { Example, TaskData } from "./example.ts";
import { GLUE_TASKS, glueTaskName, loadGlueTask } from "./glue.ts";
import { type JsonlRecord, readJsonl, recordsToExamples } from "./jsonl.ts";
import { emptyEvalSplit, firstNegativeInteger, labelOutOfRange } from "./label_check.ts";

/** What the user chose (the `--task`, `--data`, `--train`, `--eval` flags). */
export interface TaskOptions {
  /** "imdb" or a GLUE name (folder spellings accepted); needs `data` for GLUE. */
  task?: string;
  /** The GLUE task folder. */
  data?: string;
  /** Training JSONL file (without `task`). */
  train?: string;
  /** Evaluation JSONL file (without `task`). */
  eval?: string;
  /** The checkpoint's label2id, kept when it names exactly the task's labels. */
  label2id?: Record<string, number>;
  /**
   * The checkpoint's class count (`deno task evaluate`): integer JSONL labels
   * are class ids of these classes, and one outside them is an error.
   */
  numLabels?: number;
}

/** Every task name `loadTask` accepts. */
export const TASK_NAMES: readonly string[] = ["imdb", ...GLUE_TASKS];

/**
 * Loads the chosen task: `task: "imdb"` (also the default when nothing is
 * given), `task` + `data` for GLUE, or `train` and/or `eval` JSONL files
 * (a missing one is an empty split).
 */
export async function loadTask(opts: TaskOptions): Promise<TaskData> {
  const { task, data, train, eval: evalPath } = opts;
  const files = train !== undefined || evalPath !== undefined;
  if (task !== undefined) {
    if (files) throw new Error(`--task ${task} reads its own files; drop --train/--eval`);
    if (task.toLowerCase() === "imdb") {
      if (data !== undefined) throw new Error("--task imdb is built in; it takes no --data");
      const { loadImdb } = await import("./imdb.ts");
      return loadImdb();
    }
    if (glueTaskName(task) === undefined) {
      throw new Error(`unknown task ${JSON.stringify(task)}; valid: ${TASK_NAMES.join(", ")}`);
    }
    if (data === undefined) throw new Error(`--task ${task} needs --data DIR (the GLUE folder)`);
    return loadGlueTask(task, data, opts.label2id);
  }
  if (data !== undefined) throw new Error("--data needs --task NAME (the GLUE task)");
  if (!files) {
    const { loadImdb } = await import("./imdb.ts");
    return loadImdb();
  }
  return await loadJsonlTask(train, evalPath, opts.label2id, opts.numLabels);
}

/**
 * The label space of JSONL files: string labels → classes (the checkpoint's
 * `label2id` order if it names every label, else sorted names, as the
 * Hugging Face examples do); integer labels → class ids 0..max (of the
 * checkpoint's `numLabels` classes when given; a negative one is an error
 * naming its line); any non-integer number → regression.
 */
function labelSpace(
  records: { rec: JsonlRecord; source: string }[],
  label2id?: Record<string, number>,
  numLabels?: number,
): string[] | null {
  if (records.length === 0) throw new Error("the JSONL files hold no examples");
  const strings = new Set<string>();
  let numbers = 0, maxInt = -1, fractional = false;
  for (const { rec, source } of records) {
    if (rec.label === undefined) throw new Error(`${source}:${rec.line}: missing "label"`);
    if (typeof rec.label === "string") strings.add(rec.label);
    else {
      numbers++;
      if (!Number.isInteger(rec.label)) fractional = true;
      else maxInt = Math.max(maxInt, rec.label);
    }
  }
  if (strings.size > 0 && numbers > 0) {
    throw new Error("labels mix strings and numbers; use one kind");
  }
  const fromConfig = label2idNames(label2id);
  if (strings.size > 0) {
    if (fromConfig && [...strings].every((s) => fromConfig.includes(s))) return fromConfig;
    return [...strings].sort();
  }
  if (fractional || numLabels === 1) return null;
  // Integer labels: class ids, so a negative one is a mistake, not a regression target.
  const negative = firstNegativeInteger(records);
  if (negative) throw labelOutOfRange(negative.where, negative.label, maxInt + 1);
  if (fromConfig && maxInt < fromConfig.length) return fromConfig;
  if (numLabels !== undefined && numLabels > 1) {
    const over = records.find(({ rec }) => (rec.label as number) >= numLabels);
    if (over) throw labelOutOfRange(`${over.source}:${over.rec.line}`, over.rec.label!, numLabels);
    return Array.from({ length: numLabels }, (_, i) => String(i));
  }
  return Array.from({ length: maxInt + 1 }, (_, i) => String(i));
}

/** label2id as names by id, if its ids are exactly 0..n-1. */
function label2idNames(label2id?: Record<string, number>): string[] | undefined {
  if (!label2id) return undefined;
  const entries = Object.entries(label2id);
  const names = new Array<string | undefined>(entries.length);
  for (const [name, id] of entries) {
    if (!Number.isInteger(id) || id < 0 || id >= names.length || names[id] !== undefined) {
      return undefined;
    }
    names[id] = name;
  }
  return names.length > 0 ? names as string[] : undefined;
}

async function loadJsonlTask(
  train: string | undefined,
  evalPath: string | undefined,
  label2id?: Record<string, number>,
  numLabels?: number,
): Promise<TaskData> {
  const read = async (path: string | undefined) =>
    path === undefined ? [] : (await readJsonl(path)).map((rec) => ({ rec, source: path }));
  const trainRecs = await read(train);
  const evalRecs = await read(evalPath);
  if (evalPath !== undefined && evalRecs.length === 0) throw emptyEvalSplit(evalPath);
  const labelNames = labelSpace([...trainRecs, ...evalRecs], label2id, numLabels);
  const toExamples = (recs: { rec: JsonlRecord; source: string }[]): Example[] =>
    recs.length === 0 ? [] : recordsToExamples(recs.map((r) => r.rec), recs[0].source, labelNames);
  return {
    name: "jsonl",
    numLabels: labelNames === null ? 1 : labelNames.length,
    labelNames,
    metricNames: labelNames === null ? ["pearson", "spearmanr"] : ["accuracy"],
    train: toExamples(trainRecs),
    eval: toExamples(evalRecs),
    extraEval: [],
  };
}
