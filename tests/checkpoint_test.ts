import assert from "node:assert/strict";
import { join } from "node:path";
import {
  DEFAULT_MAX_SHARD_BYTES,
  initWeights,
  loadCheckpoint,
  parseByteSize,
  planShards,
  saveCheckpoint,
  shardFileName,
  shardIndexJson,
} from "../shared/io/checkpoint.ts";
import { type ModelConfig, parseModelConfig } from "../shared/model/config.ts";
import { isHeadParam, paramLayout, view } from "../shared/model/param_layout.ts";
import {
  bf16BitsToF32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
} from "../shared/wire/half_float.ts";
import { type HostTensor, readSafetensors } from "../shared/io/safetensors.ts";
import { writeSafetensors } from "./support/safetensors.ts";
import { TINY_SHAPE } from "./support/tiny.ts";
import { withTempDir } from "./support/temp_dir.ts";

const TINY = { model_type: "bert", vocab_size: 50, ...TINY_SHAPE, num_labels: 3 };
const bert = (over: Record<string, unknown> = {}): ModelConfig =>
  parseModelConfig({ ...TINY, ...over });
const roberta = (over: Record<string, unknown> = {}): ModelConfig =>
  parseModelConfig({ ...TINY, model_type: "roberta", type_vocab_size: 1, ...over });

/** Weights with every value distinct and non-trivial (not just the init pattern). */
function randomWeights(config: ModelConfig, seed: number): Float32Array {
  const w = initWeights(config, seed);
  for (let i = 0; i < w.length; i++) w[i] += Math.sin(i * 1.618 + seed) * 0.5;
  return w;
}

const withDir = (fn: (dir: string) => Promise<void>) => withTempDir("ckpt_test_", fn);

/** The tensors of a checkpoint as a name → tensor map (by HF name). */
function tensorsOf(config: ModelConfig, weights: Float32Array): Map<string, HostTensor> {
  const layout = paramLayout(config);
  return new Map(layout.specs.map((s) => [s.name, {
    shape: [...s.shape],
    data: view(layout, weights, s.name).slice(),
  }]));
}

/** `tensors` under the names `rename` gives them; null leaves a tensor out. */
function renamed(
  tensors: Map<string, HostTensor>,
  rename: (name: string) => string | null,
): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const [name, t] of tensors) {
    const to = rename(name);
    if (to !== null) out.set(to, t);
  }
  return out;
}

/** As saved from a bare BertModel: no head, no pooler, no "bert." prefix. */
const bareEncoderName = (name: string): string | null =>
  isHeadParam(name) || name.startsWith("bert.pooler.") ? null : name.slice("bert.".length);

/** The LayerNorm names of old checkpoints: gamma and beta. */
const oldLayerNormName = (name: string): string =>
  name.replace(/LayerNorm\.weight$/, "LayerNorm.gamma").replace(
    /LayerNorm\.bias$/,
    "LayerNorm.beta",
  );

/** The tensors in two halves (in layout order), for two shard files. */
function halves(tensors: Map<string, HostTensor>): [string, HostTensor][][] {
  const all = [...tensors];
  const half = Math.floor(all.length / 2);
  return [all.slice(0, half), all.slice(half)];
}

/** Writes a checkpoint folder by hand from a config object and a tensor map. */
async function writeFolder(
  dir: string,
  config: Record<string, unknown>,
  tensors: Map<string, HostTensor>,
): Promise<void> {
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(config));
  await Deno.writeFile(join(dir, "model.safetensors"), writeSafetensors(tensors, "F32"));
}

/** Appends an I64 tensor (as real HF files store position_ids) to a safetensors file. */
function withI64(file: Uint8Array, name: string, count: number): Uint8Array {
  const n = Number(new DataView(file.buffer, file.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + n)));
  const data = file.subarray(8 + n);
  header[name] = {
    dtype: "I64",
    shape: [1, count],
    data_offsets: [data.length, data.length + 8 * count],
  };
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length + 8 * count);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

const bits = (x: Float32Array): Uint32Array => new Uint32Array(x.buffer, x.byteOffset, x.length);

