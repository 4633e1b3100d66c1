/**
 * worker/connect_failure.ts and the worker's connect messages: a real worker
 * process pointed at a port nobody listens on, and at an HTTP server whose
 * path is not a WebSocket endpoint, says so at each back-off and when it
 * gives up.
 */
import assert from "node:assert/strict";
import { connectFailure } from "../worker/connect_failure.ts";
import { runDeno } from "./support/processes.ts";

Deno.test("connectFailure names the cause: no listener, no such host, HTTP without WebSocket", () => {
  const pre = "NetworkError: failed to connect to WebSocket: ";
  assert.equal(
    connectFailure("ws://h:1/ws", `${pre}tcp connect error`),
    "nothing accepts connections at h:1 (tcp connect error)",
  );
  assert.equal(
    connectFailure("ws://nowhere.invalid:8787/ws", `${pre}dns error`),
    "cannot resolve nowhere.invalid (dns error)",
  );
  assert.equal(
    connectFailure("ws://h:8787/", `${pre}Invalid status code: 404`),
    "the server answers HTTP, but / is not a WebSocket endpoint there: HTTP 404 " +
      "(the coordinator's is /ws: --url ws://HOST:PORT/ws)",
  );
  assert.equal(connectFailure("ws://h/ws", null), "the connection closed before it opened");
  assert.equal(connectFailure("ws://h/ws", `${pre}odd\x1b[2J`), "odd\\x1b[2J");
});

/** A worker process for `url` that gives up after 1.5 s: its exit code and output. */
function worker(url: string) {
  return runDeno("worker/main.ts", [
    "--url",
    url,
    "--token",
    "t",
    "--backend",
    "tfjs-wasm",
    "--connect-timeout",
    "1.5",
  ]);
}

Deno.test("a worker that cannot connect says why at each back-off and when it gives up", async () => {
  // A port that was free a moment ago: nothing listens there.
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const r = await worker(`ws://127.0.0.1:${port}/ws`);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  const retries = r.stdout.split("\n").filter((l) =>
    l.includes(
      `cannot reach ws://127.0.0.1:${port}/ws: nothing accepts connections at 127.0.0.1:${port}`,
    )
  );
  assert.ok(retries.length >= 2, r.stdout);
  assert.match(retries[0], /; retrying in 0\.25 s$/);
  assert.match(retries[1], /; retrying in 0\.5 s$/);
  assert.match(
    r.stdout,
    new RegExp(`exiting: no coordinator at ws://127\\.0\\.0\\.1:${port}/ws for 1\\.5 s: nothing`),
  );
});

Deno.test("a server that answers HTTP but not the WebSocket path is named as such", async () => {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("not here", { status: 404 }),
  );
  try {
    const url = `ws://127.0.0.1:${server.addr.port}/wrong`;
    const r = await worker(url);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.ok(
      r.stdout.includes(
        `cannot reach ${url}: the server answers HTTP, but /wrong is not a WebSocket endpoint ` +
          `there: HTTP 404 (the coordinator's is /ws: --url ws://HOST:PORT/ws); retrying in 0.25 s`,
      ),
      r.stdout,
    );
  } finally {
    await server.shutdown();
  }
});
