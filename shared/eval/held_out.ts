/**
 * Scoring a held-out split: logits in batches, predictions (argmax, or the
 * score for regression) and the task's GLUE metrics. Logits come from a
 * {@link ModelCompute} (shared/compute/: the engine or tfjs, one batch after
 * another) or from the workers of a run, every batch at once
 * ({@link BatchLogitsFn}; coordinator/mesh_eval.ts). Whatever computes the
 * logits, predictions and metrics are computed here the same way.
 *
 * @module
 */
import type { HostBatch } from "../model/batch.ts";
import type { EncodedSet } from "../data/batching.ts";
import { computeMetrics, type MetricName } from "./glue_metrics.ts";
import type { ModelConfig } from "../model/config.ts";
import type { ParamLayout } from "../model/param_layout.ts";
import type { BackendOptions } from "../compute/backend.ts";
import type { ModelCompute } from "../compute/model_compute.ts";
import { disposeBackend, hostCompute, startBackend } from "../compute/create.ts";

/** Logits [size·numLabels] of a host batch, without dropout or perturbation. */
export type LogitsFn = (batch: HostBatch) => Promise<Float32Array>;

/**
 * Logits of many host batches, resolved in batch order (each
 * [size·numLabels]). The mesh's has every batch in flight at once across the
 * workers.
 */
export type BatchLogitsFn = (batches: readonly HostBatch[]) => Promise<Float32Array[]>;

/** A model scored elsewhere, many batches at once (a run's workers). */
export interface BatchEvalModel {
  readonly config: ModelConfig;
  readonly logitsAll: BatchLogitsFn;
}

/**
 * A model scored one batch at a time: a {@link ModelCompute} with its
 * weights set (its `maskedLm`, where it has one, scores MLM runs).
 */
export type LogitsModel = Pick<ModelCompute, "config" | "logits" | "maskedLm">;

/** A model to score: a compute ({@link LogitsModel}) or a run's workers ({@link BatchEvalModel}). */
export type EvalModel = LogitsModel | BatchEvalModel;

/** The logits function of `model` (one batch at a time). */
export function logitsOf(model: EvalModel): LogitsFn {
  if ("logitsAll" in model) {
    const all = model.logitsAll;
    return async (batch) => (await all([batch]))[0];
  }
  return (batch) => model.logits(batch);
}

/**
 * The logits of many batches with `model`: all at once for a
 * {@link BatchEvalModel}, else one batch after another.
 */
export function batchLogitsOf(model: EvalModel): BatchLogitsFn {
  if ("logitsAll" in model) return model.logitsAll;
  const one = logitsOf(model);
  return async (batches) => {
    const out: Float32Array[] = [];
    for (const b of batches) out.push(await one(b));
    return out;
  };
}

/** Metrics keyed as GLUE names them, plus the number of examples scored. */
export type EvalResult = Record<string, number> & { examples: number };

/** What a held-out split is scored by: the run's data (coordinator/training_data.ts). */
export interface HeldOutScorer {
  /** Whether logits alone score it (classification, regression); else MLM scoring is needed. */
  readonly logitsOnly: boolean;
  /** Scores the held-out split (first `limit` items; 0: all); null when there is none. */
  evaluate(model: EvalModel, limit: number): Promise<EvalResult | null>;
}

/**
 * The coordinator's own evaluation: scores `data` with `compute`, or —
 * without one — with the host's best ({@link hostCompute}: the engine on a
 * BLAS of its own where one loads, else tfjs-wasm, and tfjs-wasm for MLM),
 * holding `model.weights`; a compute made here is disposed after.
 */
export async function evaluateOnHost(
  data: HeldOutScorer,
  model: {
    readonly config: ModelConfig;
    readonly layout: ParamLayout;
    readonly weights: Float32Array;
  },
  opts: { readonly limit: number; readonly deterministic?: boolean; compute?: ModelCompute },
): Promise<EvalResult | null> {
  const compute = opts.compute ?? await hostCompute(model.config, model.layout, {
    deterministic: opts.deterministic,
    maskedLm: !data.logitsOnly,
  });
  try {
    compute.setWeights(model.weights);
    return await data.evaluate(compute, opts.limit);
  } finally {
    if (!opts.compute) compute.dispose();
  }
}

/**
 * Sets up the backend for a command that scores (`predict`, `evaluate`) and
 * the model on it, weights set. `line` says which backend (see
 * {@link startBackend}); `dispose` frees the model and the backend.
 */
export async function scoringModel(
  ck: {
    readonly config: ModelConfig;
    readonly layout: ParamLayout;
    readonly weights: Float32Array;
  },
  requested: string | undefined,
  opts: BackendOptions = {},
): Promise<{ model: ModelCompute; line: string; dispose(): void }> {
  const { backend, line } = await startBackend(requested, opts);
  // Scoring: an example's logits do not depend on its place in the batch (cpu).
  const model = backend.model(ck.config, ck.layout, { rowStable: true });
  model.setWeights(ck.weights);
  return {
    model,
    line,
    dispose() {
      model.dispose();
      disposeBackend();
    },
  };
}

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

/** How a held-out split is cut into batches. */
export interface EvalSplit {
  /** Examples per batch (default 64). */
  readonly batchSize?: number;
  /** Score only the first `limit` examples (0 or absent: all). */
  readonly limit?: number;
}

/**
 * The batches {@link evaluateSet} scores: the first `limit` examples of
 * `set`, in order, `batchSize` at a time, without labels.
 */
export function evaluationBatches(set: EncodedSet, opts: EvalSplit = {}): HostBatch[] {
  const n = opts.limit ? Math.min(opts.limit, set.examples.length) : set.examples.length;
  const bs = opts.batchSize ?? 64;
  if (!Number.isSafeInteger(bs) || bs < 1) {
    throw new RangeError(`the evaluation batch size must be a positive integer, got ${bs}`);
  }
  const out: HostBatch[] = [];
  for (let i = 0; i < n; i += bs) {
    const idx = Array.from({ length: Math.min(bs, n - i) }, (_, k) => i + k);
    const { inputIds, tokenTypeIds, attentionMask, size, seqLen } = set.batch(idx);
    out.push({ inputIds, tokenTypeIds, attentionMask, size, seqLen });
  }
  return out;
}

/**
 * Scores the first `limit` examples of `set` (all when 0): the logits of
 * {@link evaluationBatches} (from the model's {@link batchLogitsOf}, so a
 * {@link BatchEvalModel} gets every batch at once), then predictions and
 * metrics.
 */
export async function evaluateSet(
  model: EvalModel,
  set: EncodedSet,
  metrics: readonly MetricName[],
  opts: EvalSplit = {},
): Promise<EvalResult> {
  const batches = evaluationBatches(set, opts);
  const n = batches.reduce((a, b) => a + b.size, 0);
  const numLabels = model.config.numLabels;
  const logits = await batchLogitsOf(model)(batches);
  if (logits.length !== batches.length) {
    throw new Error(`evaluation: ${logits.length} logits arrays for ${batches.length} batches`);
  }
  const predictions: number[] = [];
  logits.forEach((l, i) => {
    if (l.length !== batches[i].size * numLabels) {
      throw new Error(
        `evaluation: batch ${i} has ${l.length} logits, expected ${batches[i].size} · ${numLabels}`,
      );
    }
    predictions.push(...predictionsFromLogits(l, numLabels));
  });
  const labels = set.examples.slice(0, n).map((e) => e.label);
  return { ...computeMetrics(metrics, predictions, labels), examples: n } as EvalResult;
}
