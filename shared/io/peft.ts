/**
 * Hugging Face PEFT LoRA adapter folders, as `PeftModel.save_pretrained`
 * writes them and `PeftModel.from_pretrained` reads them:
 *
 *     DIR/adapter_config.json          peft_type LORA, task_type SEQ_CLS, r, lora_alpha, …
 *     DIR/adapter_model.safetensors    base_model.model.<module>.lora_A.weight [r, in]
 *                                      base_model.model.<module>.lora_B.weight [out, r]
 *                                      base_model.model.classifier.weight, … (modules_to_save)
 *
 * The key rules are PEFT's (src/peft/utils/save_and_load.py,
 * `get_peft_model_state_dict`): the adapter name (`default`) and the
 * `modules_to_save.default.` of a saved module are dropped, so a key is
 * `base_model.model.` + the base model's parameter name (+ `lora_A` /
 * `lora_B` for an adapter). The trainable buffer of shared/model/lora.ts holds
 * exactly these tensors, under the same names without the prefix.
 *
 * Reading refuses what adaptmesh does not compute the way PEFT would, with an
 * error naming the field: another `peft_type`, `fan_in_fan_out` true, `bias`
 * other than `none`, DoRA, rsLoRA, per-module ranks, a target module the model
 * does not have, tensors whose rank disagrees with `r`, and any field this
 * reader does not know that is set to something other than its default.
 *
 * @module
 */
import { join } from "node:path";
import { atomicWriteFile, atomicWriteStream } from "./atomic_write.ts";
import { isPlainObject } from "./plain_object.ts";
import { planSafetensors, readSafetensors, streamSafetensors } from "./safetensors.ts";
import type { HostTensor } from "./safetensors.ts";
import { saveCheckpoint, type SaveOptions } from "./checkpoint.ts";
import type { ModelConfig } from "../model/config.ts";
import { type ParamLayout, paramLayout } from "../model/param_layout.ts";
import {
  type LoraConfig,
  type LoraPlan,
  loraPlan,
  mergeLora,
  peftTargetModules,
} from "../model/lora.ts";

/** The adapter's config file name. */
export const ADAPTER_CONFIG_NAME = "adapter_config.json";
/** The adapter's weights file name. */
export const ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors";
/** The prefix PEFT puts before every saved tensor name of a `PeftModel`. */
export const PEFT_PREFIX = "base_model.model.";

/** A PEFT LoRA adapter, read into adaptmesh's terms. */
export interface PeftAdapter {
  /** The configuration resolved against the model (rank, α, targets, trainable layout). */
  readonly plan: LoraPlan;
  /** The trainable buffer (layout `plan.layout`): adapters and saved head. */
  readonly trainable: Float32Array;
  /** `base_model_name_or_path`, when the file names one. */
  readonly baseModel: string | null;
  /** adapter_config.json as read. */
  readonly raw: Readonly<Record<string, unknown>>;
}

/** Options of {@link savePeftAdapter}. */
export interface SavePeftOptions {
  /** `base_model_name_or_path`: the base checkpoint (a folder or a hub id). */
  readonly baseModel?: string | null;
  /** `inference_mode` (default true, as `save_pretrained` writes it). */
  readonly inferenceMode?: boolean;
}

/**
 * Fields read or checked by {@link parseAdapterConfig}, and fields without
 * effect on a saved LoRA adapter's numbers (bookkeeping, initialisation,
 * integrations): any other field must be absent or at its default (null,
 * false, empty) or the folder is refused.
 */
const HARMLESS_FIELDS = new Set([
  "auto_mapping",
  "base_model_name_or_path",
  "revision",
  "inference_mode",
  "init_lora_weights",
  "peft_version",
  "megatron_config",
  "megatron_core",
  "loftq_config",
  "eva_config",
  "corda_config",
  "qalora_group_size",
  "use_qalora",
  "layers_pattern",
  "ensure_weight_tying",
]);

/** Fields this module reads. */
const READ_FIELDS = new Set([
  "peft_type",
  "task_type",
  "r",
  "lora_alpha",
  "lora_dropout",
  "target_modules",
  "modules_to_save",
  "bias",
  "fan_in_fan_out",
]);

/** modules_to_save entries understood: the classifier, PEFT's `score` (no such module here), the pooler. */
const SAVED_MODULES = new Set(["classifier", "score", "pooler"]);

/** Whether a field's value is its default (null, false, "", empty list or object). */
function isDefault(v: unknown): boolean {
  if (v === null || v === undefined || v === false || v === "") return true;
  if (Array.isArray(v)) return v.length === 0;
  if (isPlainObject(v)) return Object.keys(v).length === 0;
  return false;
}

/** What adapter_config.json says, checked against the model. */
export interface AdapterSettings {
  readonly lora: LoraConfig;
  /** Train (and save) the BERT pooler too: `pooler` in modules_to_save. */
  readonly trainPooler: boolean;
  readonly baseModel: string | null;
}

