/**
 * `deno task evaluate --model DIR (--task NAME --data DIR | --eval FILE)`:
 * scores the held-out split; the last stdout line is one JSON object keyed
 * as GLUE names its metrics, plus "examples".
 *
 * @module
 */
import { exitOnFlagError, parseFlagsOrExit } from "./flags.ts";
import { loadTask } from "../data/task.ts";
import { loadTokenizer } from "../tokenizer.ts";
import { loadCheckpoint } from "../checkpoint.ts";
import { BACKEND_FLAGS, backendRequest } from "../backend.ts";
import { EncodedSet } from "../batching.ts";
import { evaluateSet, scoringModel } from "../evaluate.ts";

const USAGE =
  "Usage: deno task evaluate --model DIR (--task NAME [--data DIR] | --eval FILE) [--backend B] [--threads N]";

if (import.meta.main) {
  const flags = parseFlagsOrExit(
    Deno.args,
    {
      model: { type: "string", required: true, help: "Hugging Face checkpoint folder" },
      task: { type: "string", help: "imdb or a GLUE name (with --data)" },
      data: { type: "string", help: "GLUE task folder" },
      eval: { type: "string", help: "JSONL evaluation file" },
      ...BACKEND_FLAGS,
      "max-len": { type: "int", default: 128, help: "maximum tokens per example" },
      limit: { type: "int", default: 0, help: "score only the first N examples (0: all)" },
    } as const,
    USAGE,
  );
  if (!flags.task && !flags.eval) {
    console.error(
      "error: give --task NAME (with --data DIR for GLUE) or --eval FILE\nRun with --help for usage.",
    );
    Deno.exit(2);
  }
  const { requested, opts } = exitOnFlagError(() => backendRequest(flags));
  try {
    const probe = JSON.parse(await Deno.readTextFile(`${flags.model}/config.json`));
    const task = await loadTask({
      task: flags.task,
      data: flags.data,
      eval: flags.eval,
      label2id: probe.label2id,
    });
    const ck = await loadCheckpoint(flags.model, { numLabels: task.numLabels });
    for (const note of ck.notes) console.error(`note: ${note}`);
    const tokenizer = await loadTokenizer(flags.model);
    const scoring = await scoringModel(ck, requested, opts);
    console.error(scoring.line);
    const model = scoring.model;
    const maxLen = Math.min(flags["max-len"], ck.config.maxPositions);
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
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
