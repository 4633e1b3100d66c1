import assert from "node:assert/strict";
import { parseRunFlags, resumedConfig, storedSettings } from "../coordinator/run_config.ts";
import { DEFAULT_LR, DEFAULT_OPTIMIZER_CONFIG } from "../coordinator/optimizer.ts";
import { DEFAULT_SCHEDULE } from "../coordinator/lr_schedule.ts";
import { DEFAULT_ADVERSARY } from "../shared/method/adversary_config.ts";
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

Deno.test("resumedConfig: a checkpoint of the earlier camelCase format resumes with the same settings", async () => {
  // runConfig as trainer_state.json held it before the settings were stored by flag name.
  const earlier = {
    objective: "classify",
    corpusDocs: 0,
    corpusFile: null,
    modelDir: "/m",
    task: { train: "/t/train.jsonl", eval: "/t/eval.jsonl" },
    maxLen: 16,
    steps: 6,
    epochs: null,
    globalBatch: 12,
    microBatch: 4,
    optimizer: "adamw",
    lr: 0.003,
    warmup: 1,
    schedule: "linear",
    weightDecay: 0.02,
    clip: 1,
    adversary: { mode: "freelb", steps: 2, lr: 0.2, eps: 0.5, norm: "linf", init: 0.1 },
    advStart: 2,
    dropout: null,
    shuffle: false,
    seed: 7,
    evalEvery: 3,
    evalLimit: 0,
    trainLimit: 0,
    checkpointEvery: 1,
    save: "/old",
    saveDtype: "BF16",
    saveShardBytes: 5000000000,
    deterministic: true,
    weightsEncoding: "f32",
    taskTimeoutMs: 0,
    workerSilenceMs: 300000,
  };
  const same = (await parseRunFlags(
    [
      ...["--model", "/m", "--train", "/t/train.jsonl", "--eval", "/t/eval.jsonl"],
      ...["--max-len", "16", "--steps", "6", "--global-batch", "12", "--micro-batch", "4"],
      ...["--optimizer", "adamw", "--lr", "0.003", "--warmup", "1", "--weight-decay", "0.02"],
      ...["--clip", "1", "--adv", "freelb", "--adv-steps", "2", "--adv-lr", "0.2"],
      ...["--adv-eps", "0.5", "--adv-norm", "linf", "--adv-init", "0.1", "--adv-start", "2"],
      ...["--no-shuffle", "--seed", "7", "--eval-every", "3", "--checkpoint-every", "1"],
      ...["--save-dtype", "bf16", "--deterministic"],
    ],
    {},
    "",
  )).config;
  const given = (await parseRunFlags(["--resume", "/ck"], {}, "")).config;
  const r = resumedConfig(given, earlier, "--resume /ck");
  assert.deepEqual(r.training, same.training);
  assert.deepEqual(r.data, same.data);
  assert.deepEqual(r.io, { ...same.io, save: "/ck", resume: "/ck" });
});
