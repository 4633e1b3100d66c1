/**
 * Text → token ids for BERT (WordPiece) and RoBERTa (byte-level BPE) models.
 *
 * The heavy lifting is done by `@huggingface/tokenizers` (it reads any
 * Hugging Face `tokenizer.json`); a `vocab.txt` is first turned into the
 * `tokenizer.json` the reference `BertTokenizerFast` would use. Special tokens
 * and truncation are applied here, because the library deviates from the
 * reference `BertTokenizer` in a few places (checked against 0.2.0):
 *
 * - it does not split CJK ideographs above U+FFFF (it looks at UTF-16 code
 *   units); fixed by putting spaces around them before the library sees the text;
 * - its cleaner keeps unassigned (Cn) code points that BERT's cleaner drops
 *   (BERT drops every "C*" category except \t \n \r); fixed by dropping them first;
 * - it treats an empty `text_pair` as no pair (BERT: `[CLS] a [SEP] [SEP]`);
 *   fixed by encoding each text separately and adding the specials here;
 * - it has no truncation; done here, longest-first (see {@link truncateLongestFirst}).
 *
 * Literal special-token strings in the text (exactly `[SEP]`, `[CLS]`, `<s>`, …)
 * map to the special ids, as in the reference tokenizers, where they are added
 * tokens matched on the raw text before normalisation. A lower-cased `[sep]`
 * is ordinary text (`[`, `sep`, `]`).
 *
 * Known remaining differences: code points that are unassigned in Python's
 * Unicode database but assigned in the JavaScript engine's newer one are kept;
 * a Cn code point inside a literal special-token string (`[SE\u{E0000}P]`) is
 * dropped before the special token is matched, where the reference would not
 * match it.
 *
 * @module
 */

import { Tokenizer } from "@huggingface/tokenizers";
import { bertBaseUncasedVocab, parseVocabTxt } from "./vocab.ts";
import { parseMerges, robertaTokenizerJson } from "./roberta_vocab.ts";
import { isPlainObject } from "../io/plain_object.ts";

/** The model input for one example (no padding). */
export interface Encoding {
  inputIds: number[];
  tokenTypeIds: number[];
}

/** A tokenizer for one model family, with the ids of its special tokens. */
export interface TextTokenizer {
  /** "wordpiece" (BERT layout of specials) or "bpe" (RoBERTa layout). */
  readonly kind: "wordpiece" | "bpe";
  /** Number of token ids (highest id + 1). */
  readonly vocabSize: number;
  /** Id of the padding token. */
  readonly padId: number;
  /** Id of the sequence-start token (`[CLS]` / `<s>`). */
  readonly clsId: number;
  /** Id of the separator token (`[SEP]` / `</s>`). */
  readonly sepId: number;
  /** Id of the mask token (`[MASK]` / `<mask>`). */
  readonly maskId: number;
  /** Id of the unknown token (`[UNK]` / `<unk>`). */
  readonly unkId: number;
  /** Full model input with specials, truncated longest-first so the total length <= maxLen. */
  encode(text: string, pair: string | undefined, maxLen: number): Encoding;
  /** Token ids of `text` without specials (for MLM corpora). */
  tokenize(text: string): number[];
  /** The token string of an id; throws a RangeError for an id outside the vocabulary. */
  idToToken(id: number): string;
}

/** Names of the special tokens, per layout. */
const SPECIAL_NAMES = {
  wordpiece: { pad: "[PAD]", unk: "[UNK]", cls: "[CLS]", sep: "[SEP]", mask: "[MASK]" },
  bpe: { pad: "<pad>", unk: "<unk>", cls: "<s>", sep: "</s>", mask: "<mask>" },
} as const;

/** CJK ideograph code points above U+FFFF, as in BERT's `_is_chinese_char`. */
const ASTRAL_CJK = /[\u{20000}-\u{2A6DF}\u{2A700}-\u{2CEAF}\u{2F800}-\u{2FA1F}]/gu;
/** Unassigned code points (BERT's cleaner drops every "C*" category). */
const UNASSIGNED = /\p{Cn}/gu;