/**
 * Checks a parsed adapter_config.json against the model `config` and returns
 * its LoRA settings. Every refusal names the field.
 */
export function parseAdapterConfig(raw: unknown, config: ModelConfig): AdapterSettings {
  const where = ADAPTER_CONFIG_NAME;
  if (!isPlainObject(raw)) throw new Error(`${where}: not a JSON object`);
  const f = raw as Record<string, unknown>;
  if (f.peft_type !== "LORA") {
    throw new Error(
      `${where}: peft_type ${JSON.stringify(f.peft_type)} is not supported (only "LORA")`,
    );
  }
  if (f.task_type !== undefined && f.task_type !== null && f.task_type !== "SEQ_CLS") {
    throw new Error(
      `${where}: task_type ${JSON.stringify(f.task_type)} is not supported (only "SEQ_CLS")`,
    );
  }
  if (f.fan_in_fan_out !== undefined && f.fan_in_fan_out !== false) {
    throw new Error(
      `${where}: fan_in_fan_out ${JSON.stringify(f.fan_in_fan_out)} is not supported ` +
        `(BERT and RoBERTa linear weights are [out, in]: false)`,
    );
  }
  if (f.bias !== undefined && f.bias !== "none") {
    throw new Error(
      `${where}: bias ${JSON.stringify(f.bias)} is not supported (only "none": biases stay frozen)`,
    );
  }
  for (const [key, value] of Object.entries(f)) {
    if (READ_FIELDS.has(key) || HARMLESS_FIELDS.has(key) || isDefault(value)) continue;
    if (key === "use_rslora" || key === "use_dora" || key === "lora_bias") {
      throw new Error(`${where}: ${key} ${JSON.stringify(value)} is not supported (only false)`);
    }
    throw new Error(
      `${where}: field ${key} = ${JSON.stringify(value)} is not supported by adaptmesh ` +
        `(only its default, null / false / empty, is)`,
    );
  }
  const r = f.r, alpha = f.lora_alpha, dropout = f.lora_dropout ?? 0;
  if (typeof r !== "number" || !Number.isSafeInteger(r) || r < 1) {
    throw new Error(`${where}: r ${JSON.stringify(r)} is not a positive integer`);
  }
  if (typeof alpha !== "number" || !(alpha > 0)) {
    throw new Error(`${where}: lora_alpha ${JSON.stringify(alpha)} is not a positive number`);
  }
  if (typeof dropout !== "number" || !(dropout >= 0 && dropout < 1)) {
    throw new Error(`${where}: lora_dropout ${JSON.stringify(dropout)} is not in [0, 1)`);
  }
  const targets = f.target_modules;
  if (!Array.isArray(targets) || !targets.every((t) => typeof t === "string")) {
    throw new Error(
      `${where}: target_modules ${JSON.stringify(targets)} is not a list of module names ` +
        `(a regular expression is not supported)`,
    );
  }
  const saved = f.modules_to_save ?? [];
  if (!Array.isArray(saved) || !saved.every((m) => typeof m === "string")) {
    throw new Error(`${where}: modules_to_save ${JSON.stringify(saved)} is not a list of names`);
  }
  for (const m of saved) {
    if (!SAVED_MODULES.has(m) || (m === "pooler" && config.modelType !== "bert")) {
      throw new Error(
        `${where}: modules_to_save entry "${m}" is not supported ` +
          `(classifier, score${config.modelType === "bert" ? ", pooler" : ""})`,
      );
    }
  }
  const base = f.base_model_name_or_path;
  const lora: LoraConfig = { r, alpha, dropout, targetModules: targets as string[] };
  try {
    loraPlan(config, lora); // a target the model does not have
  } catch (e) {
    throw new Error(`${where}: ${(e as Error).message}`, { cause: e });
  }
  return {
    lora,
    trainPooler: saved.includes("pooler"),
    baseModel: typeof base === "string" && base.length > 0 ? base : null,
  };
}

/** The adapter_config.json adaptmesh writes for `plan` (PEFT 0.x field names and defaults). */
export function adapterConfigJson(
  config: ModelConfig,
  plan: LoraPlan,
  opts: SavePeftOptions = {},
): Record<string, unknown> {
  return {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: opts.baseModel ?? null,
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: opts.inferenceMode ?? true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: plan.lora.alpha,
    lora_dropout: plan.lora.dropout,
    modules_to_save: [...plan.modulesToSave],
    peft_type: "LORA",
    r: plan.lora.r,
    rank_pattern: {},
    revision: null,
    target_modules: peftTargetModules(config, plan.modules),
    task_type: "SEQ_CLS",
    use_dora: false,
    use_rslora: false,
  };
}

/** Checks that `trainable` fits `plan`. */
function checkTrainable(plan: LoraPlan, trainable: Float32Array): void {
  if (trainable.length !== plan.layout.total) {
    throw new Error(
      `PEFT adapter: the trainable buffer holds ${trainable.length} values, expected ${plan.layout.total}`,
    );
  }
}

