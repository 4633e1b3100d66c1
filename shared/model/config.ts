/**
 * The model configuration: the Hugging Face `config.json` of a BERT or
 * RoBERTa checkpoint, parsed and validated into one typed object.
 *
 * @module
 */
import { isPlainObject } from "../io/plain_object.ts";

/**
 * Which family of encoder a checkpoint holds; also the prefix of the
 * encoder's tensor names (`bert.embeddings.…`, `roberta.encoder.layer.0.…`).
 */
export type ModelType = "bert" | "roberta";

/** A validated encoder + classification-head configuration. */
export interface ModelConfig {
  readonly modelType: ModelType;
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly intermediateSize: number;
  readonly maxPositions: number;
  readonly typeVocabSize: number;
  readonly layerNormEps: number;
  readonly hiddenDropout: number;
  readonly attentionDropout: number;
  readonly padTokenId: number;
  /** 1 means regression (STS-B); otherwise classification. */
  readonly numLabels: number;
  /** Label names by id, when the checkpoint names them. */
  readonly id2label?: readonly string[];
}

/**
 * The longest sequence the model can embed. BERT gives token i position i, so
 * every one of `max_position_embeddings` is usable; RoBERTa numbers real
 * tokens from `pad_token_id + 1` (docs/model-and-data.md, "The forward pass"),
 * so `pad + 1` positions fewer: 512 tokens for RoBERTa's 514 positions.
 */
export function maxSequenceLength(
  c: Pick<ModelConfig, "modelType" | "maxPositions" | "padTokenId">,
): number {
  return c.modelType === "roberta" ? c.maxPositions - c.padTokenId - 1 : c.maxPositions;
}

function int(json: Record<string, unknown>, key: string, fallback?: number): number {
  const v = json[key] ?? fallback;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
    throw new Error(
      `config.json: "${key}" must be a non-negative integer, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

function num(json: Record<string, unknown>, key: string, fallback: number): number {
  const v = json[key] ?? fallback;
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
    throw new Error(
      `config.json: "${key}" must be a non-negative number, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

/** Parses and validates a Hugging Face `config.json` object. */
export function parseModelConfig(raw: unknown): ModelConfig {
  if (!isPlainObject(raw)) throw new Error("config.json: expected a JSON object");
  const json = raw;
  const modelType = json.model_type ?? "bert";
  if (modelType !== "bert" && modelType !== "roberta") {
    throw new Error(
      `config.json: model_type must be "bert" or "roberta", got ${JSON.stringify(modelType)}`,
    );
  }
  const act = json.hidden_act ?? "gelu";
  if (act !== "gelu") {
    throw new Error(`config.json: only hidden_act "gelu" (erf form) is supported, got ${act}`);
  }
  let id2label: string[] | undefined;
  if (json.id2label !== undefined) {
    const map = json.id2label as Record<string, unknown>;
    const ids = Object.keys(map).map(Number).sort((a, b) => a - b);
    if (!ids.every((id, i) => id === i)) {
      throw new Error("config.json: id2label keys must be 0..n-1");
    }
    id2label = ids.map((id) => String(map[String(id)]));
  }
  const numLabels = int(json, "num_labels", id2label?.length ?? 2);
  if (numLabels < 1) throw new Error("config.json: num_labels must be at least 1");
  const config: ModelConfig = {
    modelType,
    vocabSize: int(json, "vocab_size"),
    hiddenSize: int(json, "hidden_size"),
    numLayers: int(json, "num_hidden_layers"),
    numHeads: int(json, "num_attention_heads"),
    intermediateSize: int(json, "intermediate_size"),
    maxPositions: int(json, "max_position_embeddings", 512),
    typeVocabSize: int(json, "type_vocab_size", 2),
    layerNormEps: num(json, "layer_norm_eps", 1e-12),
    hiddenDropout: num(json, "hidden_dropout_prob", 0.1),
    attentionDropout: num(json, "attention_probs_dropout_prob", 0.1),
    padTokenId: int(json, "pad_token_id", modelType === "roberta" ? 1 : 0),
    numLabels,
    id2label: id2label && id2label.length === numLabels ? id2label : undefined,
  };
  if (config.hiddenSize % config.numHeads !== 0) {
    throw new Error(
      `config.json: hidden_size ${config.hiddenSize} is not divisible by num_attention_heads ${config.numHeads}`,
    );
  }
  return config;
}

/**
 * Writes a config back in the Hugging Face layout (loadable by `transformers`);
 * `architectures` names the head the checkpoint carries.
 */
export function toHfConfig(
  c: ModelConfig,
  head: "classify" | "mlm" = "classify",
): Record<string, unknown> {
  const id2label = c.id2label ?? Array.from({ length: c.numLabels }, (_, i) => `LABEL_${i}`);
  const family = c.modelType === "bert" ? "Bert" : "Roberta";
  return {
    architectures: [`${family}${head === "mlm" ? "ForMaskedLM" : "ForSequenceClassification"}`],
    model_type: c.modelType,
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    intermediate_size: c.intermediateSize,
    hidden_act: "gelu",
    max_position_embeddings: c.maxPositions,
    type_vocab_size: c.typeVocabSize,
    layer_norm_eps: c.layerNormEps,
    hidden_dropout_prob: c.hiddenDropout,
    attention_probs_dropout_prob: c.attentionDropout,
    pad_token_id: c.padTokenId,
    initializer_range: 0.02,
    num_labels: c.numLabels,
    problem_type: c.numLabels === 1 ? "regression" : "single_label_classification",
    id2label: Object.fromEntries(id2label.map((l, i) => [String(i), l])),
    label2id: Object.fromEntries(id2label.map((l, i) => [l, i])),
  };
}
