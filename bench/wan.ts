/**
 * A pool over slow links (issue 21): the coordinator and each worker in its
 * own network namespace, joined by a veth pair whose two ends are rate
 * limited with `tbf` (this kernel has no `netem`: no delay or loss, only the
 * rate). Per configuration (link rate × workers × mode) a real coordinator
 * trains a few steps of a model with real worker processes, and the run's
 * `/status` (polled on the host side) gives the step times and the bytes in
 * and out at each step boundary.
 *
 *     sudo deno run -A bench/wan.ts [--model bert-base|default] [--links 1000,100]
 *       [--workers 1,2] [--modes "old=,new=--grad-encoding bf16"] [--steps 4]
 *       [--micro-batches 8] [--backend cpu] [--out FILE]
 *
 * Needs root (ip netns, ip link, tc). Everything it makes — namespaces
 * `amwan<k>`, veth pairs `amw<k>h`/`amw<k>n`, addresses 10.79.<k>.1/.2 — is
 * removed on exit, also after an error or Ctrl-C. A mode is `name=coordinator
 * flags`; the flags are appended to the coordinator's command line, so every
 * option of the run (result aggregation, gradient encoding, LoRA) can be
 * compared side by side in one run.
 *
 * Reported per configuration, over the steps after the first (the first
 * carries the weights' initial download): step seconds, MB in and out per
 * step at the coordinator, and the wire's share of the step — the seconds
 * one worker's link needs for that worker's share of the bytes in and out
 * (the weights go down before the results come up, so both directions are
 * added) at the link rate, over the step time. Writes bench/results/wan-<date>.json and prints a table.
 *
 * @module
 */
import { join } from "node:path";
import { parseFlagsOrExit } from "../shared/cli/flags.ts";
import { table } from "./markdown.ts";
import { writeShapeCheckpoint, writeSmallTask } from "./random_checkpoint.ts";

const ROOT = new URL("..", import.meta.url).pathname;

const flags = parseFlagsOrExit(Deno.args, {
  model: { type: "string", default: "bert-base", help: "bert-base (random weights) or default" },
  links: { type: "string", default: "1000,100", help: "link rates in Mbit/s" },
  workers: { type: "string", default: "1,2", help: "worker counts" },
  modes: {
    type: "string",
    default: "per-micro-batch=",
    help: "name=coordinator flags, comma-separated (flags separated by spaces)",
  },
  steps: { type: "int", default: 4, help: "optimizer steps per configuration" },
  "micro-batches": { type: "int", default: 8, help: "micro-batches of 1 × 8 tokens per step" },
  backend: { type: "string", default: "cpu", help: "worker backend" },
  threads: { type: "int", default: 1, help: "BLAS threads per worker" },
  timeout: { type: "int", default: 1200, help: "seconds per configuration" },
  out: { type: "string", default: "", help: "JSON output (default bench/results/wan-<date>.json)" },
}, "sudo deno run -A bench/wan.ts [flags]");

/** Runs a command; throws with its stderr when it fails (unless `ok` allows failure). */
async function sh(args: string[], ok = false): Promise<string> {
  const r = await new Deno.Command(args[0], {
    args: args.slice(1),
    stderr: "piped",
    stdout: "piped",
  })
    .output();
  const err = new TextDecoder().decode(r.stderr).trim();
  if (!r.success && !ok) throw new Error(`${args.join(" ")}: ${err}`);
  return new TextDecoder().decode(r.stdout);
}

/** The namespace, interfaces and addresses of worker k's link. */
function link(k: number) {
  return {
    ns: `amwan${k}`,
    host: `amw${k}h`,
    peer: `amw${k}n`,
    hostIp: `10.79.${k}.1`,
    peerIp: `10.79.${k}.2`,
  };
}

