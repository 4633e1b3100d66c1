/**
 * The worker's connection to a coordinator: handshake with the run token,
 * pull one task at a time, answer with its gradient, reconnect with backoff
 * when the link drops. One log line per state change, none per micro-batch.
 *
 * @module
 */
import {
  decodeMessage,
  encodeMessage,
  type Message,
  PROTOCOL_VERSION,
  toErrorMessage,
} from "../shared/protocol.ts";
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

const FATAL = new Set(["bad_token", "bad_version"]);

/** Serves runs until the coordinator ends them (or refuses us). */
export async function runWorker(opts: WorkerOptions): Promise<WorkerExit> {
  const compute = new WorkerCompute();
  let workerId: string | undefined;
  let backoff = 250;
  let lastConnected = Date.now();
  try {
    while (true) {
      const outcome = await session(opts, compute, workerId, (id) => {
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

/** One connection, from open to close. */
function session(
  opts: WorkerOptions,
  compute: WorkerCompute,
  workerId: string | undefined,
  onWelcome: (id: string) => void,
): Promise<Outcome> {
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
    let welcomed = false;
    let chain = Promise.resolve();
    let lastEncodeMs = 0;
    const send = (m: Message) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(encodeMessage(m));
    };
    const heartbeat = setInterval(() => send({ type: "heartbeat", time: Date.now() }), 10_000);
    ws.onopen = () => {
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
    const handle = async (m: Message) => {
      switch (m.type) {
        case "welcome":
          compute.welcome(m);
          if (!welcomed) opts.log(`joined run ${m.runId.slice(0, 8)} as worker ${m.workerId}`);
          welcomed = true;
          onWelcome(m.workerId);
          send({ type: "request", capacity: 1 });
          return;
        case "weights":
          compute.weights(m);
          return;
        case "task":
          try {
            const result = await compute.task(m);
            // A result cannot carry its own encoding time: it reports the previous one's.
            result.timings.encodeMs = lastEncodeMs;
            const t0 = performance.now();
            const frame = encodeMessage(result);
            lastEncodeMs = performance.now() - t0;
            if (ws.readyState === WebSocket.OPEN) ws.send(frame);
          } catch (e) {
            send(toErrorMessage(e));
          }
          send({ type: "request", capacity: 1 });
          return;
        case "error":
          opts.log(`coordinator refused: ${m.code}: ${m.message}`);
          if (FATAL.has(m.code) && !welcomed) {
            outcome = { kind: "exit", exit: { code: 2, reason: m.message } };
            ws.close();
          }
          return;
        case "bye":
          opts.log(`run over: ${m.reason}`);
          if (!opts.stay) outcome = { kind: "exit", exit: { code: 0, reason: m.reason } };
          ws.close(1000, "bye");
          return;
        default:
          return;
      }
    };
    ws.onmessage = (evt) => {
      chain = chain.then(async () => {
        let m: Message;
        try {
          m = decodeMessage(new Uint8Array(evt.data as ArrayBuffer));
        } catch (e) {
          send(toErrorMessage(e));
          return;
        }
        try {
          await handle(m);
        } catch (e) {
          send(toErrorMessage(e));
        }
      });
    };
    ws.onclose = () => {
      clearInterval(heartbeat);
      if (welcomed && outcome.kind === "retry") opts.log("connection lost; reconnecting");
      chain.finally(() => resolve(outcome));
    };
    ws.onerror = () => {/* onclose follows */};
  });
}
