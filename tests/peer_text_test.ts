/**
 * shared/wire/peer_text.ts: text from the network is escaped and cut before
 * it reaches a log line — the function itself, a test peer (a real WebSocket)
 * sending escapes and a 100,000-character message to a real coordinator, and
 * a real worker connection fed the same by a fake coordinator.
 */
import assert from "node:assert/strict";
import { PEER_TEXT_MAX, peerText } from "../shared/wire/peer_text.ts";
import { parseRunFlags } from "../coordinator/run_config.ts";
import { startCoordinator } from "../coordinator/coordinator.ts";
import { decodeMessage, encodeMessage, type Message } from "../shared/wire/protocol.ts";
import { PROTOCOL_VERSION } from "../shared/wire/protocol.ts";
import { describeClose } from "../shared/wire/close_log.ts";
import { runWorker } from "../worker/client.ts";
import { initBackend } from "../shared/compute/create.ts";
import { tinyModelDir, tinyRunArgs, tinyTaskDir } from "./support/fixtures.ts";

const ESC = "\x1b";
/** What a hostile peer would send: a clear-screen, a window title, a bell, C1 CSI, a fake line. */
const HOSTILE = `a${ESC}[2J${ESC}]0;owned\x07b\x9b31m\r\nfake line\x7f ok`;
const HOSTILE_ESCAPED = "a\\x1b[2J\\x1b]0;owned\\x07b\\x9b31m\\r\\nfake line\\x7f ok";

/** No raw control character (C0 but none, DEL, C1) in `line`. */
function assertClean(line: string): void {
  // deno-lint-ignore no-control-regex -- the test looks for raw control characters
  assert.doesNotMatch(line, /[\x00-\x1f\x7f-\x9f]/, JSON.stringify(line.slice(0, 200)));
}

Deno.test("peerText escapes C0, DEL, C1 and ESC sequences and keeps ordinary Unicode", () => {
  assert.equal(peerText(HOSTILE), HOSTILE_ESCAPED);
  assert.equal(
    peerText("Grüße, 日本語, emoji 🙂, tab\there"),
    "Grüße, 日本語, emoji 🙂, tab\\there",
  );
  assert.equal(peerText("\u202eevil\u2028x\ud800"), "\\u202eevil\\u2028x\\ud800");
  assert.equal(peerText("\x00\x85"), "\\x00\\x85");
  assert.equal(peerText(42), "42");
});

Deno.test("peerText cuts long text with a note of its original length, never inside an escape", () => {
  const long = "x".repeat(100_000);
  const cut = peerText(long);
  assert.equal(cut, `${"x".repeat(PEER_TEXT_MAX)}… [cut: 100000 characters in all]`);
  // Escapes count by their escaped length; the cut falls before one that does not fit.
  const escapes = peerText(ESC.repeat(1000), 10);
  assert.equal(escapes, "\\x1b\\x1b… [cut: 1000 characters in all]");
  // A surrogate pair is never split.
  const emoji = peerText("🙂".repeat(10), 5);
  assert.equal(emoji, "🙂🙂… [cut: 20 characters in all]");
  assert.equal(peerText("x".repeat(PEER_TEXT_MAX)), "x".repeat(PEER_TEXT_MAX));
});

Deno.test("a close reason and a socket error are escaped in the close description", () => {
  const line = describeClose(4999, `x${ESC}[2J`, "err\r\n");
  assert.equal(
    line,
    'code 4999 (application-defined), reason "x\\x1b[2J", socket error: err\\r\\n',
  );
});

