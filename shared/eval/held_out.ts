/**
 * Scoring a held-out split: logits in batches, predictions (argmax, or the
 * score for regression) and the task's GLUE metrics. Logits come from tfjs
 * ({@link predictLogits}) or, where a BLAS loads, from the native engine —
 * one batch after another — or from the workers of a run, every batch at
 * once ({@link BatchLogitsFn}; coordinator/mesh_eval.ts). Whatever computes
 * the logits, predictions and metrics are computed here the same way.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { HostBatch } from "../model/batch.ts";
import { type DeviceModel, predictLogits, weightTensors } from "../tfjs/model.ts";
import type { EncodedSet } from "../data/batching.ts";
import { computeMetrics, type MetricName } from "./glue_metrics.ts";
import type { ModelConfig } from "../model/config.ts";
import type { ParamLayout } from "../model/param_layout.ts";
import type { Gemm } from "../engine/devices/cpu/gemm.ts";
import { EngineModel } from "../engine/engine.ts";
import { cpuDevice } from "../engine/devices/cpu/device.ts";
import { type BackendOptions, disposeBackend, hostBlas, startBackend } from "../compute/backend.ts";

/** Logits [size·numLabels] of a host batch, without dropout or perturbation. */
export type LogitsFn = (batch: HostBatch) => Float32Array | Promise<Float32Array>;

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
 * A model to score: tfjs tensors, a host logits function, or both (then the
 * logits function is used where logits are all that is needed); or a
 * {@link BatchEvalModel}.
 */
export type EvalModel =
  | (DeviceModel & { readonly logits?: LogitsFn })
  | { readonly config: ModelConfig; readonly logits: LogitsFn }
  | BatchEvalModel;

/** The logits function of `model` (one batch at a time). */
export function logitsOf(model: EvalModel): LogitsFn {
  if ("logitsAll" in model) {
    const all = model.logitsAll;
    return async (batch) => (await all([batch]))[0];
  }
  if (model.logits) return model.logits;
  const m = model as DeviceModel;
  return (batch) => predictLogits(m, batch);
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

/**
 * Logits on the native engine for flat weights in `layout` order; the
 * engine is built on the first call (a model that is never scored costs
 * nothing). `weights` is kept by reference.
 */
export function nativeLogits(
  config: ModelConfig,
  layout: ParamLayout,
  weights: Float32Array,
  gemm: Gemm,
): LogitsFn {
  let model: EngineModel<Float32Array> | null = null;
  return (batch) => {
    if (!model) {
      model = new EngineModel(cpuDevice(gemm), config, layout);
      model.setWeights(weights);
    }
    return model.logits(batch);
  };
}

/**
 * `model` with logits on the native engine when this process can load a
 * BLAS (see {@link hostBlas}), else `model` as it is; `close()` unloads the
 * BLAS handle when scoring is done. For the coordinator's own evaluation;
 * `deterministic` pins the BLAS to one thread.
 */
export function withHostLogits<M extends DeviceModel>(
  model: M,
  weights: Float32Array,
  opts: BackendOptions & { deterministic?: boolean; log?: (line: string) => void } = {},
): M & { readonly logits?: LogitsFn; close(): void } {
  const blas = hostBlas({ ...opts, threads: opts.deterministic ? 1 : opts.threads });
  if (!blas) return { ...model, close: () => {} };
  return {
    ...model,
    logits: nativeLogits(model.config, model.layout, weights, blas.gemm),
    close: () => blas.close(),
  };
}

/** Metrics keyed as GLUE names them, plus the number of examples scored. */
export type EvalResult = Record<string, number> & { examples: number };

/**
 * Sets up the backend for a command that scores (`predict`, `evaluate`) and
 * the model on it: the native engine on native, tfjs tensors otherwise.
 * `line` says which backend (see {@link startBackend}); `dispose` frees
 * tensors and the backend.
 */
export async function scoringModel(
  ck: {
    readonly config: ModelConfig;
    readonly layout: ParamLayout;
    readonly weights: Float32Array;
  },
  requested: string | undefined,
  opts: BackendOptions = {},
): Promise<{ model: EvalModel; line: string; dispose(): void }> {
  const { info, line } = await startBackend(requested, opts);
  if (info.name === "native" && info.blas) {
    const logits = nativeLogits(ck.config, ck.layout, ck.weights, info.blas.gemm);
    return { model: { config: ck.config, logits }, line, dispose: () => disposeBackend() };
  }
  const weights = weightTensors(ck.layout, ck.weights);
  return {
    model: { config: ck.config, layout: ck.layout, weights },
    line,
    dispose() {
      tf.dispose(Object.values(weights));
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
