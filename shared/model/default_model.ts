/**
 * The model a run uses when `--model` is not given: the small pre-trained
 * BERT shipped in `models/adaptmesh-bert-small/` when present; otherwise
 * the same architecture freshly initialised (seeded), with a note saying so.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { initWeights, loadCheckpoint, type LoadedCheckpoint } from "../io/checkpoint.ts";
import { parseModelConfig } from "./config.ts";
import { type Objective, paramLayout } from "./param_layout.ts";
import { bertBaseUncasedVocab } from "../text/vocab.ts";
import { pathExists } from "../io/path_exists.ts";

/** Where the embedded default checkpoint lives. */
export const DEFAULT_MODEL_DIR: string = fileURLToPath(
  new URL("../../models/adaptmesh-bert-small", import.meta.url),
);

/** The default architecture: bert-base-uncased vocabulary, 2 layers, hidden 128. */
export function defaultModelConfigJson(numLabels: number): Record<string, unknown> {
  return {
    model_type: "bert",
    vocab_size: bertBaseUncasedVocab().length,
    hidden_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    intermediate_size: 512,
    hidden_act: "gelu",
    max_position_embeddings: 512,
    type_vocab_size: 2,
    layer_norm_eps: 1e-12,
    hidden_dropout_prob: 0.1,
    attention_probs_dropout_prob: 0.1,
    pad_token_id: 0,
    num_labels: numLabels,
  };
}

/** Loads `dir`, or the default model (pre-trained if shipped, else seeded init). */
export async function loadModel(
  dir: string | null,
  opts: { numLabels: number; labelNames?: string[]; seed: number },
): Promise<LoadedCheckpoint & { dir: string | null }> {
  const path = dir ??
    (await pathExists(`${DEFAULT_MODEL_DIR}/config.json`) ? DEFAULT_MODEL_DIR : null);
  const labelNames = opts.labelNames?.length === opts.numLabels ? opts.labelNames : undefined;
  if (path) return { ...(await loadCheckpoint(path, { ...opts, labelNames })), dir: path };
  return {
    ...freshDefaultModel({ ...opts, labelNames }),
    notes: [
      `no pre-trained checkpoint at ${DEFAULT_MODEL_DIR}: adapting a freshly initialised small BERT ` +
      `(seed ${opts.seed}; see README, "The built-in model and pre-training")`,
    ],
  };
}

/**
 * The default architecture freshly initialised (seeded), whatever is shipped:
 * with a classifier head, or with the MLM head for pre-training.
 */
export function freshDefaultModel(
  opts: { numLabels: number; labelNames?: string[]; seed: number; objective?: Objective },
): LoadedCheckpoint & { dir: null } {
  const { labelNames, objective = "classify" } = opts;
  const config = parseModelConfig({
    ...defaultModelConfigJson(opts.numLabels),
    ...(labelNames
      ? { id2label: Object.fromEntries(labelNames.map((l, i) => [String(i), l])) }
      : {}),
  });
  return {
    config,
    layout: paramLayout(config, objective),
    weights: initWeights(config, opts.seed, objective),
    extra: new Map(),
    notes: [`a freshly initialised small BERT (seed ${opts.seed})`],
    freshHead: true,
    dir: null,
  };
}
