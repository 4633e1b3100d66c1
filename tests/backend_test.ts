/**
 * shared/compute/backend.ts and create.ts: the backend names (and the old
 * ones, with their note), the automatic choice (cpu when a BLAS loads, else
 * tfjs-wasm; never webgpu until it is wired), the one start line, and that nothing breaks where FFI or the library is missing — as
 * real worker processes and a real cluster run see it.
 */
import assert from "node:assert/strict";
import {
  BACKEND_NAMES,
  backendRequest,
  CPU_HINT,
  cpuBlas,
  isBackendName,
  parseBackendName,
  pickBackend,
} from "../shared/compute/backend.ts";
import {
  activeBackend,
  backendUnavailable,
  initBackend,
  NO_WEBGPU_ADAPTER,
  startBackend,
} from "../shared/compute/create.ts";
import { FlagError } from "../shared/cli/flags.ts";
import { loadBlas } from "../shared/engine/devices/cpu/blas.ts";
import { tinyModelDir, tinyRunArgs, tinyTaskDir } from "./support/fixtures.ts";
import { finish, LineReader, ROOT, spawnWorker } from "./support/processes.ts";
import { parseRunFlags } from "../coordinator/run_config.ts";
import { type Coordinator, startCoordinator } from "../coordinator/coordinator.ts";

const blasHere = loadBlas().blas !== null;
if (!blasHere) console.warn("no BLAS library here: cpu cases are skipped");

/** Runs `deno <args>` from the repo root; returns status and output. */
async function deno(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    stdin: "null",
    env: { NO_COLOR: "1", ...env },
  }).output();
  const d = new TextDecoder();
  return { code: r.code, out: d.decode(r.stdout), err: d.decode(r.stderr) };
}

/**
 * The end of a tiny cluster run (tinyRunArgs): the held-out set evaluated on
 * `workers` worker(s) (a regular expression), a final accuracy, 4 steps.
 */
function assertTinyRunEnd(out: string, workers: string): void {
  assert.match(out, new RegExp(`evaluated 16 examples on ${workers} worker\\(s\\)`));
  assert.match(out, /final evaluation: accuracy \d\.\d{4}/);
  const last = JSON.parse(out.trim().split("\n").filter((l) => l.startsWith("{")).at(-1)!);
  assert.equal(last.steps, 4);
}

/** A worker with nowhere to connect: it prints its backend line and gives up quickly. */
function workerArgs(perms: string[], extra: string[] = []): string[] {
  return [
    "run",
    ...perms,
    "--no-prompt",
    "worker/main.ts",
    "--url",
    "ws://127.0.0.1:9/ws",
    "--token",
    "t",
    "--connect-timeout",
    "0.2",
    ...extra,
  ];
}

/** `deno run` of the evaluate command. */
const EVALUATE = ["run", "-A", "shared/cli/evaluate.ts"];

/** Runs `fn` on a fresh fixture model and task (tinyModelDir's and tinyTaskDir's arguments), removed afterwards. */
async function withFixtures(
  modelArgs: Parameters<typeof tinyModelDir>,
  taskArgs: Parameters<typeof tinyTaskDir>,
  fn: (model: string, task: Awaited<ReturnType<typeof tinyTaskDir>>) => Promise<void>,
): Promise<void> {
  const model = await tinyModelDir(...modelArgs);
  const task = await tinyTaskDir(...taskArgs);
  try {
    await fn(model, task);
  } finally {
    await Deno.remove(model, { recursive: true });
    await Deno.remove(task.dir, { recursive: true });
  }
}

Deno.test("one list of backend names; bad names and flags are errors that list them", () => {
  assert.deepEqual([...BACKEND_NAMES], ["cpu", "webgpu", "tfjs-wasm", "tfjs-cpu", "tfjs-webgpu"]);
  for (const n of BACKEND_NAMES) assert.ok(isBackendName(n));
  assert.ok(!isBackendName("gpu"));
  assert.ok(!isBackendName("native"));
  assert.throws(
    () => parseBackendName("blas"),
    /must be one of cpu, webgpu, tfjs-wasm, tfjs-cpu, tfjs-webgpu/,
  );
  assert.throws(() => backendRequest({ backend: "gpu" }), FlagError);
  assert.throws(() => backendRequest({ threads: 0 }), /--threads must be at least 1/);
  assert.throws(() => backendRequest({ blas: " " }), /--blas needs/);
  assert.deepEqual(backendRequest({ backend: "cpu", threads: 2, blas: "x.so" }), {
    requested: "cpu",
    opts: { threads: 2, blas: "x.so" },
  });
});

