/**
 * What a run trains and evaluates on, behind one interface for both
 * objectives: a labelled task (classification/regression) for adaptation,
 * or the built-in corpora with masking for pre-training.
 *
 * @module
 */
import { EncodedSet } from "../shared/data/batching.ts";
import type { TaskData } from "../shared/data/example.ts";
import { loadCorpus, loadTextCorpus } from "../shared/data/corpus.ts";
import {
  type EvalModel,
  type EvalResult,
  evaluateSet,
  type HeldOutScorer,
  type LogitsModel,
} from "../shared/eval/held_out.ts";
import type { LabelledBatch } from "../shared/model/batch.ts";
import type { TextTokenizer } from "../shared/text/tokenizer.ts";
import { MlmSet, packSequences } from "./mlm_data.ts";

/** Batches of training examples by index; `step` seeds any per-step randomness (masking). */
export interface BatchSource {
  readonly size: number;
  batch(indices: readonly number[], step: number): LabelledBatch;
}

/** A run's data. */
export interface TrainingData extends HeldOutScorer {
  readonly train: BatchSource;
  /** For `/status`. */
  summary(): { name: string; train: number; eval: number; numLabels: number; metrics: string[] };
  /**
   * Whether the held-out split is scored from logits alone, so the run's
   * workers can compute them (classification and regression). MLM scoring
   * ({@link evaluateMlm}) needs a compute's `maskedLm` and stays on the
   * coordinator.
   */
  readonly logitsOnly: boolean;
  /**
   * Scores the held-out split (first `limit` items; 0: all). With
   * `logitsOnly` any {@link EvalModel} does (a {@link BatchEvalModel} of the
   * workers included); otherwise it must have a `maskedLm`.
   */
  evaluate(model: EvalModel, limit: number): Promise<EvalResult | null>;
}

/** A labelled task. */
export function classificationData(
  task: TaskData,
  tokenizer: TextTokenizer,
  maxLen: number,
): TrainingData {
  const train = new EncodedSet(task.train, tokenizer, maxLen);
  const held = new EncodedSet(task.eval, tokenizer, maxLen);
  return {
    train: { size: task.train.length, batch: (indices) => train.batch(indices) },
    logitsOnly: true,
    summary: () => ({
      name: task.name,
      train: task.train.length,
      eval: task.eval.length,
      numLabels: task.numLabels,
      metrics: task.metricNames,
    }),
    evaluate: (model, limit) =>
      task.eval.length === 0
        ? Promise.resolve(null)
        : evaluateSet(model, held, task.metricNames, { limit }),
  };
}

/**
 * Masked-LM accuracy and loss on held-out sequences (masking of step 0, so
 * it is the same every time), on the coordinator, from the model's
 * `maskedLm` (tfjs: shared/tfjs/compute.ts).
 *
 * It is not sent to the workers, unlike classification: the engine — the
 * default CPU worker — computes the masked-LM loss only inside its gradient
 * pass and has no scoring pass that returns per-position log-probabilities
 * and argmaxes, so mesh scoring would need a new engine kernel for what is a
 * pre-training diagnostic (`--eval-limit` bounds its cost).
 */
export async function evaluateMlm(
  model: LogitsModel,
  set: MlmSet,
  limit: number,
): Promise<EvalResult> {
  const maskedLm = model.maskedLm;
  if (!maskedLm) throw new Error("MLM evaluation needs a compute with an MLM scoring pass (tfjs)");
  const n = limit ? Math.min(limit, set.size) : set.size;
  let correct = 0, total = 0, lossSum = 0;
  for (let i = 0; i < n; i += 32) {
    const idx = Array.from({ length: Math.min(32, n - i) }, (_, k) => i + k);
    const { ids, predicted, logProb } = await maskedLm(set.batch(idx, 0));
    for (let k = 0; k < ids.length; k++) {
      if (predicted[k] === ids[k]) correct++;
      lossSum -= logProb[k];
    }
    total += ids.length;
  }
  return {
    mlm_accuracy: correct / Math.max(1, total),
    mlm_loss: lossSum / Math.max(1, total),
    examples: n,
  } as EvalResult;
}

/** Where pre-training text comes from. */
export interface CorpusChoice {
  /** Built-in corpora: at most this many documents per source (0: all). */
  readonly maxDocumentsPerSource: number;
  /** A text file of the user's (one document per line) instead of the built-in corpora. */
  readonly file: string | null;
}

/** The corpus (built-in, or the user's file), tokenized and packed, masked per step. */
export async function pretrainingData(
  tokenizer: TextTokenizer,
  maxLen: number,
  seed: number,
  choice: CorpusChoice,
): Promise<TrainingData> {
  const corpus = choice.file ? await loadTextCorpus(choice.file) : await loadCorpus(
    choice.maxDocumentsPerSource ? { maxDocumentsPerSource: choice.maxDocumentsPerSource } : {},
  );
  const train = new MlmSet(
    packSequences(corpus.train.map((d) => d.text), tokenizer, maxLen),
    tokenizer,
    seed,
  );
  const held = new MlmSet(
    packSequences(corpus.heldOut.map((d) => d.text), tokenizer, maxLen),
    tokenizer,
    seed,
  );
  return {
    train,
    logitsOnly: false,
    summary: () => ({
      name: choice.file ? `mlm-file:${choice.file}` : "mlm-corpus",
      train: train.size,
      eval: held.size,
      numLabels: 0,
      metrics: ["mlm_accuracy"],
    }),
    evaluate: (model, limit) => {
      if ("logitsAll" in model) {
        throw new Error(
          "MLM evaluation needs the model's MLM scoring pass: it runs on the coordinator",
        );
      }
      return evaluateMlm(model, held, limit);
    },
  };
}
