import assert from "node:assert/strict";
import { parseRunFlags, resumedConfig, storedSettings } from "../coordinator/run_config.ts";
import { DEFAULT_LR, DEFAULT_OPTIMIZER_CONFIG } from "../coordinator/optimizer.ts";
import { DEFAULT_SCHEDULE } from "../coordinator/lr_schedule.ts";
import { DEFAULT_ADVERSARY } from "../shared/adversary.ts";
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

Deno.test("parseRunFlags: flag defaults are the owning modules' DEFAULT_* constants", async () => {
  const { training } = (await parseRunFlags([], {}, "")).config;
  assert.deepEqual(training.optimizer, {
    ...DEFAULT_OPTIMIZER_CONFIG,
    lr: DEFAULT_LR.lamb,
    clip: 0,
  });
  assert.deepEqual(training.schedule, DEFAULT_SCHEDULE);
  assert.deepEqual(training.adversary, DEFAULT_ADVERSARY);
});

Deno.test("resumedConfig: stored settings come back whole; address, token and UI from the command line", async () => {
  const run = (await parseRunFlags(
    [
      ...["--optimizer", "adamw", "--adv", "freelb", "--adv-steps", "2", "--no-shuffle"],
      ...["--deterministic", "--task", "sst2", "--data", "/d", "--save-dtype", "bf16"],
      ...["--save", "/old", "--eval-every", "3", "--token", "old", "--epochs", "2"],
    ],
    {},
    "",
  )).config;
  const stored = JSON.parse(JSON.stringify(storedSettings(run)));
  const given = (await parseRunFlags(["--resume", "/ck", "--token", "new", "--quiet"], {}, ""))
    .config;
  const r = resumedConfig(given, stored, "--resume /ck");
  assert.deepEqual(r.training, run.training);
  assert.deepEqual(r.data, run.data);
  assert.deepEqual(r.io, { ...run.io, save: "/ck", resume: "/ck" });
  assert.deepEqual(r.network, given.network);
  assert.deepEqual(r.ui, given.ui);
});

Deno.test("resumedConfig: a bad stored value fails the flag's own check, naming the checkpoint", async () => {
  const given = (await parseRunFlags(["--resume", "/ck"], {}, "")).config;
  const stored = storedSettings((await parseRunFlags([], {}, "")).config);
  const flagError = async (args: string[]) => {
    try {
      await parseRunFlags(args, {}, "");
    } catch (e) {
      return (e as Error).message;
    }
    throw new Error("no error");
  };
  for (const [flag, value] of [["lr", -1], ["adv", "fgsm"], ["save-shard-size", "5 apples"]]) {
    const message = await flagError([`--${flag}=${value}`]);
    assert.throws(
      () => resumedConfig(given, { ...stored, [flag]: value }, "--resume /ck"),
      (e) => e instanceof FlagError && e.message === `--resume /ck: ${message}`,
    );
  }
  assert.throws(
    () => resumedConfig(given, { ...stored, token: "x" }, "--resume /ck"),
    /--resume \/ck: unknown setting "token"/,
  );
});
