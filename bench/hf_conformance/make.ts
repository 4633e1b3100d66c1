/**
 * Builds the inputs of the Hugging Face conformance check: a random BERT
 * with the bert-base-uncased vocabulary and a random RoBERTa, saved as HF
 * folders by adaptmesh, plus adaptmesh's own token ids and logits for a set
 * of tricky texts. `check.py` (run where `transformers` is installed) loads
 * the same folders with `transformers` and compares.
 *
 *   deno run -A bench/hf_conformance/make.ts OUT_DIR
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { initBackend } from "../../shared/compute/create.ts";
import { saveCheckpoint } from "../../shared/io/checkpoint.ts";
import { parseModelConfig } from "../../shared/model/config.ts";
import { paramLayout } from "../../shared/model/param_layout.ts";
import { predictLogits, weightTensors } from "../../shared/tfjs/model.ts";
import { loadTokenizer } from "../../shared/text/tokenizer.ts";
import { EncodedSet } from "../../shared/data/batching.ts";
import { bertBaseUncasedVocab, vocabToTxt } from "../../shared/text/vocab.ts";
import { Rng } from "../../shared/method/rng.ts";

const out = Deno.args[0] ?? "bench/hf_conformance/out";
await initBackend("tfjs-wasm");

const TEXTS: [string, string?][] = [
  ["Hello, world! This movie was GREAT."],
  ["Café naïve résumé — Ångström's façade"],
  ["unaffable jumped 12,345.67 times!!!", "a pair: with (brackets) & ampersands"],
  ["中文字符 and 日本語 mixed with 𠀀 rare ideographs"],
  ["tab\tnew\nline\u0000null\u200bzero-width\u00adsoft-hyphen"],
  ["a" + "b".repeat(120) + " word after a very long one"],
  ["emoji 😀 and symbols ™ © ½ ∑"],
  ["[SEP] literal specials [CLS] and [MASK] in text", ""],
  ["Don't stop believin' — it's the \"best\" song…", "question? answer."],
  ["long ".repeat(200), "pair ".repeat(50)],
];

function randomWeights(
  total: number,
  layout: ReturnType<typeof paramLayout>,
  seed: number,
): Float32Array {
  const rng = new Rng(seed);
  const w = new Float32Array(total);
  for (const s of layout.specs) {
    const ln = s.name.includes("LayerNorm.weight");
    for (let i = 0; i < s.size; i++) w[s.offset + i] = (ln ? 1 : 0) + 0.1 * rng.normal();
  }
  return w;
}

async function build(kind: "bert" | "roberta") {
  const dir = `${out}/${kind}`;
  await Deno.mkdir(dir, { recursive: true });
  const vocab = bertBaseUncasedVocab();
  const config = parseModelConfig({
    model_type: kind,
    vocab_size: kind === "bert" ? vocab.length : 300,
    hidden_size: 32,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    intermediate_size: 64,
    max_position_embeddings: 514,
    type_vocab_size: kind === "bert" ? 2 : 1,
    pad_token_id: kind === "bert" ? 0 : 1,
    num_labels: 3,
  });
  const layout = paramLayout(config);
  const weights = randomWeights(layout.total, layout, kind === "bert" ? 1 : 2);
  await saveCheckpoint(dir, { config, weights });
  const model = { config, layout, weights: weightTensors(layout, weights) };
  const cases = [];
  if (kind === "bert") {
    await Deno.writeTextFile(`${dir}/vocab.txt`, vocabToTxt(vocab));
    const tok = await loadTokenizer(dir);
    const set = new EncodedSet(
      TEXTS.map(([text, textPair]) => ({ text, textPair, label: 0 })),
      tok,
      128,
    );
    for (let i = 0; i < TEXTS.length; i++) {
      const b = set.batch([i]);
      const len = b.attentionMask.reduce((a, x) => a + x, 0);
      cases.push({
        text: TEXTS[i][0],
        text_pair: TEXTS[i][1],
        input_ids: Array.from(b.inputIds.subarray(0, len)),
        token_type_ids: Array.from(b.tokenTypeIds.subarray(0, len)),
        logits: Array.from(await predictLogits(model, b)),
      });
    }
  } else {
    // RoBERTa: token ids given directly (the architecture is what is checked), with padding.
    const rng = new Rng(9);
    const L = 12;
    for (let i = 0; i < 4; i++) {
      const len = L - 3 * (i % 3);
      const ids = Array.from(
        { length: L },
        (_, k) => k < len ? (k === 0 ? 0 : k === len - 1 ? 2 : 3 + rng.int(290)) : 1,
      );
      const mask = ids.map((_, k) => (k < len ? 1 : 0));
      const b = {
        inputIds: Int32Array.from(ids),
        tokenTypeIds: new Int32Array(L),
        attentionMask: Uint8Array.from(mask),
        size: 1,
        seqLen: L,
      };
      cases.push({
        input_ids: ids,
        attention_mask: mask,
        logits: Array.from(await predictLogits(model, b)),
      });
    }
  }
  tf.dispose(Object.values(model.weights));
  await Deno.writeTextFile(`${dir}/expected.json`, JSON.stringify(cases, null, 1));
}

await build("bert");
await build("roberta");
console.log(`wrote ${out}/bert and ${out}/roberta`);