Deno.test("save + load F32 is bit-identical and the file holds exactly the HF names", async () => {
  await withDir(async (dir) => {
    const config = bert({ id2label: { 0: "neg", 1: "neu", 2: "pos" } });
    const weights = randomWeights(config, 3);
    weights[0] = -0;
    await saveCheckpoint(dir, { config, weights });

    const ck = await loadCheckpoint(dir);
    assert.deepEqual(bits(ck.weights), bits(weights));
    assert.deepEqual(ck.notes, []);
    assert.equal(ck.extra.size, 0);
    assert.equal(ck.config.numLabels, 3);
    assert.deepEqual(ck.config.id2label, ["neg", "neu", "pos"]);

    const file = readSafetensors(await Deno.readFile(join(dir, "model.safetensors")));
    assert.deepEqual(file.metadata, { format: "pt" });
    const names = [...file.tensors.keys()].sort();
    const expected = [
      "bert.embeddings.word_embeddings.weight",
      "bert.embeddings.position_embeddings.weight",
      "bert.embeddings.token_type_embeddings.weight",
      "bert.embeddings.LayerNorm.weight",
      "bert.embeddings.LayerNorm.bias",
    ];
    for (const l of [0, 1]) {
      const L = `bert.encoder.layer.${l}`;
      for (const m of ["query", "key", "value"]) {
        expected.push(`${L}.attention.self.${m}.weight`, `${L}.attention.self.${m}.bias`);
      }
      for (const m of ["attention.output.dense", "intermediate.dense", "output.dense"]) {
        expected.push(`${L}.${m}.weight`, `${L}.${m}.bias`);
      }
      for (const m of ["attention.output.LayerNorm", "output.LayerNorm"]) {
        expected.push(`${L}.${m}.weight`, `${L}.${m}.bias`);
      }
    }
    expected.push(
      "bert.pooler.dense.weight",
      "bert.pooler.dense.bias",
      "classifier.weight",
      "classifier.bias",
    );
    assert.deepEqual(names, expected.sort());
    assert.deepEqual(file.tensors.get("classifier.weight")!.shape, [3, 8]);
    assert.deepEqual(file.tensors.get("bert.encoder.layer.1.intermediate.dense.weight")!.shape, [
      16,
      8,
    ]);
    assert.deepEqual(file.tensors.get("bert.encoder.layer.1.output.dense.weight")!.shape, [8, 16]);

    const hf = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
    assert.equal(hf.model_type, "bert");
    assert.equal(hf.num_labels, 3);
    assert.deepEqual(hf.architectures, ["BertForSequenceClassification"]);
    assert.equal(hf.torch_dtype, "float32");
    assert.deepEqual(hf.label2id, { neg: 0, neu: 1, pos: 2 });
    // No temp files left behind.
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "config.json",
      "model.safetensors",
    ]);
  });
});

Deno.test("save F16 + load stays within half precision and equals f16 rounding", async () => {
  await withDir(async (dir) => {
    const config = bert();
    const weights = randomWeights(config, 4);
    await saveCheckpoint(dir, { config, weights }, { dtype: "F16" });
    const raw = await Deno.readFile(join(dir, "model.safetensors"));
    const header = new TextDecoder().decode(raw.subarray(8, 8 + 200));
    assert.match(header, /"dtype":"F16"/);
    const ck = await loadCheckpoint(dir);
    assert.deepEqual(ck.weights, f16BitsToF32(f32ToF16Bits(weights)));
    for (let i = 0; i < weights.length; i++) {
      assert.ok(Math.abs(ck.weights[i] - weights[i]) <= Math.abs(weights[i]) * 2 ** -11 + 2 ** -25);
    }
    const hf = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
    assert.equal(hf.torch_dtype, "float16");
  });
});

Deno.test("encoder-only checkpoint (bare names, no pooler/head) gets a seeded head with notes", async () => {
  await withDir(async (dir) => {
    const source = bert();
    const weights = randomWeights(source, 5);
    const bare = renamed(tensorsOf(source, weights), bareEncoderName);
    const { num_labels: _, ...noLabels } = TINY;
    await writeFolder(dir, noLabels, bare);
    const file = join(dir, "model.safetensors");
    await Deno.writeFile(file, withI64(await Deno.readFile(file), "embeddings.position_ids", 32));

    const a = await loadCheckpoint(dir, { numLabels: 2, seed: 11 });
    assert.equal(a.config.numLabels, 2);
    assert.equal(a.extra.size, 0, "position_ids are dropped silently");
    assert.equal(a.notes.length, 2);
    assert.match(a.notes.join("\n"), /no classifier head in checkpoint.*2 labels, seed 11/);
    assert.match(a.notes.join("\n"), /no pooler/);
    assert.equal(a.freshPooler, true, "a LoRA run trains this pooler");
    for (const s of a.layout.specs) {
      if (isHeadParam(s.name) || s.name.startsWith("bert.pooler.")) continue;
      assert.deepEqual(
        view(a.layout, a.weights, s.name),
        view(paramLayout(source), weights, s.name),
      );
    }
    // The new head is HF-initialised and a pure function of the seed.
    const w = view(a.layout, a.weights, "classifier.weight");
    assert.equal(w.length, 16);
    assert.ok(w.some((v) => v !== 0) && w.every((v) => Math.abs(v) < 0.2));
    assert.ok(view(a.layout, a.weights, "classifier.bias").every((v) => v === 0));
    assert.ok(view(a.layout, a.weights, "bert.pooler.dense.bias").every((v) => v === 0));
    const fresh = initWeights(a.config, 11);
    assert.deepEqual(w, view(a.layout, fresh, "classifier.weight"));
    const b = await loadCheckpoint(dir, { numLabels: 2, seed: 11 });
    assert.deepEqual(b.weights, a.weights);
    const c = await loadCheckpoint(dir, { numLabels: 2, seed: 12 });
    assert.notDeepEqual(view(c.layout, c.weights, "classifier.weight"), w);
  });
});

