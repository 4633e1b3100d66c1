/**
 * The one check that a parsed value — from `JSON.parse` (config.json,
 * tokenizer.json, safetensors headers, JSONL lines, `--config`) or a decoded
 * msgpack frame (shared/wire/) — is a plain object, whose fields may then be
 * read by name.
 *
 * @module
 */

/**
 * Whether `v` is a plain object: its prototype is `Object.prototype` or null.
 * Arrays, typed arrays, maps, dates and class instances are not.
 */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== "object" || v === null) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}
