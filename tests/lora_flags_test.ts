/** coordinator/lora_flags.ts: the LoRA flags, their defaults and refusals, and what a checkpoint stores. */
import assert from "node:assert/strict";
import { parseRunFlags, storedSettings } from "../coordinator/run_config.ts";

const parse = (args: string[]) => parseRunFlags(["--port", "0", ...args], {}, "");

Deno.test("--lora R: α defaults to R, targets to query,value, dropout to 0; stored in checkpoints", async () => {
  const { config } = await parse(["--lora", "8"]);
  assert.deepEqual(config.training.lora, {
    r: 8,
    alpha: 8,
    dropout: 0,
    targetModules: ["query", "value"],
    adapter: null,
    merge: false,
  });
  const s = storedSettings(config);
  assert.equal(s.lora, 8);
  assert.equal(s["lora-targets"], "query,value");
  const full = await parse([]);
  assert.equal(full.config.training.lora, null);
  assert.equal(storedSettings(full.config).lora, null);
  const custom = await parse([
    "--lora",
    "4",
    "--lora-alpha",
    "16",
    "--lora-targets",
    "query, key,value",
    "--lora-dropout",
    "0.1",
    "--merge",
  ]);
  assert.deepEqual(custom.config.training.lora?.targetModules, ["query", "key", "value"]);
  assert.equal(custom.config.training.lora?.alpha, 16);
  assert.equal(custom.config.training.lora?.merge, true);
});

Deno.test("LoRA flags are refused where they make no sense, naming the flag", async () => {
  await assert.rejects(parse(["--lora", "4", "--adapter", "x"]), /--lora R or --adapter DIR/);
  await assert.rejects(parse(["--adapter", "x", "--lora-alpha", "3"]), /--lora-alpha cannot/);
  await assert.rejects(parse(["--lora-alpha", "3"]), /--lora-alpha needs --lora/);
  await assert.rejects(parse(["--merge"]), /--merge needs --lora/);
  await assert.rejects(parse(["--lora", "4", "--lora-dropout", "1"]), /--lora-dropout/);
  await assert.rejects(parse(["--lora", "4", "--lora-targets", ","]), /--lora-targets/);
  await assert.rejects(
    parse(["--lora", "4", "--objective", "mlm"]),
    /--objective mlm is not supported yet/,
  );
});
