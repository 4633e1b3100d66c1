/**
 * What the scoring commands (`deno task evaluate`, `deno task predict`)
 * share: the `--model` flag, loading a checkpoint with its tokenizer, starting
 * the scoring backend, and exiting 1 with one `error:` line on failure (usage
 * errors exit 2 before; see shared/cli/flags.ts).
 *
 * @module
 */
import { loadCheckpoint, type LoadedCheckpoint, type LoadOptions } from "../io/checkpoint.ts";
import type { BackendOptions } from "../compute/backend.ts";
import { scoringModel } from "../eval/held_out.ts";
import { loadTokenizer, type TextTokenizer } from "../text/tokenizer.ts";
import { InputError } from "../io/input_error.ts";
import { loadPeftAdapter } from "../io/peft.ts";
import { mergeLora } from "../model/lora.ts";

/** `--model DIR`: the Hugging Face checkpoint folder a scoring command reads. */
export const MODEL_FLAG = {
  model: {
    type: "string",
    required: true,
    help: "Hugging Face checkpoint folder, or a Hub name in the local HF cache",
  },
  adapter: {
    type: "string",
    help: "a PEFT LoRA adapter folder to apply to --model (its base)",
  },
} as const;

/**
 * The checkpoint at `dir` (its notes printed to stderr) and the tokenizer
 * beside it; with `adapter`, a PEFT LoRA adapter folder merged into it
 * (W + (α/r)·B·A and the adapter's head: the logits of base + adapter).
 */
export async function loadScored(
  dir: string,
  opts: LoadOptions = {},
  adapter?: string,
): Promise<{ ck: LoadedCheckpoint; tokenizer: TextTokenizer }> {
  let ck = await loadCheckpoint(dir, opts);
  if (adapter) {
    const a = await loadPeftAdapter(adapter, ck.config);
    ck = {
      ...ck,
      weights: mergeLora(a.plan, ck.layout, ck.weights, a.trainable),
      // The adapter saves the head (modules_to_save): it is trained.
      freshHead: false,
      notes: [
        ...ck.notes.filter((n) => !/classifier|head/i.test(n)),
        `applied the LoRA adapter ${adapter} (r=${a.plan.lora.r})`,
      ],
    };
  }
  for (const note of ck.notes) console.error(`note: ${note}`);
  return { ck, tokenizer: await loadTokenizer(dir) };
}

/** {@link scoringModel} on the requested backend, its one-line description printed to stderr. */
export async function startScoring(
  ck: LoadedCheckpoint,
  request: { requested: string | undefined; opts: BackendOptions },
): Promise<Awaited<ReturnType<typeof scoringModel>>> {
  const scoring = await scoringModel(ck, request.requested, request.opts);
  console.error(scoring.line);
  return scoring;
}

/**
 * Runs a command's body; any error is printed as `error: message` and the
 * process exits 2 for bad input (shared/io/input_error.ts), else 1.
 */
export async function runOrExit(body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    Deno.exit(e instanceof InputError ? 2 : 1);
  }
}