/**
 * Longest-first truncation of a pair of token lists to at most `budget` tokens
 * in total: repeatedly drop the last token of the longer list, and of the
 * second list when both are equally long. This is what the reference (Python)
 * `BertTokenizer`/`RobertaTokenizer` of transformers do (`truncate_sequences`,
 * "longest_first"). The Rust fast tokenizers differ only on a tie with an odd
 * budget, where they keep the extra token in the second list instead.
 * Returns new arrays; `b` undefined means a single sequence.
 */
export function truncateLongestFirst(
  a: readonly number[],
  b: readonly number[] | undefined,
  budget: number,
): [number[], number[] | undefined] {
  if (b === undefined) return [a.slice(0, Math.max(0, budget)), undefined];
  let na = a.length, nb = b.length;
  let excess = na + nb - budget;
  while (excess > 0) {
    if (na > nb) na--;
    else nb--;
    excess--;
  }
  return [a.slice(0, na), b.slice(0, nb)];
}

/**
 * Builds a Hugging Face `tokenizer.json` for an uncased (default) or cased BERT
 * WordPiece vocabulary, as `BertTokenizerFast` would save it: BertNormalizer,
 * BertPreTokenizer, WordPiece (`##` prefix, 100 characters per word at most),
 * TemplateProcessing `[CLS] $A [SEP] ($B:1 [SEP]:1)` and the five specials as
 * added tokens. Throws if a special token is missing from the vocabulary.
 */
