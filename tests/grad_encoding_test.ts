import assert from "node:assert/strict";
import {
  decodeFactor,
  decodeGrad,
  encodeGrad,
  F16_MAX,
  f16ScaleFor,
  gradElementBytes,
} from "../shared/wire/grad_encoding.ts";
import { mixSeed, Rng } from "../shared/method/rng.ts";

/** Values spread over many binades, both signs. */
function spread(n: number, seed: number, lo = -12, hi = 4): Float32Array {
  const rng = new Rng(mixSeed(seed));
  return Float32Array.from(
    { length: n },
    () => (rng.next() < 0.5 ? -1 : 1) * 2 ** (lo + (hi - lo) * rng.next()),
  );
}

Deno.test("the f16 scale puts the largest magnitude at or below 65,504 and never overflows", () => {
  for (const m of [1e-30, 3e-8, 0.5, 1, 65504, 65505, 1e5, 3.4e38]) {
    const s = f16ScaleFor(m);
    assert.ok(m * 2 ** s <= F16_MAX, `${m}`);
    assert.ok(s === 120 || s === -120 || m * 2 ** (s + 1) > F16_MAX, `${m}: the largest s`);
  }
  assert.equal(f16ScaleFor(0), 0);
  for (const [lo, hi] of [[-30, -20], [-5, 5], [20, 30], [100, 127]]) {
    const x = spread(4096, lo, lo, hi);
    const e = encodeGrad(x, "f16");
    for (const w of e.data as Uint16Array) assert.notEqual(w & 0x7c00, 0x7c00, "no Inf or NaN");
    const back = decodeGrad(e);
    let max = 0;
    for (const v of x) max = Math.max(max, Math.abs(v));
    for (let i = 0; i < x.length; i++) {
      // Elements within 2^14 of the largest are normal halves: 11 bits, half an ulp.
      if (Math.abs(x[i]) >= max * 2 ** -14) {
        assert.ok(Math.abs(back[i] - x[i]) <= Math.abs(x[i]) * 2 ** -11, `${x[i]} → ${back[i]}`);
      }
    }
  }
});

Deno.test("bf16 rounds to nearest even with 8 bits; f32 passes through; sizes halve", () => {
  const x = spread(10_000, 7, -100, 100);
  const back = decodeGrad(encodeGrad(x, "bf16"));
  for (let i = 0; i < x.length; i++) {
    assert.ok(Math.abs(back[i] - x[i]) <= Math.abs(x[i]) * 2 ** -8);
  }
  // Ties: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 → the even one, 1; 1 + 3·2^-8 → 1 + 2^-6.
  const ties = decodeGrad(encodeGrad(new Float32Array([1 + 2 ** -8, 1 + 3 * 2 ** -8]), "bf16"));
  assert.deepEqual([...ties], [1, 1 + 2 ** -6]);
  // f16: 1 + 2^-11 (a tie) → 1, at scale 2^15 … the scale is exact, so the tie survives it.
  const h = encodeGrad(new Float32Array([1 + 2 ** -11, 1]), "f16");
  assert.equal(h.scale, 15);
  assert.deepEqual([...decodeGrad(h)], [1, 1]);
  assert.equal(decodeFactor(h), 2 ** -15);
  const f = encodeGrad(x, "f32");
  assert.equal(f.data, x);
  assert.equal(gradElementBytes("f32"), 4);
  assert.equal(gradElementBytes("bf16"), 2);
  assert.equal(encodeGrad(x, "f16").data.byteLength, x.byteLength / 2);
});

Deno.test("non-finite input stays non-finite (the protocol refuses it, it is never hidden)", () => {
  const x = new Float32Array([1, NaN, Infinity]);
  const b = encodeGrad(x, "bf16").data as Uint16Array;
  assert.equal(b[1] & 0x7f80, 0x7f80);
  assert.equal(b[2] & 0x7f80, 0x7f80);
  const h = encodeGrad(new Float32Array([1, Infinity]), "f16");
  assert.equal((h.data as Uint16Array)[1] & 0x7c00, 0x7c00);
});
