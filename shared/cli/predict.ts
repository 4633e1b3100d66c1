/**
 * `deno task predict --model DIR [--adapter DIR] --input FILE.jsonl [--backend B] [--threads N] [--max-len N]`:
 * prints one `{"logits": [...], "probabilities": [...], "label": ...}` line
 * per input line `{"text": ..., "text_pair"?: ...}`. `label` is the predicted
 * class name (id2label) or, for regression, the score (and no
 * probabilities). A checkpoint without a trained classifier head is warned
 * about on stderr.
 *
 * @module
 */
import { exitOnFlagError, type FlagSpecs, parseFlagsOrExit } from "./flags.ts";
import { readJsonl } from "../data/jsonl.ts";
import { BACKEND_FLAGS, backendRequest } from "../compute/backend.ts";
import { EncodedSet } from "../data/batching.ts";
import { logitsOf, predictionsFromLogits } from "../eval/held_out.ts";
import { loadScored, MODEL_FLAG, runOrExit, startScoring } from "./scoring.ts";
import { maxSequenceLength } from "../model/config.ts";
import { resolveModel } from "../io/hf_cache.ts";
import { batchSizeFlag, maxLenFlag } from "./flag_rules.ts";
import { predictionLine, untrainedHeadWarning } from "./probabilities.ts";

const USAGE =
  "Usage: deno task predict --model DIR [--adapter DIR] --input FILE.jsonl [--backend B] [--threads N] [--max-len N]";

/** The flags (docs/architecture.md lists the commands; README, "Flags of the other commands"). */
export const PREDICT_FLAGS = {
  ...MODEL_FLAG,
  input: { type: "string", required: true, help: "JSONL lines {text, text_pair?}" },
  ...BACKEND_FLAGS,
  "max-len": maxLenFlag(512),
  "batch-size": batchSizeFlag(32),
} as const satisfies FlagSpecs;

if (import.meta.main) {
  const flags = parseFlagsOrExit(Deno.args, PREDICT_FLAGS, USAGE);
  const request = exitOnFlagError(() => backendRequest(flags));
  await runOrExit(async () => {
    const { ck, tokenizer } = await loadScored(await resolveModel(flags.model), {}, flags.adapter);
    if (ck.freshHead) console.error(untrainedHeadWarning(flags.model));
    const records = await readJsonl(flags.input);
    const examples = records.map((r) => ({ text: r.text, textPair: r.textPair, label: 0 }));
    const set = new EncodedSet(
      examples,
      tokenizer,
      Math.min(flags["max-len"], maxSequenceLength(ck.config)),
    );
    const scoring = await startScoring(ck, request);
    const logitsFn = logitsOf(scoring.model);
    const N = ck.config.numLabels, bs = flags["batch-size"];
    for (let i = 0; i < examples.length; i += bs) {
      const idx = Array.from({ length: Math.min(bs, examples.length - i) }, (_, k) => i + k);
      const logits = await logitsFn(set.batch(idx));
      const preds = predictionsFromLogits(logits, N);
      const lines = idx.map((_, k) => {
        const label = N === 1 ? preds[k] : (ck.config.id2label?.[preds[k]] ?? preds[k]);
        return predictionLine(logits.subarray(k * N, (k + 1) * N), label);
      });
      console.log(lines.join("\n"));
    }
    scoring.dispose();
  });
}
