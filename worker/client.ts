/**
 * The worker's connection to a coordinator: handshake with the run token,
 * pull one task at a time, answer with its gradient (or, for an evaluation
 * task, its logits), reconnect with backoff
 * when the link drops. Large weights and gradients travel as chunked
 * transfers with flow control (shared/wire/transfer.ts). One log line per state
 * change — including why a connection closed (code, reason, socket error) —
 * none per micro-batch.
 *
 * @module
 */
import {
  type ByeMessage,
  DTYPES,
  encodeMessage,
  type ErrorCode,
  type ErrorMessage,
  type EvalResultMessage,
  type FlushMessage,
  HEARTBEAT_MS,
  type Message,
  type PartialMessage,
  PROTOCOL_VERSION,
  type ResultMessage,
  type TaskMessage,
  toErrorMessage,
  type WeightsMessage,
  type WelcomeMessage,
} from "../shared/wire/protocol.ts";
import { paramLayout } from "../shared/model/param_layout.ts";
import { BufferPool, prepareMessage, Reassembler, Sender } from "../shared/wire/transfer.ts";
import { closeLine, describeClose } from "../shared/wire/close_log.ts";
import type { BackendInfo } from "../shared/compute/backend.ts";
import { WorkerCompute } from "./compute.ts";
import { HeldWork } from "./partial_sum.ts";
import { gradLayout } from "../shared/model/sparse_grad.ts";

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
  /** Held tasks' partial sum (worker/partial_sum.ts). */
  readonly held: HeldWork;
}

