/**
 * On-disk fixtures for mesh tests: a tiny BERT checkpoint folder (HF
 * layout, with vocab.txt) and a tiny sentiment task as JSONL files.
 */
import { initWeights, saveCheckpoint } from "../../shared/io/checkpoint.ts";
import { parseModelConfig } from "../../shared/model/config.ts";
import { Rng } from "../../shared/method/rng.ts";

const WORDS = [
  "the",
  "a",
  "movie",
  "film",
  "plot",
  "actor",
  "was",
  "is",
  "very",
  "not",
  "really",
  "story",
  "good",
  "great",
  "fun",
  "lovely",
  "bad",
  "awful",
  "boring",
  "dull",
];
const POSITIVE = ["good", "great", "fun", "lovely"];
const NEGATIVE = ["bad", "awful", "boring", "dull"];
const FILLER = WORDS.slice(0, 12);

/** The fixture vocabulary: specials, then the words. */
export const TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ...WORDS];

/** Writes a tiny BERT checkpoint (2 labels) with vocab.txt into a new temp folder. */
export async function tinyModelDir(seed = 3, over: Record<string, unknown> = {}): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "adaptmesh-model-" });
  const config = parseModelConfig({
    model_type: "bert",
    vocab_size: TINY_VOCAB.length,
    hidden_size: 16,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    intermediate_size: 32,
    max_position_embeddings: 64,
    type_vocab_size: 2,
    hidden_dropout_prob: 0.1,
    attention_probs_dropout_prob: 0.1,
    num_labels: 2,
    ...over,
  });
  await Deno.writeTextFile(`${dir}/vocab.txt`, TINY_VOCAB.join("\n") + "\n");
  await saveCheckpoint(dir, { config, weights: initWeights(config, seed) });
  return dir;
}

/** Sentences whose label is the sentiment of the one sentiment word they contain. */
export function tinyExamples(n: number, seed: number): { text: string; label: number }[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const label = rng.int(2);
    const words = Array.from({ length: 3 + rng.int(6) }, () => FILLER[rng.int(FILLER.length)]);
    const pool = label ? POSITIVE : NEGATIVE;
    words.splice(rng.int(words.length + 1), 0, pool[rng.int(pool.length)]);
    return { text: words.join(" "), label };
  });
}

/** Writes train.jsonl and eval.jsonl into a new temp folder. */
export async function tinyTaskDir(
  train = 48,
  evalN = 16,
): Promise<{ dir: string; train: string; eval: string }> {
  const dir = await Deno.makeTempDir({ prefix: "adaptmesh-task-" });
  const write = (path: string, rows: unknown[]) =>
    Deno.writeTextFile(path, rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
  await write(`${dir}/train.jsonl`, tinyExamples(train, 1));
  await write(`${dir}/eval.jsonl`, tinyExamples(evalN, 2));
  return { dir, train: `${dir}/train.jsonl`, eval: `${dir}/eval.jsonl` };
}

/** Training flags for a short deterministic run on the fixtures; `extra` flags override. */
export function tinyRunArgs(
  model: string,
  task: { train: string; eval: string },
  extra: string[] = [],
): string[] {
  const base: Record<string, string | null> = {
    model,
    train: task.train,
    eval: task.eval,
    steps: "4",
    "global-batch": "12",
    "micro-batch": "4",
    "max-len": "16",
    "adv-start": "1",
    lr: "0.01",
    warmup: "1",
    port: "0",
    token: "test-token",
    deterministic: null,
  };
  const overridden = new Set(
    extra.filter((a) => a.startsWith("--")).map((a) => a.slice(2).split("=")[0]),
  );
  const args = Object.entries(base).filter(([k]) => !overridden.has(k))
    .flatMap(([k, v]) => v === null ? [`--${k}`] : [`--${k}`, v]);
  return [...args, ...extra];
}

/** A fresh fixture model and a 16/8-example task with a short run's flags (3 steps of 8); `extra` overrides. */
export async function quickRunArgs(extra: string[] = []): Promise<string[]> {
  const model = await tinyModelDir(1);
  const task = await tinyTaskDir(16, 8);
  const defaults: Record<string, string> = {
    steps: "3",
    "global-batch": "8",
    "micro-batch": "4",
    token: "t",
    dropout: "0",
  };
  const given = new Set(
    extra.filter((a) => a.startsWith("--")).map((a) => a.slice(2).split("=")[0]),
  );
  const base = Object.entries(defaults).filter(([k]) => !given.has(k)).flatMap((
    [k, v],
  ) => [`--${k}`, v]);
  return tinyRunArgs(model, task, [...base, ...extra]);
}