const until = async (f: () => boolean, ms = 10_000) => {
  const t0 = Date.now();
  while (!f()) {
    if (Date.now() - t0 > ms) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
};

Deno.test("a peer's escapes and a 100,000-character message reach the coordinator's log escaped and cut", async () => {
  await initBackend("tfjs-wasm");
  const model = await tinyModelDir();
  const task = await tinyTaskDir();
  const { config } = await parseRunFlags(tinyRunArgs(model, task), {}, "");
  const logs: string[] = [];
  const c = await startCoordinator(config, { log: (l) => logs.push(l) });
  try {
    const ws = new WebSocket(c.wsUrl);
    ws.binaryType = "arraybuffer";
    const replies: Message[] = [];
    ws.onmessage = (e) => replies.push(decodeMessage(new Uint8Array(e.data as ArrayBuffer)));
    const closed = new Promise<void>((r) => (ws.onclose = () => r()));
    await new Promise((r, j) => ((ws.onopen = r), (ws.onerror = j)));
    ws.send(encodeMessage({
      type: "hello",
      protocol: PROTOCOL_VERSION,
      token: "test-token",
      workerId: `w${ESC}[31m`,
      backend: `wasm${ESC}[2J`,
      device: HOSTILE,
      pid: 1,
      host: `h${ESC}]0;title\x07`,
    }));
    await until(() => replies.some((m) => m.type === "welcome"));
    const welcome = replies.find((m) => m.type === "welcome");
    assert.ok(welcome?.type === "welcome");
    // The id it asked for is not plain: it got a fresh one.
    assert.match(welcome.workerId, /^[0-9a-f]{8}$/);
    const huge = `${ESC}[2J` + "y".repeat(100_000 - 4);
    ws.send(encodeMessage({ type: "error", code: "internal", message: huge }));
    ws.send(encodeMessage({ type: "bye", reason: `done${ESC}[1A${ESC}[2K` }));
    await closed;
    await until(() => logs.some((l) => /closed by the coordinator \(the worker said bye/.test(l)));
    for (const l of logs) assertClean(l);
    const joined = logs.find((l) => l.includes(" joined: "));
    assert.equal(
      joined,
      `worker ${welcome.workerId} joined: wasm\\x1b[2J on ${HOSTILE_ESCAPED} (h\\x1b]0;title\\x07, pid 1)`,
    );
    const reported = logs.find((l) => l.includes(" reports internal: "));
    assert.ok(reported, logs.join("\n"));
    assert.ok(reported.length < 500, `logged ${reported.length} characters`);
    assert.ok(reported.includes(`\\x1b[2J${"y".repeat(50)}`), reported.slice(0, 100));
    assert.match(reported, /… \[cut: 100000 characters in all\]$/);
    const bye = logs.find((l) => l.includes("the worker said bye"));
    assert.match(bye ?? "", /the worker said bye: done\\x1b\[1A\\x1b\[2K\)/);
  } finally {
    c.stop();
    await c.done;
    await c.close();
  }
});

Deno.test("a worker logs what a coordinator sends escaped and cut, and exits with the escaped reason", async () => {
  const sent = `${ESC}]0;pwned\x07refused\r\n` + "z".repeat(100_000);
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.binaryType = "arraybuffer";
    socket.onmessage = () => {
      socket.send(encodeMessage({ type: "error", code: "bad_token", message: sent }));
      socket.close(1008, `policy${ESC}[2J`);
    };
    return response;
  });
  const logs: string[] = [];
  try {
    const exit = await runWorker({
      url: `ws://127.0.0.1:${server.addr.port}/ws`,
      token: "t",
      backend: await initBackend("tfjs-wasm"),
      stay: false,
      connectTimeoutMs: 5000,
      log: (l) => logs.push(l),
    });
    assert.equal(exit.code, 2);
    assertClean(exit.reason);
    assert.match(exit.reason, /^\\x1b\]0;pwned\\x07refused\\r\\nz+… \[cut: (\d+) characters/);
    assert.ok(exit.reason.endsWith(`[cut: ${sent.length} characters in all]`));
    for (const l of logs) assertClean(l);
    const refused = logs.find((l) => l.startsWith("coordinator refused: bad_token: "));
    assert.ok(refused && refused.length < 500, logs.join("\n").slice(0, 2000));
  } finally {
    await server.shutdown();
  }
});