Deno.test("the old names native and wasm still work, with a one-line note", () => {
  const notes: string[] = [];
  const note = (l: string) => notes.push(l);
  assert.equal(parseBackendName("native", "--backend", note), "cpu");
  assert.equal(backendRequest({ backend: "wasm" }, note).requested, "tfjs-wasm");
  assert.equal(parseBackendName("tfjs-cpu", "--backend", note), "tfjs-cpu");
  assert.deepEqual(notes, [
    "note: --backend native is now called cpu; the old name will be removed",
    "note: --backend wasm is now called tfjs-wasm; the old name will be removed",
  ]);
});

Deno.test("webgpu is the engine on a GPU: --backend webgpu runs on the software adapter, naming it; never picked on one", async () => {
  assert.equal(await backendUnavailable("cpu"), null);
  assert.notEqual((await pickBackend({ blas: "none" })).name, "webgpu", "llvmpipe is no GPU");
  const adapter = await (navigator as Navigator & { gpu?: GPU }).gpu?.requestAdapter();
  if (!adapter) {
    console.log("no WebGPU adapter here: webgpu must refuse, saying so");
    assert.equal(await backendUnavailable("webgpu"), NO_WEBGPU_ADAPTER);
    return;
  }
  assert.equal(await backendUnavailable("webgpu"), null);
  const r = await deno(workerArgs(["-A"], ["--backend", "webgpu"]));
  assert.match(r.out + r.err, /backend webgpu on .*\(software adapter\)/);
});

Deno.test("cpuBlas: 'none' turns it off with the reason; a named library that is missing throws", () => {
  const off = cpuBlas({ blas: "none" });
  assert.equal(off.blas, null);
  assert.match(off.reason!, /BLAS turned off \(--blas=none\)/);
  assert.throws(() => cpuBlas({ blas: "/nonexistent/libblas.so" }), /cannot load BLAS library/);
});

Deno.test("pickBackend: tfjs-wasm with the reason when BLAS is off; cpu when it loads", async () => {
  const off = await pickBackend({ blas: "none" });
  assert.equal(off.name, "tfjs-wasm");
  assert.match(off.note!, /BLAS turned off/);
  if (blasHere) assert.deepEqual(await pickBackend({}), { name: "cpu", note: null });
});

Deno.test({
  name: "initBackend cpu: the BLAS at the asked thread count, tfjs on wasm beneath",
  ignore: !blasHere,
  async fn() {
    const { backend, line } = await startBackend("cpu", { threads: 1 });
    assert.equal(backend.name, "cpu");
    assert.equal(backend.threads, 1);
    assert.equal(backend.blas!.threads() ?? 1, 1);
    assert.equal(activeBackend(), backend);
    assert.match(line, /^backend cpu on .*1 thread.* CPU \(\d+ cores\)$/);
    const two = await initBackend("cpu", { threads: 2 });
    if (two.blas!.threadControl) assert.equal(two.blas!.threads(), 2);
    await assert.rejects(initBackend("cpu", { threads: 0 }), /positive integer/);
    await assert.rejects(
      initBackend("cpu", { blas: "none" }),
      new RegExp(`cpu: BLAS turned off.*${CPU_HINT.slice(0, 30)}`),
    );
    const wasm = await initBackend("tfjs-wasm");
    assert.equal(wasm.name, "tfjs-wasm");
    assert.equal(activeBackend()?.name, "tfjs-wasm");
  },
});

