import assert from "node:assert/strict";
import { parseRunFlags } from "../coordinator/run_config.ts";
import { DEFAULT_LR } from "../coordinator/optimizer.ts";
import { FlagError } from "../shared/cli/flags.ts";

Deno.test("parseRunFlags: the learning rate defaults per optimizer; --lr wins", async () => {
  const lr = async (...args: string[]) =>
    (await parseRunFlags(args, {}, "")).config.training.optimizer.lr;
  assert.equal(await lr(), 1e-2);
  assert.equal(await lr("--optimizer", "lamb"), DEFAULT_LR.lamb);
  assert.equal(await lr("--optimizer", "adamw"), 5e-4);
  assert.equal(await lr("--optimizer", "adamw", "--lr", "1e-3"), 1e-3);
  assert.equal(await lr("--lr", "2e-3"), 2e-3);
});

Deno.test("parseRunFlags: a bad learning rate or optimizer is an error that names it", async () => {
  await assert.rejects(() => parseRunFlags(["--lr", "0"], {}, ""), (e) => {
    assert.ok(e instanceof FlagError && e.message.includes("--lr"), String(e));
    return true;
  });
  await assert.rejects(() => parseRunFlags(["--optimizer", "sgd"], {}, ""), (e) => {
    assert.ok(e instanceof FlagError && e.message.includes("--optimizer"), String(e));
    return true;
  });
});

Deno.test("parseRunFlags: --save-dtype takes bf16; --save-shard-size is a byte size", async () => {
  const cfg = async (...args: string[]) => (await parseRunFlags(args, {}, "")).config;
  const plain = await cfg();
  assert.deepEqual([plain.io.saveDtype, plain.io.saveShardBytes], ["F32", 5_000_000_000]);
  const set = await cfg("--save-dtype", "bf16", "--save-shard-size", "500MB");
  assert.deepEqual([set.io.saveDtype, set.io.saveShardBytes], ["BF16", 500_000_000]);
  assert.equal((await cfg("--save-dtype", "f16")).io.saveDtype, "F16");
  for (const [flag, value] of [["save-dtype", "f64"], ["save-shard-size", "5 apples"]]) {
    await assert.rejects(() => parseRunFlags([`--${flag}`, value], {}, ""), (e) => {
      assert.ok(e instanceof FlagError && e.message.includes(`--${flag}`), String(e));
      return true;
    });
  }
});