Deno.test("a head with another label count is replaced, with a note", async () => {
  await withDir(async (dir) => {
    const config = bert();
    const weights = randomWeights(config, 6);
    await saveCheckpoint(dir, { config, weights });
    const ck = await loadCheckpoint(dir, { numLabels: 2, seed: 1 });
    assert.equal(ck.config.numLabels, 2);
    assert.equal(ck.notes.length, 1);
    assert.equal(ck.freshPooler, false);
    assert.match(ck.notes[0], /3 labels but 2 were requested.*seed 1/);
    assert.deepEqual(view(ck.layout, ck.weights, "classifier.weight").length, 16);
    assert.deepEqual(
      view(ck.layout, ck.weights, "bert.pooler.dense.weight"),
      view(paramLayout(config), weights, "bert.pooler.dense.weight"),
    );
    // Label names count as the label count; same count keeps the trained head.
    const named = await loadCheckpoint(dir, { labelNames: ["x", "y", "z"] });
    assert.deepEqual(named.notes, []);
    assert.deepEqual(named.config.id2label, ["x", "y", "z"]);
    assert.deepEqual(bits(named.weights), bits(weights));
    await assert.rejects(
      () => loadCheckpoint(dir, { numLabels: 2, labelNames: ["a", "b", "c"] }),
      /numLabels 2 disagrees with 3 label names/,
    );
  });
});

Deno.test("config.json num_labels that disagrees with the stored head is an error", async () => {
  await withDir(async (dir) => {
    const config = bert();
    await writeFolder(dir, { ...TINY, num_labels: 2 }, tensorsOf(config, initWeights(config, 1)));
    await assert.rejects(
      () => loadCheckpoint(dir),
      /num_labels 2 but classifier.weight has 3 rows/,
    );
    const ok = await loadCheckpoint(dir, { numLabels: 3 });
    assert.deepEqual(ok.notes, []);
  });
});

Deno.test("old LayerNorm.gamma/beta names load as weight/bias", async () => {
  await withDir(async (dir) => {
    const config = bert();
    const weights = randomWeights(config, 7);
    const old = renamed(tensorsOf(config, weights), oldLayerNormName);
    assert.ok(old.has("bert.encoder.layer.0.output.LayerNorm.gamma"));
    await writeFolder(dir, TINY, old);
    const ck = await loadCheckpoint(dir);
    assert.deepEqual(bits(ck.weights), bits(weights));
    assert.deepEqual(ck.notes, []);
  });
});

/** Loading the tiny BERT's tensors after `edit` fails with `error`. */
async function rejectsEdited(edit: (t: Map<string, HostTensor>) => void, error: RegExp) {
  await withDir(async (dir) => {
    const config = bert();
    const tensors = tensorsOf(config, initWeights(config, 1));
    edit(tensors);
    await writeFolder(dir, TINY, tensors);
    await assert.rejects(() => loadCheckpoint(dir), error);
  });
}

Deno.test("a missing encoder tensor and a shape mismatch are errors naming the tensor", async () => {
  await rejectsEdited(
    (t) => t.delete("bert.encoder.layer.1.output.dense.weight"),
    /missing tensor bert\.encoder\.layer\.1\.output\.dense\.weight \(expected shape \[8, 16\]\)/,
  );
  await rejectsEdited(
    (t) =>
      t.set("bert.embeddings.word_embeddings.weight", {
        shape: [49, 8],
        data: new Float32Array(49 * 8),
      }),
    /bert\.embeddings\.word_embeddings\.weight has shape \[49, 8\], expected \[50, 8\]/,
  );
  await rejectsEdited(
    (t) => t.delete("classifier.bias"),
    /incomplete classifier head.*lacks classifier\.bias/,
  );
});

Deno.test("tensors outside the layout are kept in extra and saved back", async () => {
  await withDir(async (dir) => {
    const config = bert();
    const weights = randomWeights(config, 8);
    const extra = new Map<string, HostTensor>([
      ["cls.predictions.bias", { shape: [50], data: new Float32Array(50).fill(0.25) }],
      ["cls.predictions.transform.LayerNorm.gamma", {
        shape: [8],
        data: new Float32Array(8).fill(2),
      }],
    ]);
    await saveCheckpoint(dir, { config, weights, extra });
    const ck = await loadCheckpoint(dir);
    assert.deepEqual([...ck.extra.keys()].sort(), [
      "cls.predictions.bias",
      "cls.predictions.transform.LayerNorm.weight",
    ]);
    assert.deepEqual([...ck.extra.get("cls.predictions.bias")!.data], new Array(50).fill(0.25));
    assert.deepEqual(bits(ck.weights), bits(weights));
    await assert.rejects(
      () =>
        saveCheckpoint(dir, {
          config,
          weights,
          extra: new Map([["classifier.bias", { shape: [3], data: new Float32Array(3) }]]),
        }),
      /also a model parameter/,
    );
  });
});

