import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs-core";
import { initBackend } from "../shared/compute/create.ts";
import { ascend, initialDelta } from "../shared/tfjs/adversary.ts";
import { ascendHost, initialDeltaHost } from "../shared/method/adversary.ts";
import { adversaryAt, DEFAULT_ADVERSARY } from "../shared/method/adversary_config.ts";
import { Rng } from "../shared/method/rng.ts";

await initBackend("tfjs-cpu");

function close(a: ArrayLike<number>, b: number[], tol = 1e-6) {
  assert.equal(a.length, b.length);
  for (let i = 0; i < b.length; i++) {
    assert.ok(Math.abs(a[i] - b[i]) <= tol, `[${i}] ${a[i]} vs ${b[i]}`);
  }
}

Deno.test("l2 ascent from zero is α·G/‖G‖ per example, with G zeroed at padding", async () => {
  // Two examples, L = 2, H = 2. Example 1's second position is padding.
  const G = tf.tensor3d([[[3, 0], [0, 4]], [[1, 2], [100, 100]]]);
  const mask = tf.tensor2d([[1, 1], [1, 0]]);
  const d = ascend(tf.zeros([2, 2, 2]), G, mask, { ...DEFAULT_ADVERSARY, lr: 0.5, eps: 10 });
  // ‖G_0‖ = 5 → 0.5·[3,0,0,4]/5; ‖G_1‖ over real tokens = √5 → 0.5·[1,2]/√5, padding 0.
  const s = 0.5 / Math.sqrt(5);
  close(await d.data(), [0.3, 0, 0, 0.4, s, 2 * s, 0, 0]);
});

Deno.test("l2 projection caps ‖δ‖ at ε per example and leaves smaller δ alone", async () => {
  const G = tf.tensor3d([[[3, 4]], [[0, 1]]]);
  const mask = tf.tensor2d([[1], [1]]);
  const start = tf.tensor3d([[[0, 0]], [[0.1, 0]]]);
  const d = ascend(start, G, mask, { ...DEFAULT_ADVERSARY, lr: 2, eps: 1 });
  // Example 0: 2·[0.6, 0.8] = [1.2, 1.6], norm 2 → scaled to [0.6, 0.8].
  // Example 1: [0.1, 0] + 2·[0, 1] = [0.1, 2], norm √4.01 → ε-scaled.
  const n = Math.sqrt(0.01 + 4);
  close(await d.data(), [0.6, 0.8, 0.1 / n, 2 / n]);
});

Deno.test("linf ascent adds α·sign(G) and clamps to [-ε, ε]", async () => {
  const G = tf.tensor3d([[[2, -3, 0]]]);
  const d = ascend(tf.tensor3d([[[0.25, 0, 0.1]]]), G, tf.tensor2d([[1]]), {
    ...DEFAULT_ADVERSARY,
    norm: "linf",
    lr: 0.2,
    eps: 0.3,
  });
  close(await d.data(), [0.3, -0.2, 0.1]);
});

Deno.test("random start: zero at padding, bounded by init/sqrt(len·H), same key same draw", async () => {
  const mask = Uint8Array.from([1, 1, 1, 0, 1, 0, 0, 0]); // lengths 3 and 1, L = 4
  const key = { seed: 3, step: 5, index: 2 };
  const a = await initialDelta(mask, 2, 4, 8, 2.0, key).data();
  const b = await initialDelta(mask, 2, 4, 8, 2.0, key).data();
  const c = await initialDelta(mask, 2, 4, 8, 2.0, { ...key, index: 3 }).data();
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  for (let pos = 0; pos < 8; pos++) {
    const bound = pos < 4 ? 2 / Math.sqrt(3 * 8) : 2 / Math.sqrt(1 * 8);
    for (let h = 0; h < 8; h++) {
      const v = a[pos * 8 + h];
      if (!mask[pos]) assert.equal(v, 0);
      else assert.ok(Math.abs(v) <= bound && v !== 0);
    }
  }
  assert.deepEqual([...await initialDelta(mask, 2, 4, 8, 0, key).data()], new Array(64).fill(0));
});

Deno.test("delayed start: mode off before adv-start (a fraction or a step), on from it", () => {
  assert.equal(adversaryAt(DEFAULT_ADVERSARY, 2, 10, 0.3).mode, "off");
  assert.equal(adversaryAt(DEFAULT_ADVERSARY, 3, 10, 0.3).mode, "pgd");
  assert.equal(adversaryAt(DEFAULT_ADVERSARY, 4, 10, 5).mode, "off");
  assert.equal(adversaryAt(DEFAULT_ADVERSARY, 5, 10, 5).mode, "pgd");
  assert.equal(adversaryAt(DEFAULT_ADVERSARY, 0, 10, 0).mode, "pgd");
});

Deno.test("initialDeltaHost is the tensor initialDelta uploads, and fills a given buffer", async () => {
  const mask = Uint8Array.from([1, 1, 0, 1, 1, 1]);
  const key = { seed: 1, step: 2, index: 3 };
  const host = initialDeltaHost(mask, 2, 3, 4, 0.7, key);
  assert.deepEqual(host, await initialDelta(mask, 2, 3, 4, 0.7, key).data());
  const out = new Float32Array(24).fill(5);
  assert.equal(initialDeltaHost(mask, 2, 3, 4, 0.7, key, out), out);
  assert.deepEqual(out, host);
  assert.deepEqual(initialDeltaHost(mask, 2, 3, 4, 0, key, out), new Float32Array(24));
  assert.throws(() => initialDeltaHost(mask, 2, 3, 4, 1, key, new Float32Array(5)), /holds 5/);
});

Deno.test("ascendHost equals ascend (l2 and linf, projection active or not, padding)", async () => {
  const rng = new Rng(4);
  const B = 3, L = 4, H = 5, n = B * L * H;
  const mask = Uint8Array.from([1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 0]);
  for (const norm of ["l2", "linf"] as const) {
    for (const [lr, eps] of [[0.1, 1], [2, 0.3]]) {
      const cfg = { ...DEFAULT_ADVERSARY, norm, lr, eps };
      const d0 = Float32Array.from({ length: n }, () => 0.2 * rng.normal());
      const g = Float32Array.from({ length: n }, () => rng.normal());
      const want = await ascend(
        tf.tensor3d(d0, [B, L, H]),
        tf.tensor3d(g, [B, L, H]),
        tf.tensor2d(Float32Array.from(mask), [B, L]),
        cfg,
      ).data();
      const got = d0.slice();
      ascendHost(got, g, mask, B, L, H, cfg);
      close(got, [...want], 1e-6);
    }
  }
});
