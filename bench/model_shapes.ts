/**
 * The config.json of the paper's model shapes, for benchmarks that need a
 * model at their size (random weights): parse with shared/model/config.ts.
 *
 * @module
 */
import { ROBERTA_VOCAB_SIZE } from "../shared/text/roberta_vocab.ts";

/** bert-base-uncased's config.json (110 M parameters). */
export const BERT_BASE_CONFIG: Readonly<Record<string, unknown>> = {
  model_type: "bert",
  vocab_size: 30522,
  hidden_size: 768,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  intermediate_size: 3072,
  max_position_embeddings: 512,
  type_vocab_size: 2,
  num_labels: 2,
};

/** roberta-large's config.json (355 M parameters). */
export const ROBERTA_LARGE_CONFIG: Readonly<Record<string, unknown>> = {
  model_type: "roberta",
  vocab_size: ROBERTA_VOCAB_SIZE,
  hidden_size: 1024,
  num_hidden_layers: 24,
  num_attention_heads: 16,
  intermediate_size: 4096,
  max_position_embeddings: 514,
  type_vocab_size: 1,
  pad_token_id: 1,
  layer_norm_eps: 1e-5,
  num_labels: 2,
};
