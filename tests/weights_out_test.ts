/** coordinator/weights_out.ts: each version's weights, snapshotted into two alternating buffers. */
import assert from "node:assert/strict";
import { WeightsOut } from "../coordinator/weights_out.ts";
import { CHUNK_BYTES, ChunkedMessage } from "../shared/wire/transfer.ts";
import { deliver } from "./support/transfer.ts";
import type { WeightsMessage } from "../shared/wire/protocol.ts";

const n = CHUNK_BYTES / 4 + 100; // over one chunk: travels as a transfer

Deno.test("versions alternate between two snapshots, each unchanged until version + 2 is prepared", () => {
  const out = new WeightsOut();
  const live = new Float32Array(n);
  const prepared: ChunkedMessage[] = [];
  for (let v = 0; v < 3; v++) {
    live.fill(v + 1);
    const o = out.prepare("run", v, live, "f32");
    assert.ok(o instanceof ChunkedMessage);
    prepared.push(o);
    live.fill(-1); // the optimizer updates the live weights in place
  }
  const data = prepared.map((p) => (p.message as WeightsMessage).data as Float32Array);
  assert.notEqual(data[0], live, "a snapshot, not the live array");
  assert.notEqual(data[0], data[1]);
  assert.equal(data[2], data[0], "version 2 reuses version 0's buffer");
  assert.ok(data[1].every((x) => x === 2), "version 1 untouched by preparing 2");
  assert.ok(data[2].every((x) => x === 3));
  const got = deliver(prepared[1]) as WeightsMessage;
  assert.equal(got.version, 1);
  assert.ok((got.data as Float32Array).every((x) => x === 2));
});

Deno.test("f16 weights are converted; small weights are one frame; NaN is refused before sending", () => {
  const out = new WeightsOut();
  const f16 = out.prepare("run", 4, new Float32Array(2 * n).fill(0.5), "f16");
  assert.ok(f16 instanceof ChunkedMessage, "2 bytes per element: still over one chunk");
  const got = deliver(f16) as WeightsMessage;
  assert.equal(got.encoding, "f16");
  assert.equal(got.data[2 * n - 1], 0x3800); // 0.5 in half precision
  const small = out.prepare("run", 5, new Float32Array([1, 2]), "f32");
  assert.ok(small instanceof Uint8Array);
  assert.deepEqual((deliver(small) as WeightsMessage).data, new Float32Array([1, 2]));
  const bad = new Float32Array(n);
  bad[7] = Infinity;
  assert.throws(() => out.prepare("run", 6, bad, "f32"), /weights\.data\[7\]/);
});
