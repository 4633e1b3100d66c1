/**
 * The adaptmesh side of the PEFT conformance check (bench/peft_conformance/README
 * in bench/README.md, "PEFT conformance"). Two steps around `check.py`:
 *
 *   deno run -A bench/peft_conformance/make.ts OUT      # writes the folders below
 *   python3 bench/peft_conformance/check.py OUT         # transformers + peft
 *   deno run -A bench/peft_conformance/make.ts OUT --verify   # reads what peft saved
 *
 * `make` writes, per case (a random BERT with adapters on every module, a
 * random RoBERTa with the default query/value adapters, and a BERT saved
 * without its pooler, whose fresh pooler trains in full), `OUT/<case>/`:
 *   base/      the base model (saveCheckpoint)
 *   adapter/   the LoRA adapter with non-zero B and a moved head (savePeftAdapter)
 *   merged/    the merged model (saveMergedCheckpoint)
 *   expected.json   the batch and adaptmesh's logits (engine, and the tfjs oracle)
 * plus `OUT/tiny/base` and its batch: the tiny BERT of tests/support/tiny.ts, on
 * which check.py has peft write the adapter that tests/peft_test.ts reads
 * (copied to tests/fixtures/peft_tiny_bert).
 *
 * `--verify` loads each `OUT/<case>/peft_saved` (written by peft itself) with
 * `loadPeftAdapter` on the base and compares the engine's logits with the
 * logits peft computed (`peft_saved/expected.json`); exit status 1 past 1e-5.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { join, resolve } from "node:path";
import { initBackend } from "../../shared/compute/create.ts";
import { loadCheckpoint, saveCheckpoint } from "../../shared/io/checkpoint.ts";
import { planSafetensors, streamSafetensors } from "../../shared/io/safetensors.ts";
import { atomicWriteStream } from "../../shared/io/atomic_write.ts";
import { loadPeftAdapter, saveMergedCheckpoint, savePeftAdapter } from "../../shared/io/peft.ts";
import { type ModelConfig, parseModelConfig } from "../../shared/model/config.ts";
import { type ParamLayout, paramLayout } from "../../shared/model/param_layout.ts";
import {
  ALL_TARGET_MODULES,
  initTrainable,
  type LoraConfig,
  loraPlan,
} from "../../shared/model/lora.ts";
import type { HostBatch } from "../../shared/model/batch.ts";
import { predictLogits, weightTensors } from "../../shared/tfjs/model.ts";
import { EngineModel } from "../../shared/engine/engine.ts";
import { cpuDevice } from "../../shared/engine/devices/cpu/device.ts";
import { jsGemm } from "../../shared/engine/devices/cpu/gemm.ts";
import { Rng } from "../../shared/method/rng.ts";
import { tiny } from "../../tests/support/tiny.ts";

const out = Deno.args.find((a) => !a.startsWith("--")) ?? "bench/peft_conformance/out";
const verify = Deno.args.includes("--verify");

/** One conformance case: the model, its LoRA settings, whether its checkpoint lacks the pooler. */
interface Case {
  readonly name: string;
  readonly kind: "bert" | "roberta";
  readonly lora: LoraConfig;
  readonly noPooler: boolean;
}

const CASES: Case[] = [
  {
    name: "bert",
    kind: "bert",
    lora: {
      r: 8,
      alpha: 16,
      dropout: 0.1,
      targetModules: ALL_TARGET_MODULES,
    },
    noPooler: false,
  },
  {
    name: "roberta",
    kind: "roberta",
    lora: { r: 8, alpha: 8, dropout: 0, targetModules: ["query", "value"] },
    noPooler: false,
  },
  {
    name: "bert_no_pooler",
    kind: "bert",
    lora: { r: 4, alpha: 8, dropout: 0, targetModules: ["query", "value"] },
    noPooler: true,
  },
];

