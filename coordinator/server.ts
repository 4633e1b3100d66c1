/**
 * The coordinator's HTTP face: the worker WebSocket `/ws` (handshake with
 * protocol version — checked when the hello is decoded — and run token,
 * then pull requests, results and evaluation results), and the routes the
 * observability module mounts (`/metrics`, `/status`, `/`).
 * Every frame a peer sends is decoded and validated by the protocol module;
 * a bad one is answered with an `error` message and dropped. Each connection
 * sends through its own flow-controlled queue and reassembles the worker's
 * chunked transfers (shared/transfer.ts); every close is logged with its
 * code, reason and socket error, and what it cost (partial transfers
 * dropped, messages unsent).
 *
 * @module
 */
import { Hono } from "hono";
import { upgradeWebSocket } from "hono/deno";
import type { WSContext } from "hono/ws";
import {
  checkToken,
  decodeMessage,
  DTYPES,
  encodeMessage,
  type ErrorCode,
  type HelloMessage,
  type Message,
  ProtocolError,
  toErrorMessage,
  type WelcomeMessage,
} from "../shared/protocol.ts";
import { type BufferPool, describeClose, Reassembler, Sender } from "../shared/transfer.ts";
import type { Scheduler, WorkerLink } from "./scheduler.ts";

/** What the WebSocket endpoint needs from the rest of the coordinator. */
export interface MeshContext {
  readonly scheduler: Scheduler;
  readonly token: string;
  /** Largest frame a worker may send (a safety limit on one frame; tensors travel chunked). */
  readonly maxFrameBytes: number;
  /** One backend for every worker (deterministic mode). */
  readonly requireBackend: () => string | null;
  welcome(workerId: string): WelcomeMessage;
  /** A peer's message was refused. */
  rejected?(reason: ErrorCode, detail: string): void;
  /** Frame sizes, for metrics. */
  bytes?(direction: "in" | "out", n: number): void;
  log(line: string): void;
  joined?(link: WorkerLink, hello: HelloMessage): void;
  left?(id: string, reason: string): void;
  /**
   * A connection that sends nothing (workers send a heartbeat every 10 s) for
   * this many ms is closed and its worker's tasks go to others; 0: never.
   */
  readonly silenceMs?: number;
  /**
   * Arrays the workers' transfers (result gradients) may be received into
   * instead of fresh memory: whoever is done with an accepted result's
   * gradient (the accumulator, once it has summed it) can recycle it here.
   * Without it every result lands in a new array (on this development VM,
   * never-touched memory comes at ~100–200 MB/s, which then bounds the
   * upload speed).
   */
  readonly receivePool?: BufferPool;
}

/** Stops what {@link mountMesh} started (the silence sweep). */
export interface MeshHandle {
  close(): void;
}

/** One open connection. */
interface Peer {
  /** The worker id while it is registered with the scheduler. */
  id: string | null;
  /** The worker id it joined as (kept after it is forgotten, for the close log). */
  joinedAs: string | null;
  lastSeen: number;
  readonly ws: WSContext;
  /** The connection's send queue (flow-controlled on the socket's bufferedAmount). */
  readonly sender: Sender;
  /** Chunked transfers from the worker, reassembled (after the handshake). */
  readonly receiver: Reassembler;
  /** Why we closed it, when we did. */
  closing: string | null;
  /** The last error the socket reported. */
  error: string | null;
}

function sendMessage(peer: Peer, m: Message): void {
  try {
    peer.sender.send(encodeMessage(m));
  } catch {
    // The connection is closed; its close handler cleans up.
  }
}

/** Closes a connection on purpose, after what is queued for it (an error reply) is written. */
function closePeer(peer: Peer, code: number, reason: string): void {
  peer.closing ??= reason;
  void peer.sender.drained().then(() => {
    try {
      peer.ws.close(code, reason);
    } catch {
      // Already closing.
    }
  });
}

/**
 * Answers a refused frame or message: reports it, sends the peer an `error`
 * with its code, and, before the handshake, closes the connection (policy
 * violation) once that reply is written.
 */
function refuse(
  ctx: MeshContext,
  peer: Peer,
  err: { code: ErrorCode; message: string },
  beforeHandshake: boolean,
): void {
  ctx.rejected?.(err.code, err.message);
  sendMessage(peer, { type: "error", code: err.code, message: err.message });
  if (beforeHandshake) closePeer(peer, 1008, err.code);
}

function frameBytes(data: unknown): Uint8Array {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (data instanceof Uint8Array) return data;
  throw new ProtocolError(
    "malformed",
    `expected a binary frame, got ${typeof data === "string" ? "text" : typeof data}`,
  );
}

const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

/**
 * Adds `/ws` to `app`. Connections silent for longer than `ctx.silenceMs`
 * are closed and their workers forgotten (a hung machine whose socket stays
 * open would otherwise hold tasks until their deadlines, step after step).
 * Every close is logged with its code, reason and socket error.
 */