/** Makes worker k's namespace and its veth pair, both ends limited to `mbit` by tbf. */
async function makeLink(k: number, mbit: number): Promise<void> {
  const l = link(k);
  // tbf's bucket must hold at least one timer tick of traffic (rate / HZ); 1% of a second is ample.
  const burst = `${Math.max(64, Math.ceil(mbit * 1e6 / 8 / 100 / 1024))}kb`;
  const tbf = ["root", "tbf", "rate", `${mbit}mbit`, "burst", burst, "latency", "200ms"];
  await sh(["ip", "netns", "add", l.ns]);
  await sh(["ip", "link", "add", l.host, "type", "veth", "peer", "name", l.peer]);
  await sh(["ip", "link", "set", l.peer, "netns", l.ns]);
  await sh(["ip", "addr", "add", `${l.hostIp}/24`, "dev", l.host]);
  await sh(["ip", "link", "set", l.host, "up"]);
  await sh(["ip", "netns", "exec", l.ns, "ip", "addr", "add", `${l.peerIp}/24`, "dev", l.peer]);
  await sh(["ip", "netns", "exec", l.ns, "ip", "link", "set", l.peer, "up"]);
  await sh(["ip", "netns", "exec", l.ns, "ip", "link", "set", "lo", "up"]);
  await sh(["tc", "qdisc", "add", "dev", l.host, ...tbf]);
  await sh(["ip", "netns", "exec", l.ns, "tc", "qdisc", "add", "dev", l.peer, ...tbf]);
}

/** Removes worker k's namespace (its veth end goes with it, and so the pair). */
async function dropLink(k: number): Promise<void> {
  const l = link(k);
  await sh(["ip", "netns", "del", l.ns], true);
  await sh(["ip", "link", "del", l.host], true);
}

interface Sample {
  readonly steps: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
}

interface StatusDoc {
  readonly finished: boolean;
  readonly counters: {
    readonly steps: number;
    readonly bytesIn: number;
    readonly bytesOut: number;
  };
  readonly history: { readonly step: number; readonly seconds: { readonly step: number } }[];
}