Deno.test("worker: --blas /nonexistent fails clearly (exit 1), naming the library", async () => {
  const r = await deno(workerArgs(["-A"], ["--blas", "/nonexistent/libopenblas.so.0"]));
  assert.equal(r.code, 1, r.out + r.err);
  assert.match(
    r.err,
    /error: backend \(auto\): cannot load BLAS library \/nonexistent\/libopenblas\.so\.0/,
  );
  // The old name still works: a one-line note, then the same error under the new name.
  const n = await deno(workerArgs(["-A"], ["--backend", "native", "--blas", "/nonexistent/x.so"]));
  assert.equal(n.code, 1);
  assert.match(n.err, /^note: --backend native is now called cpu; the old name will be removed$/m);
  assert.match(n.err, /error: backend cpu: cannot load BLAS library \/nonexistent\/x\.so/);
});

Deno.test({
  name:
    "worker: without a BLAS (ADAPTMESH_BLAS=none) or without FFI it starts on tfjs-wasm and says how to get cpu",
  async fn() {
    const off = await deno(workerArgs(["-A"]), { ADAPTMESH_BLAS: "none" });
    assert.match(
      off.out,
      /backend tfjs-wasm \(auto\) on .*BLAS turned off \(ADAPTMESH_BLAS=none\)/,
    );
    assert.match(off.out, /apt-get install libopenblas0-pthread/);
    const noFfi = await deno(
      workerArgs(["--allow-read", "--allow-env", "--allow-net", "--allow-sys"]),
    );
    assert.match(
      noFfi.out,
      /backend tfjs-wasm \(auto\) on .*FFI is not permitted/,
      noFfi.out + noFfi.err,
    );
    // Both got as far as trying to connect.
    for (const r of [off, noFfi]) assert.match(r.out, /exiting: no coordinator at/);
  },
});

Deno.test({
  name: "worker: picks cpu where a BLAS loads and says which library and threads",
  ignore: !blasHere,
  async fn() {
    const r = await deno(workerArgs(["-A"], ["--threads", "1"]));
    assert.match(r.out, /backend cpu \(auto\) on .*\(lib[^)]*\), 1 thread on /, r.out + r.err);
  },
});

Deno.test({
  name: "cluster with no BLAS falls back to tfjs-wasm workers (one per core) and still trains",
  async fn() {
    await withFixtures([], [], async (model, task) => {
      const r = await deno(["run", "-A", "coordinator/cluster.ts", ...tinyRunArgs(model, task)], {
        ADAPTMESH_BLAS: "none",
      });
      assert.equal(r.code, 0, r.out + r.err);
      const cores = navigator.hardwareConcurrency;
      assert.match(
        r.err,
        new RegExp(`started ${cores} local worker\\(s\\): tfjs-wasm \\(auto; BLAS turned off`),
      );
      // The held-out evaluation runs on the workers: the coordinator computes nothing itself.
      assertTinyRunEnd(r.err + r.out, "\\d+");
    });
  },
});

Deno.test({
  name:
    "cluster picks cpu where a BLAS loads: one worker on every core (deterministic: one per core)",
  ignore: !blasHere,
  async fn() {
    await withFixtures([], [], async (model, task) => {
      const cores = navigator.hardwareConcurrency;
      for (const deterministic of [false, true]) {
        const r = await deno([
          "run",
          "-A",
          "coordinator/cluster.ts",
          ...tinyRunArgs(model, task, [`--deterministic=${deterministic}`]),
        ]);
        assert.equal(r.code, 0, r.out + r.err);
        const [n, t] = deterministic ? [cores, 1] : [1, cores];
        assert.match(
          r.err,
          new RegExp(
            `started ${n} local worker\\(s\\): cpu, ${t} BLAS threads? each \\(auto\\)`,
          ),
          r.err,
        );
        assert.equal(r.err.match(/backend cpu on /g)?.length, n);
        assertTinyRunEnd(r.err + r.out, `${n}`);
      }
    });
  },
});

