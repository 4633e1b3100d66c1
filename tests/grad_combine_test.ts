import assert from "node:assert/strict";
import {
  clipByGlobalNorm,
  combineGradients,
  combineLosses,
  globalNorm,
} from "../coordinator/grad_combine.ts";
import { mixSeed, Rng } from "../shared/method/rng.ts";
import { compactGrad, type SparseLayout } from "../shared/model/sparse_grad.ts";

const bits = (a: Float32Array) => [...new Uint32Array(a.buffer, a.byteOffset, a.length)];

Deno.test("combineGradients weights by counts", () => {
  const parts = [
    { index: 0, grad: new Float32Array([1, 2, -4]), count: 3 },
    { index: 1, grad: new Float32Array([5, 0, 8]), count: 1 },
  ];
  // G = (3·g0 + 1·g1) / 4
  const g = combineGradients(parts, 3);
  assert.deepEqual([...g], [(3 * 1 + 5) / 4, (3 * 2 + 0) / 4, (3 * -4 + 8) / 4]);
  assert.deepEqual([...g], [2, 1.5, -1]);
});

Deno.test("combineGradients rounds once to float32", () => {
  // (0.1 + 0.2 + 0.3) / 3 computed in float64 from the float32 inputs, rounded once.
  const f = Math.fround;
  const g = combineGradients([
    { index: 0, grad: new Float32Array([0.1]), count: 1 },
    { index: 1, grad: new Float32Array([0.2]), count: 1 },
    { index: 2, grad: new Float32Array([0.3]), count: 1 },
  ], 1);
  assert.equal(g[0], f((f(0.1) + f(0.2) + f(0.3)) / 3));
});

Deno.test("combineGradients sums in index order, whatever the arrival order", () => {
  // In float64, (1 + 2^60) − 2^60 = 0 but (2^60 − 2^60) + 1 = 1: only index order gives 0.
  const a = { index: 0, grad: new Float32Array([1]), count: 1 };
  const b = { index: 1, grad: new Float32Array([2 ** 60]), count: 1 };
  const c = { index: 2, grad: new Float32Array([-(2 ** 60)]), count: 1 };
  for (const order of [[a, b, c], [b, c, a], [c, a, b], [b, a, c], [c, b, a], [a, c, b]]) {
    assert.equal(combineGradients(order, 1)[0], ((1 + 2 ** 60) - 2 ** 60) / 3);
    assert.equal(combineGradients(order, 1)[0], 0);
  }
});

Deno.test("combineGradients does not depend on arrival order", () => {
  const rng = new Rng(mixSeed(7));
  const total = 1000;
  const parts = Array.from({ length: 9 }, (_, index) => {
    const grad = new Float32Array(total);
    for (let i = 0; i < total; i++) grad[i] = (rng.next() - 0.5) * 10 ** (rng.next() * 8 - 4);
    return { index, grad, count: 1 + (index % 4) };
  });
  const reference = bits(combineGradients(parts, total));
  for (let trial = 0; trial < 5; trial++) {
    const shuffled = [...parts];
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = Math.floor(rng.next() * (i + 1));
      [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
    }
    assert.deepEqual(bits(combineGradients(shuffled, total)), reference);
  }
  // The input list itself is not reordered.
  const copy = [parts[2], parts[0], parts[1]];
  combineGradients(copy, total);
  assert.deepEqual(copy.map((p) => p.index), [2, 0, 1]);
});

Deno.test("combineGradients rejects duplicates, bad counts, nothing", () => {
  const g = new Float32Array(2);
  assert.throws(
    () => combineGradients([{ index: 1, grad: g, count: 1 }, { index: 1, grad: g, count: 1 }], 2),
    /duplicate micro-batch index 1/,
  );
  assert.throws(() => combineGradients([{ index: 0, grad: g, count: 0 }], 2), /count/);
  assert.throws(() => combineGradients([{ index: -1, grad: g, count: 1 }], 2), /index/);
  assert.throws(() => combineGradients([], 2), /no micro-batch/);
});

Deno.test("combineLosses is the count-weighted mean", () => {
  const loss = combineLosses([
    { index: 2, loss: 0.5, count: 2 },
    { index: 0, loss: 1.0, count: 6 },
  ]);
  assert.equal(loss, (6 * 1.0 + 2 * 0.5) / 8);
  assert.throws(
    () => combineLosses([{ index: 0, loss: 1, count: 1 }, { index: 0, loss: 1, count: 1 }]),
    /duplicate/,
  );
});

Deno.test("globalNorm and clipByGlobalNorm", () => {
  assert.equal(globalNorm(new Float32Array([3, -4])), 5);
  assert.equal(globalNorm(new Float32Array(0)), 0);

  const g = new Float32Array([3, -4, 0]);
  assert.deepEqual(clipByGlobalNorm(g, 10), { norm: 5, clipped: false });
  assert.deepEqual([...g], [3, -4, 0]);

  const h = new Float32Array([3, -4, 0]);
  assert.deepEqual(clipByGlobalNorm(h, 1), { norm: 5, clipped: true });
  // scale = 1/5: [0.6, -0.8, 0] rounded to float32
  assert.deepEqual([...h], [Math.fround(3 * (1 / 5)), Math.fround(-4 * (1 / 5)), 0]);
  assert.ok(Math.abs(globalNorm(h) - 1) < 1e-7);

  assert.throws(() => clipByGlobalNorm(new Float32Array([NaN]), 1), /NaN/);
  assert.throws(() => clipByGlobalNorm(new Float32Array([1]), 0), /maxNorm/);
});

Deno.test("combineGradients of row-sparse parts equals the sum of their dense expansions, bit for bit", () => {
  // 7 rows of width 3, then 5 dense elements.
  const s: SparseLayout = { total: 7 * 3 + 5, rowCount: 7, rowWidth: 3 };
  const rng = new Rng(mixSeed(11));
  const rowSets = [[0, 2, 6], [2, 3], [], [1, 2, 3, 4, 5, 6]];
  const parts = rowSets.map((rowList, index) => {
    const dense = new Float32Array(s.total);
    const rows = Int32Array.from(rowList);
    for (const r of rows) {
      for (let i = 0; i < 3; i++) {
        dense[r * 3 + i] = (rng.next() - 0.5) * 10 ** (rng.next() * 6 - 3);
      }
    }
    for (let i = 21; i < s.total; i++) dense[i] = rng.next() - 0.5;
    return { index, rows, grad: compactGrad(dense, rows, s), count: 1 + 2 * index, dense };
  });
  const dense = parts.map((p) => ({ index: p.index, grad: p.dense, count: p.count }));
  const expected = combineGradients(dense, s.total);
  assert.deepEqual(bits(combineGradients(parts, s)), bits(expected));
  // Mixed dense and sparse parts, in any order.
  const mixed = [dense[3], parts[0], dense[2], parts[1]];
  assert.deepEqual(bits(combineGradients(mixed, s)), bits(expected));
  // Hand check of one element: row 2, column 0 appears in parts 0, 1 and 3.
  const e = (j: number) => dense[j].grad[6];
  assert.equal(expected[6], Math.fround((1 * e(0) + 3 * e(1) + 7 * e(3)) / (1 + 3 + 5 + 7)));
});
