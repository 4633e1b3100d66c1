/**
 * Writes the built-in small BERT architecture, freshly initialised (as
 * Hugging Face initialises it, seeded), as a checkpoint folder: the
 * "random initialisation" that pre-trained checkpoints are compared with.
 *
 *   deno run -A bench/fresh_model.ts --out runs/random-init [--seed 1]
 *
 * @module
 */
import { initWeights, saveCheckpoint } from "../shared/checkpoint.ts";
import { parseFlagsOrExit } from "../shared/cli/flags.ts";
import { defaultModelConfigJson } from "../shared/default_model.ts";
import { parseModelConfig } from "../shared/model_config.ts";
import { bertBaseUncasedVocab, vocabToTxt } from "../shared/vocab.ts";

const flags = parseFlagsOrExit(
  Deno.args,
  {
    out: { type: "string", required: true, help: "folder to write" },
    seed: { type: "int", default: 1, help: "initialisation seed" },
  } as const,
  "deno run -A bench/fresh_model.ts --out DIR [--seed N]",
);
const config = parseModelConfig(defaultModelConfigJson(2));
await saveCheckpoint(flags.out, { config, weights: initWeights(config, flags.seed) });
await Deno.writeTextFile(`${flags.out}/vocab.txt`, vocabToTxt(bertBaseUncasedVocab()));
console.log(`wrote ${flags.out} (seed ${flags.seed})`);
