/**
 * The shipped default model: present, readable, the documented architecture,
 * and adapted with a fresh pooler and classifier.
 */
import assert from "node:assert/strict";
import {
  DEFAULT_MODEL_DIR,
  defaultModelConfigJson,
  loadModel,
} from "../shared/model/default_model.ts";

Deno.test("the default model is the shipped checkpoint: F16, the documented architecture, fresh head", async () => {
  const m = await loadModel(null, { numLabels: 2, seed: 5 });
  assert.equal(m.dir, DEFAULT_MODEL_DIR);
  const arch = defaultModelConfigJson(2);
  assert.equal(m.config.hiddenSize, arch.hidden_size);
  assert.equal(m.config.numLayers, arch.num_hidden_layers);
  assert.equal(m.config.vocabSize, arch.vocab_size);
  assert.ok(m.freshHead, "IMDB's classifier is not in a pre-trained checkpoint");
  assert.ok(m.notes.some((n) => n.includes("classifier head")), m.notes.join("; "));
  assert.ok(m.weights.every(Number.isFinite), "every weight is finite");
  // The header, read independently of the loader: every tensor F16, the MLM head present.
  const bytes = await Deno.readFile(`${DEFAULT_MODEL_DIR}/model.safetensors`);
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header: Record<string, { dtype?: string }> = JSON.parse(
    new TextDecoder().decode(bytes.subarray(8, 8 + n)),
  );
  const tensors = Object.entries(header).filter(([k]) => k !== "__metadata__");
  assert.ok(tensors.every(([, t]) => t.dtype === "F16"), "every tensor is F16");
  assert.ok(tensors.some(([k]) => k === "cls.predictions.bias"), "the MLM head is kept");
  const stored = await Deno.stat(`${DEFAULT_MODEL_DIR}/model.safetensors`);
  assert.ok(stored.size < 15e6, `${stored.size} bytes: the issue's budget is ~15 MB`);
});