Deno.test("RoBERTa checkpoints use classifier.dense/out_proj and no pooler", async () => {
  await withDir(async (dir) => {
    const config = roberta();
    const weights = randomWeights(config, 9);
    await saveCheckpoint(dir, { config, weights });
    const file = readSafetensors(await Deno.readFile(join(dir, "model.safetensors")));
    const names = [...file.tensors.keys()];
    for (
      const n of [
        "classifier.dense.weight",
        "classifier.dense.bias",
        "classifier.out_proj.weight",
        "classifier.out_proj.bias",
      ]
    ) {
      assert.ok(file.tensors.has(n), n);
    }
    assert.deepEqual(file.tensors.get("classifier.out_proj.weight")!.shape, [3, 8]);
    assert.ok(names.every((n) => n.startsWith("roberta.") || n.startsWith("classifier.")));
    assert.ok(!names.some((n) => n.includes("pooler")));
    assert.ok(!names.includes("classifier.weight"));
    const ck = await loadCheckpoint(dir);
    assert.equal(ck.config.modelType, "roberta");
    assert.deepEqual(bits(ck.weights), bits(weights));
    const hf = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
    assert.deepEqual(hf.architectures, ["RobertaForSequenceClassification"]);
  });
});

Deno.test("a RoBERTa encoder without a head gets the whole dense/out_proj head initialised", async () => {
  await withDir(async (dir) => {
    const config = roberta();
    const tensors = new Map(
      [...tensorsOf(config, randomWeights(config, 2))].filter(([n]) => !isHeadParam(n)),
    );
    tensors.set("roberta.pooler.dense.bias", { shape: [8], data: new Float32Array(8) });
    await writeFolder(dir, { ...TINY, model_type: "roberta", type_vocab_size: 1 }, tensors);
    const ck = await loadCheckpoint(dir, { seed: 4 });
    assert.equal(ck.notes.length, 1, "RoBERTa has no pooler to note");
    assert.match(ck.notes[0], /no classifier head.*3 labels, seed 4/);
    assert.deepEqual([...ck.extra.keys()], ["roberta.pooler.dense.bias"]);
    const fresh = initWeights(ck.config, 4);
    for (const n of ["classifier.dense.weight", "classifier.out_proj.weight"]) {
      assert.deepEqual(view(ck.layout, ck.weights, n), view(ck.layout, fresh, n));
    }
  });
});

Deno.test("only pytorch_model.bin, or no config.json, gives a helpful error", async () => {
  await withDir(async (dir) => {
    await assert.rejects(() => loadCheckpoint(dir), /no config\.json/);
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(TINY));
    await assert.rejects(() => loadCheckpoint(dir), /no model\.safetensors/);
    await Deno.writeFile(join(dir, "pytorch_model.bin"), new Uint8Array(16));
    await assert.rejects(
      () => loadCheckpoint(dir),
      /pytorch_model\.bin.*not supported[\s\S]*save_file/,
    );
    await Deno.writeFile(join(dir, "model.safetensors"), new Uint8Array(4));
    await assert.rejects(
      () => loadCheckpoint(dir),
      /model\.safetensors: safetensors: file is 4 bytes/,
    );
  });
});

Deno.test("sharded checkpoints (model.safetensors.index.json) are merged", async () => {
  await withDir(async (dir) => {
    const config = bert();
    const weights = randomWeights(config, 10);
    const [first, second] = halves(tensorsOf(config, weights));
    const shards: [string, [string, HostTensor][]][] = [
      ["model-00001-of-00002.safetensors", first],
      ["model-00002-of-00002.safetensors", second],
    ];
    const weightMap: Record<string, string> = {};
    for (const [file, list] of shards) {
      await Deno.writeFile(join(dir, file), writeSafetensors(list, "F32"));
      for (const [n] of list) weightMap[n] = file;
    }
    await Deno.writeTextFile(
      join(dir, "model.safetensors.index.json"),
      JSON.stringify({ metadata: {}, weight_map: weightMap }),
    );
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(TINY));
    const ck = await loadCheckpoint(dir);
    assert.deepEqual(bits(ck.weights), bits(weights));
  });
});

Deno.test("copyTokenizerFrom copies the tokenizer files that exist, and fails early when none do", async () => {
  await withDir(async (root) => {
    const src = join(root, "src"), out = join(root, "out"), empty = join(root, "empty");
    await Deno.mkdir(src);
    await Deno.mkdir(empty);
    await Deno.writeTextFile(join(src, "vocab.txt"), "[PAD]\n[UNK]\n");
    await Deno.writeTextFile(join(src, "tokenizer.json"), '{"version":"1.0"}');
    await Deno.writeTextFile(join(src, "unrelated.txt"), "x");
    const config = bert();
    const weights = initWeights(config, 1);
    await saveCheckpoint(out, { config, weights }, { copyTokenizerFrom: src });
    assert.deepEqual([...Deno.readDirSync(out)].map((e) => e.name).sort(), [
      "config.json",
      "model.safetensors",
      "tokenizer.json",
      "vocab.txt",
    ]);
    assert.equal(await Deno.readTextFile(join(out, "vocab.txt")), "[PAD]\n[UNK]\n");
    const other = join(root, "other");
    await assert.rejects(
      () => saveCheckpoint(other, { config, weights }, { copyTokenizerFrom: empty }),
      /no tokenizer files/,
    );
    assert.equal(await Deno.stat(other).then(() => true, () => false), false, "nothing written");
    // Saving into the tokenizer's own folder keeps its files intact.
    await saveCheckpoint(src, { config, weights }, { copyTokenizerFrom: src });
    assert.equal(await Deno.readTextFile(join(src, "vocab.txt")), "[PAD]\n[UNK]\n");
  });
});

