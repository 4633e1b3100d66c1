import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs-core";
import { initBackend } from "../shared/compute/create.ts";
import { predictLogits, weightTensors } from "../shared/tfjs/model.ts";
import { IGNORE_INDEX, lossItems, positionIds } from "../shared/model/targets.ts";
import { tiny, tinyConfig } from "./support/tiny.ts";
import { maxSequenceLength } from "../shared/model/config.ts";
import { referenceLogits } from "./support/reference_bert.ts";
import { testBackends } from "./support/backends.ts";

function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  rel: number,
  what: string,
) {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let scale = 0;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]));
  for (let i = 0; i < expected.length; i++) {
    assert.ok(
      Math.abs(actual[i] - expected[i]) <= rel * scale + 1e-7,
      `${what}[${i}]: ${actual[i]} vs ${expected[i]}`,
    );
  }
}

const variants: [string, Record<string, unknown>][] = [
  ["bert classification", {}],
  ["bert regression", { num_labels: 1 }],
  ["roberta", { model_type: "roberta", pad_token_id: 1 }],
];

for (const backend of await testBackends()) {
  for (const [name, over] of variants) {
    Deno.test(`forward matches the float64 reference: ${name} (${backend})`, async () => {
      await initBackend(backend);
      const t = tiny(over);
      const weights = weightTensors(t.layout, t.weights);
      const logits = await predictLogits({ config: t.config, layout: t.layout, weights }, t.batch);
      tf.dispose(Object.values(weights));
      assertClose(logits, referenceLogits(t.config, t.layout, t.weights, t.batch), 1e-4, "logits");
    });
  }
}

Deno.test("padding does not change the logits of the real tokens", async () => {
  await initBackend("tfjs-cpu");
  const t = tiny({}, 2, 5);
  const longer = { ...t.batch, seqLen: 8 };
  const pad = (a: Int32Array | Uint8Array, fill: number) => {
    const out = new (a.constructor as Int32ArrayConstructor)(2 * 8).fill(fill);
    for (let b = 0; b < 2; b++) for (let i = 0; i < 5; i++) out[b * 8 + i] = a[b * 5 + i];
    return out;
  };
  const padded = {
    ...longer,
    inputIds: pad(t.batch.inputIds, 0),
    tokenTypeIds: pad(t.batch.tokenTypeIds, 0),
    attentionMask: Uint8Array.from(pad(t.batch.attentionMask, 0)),
  };
  const weights = weightTensors(t.layout, t.weights);
  const model = { config: t.config, layout: t.layout, weights };
  const a = await predictLogits(model, t.batch), b = await predictLogits(model, padded);
  tf.dispose(Object.values(weights));
  assertClose(b, a, 1e-5, "padded logits");
});

Deno.test("RoBERTa position ids start after the padding id and skip padding", () => {
  const t = tiny({ model_type: "roberta", pad_token_id: 1 }, 1, 5);
  const batch = { ...t.batch, attentionMask: Uint8Array.from([1, 1, 1, 0, 0]) };
  assert.deepEqual([...positionIds(t.config, batch)], [2, 3, 4, 1, 1]);
  const bert = tiny({}, 1, 5);
  assert.deepEqual([...positionIds(bert.config, batch)], [0, 1, 2, 3, 4]);
});

Deno.test("lossItems: examples for one label per example, predicted tokens for token labels", () => {
  const batch = {
    inputIds: new Int32Array(6),
    tokenTypeIds: new Int32Array(6),
    attentionMask: new Uint8Array(6),
    size: 2,
    seqLen: 3,
  };
  assert.equal(lossItems(Float32Array.from([0, 1]), batch), 2);
  const I = IGNORE_INDEX;
  assert.equal(lossItems(Float32Array.from([I, 7, I, 9, 4, I]), batch), 3);
  assert.equal(lossItems(Float32Array.from([I, I, I, I, I, 5]), batch), 1);
  // One token per example is ambiguous; it is read as one label per example.
  const single = {
    ...batch,
    seqLen: 1,
    inputIds: new Int32Array(2),
    tokenTypeIds: new Int32Array(2),
    attentionMask: new Uint8Array(2),
  };
  assert.equal(lossItems(Float32Array.from([I, 3]), single), 2);
});

Deno.test("maxSequenceLength: the longest sequence whose position ids stay inside the table", () => {
  for (const [type, pad, positions] of [["bert", 0, 12], ["roberta", 1, 14]] as const) {
    const config = tinyConfig({
      model_type: type,
      pad_token_id: pad,
      max_position_embeddings: positions,
    });
    const L = maxSequenceLength(config);
    const batch = {
      inputIds: new Int32Array(L).fill(5),
      tokenTypeIds: new Int32Array(L),
      attentionMask: new Uint8Array(L).fill(1),
      size: 1,
      seqLen: L,
    };
    // The last real token takes the last row of the position table, and no further.
    assert.equal(Math.max(...positionIds(config, batch)), positions - 1, type);
  }
});
