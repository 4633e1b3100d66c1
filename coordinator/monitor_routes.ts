/**
 * The HTTP routes that show a run to a person (docs/architecture.md,
 * principle 7): `/status` (the run monitor's JSON, coordinator/run_monitor.ts),
 * `/metrics` (Prometheus text, coordinator/metrics.ts) and the live dashboard
 * at `/` with its assets under `/dashboard/` (coordinator/dashboard/, uPlot
 * from node_modules: no CDN).
 *
 * With `--metrics-token T` every one of these routes (the dashboard's assets
 * included) needs `Authorization: Bearer T` or `?token=T`, compared in
 * constant time (shared/wire/token.ts). The worker socket `/ws` is not here: it is
 * coordinator/server.ts's and takes the run token instead.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import type { Context, Hono, MiddlewareHandler } from "hono";
import { sameToken } from "../shared/wire/token.ts";
import type { RunMetrics } from "./metrics.ts";
import type { RunMonitor } from "./run_monitor.ts";

/** What the routes show, and who may see it. */
export interface MonitorRoutesOptions {
  readonly monitor: RunMonitor;
  readonly metrics: RunMetrics;
  /** `--metrics-token`: null or empty leaves the routes open. */
  readonly token: string | null;
}

const JS = "text/javascript; charset=utf-8";
const CSS = "text/css; charset=utf-8";

/** The dashboard's files: name → (path, content type). */
const ASSETS: Record<string, { url: () => URL; type: string }> = {
  "app.js": { url: () => new URL("./dashboard/app.js", import.meta.url), type: JS },
  "style.css": { url: () => new URL("./dashboard/style.css", import.meta.url), type: CSS },
  "uPlot.iife.min.js": { url: () => npmFile("uplot/dist/uPlot.iife.min.js"), type: JS },
  "uPlot.min.css": { url: () => npmFile("uplot/dist/uPlot.min.css"), type: CSS },
};

/** A file inside an npm package of the import map, as a file: URL. */
function npmFile(specifier: string): URL {
  try {
    const url = new URL(import.meta.resolve(specifier));
    if (url.protocol === "file:") return url;
  } catch { /* fall through */ }
  // Without a node_modules resolution, the package folder next to deno.json.
  return new URL(`../node_modules/${specifier}`, import.meta.url);
}

const fileCache = new Map<string, Uint8Array>();

/** The bytes at `url`, read once per process. */
async function readAsset(url: URL): Promise<Uint8Array> {
  const key = url.href;
  let data = fileCache.get(key);
  if (!data) {
    data = await Deno.readFile(url.protocol === "file:" ? fileURLToPath(url) : url);
    fileCache.set(key, data);
  }
  return data;
}

/** The token a request presents (bearer header first, then `?token=`), or null. */
function presentedToken(c: Context): string | null {
  const auth = c.req.header("authorization");
  const m = auth?.match(/^Bearer\s+(.+)$/i);
  if (m) return m[1].trim();
  return c.req.query("token") ?? null;
}

/**
 * Hono middleware (as hono's bearer-auth is): a request that does not present
 * `token` — `Authorization: Bearer TOKEN` or `?token=TOKEN`, compared in
 * constant time — is answered 401 with a line that says how to present it.
 * With `token` null or empty every request passes.
 */
export function requireToken(token: string | null): MiddlewareHandler {
  return async (c, next) => {
    if (token === null || token === "") return await next();
    const given = presentedToken(c);
    if (given !== null && sameToken(given, token)) return await next();
    return c.text(
      "401 unauthorized: this coordinator runs with --metrics-token; send " +
        "'Authorization: Bearer TOKEN' or add ?token=TOKEN\n",
      401,
      { "WWW-Authenticate": 'Bearer realm="adaptmesh"', "Cache-Control": "no-store" },
    );
  };
}

/** The routes {@link requireToken} guards: every one but `/favicon.ico`. */
const GUARDED = ["/metrics", "/status", "/", "/dashboard/*"] as const;

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

/** Mounts `/metrics`, `/status`, `/` and the dashboard's assets under `/dashboard/`. */
export function mountMonitorRoutes(app: Hono, opts: MonitorRoutesOptions): void {
  const { monitor, metrics, token } = opts;
  const guard = requireToken(token);
  for (const path of GUARDED) app.use(path, guard);

  app.get("/metrics", async (c) => {
    const text = await metrics.registry.metrics();
    return c.body(text, 200, {
      "Content-Type": metrics.registry.contentType,
      "Cache-Control": "no-store",
    });
  });

  app.get("/status", (c) => {
    c.header("Cache-Control", "no-store");
    return c.json(monitor.status());
  });

  app.get("/", async (c) => {
    const html = new TextDecoder().decode(
      await readAsset(new URL("./dashboard/index.html", import.meta.url)),
    );
    // The page was opened with ?token=T: its assets need the same token.
    const given = c.req.query("token");
    const query = token && given ? `?token=${escapeHtml(encodeURIComponent(given))}` : "";
    return c.html(html.replaceAll("__TOKEN_QUERY__", query), 200, { "Cache-Control": "no-store" });
  });
  // Browsers ask for it on any page, the 401 page included: answer without noise.
  app.get("/favicon.ico", (c) => c.body(null, 204));

  app.get("/dashboard/:file", async (c) => {
    const asset = ASSETS[c.req.param("file")];
    if (!asset) return c.text("not found\n", 404);
    try {
      const data = await readAsset(asset.url());
      return c.body(data.slice().buffer, 200, {
        "Content-Type": asset.type,
        "Cache-Control": "no-cache",
      });
    } catch (e) {
      return c.text(`dashboard asset missing: ${(e as Error).message}\n`, 500);
    }
  });
}