Deno.test("initWeights follows the HF initialiser", () => {
  const config = bert({
    vocab_size: 4000,
    hidden_size: 64,
    num_attention_heads: 4,
    intermediate_size: 32,
    num_hidden_layers: 1,
  });
  const layout = paramLayout(config);
  const w = initWeights(config, 42);
  const emb = view(layout, w, "bert.embeddings.word_embeddings.weight");
  let sum = 0, sq = 0;
  for (const v of emb) {
    sum += v;
    sq += v * v;
  }
  const n = emb.length - 64; // padding row excluded
  const mean = sum / n, std = Math.sqrt(sq / n - mean * mean);
  assert.ok(Math.abs(std - 0.02) < 0.0005, `std ${std}`);
  assert.ok(Math.abs(mean) < 0.0005, `mean ${mean}`);
  assert.ok(emb.subarray(0, 64).every((v) => v === 0), "padding row (pad_token_id 0) is zero");
  assert.ok(emb.subarray(64, 128).some((v) => v !== 0));
  for (const s of layout.specs) {
    const t = view(layout, w, s.name);
    if (s.name.includes("LayerNorm") && s.name.endsWith(".weight")) {
      assert.ok(t.every((v) => v === 1), s.name);
    } else if (s.name.endsWith(".bias")) assert.ok(t.every((v) => v === 0), s.name);
    else assert.ok(t.some((v) => v !== 0) && t.every((v) => Math.abs(v) < 0.2), s.name);
  }
  assert.deepEqual(initWeights(config, 42), w);
  assert.notDeepEqual(initWeights(config, 43), w);

  // RoBERTa: pad_token_id 1, and position embeddings are padded too.
  const r = roberta();
  const rl = paramLayout(r);
  const rw = initWeights(r, 1);
  for (
    const name of [
      "roberta.embeddings.word_embeddings.weight",
      "roberta.embeddings.position_embeddings.weight",
    ]
  ) {
    const t = view(rl, rw, name);
    assert.ok(t.subarray(8, 16).every((v) => v === 0), `${name} row 1`);
    assert.ok(t.subarray(0, 8).some((v) => v !== 0), `${name} row 0`);
  }
});

Deno.test("loading without a classifier head initialises only the head, as initWeights would", async () => {
  await withDir(async (dir) => {
    const config = bert();
    const layout = paramLayout(config);
    const weights = randomWeights(config, 5);
    const headless = tensorsOf(config, weights);
    for (const name of [...headless.keys()]) if (isHeadParam(name)) headless.delete(name);
    await writeFolder(dir, TINY, headless);
    const ck = await loadCheckpoint(dir, { seed: 9 });
    assert.equal(ck.freshHead, true);
    const ref = initWeights(config, 9);
    for (const s of layout.specs) {
      const want = isHeadParam(s.name) ? ref : weights;
      assert.deepEqual(view(ck.layout, ck.weights, s.name), view(layout, want, s.name), s.name);
    }
  });
});

Deno.test("an MLM checkpoint round-trips under cls.predictions.* and names the masked-LM head", async () => {
  await withDir(async (dir) => {
    const config = bert();
    const layout = paramLayout(config, "mlm");
    const weights = initWeights(config, 5, "mlm");
    for (let i = 0; i < weights.length; i++) weights[i] += Math.cos(i * 0.7) * 0.1;
    await saveCheckpoint(dir, { config, weights, objective: "mlm" });
    const hf = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
    assert.deepEqual(hf.architectures, ["BertForMaskedLM"]);
    const file = readSafetensors(await Deno.readFile(join(dir, "model.safetensors")));
    assert.ok(file.tensors.has("cls.predictions.bias"));
    assert.ok(file.tensors.has("cls.predictions.transform.dense.weight"));
    assert.ok(!file.tensors.has("classifier.weight"));
    // The decoder is tied to the word embeddings: no separate decoder matrix is stored.
    assert.ok(!file.tensors.has("cls.predictions.decoder.weight"));
    const back = await loadCheckpoint(dir, { objective: "mlm" });
    assert.equal(back.layout.total, layout.total);
    assert.deepEqual(back.weights, weights);
  });
});

