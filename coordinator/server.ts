/**
 * The coordinator's HTTP face: the worker WebSocket `/ws` (handshake with
 * protocol version — checked when the hello is decoded — and run token,
 * then pull requests, results and evaluation results), and the routes the
 * observability module mounts (`/metrics`, `/status`, `/`).
 * Every frame a peer sends is decoded and validated by the protocol module;
 * a bad one is answered with an `error` message and dropped. Each connection
 * sends through its own flow-controlled queue and reassembles the worker's
 * chunked transfers (shared/wire/transfer.ts); every close is logged with its
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
  HEARTBEAT_MS,
  type HelloMessage,
  type Message,
  ProtocolError,
  toErrorMessage,
  type WelcomeMessage,
} from "../shared/wire/protocol.ts";
import { type BufferPool, type Outgoing, Reassembler, Sender } from "../shared/wire/transfer.ts";
import { closeLine, describeClose } from "../shared/wire/close_log.ts";
import type { ErrorReply, Scheduler, WorkerLink } from "./scheduler.ts";
import { peerText } from "../shared/wire/peer_text.ts";

/** A worker id a hello may ask to keep: letters, digits, `-`, `_`, `.`; at most 64. */
const PLAIN_ID = /^[A-Za-z0-9._-]{1,64}$/;

/** What the WebSocket endpoint needs from the rest of the coordinator. */
export interface MeshContext {
  readonly scheduler: Scheduler;
  readonly token: string;
  /** Largest frame a worker may send (a safety limit on one frame; tensors travel chunked). */
  readonly maxFrameBytes: number;
  /** One backend for every worker (deterministic mode). */
  readonly requireBackend: () => string | null;
  /** The welcome of worker `workerId`, given its hello (LoRA: the bases it holds). */
  welcome(workerId: string, hello?: HelloMessage): WelcomeMessage;
  /** LoRA: the `base` message to send right after the welcome, for a worker without the base. */
  baseFor?(hello: HelloMessage): Outgoing | null;
  /** A peer's message was refused. */
  rejected?(reason: ErrorCode, detail: string): void;
  /** Frame sizes, for metrics. */
  bytes?(direction: "in" | "out", n: number): void;
  log(line: string): void;
  joined?(link: WorkerLink, hello: HelloMessage): void;
  left?(id: string, reason: string): void;
  /**
   * A connection that sends nothing (workers send a heartbeat every
   * {@link HEARTBEAT_MS}) for this many ms is closed and its worker's tasks go
   * to others; 0: never.
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

/**
 * Adds `/ws` to `app`. Connections silent for longer than `ctx.silenceMs`
 * are closed and their workers forgotten (a hung machine whose socket stays
 * open would otherwise hold tasks until their deadlines, step after step).
 * Every close is logged with its code, reason and socket error.
 */
export function mountMesh(app: Hono, ctx: MeshContext): MeshHandle {
  const peers = new Set<Peer>();
  const sweep = startSilenceSweep(peers, ctx);
  app.get(
    "/ws",
    upgradeWebSocket(() => {
      let peer: Peer | null = null;
      return {
        onOpen(_evt, ws) {
          peer = new Peer(ws, ctx, peers);
        },
        onMessage(evt) {
          // A peer dropped as silent is out of `peers`: its stragglers are ignored.
          if (peer && peers.has(peer)) peer.receive(evt.data);
        },
        onError(evt) {
          peer?.socketError(evt);
        },
        onClose(evt) {
          peer?.closed(evt.code, evt.reason);
        },
      };
    }),
  );
  return { close: () => clearInterval(sweep) };
}

/**
 * Every so often — twice per heartbeat period ({@link HEARTBEAT_MS}) at most,
 * more often for a short silence limit — drops the connections that sent
 * nothing for `ctx.silenceMs` (none when it is 0 or unset).
 */
function startSilenceSweep(
  peers: ReadonlySet<Peer>,
  ctx: MeshContext,
): ReturnType<typeof setInterval> | undefined {
  const silenceMs = ctx.silenceMs ?? 0;
  if (!(silenceMs > 0)) return undefined;
  return setInterval(() => {
    const now = performance.now();
    for (const peer of peers) {
      if (now - peer.lastSeen > silenceMs) peer.dropSilent(silenceMs);
    }
  }, Math.min(HEARTBEAT_MS / 2, Math.max(50, silenceMs / 4)));
}

/** One open connection: its state, and one handler for each thing that happens to it. */
class Peer {
  /** The worker id while it is registered with the scheduler. */
  id: string | null = null;
  /** The worker id it joined as (kept after it is forgotten, for the close log). */
  joinedAs: string | null = null;
  lastSeen: number = performance.now();
  /** The connection's send queue (flow-controlled on the socket's bufferedAmount). */
  readonly sender: Sender;
  /** Chunked transfers from the worker, reassembled (after the handshake). */
  readonly receiver: Reassembler;
  /** Why we closed it, when we did. */
  closing: string | null = null;
  /** The last error the socket reported. */
  error: string | null = null;

