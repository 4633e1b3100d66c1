/**
 * What `deno task predict` prints per example: the logits, the class
 * probabilities beside them (softmax; regression has none) and the label;
 * and the warning for a checkpoint whose classifier head was not trained.
 *
 * @module
 */

/** softmax of `logits`, computed stably in float64. */
export function softmax(logits: ArrayLike<number>): number[] {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  const exps = Array.from(logits, (v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / sum);
}

/**
 * One output line: `{"logits", "probabilities", "label"}` for a classifier
 * (more than one logit), `{"logits", "label"}` for regression.
 */
export function predictionLine(logits: ArrayLike<number>, label: string | number): string {
  const row = Array.from(logits);
  return JSON.stringify(
    row.length > 1 ? { logits: row, probabilities: softmax(row), label } : { logits: row, label },
  );
}

/** The stderr warning for a checkpoint loaded with a freshly initialised head. */
export function untrainedHeadWarning(dir: string): string {
  return `warning: ${dir} has no trained classifier head (it was initialised fresh on loading): ` +
    `its predictions are random; predict with a fine-tuned checkpoint (a run's --save DIR/model)`;
}
