import assert from "node:assert/strict";
import { closeLine, describeClose } from "../shared/wire/close_log.ts";

Deno.test("describeClose names the code, the reason and the socket error", () => {
  assert.equal(
    describeClose(0, "", "Frame too large"),
    "code 0 (no close frame: the connection failed), no reason given, socket error: Frame too large",
  );
  assert.equal(describeClose(4000, "silent"), 'code 4000 (silent too long), reason "silent"');
  assert.equal(describeClose(1000, "bye", null), 'code 1000 (normal), reason "bye"');
});

const none = { transfers: 0, receivedBytes: 0, declaredBytes: 0 };
const how = 'code 1000 (normal), reason "bye"';

Deno.test("closeLine, the coordinator's line about a worker: who, how, and what was lost from and to it", () => {
  assert.equal(
    closeLine({
      peer: "worker w1",
      closedBy: "the coordinator (silent)",
      how,
      dropped: { transfers: 1, receivedBytes: 2.5e6, declaredBytes: 70e6 },
      unsent: 3,
    }),
    "worker w1: connection closed by the coordinator (silent): " + how +
      "; dropped 1 partial transfer(s) from it (2.5 MB of 70.0 MB); 3 message(s) to it unsent",
  );
  assert.equal(
    closeLine({
      peer: "a connection that never joined",
      closedBy: "x",
      how,
      dropped: none,
      unsent: 0,
    }),
    `a connection that never joined: connection closed by x: ${how}`,
  );
});

Deno.test("closeLine, a worker's line about its own connection: what was lost, then what it does next", () => {
  assert.equal(
    closeLine({ closedBy: "this worker (bye)", how, dropped: none, unsent: 0 }),
    `connection closed by this worker (bye): ${how}`,
  );
  assert.equal(
    closeLine({
      closedBy: "the coordinator or the network",
      how,
      dropped: { transfers: 2, receivedBytes: 1e6, declaredBytes: 8e6 },
      unsent: 1,
      next: "reconnecting",
    }),
    `connection closed by the coordinator or the network: ${how}` +
      "; dropped 2 partial transfer(s) (1.0 MB of 8.0 MB); 1 message(s) unsent; reconnecting",
  );
});
