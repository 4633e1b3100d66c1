/**
 * How startCoordinator wires a run together (coordinator/coordinator.ts):
 * the trainer's dispatch window is the scheduler's, set once; results are
 * received into the trainer's pool, which its accumulator refills.
 */
import assert from "node:assert/strict";
import { startCoordinator } from "../coordinator/coordinator.ts";
import { parseRunFlags } from "../coordinator/run_config.ts";
import { initBackend } from "../shared/compute/create.ts";
import { quickRunArgs } from "./support/fixtures.ts";

await initBackend("tfjs-wasm");

for (const recycleResults of [true, false]) {
  Deno.test(`the scheduler's window is the trainer's; recycled results: ${recycleResults}`, async () => {
    const { config } = await parseRunFlags(await quickRunArgs(["--port", "0"]), {}, "");
    const c = await startCoordinator(config, { log: () => {}, recycleResults });
    try {
      assert.ok(c.trainer.dispatchWindow >= 2);
      assert.equal(c.scheduler.options.window, c.trainer.dispatchWindow);
      if (recycleResults) {
        assert.equal(c.trainer.receivePool?.capacity, c.trainer.dispatchWindow);
        assert.equal(c.trainer.receivePool?.reserveElements, c.trainer.gradLayout.total);
      } else {
        assert.equal(c.trainer.receivePool, undefined);
      }
    } finally {
      c.stop();
      await c.done.catch(() => {});
      await c.close();
    }
  });
}
