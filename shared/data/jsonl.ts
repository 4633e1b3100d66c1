/**
 * User data as JSON Lines: one `{"text": ..., "text_pair"?: ..., "label"?: ...}`
 * object per line. Errors name the file and the line.
 *
 * @module
 */

import type { Example } from "./example.ts";
import { isPlainObject } from "../io/plain_object.ts";
import { labelOutOfRange } from "./label_check.ts";

/** One parsed JSONL line. */
export interface JsonlRecord {
  /** 1-based line number in the source. */
  line: number;
  text: string;
  textPair?: string;
  /** A label name or a number (class id or regression score), if the line has one. */
  label?: string | number;
}

/**
 * Parses JSONL text. Blank lines are skipped; every other line must be a JSON
 * object with a string `text`, an optional string `text_pair` and an optional
 * string or finite-number `label` (null counts as absent). `source` names the
 * input in error messages.
 */
export function parseJsonl(text: string, source: string): JsonlRecord[] {
  const records: JsonlRecord[] = [];
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  for (const [i, content] of lines.entries()) {
    if (content.trim() === "") continue;
    const line = i + 1;
    const where = `${source}:${line}`;
    let obj: unknown;
    try {
      obj = JSON.parse(content);
    } catch (e) {
      throw new Error(`${where}: bad JSON: ${(e as Error).message}`);
    }
    if (!isPlainObject(obj)) {
      throw new Error(`${where}: expected a JSON object, got ${describe(obj)}`);
    }
    const o = obj;
    if (!("text" in o)) throw new Error(`${where}: missing "text"`);
    if (typeof o.text !== "string") {
      throw new Error(`${where}: "text" must be a string, got ${describe(o.text)}`);
    }
    const rec: JsonlRecord = { line, text: o.text };
    if (o.text_pair !== undefined && o.text_pair !== null) {
      if (typeof o.text_pair !== "string") {
        throw new Error(`${where}: "text_pair" must be a string, got ${describe(o.text_pair)}`);
      }
      rec.textPair = o.text_pair;
    }
    if (o.label !== undefined && o.label !== null) {
      const ok = typeof o.label === "string" ||
        (typeof o.label === "number" && Number.isFinite(o.label));
      if (!ok) {
        throw new Error(
          `${where}: "label" must be a string or a number, got ${describe(o.label)}`,
        );
      }
      rec.label = o.label as string | number;
    }
    records.push(rec);
  }
  return records;
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return typeof v === "object" ? "an object" : `${typeof v} ${JSON.stringify(v)}`;
}

/** Reads and parses a JSONL file (see {@link parseJsonl}). */
export async function readJsonl(path: string): Promise<JsonlRecord[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`${path}: cannot read: ${(e as Error).message}`);
  }
  return parseJsonl(text, path);
}

/**
 * How labels turn into numbers: `labelNames` maps a string label to its index
 * (a number label must then be a valid class id); `null` means regression
 * (labels must be numbers, kept as they are).
 */
export function recordsToExamples(
  records: readonly JsonlRecord[],
  source: string,
  labelNames: readonly string[] | null,
): Example[] {
  const ids = new Map<string, number>(labelNames?.map((name, i) => [name, i]) ?? []);
  return records.map((rec) => {
    const where = `${source}:${rec.line}`;
    if (rec.label === undefined) throw new Error(`${where}: missing "label"`);
    let label: number;
    if (typeof rec.label === "string") {
      const id = ids.get(rec.label);
      if (labelNames === null) {
        throw new Error(`${where}: regression needs a number label, got "${rec.label}"`);
      }
      if (id === undefined) {
        throw new Error(
          `${where}: unknown label ${JSON.stringify(rec.label)} ` +
            `(known: ${labelNames.map((n) => JSON.stringify(n)).join(", ")})`,
        );
      }
      label = id;
    } else {
      label = rec.label;
      if (
        labelNames !== null && !(Number.isInteger(label) && label >= 0 && label < labelNames.length)
      ) {
        throw labelOutOfRange(where, label, labelNames.length);
      }
    }
    const ex: Example = { text: rec.text, label };
    if (rec.textPair !== undefined) ex.textPair = rec.textPair;
    return ex;
  });
}
