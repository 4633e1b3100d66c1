import assert from "node:assert/strict";
import { HeldWork, PartialSum } from "../worker/partial_sum.ts";
import { addPacked, expectedGradLength, type SparseLayout } from "../shared/model/sparse_grad.ts";
import type { ResultMessage, TaskMessage } from "../shared/wire/protocol.ts";
import { NO_ADVERSARY } from "../shared/method/adversary_config.ts";
import { mixSeed, Rng } from "../shared/method/rng.ts";

const S: SparseLayout = { total: 10 * 3 + 7, rowCount: 10, rowWidth: 3 };

/** A packed gradient over `rows` with random values. */
function packed(rows: Int32Array, seed: number): Float32Array {
  const rng = new Rng(mixSeed(seed));
  return Float32Array.from({ length: expectedGradLength(rows, S) }, () => rng.next() - 0.5);
}

Deno.test("the partial sum is Σ n_j·g_j in float64, in arrival order, rounded once, on the union of rows", () => {
  const parts = [
    { rows: new Int32Array([1, 4]), n: 3, loss: 0.5 },
    { rows: new Int32Array([0, 4, 9]), n: 2, loss: 0.25 },
    { rows: new Int32Array([4]), n: 5, loss: 1 },
  ].map((p, k) => ({ ...p, grad: packed(p.rows, k + 1) }));
  const sum = new PartialSum(S);
  const ref = new Float64Array(S.total);
  for (const [k, p] of parts.entries()) {
    sum.add(k * 2, p.grad, p.rows, p.n, p.loss, { computeMs: 1, adversaryMs: 0 });
    addPacked(ref, p.grad, p.rows, S, p.n);
  }
  const t = sum.take(true);
  assert.deepEqual([...t.indices], [0, 2, 4]);
  assert.deepEqual([...t.rows!], [0, 1, 4, 9]);
  const want: number[] = [];
  for (const r of t.rows!) for (let i = 0; i < 3; i++) want.push(Math.fround(ref[r * 3 + i]));
  for (let i = 30; i < S.total; i++) want.push(Math.fround(ref[i]));
  assert.deepEqual([...t.grad], want);
  assert.equal(t.lossSum, 3 * 0.5 + 2 * 0.25 + 5 * 1);
  assert.equal(t.count, 10);
  assert.equal(t.computeMs, 3);
  // Taken means cleared: the next sum starts from nothing (rows included).
  sum.add(1, parts[2].grad, parts[2].rows, 1, 0, { computeMs: 0, adversaryMs: 0 });
  const again = sum.take(true);
  assert.deepEqual([...again.rows!], [4]);
  assert.deepEqual([...again.grad], [...parts[2].grad]);
});

function heldTask(step: number, index: number, version = 1): TaskMessage {
  return {
    type: "task",
    taskId: step * 1_000_000 + index,
    runId: "run",
    step,
    index,
    weightsVersion: version,
    seed: 1,
    adversary: NO_ADVERSARY,
    batch: {
      inputIds: new Int32Array([index + 1, 2]),
      tokenTypeIds: new Int32Array(2),
      attentionMask: new Uint8Array([1, 1]),
      labels: new Float32Array([1]),
      size: 1,
      seqLen: 2,
    },
    hold: true,
  };
}

function resultOf(t: TaskMessage): ResultMessage {
  const rows = Int32Array.from(new Set(t.batch.inputIds)).sort();
  return {
    type: "result",
    taskId: t.taskId,
    step: t.step,
    index: t.index,
    weightsVersion: t.weightsVersion,
    grad: packed(rows, t.index + 10),
    rows,
    loss: 0.5,
    count: 1,
    timings: { computeMs: 2, adversaryMs: 0, encodeMs: 0 },
  };
}

Deno.test("held work: done per task, the partial a flush names, a new step drops the old sum", () => {
  const held = new HeldWork();
  held.reset(S, "bf16");
  for (const j of [0, 3]) {
    const t = heldTask(5, j);
    const done = held.absorb(t, resultOf(t));
    assert.deepEqual([done.type, done.index, done.count, done.loss], ["done", j, 1, 0.5]);
  }
  assert.throws(() => held.absorb(heldTask(5, 3), resultOf(heldTask(5, 3))), /already held/);
  const p = held.flush({
    type: "flush",
    runId: "run",
    step: 5,
    weightsVersion: 1,
    indices: new Int32Array([0, 3]),
  });
  assert.deepEqual([...p.indices], [0, 3]);
  assert.equal(p.encoding, "bf16");
  assert.ok(p.grad instanceof Uint16Array);
  assert.equal(p.count, 2);
  assert.deepEqual([...p.rows!], [1, 2, 4]);
  // A flush for a step it holds nothing of: an empty partial (the coordinator refuses it).
  const t = heldTask(6, 1);
  held.absorb(t, resultOf(t));
  const empty = held.flush({
    type: "flush",
    runId: "run",
    step: 7,
    weightsVersion: 1,
    indices: new Int32Array([1]),
  });
  assert.equal(empty.indices.length, 0);
  // A task of a new step drops the old sum: the flush gets only the new one.
  for (const [step, j] of [[8, 2], [9, 4]]) {
    const u = heldTask(step, j);
    held.absorb(u, resultOf(u));
  }
  const last = held.flush({
    type: "flush",
    runId: "run",
    step: 9,
    weightsVersion: 1,
    indices: new Int32Array([0, 4]), // not what it holds: it sends what it holds
  });
  assert.deepEqual([...last.indices], [4]);
});

Deno.test("a dense gradient with its rows adds the same bits as the packed one (what a held task hands over)", () => {
  const parts = [
    { rows: new Int32Array([1, 4]), n: 3 },
    { rows: new Int32Array([0, 4, 9]), n: 2 },
  ].map((p, k) => ({ ...p, grad: packed(p.rows, k + 7) }));
  const a = new PartialSum(S), b = new PartialSum(S);
  for (const [k, p] of parts.entries()) {
    a.add(k, p.grad, p.rows, p.n, 0.5, { computeMs: 0, adversaryMs: 0 });
    // The same gradient unpacked: rows at their place, garbage on rows it did not use.
    const dense = new Float32Array(S.total).fill(Number.NaN);
    p.rows.forEach((r, i) => dense.set(p.grad.subarray(i * 3, i * 3 + 3), r * 3));
    dense.set(p.grad.subarray(p.rows.length * 3), 30);
    b.add(k, dense, p.rows, p.n, 0.5, { computeMs: 0, adversaryMs: 0 }, true);
  }
  const ta = a.take(true), tb = b.take(true);
  assert.deepEqual([...tb.rows!], [...ta.rows!]);
  assert.deepEqual([...tb.grad], [...ta.grad]);
});
