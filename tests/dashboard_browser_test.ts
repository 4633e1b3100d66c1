/// <reference lib="dom" />
/**
 * The live dashboard in a real browser: headless Chromium (playwright-core,
 * Debian's /usr/bin/chromium) opens `/` before any worker has joined, sees
 * the page waiting, then sees the progress, the loss chart and the worker
 * table update while a worker trains, and ends on the finished run.
 * Screenshots are left in the test's temp folder (the path is printed).
 */
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { type Coordinator, startCoordinator } from "../coordinator/coordinator.ts";
import { parseRunFlags } from "../coordinator/run_config.ts";
import { initBackend } from "../shared/compute/create.ts";
import { quickRunArgs } from "./support/fixtures.ts";
import { runWorker } from "../worker/client.ts";
import { pathExists } from "../shared/io/path_exists.ts";

const CHROMIUM = "/usr/bin/chromium";
const STEPS = 60;

/** What the page shows now. */
interface Seen {
  polls: number;
  step: number;
  state: string;
  lossPoints: number;
  workerPoints: number;
  evalPoints: number;
  workerRows: number;
  progress: string;
  canvases: number;
  /** The loss chart's x-axis ticks. */
  lossTicks: number[];
}

const haveChromium = await pathExists(CHROMIUM);
if (!haveChromium) {
  console.warn(
    `${CHROMIUM} missing (apt-get install chromium): skipping the dashboard browser test`,
  );
}

Deno.test({
  name: "dashboard: headless Chromium watches a run update live",
  ignore: !haveChromium,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "adaptmesh-dashboard-" });
    const args = await quickRunArgs([
      "--steps",
      String(STEPS),
      "--eval-every",
      "15",
      "--metrics-token",
      "dash",
    ]);
    const { config } = await parseRunFlags(args, {}, "");
    let c: Coordinator | null = null;
    let context: Awaited<ReturnType<typeof chromium.launchPersistentContext>> | null = null;
    let worker: Promise<unknown> | null = null;
    try {
      c = await startCoordinator(config, { log: () => {} });
      context = await chromium.launchPersistentContext(`${dir}/profile`, {
        executablePath: CHROMIUM,
        headless: true,
        viewport: { width: 1280, height: 1400 },
        args: [
          "--no-sandbox",
          "--disable-gpu",
          "--disable-quic",
          "--no-first-run",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-sync",
        ],
      });
      const page = context.pages()[0] ?? await context.newPage();

      const seen = (): Promise<Seen> =>
        page.evaluate(() => {
          const el = (id: string) => document.getElementById(id)!;
          const points = (id: string) => Number(el(id).dataset.points ?? 0);
          const g = globalThis as unknown as {
            adaptmesh?: { polls: number; xTicks?: Record<string, number[]> };
          };
          return {
            polls: g.adaptmesh?.polls ?? 0,
            step: Number(el("step").textContent),
            state: el("state").textContent ?? "",
            lossPoints: points("chart-loss"),
            workerPoints: points("chart-workers"),
            evalPoints: points("chart-eval"),
            workerRows: document.querySelectorAll("#workers-body tr[data-worker-id]").length,
            progress: el("progress-bar").style.width,
            canvases: document.querySelectorAll("#charts canvas").length,
            lossTicks: g.adaptmesh?.xTicks?.["chart-loss"] ?? [],
          };
        });
      const until = async (what: string, ok: (s: Seen) => boolean, ms = 30_000) => {
        const end = Date.now() + ms;
        let s = await seen();
        while (!ok(s)) {
          if (Date.now() > end) {
            throw new Error(`timed out waiting for ${what}; page shows ${JSON.stringify(s)}`);
          }
          await new Promise((r) => setTimeout(r, 100));
          s = await seen();
        }
        return s;
      };

      // Without the metrics token the page is refused; with ?token it loads.
      const refused = await page.goto(c.httpUrl);
      assert.equal(refused?.status(), 401);
      const pageErrors: string[] = [];
      page.on("pageerror", (e) => pageErrors.push(String(e)));
      page.on("console", (m) => {
        if (m.type() === "error") pageErrors.push(m.text());
      });
      const res = await page.goto(`${c.httpUrl}?token=dash`);
      assert.equal(res?.status(), 200);

      // Before any worker: the page polls and waits.
      const s0 = await until("the first poll", (s) => s.polls >= 1);
      assert.equal(s0.step, 0);
      assert.equal(s0.lossPoints, 0);
      assert.equal(s0.state, "waiting for workers");
      assert.ok(s0.canvases >= 5, `uPlot drew ${s0.canvases} canvases`);

      // A worker joins: the charts and the table fill while it trains.
      const backend = await initBackend("tfjs-wasm");
      worker = runWorker({
        url: c.wsUrl,
        token: c.token,
        backend,
        stay: false,
        connectTimeoutMs: 10_000,
        log: () => {},
      });
      const s1 = await until("the first plotted steps", (s) => s.lossPoints > 0);
      // With a handful of steps, the step axis still ticks at whole steps only (no 1.5, 2.5).
      const early = await until("ticks on the loss chart", (s) => s.lossTicks.length > 0);
      assert.ok(early.lossTicks.every(Number.isInteger), `ticks ${early.lossTicks}`);
      let running: Seen | null = s1.state === "training" ? s1 : null;
      if (running) {
        assert.ok(running.workerRows >= 1, "the worker table lists the worker");
        assert.ok(running.workerPoints > 0, "the per-worker chart has points");
        await page.screenshot({ path: `${dir}/dashboard-running.png`, fullPage: true });
      }
      const s2 = await until("more steps", (s) => s.lossPoints > s1.lossPoints);
      assert.ok(s2.step > s1.step, `step went ${s1.step} → ${s2.step}`);
      if (!running && s2.state === "training") running = s2;
      const s3 = await until("the end of the run", (s) => s.state === "finished", 45_000);
      await c.done;
      await worker;
      worker = null;
      assert.equal(s3.step, STEPS);
      assert.equal(s3.lossPoints, STEPS);
      assert.ok(s3.lossTicks.length > 1 && s3.lossTicks.every(Number.isInteger), `${s3.lossTicks}`);
      assert.equal(parseFloat(s3.progress), 100);
      assert.ok(s3.evalPoints >= 4, `evaluation chart has ${s3.evalPoints} points`);
      assert.ok(running, "the page was seen while the worker trained");
      assert.ok(
        s0.lossPoints < s1.lossPoints && s1.lossPoints < s2.lossPoints &&
          s2.lossPoints <= s3.lossPoints,
        `loss points ${s0.lossPoints} → ${s1.lossPoints} → ${s2.lossPoints} → ${s3.lossPoints}`,
      );
      const summary = await page.locator("#summary-text").textContent();
      assert.match(summary ?? "", /finished after 60 steps/);
      await page.screenshot({ path: `${dir}/dashboard.png`, fullPage: true });
      assert.deepEqual(pageErrors, []);
      console.log(`dashboard screenshots: ${dir}/dashboard.png, ${dir}/dashboard-running.png`);
    } finally {
      await context?.close();
      c?.stop();
      await c?.done.catch(() => {});
      await worker?.catch(() => {});
      await c?.close();
      // Keep the screenshots; drop the browser profile and the run's files.
      for (const f of ["profile", "model", "train.jsonl", "eval.jsonl"]) {
        await Deno.remove(`${dir}/${f}`, { recursive: true }).catch(() => {});
      }
    }
  },
});
