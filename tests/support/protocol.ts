/**
 * Test helpers for the wire protocol (shared/wire/protocol.ts): asserting a
 * refusal by its error code, and building a result message from the fields a
 * test cares about.
 *
 * @module
 */
import assert from "node:assert/strict";
import { type ErrorCode, ProtocolError, type ResultMessage } from "../../shared/wire/protocol.ts";

/** Runs `fn`, which must throw a {@link ProtocolError} of `code` (message matching `pattern`). */
export function expectError(fn: () => unknown, code: ErrorCode, pattern?: RegExp): ProtocolError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof ProtocolError, `expected a ProtocolError ${code}, got ${caught}`);
  assert.equal(caught.code, code, `wrong code for: ${caught.message}`);
  if (pattern) assert.match(caught.message, pattern);
  return caught;
}

/**
 * A `result` message: `fields` over task 1, micro-batch 0 of step 0 on
 * weights version 0, loss 1, count 1 and 1 ms of compute.
 */
export function resultMessage(
  fields: Partial<ResultMessage> & Pick<ResultMessage, "grad">,
): ResultMessage {
  return {
    type: "result",
    taskId: 1,
    step: 0,
    index: 0,
    weightsVersion: 0,
    loss: 1,
    count: 1,
    timings: { computeMs: 1, adversaryMs: 0, encodeMs: 0 },
    ...fields,
  };
}
