/**
 * A LoRA run on the coordinator (README, "LoRA"): the frozen base, the hash
 * that names it on the wire, the trainable buffer the optimizer updates (layout
 * `plan.layout`: adapters and the head), and what is written to disk — a PEFT
 * adapter folder for `--save DIR/model` and, with `--merge`, the merged model
 * at `DIR/merged`.
 *
 * The base goes to each worker once, as a `base` message prepared here once
 * for every worker, and only to a worker whose hello does not list its hash
 * (docs/protocol.md, "LoRA: the base by hash"); each step's `weights` message
 * carries the trainable buffer only.
 *
 * @module
 */
import { join } from "node:path";
import {
  type LoadedCheckpoint,
  type SaveOptions,
  TOKENIZER_FILES,
} from "../shared/io/checkpoint.ts";
import { loadPeftAdapter, saveMergedCheckpoint, savePeftAdapter } from "../shared/io/peft.ts";
import { baseHash } from "../shared/model/base_hash.ts";
import type { ModelConfig } from "../shared/model/config.ts";
import { initTrainable, type LoraPlan, loraPlan, mergeLora } from "../shared/model/lora.ts";
import type { ParamLayout } from "../shared/model/param_layout.ts";
import type { HelloMessage, WelcomeLora } from "../shared/wire/protocol.ts";
import { type Outgoing, prepareMessage } from "../shared/wire/transfer.ts";
import type { LoraSettings } from "./lora_flags.ts";

/** A resumed LoRA run's state, from its checkpoint (coordinator/run_state.ts). */
export interface ResumedLora {
  readonly plan: LoraPlan;
  readonly trainable: Float32Array;
  readonly baseHash: string;
}

/** What a LoRA run starts from. */
export interface LoraStart {
  readonly settings: LoraSettings;
  /** The base model as loaded (head and pooler initialised where the checkpoint had none). */
  readonly model: Pick<LoadedCheckpoint, "config" | "layout" | "weights" | "freshPooler">;
  readonly seed: number;
  /** `--model` as given: the adapter's `base_model_name_or_path`. */
  readonly baseModel: string | null;
  /** The checkpoint's LoRA state, for `--resume`. */
  readonly resumed?: ResumedLora | null;
}

/** The coordinator's side of a LoRA run. */
export class LoraRun {
  readonly plan: LoraPlan;
  /** The frozen base, in the ordinary layout `baseLayout`. */
  readonly base: Float32Array;
  readonly baseLayout: ParamLayout;
  readonly config: ModelConfig;
  /** shared/model/base_hash.ts of the base: its name on the wire and in checkpoints. */
  readonly baseHash: string;
  /** What trains (layout `plan.layout`), updated in place by the optimizer. */
  readonly trainable: Float32Array;
  readonly baseModel: string | null;
  readonly merge: boolean;
  /** Lines for the run's notes. */
  readonly notes: string[] = [];
  #baseFrame: Outgoing | null = null;

  private constructor(
    fields: Omit<
      LoraRun,
      "notes" | "welcome" | "baseFor" | "merged" | "save" | "saveMerged" | "baseFrame"
    >,
  ) {
    this.plan = fields.plan;
    this.base = fields.base;
    this.baseLayout = fields.baseLayout;
    this.config = fields.config;
    this.baseHash = fields.baseHash;
    this.trainable = fields.trainable;
    this.baseModel = fields.baseModel;
    this.merge = fields.merge;
  }

