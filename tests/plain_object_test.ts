import assert from "node:assert/strict";
import { isPlainObject } from "../shared/io/plain_object.ts";

Deno.test("isPlainObject: JSON objects and null-prototype maps, nothing else", () => {
  assert.ok(isPlainObject({}));
  assert.ok(isPlainObject(JSON.parse('{"a": 1}')));
  assert.ok(isPlainObject(Object.create(null)));
  for (
    const v of [null, undefined, 1, "s", true, [], new Float32Array(2), new Map(), new Date(0)]
  ) {
    assert.equal(isPlainObject(v), false, String(v));
  }
  class Thing {}
  assert.equal(isPlainObject(new Thing()), false);
});
