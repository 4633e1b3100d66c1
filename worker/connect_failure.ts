/**
 * Why a worker could not open its WebSocket, in words an operator can act
 * on: nothing listening, a host name that does not resolve, or a server that
 * answers HTTP but not the WebSocket upgrade on that path (a wrong `--url`
 * path, or a proxy that does not forward upgrades).
 *
 * @module
 */
import { peerText } from "../shared/wire/peer_text.ts";

/** Deno's prefix of every failed WebSocket connect. */
const DENO_PREFIX = /^(?:NetworkError: )?failed to connect to WebSocket: /;

/**
 * The reason `url` could not be reached, from the socket's error message
 * (`null`: the socket closed without one).
 */
export function connectFailure(url: string, socketError: string | null): string {
  const raw = (socketError ?? "").replace(DENO_PREFIX, "");
  let where: URL | null = null;
  try {
    where = new URL(url);
  } catch { /* described below without host or path */ }
  const status = /status code:? (\d{3})/i.exec(raw);
  if (status) {
    const path = where?.pathname ?? "the path";
    return `the server answers HTTP, but ${path} is not a WebSocket endpoint there: HTTP ${
      status[1]
    } (the coordinator's is /ws: --url ws://HOST:PORT/ws)`;
  }
  const hostPort = where ? where.host : url;
  if (/tcp connect|connection refused|os error 111/i.test(raw)) {
    return `nothing accepts connections at ${hostPort} (${peerText(raw)})`;
  }
  if (/dns|lookup|resolve/i.test(raw)) {
    return `cannot resolve ${where?.hostname ?? url} (${peerText(raw)})`;
  }
  return raw ? peerText(raw) : "the connection closed before it opened";
}
