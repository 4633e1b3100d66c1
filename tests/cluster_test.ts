/** `deno task cluster` end to end, as a user runs it (README), on the tiny fixtures. */
import assert from "node:assert/strict";
import { tinyModelDir, tinyRunArgs, tinyTaskDir } from "./support/fixtures.ts";
import { finish, LineReader, ROOT, runDenoTask } from "./support/processes.ts";

/** `deno task cluster ARGS` on the tiny fixtures (2 wasm workers), run to its end. */
async function cluster(extra: string[] = []) {
  const model = await tinyModelDir();
  const task = await tinyTaskDir();
  return runDenoTask("cluster", [
    ...tinyRunArgs(model, task, extra),
    "--workers",
    "2",
    "--backend",
    "tfjs-wasm",
  ]);
}

Deno.test("deno task cluster trains over real WebSockets with 2 worker processes and evaluates", async () => {
  const { code, stdout, stderr } = await cluster();
  assert.equal(code, 0, stdout + stderr);
  // Progress, notes and the workers' lines are on stderr …
  assert.match(stderr, /dashboard: http:\/\/127\.0\.0\.1:\d+\//);
  assert.match(stderr, /deno task worker --url ws:\/\/127\.0\.0\.1:\d+\/ws --token test-token/);
  assert.equal(stderr.match(/joined run/g)?.length, 2, stderr);
  assert.match(stderr, /final evaluation: accuracy \d\.\d{4} \(16 examples\)/);
  // … and stdout is the result: one JSON line (so `… 2>/dev/null | tail -1` works).
  const lines = stdout.trim().split("\n");
  assert.equal(lines.length, 1, stdout);
  const last = JSON.parse(lines[0]);
  assert.equal(last.steps, 4);
  assert.equal(last.examples, 16);
});

Deno.test("cluster --quiet prints only the final JSON line: no progress, no notes", async () => {
  const { code, stdout, stderr } = await cluster(["--quiet"]);
  assert.equal(code, 0, stdout + stderr);
  const lines = stdout.trim().split("\n");
  assert.equal(lines.length, 1, stdout);
  const last = JSON.parse(lines[0]);
  assert.equal(last.steps, 4);
  assert.equal(last.examples, 16);
  // `deno task` itself names the task on stderr; nothing else may appear there.
  assert.deepEqual(stderr.split("\n").filter((l) => l && !l.startsWith("Task ")), [], stderr);
});

Deno.test("cluster refuses unknown flags and bad values with a message naming them", async () => {
  for (
    const [args, re] of [[["--bogus"], /bogus/], [
      ["--adv", "fgsm"],
      /--adv must be one of pgd, freelb, off/,
    ]] as const
  ) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "coordinator/cluster.ts", ...args],
      cwd: ROOT,
      env: { NO_COLOR: "1" },
    }).output();
    assert.equal(out.code, 2);
    assert.match(new TextDecoder().decode(out.stderr), re);
  }
});

Deno.test("Ctrl-C on cluster (SIGINT to its process group) stops without alarming lines", async () => {
  const model = await tinyModelDir();
  const task = await tinyTaskDir();
  const args = tinyRunArgs(model, task, [
    "--steps",
    "500",
    "--workers",
    "1",
    "--backend",
    "tfjs-wasm",
  ]);
  // `setsid`: the cluster leads its own process group, as a shell's foreground job does, so one
  // signal reaches it and its worker together, as Ctrl-C does in a terminal.
  const p = new Deno.Command("setsid", {
    args: [Deno.execPath(), "run", "-A", "coordinator/cluster.ts", ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const out = new LineReader(p.stdout), err = new LineReader(p.stderr);
  await err.waitFor(/^worker \S+ joined: /); // progress and notes go to stderr
  // Mid-run: a few steps done, tasks in flight.
  await new Promise((r) => setTimeout(r, 1500));
  Deno.kill(-p.pid, "SIGINT");
  const status = await finish(p, [out, err]);
  const all = [...out.lines, ...err.lines].join("\n");
  assert.equal(status.code, 0, all);
  const last = JSON.parse(out.lines.filter((l) => l.startsWith("{")).at(-1)!);
  assert.equal(last.stopped, true, all);
  assert.ok(err.lines.includes("signal received: checkpointing and stopping"), all);
  assert.ok(err.lines.some((l) => /^\[worker \d+\] exiting: /.test(l)), all);
  assert.equal(out.lines.length, 1, `stdout is the result line only:\n${out.lines.join("\n")}`);
  assert.doesNotMatch(
    all,
    /unknown_task|never assigned|failed to send|reset by peer|connection failed|refused|error/i,
  );
});
