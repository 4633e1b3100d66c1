/**
 * A LoRA run's part of a checkpoint (coordinator/run_state.ts): the step
 * folder holds the trainable state as a PEFT adapter (adapter_config.json,
 * adapter_model.safetensors), the base's config.json and tokenizer files, and
 * run_state.json names the base by its hash (`lora.baseHash`). The base itself
 * is not copied: `--resume` loads it from the run's `--model` and checks the hash.
 *
 * @module
 */
import { join } from "node:path";
import { atomicWriteFile } from "../shared/io/atomic_write.ts";
import { isPlainObject } from "../shared/io/plain_object.ts";
import { loadPeftAdapter, savePeftAdapter } from "../shared/io/peft.ts";
import { BASE_HASH_PATTERN } from "../shared/model/base_hash.ts";
import { type ModelConfig, parseModelConfig, toHfConfig } from "../shared/model/config.ts";
import type { LoraPlan } from "../shared/model/lora.ts";
import { copyTokenizer } from "./lora_run.ts";

/** The LoRA state a checkpoint keeps. */
export interface LoraState {
  readonly plan: LoraPlan;
  /** Layout `plan.layout`. */
  readonly trainable: Float32Array;
  /** shared/model/base_hash.ts of the base the run trains on. */
  readonly baseHash: string;
}

/** Writes the LoRA state into the step folder `folder`. */
export async function saveLoraState(
  folder: string,
  config: ModelConfig,
  state: LoraState,
  tokenizerFrom?: string,
): Promise<void> {
  await savePeftAdapter(folder, config, state.plan, state.trainable, { inferenceMode: false });
  await atomicWriteFile(join(folder, "config.json"), JSON.stringify(toHfConfig(config), null, 2));
  if (tokenizerFrom) await copyTokenizer(tokenizerFrom, folder);
}

/** Reads the LoRA state of the step folder `folder`; `meta` is run_state.json's `lora`. */
export async function loadLoraState(
  folder: string,
  meta: unknown,
): Promise<{ config: ModelConfig; state: LoraState }> {
  const hash = isPlainObject(meta) ? meta.baseHash : undefined;
  if (typeof hash !== "string" || !BASE_HASH_PATTERN.test(hash)) {
    throw new Error(`${folder}/run_state.json: lora.baseHash is missing or malformed`);
  }
  const config = parseModelConfig(JSON.parse(await Deno.readTextFile(join(folder, "config.json"))));
  const adapter = await loadPeftAdapter(folder, config);
  return { config, state: { plan: adapter.plan, trainable: adapter.trainable, baseHash: hash } };
}