Deno.test("planShards: a tensor never spans files, an oversized one gets its own shard", () => {
  const t = (name: string, bytes: number) => ({ name, bytes });
  // Filling a shard exactly to the limit is allowed; one byte more starts the next.
  assert.deepEqual(planShards([t("a", 4), t("b", 4), t("c", 4)], 8), [["a", "b"], ["c"]]);
  assert.deepEqual(planShards([t("a", 4), t("b", 5), t("c", 3)], 8), [["a"], ["b", "c"]]);
  // A tensor of exactly the limit fits a fresh shard; a larger one is alone, appended at once
  // while the open shard goes on collecting (huggingface_hub's order).
  assert.deepEqual(planShards([t("a", 8), t("b", 1)], 8), [["a"], ["b"]]);
  assert.deepEqual(planShards([t("a", 3), t("B", 9), t("c", 3), t("d", 3)], 8), [
    ["B"],
    ["a", "c"],
    ["d"],
  ]);
  assert.deepEqual(planShards([t("B", 100), t("C", 100)], 8), [["B"], ["C"]]);
  assert.deepEqual(planShards([t("e", 0), t("a", 8), t("f", 0)], 8), [["e", "a", "f"]]);
  assert.deepEqual(planShards([t("a", 1), t("b", 2)], 1e9), [["a", "b"]]);
  assert.throws(() => planShards([t("a", 1)], 0), /positive integer/);
});

Deno.test("parseByteSize reads transformers' max_shard_size spellings", () => {
  assert.equal(parseByteSize("5GB"), 5_000_000_000);
  assert.equal(parseByteSize("500MB"), 500_000_000);
  assert.equal(parseByteSize("10kb"), 10_000);
  assert.equal(parseByteSize("2GiB"), 2 * 2 ** 30);
  assert.equal(parseByteSize("1.5 MiB"), 1.5 * 2 ** 20);
  assert.equal(parseByteSize("123456"), 123_456);
  assert.equal(parseByteSize("7B"), 7);
  assert.equal(DEFAULT_MAX_SHARD_BYTES, parseByteSize("5GB"));
  for (const bad of ["", "GB", "5XB", "0", "0.1B", "-1GB", "5 G B", "1e9"]) {
    assert.throws(() => parseByteSize(bad), RangeError, bad);
  }
});

Deno.test("shardFileName and shardIndexJson write transformers' names and index text", () => {
  assert.equal(shardFileName(0, 3), "model-00001-of-00003.safetensors");
  assert.equal(shardFileName(11, 12), "model-00012-of-00012.safetensors");
  const text = shardIndexJson(
    1234,
    new Map([
      ["b.weight", "model-00002-of-00002.safetensors"],
      ["a.bias", "model-00001-of-00002.safetensors"],
      ["B.x", "model-00001-of-00002.safetensors"],
    ]),
  );
  // json.dumps(index, indent=2, sort_keys=True) + "\n", as save_pretrained writes it.
  assert.equal(
    text,
    `{
  "metadata": {
    "total_size": 1234
  },
  "weight_map": {
    "B.x": "model-00001-of-00002.safetensors",
    "a.bias": "model-00001-of-00002.safetensors",
    "b.weight": "model-00002-of-00002.safetensors"
  }
}
`,
  );
});

/** The tensor names and data sizes in bytes of each file of a saved folder, by file. */
async function shardContents(
  dir: string,
  files: string[],
): Promise<Map<string, Map<string, number>>> {
  const out = new Map<string, Map<string, number>>();
  for (const f of files) {
    const bytes = await Deno.readFile(join(dir, f));
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
    const sizes = new Map<string, number>();
    for (const [name, e] of Object.entries(header)) {
      if (name === "__metadata__") continue;
      const [b, end] = (e as { data_offsets: number[] }).data_offsets;
      sizes.set(name, end - b);
    }
    out.set(f, sizes);
  }
  return out;
}

const filesOf = (dir: string): string[] => [...Deno.readDirSync(dir)].map((e) => e.name).sort();

