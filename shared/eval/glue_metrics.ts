/**
 * Evaluation metrics as GLUE reports them (values as fractions in 0..1, the
 * way the Hugging Face `evaluate` library returns them).
 *
 * @module
 */

/** The metrics a task can report, named as GLUE results usually are. */
export type MetricName = "accuracy" | "f1" | "matthews_correlation" | "pearson" | "spearmanr";

/** All metric names, in a fixed order. */
export const METRIC_NAMES: readonly MetricName[] = [
  "accuracy",
  "f1",
  "matthews_correlation",
  "pearson",
  "spearmanr",
];

/** Fraction of predictions equal to their label. */
export function accuracy(predictions: readonly number[], labels: readonly number[]): number {
  let correct = 0;
  for (let i = 0; i < labels.length; i++) if (predictions[i] === labels[i]) correct++;
  return correct / labels.length;
}

/** F1 of the positive class 1 (binary); 0 when there are no positives at all, as sklearn. */
export function f1(predictions: readonly number[], labels: readonly number[]): number {
  let tp = 0, fp = 0, fn = 0;
  for (let i = 0; i < labels.length; i++) {
    const p = predictions[i] === 1, t = labels[i] === 1;
    if (p && t) tp++;
    else if (p) fp++;
    else if (t) fn++;
  }
  const denom = 2 * tp + fp + fn;
  return denom === 0 ? 0 : (2 * tp) / denom;
}

/**
 * Matthews correlation coefficient, multiclass form as in sklearn
 * (`matthews_corrcoef`); 0 when the denominator is 0.
 */
export function matthewsCorrelation(
  predictions: readonly number[],
  labels: readonly number[],
): number {
  const n = labels.length;
  const predCount = new Map<number, number>(), trueCount = new Map<number, number>();
  let correct = 0;
  for (let i = 0; i < n; i++) {
    const p = predictions[i], t = labels[i];
    predCount.set(p, (predCount.get(p) ?? 0) + 1);
    trueCount.set(t, (trueCount.get(t) ?? 0) + 1);
    if (p === t) correct++;
  }
  let pt = 0, pp = 0, tt = 0;
  for (const [k, c] of predCount) pt += c * (trueCount.get(k) ?? 0);
  for (const c of predCount.values()) pp += c * c;
  for (const c of trueCount.values()) tt += c * c;
  const covYtYp = correct * n - pt;
  const covYpYp = n * n - pp;
  const covYtYt = n * n - tt;
  const denom = Math.sqrt(covYtYt * covYpYp);
  return denom === 0 ? 0 : covYtYp / denom;
}

/** Pearson correlation; NaN when either side is constant (as scipy). */
export function pearson(x: readonly number[], y: readonly number[]): number {
  const n = x.length;
  let mx = 0, my = 0;
  for (let i = 0; i < n; i++) {
    mx += x[i];
    my += y[i];
  }
  mx /= n;
  my /= n;
  let sxy = 0, sxx = 0, syy = 0;
  for (let i = 0; i < n; i++) {
    const dx = x[i] - mx, dy = y[i] - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  if (sxx === 0 || syy === 0) return NaN;
  const r = sxy / Math.sqrt(sxx * syy);
  return Math.max(-1, Math.min(1, r));
}

/** 1-based ranks, tied values getting the average of their ranks. */
export function averageRanks(values: readonly number[]): number[] {
  const order = values.map((_, i) => i).sort((a, b) => values[a] - values[b]);
  const ranks = new Array<number>(values.length);
  let i = 0;
  while (i < order.length) {
    let j = i;
    while (j + 1 < order.length && values[order[j + 1]] === values[order[i]]) j++;
    const rank = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) ranks[order[k]] = rank;
    i = j + 1;
  }
  return ranks;
}

/** Spearman rank correlation (Pearson of average ranks); NaN when a side is constant. */
export function spearman(x: readonly number[], y: readonly number[]): number {
  return pearson(averageRanks(x), averageRanks(y));
}

const METRIC_FUNCTIONS: Record<
  MetricName,
  (p: readonly number[], l: readonly number[]) => number
> = {
  accuracy,
  f1,
  matthews_correlation: matthewsCorrelation,
  pearson,
  spearmanr: spearman,
};

/**
 * Computes the named metrics. `predictions` are class ids (classification) or
 * scores (regression), aligned with `labels`. Throws on a length mismatch or
 * when there is nothing to score.
 */
export function computeMetrics(
  names: readonly MetricName[],
  predictions: readonly number[],
  labels: readonly number[],
): Record<string, number> {
  if (predictions.length !== labels.length) {
    throw new RangeError(
      `metrics: ${predictions.length} predictions for ${labels.length} labels`,
    );
  }
  if (labels.length === 0) throw new RangeError("metrics: no examples to score");
  const out: Record<string, number> = {};
  for (const name of names) {
    if (!Object.hasOwn(METRIC_FUNCTIONS, name)) {
      throw new Error(`metrics: unknown metric ${JSON.stringify(name)}`);
    }
    out[name] = METRIC_FUNCTIONS[name](predictions, labels);
  }
  return out;
}