/** The adapter's tensors under PEFT's key names (views of `trainable`, no copy). */
export function peftTensors(plan: LoraPlan, trainable: Float32Array): [string, HostTensor][] {
  checkTrainable(plan, trainable);
  return plan.layout.specs.map((s) => [
    PEFT_PREFIX + s.name,
    { shape: [...s.shape], data: trainable.subarray(s.offset, s.offset + s.size) },
  ]);
}

/**
 * Writes the adapter folder `dir`: adapter_config.json and
 * adapter_model.safetensors (F32, metadata `{"format": "pt"}`, PEFT's keys),
 * each replaced atomically.
 */
export async function savePeftAdapter(
  dir: string,
  config: ModelConfig,
  plan: LoraPlan,
  trainable: Float32Array,
  opts: SavePeftOptions = {},
): Promise<void> {
  const plan_ = planSafetensors(peftTensors(plan, trainable), "F32", { format: "pt" });
  await Deno.mkdir(dir, { recursive: true });
  await atomicWriteStream(
    join(dir, ADAPTER_WEIGHTS_NAME),
    (sink) => streamSafetensors(plan_, sink).then(),
  );
  const json = JSON.stringify(adapterConfigJson(config, plan, opts), null, 2) + "\n";
  await atomicWriteFile(join(dir, ADAPTER_CONFIG_NAME), json);
}

/**
 * Reads a PEFT LoRA adapter folder for the model `config` (its label count is
 * the head's). Every tensor of the plan's trainable layout must be in the
 * file with its shape (a lora_A / lora_B whose rank is not `r` is an error
 * naming r), and no other tensor may be.
 */
export async function loadPeftAdapter(dir: string, config: ModelConfig): Promise<PeftAdapter> {
  const path = join(dir, ADAPTER_CONFIG_NAME);
  let raw: unknown;
  try {
    raw = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`${dir}: no ${ADAPTER_CONFIG_NAME} (not a PEFT adapter folder?)`);
    }
    if (e instanceof SyntaxError) throw new Error(`${path}: not valid JSON (${e.message})`);
    throw e;
  }
  let settings: AdapterSettings;
  try {
    settings = parseAdapterConfig(raw, config);
  } catch (e) {
    throw new Error(`${dir}/${(e as Error).message}`, { cause: e });
  }
  const plan = loraPlan(config, settings.lora, { trainPooler: settings.trainPooler });
  const file = join(dir, ADAPTER_WEIGHTS_NAME);
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`${dir}: no ${ADAPTER_WEIGHTS_NAME} (adapter_model.bin is not read)`);
    }
    throw e;
  }
  const { tensors } = readSafetensors(bytes);
  const trainable = new Float32Array(plan.layout.total);
  const problems: string[] = [];
  for (const s of plan.layout.specs) {
    const key = PEFT_PREFIX + s.name, t = tensors.get(key);
    if (!t) {
      problems.push(`missing tensor ${key} (shape [${s.shape}])`);
      continue;
    }
    tensors.delete(key);
    if (t.shape.length !== s.shape.length || t.shape.some((d, i) => d !== s.shape[i])) {
      const rank = s.name.endsWith(".lora_A.weight")
        ? t.shape[0]
        : s.name.endsWith(".lora_B.weight")
        ? t.shape[1]
        : undefined;
      problems.push(
        rank !== undefined && rank !== settings.lora.r
          ? `tensor ${key} has rank ${rank} but r is ${settings.lora.r}`
          : `tensor ${key} has shape [${t.shape}], expected [${s.shape}]`,
      );
      continue;
    }
    trainable.set(t.data, s.offset);
  }
  for (const key of tensors.keys()) problems.push(`unexpected tensor ${key}`);
  if (problems.length > 0) {
    const shown = problems.slice(0, 8).join("; ");
    const more = problems.length > 8 ? `; and ${problems.length - 8} more` : "";
    throw new Error(`${file}: does not match ${ADAPTER_CONFIG_NAME}: ${shown}${more}`);
  }
  return {
    plan,
    trainable,
    baseModel: settings.baseModel,
    raw: raw as Record<string, unknown>,
  };
}

/**
 * Writes the merged model — each adapted W + (α/r)·B·A and the trained head
 * (shared/model/lora.ts `mergeLora`) — as an ordinary Hugging Face folder
 * (`saveCheckpoint`).
 */
export async function saveMergedCheckpoint(
  dir: string,
  ck: {
    config: ModelConfig;
    base: Float32Array;
    plan: LoraPlan;
    trainable: Float32Array;
    baseLayout?: ParamLayout;
  },
  opts: SaveOptions = {},
): Promise<void> {
  const layout = ck.baseLayout ?? paramLayout(ck.config);
  const weights = mergeLora(ck.plan, layout, ck.base, ck.trainable);
  await saveCheckpoint(dir, { config: ck.config, weights }, opts);
}
