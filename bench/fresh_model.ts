/**
 * Writes the built-in small BERT architecture, freshly initialised (as
 * Hugging Face initialises it, seeded), as a checkpoint folder: the
 * "random initialisation" that pre-trained checkpoints are compared with.
 *
 *   deno run -A bench/fresh_model.ts --out runs/random-init [--seed 1]
 *
 * @module
 */
import { saveCheckpoint } from "../shared/io/checkpoint.ts";
import { parseFlagsOrExit } from "../shared/cli/flags.ts";
import { freshDefaultModel } from "../shared/model/default_model.ts";
import { bertBaseUncasedVocab, vocabToTxt } from "../shared/text/vocab.ts";

const flags = parseFlagsOrExit(
  Deno.args,
  {
    out: { type: "string", required: true, help: "folder to write" },
    seed: { type: "int", default: 1, help: "initialisation seed" },
  } as const,
  "deno run -A bench/fresh_model.ts --out DIR [--seed N]",
);
await saveCheckpoint(flags.out, freshDefaultModel({ numLabels: 2, seed: flags.seed }));
await Deno.writeTextFile(`${flags.out}/vocab.txt`, vocabToTxt(bertBaseUncasedVocab()));
console.log(`wrote ${flags.out} (seed ${flags.seed})`);