/** One configuration: a coordinator on the host side, `n` workers behind `mbit` links. */
async function runOne(
  dir: string,
  task: { train: string; eval: string },
  mbit: number,
  n: number,
  modeFlags: string[],
) {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const token = "wan-bench";
  const coord = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      join(ROOT, "coordinator/main.ts"),
      ...["--model", dir, "--train", task.train, "--eval", task.eval],
      ...["--steps", String(flags.steps), "--global-batch", String(flags["micro-batches"])],
      ...["--micro-batch", "1", "--max-len", "8", "--adv", "off", "--dropout", "0"],
      ...["--eval-limit", "1", "--task-timeout", "1800", "--worker-silence", "0"],
      ...["--host", "0.0.0.0", "--port", String(port), "--token", token, "--linger", "--quiet"],
      ...modeFlags,
    ],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const workers: Deno.ChildProcess[] = [];
  const samples: Sample[] = [];
  const deadline = Date.now() + flags.timeout * 1000;
  try {
    const statusUrl = `http://127.0.0.1:${port}/status`;
    const status = async (): Promise<StatusDoc | null> => {
      try {
        const r = await fetch(statusUrl);
        return r.ok ? await r.json() as StatusDoc : (await r.body?.cancel(), null);
      } catch {
        return null;
      }
    };
    while (!(await status())) {
      if (Date.now() > deadline) throw new Error("the coordinator did not come up");
      await new Promise((r) => setTimeout(r, 200));
    }
    for (let k = 1; k <= n; k++) {
      const l = link(k);
      workers.push(
        new Deno.Command("ip", {
          args: [
            ...["netns", "exec", l.ns, Deno.execPath(), "run", "-A", join(ROOT, "worker/main.ts")],
            ...["--url", `ws://${l.hostIp}:${port}/ws`, "--token", token],
            ...["--backend", flags.backend, "--threads", String(flags.threads)],
          ],
          stdout: "null",
          stderr: "null",
        }).spawn(),
      );
    }
    let last: StatusDoc | null = null;
    let exited = 0;
    for (const w of workers) void w.status.then(() => exited++);
    while (Date.now() < deadline) {
      if (exited === workers.length && !(await status())?.finished) {
        throw new Error("every worker exited before the run ended (killed for memory?)");
      }
      const s = await status();
      if (s) {
        last = s;
        const c = s.counters;
        if (!samples.length || samples.at(-1)!.steps !== c.steps) {
          samples.push({ steps: c.steps, bytesIn: c.bytesIn, bytesOut: c.bytesOut });
        }
        if (s.finished) break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (!last?.finished) throw new Error(`no end of run within ${flags.timeout} s`);
    // Steps after the first: their times from the history, their bytes between step boundaries.
    const later = last.history.filter((h) => h.step > 1);
    const from = samples.find((s) => s.steps >= 1)!, to = samples.at(-1)!;
    const steps = Math.max(1, to.steps - from.steps);
    const stepSeconds = later.reduce((a, h) => a + h.seconds.step, 0) / Math.max(1, later.length);
    const inPerStep = (to.bytesIn - from.bytesIn) / steps;
    const outPerStep = (to.bytesOut - from.bytesOut) / steps;
    // Each worker has its own link and carries its share of the bytes; weights go down
    // before the results come up, so the two directions are counted one after the other.
    const wireSeconds = (inPerStep + outPerStep) / n * 8 / (mbit * 1e6);
    return {
      linkMbit: mbit,
      workers: n,
      stepSeconds: +stepSeconds.toFixed(3),
      mbInPerStep: +(inPerStep / 1e6).toFixed(2),
      mbOutPerStep: +(outPerStep / 1e6).toFixed(2),
      wireShare: +Math.min(1, wireSeconds / stepSeconds).toFixed(3),
      measuredSteps: later.length,
    };
  } finally {
    for (const w of workers) {
      try {
        w.kill("SIGTERM");
      } catch { /* already gone */ }
      await w.status;
    }
    try {
      coord.kill("SIGTERM");
    } catch { /* already gone */ }
    await coord.status;
  }
}

const list = (s: string) => s.split(",").map((x) => x.trim()).filter(Boolean);
const links = list(flags.links).map(Number);
const counts = list(flags.workers).map(Number);
const modes = list(flags.modes).map((m) => {
  const i = m.indexOf("=");
  const name = i < 0 ? m : m.slice(0, i);
  return { name, flags: i < 0 ? [] : m.slice(i + 1).split(" ").filter(Boolean) };
});
const maxWorkers = Math.max(...counts);

const tmp = await Deno.makeTempDir({ prefix: "adaptmesh-wan-" });
let dir = "";
const cleanup = async () => {
  for (let k = 1; k <= maxWorkers; k++) await dropLink(k);
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
};
const onSignal = () => cleanup().finally(() => Deno.exit(130));
Deno.addSignalListener("SIGINT", onSignal);
Deno.addSignalListener("SIGTERM", onSignal);
const rows: Record<string, unknown>[] = [];
try {
  if (flags.model === "default") dir = join(ROOT, "models/adaptmesh-bert-small");
  else {
    dir = join(tmp, "model");
    await Deno.mkdir(dir);
    await writeShapeCheckpoint(flags.model, dir);
  }
  const task = await writeSmallTask(tmp);
  for (const mbit of links) {
    for (const n of counts) {
      for (let k = 1; k <= maxWorkers; k++) await dropLink(k);
      for (let k = 1; k <= n; k++) await makeLink(k, mbit);
      for (const mode of modes) {
        console.error(`wan: ${mbit} Mbit/s, ${n} worker(s), ${mode.name} …`);
        try {
          const r = await runOne(dir, task, mbit, n, mode.flags);
          rows.push({ mode: mode.name, flags: mode.flags.join(" "), ...r });
        } catch (e) {
          // One configuration that fails (a worker killed for memory, a timeout) is recorded, not fatal.
          rows.push({
            mode: mode.name,
            flags: mode.flags.join(" "),
            linkMbit: mbit,
            workers: n,
            failed: e instanceof Error ? e.message : String(e),
          });
        }
        console.error(`  ${JSON.stringify(rows.at(-1))}`);
      }
    }
  }
} finally {
  await cleanup();
}

const date = new Date().toISOString().slice(0, 10);
const out = flags.out || join(ROOT, `bench/results/wan-${date}.json`);
const doc = {
  date,
  machine: { cores: navigator.hardwareConcurrency, os: Deno.build.os, deno: Deno.version.deno },
  model: flags.model,
  setting: {
    microBatchesPerStep: flags["micro-batches"],
    microBatch: "1 example × 8 tokens",
    backend: flags.backend,
    threads: flags.threads,
    steps: flags.steps,
    shaping: "tbf on both ends of a veth pair per worker; no added delay (no netem)",
  },
  rows,
};
await Deno.writeTextFile(out, JSON.stringify(doc, null, 2) + "\n");
console.log(table(
  ["link", "workers", "mode", "step s", "MB in/step", "MB out/step", "wire share"],
  rows.map((r) => [
    `${r.linkMbit} Mbit/s`,
    r.workers as number,
    r.mode as string,
    r.stepSeconds as number,
    r.mbInPerStep as number,
    r.mbOutPerStep as number,
    `${Math.round((r.wireShare as number) * 100)}%`,
  ]),
));
console.error(`wrote ${out}`);