export function mountMesh(app: Hono, ctx: MeshContext): MeshHandle {
  const peers = new Set<Peer>();
  const forget = (peer: Peer, reason: string) => {
    peers.delete(peer);
    if (peer.id === null) return;
    const id = peer.id;
    peer.id = null;
    ctx.scheduler.removeWorker(id);
    ctx.left?.(id, reason);
  };
  const silenceMs = ctx.silenceMs ?? 0;
  const sweep = silenceMs > 0
    ? setInterval(() => {
      const now = performance.now();
      for (const peer of peers) {
        if (now - peer.lastSeen <= silenceMs) continue;
        const what = peer.id === null ? "a connection" : `worker ${peer.id}`;
        ctx.log(`${what} sent nothing for ${silenceMs / 1000} s: dropped`);
        peer.closing = "silent";
        forget(peer, "silent");
        try {
          peer.ws.close(4000, "silent");
        } catch {
          // Already closing: nothing left to do.
        }
      }
    }, Math.min(5000, Math.max(50, silenceMs / 4)))
    : undefined;
  // A worker sends at most one tensor of the model's size (a dense gradient).
  const maxTransferBytes = () => DTYPES.f32.bytes * ctx.scheduler.options.gradLayout.total;
  app.get(
    "/ws",
    upgradeWebSocket(() => {
      let peer: Peer | null = null;
      return {
        onOpen(_evt, ws) {
          const raw = ws.raw as WebSocket;
          raw.binaryType = "arraybuffer";
          const p: Peer = {
            id: null,
            joinedAs: null,
            lastSeen: performance.now(),
            ws,
            sender: new Sender({
              send: (f) => ws.send(f),
              get bufferedAmount() {
                return raw.bufferedAmount;
              },
            }, { sent: (n) => ctx.bytes?.("out", n) }),
            receiver: new Reassembler({
              maxTransferBytes: 0,
              maxFrameBytes: ctx.maxFrameBytes,
              pool: ctx.receivePool,
            }),
            closing: null,
            error: null,
          };
          peer = p;
          peers.add(p);
        },
        onMessage(evt, ws) {
          const p = peer;
          if (!p || !peers.has(p)) return; // dropped as silent: ignore stragglers
          p.lastSeen = performance.now();
          const id = p.id;
          let m: Message | null;
          try {
            const bytes = frameBytes(evt.data);
            ctx.bytes?.("in", bytes.byteLength);
            // Before the handshake only a plain hello is accepted: no transfers.
            m = id === null
              ? decodeMessage(bytes, { maxBytes: ctx.maxFrameBytes })
              : p.receiver.receive(bytes);
          } catch (e) {
            refuse(ctx, p, toErrorMessage(e), id === null);
            return;
          }
          if (m === null) return; // a transfer declaration or chunk
          try {
            if (id === null) {
              if (m.type !== "hello") {
                throw new ProtocolError("malformed", `first message must be hello, got ${m.type}`);
              }
              p.id = p.joinedAs = handshake(m, p, ctx);
              p.receiver.maxTransferBytes = maxTransferBytes();
              return;
            }
            switch (m.type) {
              case "request":
                ctx.scheduler.request(id, m.capacity);
                return;
              case "result":
              case "eval_result": {
                const err = m.type === "result"
                  ? ctx.scheduler.result(id, m)
                  : ctx.scheduler.evalResult(id, m);
                if (err) refuse(ctx, p, err, false);
                return;
              }
              case "heartbeat":
                return;
              case "bye":
                p.closing = `the worker said bye: ${m.reason}`;
                ws.close(1000, "bye");
                return;
              case "error":
                ctx.log(`worker ${id} reports ${m.code}: ${m.message}`);
                return;
              default:
                throw new ProtocolError("malformed", `a worker does not send ${m.type} messages`);
            }
          } catch (e) {
            refuse(ctx, p, toErrorMessage(e), id === null);
          }
        },
        onError(evt) {
          if (peer) peer.error = evt instanceof ErrorEvent ? evt.message : String(evt.type);
        },
        onClose(evt) {
          const p = peer;
          if (!p) return;
          const id = p.joinedAs;
          const queued = p.sender.close();
          const dropped = p.receiver.clear();
          const what = id === null ? "a connection that never joined" : `worker ${id}`;
          const who = p.closing === null
            ? "closed by the worker or the network"
            : `closed by the coordinator (${p.closing})`;
          const lost = [
            dropped.transfers > 0
              ? `dropped ${dropped.transfers} partial transfer(s) from it (${
                mb(dropped.receivedBytes)
              } of ${mb(dropped.declaredBytes)})`
              : "",
            queued > 0 ? `${queued} message(s) to it unsent` : "",
          ].filter((x) => x).join("; ");
          if (id !== null || p.error || p.closing) {
            ctx.log(
              `${what}: connection ${who}: ${describeClose(evt.code, evt.reason, p.error)}${
                lost ? `; ${lost}` : ""
              }`,
            );
          }
          forget(p, p.closing ?? "disconnected");
        },
      };
    }),
  );
  return { close: () => clearInterval(sweep) };
}

function handshake(m: HelloMessage, peer: Peer, ctx: MeshContext): string {
  // The protocol version was checked by decodeMessage (a hello of another is `bad_version`).
  checkToken(m, ctx.token);
  const required = ctx.requireBackend();
  if (required && m.backend !== required) {
    throw new ProtocolError(
      "wrong_backend",
      `deterministic run: every worker must use backend ${required}, this one uses ${m.backend}`,
    );
  }
  const id = m.workerId && !ctx.scheduler.workers.has(m.workerId)
    ? m.workerId
    : crypto.randomUUID().slice(0, 8);
  const welcome = ctx.welcome(id);
  peer.receiver.runId = welcome.runId;
  sendMessage(peer, welcome);
  const link: WorkerLink = {
    id,
    backend: m.backend,
    device: m.device,
    send: (out) => peer.sender.send(out),
  };
  ctx.scheduler.addWorker(link);
  ctx.joined?.(link, m);
  ctx.log(`worker ${id} joined: ${m.backend} on ${m.device} (${m.host}, pid ${m.pid})`);
  return id;
}
