import assert from "node:assert/strict";
import {
  type AccumulatorPart,
  dispatchWindow,
  freeArrays,
  GradAccumulator,
  maxResultBytes,
  releaseInto,
  RESULT_BUDGET_BYTES,
  type SumPart,
} from "../coordinator/grad_accumulator.ts";
import { BufferPool } from "../shared/wire/transfer.ts";
import { combineGradients, combineLosses, globalNorm } from "../coordinator/grad_combine.ts";
import { mixSeed, Rng } from "../shared/method/rng.ts";
import {
  addPacked,
  compactGrad,
  denseLayout,
  type SparseLayout,
} from "../shared/model/sparse_grad.ts";
import { decodeGrad, encodeGrad } from "../shared/wire/grad_encoding.ts";

const bits = (a: Float32Array) => [...new Uint32Array(a.buffer, a.byteOffset, a.length)];

/** Every ordering of 0 … n−1. */
function permutations(n: number): number[][] {
  if (n === 0) return [[]];
  return permutations(n - 1).flatMap((p) =>
    Array.from({ length: n }, (_, k) => [...p.slice(0, k), n - 1, ...p.slice(k)])
  );
}

function shuffled<T>(xs: readonly T[], rng: Rng): T[] {
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/** Values over many magnitudes, so float64 summation order shows in the bits. */
function randomDense(total: number, rng: Rng): Float32Array {
  const g = new Float32Array(total);
  for (let i = 0; i < total; i++) g[i] = (rng.next() - 0.5) * 10 ** (rng.next() * 10 - 5);
  return g;
}

/** Row-sparse parts (some dense) of a 9-row × 4 layout with 7 dense elements after it. */
function sparseParts(n: number, seed: number): { s: SparseLayout; parts: AccumulatorPart[] } {
  const s: SparseLayout = { total: 9 * 4 + 7, rowCount: 9, rowWidth: 4 };
  const rng = new Rng(mixSeed(seed));
  const parts = Array.from({ length: n }, (_, index) => {
    const dense = randomDense(s.total, rng);
    const loss = rng.next() * 3;
    if (index % 4 === 3) return { index, grad: dense, loss }; // a dense part among sparse ones
    const rows = Int32Array.from([...new Set([0, 2, 5, 8].filter(() => rng.next() < 0.6))].sort());
    return { index, rows, grad: compactGrad(dense, rows, s), loss };
  });
  return { s, parts };
}

function accumulate(
  acc: GradAccumulator,
  parts: readonly AccumulatorPart[],
  counts: readonly number[],
) {
  acc.begin(counts);
  for (const p of parts) acc.add(p);
  return acc.finish();
}

function reference(parts: readonly AccumulatorPart[], counts: readonly number[], s: SparseLayout) {
  const grad = combineGradients(
    parts.map((p) => ({ index: p.index, grad: p.grad, rows: p.rows, count: counts[p.index] })),
    s,
  );
  const loss = combineLosses(parts.map((p) => ({ ...p, count: counts[p.index] })));
  return { grad, loss };
}

Deno.test("every arrival order of 6 dense parts gives combineGradients' bits", () => {
  const total = 257, rng = new Rng(mixSeed(3));
  const parts = Array.from({ length: 6 }, (_, index) => ({
    index,
    grad: randomDense(total, rng),
    loss: rng.next(),
  }));
  const counts = [3, 1, 4, 1, 5, 9];
  const want = reference(parts, counts, denseLayout(total));
  const acc = new GradAccumulator(denseLayout(total));
  for (const order of permutations(6)) {
    const got = accumulate(acc, order.map((j) => parts[j]), counts);
    assert.deepEqual(bits(got.grad), bits(want.grad), `order ${order}`);
    assert.equal(got.loss, want.loss);
    assert.equal(got.items, 23);
    assert.equal(got.norm, globalNorm(want.grad));
  }
});

Deno.test("row-sparse and dense parts in any order: the bits of their dense combination", () => {
  const { s, parts } = sparseParts(13, 5);
  const counts = parts.map((_, j) => 1 + (j * 7) % 5);
  const want = reference(parts, counts, s);
  const acc = new GradAccumulator(s);
  const rng = new Rng(mixSeed(9));
  for (let trial = 0; trial < 40; trial++) {
    const got = accumulate(acc, shuffled(parts, rng), counts);
    assert.deepEqual(bits(got.grad), bits(want.grad));
    assert.equal(got.loss, want.loss);
  }
  // Part 0 sparse (its absent rows come from a zeroed block, not from the last step's sums).
  assert.ok(parts[0].rows);
});

Deno.test("index order decides rounding, not arrival: (1 + 2^60) − 2^60 = 0 every time", () => {
  const parts = [1, 2 ** 60, -(2 ** 60)].map((x, index) => ({
    index,
    grad: new Float32Array([x]),
    loss: x === 1 ? 1 : 0,
  }));
  const acc = new GradAccumulator(denseLayout(1));
  for (const order of permutations(3)) {
    const got = accumulate(acc, order.map((j) => parts[j]), [1, 1, 1]);
    assert.equal(got.grad[0], 0);
    assert.equal(got.loss, 1 / 3);
  }
});

Deno.test("−0 gradients give +0, as a sum from a zeroed buffer does", () => {
  const acc = new GradAccumulator(denseLayout(3));
  const only = accumulate(acc, [{ index: 0, grad: new Float32Array([-0, 1, -0]), loss: 0 }], [2]);
  const want = combineGradients([{ index: 0, grad: new Float32Array([-0, 1, -0]), count: 2 }], 3);
  assert.deepEqual(bits(only.grad), bits(want));
  assert.ok(Object.is(want[0], 0) && Object.is(only.grad[0], 0));
});

Deno.test("the reorder buffer holds exactly the parts ahead of their turn", () => {
  const acc = new GradAccumulator(denseLayout(2));
  const part = (index: number) => ({ index, grad: new Float32Array([index, 1]), loss: 0 });
  acc.begin([1, 1, 1, 1, 1]);
  acc.add(part(4));
  acc.add(part(2));
  assert.equal(acc.buffered, 2);
  assert.equal(acc.next, 0);
  acc.add(part(0));
  assert.equal(acc.next, 1);
  assert.equal(acc.buffered, 2);
  acc.add(part(1)); // releases 2, not 4
  assert.equal(acc.next, 3);
  assert.equal(acc.buffered, 1);
  acc.add(part(3)); // releases 4
  assert.equal(acc.next, 5);
  assert.equal(acc.buffered, 0);
  assert.equal(acc.peakBuffered, 2);
  assert.deepEqual([...acc.finish().grad], [2, 1]);
  // In order: nothing ever waits.
  acc.begin([1, 1, 1]);
  for (let j = 0; j < 3; j++) acc.add(part(j));
  assert.equal(acc.peakBuffered, 0);
  acc.finish();
});

Deno.test("the accumulator is reused: a later, smaller step owes nothing to the earlier one", () => {
  const { s, parts } = sparseParts(8, 21);
  const acc = new GradAccumulator(s);
  const counts = parts.map(() => 2);
  accumulate(acc, parts, counts);
  const second = sparseParts(3, 22).parts;
  const got = accumulate(acc, [second[2], second[0], second[1]], [1, 2, 3]);
  assert.deepEqual(bits(got.grad), bits(reference(second, [1, 2, 3], s).grad));
  // An abandoned step (begin again halfway) leaves no trace either.
  acc.begin(counts);
  acc.add(parts[1]);
  acc.add(parts[0]);
  const again = accumulate(acc, [second[1], second[0], second[2]], [1, 2, 3]);
  assert.deepEqual(bits(again.grad), bits(got.grad));
});

Deno.test("bad parts and misuse are refused by name", () => {
  const s: SparseLayout = { total: 7, rowCount: 2, rowWidth: 2 };
  const acc = new GradAccumulator(s);
  const dense = (index: number) => ({ index, grad: new Float32Array(7), loss: 1 });
  assert.throws(() => acc.add(dense(0)), /begin\(\) first/);
  assert.throws(() => acc.begin([]), /needs micro-batches/);
  assert.throws(() => acc.begin([1, 0]), /micro-batch 1: count must be a positive integer/);
  acc.begin([1, 1, 1]);
  assert.throws(() => acc.add(dense(3)), /index 3 is not in this step's 0 … 2/);
  assert.throws(() => acc.add(dense(-1)), /index -1/);
  assert.throws(() => acc.add({ ...dense(0), loss: NaN }), /loss is NaN/);
  acc.add(dense(2));
  assert.throws(() => acc.add(dense(2)), /micro-batch 2 was already added/);
  acc.add(dense(0));
  assert.throws(() => acc.add(dense(0)), /micro-batch 0 was already added/);
  assert.throws(() => acc.finish(), /1 of 3 micro-batches added \(1 waiting for a lower index\)/);
  acc.add(dense(1));
  acc.finish();
  assert.throws(() => acc.finish(), /begin\(\) first/);
});

Deno.test("the dispatch window keeps window × the largest result within the budget (at least 2)", () => {
  const s: SparseLayout = { total: 1000, rowCount: 50, rowWidth: 10 };
  assert.equal(maxResultBytes(denseLayout(1000), 8), 4000);
  // 8 tokens: at most 8 rows of 10, plus the 500 dense elements, plus the 8 row ids.
  assert.equal(maxResultBytes(s, 8), 4 * (500 + 80) + 32);
  // More tokens than rows: every row, never more.
  assert.equal(maxResultBytes(s, 10_000), 4 * 1000 + 4 * 50);
  assert.equal(dispatchWindow(2 ** 30), 4);
  assert.equal(dispatchWindow(2 ** 30 + 1), 3);
  assert.equal(dispatchWindow(3 * 2 ** 30), 2, "never below 2");
  assert.equal(dispatchWindow(1000, 10_000), 10);
  assert.throws(() => dispatchWindow(0), /positive/);
  assert.equal(RESULT_BUDGET_BYTES, 4 * 2 ** 30);
});

Deno.test("release: each part once, in index order, after it is summed; freeArrays empties it", () => {
  const { s, parts } = sparseParts(6, 31);
  const counts = parts.map(() => 1);
  const want = reference(parts, counts, s);
  // Own copies, since freeArrays detaches their buffers.
  const copies = parts.map((p) => ({ ...p, grad: p.grad.slice(), rows: p.rows?.slice() }));
  const released: number[] = [];
  const acc = new GradAccumulator(s, {
    release: (p) => {
      if ("index" in p && typeof p.index === "number") released.push(p.index);
      freeArrays(p);
    },
  });
  acc.begin(counts);
  for (const j of [3, 1, 5, 0, 2, 4]) acc.add(copies[j]);
  assert.deepEqual(released, [0, 1, 2, 3, 4, 5]);
  assert.ok(copies.every((p) => p.grad.length === 0 && (p.rows?.length ?? 0) === 0));
  assert.deepEqual(bits(acc.finish().grad), bits(want.grad));
});

Deno.test("releaseInto: summed gradients go back to the pool the results arrive in; no pool: freed", () => {
  const { s, parts } = sparseParts(4, 32);
  const counts = parts.map(() => 1);
  const pool = new BufferPool(8);
  const copies = parts.map((p) => ({ ...p, grad: p.grad.slice(), rows: p.rows?.slice() }));
  const pooled = new GradAccumulator(s, { release: releaseInto(pool) });
  pooled.begin(counts);
  for (const j of [2, 0, 3]) pooled.add(copies[j]);
  assert.equal(pool.size, 1, "only part 0 is summed; 2 and 3 wait");
  pooled.add(copies[1]);
  assert.equal(pool.size, 4);
  assert.ok(copies.every((p) => p.grad.length > 0), "recycled, not freed");
  const taken = pool.take("f32", copies[3].grad.length);
  assert.equal(taken?.buffer, copies[3].grad.buffer, "the next transfer fills a summed gradient");

  const fresh = parts.map((p) => ({ ...p, grad: p.grad.slice(), rows: p.rows?.slice() }));
  const freeing = new GradAccumulator(s, { release: releaseInto(undefined) });
  freeing.begin(counts);
  for (const p of fresh) freeing.add(p);
  assert.ok(fresh.every((p) => p.grad.length === 0), "without a pool, freed at once");
});

// ---------------------------------------------------------------------------
// Partial sums (held tasks)
// ---------------------------------------------------------------------------

/** Partial sums of consecutive micro-batches (Σ n_j·g_j in float64, rounded once), as a worker sends them. */
function sums(
  parts: readonly AccumulatorPart[],
  counts: readonly number[],
  s: SparseLayout,
  g: number,
) {
  const out: SumPart[] = [];
  for (let a = 0; a < parts.length; a += g) {
    const group = parts.slice(a, a + g);
    const acc = new Float64Array(s.total);
    let lossSum = 0, count = 0;
    for (const p of group) {
      addPacked(acc, p.grad, p.rows, s, counts[p.index]);
      lossSum += counts[p.index] * p.loss;
      count += counts[p.index];
    }
    out.push({
      indices: group.map((p) => p.index),
      grad: Float32Array.from(acc),
      encoding: "f32",
      scale: 0,
      lossSum,
      count,
    });
  }
  return out;
}

Deno.test("addSum in index order: tasks of G micro-batches give the same bits in every arrival order", () => {
  const { s, parts } = sparseParts(9, 5);
  const counts = parts.map((_, j) => 1 + (j % 3));
  const groups = sums(parts, counts, s, 3);
  const rng = new Rng(mixSeed(77));
  let first: number[] | null = null;
  for (let trial = 0; trial < 6; trial++) {
    const acc = new GradAccumulator(s);
    acc.begin(counts, "index");
    for (const g of shuffled(groups, rng)) acc.addSum(g);
    const r = acc.finish();
    first ??= bits(r.grad);
    assert.deepEqual(bits(r.grad), first);
  }
  const acc = new GradAccumulator(s);
  acc.begin(counts, "index");
  assert.throws(() => acc.addSum({ ...groups[0], indices: [0, 2] }), /consecutive/);
  assert.throws(() => acc.addSum({ ...groups[0], count: 1 }), /count 1/);
  acc.addSum(groups[0]);
  assert.throws(() => acc.addSum(groups[0]), /already added/);
  assert.throws(() => acc.finish(), /incomplete: 3 of 9/);
});

Deno.test("addSum in arrival order: the sum of any partition, within float rounding; 16-bit partials decoded", () => {
  const { s, parts } = sparseParts(8, 9);
  const counts = parts.map(() => 2);
  const want = reference(parts, counts, s);
  const acc = new GradAccumulator(s);
  acc.begin(counts, "arrival");
  // Two workers' partials: the even and the odd micro-batches.
  for (const pick of [0, 1]) {
    const mine = parts.filter((p) => p.index % 2 === pick);
    const [sum] = sums(mine, counts, s, mine.length);
    acc.addSum(sum);
  }
  const got = acc.finish();
  for (let i = 0; i < s.total; i++) {
    assert.ok(
      Math.abs(got.grad[i] - want.grad[i]) <= 1e-6 * Math.abs(want.grad[i]),
      `element ${i}`,
    );
  }
  assert.ok(Math.abs(got.loss - want.loss) < 1e-12);
  for (const encoding of ["bf16", "f16"] as const) {
    const half = new GradAccumulator(s);
    half.begin(counts, "arrival");
    const [all] = sums(parts, counts, s, parts.length);
    const enc = encodeGrad(all.grad as Float32Array, encoding);
    half.addSum({ ...all, grad: enc.data, encoding, scale: enc.scale });
    const r = half.finish();
    const exact = decodeGrad(enc);
    for (let i = 0; i < s.total; i++) {
      assert.equal(r.grad[i], Math.fround(exact[i] / r.items), `${encoding} element ${i}`);
    }
  }
});