  /**
   * The plan (from the flags, the `--adapter` folder or the resumed
   * checkpoint), the base's hash and the trainable buffer at the run's start.
   * A resumed run's base must hash as its checkpoint says.
   */
  static async start(s: LoraStart): Promise<LoraRun> {
    const { model, settings } = s;
    const hash = baseHash(model.layout, model.weights);
    let plan: LoraPlan, trainable: Float32Array;
    const notes: string[] = [];
    if (s.resumed) {
      if (s.resumed.baseHash !== hash) {
        throw new Error(
          `--resume: the base model's hash is ${
            hash.slice(0, 16)
          }…, the checkpoint was trained on ` +
            `${s.resumed.baseHash.slice(0, 16)}… (resume with the same --model and --seed)`,
        );
      }
      ({ plan, trainable } = s.resumed);
    } else if (settings.adapter) {
      ({ plan, trainable } = await loadPeftAdapter(settings.adapter, model.config));
      if (!plan.trainPooler && model.freshPooler && model.config.modelType === "bert") {
        notes.push(
          `the base has no pooler and the adapter ${settings.adapter} does not save one: ` +
            `the pooler stays at its fresh initialisation, frozen`,
        );
      }
      notes.push(`continuing the PEFT adapter ${settings.adapter}`);
    } else {
      plan = loraPlan(model.config, settings, { trainPooler: model.freshPooler ?? false });
      trainable = initTrainable(plan, model.layout, model.weights, s.seed);
    }
    const run = new LoraRun({
      plan,
      base: model.weights,
      baseLayout: model.layout,
      config: model.config,
      baseHash: hash,
      trainable,
      baseModel: s.baseModel,
      merge: settings.merge,
    });
    const { lora } = plan;
    const share = (100 * plan.layout.total / model.layout.total).toFixed(2);
    run.notes.push(
      `LoRA r=${lora.r} α=${lora.alpha} dropout=${lora.dropout} on ${plan.modules.join(", ")}: ` +
        `${plan.layout.total} trainable values (${share}% of ${model.layout.total}); ` +
        `base ${hash.slice(0, 12)}… frozen; head trained in full (${
          plan.modulesToSave.join(", ")
        })`,
      ...notes,
    );
    if (plan.trainPooler) {
      run.notes.push(
        "the checkpoint has no pooler: it was initialised fresh and trains in full with the head",
      );
    }
    return run;
  }

  /** The welcome's `lora` field for a worker whose hello listed `hello.bases`. */
  welcome(hello?: Pick<HelloMessage, "bases">): WelcomeLora {
    const { lora } = this.plan;
    return {
      r: lora.r,
      alpha: lora.alpha,
      dropout: lora.dropout,
      targetModules: [...lora.targetModules],
      trainPooler: this.plan.trainPooler,
      baseHash: this.baseHash,
      baseFollows: !this.#has(hello),
    };
  }

  /** The `base` message for a worker that does not hold the base, else null. */
  baseFor(runId: string, hello?: Pick<HelloMessage, "bases">): Outgoing | null {
    if (this.#has(hello)) return null;
    return this.baseFrame(runId);
  }

  /** The `base` message, prepared once (chunked) and sent to every worker that needs it. */
  baseFrame(runId: string): Outgoing {
    this.#baseFrame ??= prepareMessage({
      type: "base",
      runId,
      hash: this.baseHash,
      data: this.base,
    });
    return this.#baseFrame;
  }

  #has(hello?: Pick<HelloMessage, "bases">): boolean {
    return hello?.bases?.includes(this.baseHash) ?? false;
  }

  /** The merged model (base layout): for local evaluation and `--merge`. */
  merged(): Float32Array {
    return mergeLora(this.plan, this.baseLayout, this.base, this.trainable);
  }

  /**
   * Writes the PEFT adapter folder `dir`: adapter_config.json and
   * adapter_model.safetensors (`base_model_name_or_path` = `--model` as
   * given), and the tokenizer files of `opts.copyTokenizerFrom`.
   */
  async save(dir: string, opts: SaveOptions = {}): Promise<void> {
    await savePeftAdapter(dir, this.config, this.plan, this.trainable, {
      baseModel: this.baseModel,
    });
    if (opts.copyTokenizerFrom) await copyTokenizer(opts.copyTokenizerFrom, dir);
  }

  /** Writes the merged model (W + (α/r)·B·A, the trained head) as a Hugging Face folder `dir`. */
  async saveMerged(dir: string, opts: SaveOptions = {}): Promise<void> {
    await saveMergedCheckpoint(dir, {
      config: this.config,
      base: this.base,
      plan: this.plan,
      trainable: this.trainable,
      baseLayout: this.baseLayout,
    }, opts);
  }
}

/** Copies the tokenizer files that exist in `from` into `to`. */
export async function copyTokenizer(from: string, to: string): Promise<void> {
  for (const f of TOKENIZER_FILES) {
    await Deno.copyFile(join(from, f), join(to, f)).catch(() => {});
  }
}
