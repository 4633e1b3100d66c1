/**
 * `deno task pretrain` through the real CLI: its own `--help` (its usage
 * line, no `--objective`, none of the labelled task's flags), the flags it
 * refuses, and a tiny masked-LM run to its end on the tiny fixtures.
 */
import assert from "node:assert/strict";
import { tinyModelDir } from "./support/fixtures.ts";
import { runDenoTask } from "./support/processes.ts";
import { CLASSIFY_ONLY_FLAGS } from "../coordinator/run_config.ts";

/** `deno task pretrain ARGS` from the repo root, run to its end. */
function pretrain(args: string[]) {
  return runDenoTask("pretrain", args);
}

Deno.test("deno task pretrain --help is its own: its usage line, no --objective, no task flags", async () => {
  const { code, stdout } = await pretrain(["--help"]);
  assert.equal(code, 0, stdout);
  assert.equal(stdout.split("\n")[0], "deno task pretrain [flags]");
  const flags = [...stdout.matchAll(/^ {2}--([a-z-]+)/gm)].map((m) => m[1]);
  assert.ok(!flags.includes("objective"), stdout);
  for (const f of CLASSIFY_ONLY_FLAGS) assert.ok(!flags.includes(f), `--${f} in\n${stdout}`);
  for (const f of ["corpus", "corpus-docs", "steps", "eval-limit", "metric-for-best", "workers"]) {
    assert.ok(flags.includes(f), `--${f} missing from\n${stdout}`);
  }
  assert.match(stdout, /--metric-for-best <string> +.*mlm_accuracy \(default/);
});

Deno.test("deno task pretrain refuses --objective and the labelled task's flags (exit 2)", async () => {
  for (
    const [args, re] of [
      [["--objective", "classify"], /unknown flag --objective/],
      [["--task", "cola"], /unknown flag --task/],
      [["--train", "x.jsonl"], /unknown flag --train/],
    ] as const
  ) {
    const { code, stderr } = await pretrain([...args]);
    assert.equal(code, 2, stderr);
    assert.match(stderr, re);
  }
});

Deno.test("deno task pretrain runs a tiny masked-LM run to its end", async () => {
  const model = await tinyModelDir();
  const corpus = await Deno.makeTempFile({ suffix: ".txt" });
  const lines = Array.from(
    { length: 40 },
    (_, i) => `the movie was ${i % 2 ? "good" : "dull"} and the plot is ${i % 3 ? "fun" : "bad"}`,
  );
  await Deno.writeTextFile(corpus, lines.join("\n") + "\n");
  try {
    const { code, stdout, stderr } = await pretrain([
      "--model",
      model,
      "--corpus",
      corpus,
      "--steps",
      "2",
      "--global-batch",
      "4",
      "--micro-batch",
      "2",
      "--max-len",
      "16",
      "--eval-limit",
      "4",
      "--port",
      "0",
      "--token",
      "test-token",
      "--deterministic",
      "--workers",
      "1",
      "--backend",
      "tfjs-wasm",
    ]);
    assert.equal(code, 0, stdout + stderr);
    const last = JSON.parse(stdout.trim().split("\n").at(-1)!);
    assert.equal(last.steps, 2);
    assert.ok(Number.isFinite(last.mlm_accuracy), stdout);
    assert.ok(Number.isFinite(last.mlm_loss), stdout);
  } finally {
    await Deno.remove(model, { recursive: true });
    await Deno.remove(corpus);
  }
});
