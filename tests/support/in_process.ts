/**
 * In-process workers: the real {@link WorkerCompute} behind a
 * {@link WorkerLink} that passes protocol frames by function call instead of
 * a socket (chunked transfers included: `deliver` sends them through a real
 * reassembler). For mesh tests without network.
 */
import { WorkerCompute } from "../../worker/compute.ts";
import { type Outgoing, outgoingBytes, prepareMessage } from "../../shared/wire/transfer.ts";
import { deliver } from "./transfer.ts";
import { type ErrorReply, Scheduler, type WorkerLink } from "../../coordinator/scheduler.ts";
import { Trainer } from "../../coordinator/trainer.ts";
import { parseRunFlags } from "../../coordinator/run_config.ts";
import type { Message, PartialMessage } from "../../shared/wire/protocol.ts";
import { HeldWork } from "../../worker/partial_sum.ts";

/** A worker living in this process; `detach()` simulates it dying. */
export class InProcessWorker {
  readonly compute = new WorkerCompute();
  /** Held tasks' partial sum, as worker/client.ts keeps it. */
  readonly held = new HeldWork();
  readonly link: WorkerLink;
  #chain = Promise.resolve();
  #alive = true;
  /** What the partial answering a flush becomes on the wire: any messages (a misbehaving worker). */
  tamper: (p: PartialMessage) => PartialMessage[] = (p) => [p];
  /** Every refusal the scheduler answered this worker with. */
  readonly refusals: ErrorReply[] = [];
  /** Milliseconds to wait before computing a task (a straggler). */
  delayTask: (step: number, index: number) => number = () => 0;
  /** Called before each flush is answered; return false to drop it silently. */
  beforeFlush: (step: number, indices: readonly number[]) => boolean = () => true;
  /** Called before each task is computed; return false to drop it silently (a hung worker). */
  beforeTask: (step: number, index: number) => boolean = () => true;
  /** The same for evaluation tasks. */
  beforeEval: (index: number) => boolean = () => true;
  tasksDone = 0;
  evalsDone = 0;
  partials = 0;
  /** Bytes of every answer it sent (results, dones, partials), as framed for the wire. */
  bytesSent = 0;

  constructor(readonly id: string, readonly scheduler: Scheduler, trainer: Trainer) {
    const welcome = trainer.welcome(id);
    this.compute.welcome(welcome);
    this.link = { id, backend: "tfjs-wasm", device: "in-process", send: (f) => this.#receive(f) };
    // LoRA: the frozen base, sent after the welcome as the coordinator does.
    const base = trainer.baseFor();
    if (base) this.#receive(base);
    this.held.reset(this.compute.resultLayout, welcome.gradEncoding);
    scheduler.addWorker(this.link);
    scheduler.request(id, 1);
  }

  #receive(out: Outgoing): void {
    this.#chain = this.#chain.then(async () => {
      if (!this.#alive) return;
      const m = deliver(out);
      if (m.type === "weights") this.compute.weights(m);
      else if (m.type === "base") this.compute.base(m);
      else if (m.type === "task") {
        if (!this.beforeTask(m.step, m.index)) return;
        const delay = this.delayTask(m.step, m.index);
        if (delay > 0) await new Promise((r) => setTimeout(r, delay));
        if (m.hold) {
          const g = await this.compute.gradient(m);
          if (!this.#alive) return;
          this.#reply(this.held.absorb(m, g), m.runId);
        } else {
          const result = await this.compute.task(m);
          if (!this.#alive) return;
          this.#reply(result, m.runId);
        }
      } else if (m.type === "flush") {
        if (!this.beforeFlush(m.step, [...m.indices])) return;
        const partial = this.held.flush(m);
        if (!this.#alive) return;
        const sent = this.tamper(partial);
        sent.forEach((p, k) => this.#reply(p, m.runId, k === sent.length - 1));
      } else if (m.type === "eval_task") {
        if (!this.beforeEval(m.index)) return;
        const result = await this.compute.evaluate(m);
        if (this.#alive) this.#reply(result, m.runId);
      }
    });
  }

  /** Sends a result back through the wire format to the scheduler, then asks for the next task. */
  #reply(result: Message, runId: string, request = true): void {
    const out = prepareMessage(result, { runId });
    this.bytesSent += outgoingBytes(out);
    const back = deliver(out);
    let refusal: ErrorReply | null;
    if (back.type === "result") {
      this.tasksDone++;
      refusal = this.scheduler.result(this.id, back);
    } else if (back.type === "done") {
      this.tasksDone++;
      refusal = this.scheduler.done(this.id, back);
    } else if (back.type === "partial") {
      this.partials++;
      refusal = this.scheduler.partial(this.id, back);
    } else if (back.type === "eval_result") {
      this.evalsDone++;
      refusal = this.scheduler.evalResult(this.id, back);
    } else throw new Error(`unreachable: a worker sent ${back.type}`);
    if (refusal) this.refusals.push(refusal);
    if (request) this.scheduler.request(this.id, 1);
  }

  /** Disconnects: the scheduler forgets it and its tasks go elsewhere. */
  detach(): void {
    this.#alive = false;
    this.scheduler.removeWorker(this.id);
  }

  async settle(): Promise<void> {
    await this.#chain;
    this.compute.dispose();
  }
}

/**
 * Trains the run that the run flags `args` describe to its end with one
 * in-process worker (no task timeout): the trainer after its last step.
 */
export async function trainInProcess(args: string[]): Promise<Trainer> {
  const { config } = await parseRunFlags(args, {}, "");
  const trainer = await Trainer.create(config);
  const scheduler = new Scheduler({ gradLayout: trainer.gradLayout, taskTimeoutMs: 0 });
  const w = new InProcessWorker("ref", scheduler, trainer);
  await trainer.run(scheduler);
  await w.settle();
  return trainer;
}
