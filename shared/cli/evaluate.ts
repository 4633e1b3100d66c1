/**
 * `deno task evaluate --model DIR [--adapter DIR] (--task NAME --data DIR | --eval FILE)`:
 * scores the held-out split; the last stdout line is one JSON object keyed
 * as GLUE names its metrics, plus "examples".
 *
 * @module
 */
import { exitOnFlagError, type FlagSpecs, parseFlagsOrExit } from "./flags.ts";
import { loadTask } from "../data/task.ts";
import { BACKEND_FLAGS, backendRequest } from "../compute/backend.ts";
import { EncodedSet } from "../data/batching.ts";
import { evaluateSet } from "../eval/held_out.ts";
import { loadScored, MODEL_FLAG, runOrExit, startScoring } from "./scoring.ts";
import { maxSequenceLength } from "../model/config.ts";
import { resolveModel } from "../io/hf_cache.ts";
import { maxLenFlag } from "./flag_rules.ts";

const USAGE =
  "Usage: deno task evaluate --model DIR [--adapter DIR] (--task NAME [--data DIR] | --eval FILE) [--backend B] [--threads N]";

/** The flags (docs/architecture.md lists the commands; README, "Flags of the other commands"). */
export const EVALUATE_FLAGS = {
  ...MODEL_FLAG,
  task: { type: "string", help: "imdb or a GLUE name (with --data)" },
  data: { type: "string", help: "GLUE task folder" },
  eval: { type: "string", help: "JSONL evaluation file" },
  ...BACKEND_FLAGS,
  "max-len": maxLenFlag(128),
  limit: { type: "int", default: 0, help: "score only the first N examples (0: all)" },
} as const satisfies FlagSpecs;

/** The class count a checkpoint's config.json declares (`num_labels`, else its id2label). */
function checkpointLabels(
  config: { num_labels?: unknown; id2label?: unknown },
): number | undefined {
  if (typeof config.num_labels === "number") return config.num_labels;
  if (config.id2label && typeof config.id2label === "object") {
    return Object.keys(config.id2label).length;
  }
  return undefined;
}

if (import.meta.main) {
  const flags = parseFlagsOrExit(Deno.args, EVALUATE_FLAGS, USAGE);
  if (!flags.task && !flags.eval) {
    console.error(
      "error: give --task NAME (with --data DIR for GLUE) or --eval FILE\nRun with --help for usage.",
    );
    Deno.exit(2);
  }
  const request = exitOnFlagError(() => backendRequest(flags));
  await runOrExit(async () => {
    const modelDir = await resolveModel(flags.model);
    const probe = JSON.parse(await Deno.readTextFile(`${modelDir}/config.json`));
    const task = await loadTask({
      task: flags.task,
      data: flags.data,
      eval: flags.eval,
      label2id: probe.label2id,
      numLabels: checkpointLabels(probe),
    });
    const { ck, tokenizer } = await loadScored(
      modelDir,
      { numLabels: task.numLabels },
      flags.adapter,
    );
    const scoring = await startScoring(ck, request);
    const model = scoring.model;
    const maxLen = Math.min(flags["max-len"], maxSequenceLength(ck.config));
    const result = await evaluateSet(
      model,
      new EncodedSet(task.eval, tokenizer, maxLen),
      task.metricNames,
      {
        limit: flags.limit,
      },
    );
    for (const extra of task.extraEval) {
      const r = await evaluateSet(
        model,
        new EncodedSet(extra.examples, tokenizer, maxLen),
        task.metricNames,
      );
      console.log(JSON.stringify({ split: extra.name, ...r }));
    }
    scoring.dispose();
    console.log(JSON.stringify(result));
  });
}
