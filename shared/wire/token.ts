/**
 * The one comparison of a presented secret with the expected one: the run
 * token a worker's `hello` carries (shared/wire/protocol.ts, `checkToken`) and the
 * `--metrics-token` an HTTP request presents (coordinator/monitor_routes.ts).
 * It takes the same time whatever the content, so a peer cannot find the
 * token byte by byte from response times (docs/architecture.md, principle 6).
 *
 * @module
 */

/** Whether `given` equals `expected`, in time that depends only on their lengths. */
export function sameToken(given: string, expected: string): boolean {
  const a = new TextEncoder().encode(given), b = new TextEncoder().encode(expected);
  let diff = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) diff |= (a[i] ?? 0) ^ b[i];
  return diff === 0;
}
