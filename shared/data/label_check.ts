/**
 * Class labels must be class ids: a label outside [0, num_labels) — a `-1`
 * left for "unlabelled", a class the model does not have — is an
 * {@link InputError} (exit 2) naming the file and line, in training and in
 * evaluation data, JSONL (shared/data/task.ts) and GLUE (shared/data/glue.ts)
 * alike. An evaluation file without examples is one too.
 *
 * @module
 */
import { InputError } from "../io/input_error.ts";

/** The error for class label `label` at `where` (`file:line`) with `numLabels` classes. */
export function labelOutOfRange(
  where: string,
  label: number | string,
  numLabels: number,
): InputError {
  return new InputError(
    `${where}: label ${label} is outside [0, ${numLabels}): ` +
      `a classification label must be a class id 0..${numLabels - 1}`,
  );
}

/**
 * Integer labels of JSONL records: the first negative one, which makes an
 * otherwise integer label set an error instead of a silent regression task.
 * Returns `file:line` and the label, or null.
 */
export function firstNegativeInteger(
  records: readonly {
    readonly rec: { readonly line: number; readonly label?: string | number };
    readonly source: string;
  }[],
): { where: string; label: number } | null {
  for (const { rec, source } of records) {
    if (typeof rec.label === "number" && Number.isInteger(rec.label) && rec.label < 0) {
      return { where: `${source}:${rec.line}`, label: rec.label };
    }
  }
  return null;
}

/** An evaluation split read from `source` that holds no examples. */
export function emptyEvalSplit(source: string): InputError {
  return new InputError(`${source}: the evaluation split holds no examples`);
}
