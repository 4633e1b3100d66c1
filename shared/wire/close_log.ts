/**
 * The log line of a closed connection, the same on both sides: who closed
 * it, the close code with its meaning, the peer's reason and the socket's
 * error, what was lost (partial transfers dropped, messages never written)
 * and what happens next. coordinator/server.ts logs one per worker
 * connection, worker/client.ts one per connection to the coordinator.
 *
 * @module
 */
import { peerText } from "./peer_text.ts";
import type { Dropped } from "./transfer.ts";

const CLOSE_CODES: Record<number, string> = {
  0: "no close frame: the connection failed",
  1000: "normal",
  1001: "going away",
  1002: "protocol error",
  1003: "unsupported data",
  1005: "no status",
  1006: "abnormal: no close frame",
  1008: "policy violation",
  1009: "message too big",
  1011: "internal error",
  4000: "silent too long",
};

/**
 * Why a WebSocket closed, for the log: the close code with its meaning, the
 * peer's reason, and the error the socket reported (Deno reports an
 * oversized incoming frame as "Frame too large" with code 0).
 */
export function describeClose(code: number, reason: string, error?: string | null): string {
  const parts = [`code ${code} (${CLOSE_CODES[code] ?? "application-defined"})`];
  parts.push(reason ? `reason "${peerText(reason)}"` : "no reason given");
  if (error) parts.push(`socket error: ${peerText(error)}`);
  return parts.join(", ");
}

/** How one connection ended, as the side that logs it saw it. */
export interface ConnectionEnd {
  /**
   * The peer the line is about (the coordinator's log: "worker w1"); what
   * was lost is then said of it ("from it", "to it"). Absent on a worker,
   * whose line is about its own connection.
   */
  readonly peer?: string;
  /** Who closed it, after "closed by": "this worker (bye)", "the coordinator or the network". */
  readonly closedBy: string;
  /** The code, reason and socket error ({@link describeClose}). */
  readonly how: string;
  /** The partial transfers the receiving side dropped. */
  readonly dropped: Dropped;
  /** Messages queued for the peer and never written. */
  readonly unsent: number;
  /** What happens next ("reconnecting"), if anything. */
  readonly next?: string;
}

const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

/**
 * The close log line: `[peer: ]connection closed by WHO: HOW[; lost][; next]`
 * (tests wait for "connection closed by this worker (bye)").
 */
export function closeLine(end: ConnectionEnd): string {
  const { dropped, unsent } = end;
  const from = end.peer === undefined ? "" : " from it";
  const to = end.peer === undefined ? "" : " to it";
  const lost = [
    dropped.transfers > 0
      ? `dropped ${dropped.transfers} partial transfer(s)${from} (${mb(dropped.receivedBytes)} of ${
        mb(dropped.declaredBytes)
      })`
      : "",
    unsent > 0 ? `${unsent} message(s)${to} unsent` : "",
  ].filter((x) => x).join("; ");
  const who = end.peer === undefined ? "" : `${end.peer}: `;
  return `${who}connection closed by ${end.closedBy}: ${end.how}${lost ? `; ${lost}` : ""}${
    end.next ? `; ${end.next}` : ""
  }`;
}
