/**
 * PEFT adapter folders (shared/io/peft.ts): written and read back bit for bit
 * with PEFT's key names and config fields; the merged Hugging Face folder
 * gives the adapter model's logits; refusals name the field; and an adapter
 * written by PEFT itself (tests/fixtures/peft_tiny_bert, made by
 * bench/peft_conformance/fixture.py with peft 0.21) loads and gives PEFT's logits.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { EngineModel } from "../shared/engine/engine.ts";
import { cpuDevice } from "../shared/engine/devices/cpu/device.ts";
import { jsGemm } from "../shared/engine/devices/cpu/gemm.ts";
import {
  ADAPTER_CONFIG_NAME,
  ADAPTER_WEIGHTS_NAME,
  loadPeftAdapter,
  saveMergedCheckpoint,
  savePeftAdapter,
} from "../shared/io/peft.ts";
import { loadCheckpoint } from "../shared/io/checkpoint.ts";
import { planSafetensors, readSafetensors } from "../shared/io/safetensors.ts";
import {
  ALL_TARGET_MODULES,
  DEFAULT_LORA,
  initTrainable,
  type LoraConfig,
  type LoraPlan,
  loraPlan,
} from "../shared/model/lora.ts";
import { Rng } from "../shared/method/rng.ts";
import { type Tiny, tiny } from "./support/tiny.ts";
import type { ModelConfig } from "../shared/model/config.ts";

function trainable(t: Tiny, plan: LoraPlan, seed = 4): Float32Array {
  const tr = initTrainable(plan, t.layout, t.weights, seed);
  const rng = new Rng(seed);
  for (const ad of plan.adapters) {
    for (let i = 0; i < ad.b.size; i++) tr[ad.b.offset + i] = 0.3 * rng.normal();
  }
  return tr;
}

async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "adaptmesh-peft-" });
}

async function logits(t: Tiny, weights: Float32Array, plan?: LoraPlan, tr?: Float32Array) {
  const m = new EngineModel(cpuDevice(jsGemm), t.config, t.layout);
  m.setWeights(weights);
  if (plan) m.setLora(plan, tr);
  return await m.logits(t.batch);
}

const CASES: { name: string; over: Record<string, unknown>; lora: LoraConfig; pooler: boolean }[] =
  [
    { name: "bert default", over: {}, lora: DEFAULT_LORA, pooler: false },
    {
      name: "bert every module + pooler",
      over: {},
      lora: { r: 3, alpha: 6, dropout: 0.1, targetModules: ALL_TARGET_MODULES },
      pooler: true,
    },
    {
      name: "roberta ffn output only",
      over: { model_type: "roberta", pad_token_id: 1 },
      lora: {
        r: 2,
        alpha: 16,
        dropout: 0,
        targetModules: ["layer.0.output.dense", "layer.1.output.dense"],
      },
      pooler: false,
    },
  ];

for (const c of CASES) {
  Deno.test(`PEFT folder written and read back bit for bit: ${c.name}`, async () => {
    const t = tiny(c.over);
    const plan = loraPlan(t.config, c.lora, { trainPooler: c.pooler });
    const tr = trainable(t, plan);
    const dir = await tempDir();
    try {
      await savePeftAdapter(dir, t.config, plan, tr, { baseModel: "some/base" });
      const back = await loadPeftAdapter(dir, t.config);
      assert.deepEqual(back.trainable, tr);
      assert.deepEqual(back.plan.modules, plan.modules);
      assert.deepEqual(back.plan.layout.specs, plan.layout.specs);
      assert.equal(back.plan.scale, plan.scale);
      assert.equal(back.plan.lora.dropout, c.lora.dropout);
      assert.equal(back.plan.trainPooler, c.pooler);
      assert.equal(back.baseModel, "some/base");
      // Written again from what was read: the same bytes.
      const again = await tempDir();
      try {
        await savePeftAdapter(again, t.config, back.plan, back.trainable, {
          baseModel: "some/base",
        });
        for (const f of [ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME]) {
          assert.deepEqual(
            await Deno.readFile(join(again, f)),
            await Deno.readFile(join(dir, f)),
            f,
          );
        }
      } finally {
        await Deno.remove(again, { recursive: true });
      }
      // PEFT's fields and key names.
      const cfg = JSON.parse(await Deno.readTextFile(join(dir, ADAPTER_CONFIG_NAME)));
      assert.equal(cfg.peft_type, "LORA");
      assert.equal(cfg.task_type, "SEQ_CLS");
      assert.equal(cfg.r, c.lora.r);
      assert.equal(cfg.lora_alpha, c.lora.alpha);
      assert.equal(cfg.lora_dropout, c.lora.dropout);
      assert.equal(cfg.bias, "none");
      assert.equal(cfg.fan_in_fan_out, false);
      assert.equal(cfg.base_model_name_or_path, "some/base");
      assert.deepEqual(cfg.modules_to_save, c.pooler ? ["classifier", "pooler"] : ["classifier"]);
      const file = readSafetensors(await Deno.readFile(join(dir, ADAPTER_WEIGHTS_NAME)));
      assert.deepEqual(file.metadata, { format: "pt" });
      const p = t.config.modelType;
      const keys = [...file.tensors.keys()];
      assert.ok(keys.every((k) => k.startsWith("base_model.model.")), keys.join());
      const first = plan.modules[0];
      assert.deepEqual(
        file.tensors.get(`base_model.model.${p}.encoder.layer.1.${first}.lora_A.weight`)!.shape,
        [c.lora.r, first === "output.dense" ? 16 : 8],
      );
      assert.ok(file.tensors.has(`base_model.model.${p}.encoder.layer.0.${first}.lora_B.weight`));
      const head = p === "bert" ? "classifier.weight" : "classifier.out_proj.weight";
      assert.deepEqual(file.tensors.get(`base_model.model.${head}`)!.shape, [3, 8]);
      assert.equal(file.tensors.has("base_model.model.bert.pooler.dense.weight"), c.pooler);
      assert.equal(file.tensors.size, plan.layout.specs.length);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test(`merged folder (saveMergedCheckpoint) = base + adapter logits within 1e-5: ${c.name}`, async () => {
    const t = tiny(c.over, 4, 7);
    const plan = loraPlan(t.config, c.lora, { trainPooler: c.pooler });
    const tr = trainable(t, plan);
    const dir = await tempDir();
    try {
      await saveMergedCheckpoint(dir, { config: t.config, base: t.weights, plan, trainable: tr });
      const ck = await loadCheckpoint(dir);
      const want = await logits(t, t.weights, plan, tr);
      const got = await logits(t, ck.weights);
      const base = await logits(t, t.weights);
      let moved = 0;
      for (let i = 0; i < want.length; i++) {
        assert.ok(
          Math.abs(got[i] - want[i]) <= 1e-5,
          `logit ${i}: merged ${got[i]}, adapter ${want[i]}`,
        );
        moved = Math.max(moved, Math.abs(want[i] - base[i]));
      }
      assert.ok(moved > 1e-3, `the adapter moves the logits (${moved})`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

/** Writes an adapter for the tiny BERT, lets `edit` change its config or tensors, then reads it. */
async function refused(
  edit: (
    cfg: Record<string, unknown>,
    tensors: Map<string, { shape: number[]; data: Float32Array }>,
  ) => void,
  config?: ModelConfig,
): Promise<Error> {
  const t = tiny();
  const plan = loraPlan(t.config, DEFAULT_LORA);
  const dir = await tempDir();
  try {
    await savePeftAdapter(dir, t.config, plan, trainable(t, plan));
    const cfg = JSON.parse(await Deno.readTextFile(join(dir, ADAPTER_CONFIG_NAME)));
    const tensors = readSafetensors(await Deno.readFile(join(dir, ADAPTER_WEIGHTS_NAME))).tensors;
    edit(cfg, tensors);
    await Deno.writeTextFile(join(dir, ADAPTER_CONFIG_NAME), JSON.stringify(cfg));
    const p = planSafetensors(tensors, "F32", { format: "pt" });
    const bytes = new Uint8Array(p.size);
    bytes.set(p.header);
    let at = p.header.length;
    for (const [, x] of p.tensors) {
      bytes.set(new Uint8Array(x.data.buffer, x.data.byteOffset, x.data.byteLength), at);
      at += x.data.byteLength;
    }
    await Deno.writeFile(join(dir, ADAPTER_WEIGHTS_NAME), bytes);
    try {
      await loadPeftAdapter(dir, config ?? t.config);
    } catch (e) {
      return e as Error;
    }
    throw new Error("the adapter was accepted");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("PEFT folders that adaptmesh cannot run as PEFT would are refused, naming the field", async () => {
  const cases: [string, Parameters<typeof refused>[0], RegExp][] = [
    ["peft_type", (c) => void (c.peft_type = "PREFIX_TUNING"), /peft_type "PREFIX_TUNING"/],
    ["fan_in_fan_out", (c) => void (c.fan_in_fan_out = true), /fan_in_fan_out true/],
    ["bias", (c) => void (c.bias = "all"), /bias "all"/],
    ["bias lora_only", (c) => void (c.bias = "lora_only"), /bias "lora_only"/],
    [
      "missing target",
      (c) => void (c.target_modules = ["query", "q_proj"]),
      /target_modules: "q_proj"/,
    ],
    ["head target", (c) => void (c.target_modules = ["dense"]), /target_modules: "dense".*pooler/],
    ["task_type", (c) => void (c.task_type = "CAUSAL_LM"), /task_type "CAUSAL_LM"/],
    ["use_dora", (c) => void (c.use_dora = true), /use_dora true/],
    ["use_rslora", (c) => void (c.use_rslora = true), /use_rslora true/],
    ["rank_pattern", (c) => void (c.rank_pattern = { query: 4 }), /field rank_pattern/],
    ["unknown field", (c) => void (c.some_new_option = 3), /field some_new_option = 3/],
    ["regex targets", (c) => void (c.target_modules = ".*query"), /target_modules ".*query"/],
    [
      "modules_to_save",
      (c) => void (c.modules_to_save = ["classifier", "LayerNorm"]),
      /modules_to_save entry "LayerNorm"/,
    ],
    ["r", (c) => void (c.r = 0), /r 0 is not a positive integer/],
    [
      "rank mismatch",
      (c) => void (c.r = 4),
      /rank 8 but r is 4/,
    ],
    [
      "missing tensor",
      (_, t) => void t.delete("base_model.model.classifier.bias"),
      /missing tensor base_model.model.classifier.bias/,
    ],
    [
      "unexpected tensor",
      (_, t) =>
        void t.set("base_model.model.bert.pooler.dense.bias", {
          shape: [8],
          data: new Float32Array(8),
        }),
      /unexpected tensor base_model.model.bert.pooler.dense.bias/,
    ],
  ];
  for (const [name, edit, pattern] of cases) {
    const e = await refused(edit);
    assert.match(e.message, pattern, `${name}: ${e.message}`);
  }
  // A head of another label count than the model's.
  const e = await refused(() => {}, tiny({ num_labels: 2 }).config);
  assert.match(e.message, /classifier.weight has shape \[3,8\], expected \[2,8\]/);
  // Not a folder of an adapter at all.
  await assert.rejects(
    () => loadPeftAdapter("/nonexistent-dir", tiny().config),
    /no adapter_config.json/,
  );
});

/** What bench/peft_conformance/fixture.py stored: PEFT's logits of the tiny batch. */
interface Fixture {
  readonly peft: string;
  readonly logits: number[];
}

Deno.test("an adapter written by PEFT itself loads and gives PEFT's logits", async () => {
  const dir = new URL("./fixtures/peft_tiny_bert/", import.meta.url).pathname;
  const t = tiny({}, 4, 7);
  const expected: Fixture = JSON.parse(await Deno.readTextFile(join(dir, "expected.json")));
  const a = await loadPeftAdapter(dir, t.config);
  assert.equal(a.plan.lora.r, 4);
  assert.deepEqual(a.plan.modules, [
    "attention.self.query",
    "attention.self.value",
    "attention.output.dense",
    "output.dense",
  ]);
  const got = await logits(t, t.weights, a.plan, a.trainable);
  const base = await logits(t, t.weights);
  let moved = 0;
  for (let i = 0; i < got.length; i++) {
    assert.ok(
      Math.abs(got[i] - expected.logits[i]) <= 1e-5,
      `logit ${i}: adaptmesh ${got[i]}, peft ${expected.peft} ${expected.logits[i]}`,
    );
    moved = Math.max(moved, Math.abs(got[i] - base[i]));
  }
  assert.ok(moved > 1e-2, `the adapter moves the logits (${moved})`);
});