function modelConfig(kind: "bert" | "roberta"): ModelConfig {
  return parseModelConfig({
    model_type: kind,
    vocab_size: 300,
    hidden_size: 32,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    intermediate_size: 64,
    max_position_embeddings: 130,
    type_vocab_size: kind === "bert" ? 2 : 1,
    pad_token_id: kind === "bert" ? 0 : 1,
    num_labels: 3,
  });
}

function randomWeights(layout: ParamLayout, seed: number): Float32Array {
  const rng = new Rng(seed);
  const w = new Float32Array(layout.total);
  for (const s of layout.specs) {
    const ln = s.name.includes("LayerNorm.weight");
    for (let i = 0; i < s.size; i++) w[s.offset + i] = (ln ? 1 : 0) + 0.1 * rng.normal();
  }
  return w;
}

/** A batch of 4 examples of 24 positions with padding (CLS/SEP ids as BERT's 101/102 stand-ins). */
function batch(config: ModelConfig, seed: number): HostBatch {
  const rng = new Rng(seed), B = 4, L = 24;
  const inputIds = new Int32Array(B * L).fill(config.padTokenId);
  const tokenTypeIds = new Int32Array(B * L), attentionMask = new Uint8Array(B * L);
  for (let b = 0; b < B; b++) {
    const len = L - 5 * b;
    for (let i = 0; i < len; i++) {
      inputIds[b * L + i] = i === 0 ? 2 : i === len - 1 ? 3 : 4 + rng.int(config.vocabSize - 4);
      attentionMask[b * L + i] = 1;
      if (config.typeVocabSize > 1 && i > len / 2) tokenTypeIds[b * L + i] = 1;
    }
  }
  return { inputIds, tokenTypeIds, attentionMask, size: B, seqLen: L };
}

/** The batch as check.py reads it. */
function batchJson(b: HostBatch) {
  const rows = (a: ArrayLike<number>) =>
    Array.from({ length: b.size }, (_, i) => Array.from(a).slice(i * b.seqLen, (i + 1) * b.seqLen));
  return {
    input_ids: rows(b.inputIds),
    token_type_ids: rows(b.tokenTypeIds),
    attention_mask: rows(b.attentionMask),
  };
}

/** Writes a base folder without the pooler tensors (a bare-encoder checkpoint with a head). */
async function saveWithoutPooler(dir: string, config: ModelConfig, weights: Float32Array) {
  await saveCheckpoint(dir, { config, weights });
  const layout = paramLayout(config);
  const list = layout.specs.filter((s) => !s.name.includes("pooler")).map((s) =>
    [s.name, {
      shape: [...s.shape],
      data: weights.subarray(s.offset, s.offset + s.size),
    }] as [string, { shape: number[]; data: Float32Array }]
  );
  const plan = planSafetensors(list, "F32", { format: "pt" });
  await atomicWriteStream(join(dir, "model.safetensors"), (s) => streamSafetensors(plan, s).then());
}

async function engineLogits(
  config: ModelConfig,
  weights: Float32Array,
  b: HostBatch,
  lora?: { plan: ReturnType<typeof loraPlan>; trainable: Float32Array },
): Promise<Float32Array> {
  const m = new EngineModel(cpuDevice(jsGemm), config, paramLayout(config));
  m.setWeights(weights);
  if (lora) m.setLora(lora.plan, lora.trainable);
  return await m.logits(b);
}

