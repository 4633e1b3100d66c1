/**
 * Inputs for benchmarks at the paper's model sizes without any download: a
 * random checkpoint of a named shape (bench/model_shapes.ts) with its
 * tokenizer files, and a small labelled task in JSONL.
 *
 * @module
 */
import { join } from "node:path";
import { initWeights, saveCheckpoint } from "../shared/io/checkpoint.ts";
import { type ModelConfig, parseModelConfig } from "../shared/model/config.ts";
import { writeRobertaTokenizer } from "../shared/text/roberta_vocab.ts";
import { bertBaseUncasedVocab, vocabToTxt } from "../shared/text/vocab.ts";
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