Deno.test("sharded save: transformers' file names and index, no tensor split, bits back for F32/F16/BF16", async () => {
  const config = bert();
  const layout = paramLayout(config);
  const weights = randomWeights(config, 21);
  weights[7] = NaN;
  weights[8] = -0;
  // The largest tensor (word embeddings, 50 x 8 x 4 = 1600 bytes in F32) is over the limit.
  const limit = 1000;
  const rounded = {
    F32: weights,
    F16: f16BitsToF32(f32ToF16Bits(weights)),
    BF16: bf16BitsToF32(f32ToBf16Bits(weights)),
  };
  for (const dtype of ["F32", "F16", "BF16"] as const) {
    await withDir(async (dir) => {
      await saveCheckpoint(dir, { config, weights }, { dtype, maxShardBytes: limit });
      const width = dtype === "F32" ? 4 : 2;
      const expectedShards = planShards(
        layout.specs.map((s) => ({ name: s.name, bytes: s.size * width })),
        limit,
      );
      const n = expectedShards.length;
      assert.ok(n >= 3, `${dtype}: ${n} shards`);
      const shardNames = expectedShards.map((_, i) => shardFileName(i, n));
      assert.deepEqual(
        filesOf(dir),
        ["config.json", ...shardNames, "model.safetensors.index.json"].sort(),
        "no single model.safetensors, no temp files",
      );
      const indexText = await Deno.readTextFile(join(dir, "model.safetensors.index.json"));
      const index = JSON.parse(indexText);
      assert.deepEqual(Object.keys(index), ["metadata", "weight_map"]);
      assert.deepEqual(index.metadata, { total_size: layout.total * width });
      const weightMap = new Map<string, string>(Object.entries(index.weight_map));
      assert.equal(indexText, shardIndexJson(layout.total * width, weightMap));
      assert.deepEqual([...weightMap.keys()].sort(), layout.specs.map((s) => s.name).sort());
      const contents = await shardContents(dir, shardNames);
      for (const [i, names] of expectedShards.entries()) {
        const sizes = contents.get(shardNames[i])!;
        assert.deepEqual([...sizes.keys()].sort(), [...names].sort(), `shard ${i}`);
        for (const name of names) {
          assert.equal(weightMap.get(name), shardNames[i]);
          assert.equal(sizes.get(name), layout.byName.get(name)!.size * width, "whole tensor");
        }
        const data = [...sizes.values()].reduce((a, b) => a + b, 0);
        assert.ok(data <= limit || sizes.size === 1, `shard ${i}: ${data} bytes`);
      }
      const big = `${config.modelType}.embeddings.word_embeddings.weight`;
      const bigShard = contents.get(weightMap.get(big)!)!;
      assert.deepEqual([...bigShard.keys()], [big], "an oversized tensor has a shard of its own");
      const hf = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
      assert.equal(hf.torch_dtype, { F32: "float32", F16: "float16", BF16: "bfloat16" }[dtype]);

      const ck = await loadCheckpoint(dir);
      assert.deepEqual(bits(ck.weights), bits(rounded[dtype]), dtype);
      assert.ok(Number.isNaN(ck.weights[7]) && Object.is(ck.weights[8], -0));
    });
  }
});

Deno.test("saving over an earlier save removes the weights files it no longer uses", async () => {
  await withDir(async (dir) => {
    const config = bert();
    const a = randomWeights(config, 1), b = randomWeights(config, 2), c = randomWeights(config, 3);
    await Deno.writeTextFile(join(dir, "model-00007-of-00009.safetensors"), "stale");
    await Deno.writeTextFile(join(dir, "notes.txt"), "keep me");
    await saveCheckpoint(dir, { config, weights: a });
    assert.deepEqual(filesOf(dir), ["config.json", "model.safetensors", "notes.txt"]);
    await saveCheckpoint(dir, { config, weights: b }, { maxShardBytes: 1500 });
    const sharded = filesOf(dir);
    assert.ok(!sharded.includes("model.safetensors"), "the single file gave way to shards");
    assert.ok(sharded.includes("model.safetensors.index.json") && sharded.includes("notes.txt"));
    assert.deepEqual(bits((await loadCheckpoint(dir)).weights), bits(b));
    await saveCheckpoint(dir, { config, weights: c }, { dtype: "BF16" });
    assert.deepEqual(filesOf(dir), ["config.json", "model.safetensors", "notes.txt"]);
    assert.deepEqual(
      bits((await loadCheckpoint(dir)).weights),
      bits(bf16BitsToF32(f32ToBf16Bits(c))),
    );
  });
});

Deno.test("a sharded folder with a missing shard or a wrong index is a clear error", async () => {
  const config = bert();
  const weights = randomWeights(config, 4);
  const save = async (dir: string) => {
    await saveCheckpoint(dir, { config, weights }, { maxShardBytes: 1000 });
    const indexPath = join(dir, "model.safetensors.index.json");
    const index = JSON.parse(await Deno.readTextFile(indexPath));
    const shards = [...new Set(Object.values(index.weight_map) as string[])].sort();
    return { indexPath, index, shards };
  };
  await withDir(async (dir) => {
    const { shards } = await save(dir);
    await Deno.remove(join(dir, shards[1]));
    await Deno.remove(join(dir, shards[2]));
    await assert.rejects(
      loadCheckpoint(dir),
      new RegExp(
        `lists ${shards.length} shards but 2 are missing: ${shards[1].replaceAll(".", "\\.")} ` +
          `\\(\\d+ tensors, e\\.g\\. [^)]+\\), ${shards[2].replaceAll(".", "\\.")}`,
      ),
    );
  });
  const cases: [string, (index: { weight_map: Record<string, string> }) => void, RegExp][] = [
    ["tensor moved to another shard", (ix) => {
      const name = Object.keys(ix.weight_map).find((n) => n.includes("layer.0.output.dense.bias"))!;
      const other = Object.values(ix.weight_map).find((f) => f !== ix.weight_map[name])!;
      ix.weight_map[name] = other;
    }, /holds tensor bert\.encoder\.layer\.0\.output\.dense\.bias, which .* assigns to model-/],
    [
      "tensor not listed",
      (ix) => {
        delete ix.weight_map["bert.pooler.dense.bias"];
      },
      /holds tensor bert\.pooler\.dense\.bias, which model\.safetensors\.index\.json does not list/,
    ],
    ["listed but absent", (ix) => {
      ix.weight_map["bert.extra.weight"] = Object.values(ix.weight_map)[0];
    }, /puts tensor bert\.extra\.weight in model-\d+-of-\d+\.safetensors, which does not hold it/],
    ["path outside the folder", (ix) => {
      ix.weight_map["bert.pooler.dense.bias"] = "../model.safetensors";
    }, /a shard must be a plain file name/],
    ["not a safetensors file", (ix) => {
      ix.weight_map["bert.pooler.dense.bias"] = "pytorch_model-00001-of-00002.bin";
    }, /must name a \.safetensors file/],
    ["no weight_map", (ix) => {
      delete (ix as { weight_map?: unknown }).weight_map;
    }, /missing "weight_map"/],
  ];
  for (const [label, edit, pattern] of cases) {
    await withDir(async (dir) => {
      const { indexPath, index } = await save(dir);
      edit(index);
      await Deno.writeTextFile(indexPath, JSON.stringify(index));
      await assert.rejects(loadCheckpoint(dir), pattern, label);
    });
  }
  await withDir(async (dir) => {
    const { indexPath } = await save(dir);
    await Deno.writeTextFile(indexPath, "{oops");
    await assert.rejects(loadCheckpoint(dir), /index\.json: not valid JSON/);
  });
});

