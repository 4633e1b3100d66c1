/**
 * The cases the engine's equivalence tests run every device and adversary mode
 * on: the tiny model shapes (BERT, RoBERTa, regression, MLM), the dropout
 * settings, and the gradient task over a case's batch.
 */
import type { AdversaryConfig } from "../../shared/method/adversary_config.ts";
import type { GradientTask } from "../../shared/compute/task.ts";
import { paramLayout } from "../../shared/model/param_layout.ts";
import { type Tiny, tiny, tinyWeights } from "./tiny.ts";

/** The model shapes every mode runs on. */
export const ENGINE_MODELS: { name: string; over: Record<string, unknown>; mlm: boolean }[] = [
  { name: "bert", over: {}, mlm: false },
  { name: "roberta", over: { model_type: "roberta", pad_token_id: 1 }, mlm: false },
  { name: "bert regression", over: { num_labels: 1 }, mlm: false },
  { name: "bert mlm", over: {}, mlm: true },
  { name: "roberta mlm", over: { model_type: "roberta", pad_token_id: 1 }, mlm: true },
];

/** Dropout off, then on (hidden 0.2, attention 0.15). */
export const ENGINE_DROPOUTS = [{ hidden: 0, attention: 0 }, { hidden: 0.2, attention: 0.15 }];

/** A tiny model, 4 examples of 7 positions with padding; MLM labels three tokens. */
export function engineModel(over: Record<string, unknown>, mlm: boolean): Tiny {
  const t = tiny(over, 4, 7);
  if (!mlm) return t;
  const layout = paramLayout(t.config, "mlm");
  const labels = new Float32Array(t.batch.size * t.batch.seqLen).fill(-100);
  labels[1] = 7;
  labels[4] = 12;
  labels[t.batch.seqLen + 2] = 30;
  return { ...t, layout, weights: tinyWeights(layout), batch: { ...t.batch, labels } };
}

/** Step 3, index 1, seed 7 over `t`'s batch. */
export function engineTask(
  t: Tiny,
  adversary: AdversaryConfig,
  dropout = ENGINE_DROPOUTS[0],
): GradientTask {
  return { step: 3, index: 1, seed: 7, adversary, batch: t.batch, dropout };
}
