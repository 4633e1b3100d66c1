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

/** Adds `/ws` to `app`. */
export function mountMesh(app: Hono, ctx: MeshContext): void {
  app.get(
    "/ws",
    upgradeWebSocket(() => {
      let id: string | null = null;
      return {
        onOpen(_evt, ws) {
          (ws.raw as WebSocket).binaryType = "arraybuffer";
        },
        async onMessage(evt, ws) {
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
              id = handshake(m, ws, ctx);
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
          if (id !== null) {
            ctx.scheduler.removeWorker(id);
            ctx.left?.(id, "disconnected");
          }
          id = null;
        },
      };
    }),
  );
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