Deno.test("loading reads each tensor straight into the flat buffer, also from 16-bit files", async () => {
  // A mixed-dtype sharded folder written by hand: F16 and BF16 shards, an I64 buffer skipped.
  await withDir(async (dir) => {
    const config = bert();
    const weights = randomWeights(config, 8);
    const [first, second] = halves(tensorsOf(config, weights));
    const files: [string, [string, HostTensor][], "F16" | "BF16"][] = [
      ["model-00001-of-00002.safetensors", first, "F16"],
      ["model-00002-of-00002.safetensors", second, "BF16"],
    ];
    const weightMap: Record<string, string> = {};
    for (const [file, list, dtype] of files) {
      let bytes = writeSafetensors(list, dtype);
      if (dtype === "F16") bytes = withI64(bytes, "bert.embeddings.position_ids", 32);
      await Deno.writeFile(join(dir, file), bytes);
      for (const [n] of list) weightMap[n] = file;
      if (dtype === "F16") weightMap["bert.embeddings.position_ids"] = file;
    }
    await Deno.writeTextFile(
      join(dir, "model.safetensors.index.json"),
      JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }),
    );
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(TINY));
    const ck = await loadCheckpoint(dir);
    const layout = paramLayout(config);
    for (const [i, [, list, dtype]] of files.entries()) {
      for (const [name, t] of list) {
        const want = dtype === "F16"
          ? f16BitsToF32(f32ToF16Bits(t.data))
          : bf16BitsToF32(f32ToBf16Bits(t.data));
        assert.deepEqual(bits(view(layout, ck.weights, name)), bits(want), `${name} (file ${i})`);
      }
    }
    assert.equal(ck.extra.size, 0, "position_ids is not a parameter");
  });
});

Deno.test("a head trained on the task's labels in another order is reordered to the task's", async () => {
  for (const [make, out] of [[bert, "classifier"], [roberta, "classifier.out_proj"]] as const) {
    await withDir(async (dir) => {
      const config = make({ id2label: { 0: "neg", 1: "neu", 2: "pos" } });
      const weights = randomWeights(config, 8);
      await saveCheckpoint(dir, { config, weights });
      const ck = await loadCheckpoint(dir, { labelNames: ["pos", "neg", "neu"] });
      assert.deepEqual(ck.config.id2label, ["pos", "neg", "neu"]);
      assert.match(ck.notes.join(), /reordered to the task's labels \[pos, neg, neu\]/);
      const layout = paramLayout(config);
      const before = (name: string) => view(layout, weights, name);
      const after = (name: string) => view(ck.layout, ck.weights, name);
      // Task label k is scored by the checkpoint's row of that name: pos was 2, neg 0, neu 1.
      const H = config.hiddenSize;
      [2, 0, 1].forEach((from, to) => {
        assert.deepEqual(
          after(`${out}.weight`).subarray(to * H, (to + 1) * H),
          before(`${out}.weight`).subarray(from * H, (from + 1) * H),
        );
        assert.equal(after(`${out}.bias`)[to], before(`${out}.bias`)[from]);
      });
      for (const s of layout.specs.filter((s) => !s.name.startsWith(out))) {
        assert.deepEqual(bits(after(s.name)), bits(before(s.name)), s.name);
      }
      // Other names than the checkpoint's: the rows stay, with the warning.
      const other = await loadCheckpoint(dir, { labelNames: ["a", "b", "c"] });
      assert.deepEqual(bits(other.weights), bits(weights));
      assert.match(other.notes.join(), /check that the order matches/);
    });
  }
});
