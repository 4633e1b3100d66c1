/**
 * Text that came from the network, made safe for a terminal log line.
 *
 * A peer chooses its error messages, close reasons, backend, device and host
 * names and worker id; logged raw, its escape sequences would drive the
 * operator's terminal (move the cursor, retitle the window, hide lines) and
 * one message could fill the scrollback. {@link peerText} escapes every
 * control character — C0 (`\n` `\r` `\t` as such, the rest as `\xHH`, so ESC
 * is `\x1b`), DEL, C1, the line and paragraph separators, the bidirectional
 * overrides and isolates, and lone surrogates (`\uHHHH`) — keeps ordinary
 * Unicode as it is, and cuts the result to {@link PEER_TEXT_MAX} characters
 * with a note of the original length. Every log site that prints such text,
 * on the coordinator and on the worker, goes through it.
 *
 * @module
 */

/** The longest escaped peer text a log line shows (the note of the cut comes on top). */
export const PEER_TEXT_MAX = 300;

const NAMED: Readonly<Record<string, string>> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

/**
 * Control and formatting characters that change what a terminal shows:
 * C0, DEL, C1, U+2028/U+2029, the bidi embeddings/overrides (U+202A–U+202E)
 * and isolates (U+2066–U+2069), and lone surrogates.
 */
// deno-lint-ignore no-control-regex -- matching control characters is the point
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]|\p{Surrogate}/u;

function escapeChar(ch: string): string {
  const named = NAMED[ch];
  if (named) return named;
  const code = ch.charCodeAt(0);
  return code <= 0xff
    ? `\\x${code.toString(16).padStart(2, "0")}`
    : `\\u${code.toString(16).padStart(4, "0")}`;
}

/**
 * `text` (any value a peer sent; non-strings go through `String`) with its
 * control characters escaped and, when the escaped form is longer than `max`
 * characters, cut there (never inside an escape or a surrogate pair) and
 * followed by `… [cut: N characters in all]`, N being the original length.
 */
export function peerText(text: unknown, max: number = PEER_TEXT_MAX): string {
  const s = typeof text === "string" ? text : String(text);
  let out = "";
  for (const ch of s) { // by code point: a valid pair stays whole, a lone surrogate is one
    const piece = UNSAFE.test(ch) ? escapeChar(ch) : ch;
    if (out.length + piece.length > max) {
      return `${out}… [cut: ${s.length} characters in all]`;
    }
    out += piece;
  }
  return out;
}
