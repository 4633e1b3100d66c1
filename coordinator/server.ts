/**
 * The coordinator's HTTP face: the worker WebSocket `/ws` (handshake with
 * protocol version and run token, then pull requests and results), and the
 * routes the observability module mounts (`/metrics`, `/status`, `/`).
 * Every frame a peer sends is decoded and validated by the protocol module;
 * a bad one is answered with an `error` message and dropped.
 *
 * @module
 */
import { Hono } from "hono";
import { upgradeWebSocket } from "hono/deno";
import type { WSContext } from "hono/ws";
import {
  checkToken,
  decodeMessage,
  encodeMessage,
  type ErrorCode,
  type HelloMessage,
  type Message,
  PROTOCOL_VERSION,
  ProtocolError,
  toErrorMessage,
} from "../shared/protocol.ts";
import type { Scheduler, WorkerLink } from "./scheduler.ts";
import type { WelcomeMessage } from "../shared/protocol.ts";

/** What the WebSocket endpoint needs from the rest of the coordinator. */
export interface MeshContext {
  readonly scheduler: Scheduler;
  readonly token: string;
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
}

/** Stops what {@link mountMesh} started (the silence sweep). */
export interface MeshHandle {
  close(): void;
}

function sendMessage(ws: WSContext, ctx: MeshContext, m: Message): void {
  const frame = encodeMessage(m);
  ctx.bytes?.("out", frame.byteLength);
  ws.send(frame);
}

async function frameBytes(data: unknown): Promise<Uint8Array> {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (data instanceof Uint8Array) return data;
  if (data instanceof Blob) return new Uint8Array(await data.arrayBuffer());
  throw new ProtocolError("malformed", "expected a binary frame, got text");
}

/** One open connection, for the silence sweep. */
interface Peer {
  id: string | null;
  lastSeen: number;
  ws: WSContext;
}

/**
 * Adds `/ws` to `app`. Connections silent for longer than `ctx.silenceMs`
 * are closed and their workers forgotten (a hung machine whose socket stays
 * open would otherwise hold tasks until their deadlines, step after step).
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
        forget(peer, "silent");
        try {
          peer.ws.close(4000, "silent");
        } catch {
          // Already closing: nothing left to do.
        }
      }
    }, Math.min(5000, Math.max(50, silenceMs / 4)))
    : undefined;
  app.get(
    "/ws",
    upgradeWebSocket(() => {
      let peer: Peer | null = null;
      return {
        onOpen(_evt, ws) {
          (ws.raw as WebSocket).binaryType = "arraybuffer";
          peer = { id: null, lastSeen: performance.now(), ws };
          peers.add(peer);
        },
        async onMessage(evt, ws) {
          if (!peer || !peers.has(peer)) return; // dropped as silent: ignore stragglers
          peer.lastSeen = performance.now();
          const id = peer.id;
          let m: Message;
          try {
            const bytes = await frameBytes(evt.data);
            ctx.bytes?.("in", bytes.byteLength);
            m = decodeMessage(bytes, { maxBytes: ctx.maxFrameBytes });
          } catch (e) {
            const err = toErrorMessage(e);
            ctx.rejected?.(err.code, err.message);
            sendMessage(ws, ctx, err);
            if (id === null) ws.close(1008, err.code);
            return;
          }
          try {
            if (id === null) {
              if (m.type !== "hello") {
                throw new ProtocolError("malformed", `first message must be hello, got ${m.type}`);
              }
              peer.id = handshake(m, ws, ctx);
              return;
            }
            switch (m.type) {
              case "request":
                ctx.scheduler.request(id, m.capacity);
                return;
              case "result": {
                const err = ctx.scheduler.result(id, m);
                if (err) {
                  ctx.rejected?.(err.code, err.message);
                  sendMessage(ws, ctx, { type: "error", ...err });
                }
                return;
              }
              case "heartbeat":
                return;
              case "bye":
                ws.close(1000, "bye");
                return;
              case "error":
                ctx.log(`worker ${id} reports ${m.code}: ${m.message}`);
                return;
              default:
                throw new ProtocolError("malformed", `a worker does not send ${m.type} messages`);
            }
          } catch (e) {
            const err = toErrorMessage(e);
            ctx.rejected?.(err.code, err.message);
            sendMessage(ws, ctx, err);
            if (id === null) ws.close(1008, err.code);
          }
        },
        onClose() {
          if (peer) forget(peer, "disconnected");
        },
      };
    }),
  );
  return { close: () => clearInterval(sweep) };
}

function handshake(m: HelloMessage, ws: WSContext, ctx: MeshContext): string {
  if (m.protocol !== PROTOCOL_VERSION) {
    throw new ProtocolError(
      "bad_version",
      `protocol ${m.protocol} is not supported; this coordinator speaks ${PROTOCOL_VERSION}`,
    );
  }
  checkToken(m, ctx.token);
  const required = ctx.requireBackend();
  if (required && m.backend !== required) {
    throw new ProtocolError(
      "bad_version",
      `deterministic run: every worker must use backend ${required}, this one uses ${m.backend}`,
    );
  }
  const id = m.workerId && !ctx.scheduler.workers.has(m.workerId)
    ? m.workerId
    : crypto.randomUUID().slice(0, 8);
  sendMessage(ws, ctx, ctx.welcome(id));
  const link: WorkerLink = {
    id,
    backend: m.backend,
    device: m.device,
    send(frame) {
      ctx.bytes?.("out", frame.byteLength);
      ws.send(frame);
    },
  };
  ctx.scheduler.addWorker(link);
  ctx.joined?.(link, m);
  ctx.log(`worker ${id} joined: ${m.backend} on ${m.device} (${m.host}, pid ${m.pid})`);
  return id;
}
