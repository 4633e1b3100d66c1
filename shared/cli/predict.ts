/**
 * `deno task predict --model DIR --input FILE.jsonl [--backend B] [--max-len N]`:
 * prints one `{"logits": [...], "label": ...}` line per input line
 * `{"text": ..., "text_pair"?: ...}`. `label` is the predicted class name
 * (id2label) or, for regression, the score.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { parseFlagsOrExit } from "./flags.ts";
import { readJsonl } from "../data/jsonl.ts";
import { loadTokenizer } from "../tokenizer.ts";
import { loadCheckpoint } from "../checkpoint.ts";
import { type BackendName, disposeBackend, initBackend } from "../backend.ts";
import { predictLogits, weightTensors } from "../model.ts";
import { EncodedSet } from "../batching.ts";
import { predictionsFromLogits } from "../evaluate.ts";

const USAGE =
  "Usage: deno task predict --model DIR --input FILE.jsonl [--backend cpu|wasm|webgpu] [--max-len N]";

if (import.meta.main) {
  const flags = parseFlagsOrExit(
    Deno.args,
    {
      model: { type: "string", required: true, help: "Hugging Face checkpoint folder" },
      input: { type: "string", required: true, help: "JSONL lines {text, text_pair?}" },
      backend: { type: "string", default: "wasm", help: "cpu | wasm | webgpu" },
      "max-len": { type: "int", default: 512, help: "maximum tokens per example" },
      "batch-size": { type: "int", default: 32, help: "examples per forward pass" },
    } as const,
    USAGE,
  );
  if (!["cpu", "wasm", "webgpu"].includes(flags.backend)) {
    console.error(`error: --backend must be cpu, wasm or webgpu, got "${flags.backend}"`);
    Deno.exit(2);
  }
  try {
    await initBackend(flags.backend as BackendName);
    const ck = await loadCheckpoint(flags.model);
    for (const note of ck.notes) console.error(`note: ${note}`);
    const tokenizer = await loadTokenizer(flags.model);
    const records = await readJsonl(flags.input);
    const examples = records.map((r) => ({ text: r.text, textPair: r.textPair, label: 0 }));
    const set = new EncodedSet(
      examples,
      tokenizer,
      Math.min(flags["max-len"], ck.config.maxPositions),
    );
    const weights = weightTensors(ck.layout, ck.weights);
    const model = { config: ck.config, layout: ck.layout, weights };
    const N = ck.config.numLabels, bs = flags["batch-size"];
    for (let i = 0; i < examples.length; i += bs) {
      const idx = Array.from({ length: Math.min(bs, examples.length - i) }, (_, k) => i + k);
      const logits = await predictLogits(model, set.batch(idx));
      const preds = predictionsFromLogits(logits, N);
      const lines = idx.map((_, k) => {
        const row = Array.from(logits.subarray(k * N, (k + 1) * N));
        const label = N === 1 ? preds[k] : (ck.config.id2label?.[preds[k]] ?? preds[k]);
        return JSON.stringify({ logits: row, label });
      });
      console.log(lines.join("\n"));
    }
    tf.dispose(Object.values(weights));
    disposeBackend();
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