/** Serves runs until the coordinator ends them (or refuses us). */
export async function runWorker(opts: WorkerOptions): Promise<WorkerExit> {
  const compute = new WorkerCompute();
  const state: WorkerState = {
    compute,
    pool: new BufferPool(2),
    installed: null,
    held: new HeldWork(),
  };
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

/** How one connection ended: stop the worker with `exit`, or reconnect. */
type Outcome = { kind: "exit"; exit: WorkerExit } | { kind: "retry" };

/** One connection, from open to close (a malformed `--url` exits 2 at once). */
function session(
  opts: WorkerOptions,
  state: WorkerState,
  workerId: string | undefined,
  onWelcome: (id: string) => void,
): Promise<Outcome> {
  let ws: WebSocket;
  try {
    ws = new WebSocket(opts.url);
  } catch (e) {
    return Promise.resolve({
      kind: "exit",
      exit: { code: 2, reason: `bad --url ${opts.url}: ${(e as Error).message}` },
    });
  }
  return new Connection(ws, opts, state, workerId, onWelcome).ended;
}

/**
 * One WebSocket's life: open → `hello` → `welcome` → weights and tasks, one
 * at a time → close (see docs/protocol.md, "The connection"). The fields are the
 * per-connection state; everything that outlives it is in {@link WorkerState}.
 */
class Connection {
  /** Settles after the socket closed and the message being handled is done. */
  readonly ended: Promise<Outcome>;
  #outcome: Outcome = { kind: "retry" };
  #opened = false;
  #welcomed = false;
  /** Why we closed the connection, when we did. */
  #closing: string | null = null;
  #socketError: string | null = null;
  /** Whole messages are handled one at a time, in arrival order. */
  #chain = Promise.resolve();
  /** The previous answer's encoding time (an answer cannot carry its own). */
  #lastEncodeMs = 0;
  readonly #sender: Sender;
  readonly #receiver: Reassembler;
  readonly #heartbeat: ReturnType<typeof setInterval>;

  constructor(
    private readonly ws: WebSocket,
    private readonly opts: WorkerOptions,
    private readonly state: WorkerState,
    private readonly workerId: string | undefined,
    private readonly onWelcome: (id: string) => void,
  ) {
    ws.binaryType = "arraybuffer";
    this.#sender = new Sender(ws);
    // No transfers are accepted before the welcome says how large the model is.
    this.#receiver = new Reassembler({ maxTransferBytes: 0, pool: state.pool });
    this.#heartbeat = setInterval(
      () => this.#send({ type: "heartbeat", time: Date.now() }),
      HEARTBEAT_MS,
    );
    const { promise, resolve } = Promise.withResolvers<Outcome>();
    this.ended = promise;
    ws.onopen = () => this.#hello();
    ws.onmessage = (evt) => this.#receive(evt.data as ArrayBuffer);
    ws.onerror = (e) => {
      this.#socketError = e instanceof ErrorEvent ? e.message : "error";
    };
    ws.onclose = (evt) => {
      this.#closed(evt);
      this.#chain.finally(() => resolve(this.#outcome));
    };
  }

  #hello(): void {
    this.#opened = true;
    const { token, backend } = this.opts;
    this.#send({
      type: "hello",
      protocol: PROTOCOL_VERSION,
      token,
      workerId: this.workerId,
      backend: backend.name,
      device: backend.device,
      pid: Deno.pid,
      host: Deno.hostname(),
    });
  }

  /** Chunks are copied into place as they arrive; whole messages join the chain. */
  #receive(frame: ArrayBuffer): void {
    let m: Message | null;
    try {
      m = this.#receiver.receive(new Uint8Array(frame));
    } catch (e) {
      this.#send(toErrorMessage(e));
      return;
    }
    if (m === null) return;
    const msg = m;
    this.#chain = this.#chain.then(async () => {
      try {
        await this.#handle(msg);
      } catch (e) {
        this.#send(toErrorMessage(e));
      }
    });
  }

  #handle(m: Message): Promise<void> | void {
    switch (m.type) {
      case "welcome":
        return this.#onWelcome(m);
      case "weights":
        return this.#onWeights(m);
      case "task":
        return m.hold ? this.#hold(m) : this.#answer(() => this.state.compute.task(m), m.runId);
      case "flush":
        return this.#answer(() => Promise.resolve(this.#flush(m)), m.runId);
      case "eval_task":
        return this.#answer(() => this.state.compute.evaluate(m), m.runId);
      case "error":
        return this.#onError(m);
      case "bye":
        return this.#onBye(m);
      default:
        return;
    }
  }

  /** Adopts the run, sizes the transfers it accepts, asks for the first task. */
  #onWelcome(m: WelcomeMessage): void {
    const config = this.state.compute.welcome(m);
    const layout = paramLayout(config, m.objective);
    this.state.held.reset(gradLayout(layout, m.objective), m.gradEncoding);
    this.#receiver.runId = m.runId;
    this.#receiver.maxTransferBytes = DTYPES.f32.bytes * layout.total;
    if (!this.#welcomed) this.opts.log(`joined run ${m.runId.slice(0, 8)} as worker ${m.workerId}`);
    this.#welcomed = true;
    this.onWelcome(m.workerId);
    this.#send({ type: "request", capacity: 1 });
  }

  #onWeights(m: WeightsMessage): void {
    const state = this.state;
    state.compute.weights(m);
    // The compute now reads m.data only: the previous weights can be refilled.
    if (state.installed && state.installed !== m.data) state.pool.recycle(state.installed);
    state.installed = m.data;
  }

  /**
   * Computes one task's answer (a result or an eval result), sends it, and
   * asks for the next task; a refusal is answered with an `error`.
   */
  async #answer(
    work: () => Promise<ResultMessage | EvalResultMessage | PartialMessage>,
    runId: string,
  ): Promise<void> {
    try {
      const result = await work();
      result.timings.encodeMs = this.#lastEncodeMs;
      const t0 = performance.now();
      const out = prepareMessage(result, { runId });
      this.#lastEncodeMs = performance.now() - t0;
      if (this.ws.readyState === WebSocket.OPEN) this.#sender.send(out);
    } catch (e) {
      this.#send(toErrorMessage(e));
    }
    this.#send({ type: "request", capacity: 1 });
  }

  /** A held task: computed into the partial sum, answered with a small `done`, then a request. */
  async #hold(m: TaskMessage): Promise<void> {
    try {
      const result = await this.state.compute.task(m);
      this.#send(this.state.held.absorb(m, result));
    } catch (e) {
      this.#send(toErrorMessage(e));
    }
    this.#send({ type: "request", capacity: 1 });
  }

  /** The partial sum a flush asks for (worker/partial_sum.ts). */
  #flush(m: FlushMessage): PartialMessage {
    return this.state.held.flush(m);
  }

  /** A handshake refusal no retry can cure ends the worker; others are only logged. */
  #onError(m: ErrorMessage): void {
    this.opts.log(`coordinator refused: ${m.code}: ${m.message}`);
    if (FATAL.has(m.code) && !this.#welcomed) {
      this.#outcome = { kind: "exit", exit: { code: 2, reason: m.message } };
      this.#close(1000, `refused: ${m.code}`);
    }
  }

  /** The run is over: exit 0, or wait for the next run with `--stay`. */
  #onBye(m: ByeMessage): void {
    this.opts.log(`run over: ${m.reason}`);
    if (!this.opts.stay) this.#outcome = { kind: "exit", exit: { code: 0, reason: m.reason } };
    this.#close(1000, "bye");
  }

  /** Drops what was in flight and logs, once, how the connection ended. */
  #closed(evt: CloseEvent): void {
    clearInterval(this.#heartbeat);
    const unsent = this.#sender.close();
    const dropped = this.#receiver.clear();
    if (!this.#opened) return;
    this.opts.log(closeLine({
      closedBy: this.#closing === null
        ? "the coordinator or the network"
        : `this worker (${this.#closing})`,
      how: describeClose(evt.code, evt.reason, this.#socketError),
      dropped,
      unsent,
      next: this.#outcome.kind === "retry" ? "reconnecting" : undefined,
    }));
  }

  #send(m: Message): void {
    try {
      if (this.ws.readyState === WebSocket.OPEN) this.#sender.send(encodeMessage(m));
    } catch {
      // Closed under us: onclose follows.
    }
  }

  /** Closes once everything queued has been written. */
  #close(code: number, reason: string): void {
    this.#closing ??= reason;
    void this.#sender.drained().then(() => this.ws.close(code, reason));
  }
}
