/**
 * A reduced RoBERTa checkpoint folder with RoBERTa's real vocabulary and
 * tokenizer files: roberta-large's embedding shape conventions (50,265 ids,
 * 514 positions, one token type, pad id 1) at a width and depth that keep a
 * forward pass fast. Written sharded, as a large checkpoint would be.
 */
import { initWeights, saveCheckpoint } from "../../shared/io/checkpoint.ts";
import { type ModelConfig, parseModelConfig } from "../../shared/model/config.ts";
import { ROBERTA_VOCAB_SIZE, writeRobertaTokenizer } from "../../shared/text/roberta_vocab.ts";
import type { DType } from "../../shared/io/safetensors.ts";

/** Options of {@link tinyRobertaDir}. */
export interface TinyRobertaOptions {
  hidden?: number;
  layers?: number;
  seed?: number;
  dtype?: DType;
  /** Shard limit of the saved weights (default 1 MB: the word embeddings get a shard of their own). */
  maxShardBytes?: number;
}

/** The config of the reduced RoBERTa. */
export function tinyRobertaConfig(opts: TinyRobertaOptions = {}): ModelConfig {
  const hidden = opts.hidden ?? 16;
  return parseModelConfig({
    model_type: "roberta",
    vocab_size: ROBERTA_VOCAB_SIZE,
    hidden_size: hidden,
    num_hidden_layers: opts.layers ?? 2,
    num_attention_heads: 2,
    intermediate_size: 2 * hidden,
    max_position_embeddings: 514,
    type_vocab_size: 1,
    pad_token_id: 1,
    layer_norm_eps: 1e-5,
    num_labels: 2,
  });
}

/** Writes the reduced RoBERTa (random weights, seeded) with its tokenizer files into a new temp folder. */
export async function tinyRobertaDir(opts: TinyRobertaOptions = {}): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "adaptmesh-roberta-" });
  const config = tinyRobertaConfig(opts);
  await saveCheckpoint(dir, { config, weights: initWeights(config, opts.seed ?? 7) }, {
    dtype: opts.dtype ?? "F32",
    maxShardBytes: opts.maxShardBytes ?? 1_000_000,
  });
  await writeRobertaTokenizer(dir);
  return dir;
}