Deno.test({
  name:
    "evaluate and predict: cpu by default, the same answers as tfjs-wasm; no BLAS falls back, a missing --blas fails",
  async fn() {
    await withFixtures([5], [8, 24], async (model, task) => {
      const input = await Deno.makeTempFile({ suffix: ".jsonl" });
      try {
        await Deno.writeTextFile(
          input,
          ["a very good film", "the plot was dull and boring"].map((t) =>
            JSON.stringify({ text: t })
          )
            .join("\n") + "\n",
        );
        const evaluate = (args: string[], env: Record<string, string> = {}) =>
          deno([...EVALUATE, "--model", model, "--eval", task.eval, ...args], env);
        const predict = (args: string[], env: Record<string, string> = {}) =>
          deno(
            ["run", "-A", "shared/cli/predict.ts", "--model", model, "--input", input, ...args],
            env,
          );
        const wasmEval = await evaluate(["--backend", "tfjs-wasm"]);
        assert.equal(wasmEval.code, 0, wasmEval.err);
        assert.match(wasmEval.err, /^backend tfjs-wasm on /m);
        const off = await evaluate([], { ADAPTMESH_BLAS: "none" });
        assert.equal(off.code, 0, off.err);
        assert.match(
          off.err,
          /backend tfjs-wasm \(auto\) on .*BLAS turned off.*apt-get install libopenblas0-pthread/,
        );
        assert.equal(off.out.trim().split("\n").at(-1), wasmEval.out.trim().split("\n").at(-1));
        const bad = await evaluate(["--blas", "/nonexistent/libopenblas.so.0"]);
        assert.equal(bad.code, 1);
        assert.match(bad.err, /error: cannot load BLAS library \/nonexistent\/libopenblas\.so\.0/);
        if (blasHere) {
          const nat = await evaluate(["--threads", "1"]);
          assert.equal(nat.code, 0, nat.err);
          assert.match(nat.err, /^backend cpu \(auto\) on .*1 thread/m);
          const a = JSON.parse(nat.out.trim().split("\n").at(-1)!);
          const b = JSON.parse(wasmEval.out.trim().split("\n").at(-1)!);
          assert.equal(a.examples, 24);
          // Logits agree to 1e-4 (below); a prediction on the fence may still flip.
          assert.ok(
            Math.abs(a.accuracy - b.accuracy) <= 1 / 24,
            `accuracy ${a.accuracy} vs ${b.accuracy}`,
          );
          const pn = await predict([]), pw = await predict(["--backend", "tfjs-wasm"]);
          assert.equal(pn.code, 0, pn.err);
          const rows = (s: string) => s.trim().split("\n").map((l) => JSON.parse(l));
          const [rn, rw] = [rows(pn.out), rows(pw.out)];
          assert.equal(rn.length, 2);
          rn.forEach((r, i) => {
            assert.equal(r.label, rw[i].label);
            r.logits.forEach((x: number, j: number) =>
              assert.ok(
                Math.abs(x - rw[i].logits[j]) <= 1e-4,
                `logit ${i},${j}: ${x} vs ${rw[i].logits[j]}`,
              )
            );
          });
        }
      } finally {
        await Deno.remove(input);
      }
    });
  },
});

Deno.test({
  name:
    "deterministic run: cpu workers give the same bits with 1 or 2 of them; a tfjs-wasm worker is refused",
  ignore: !blasHere,
  async fn() {
    // Wide enough that OpenBLAS threads its products (at 2 threads they change bits).
    await withFixtures(
      [3, { hidden_size: 64, intermediate_size: 256 }],
      [96, 16],
      async (model, task) => {
        const args = tinyRunArgs(model, task, [
          "--steps",
          "6",
          "--global-batch",
          "32",
          "--micro-batch",
          "16",
          "--max-len",
          "64",
        ]);
        /** One run with a cpu worker per entry of `threads` (its --threads), and maybe a tfjs-wasm one. */
        const run = async (threads: number[], wasm: boolean) => {
          const { config } = await parseRunFlags(args, {}, "");
          const c = await startCoordinator(config, { log: () => {} });
          const spawn = (backend: string, t = 1) => {
            const p = spawnWorker(c.wsUrl, c.token, ["--threads", String(t)], backend);
            return { p, out: new LineReader(p.stdout), err: new LineReader(p.stderr) };
          };
          const ws = threads.map((t) => spawn("cpu", t));
          for (const w of ws) await w.out.waitFor(/joined run/);
          const late = wasm ? spawn("tfjs-wasm") : null;
          if (late) {
            await late.out.waitFor(
              /coordinator refused: wrong_backend: .*every worker must use backend cpu/,
            );
          }
          await c.done;
          await c.close();
          for (const w of [...ws, ...(late ? [late] : [])]) await finish(w.p, [w.out, w.err]);
          assert.match(
            ws[0].out.lines.join("\n"),
            new RegExp(`backend cpu on .*${threads[0]} thread`),
          );
          return c.trainer.weights;
        };
        // Asked for 1 and for 2 BLAS threads: pinned to one, the same bits.
        const one = await run([1], false);
        const two = await run([2, 2], true);
        assert.equal(two.length, one.length);
        let differ = 0;
        for (let i = 0; i < one.length; i++) if (!Object.is(one[i], two[i])) differ++;
        assert.equal(differ, 0, `${differ} of ${one.length} weights differ`);
      },
    );
  },
});

