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
  type BaseMessage,
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
import type { ComputeBackend } from "../shared/compute/model_compute.ts";
import { WorkerCompute } from "./compute.ts";
import { peerText } from "../shared/wire/peer_text.ts";
import { connectFailure } from "./connect_failure.ts";
import { BaseCache } from "./base_cache.ts";
import { HeldWork } from "./partial_sum.ts";

/** How a worker runs. */
export interface WorkerOptions {
  readonly url: string;
  readonly token: string;
  /** What computes (shared/compute/create.ts); its name and device go in the hello. */
  readonly backend: ComputeBackend;
  /** Keep waiting for the next run after one ends. */
  readonly stay: boolean;
  /** Give up after this long without a successful connection (ms). */
  readonly connectTimeoutMs: number;
  readonly log: (line: string) => void;
  /**
   * Aborted on Ctrl-C (SIGINT) or SIGTERM: the worker sends no more results,
   * says `bye` ("interrupted") and exits 0 quietly.
   */
  readonly interrupt?: AbortSignal;
  /**
   * LoRA bases held across reconnects and runs (worker/base_cache.ts);
   * default: memory only.
   */
  readonly bases?: BaseCache;
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
  readonly bases: BaseCache;
  /** Held tasks' partial sum (worker/partial_sum.ts). */
  readonly held: HeldWork;
}

/** Serves runs until the coordinator ends them (or refuses us). */
export async function runWorker(opts: WorkerOptions): Promise<WorkerExit> {
  const compute = new WorkerCompute(opts.backend);
  const state: WorkerState = {
    compute,
    pool: new BufferPool(2),
    installed: null,
    bases: opts.bases ?? new BaseCache({ dir: null, maxBytes: 0 }),
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
      const why = outcome.unreachable;
      if (Date.now() - lastConnected > opts.connectTimeoutMs) {
        return {
          code: 1,
          reason: `no coordinator at ${opts.url} for ${opts.connectTimeoutMs / 1000} s${
            why ? `: ${why}` : ""
          }`,
        };
      }
      if (opts.interrupt?.aborted) return { code: 0, reason: "interrupted" };
      if (why) opts.log(`cannot reach ${opts.url}: ${why}; retrying in ${backoff / 1000} s`);
      await new Promise<void>((r) => {
        const done = () => (clearTimeout(timer), r());
        const timer = setTimeout(done, backoff);
        opts.interrupt?.addEventListener("abort", done, { once: true });
      });
      if (opts.interrupt?.aborted) return { code: 0, reason: "interrupted" };
      backoff = Math.min(backoff * 2, 5000);
    }
  } finally {
    compute.dispose();
  }
}

/** How one connection ended: stop the worker with `exit`, or reconnect. */
type Outcome = { kind: "exit"; exit: WorkerExit } | {
  kind: "retry";
  /** Why the socket never opened (worker/connect_failure.ts), when it did not. */
  unreachable?: string;
};

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
    ws.onopen = () => void this.#hello();
    ws.onmessage = (evt) => this.#receive(evt.data as ArrayBuffer);
    ws.onerror = (e) => {
      this.#socketError = e instanceof ErrorEvent ? e.message : "error";
    };
    const interrupted = () => this.#interrupted();
    opts.interrupt?.addEventListener("abort", interrupted, { once: true });
    ws.onclose = (evt) => {
      opts.interrupt?.removeEventListener("abort", interrupted);
      this.#closed(evt);
      this.#chain.finally(() => resolve(this.#outcome));
    };
  }

  /** Ctrl-C: nothing more is sent but a `bye`; the worker then exits 0. */
  #interrupted(): void {
    this.#outcome = { kind: "exit", exit: { code: 0, reason: "interrupted" } };
    if (this.ws.readyState === WebSocket.OPEN) {
      this.#send({ type: "bye", reason: "interrupted" });
      this.#close(1000, "interrupted");
    } else {
      try {
        this.ws.close();
      } catch { /* not open yet: onclose follows */ }
    }
  }

  async #hello(): Promise<void> {
    if (this.opts.interrupt?.aborted) return;
    this.#opened = true;
    const bases = await this.state.bases.hashes();
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
      ...(bases.length > 0 ? { bases } : {}),
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
      case "base":
        return this.#onBase(m);
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

  /**
   * Adopts the run, sizes the transfers it accepts, asks for the first task.
   * LoRA: installs the base from the cache when the welcome says none
   * follows; a cached base that is gone or fails its hash closes the
   * connection, and the next hello no longer lists it.
   */
  async #onWelcome(m: WelcomeMessage): Promise<void> {
    const compute = this.state.compute;
    const config = compute.welcome(m);
    const missing = compute.missingBase;
    if (missing && m.lora && !m.lora.baseFollows) {
      const data = await this.state.bases.get(missing, compute.layout!);
      if (!data) {
        this.opts.log(`base ${missing.slice(0, 12)}… is no longer cached; reconnecting for it`);
        this.#close(1000, "base not cached");
        return;
      }
      compute.base({ runId: m.runId, hash: missing, data }, true);
    } else if (m.lora && !missing) {
      this.opts.log(`base ${m.lora.baseHash.slice(0, 12)}… already held`);
    }
    this.state.held.reset(compute.resultLayout, m.gradEncoding);
    this.#receiver.runId = m.runId;
    this.#receiver.maxTransferBytes = DTYPES.f32.bytes * paramLayout(config, m.objective).total;
    if (!this.#welcomed) {
      this.opts.log(
        `joined run ${peerText(m.runId.slice(0, 8))} as worker ${peerText(m.workerId)}`,
      );
    }
    this.#welcomed = true;
    this.onWelcome(m.workerId);
    this.#send({ type: "request", capacity: 1 });
  }

  /** LoRA: the frozen base, checked against its hash, installed and cached. */
  #onBase(m: BaseMessage): void {
    this.state.compute.base(m);
    this.state.bases.put(m.hash, m.data);
    this.opts.log(`received base ${m.hash.slice(0, 12)}… (${m.data.byteLength} bytes)`);
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
      if (this.opts.interrupt?.aborted) return; // Ctrl-C while computing: no answer, no request
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
      const g = await this.state.compute.gradient(m);
      this.#send(this.state.held.absorb(m, g));
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
    // After Ctrl-C, refusals of answers already on their way (the run stopped too) are expected.
    if (this.opts.interrupt?.aborted) return;
    this.opts.log(`coordinator refused: ${m.code}: ${peerText(m.message)}`);
    if (FATAL.has(m.code) && !this.#welcomed) {
      this.#outcome = { kind: "exit", exit: { code: 2, reason: peerText(m.message) } };
      this.#close(1000, `refused: ${m.code}`);
    }
  }

  /** The run is over: exit 0, or wait for the next run with `--stay`. */
  #onBye(m: ByeMessage): void {
    const reason = peerText(m.reason);
    this.opts.log(`run over: ${reason}`);
    if (!this.opts.stay) this.#outcome = { kind: "exit", exit: { code: 0, reason } };
    this.#close(1000, "bye");
  }

  /** Drops what was in flight and logs, once, how the connection ended. */
  #closed(evt: CloseEvent): void {
    clearInterval(this.#heartbeat);
    const unsent = this.#sender.close();
    const dropped = this.#receiver.clear();
    if (!this.#opened) {
      if (this.#outcome.kind === "retry") {
        this.#outcome = {
          kind: "retry",
          unreachable: connectFailure(this.opts.url, this.#socketError),
        };
      }
      return;
    }
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
    // After Ctrl-C only the bye goes out.
    if (this.opts.interrupt?.aborted && m.type !== "bye") return;
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
