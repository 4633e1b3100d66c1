/**
 * The LoRA flags of a training run (`--lora R`, `--lora-alpha`,
 * `--lora-targets`, `--lora-dropout`, `--adapter DIR`, `--merge`), their
 * checks and how a checkpoint stores them. coordinator/lora_run.ts turns the
 * resolved {@link LoraSettings} into a plan against the loaded model.
 *
 * @module
 */
import { FlagError } from "../shared/cli/flags.ts";
import { DEFAULT_LORA } from "../shared/model/lora.ts";

/** The LoRA flags, merged into the training flags (coordinator/run_config.ts). */
export const LORA_FLAGS = {
  lora: {
    type: "int",
    help: "train LoRA adapters of rank R on a frozen base (0 or absent: full fine-tuning)",
  },
  "lora-alpha": { type: "number", help: "LoRA α: the adapters are scaled by α/R (default: R)" },
  "lora-targets": {
    type: "string",
    help: `modules to adapt, Hugging Face names, comma-separated (default ${
      DEFAULT_LORA.targetModules.join(",")
    })`,
  },
  "lora-dropout": { type: "number", help: "dropout on the adapters' input (default 0)" },
  adapter: {
    type: "string",
    help: "continue training this PEFT LoRA adapter folder (its config sets rank, α, targets)",
  },
  merge: { type: "boolean", help: "LoRA: also write the merged full model to --save DIR/merged" },
} as const;

/** What the stored-flag readers need of a run's config (coordinator/run_config.ts `RunConfig`). */
type WithLora = { readonly training: { readonly lora: LoraSettings | null } };

/** A run's LoRA settings, as the flags give them. */
export interface LoraSettings {
  /** Rank; 0 when the rank comes from `adapter`. */
  readonly r: number;
  readonly alpha: number;
  readonly dropout: number;
  readonly targetModules: readonly string[];
  /** A PEFT adapter folder to continue (its config wins); null: new adapters. */
  readonly adapter: string | null;
  /** Also write the merged model to `--save DIR/merged`. */
  readonly merge: boolean;
}

/** The parsed flags {@link resolveLora} reads. */
export interface LoraFlagValues {
  readonly objective: string;
  readonly lora?: number;
  readonly "lora-alpha"?: number;
  readonly "lora-targets"?: string;
  readonly "lora-dropout"?: number;
  readonly adapter?: string;
  readonly merge: boolean;
}

/** Checks the LoRA flags; null: full fine-tuning. Every refusal names the flag. */
export function resolveLora(f: LoraFlagValues): LoraSettings | null {
  const r = f.lora ?? 0;
  if (!(Number.isSafeInteger(r) && r >= 0)) {
    throw new FlagError(`--lora must be a non-negative integer rank, got ${f.lora}`);
  }
  const tuning = ["lora-alpha", "lora-targets", "lora-dropout"] as const;
  if (f.adapter !== undefined) {
    if (r > 0) {
      throw new FlagError(
        "give --lora R or --adapter DIR, not both (the adapter's config sets its rank)",
      );
    }
    for (const k of tuning) {
      if (f[k] !== undefined) {
        throw new FlagError(`--${k} cannot change an --adapter (its adapter_config.json sets it)`);
      }
    }
  } else if (r === 0) {
    for (const k of [...tuning, "merge"] as const) {
      if (f[k] !== undefined && f[k] !== false) {
        throw new FlagError(`--${k} needs --lora R (or --adapter DIR)`);
      }
    }
    return null;
  }
  if (f.objective !== "classify") {
    throw new FlagError(
      `--lora / --adapter with --objective ${f.objective} is not supported yet (classification only)`,
    );
  }
  const alpha = f["lora-alpha"] ?? r;
  if (f.adapter === undefined && !(Number.isFinite(alpha) && alpha > 0)) {
    throw new FlagError(`--lora-alpha must be > 0, got ${alpha}`);
  }
  const dropout = f["lora-dropout"] ?? 0;
  if (!(dropout >= 0 && dropout < 1)) {
    throw new FlagError(`--lora-dropout must be in [0, 1), got ${dropout}`);
  }
  const targets = f["lora-targets"] === undefined
    ? [...DEFAULT_LORA.targetModules]
    : f["lora-targets"].split(",").map((t) => t.trim()).filter((t) => t.length > 0);
  if (targets.length === 0) throw new FlagError("--lora-targets needs at least one module name");
  return {
    r,
    alpha,
    dropout,
    targetModules: targets,
    adapter: f.adapter ?? null,
    merge: f.merge,
  };
}

/** How a checkpoint stores the LoRA flags (coordinator/run_config.ts, `storedSettings`). */
export const STORED_LORA_FLAGS = {
  lora: (c: WithLora) => c.training.lora?.r || null,
  "lora-alpha": (c: WithLora) =>
    c.training.lora && !c.training.lora.adapter ? c.training.lora.alpha : null,
  "lora-targets": (c: WithLora) =>
    c.training.lora && !c.training.lora.adapter ? c.training.lora.targetModules.join(",") : null,
  "lora-dropout": (c: WithLora) =>
    c.training.lora && !c.training.lora.adapter ? c.training.lora.dropout : null,
  adapter: (c: WithLora) => c.training.lora?.adapter ?? null,
  merge: (c: WithLora) => c.training.lora?.merge ?? false,
};
