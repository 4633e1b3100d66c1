import assert from "node:assert/strict";
import {
  accuracy,
  averageRanks,
  computeMetrics,
  f1,
  matthewsCorrelation,
  type MetricName,
  pearson,
  spearman,
} from "../shared/eval/glue_metrics.ts";

const close = (actual: number, expected: number, tol = 1e-12) =>
  assert.ok(Math.abs(actual - expected) <= tol, `${actual} != ${expected}`);

// preds vs labels: tp = 2 (#0, #3), tn = 1 (#1), fp = 1 (#2), fn = 1 (#4).
const PRED = [1, 0, 1, 1, 0];
const GOLD = [1, 0, 0, 1, 1];

Deno.test("accuracy and f1 of the positive class", () => {
  assert.equal(accuracy(PRED, GOLD), 3 / 5);
  // F1 = 2tp / (2tp + fp + fn) = 4 / 6.
  close(f1(PRED, GOLD), 2 / 3);
  assert.equal(f1([0, 0], [0, 0]), 0); // no positives at all: 0 as sklearn
  assert.equal(f1([1, 1], [1, 1]), 1);
  assert.equal(f1([0, 0], [1, 1]), 0);
});

Deno.test("Matthews correlation: 2x2 by hand, degenerate, multiclass", () => {
  // (tp·tn − fp·fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (2 − 1) / sqrt(3·3·2·2) = 1/6.
  close(matthewsCorrelation(PRED, GOLD), 1 / 6);
  assert.equal(matthewsCorrelation([1, 0, 1], [1, 0, 1]), 1);
  assert.equal(matthewsCorrelation([0, 1, 0], [1, 0, 1]), -1);
  // All predictions the same class: denominator 0 → 0.
  assert.equal(matthewsCorrelation([1, 1, 1, 1], [1, 0, 1, 0]), 0);
  // Multiclass (sklearn formula): c = 3, s = 5, Σp·t = 9, Σp² = Σt² = 9 → 6/16.
  close(matthewsCorrelation([0, 1, 2, 2, 1], [0, 1, 1, 2, 2]), 0.375);
});

Deno.test("Pearson and Spearman (average ranks for ties)", () => {
  // sxy = 11, sxx = 5, syy = 26 → 11 / sqrt(130).
  close(pearson([1, 2, 3, 4], [2, 4, 5, 9]), 11 / Math.sqrt(130));
  close(pearson([1, 2, 3], [3, 2, 1]), -1);
  assert.ok(Number.isNaN(pearson([1, 1, 1], [1, 2, 3])));
  assert.deepEqual(averageRanks([10, 20, 10, 30, 20, 20]), [1.5, 4, 1.5, 6, 4, 4]);
  // ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4] → 4.5 / sqrt(4.5 · 5).
  close(spearman([1, 2, 2, 3], [1, 3, 2, 4]), 4.5 / Math.sqrt(22.5));
  // Monotone but non-linear: Spearman 1, Pearson below 1.
  close(spearman([1, 2, 3, 4], [1, 10, 100, 1000]), 1);
  assert.ok(pearson([1, 2, 3, 4], [1, 10, 100, 1000]) < 0.95);
});

Deno.test("computeMetrics: names, values, errors", () => {
  const m = computeMetrics(["accuracy", "f1"], PRED, GOLD);
  assert.deepEqual(Object.keys(m), ["accuracy", "f1"]);
  assert.equal(m.accuracy, 0.6);
  close(m.f1, 2 / 3);
  const r = computeMetrics(["pearson", "spearmanr"], [1, 2, 2, 3], [1, 3, 2, 4]);
  close(r.spearmanr, 4.5 / Math.sqrt(22.5));
  close(computeMetrics(["matthews_correlation"], PRED, GOLD).matthews_correlation, 1 / 6);
  assert.throws(() => computeMetrics(["accuracy"], [1], [1, 0]), /1 predictions for 2 labels/);
  assert.throws(() => computeMetrics(["accuracy"], [], []), /no examples/);
  assert.throws(
    () => computeMetrics(["toString" as MetricName], [1], [1]),
    /unknown metric "toString"/,
  );
});