/** A worker process of `backend` joining the coordinator at `url`. */
function backendWorker(url: string, token: string, backend: string) {
  const p = spawnWorker(url, token, [], backend);
  return { p, out: new LineReader(p.stdout), err: new LineReader(p.stderr) };
}

/**
 * A deterministic run on one tfjs-wasm worker, stopped (and checkpointed into a
 * new folder) after its first step; `resume` then starts the coordinator of
 * `--resume FOLDER` alone (the command line does not say deterministic).
 */
async function resumedDeterministicRun(
  resume: (c: Coordinator) => Promise<void>,
): Promise<void> {
  await withFixtures([3], [48, 16], async (model, task) => {
    const save = await Deno.makeTempDir({ prefix: "adaptmesh-resume-det-" });
    try {
      const first = await parseRunFlags(
        tinyRunArgs(model, task, ["--deterministic", "--save", save, "--steps", "6"]),
        {},
        "",
      );
      let c: Coordinator | null = null;
      c = await startCoordinator(first.config, {
        log: () => {},
        observer: { step: () => c?.stop() },
      });
      const a = backendWorker(c.wsUrl, c.token, "tfjs-wasm");
      await c.done;
      await c.close();
      await finish(a.p, [a.out, a.err]);
      const resumed = await parseRunFlags(["--resume", save, "--port", "0"], {}, "");
      assert.equal(
        resumed.config.training.deterministic,
        false,
        "the command line alone does not say it",
      );
      const r = await startCoordinator(resumed.config, { log: () => {} });
      await resume(r);
      await r.done;
      await r.close();
    } finally {
      await Deno.remove(save, { recursive: true });
    }
  });
}

Deno.test("a deterministic run resumed with --resume alone keeps its one-backend rule", async () => {
  await resumedDeterministicRun(async (r) => {
    const w = backendWorker(r.wsUrl, r.token, "tfjs-wasm");
    await w.out.waitFor(/joined run/);
    const other = backendWorker(r.wsUrl, r.token, "tfjs-cpu");
    await other.out.waitFor(
      /coordinator refused: wrong_backend: .*every worker must use backend tfjs-wasm/,
      60_000,
    );
    await r.done;
    for (const x of [w, other]) await finish(x.p, [x.out, x.err]);
  });
});

Deno.test("a resumed deterministic run keeps its pinned backend: another one joining first is refused", async () => {
  await resumedDeterministicRun(async (r) => {
    assert.equal(r.trainer.pinnedBackend, "tfjs-wasm", "the checkpoint names the pinned backend");
    const other = backendWorker(r.wsUrl, r.token, "tfjs-cpu");
    await other.out.waitFor(
      /coordinator refused: wrong_backend: .*every worker must use backend tfjs-wasm/,
      60_000,
    );
    const w = backendWorker(r.wsUrl, r.token, "tfjs-wasm");
    await w.out.waitFor(/joined run/);
    await r.done;
    for (const x of [other, w]) await finish(x.p, [x.out, x.err]);
  });
});
