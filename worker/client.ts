/**
 * The worker's connection to a coordinator: handshake with the run token,
 * pull one task at a time, answer with its gradient (or, for an evaluation
 * task, its logits), reconnect with backoff
 * when the link drops. Large weights and gradients travel as chunked
 * transfers with flow control (shared/transfer.ts). One log line per state
 * change — including why a connection closed (code, reason, socket error) —
 * none per micro-batch.
 *
 * @module
 */
import {
  DTYPES,
  encodeMessage,
  type ErrorCode,
  type EvalResultMessage,
  type Message,
  PROTOCOL_VERSION,
  type ResultMessage,
  toErrorMessage,
} from "../shared/protocol.ts";
import { paramLayout } from "../shared/param_layout.ts";
import {
  BufferPool,
  describeClose,
  prepareMessage,
  Reassembler,
  Sender,
} from "../shared/transfer.ts";
import type { BackendInfo } from "../shared/backend.ts";
import { WorkerCompute } from "./compute.ts";

/** How a worker runs. */
export interface WorkerOptions {
  readonly url: string;
  readonly token: string;
  readonly backend: BackendInfo;
  /** Keep waiting for the next run after one ends. */
  readonly stay: boolean;
  /** Give up after this long without a successful connection (ms). */
  readonly connectTimeoutMs: number;
  readonly log: (line: string) => void;
}

/** Why the worker stopped. */
export type WorkerExit = { code: 0; reason: string } | { code: 1 | 2; reason: string };

/** Refusals of the handshake that no retry can cure: the worker exits 2. */
const FATAL: ReadonlySet<ErrorCode> = new Set(["bad_token", "bad_version", "wrong_backend"]);

/**
 * What outlives one connection: the compute, and the weights arrays to
 * receive into. `installed` is the data of the last weights message given to
 * the compute; once the next one is installed the compute no longer reads it,
 * so it goes back to the pool and the next transfer fills it instead of
 * fresh memory.
 */
interface WorkerState {
  readonly compute: WorkerCompute;
  readonly pool: BufferPool;
  installed: Float32Array | Uint16Array | null;
}

/** Serves runs until the coordinator ends them (or refuses us). */
export async function runWorker(opts: WorkerOptions): Promise<WorkerExit> {
  const compute = new WorkerCompute();
  const state: WorkerState = { compute, pool: new BufferPool(2), installed: null };
  let workerId: string | undefined;
  let backoff = 250;
  let lastConnected = Date.now();
  try {
    while (true) {
      const outcome = await session(opts, state, workerId, (id) => {
        workerId = id;
        lastConnected = Date.now();
        backoff = 250;
      });
      if (outcome.kind === "exit") return outcome.exit;
      if (Date.now() - lastConnected > opts.connectTimeoutMs) {
        return {
          code: 1,
          reason: `no coordinator at ${opts.url} for ${opts.connectTimeoutMs / 1000} s`,
        };
      }
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 5000);
    }
  } finally {
    compute.dispose();
  }
}

type Outcome = { kind: "exit"; exit: WorkerExit } | { kind: "retry" };

const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