  /** Opens the connection's queues and adds it to `peers` (the mesh's open connections). */
  constructor(
    readonly ws: WSContext,
    readonly ctx: MeshContext,
    readonly peers: Set<Peer>,
  ) {
    const raw = ws.raw as WebSocket;
    raw.binaryType = "arraybuffer";
    this.sender = new Sender({
      send: (f) => ws.send(f),
      get bufferedAmount() {
        return raw.bufferedAmount;
      },
    }, { sent: (n) => ctx.bytes?.("out", n) });
    this.receiver = new Reassembler({
      maxTransferBytes: 0,
      maxFrameBytes: ctx.maxFrameBytes,
      pool: ctx.receivePool,
    });
    peers.add(this);
  }

  /** Queues `m` for the peer (nothing when the connection is closed: its close handler cleans up). */
  send(m: Message): void {
    try {
      this.sender.send(encodeMessage(m));
    } catch {
      // The connection is closed; its close handler cleans up.
    }
  }

  /** Closes the connection on purpose, after what is queued for it (an error reply) is written. */
  close(code: number, reason: string): void {
    this.closing ??= reason;
    void this.sender.drained().then(() => {
      try {
        this.ws.close(code, reason);
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
  refuse(err: ErrorReply, beforeHandshake: boolean): void {
    this.ctx.rejected?.(err.code, err.message);
    this.send({ type: "error", code: err.code, message: err.message });
    if (beforeHandshake) this.close(1008, err.code);
  }

  /**
   * A frame arrived: decodes it (reassembling transfers after the handshake)
   * and handles its message; anything wrong with it is refused.
   */
  receive(data: unknown): void {
    this.lastSeen = performance.now();
    const id = this.id;
    try {
      const m = this.#decode(data, id === null);
      if (m === null) return; // a transfer declaration or chunk
      if (id === null) this.#hello(m);
      else this.#handle(id, m);
    } catch (e) {
      this.refuse(toErrorMessage(e), id === null);
    }
  }

  #decode(data: unknown, beforeHandshake: boolean): Message | null {
    const bytes = frameBytes(data);
    this.ctx.bytes?.("in", bytes.byteLength);
    // Before the handshake only a plain hello is accepted: no transfers.
    return beforeHandshake
      ? decodeMessage(bytes, { maxBytes: this.ctx.maxFrameBytes })
      : this.receiver.receive(bytes);
  }

  /** The first message: it must be a hello that passes the {@link handshake}. */
  #hello(m: Message): void {
    if (m.type !== "hello") {
      throw new ProtocolError("malformed", `first message must be hello, got ${m.type}`);
    }
    this.id = this.joinedAs = handshake(m, this, this.ctx);
    // A worker sends at most one tensor of the model's size (a dense gradient).
    this.receiver.maxTransferBytes = DTYPES.f32.bytes * this.ctx.scheduler.options.gradLayout.total;
  }

  /** A message from joined worker `id`. */
  #handle(id: string, m: Message): void {
    const { scheduler } = this.ctx;
    switch (m.type) {
      case "request":
        return scheduler.request(id, m.capacity);
      case "result":
        return this.#answered(scheduler.result(id, m));
      case "done":
        return this.#answered(scheduler.done(id, m));
      case "partial":
        return this.#answered(scheduler.partial(id, m));
      case "eval_result":
        return this.#answered(scheduler.evalResult(id, m));
      case "heartbeat":
        return;
      case "bye":
        this.closing = `the worker said bye: ${peerText(m.reason)}`;
        return this.ws.close(1000, "bye");
      case "error":
        return this.ctx.log(`worker ${id} reports ${m.code}: ${peerText(m.message)}`);
      default:
        throw new ProtocolError("malformed", `a worker does not send ${m.type} messages`);
    }
  }

  /** What the scheduler said of a result: its refusal goes back to the worker. */
  #answered(err: ErrorReply | null): void {
    if (err) this.refuse(err, false);
  }

