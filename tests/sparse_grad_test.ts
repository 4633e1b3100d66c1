import assert from "node:assert/strict";
import { combineGradients } from "../coordinator/grad_combine.ts";
import { compactGrad, expectedGradLength, usedRows } from "../shared/model/sparse_grad.ts";

const s = { total: 4 * 2 + 3, rowCount: 4, rowWidth: 2 }; // 4×2 embedding block, then 3 dense values

Deno.test("compact, then the coordinator's combine, restores the dense gradient when only used rows are non-zero", () => {
  const dense = Float32Array.from([0, 0, 1, 2, 0, 0, 3, 4, 5, 6, 7]);
  const rows = usedRows(Int32Array.from([3, 1, 3, 1]));
  assert.deepEqual([...rows], [1, 3]);
  const packed = compactGrad(dense, rows, s);
  assert.deepEqual([...packed], [1, 2, 3, 4, 5, 6, 7]);
  assert.equal(expectedGradLength(rows, s), 7);
  // One part of count 1: the combine adds the packed rows into the dense layout and divides by 1.
  assert.deepEqual(combineGradients([{ index: 0, grad: packed, rows, count: 1 }], s), dense);
});

Deno.test("the protocol carries rows and refuses unsorted or negative ones", async () => {
  const { decodeMessage, encodeMessage } = await import("../shared/wire/protocol.ts");
  const { Packr } = await import("msgpackr");
  const base = {
    type: "result" as const,
    taskId: 1,
    step: 0,
    index: 0,
    weightsVersion: 0,
    grad: new Float32Array(7),
    rows: Int32Array.from([1, 3]),
    loss: 1,
    count: 1,
    timings: { computeMs: 1, adversaryMs: 0, encodeMs: 0 },
  };
  const back = decodeMessage(encodeMessage(base));
  assert.ok(back.type === "result" && back.rows instanceof Int32Array && back.rows[1] === 3);
  const packr = new Packr({ moreTypes: true, useRecords: false });
  assert.throws(
    () => decodeMessage(packr.pack({ ...base, rows: Int32Array.from([3, 1]) })),
    /increasing.*index 1 is 1/,
  );
  assert.throws(
    () => decodeMessage(packr.pack({ ...base, rows: Int32Array.from([-2]) })),
    /index 0 is -2/,
  );
});
