/** `deno task cluster` end to end, as a user runs it (README), on the tiny fixtures. */
import assert from "node:assert/strict";
import { tinyModelDir, tinyRunArgs, tinyTaskDir } from "./support/fixtures.ts";
import { ROOT } from "./support/processes.ts";

Deno.test("deno task cluster trains over real WebSockets with 2 worker processes and evaluates", async () => {
  const model = await tinyModelDir();
  const task = await tinyTaskDir();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "cluster", ...tinyRunArgs(model, task), "--workers", "2", "--backend", "wasm"],
    cwd: ROOT,
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stdout + stderr);
  assert.match(stdout, /dashboard: http:\/\/127\.0\.0\.1:\d+\//);
  assert.match(stdout, /deno task worker --url ws:\/\/127\.0\.0\.1:\d+\/ws --token test-token/);
  assert.equal(stdout.match(/joined run/g)?.length, 2, stdout);
  assert.match(stdout, /final evaluation: accuracy \d\.\d{4} \(16 examples\)/);
  const last = JSON.parse(stdout.trim().split("\n").filter((l) => l.startsWith("{")).at(-1)!);
  assert.equal(last.steps, 4);
  assert.equal(last.examples, 16);
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
