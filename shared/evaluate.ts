/**
 * Scoring a held-out split: logits in batches, predictions (argmax, or the
 * score for regression) and the task's GLUE metrics.
 *
 * @module
 */
import { type DeviceModel, predictLogits } from "./model.ts";
import type { EncodedSet } from "./batching.ts";
import { computeMetrics, type MetricName } from "./metrics.ts";

/** Metrics keyed as GLUE names them, plus the number of examples scored. */
export type EvalResult = Record<string, number> & { examples: number };

/** Predictions from flat logits [n·numLabels]. */
export function predictionsFromLogits(logits: Float32Array, numLabels: number): number[] {
  const n = logits.length / numLabels;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    if (numLabels === 1) {
      out.push(logits[i]);
      continue;
    }
    let best = 0;
    for (let c = 1; c < numLabels; c++) {
      if (logits[i * numLabels + c] > logits[i * numLabels + best]) best = c;
    }
    out.push(best);
  }
  return out;
}

/** Scores the first `limit` examples of `set` (all when 0). */
export async function evaluateSet(
  model: DeviceModel,
  set: EncodedSet,
  metrics: readonly MetricName[],
  opts: { batchSize?: number; limit?: number } = {},
): Promise<EvalResult> {
  const n = opts.limit ? Math.min(opts.limit, set.examples.length) : set.examples.length;
  const bs = opts.batchSize ?? 64;
  const predictions: number[] = [];
  for (let i = 0; i < n; i += bs) {
    const idx = Array.from({ length: Math.min(bs, n - i) }, (_, k) => i + k);
    const logits = await predictLogits(model, set.batch(idx));
    predictions.push(...predictionsFromLogits(logits, model.config.numLabels));
  }
  const labels = set.examples.slice(0, n).map((e) => e.label);
  return { ...computeMetrics(metrics, predictions, labels), examples: n } as EvalResult;
}
