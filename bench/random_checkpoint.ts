/**
 * Inputs for benchmarks at the paper's model sizes without any download: a
 * random checkpoint of a named shape (bench/model_shapes.ts) with its
 * tokenizer files, a small labelled task in JSONL, and random weights and
 * micro-batches in memory.
 *
 * @module
 */
import { join } from "node:path";
import { initWeights, saveCheckpoint } from "../shared/io/checkpoint.ts";
import { type ModelConfig, parseModelConfig } from "../shared/model/config.ts";
import { writeRobertaTokenizer } from "../shared/text/roberta_vocab.ts";
import { bertBaseUncasedVocab, vocabToTxt } from "../shared/text/vocab.ts";
import type { LabelledBatch } from "../shared/model/batch.ts";
import type { ParamLayout } from "../shared/model/param_layout.ts";
import { Rng } from "../shared/method/rng.ts";
import { BERT_BASE_CONFIG, ROBERTA_LARGE_CONFIG } from "./model_shapes.ts";

/** The two shapes of the paper, as their config.json says (bench/model_shapes.ts). */
export const SHAPES: Readonly<Record<string, Readonly<Record<string, unknown>>>> = {
  "bert-base": BERT_BASE_CONFIG,
  "roberta-large": ROBERTA_LARGE_CONFIG,
};

/** The model config of a named shape; throws naming the known shapes. */
export function shapeConfig(name: string): ModelConfig {
  const s = SHAPES[name];
  if (!s) throw new Error(`unknown model shape ${name} (known: ${Object.keys(SHAPES).join(", ")})`);
  return parseModelConfig({ ...s });
}

/** Writes a random checkpoint of the shape (seed 13), with its tokenizer files, into `dir`. */
export async function writeShapeCheckpoint(name: string, dir: string): Promise<void> {
  const config = shapeConfig(name);
  await saveCheckpoint(dir, { config, weights: initWeights(config, 13) });
  if (config.modelType === "roberta") await writeRobertaTokenizer(dir);
  else await Deno.writeTextFile(join(dir, "vocab.txt"), vocabToTxt(bertBaseUncasedVocab()));
}

/** Writes 64 short labelled examples as train.jsonl and eval.jsonl into `dir`. */
export async function writeSmallTask(dir: string): Promise<{ train: string; eval: string }> {
  const words = ["the", "movie", "was", "good", "bad", "plot", "actor", "fun", "dull", "great"];
  const rows = Array.from({ length: 64 }, (_, i) => ({
    text: Array.from({ length: 12 }, (_, k) => words[(i * 7 + k * 3) % words.length]).join(" "),
    label: i % 2,
  }));
  const text = rows.map((r) => JSON.stringify(r)).join("\n") + "\n";
  await Deno.writeTextFile(join(dir, "train.jsonl"), text);
  await Deno.writeTextFile(join(dir, "eval.jsonl"), text);
  return { train: join(dir, "train.jsonl"), eval: join(dir, "eval.jsonl") };
}

/** HF-like init: normal(0, 0.02) for matrices and embeddings, 0 biases, LayerNorm 1/0. */
export function randomWeights(layout: ParamLayout, seed: number): Float32Array {
  const rng = new Rng(seed);
  const w = new Float32Array(layout.total);
  for (const s of layout.specs) {
    if (s.name.includes("LayerNorm")) {
      if (s.name.endsWith(".weight")) w.fill(1, s.offset, s.offset + s.size);
    } else if (!s.name.endsWith(".bias")) {
      for (let i = 0; i < s.size; i++) w[s.offset + i] = 0.02 * rng.normal();
    }
  }
  return w;
}

/** Random token ids ([CLS] … [SEP]), about 10% padding (each example drops 0–20% of L). */
export function randomBatch(
  config: ModelConfig,
  B: number,
  L: number,
  seed: number,
): LabelledBatch {
  const rng = new Rng(seed);
  const inputIds = new Int32Array(B * L), tokenTypeIds = new Int32Array(B * L);
  const attentionMask = new Uint8Array(B * L);
  const labels = new Float32Array(B);
  for (let b = 0; b < B; b++) {
    const len = Math.max(3, L - Math.round(rng.next() * 0.2 * L));
    for (let i = 0; i < len; i++) {
      const k = b * L + i;
      inputIds[k] = i === 0 ? 101 : i === len - 1 ? 102 : 1000 + rng.int(config.vocabSize - 1000);
      attentionMask[k] = 1;
    }
    labels[b] = rng.int(config.numLabels);
  }
  return { inputIds, tokenTypeIds, attentionMask, labels, size: B, seqLen: L };
}