  /** The socket reported an error: kept for the close log. */
  socketError(evt: Event): void {
    this.error = evt instanceof ErrorEvent ? evt.message : String(evt.type);
  }

  /** The connection sent nothing for `silenceMs`: closed, and its worker forgotten. */
  dropSilent(silenceMs: number): void {
    const what = this.id === null ? "a connection" : `worker ${this.id}`;
    this.ctx.log(`${what} sent nothing for ${silenceMs / 1000} s: dropped`);
    this.closing = "silent";
    this.forget("silent");
    try {
      this.ws.close(4000, "silent");
    } catch {
      // Already closing: nothing left to do.
    }
  }

  /** The socket closed: logs why and what it cost, and forgets the worker. */
  closed(code: number, reason: string): void {
    const queued = this.sender.close();
    const dropped = this.receiver.clear();
    if (this.joinedAs !== null || this.error || this.closing) {
      this.ctx.log(closeLine({
        peer: this.joinedAs === null ? "a connection that never joined" : `worker ${this.joinedAs}`,
        closedBy: this.closing === null
          ? "the worker or the network"
          : `the coordinator (${this.closing})`,
        how: describeClose(code, reason, this.error),
        dropped,
        unsent: queued,
      }));
    }
    this.forget(this.closing ?? "disconnected");
  }

  /** Leaves the mesh's open connections and, once joined, the scheduler's workers. */
  forget(reason: string): void {
    this.peers.delete(this);
    if (this.id === null) return;
    const id = this.id;
    this.id = null;
    this.ctx.scheduler.removeWorker(id);
    this.ctx.left?.(id, reason);
  }
}

function frameBytes(data: unknown): Uint8Array {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (data instanceof Uint8Array) return data;
  throw new ProtocolError(
    "malformed",
    `expected a binary frame, got ${typeof data === "string" ? "text" : typeof data}`,
  );
}

/**
 * Checks a hello (docs/protocol.md, "The connection"): run token, then, in a
 * deterministic run, the backend; then names the worker, sends the welcome
 * and registers the worker. Returns its id.
 */
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
  // A worker may keep its id across reconnects, if it is a plain one (ids reach every log line).
  const id = m.workerId && PLAIN_ID.test(m.workerId) && !ctx.scheduler.workers.has(m.workerId)
    ? m.workerId
    : crypto.randomUUID().slice(0, 8);
  const welcome = ctx.welcome(id, m);
  peer.receiver.runId = welcome.runId;
  peer.send(welcome);
  const base = ctx.baseFor?.(m);
  if (base) peer.sender.send(base);
  const link: WorkerLink = {
    id,
    backend: m.backend,
    device: m.device,
    send: (out) => peer.sender.send(out),
  };
  ctx.scheduler.addWorker(link);
  ctx.joined?.(link, m);
  ctx.log(
    `worker ${id} joined: ${peerText(m.backend)} on ${peerText(m.device)} (${
      peerText(m.host)
    }, pid ${m.pid})`,
  );
  return id;
}
