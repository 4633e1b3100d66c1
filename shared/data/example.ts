/**
 * The in-memory form of a labelled data set: examples and the task around them.
 *
 * @module
 */

import type { MetricName } from "../eval/glue_metrics.ts";

/** One text (or text pair) with its label. */
export interface Example {
  text: string;
  /** The second text of a pair task (MRPC, MNLI, …). */
  textPair?: string;
  /** The class id, or the float score for regression (STS-B). */
  label: number;
}

/** A task: its label space, metrics and splits. */
export interface TaskData {
  /** Task name ("imdb", a GLUE configuration name, or "jsonl" for user files). */
  name: string;
  /** Number of classes; 1 for regression. */
  numLabels: number;
  /** Label names by class id; null for regression. */
  labelNames: string[] | null;
  /** The metrics to report on the evaluation splits. */
  metricNames: MetricName[];
  /** Training examples. */
  train: Example[];
  /** The held-out evaluation split. */
  eval: Example[];
  /** Further evaluation splits reported separately (MNLI: "mismatched"). */
  extraEval: { name: string; examples: Example[] }[];
}
