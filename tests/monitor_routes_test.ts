/**
 * The metrics token as one Hono middleware (coordinator/monitor_routes.ts,
 * `requireToken`): what it refuses and what it lets through. The routes it
 * guards on a real run are checked in tests/observability_test.ts.
 */
import assert from "node:assert/strict";
import { Hono } from "hono";
import { requireToken } from "../coordinator/monitor_routes.ts";

/** An app with `/` and `/metrics` guarded as mountMonitorRoutes guards them, `/ws` and `/favicon.ico` not. */
function app(token: string | null): Hono {
  const a = new Hono();
  const guard = requireToken(token);
  for (const path of ["/metrics", "/"]) a.use(path, guard);
  a.get("/", (c) => c.text("page"));
  a.get("/metrics", (c) => c.text("metrics"));
  a.get("/ws", (c) => c.text("socket"));
  a.get("/favicon.ico", (c) => c.body(null, 204));
  return a;
}

Deno.test("requireToken refuses a missing or wrong token with 401 and says how to present it", async () => {
  const a = app("s3cret");
  for (
    const init of [
      {},
      { headers: { Authorization: "Bearer wrong" } },
      { headers: { Authorization: "Basic s3cret" } },
      { headers: { Authorization: "Bearer s3cret-and-more" } },
    ]
  ) {
    for (const path of ["/metrics", "/", "/metrics?token=nope"]) {
      const r = await a.request(path, init);
      assert.equal(r.status, 401, `${path} ${JSON.stringify(init)}`);
      assert.equal(r.headers.get("WWW-Authenticate"), 'Bearer realm="adaptmesh"');
      assert.equal(r.headers.get("Cache-Control"), "no-store");
      assert.match(await r.text(), /--metrics-token; send 'Authorization: Bearer TOKEN'/);
    }
  }
});

Deno.test("requireToken lets the right token through, as a bearer header or ?token=", async () => {
  const a = app("s3cret");
  const bearer = await a.request("/metrics", { headers: { Authorization: "bearer  s3cret " } });
  assert.equal(bearer.status, 200);
  assert.equal(await bearer.text(), "metrics");
  const query = await a.request("/?token=s3cret");
  assert.equal(query.status, 200);
  assert.equal(await query.text(), "page");
});

Deno.test("requireToken guards only the paths it is used on; no token leaves everything open", async () => {
  const a = app("s3cret");
  assert.equal((await a.request("/ws")).status, 200, "`/` guards the page, not every path");
  assert.equal((await a.request("/favicon.ico")).status, 204);
  for (const token of [null, ""]) {
    const open = app(token);
    assert.equal((await open.request("/metrics")).status, 200);
    assert.equal((await open.request("/")).status, 200);
  }
});