async function make(c: Case, seed: number) {
  const dir = resolve(out, c.name);
  const config = modelConfig(c.kind);
  const layout = paramLayout(config);
  const raw = randomWeights(layout, seed);
  if (c.noPooler) await saveWithoutPooler(join(dir, "base"), config, raw);
  else await saveCheckpoint(join(dir, "base"), { config, weights: raw });
  // Load back as a run would: a checkpoint without its pooler gets a fresh one, which trains.
  const ck = await loadCheckpoint(join(dir, "base"), { seed: 17 });
  const plan = loraPlan(config, c.lora, { trainPooler: ck.freshPooler ?? false });
  const trainable = initTrainable(plan, layout, ck.weights, seed);
  const rng = new Rng(seed + 100);
  for (const ad of plan.adapters) {
    for (let i = 0; i < ad.b.size; i++) trainable[ad.b.offset + i] = 0.2 * rng.normal();
  }
  for (const name of plan.head) {
    const s = plan.layout.byName.get(name)!;
    for (let i = 0; i < s.size; i++) trainable[s.offset + i] += 0.05 * rng.normal();
  }
  await savePeftAdapter(join(dir, "adapter"), config, plan, trainable, {
    baseModel: join(dir, "base"),
  });
  await saveMergedCheckpoint(join(dir, "merged"), {
    config,
    base: ck.weights,
    plan,
    trainable,
  });
  const b = batch(config, seed + 1);
  const logits = await engineLogits(config, ck.weights, b, { plan, trainable });
  const base = await engineLogits(config, ck.weights, b);
  const weights = weightTensors(layout, ck.weights), lw = weightTensors(plan.layout, trainable);
  const oracle = await predictLogits(
    { config, layout, weights, lora: { plan, weights: lw } },
    b,
  );
  tf.dispose([...Object.values(weights), ...Object.values(lw)]);
  await Deno.writeTextFile(
    join(dir, "expected.json"),
    JSON.stringify(
      {
        case: c.name,
        lora: { ...c.lora, modules_to_save: plan.modulesToSave },
        fresh_pooler: ck.freshPooler ?? false,
        trainable_params: plan.layout.total,
        ...batchJson(b),
        logits: Array.from(logits),
        logits_tfjs: Array.from(oracle),
        base_logits: Array.from(base),
      },
      null,
      1,
    ) + "\n",
  );
}

/** The tiny BERT of the tests and its batch, for check.py to write the test fixture on. */
async function makeTiny() {
  const t = tiny({}, 4, 7);
  const dir = resolve(out, "tiny");
  await saveCheckpoint(join(dir, "base"), { config: t.config, weights: t.weights });
  await Deno.writeTextFile(
    join(dir, "expected.json"),
    JSON.stringify({ case: "tiny", ...batchJson(t.batch) }) + "\n",
  );
}

/** Reads what peft saved and compares logits; returns the largest difference. */
async function verifyCase(name: string): Promise<number> {
  const dir = resolve(out, name);
  const ck = await loadCheckpoint(join(dir, "base"), { seed: 17 });
  const adapter = await loadPeftAdapter(join(dir, "peft_saved"), ck.config);
  const want = JSON.parse(await Deno.readTextFile(join(dir, "peft_saved", "expected.json")));
  const b: HostBatch = {
    inputIds: Int32Array.from(want.input_ids.flat()),
    tokenTypeIds: Int32Array.from(want.token_type_ids.flat()),
    attentionMask: Uint8Array.from(want.attention_mask.flat()),
    size: want.input_ids.length,
    seqLen: want.input_ids[0].length,
  };
  const got = await engineLogits(ck.config, ck.weights, b, adapter);
  const peft: number[] = want.logits.flat();
  return peft.reduce((m, v, i) => Math.max(m, Math.abs(v - got[i])), 0);
}

await initBackend("tfjs-cpu");
if (verify) {
  const report: Record<string, number> = {};
  for (const c of [...CASES.map((c) => c.name), "tiny"]) report[c] = await verifyCase(c);
  const ok = Object.values(report).every((d) => d <= 1e-5);
  console.log(JSON.stringify({ peft_saved_max_abs_logit_diff: report, ok }, null, 1));
  if (!ok) Deno.exit(1);
} else {
  for (const [i, c] of CASES.entries()) await make(c, 1 + i);
  await makeTiny();
  console.log(`wrote ${CASES.map((c) => c.name).join(", ")}, tiny under ${out}`);
}
