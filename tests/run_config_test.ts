import assert from "node:assert/strict";
import { DEFAULT_LR, parseRunFlags } from "../coordinator/run_config.ts";
import { FlagError } from "../shared/cli/flags.ts";

Deno.test("parseRunFlags: the learning rate defaults per optimizer; --lr wins", async () => {
  const lr = async (...args: string[]) => (await parseRunFlags(args, {}, "")).config.lr;
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