/** One connection, from open to close. */
function session(
  opts: WorkerOptions,
  state: WorkerState,
  workerId: string | undefined,
  onWelcome: (id: string) => void,
): Promise<Outcome> {
  const compute = state.compute;
  return new Promise((resolve) => {
    let ws: WebSocket;
    try {
      ws = new WebSocket(opts.url);
    } catch (e) {
      resolve({
        kind: "exit",
        exit: { code: 2, reason: `bad --url ${opts.url}: ${(e as Error).message}` },
      });
      return;
    }
    ws.binaryType = "arraybuffer";
    let outcome: Outcome = { kind: "retry" };
    let opened = false;
    let welcomed = false;
    /** Why we closed the connection, when we did. */
    let closing: string | null = null;
    let socketError: string | null = null;
    let chain = Promise.resolve();
    let lastEncodeMs = 0;
    const sender = new Sender(ws);
    // No transfers are accepted before the welcome says how large the model is.
    const receiver = new Reassembler({ maxTransferBytes: 0, pool: state.pool });
    const send = (m: Message) => {
      try {
        if (ws.readyState === WebSocket.OPEN) sender.send(encodeMessage(m));
      } catch {
        // Closed under us: onclose follows.
      }
    };
    const close = (code: number, reason: string) => {
      closing ??= reason;
      void sender.drained().then(() => ws.close(code, reason));
    };
    const heartbeat = setInterval(() => send({ type: "heartbeat", time: Date.now() }), 10_000);
    ws.onopen = () => {
      opened = true;
      send({
        type: "hello",
        protocol: PROTOCOL_VERSION,
        token: opts.token,
        workerId,
        backend: opts.backend.name,
        device: opts.backend.device,
        pid: Deno.pid,
        host: Deno.hostname(),
      });
    };
    /**
     * Computes one task's answer (a result or an eval result), sends it, and
     * asks for the next task; a refusal is answered with an `error`. An answer
     * cannot carry its own encoding time: it reports the previous one's.
     */
    const answer = async (
      work: () => Promise<ResultMessage | EvalResultMessage>,
      runId: string,
    ) => {
      try {
        const result = await work();
        result.timings.encodeMs = lastEncodeMs;
        const t0 = performance.now();
        const out = prepareMessage(result, { runId });
        lastEncodeMs = performance.now() - t0;
        if (ws.readyState === WebSocket.OPEN) sender.send(out);
      } catch (e) {
        send(toErrorMessage(e));
      }
      send({ type: "request", capacity: 1 });
    };
    const handle = async (m: Message) => {
      switch (m.type) {
        case "welcome": {
          const config = compute.welcome(m);
          receiver.runId = m.runId;
          receiver.maxTransferBytes = DTYPES.f32.bytes * paramLayout(config, m.objective).total;
          if (!welcomed) opts.log(`joined run ${m.runId.slice(0, 8)} as worker ${m.workerId}`);
          welcomed = true;
          onWelcome(m.workerId);
          send({ type: "request", capacity: 1 });
          return;
        }
        case "weights": {
          compute.weights(m);
          // The compute now reads m.data only: the previous weights can be refilled.
          if (state.installed && state.installed !== m.data) state.pool.recycle(state.installed);
          state.installed = m.data;
          return;
        }
        case "task":
          await answer(() => compute.task(m), m.runId);
          return;
        case "eval_task":
          await answer(() => compute.evaluate(m), m.runId);
          return;
        case "error":
          opts.log(`coordinator refused: ${m.code}: ${m.message}`);
          if (FATAL.has(m.code) && !welcomed) {
            outcome = { kind: "exit", exit: { code: 2, reason: m.message } };
            close(1000, `refused: ${m.code}`);
          }
          return;
        case "bye":
          opts.log(`run over: ${m.reason}`);
          if (!opts.stay) outcome = { kind: "exit", exit: { code: 0, reason: m.reason } };
          close(1000, "bye");
          return;
        default:
          return;
      }
    };
    ws.onmessage = (evt) => {
      // Chunks are copied into place as they arrive; whole messages are handled in order.
      let m: Message | null;
      try {
        m = receiver.receive(new Uint8Array(evt.data as ArrayBuffer));
      } catch (e) {
        send(toErrorMessage(e));
        return;
      }
      if (m === null) return;
      const msg = m;
      chain = chain.then(async () => {
        try {
          await handle(msg);
        } catch (e) {
          send(toErrorMessage(e));
        }
      });
    };
    ws.onclose = (evt) => {
      clearInterval(heartbeat);
      const unsent = sender.close();
      const dropped = receiver.clear();
      if (opened) {
        const lost = [
          dropped.transfers > 0
            ? `dropped ${dropped.transfers} partial transfer(s) (${mb(dropped.receivedBytes)} of ${
              mb(dropped.declaredBytes)
            })`
            : "",
          unsent > 0 ? `${unsent} message(s) unsent` : "",
        ].filter((x) => x).join("; ");
        const who = closing === null
          ? "closed by the coordinator or the network"
          : `closed by this worker (${closing})`;
        const next = outcome.kind === "retry" ? "; reconnecting" : "";
        opts.log(
          `connection ${who}: ${describeClose(evt.code, evt.reason, socketError)}${
            lost ? `; ${lost}` : ""
          }${next}`,
        );
      }
      chain.finally(() => resolve(outcome));
    };
    ws.onerror = (e) => {
      socketError = e instanceof ErrorEvent ? e.message : "error";
    };
  });
}
