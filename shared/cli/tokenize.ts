/**
 * `deno task tokenize --model DIR --input FILE.jsonl [--max-len N]`: prints one
 * `{"input_ids": [...], "token_type_ids": [...]}` line per input line
 * `{"text": ..., "text_pair"?: ...}`, with the model's special tokens and
 * longest-first truncation to `--max-len`.
 *
 * @module
 */

import { parseFlagsOrExit } from "./flags.ts";
import { parseJsonl } from "../data/jsonl.ts";
import { loadTokenizer } from "../text/tokenizer.ts";
import { resolveModel } from "../io/hf_cache.ts";
import { maxLenFlag } from "./flag_rules.ts";

const USAGE = `Usage: deno task tokenize --model DIR --input FILE.jsonl [--max-len N]

Tokenizes each line {"text": ..., "text_pair"?: ...} of the input and prints
{"input_ids": [...], "token_type_ids": [...]} per line, in order.`;

/** The flags (README, "Flags of the other commands"). */
export const TOKENIZE_FLAGS = {
  model: {
    type: "string",
    help:
      "model folder with tokenizer.json or vocab.txt, or a Hub name in the local HF cache (default: built-in bert-base-uncased)",
  },
  input: { type: "string", help: "JSONL input file ('-' for stdin)", required: true },
  "max-len": maxLenFlag(512, "maximum sequence length, specials included"),
} as const;

async function readInput(path: string): Promise<string> {
  if (path === "-") return await new Response(Deno.stdin.readable).text();
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`${path}: cannot read: ${(e as Error).message}`);
  }
}

async function writeAll(bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await Deno.stdout.write(bytes.subarray(off));
}

/** Runs the command on `args`; returns the exit status. */
export async function main(args: string[]): Promise<number> {
  const flags = parseFlagsOrExit(args, TOKENIZE_FLAGS, USAGE);
  const maxLen = flags["max-len"];
  try {
    const modelDir = flags.model === undefined ? undefined : await resolveModel(flags.model);
    const tokenizer = await loadTokenizer(modelDir);
    const source = flags.input === "-" ? "<stdin>" : flags.input;
    const records = parseJsonl(await readInput(flags.input), source);
    const enc = new TextEncoder();
    let chunk: string[] = [];
    for (const rec of records) {
      const e = tokenizer.encode(rec.text, rec.textPair, maxLen);
      chunk.push(JSON.stringify({ input_ids: e.inputIds, token_type_ids: e.tokenTypeIds }));
      if (chunk.length >= 1000) {
        await writeAll(enc.encode(chunk.join("\n") + "\n"));
        chunk = [];
      }
    }
    if (chunk.length > 0) await writeAll(enc.encode(chunk.join("\n") + "\n"));
    return 0;
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