export function wordPieceTokenizerJson(
  vocab: readonly string[],
  opts: { lowercase?: boolean } = {},
): Record<string, unknown> {
  // A repeated token keeps its last id, as the reference `load_vocab` does.
  const idOf = new Map<string, number>();
  for (const [i, token] of vocab.entries()) idOf.set(token, i);
  const names = SPECIAL_NAMES.wordpiece;
  const specials = [names.pad, names.unk, names.cls, names.sep, names.mask];
  const ids: Record<string, number> = {};
  for (const name of specials) {
    const id = idOf.get(name);
    if (id === undefined) throw new Error(`vocabulary has no ${name} token`);
    ids[name] = id;
  }
  const special = (id: string, typeId: number) => ({ SpecialToken: { id, type_id: typeId } });
  const sequence = (id: string, typeId: number) => ({ Sequence: { id, type_id: typeId } });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: specials.map((content) => ({
      id: ids[content],
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: {
      type: "BertNormalizer",
      clean_text: true,
      handle_chinese_chars: true,
      strip_accents: null,
      lowercase: opts.lowercase ?? true,
    },
    pre_tokenizer: { type: "BertPreTokenizer" },
    post_processor: {
      type: "TemplateProcessing",
      single: [special(names.cls, 0), sequence("A", 0), special(names.sep, 0)],
      pair: [
        special(names.cls, 0),
        sequence("A", 0),
        special(names.sep, 0),
        sequence("B", 1),
        special(names.sep, 1),
      ],
      special_tokens: Object.fromEntries(
        [names.cls, names.sep].map((t) => [t, { id: t, ids: [ids[t]], tokens: [t] }]),
      ),
    },
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: {
      type: "WordPiece",
      unk_token: names.unk,
      continuing_subword_prefix: "##",
      max_input_chars_per_word: 100,
      // fromEntries: tokens such as "__proto__" stay ordinary keys.
      vocab: Object.fromEntries(idOf),
    },
  };
}

/** Highest id in the model vocabulary and the added tokens, plus one. */
function countIds(json: Record<string, unknown>, model: Record<string, unknown>): number {
  let max = -1;
  const vocab = model.vocab;
  if (isPlainObject(vocab)) {
    for (const v of Object.values(vocab)) if (typeof v === "number" && v > max) max = v;
  } else if (Array.isArray(vocab)) {
    max = vocab.length - 1;
  }
  if (Array.isArray(json.added_tokens)) {
    for (const t of json.added_tokens) {
      if (isPlainObject(t) && typeof t.id === "number" && t.id > max) max = t.id;
    }
  }
  return max + 1;
}

/** The layout of a `tokenizer.json` model: WordPiece (BERT) or BPE (RoBERTa). */
function modelKind(model: Record<string, unknown>): TextTokenizer["kind"] {
  if (model.type === "WordPiece") return "wordpiece";
  if (model.type === "BPE") return "bpe";
  throw new Error(
    `tokenizer.json: unsupported model type ${JSON.stringify(model.type)} ` +
      `(expected "WordPiece" or "BPE")`,
  );
}

/**
 * The reference cleaning steps the library misses (see module docs): drop
 * unassigned code points, and split astral CJK ideographs, when the
 * `tokenizer.json` has a BERT normalizer that asks for them.
 */
function preCleaner(json: Record<string, unknown>): (text: string) => string {
  const norm = json.normalizer;
  const bert = isPlainObject(norm) && norm.type === "BertNormalizer";
  const cleanUnassigned = bert && norm.clean_text !== false;
  const splitAstralCjk = bert && norm.handle_chinese_chars !== false;
  return (text) => {
    if (cleanUnassigned) text = text.replace(UNASSIGNED, "");
    if (splitAstralCjk) text = text.replace(ASTRAL_CJK, " $& ");
    return text;
  };
}

/** Adds the specials of `kind`'s layout around one or two token lists already truncated. */
function withSpecials(
  kind: TextTokenizer["kind"],
  cls: number,
  sep: number,
  a: number[],
  b: number[] | undefined,
): Encoding {
  if (kind === "wordpiece") {
    const inputIds = [cls, ...a, sep];
    const tokenTypeIds = new Array<number>(inputIds.length).fill(0);
    if (b !== undefined) {
      inputIds.push(...b, sep);
      tokenTypeIds.push(...new Array<number>(b.length + 1).fill(1));
    }
    return { inputIds, tokenTypeIds };
  }
  const inputIds = b === undefined ? [cls, ...a, sep] : [cls, ...a, sep, sep, ...b, sep];
  return { inputIds, tokenTypeIds: new Array<number>(inputIds.length).fill(0) };
}

/** A {@link TextTokenizer} over an `@huggingface/tokenizers` Tokenizer. */
function hfTextTokenizer(json: Record<string, unknown>): TextTokenizer {
  const model = json.model;
  if (!isPlainObject(model)) throw new Error("tokenizer.json: no model object");
  const kind = modelKind(model);
  const full = {
    normalizer: null,
    pre_tokenizer: null,
    post_processor: null,
    decoder: null,
    ...json,
    added_tokens: Array.isArray(json.added_tokens) ? json.added_tokens : [],
  };
  const tok = new Tokenizer(full, {});
  const preClean = preCleaner(json);
  const special = (name: string): number => {
    const id = tok.token_to_id(name);
    if (id === undefined) throw new Error(`tokenizer: vocabulary has no ${name} token`);
    return id;
  };
  const names = SPECIAL_NAMES[kind];
  const tokenize = (text: string): number[] => {
    const cleaned = preClean(text);
    if (cleaned.length === 0) return [];
    return tok.encode(cleaned, { add_special_tokens: false }).ids;
  };
  const vocabSize = countIds(json, model);
  const padId = special(names.pad);
  const unkId = special(typeof model.unk_token === "string" ? model.unk_token : names.unk);
  const clsId = special(names.cls), sepId = special(names.sep), maskId = special(names.mask);
  return {
    kind,
    vocabSize,
    padId,
    clsId,
    sepId,
    maskId,
    unkId,
    tokenize,
    encode(text: string, pair: string | undefined, maxLen: number): Encoding {
      const hasPair = pair !== undefined;
      const specials = kind === "wordpiece" ? (hasPair ? 3 : 2) : (hasPair ? 4 : 2);
      if (!Number.isInteger(maxLen) || maxLen < specials) {
        throw new RangeError(
          `maxLen must be an integer >= ${specials} (the special tokens), got ${maxLen}`,
        );
      }
      const [a, b] = truncateLongestFirst(
        tokenize(text),
        hasPair ? tokenize(pair) : undefined,
        maxLen - specials,
      );
      return withSpecials(kind, clsId, sepId, a, b);
    },
    idToToken(id: number): string {
      const token = Number.isInteger(id) && id >= 0 ? tok.id_to_token(id) : undefined;
      if (token === undefined) throw new RangeError(`token id ${id} is not in the vocabulary`);
      return token;
    },
  };
}

/** Builds a tokenizer from a parsed Hugging Face `tokenizer.json` object. */
export function tokenizerFromJson(json: unknown): TextTokenizer {
  if (!isPlainObject(json)) throw new Error("tokenizer.json: expected a JSON object");
  return hfTextTokenizer(json);
}

/** A WordPiece tokenizer over a `vocab.txt`-style list (uncased unless told otherwise). */
export function wordPieceTokenizer(
  vocab: readonly string[],
  opts: { lowercase?: boolean } = {},
): TextTokenizer {
  return hfTextTokenizer(wordPieceTokenizerJson(vocab, opts));
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/** `do_lower_case` from a model folder's `tokenizer_config.json`, if it says. */
async function lowercaseSetting(modelDir: string): Promise<boolean | undefined> {
  const text = await readIfExists(`${modelDir}/tokenizer_config.json`);
  if (text === undefined) return undefined;
  const json: unknown = JSON.parse(text);
  return isPlainObject(json) && typeof json.do_lower_case === "boolean"
    ? json.do_lower_case
    : undefined;
}

/** Parses a byte-level BPE `vocab.json` (token → id). */
function parseVocabJson(path: string, text: string): Map<string, number> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`);
  }
  if (!isPlainObject(json)) throw new Error(`${path}: expected a JSON object of token → id`);
  const vocab = new Map<string, number>();
  for (const [token, id] of Object.entries(json)) {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0) {
      throw new Error(`${path}: id of ${JSON.stringify(token)} must be a non-negative integer`);
    }
    vocab.set(token, id);
  }
  return vocab;
}

/**
 * Loads the tokenizer of a model folder: its `tokenizer.json` if present, else
 * its `vocab.txt` (uncased unless `tokenizer_config.json` says
 * `"do_lower_case": false`), else its `vocab.json` + `merges.txt` (byte-level
 * BPE in RoBERTa's layout, as `RobertaTokenizerFast` builds it from them).
 * Without a folder: the built-in bert-base-uncased vocabulary.
 */
export async function loadTokenizer(modelDir?: string): Promise<TextTokenizer> {
  if (modelDir === undefined) return wordPieceTokenizer(bertBaseUncasedVocab());
  const jsonText = await readIfExists(`${modelDir}/tokenizer.json`);
  if (jsonText !== undefined) {
    let json: unknown;
    try {
      json = JSON.parse(jsonText);
    } catch (e) {
      throw new Error(`${modelDir}/tokenizer.json: ${(e as Error).message}`);
    }
    return tokenizerFromJson(json);
  }
  const vocabText = await readIfExists(`${modelDir}/vocab.txt`);
  if (vocabText !== undefined) {
    const lowercase = await lowercaseSetting(modelDir);
    return wordPieceTokenizer(parseVocabTxt(vocabText), { lowercase });
  }
  const vocabJson = await readIfExists(`${modelDir}/vocab.json`);
  const mergesTxt = await readIfExists(`${modelDir}/merges.txt`);
  if (vocabJson !== undefined && mergesTxt !== undefined) {
    const vocab = parseVocabJson(`${modelDir}/vocab.json`, vocabJson);
    return tokenizerFromJson(robertaTokenizerJson(vocab, parseMerges(mergesTxt)));
  }
  throw new Error(`${modelDir}: no tokenizer.json, vocab.txt, or vocab.json + merges.txt`);
}
