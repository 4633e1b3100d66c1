/**
 * Observability on a real (tiny) run: `/metrics` parses, passes
 * `promtool check metrics` and moves between scrapes; `/status` reports the
 * run and its workers; `--metrics-token` guards every route; the dashboard
 * and its assets are served.
 */
import assert from "node:assert/strict";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { type Coordinator, startCoordinator } from "../coordinator/coordinator.ts";
import type { RunStatus } from "../coordinator/run_monitor.ts";
import { parseRunFlags } from "../coordinator/run_config.ts";
import { initBackend } from "../shared/compute/create.ts";
import { quickRunArgs } from "./support/fixtures.ts";
import { runWorker, type WorkerExit } from "../worker/client.ts";

// ---------------------------------------------------------------------------
// A tiny task and model
// ---------------------------------------------------------------------------

async function startTiny(
  _dir: string,
  extra: string[] = [],
  opts: Parameters<typeof startCoordinator>[1] = {},
): Promise<Coordinator> {
  const { config } = await parseRunFlags(await quickRunArgs(extra), {}, "");
  return await startCoordinator(config, { log: () => {}, ...opts });
}

/** Stops the run, closes the coordinator and removes `path` (the test's files). */
async function finish(c: Coordinator, path: string): Promise<void> {
  c.stop();
  await c.done.catch(() => {});
  await c.close();
  await Deno.remove(path, { recursive: true });
}

async function startWorker(c: Coordinator, token = c.token): Promise<WorkerExit> {
  const backend = await initBackend("tfjs-wasm");
  return runWorker({
    url: c.wsUrl,
    token,
    backend,
    stay: false,
    connectTimeoutMs: 10_000,
    log: () => {},
  });
}

// ---------------------------------------------------------------------------
// Prometheus helpers
// ---------------------------------------------------------------------------

interface Family {
  name: string;
  help: string;
  type: string;
  metrics: {
    value?: string;
    labels?: Record<string, string>;
    buckets?: Record<string, string>;
    count?: string;
    sum?: string;
  }[];
}

function parse(text: string): Map<string, Family> {
  const families = parsePrometheusTextFormat(text) as Family[];
  return new Map(families.map((f) => [f.name, f]));
}

/** The value of `name` (the series matching `labels`), as a number. */
function value(fams: Map<string, Family>, name: string, labels: Record<string, string> = {}) {
  const f = fams.get(name);
  assert.ok(f, `metric ${name} missing`);
  const m = f.metrics.find((s) => Object.entries(labels).every(([k, v]) => s.labels?.[k] === v));
  assert.ok(m, `${name}${JSON.stringify(labels)} has no series`);
  return Number(m.value ?? m.count);
}

/** Runs `promtool check metrics` on `text`; null when promtool is not installed. */
async function promtool(text: string): Promise<{ code: number; output: string } | null> {
  let child;
  try {
    child = new Deno.Command("promtool", {
      args: ["check", "metrics"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, output: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

async function get(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers });
  const body = await res.text();
  return { status: res.status, type: res.headers.get("content-type") ?? "", body };
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

Deno.test("/metrics and /status on a real run: exposition, promtool, counters move", async () => {
  const dir = await Deno.makeTempDir({ prefix: "adaptmesh-obs-" });
  // Snapshots taken inside the run (the worker is connected), at the end of step 2.
  let midText = "";
  let midStatus: RunStatus | null = null;
  let c: Coordinator | null = null;
  c = await startTiny(dir, [
    "--eval-every",
    "2",
    "--save",
    `${dir}/save`,
    "--checkpoint-every",
    "2",
  ], {
    observer: {
      step: (r) => {
        if (r.step !== 2 || !c) return;
        midStatus = c.monitor.status();
        // The collectors run synchronously inside metrics(): this is the state at step 2.
        c.metrics.registry.metrics().then((t) => midText = t);
      },
    },
  });
  try {
    const base = c.httpUrl;
    const before = await get(`${base}metrics`);
    assert.equal(before.status, 200);
    assert.match(before.type, /^text\/plain; version=0\.0\.4/);
    const b = parse(before.body);
    assert.equal(value(b, "adaptmesh_steps_completed_total"), 0);
    assert.equal(value(b, "adaptmesh_steps_planned"), 3);
    assert.equal(value(b, "adaptmesh_examples_processed_total"), 0);
    assert.ok(Number.isNaN(value(b, "adaptmesh_loss")), "no loss before the first step");
    const statusBefore = (await (await fetch(`${base}status`)).json()) as RunStatus;
    assert.equal(statusBefore.progress.step, 0);
    assert.equal(statusBefore.finished, false);
    assert.equal(statusBefore.workers.length, 0);
    assert.equal(statusBefore.config.globalBatch, 8);
    assert.equal(statusBefore.config.token, undefined, "/status must not show the run token");

    const worker = startWorker(c);
    const summary = await c.done;
    assert.equal((await worker).code, 0);
    assert.equal(summary.steps, 3);

    const after = await get(`${base}metrics`);
    assert.equal(after.status, 200);
    const a = parse(after.body);

    // Every family: prefixed, typed, documented; counters end in _total, nothing else does.
    for (const f of a.values()) {
      assert.match(f.name, /^adaptmesh_[a-z0-9_]+$/);
      assert.ok(f.help.length > 0, `${f.name} has no HELP`);
      assert.equal(f.name.endsWith("_total"), f.type === "COUNTER", `${f.name} is a ${f.type}`);
    }
    const expected = [
      "adaptmesh_steps_completed_total",
      "adaptmesh_examples_processed_total",
      "adaptmesh_tokens_processed_total",
      "adaptmesh_examples_per_second",
      "adaptmesh_loss",
      "adaptmesh_evaluation_metric",
      "adaptmesh_learning_rate",
      "adaptmesh_lamb_trust_ratio_min",
      "adaptmesh_lamb_trust_ratio_mean",
      "adaptmesh_lamb_trust_ratio_max",
      "adaptmesh_gradient_norm",
      "adaptmesh_update_norm",
      "adaptmesh_step_phase_seconds",
      "adaptmesh_step_duration_seconds",
      "adaptmesh_received_bytes_total",
      "adaptmesh_sent_bytes_total",
      "adaptmesh_workers_connected",
      "adaptmesh_worker_examples_per_second",
      "adaptmesh_worker_micro_batches_total",
      "adaptmesh_redispatches_total",
      "adaptmesh_discarded_results_total",
      "adaptmesh_rejected_messages_total",
      "adaptmesh_checkpoints_written_total",
    ];
    for (const name of expected) assert.ok(a.has(name), `${name} missing`);

    // Counters moved between the scrapes.
    assert.equal(value(a, "adaptmesh_steps_completed_total"), 3);
    assert.equal(value(a, "adaptmesh_examples_processed_total"), 24);
    assert.ok(value(a, "adaptmesh_tokens_processed_total") > 24);
    assert.ok(
      value(a, "adaptmesh_received_bytes_total") > value(b, "adaptmesh_received_bytes_total"),
    );
    assert.ok(value(a, "adaptmesh_sent_bytes_total") > value(b, "adaptmesh_sent_bytes_total"));
    assert.ok(value(a, "adaptmesh_examples_per_second") > 0);
    assert.ok(Number.isFinite(value(a, "adaptmesh_loss")));
    assert.ok(value(a, "adaptmesh_learning_rate") >= 0); // linear decay ends at 0
    assert.ok(value(a, "adaptmesh_gradient_norm") > 0);
    assert.ok(
      value(a, "adaptmesh_lamb_trust_ratio_min") <= value(a, "adaptmesh_lamb_trust_ratio_max"),
    );
    assert.equal(value(a, "adaptmesh_run_finished"), 1);
    // Two evaluations: --eval-every 2 and the final one (step 3).
    assert.equal(value(a, "adaptmesh_evaluations_total"), 2);
    assert.equal(value(a, "adaptmesh_evaluation_step"), 3);
    const acc = value(a, "adaptmesh_evaluation_metric", { metric: "accuracy", split: "eval" });
    assert.ok(acc >= 0 && acc <= 1);
    // One histogram observation per step and phase. (parse-prometheus-text-format drops the
    // labels of labelled histograms, so their _count lines are read from the text.)
    const phaseCount = (text: string, phase: string) => {
      const m = text.match(
        new RegExp(`^adaptmesh_step_phase_seconds_count\\{phase="${phase}"\\} (\\S+)$`, "m"),
      );
      assert.ok(m, `no _count for phase ${phase}`);
      return Number(m[1]);
    };
    for (const phase of ["compute", "adversary", "transfer", "averaging", "optimizer"]) {
      assert.equal(phaseCount(before.body, phase), 0);
      assert.equal(phaseCount(after.body, phase), 3, phase);
    }
    assert.equal(Number(a.get("adaptmesh_step_duration_seconds")!.metrics[0].count), 3);
    // Zero-initialised reasons exist before anything happened.
    assert.equal(value(b, "adaptmesh_redispatches_total", { reason: "timeout" }), 0);
    assert.equal(value(a, "adaptmesh_rejected_messages_total", { reason: "bad_token" }), 0);
    // 3 steps x 2 micro-batches from the one worker, kept after it left.
    const wmb = a.get("adaptmesh_worker_micro_batches_total")!.metrics;
    assert.equal(wmb.length, 1);
    assert.equal(Number(wmb[0].value), 6);
    assert.equal(wmb[0].labels?.backend, "tfjs-wasm");
    assert.equal(value(a, "adaptmesh_worker_joins_total"), 1);
    // --checkpoint-every 2 (step 2) and the final checkpoint.
    assert.equal(value(b, "adaptmesh_checkpoints_written_total"), 0);
    assert.equal(value(a, "adaptmesh_checkpoints_written_total"), 2);

    // Mid-run: the connected worker is visible with its throughput.
    const mid = parse(midText);
    assert.equal(value(mid, "adaptmesh_steps_completed_total"), 2);
    assert.ok(value(mid, "adaptmesh_learning_rate") > 0);
    assert.equal(value(mid, "adaptmesh_workers_connected", { backend: "tfjs-wasm" }), 1);
    assert.ok(value(mid, "adaptmesh_worker_examples_per_second", { backend: "tfjs-wasm" }) > 0);
    assert.ok(
      value(mid, "adaptmesh_worker_compute_seconds_per_example", { backend: "tfjs-wasm" }) > 0,
    );
    const ms = midStatus as RunStatus | null;
    assert.ok(ms);
    assert.equal(ms.workers.length, 1);
    assert.equal(ms.workers[0].backend, "tfjs-wasm");
    assert.equal(ms.workers[0].microBatches, 4);
    assert.ok(ms.workers[0].examplesPerSecond > 0);
    assert.ok(ms.progress.etaSeconds !== null && ms.progress.etaSeconds >= 0);

    // The final /status.
    const s = (await (await fetch(`${base}status`)).json()) as RunStatus;
    assert.equal(s.finished, true);
    assert.equal(s.summary?.steps, 3);
    assert.equal(s.progress.step, 3);
    assert.equal(s.progress.etaSeconds, 0);
    assert.equal(s.history.length, 3);
    assert.deepEqual(s.history.map((p) => p.step), [1, 2, 3]);
    assert.equal(Object.keys(s.history[2].workers).length, 1);
    assert.equal(s.evaluations.length, 2);
    assert.equal(typeof s.evaluations[1].metrics.accuracy, "number");
    assert.equal(s.counters.examples, 24);
    assert.equal(s.counters.steps, 3);
    assert.ok(s.counters.bytesIn > 0 && s.counters.bytesOut > 0);
    assert.equal(s.loss, s.history[2].loss);
    // The per-step history carries the optimizer's view of each step, for scripts.
    assert.equal(s.gradNorm, s.history[2].gradNorm);
    assert.ok(s.history.every((p) => p.gradNorm > 0 && p.examples === 8 && p.t > 0));
    assert.deepEqual(s.history[2].trustRatio, s.trustRatio);
    // The update applied: what the optimizer moved the weights by, as /metrics shows it.
    assert.ok(s.history[0].updateNorm > 0);
    assert.equal(value(a, "adaptmesh_update_norm"), s.history[2].updateNorm);
    assert.equal(s.evaluations[1].examples > 0, true);

    // promtool, on both scrapes.
    for (const text of [before.body, after.body, midText]) {
      const r = await promtool(text);
      if (r === null) {
        console.warn("promtool not installed (apt-get install prometheus): skipping its check");
        break;
      }
      assert.equal(r.code, 0, `promtool check metrics failed:\n${r.output}`);
      assert.equal(r.output.trim(), "", `promtool check metrics complained:\n${r.output}`);
    }
  } finally {
    await finish(c, dir);
  }
});

Deno.test("--metrics-token guards /metrics, /status, / and the dashboard assets", async () => {
  const dir = await Deno.makeTempDir({ prefix: "adaptmesh-obs-" });
  const c = await startTiny(dir, ["--metrics-token", "s3cret"]);
  try {
    const base = c.httpUrl;
    const routes = ["metrics", "status", "", "dashboard/app.js", "dashboard/uPlot.iife.min.js"];
    for (const r of routes) {
      const none = await get(`${base}${r}`);
      assert.equal(none.status, 401, `/${r} without a token`);
      const wrong = await get(`${base}${r}`, { Authorization: "Bearer nope" });
      assert.equal(wrong.status, 401, `/${r} with a wrong token`);
      const wrongQuery = await get(`${base}${r}?token=s3cre`);
      assert.equal(wrongQuery.status, 401, `/${r} with a wrong ?token`);
      const bearer = await get(`${base}${r}`, { Authorization: "Bearer s3cret" });
      assert.equal(bearer.status, 200, `/${r} with the bearer token`);
      const query = await get(`${base}${r}?token=s3cret`);
      assert.equal(query.status, 200, `/${r} with ?token`);
    }
    const html = await get(`${base}?token=s3cret`);
    assert.ok(html.body.includes('src="dashboard/app.js?token=s3cret"'), "assets carry the token");
    const none = await fetch(`${base}metrics`);
    assert.equal(none.headers.get("www-authenticate"), 'Bearer realm="adaptmesh"');
    await none.body?.cancel();
    // A worker with the wrong run token is refused and counted.
    const refused = await startWorker(c, "wrong");
    assert.equal(refused.code, 2);
    const m = parse((await get(`${base}metrics?token=s3cret`)).body);
    assert.equal(value(m, "adaptmesh_rejected_messages_total", { reason: "bad_token" }), 1);
    assert.equal(value(m, "adaptmesh_worker_joins_total"), 0);
    // The worker socket is not affected by the metrics token.
    const worker = startWorker(c);
    await c.done;
    assert.equal((await worker).code, 0);
    const s = await get(`${base}status`, { Authorization: "Bearer s3cret" });
    assert.equal(JSON.parse(s.body).finished, true);
    assert.ok(!s.body.includes("s3cret"), "/status must not echo the metrics token");
  } finally {
    await finish(c, dir);
  }
});

Deno.test("the dashboard and its assets are served (no token: open)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "adaptmesh-obs-" });
  const c = await startTiny(dir);
  try {
    const base = c.httpUrl;
    const page = await get(base);
    assert.equal(page.status, 200);
    assert.match(page.type, /^text\/html/);
    for (const id of ["progress", "workers", "chart-loss", "chart-eval", "chart-throughput"]) {
      assert.ok(page.body.includes(`id="${id}"`), `#${id} missing`);
    }
    assert.ok(!page.body.includes("__TOKEN_QUERY__"));
    assert.ok(page.body.includes('src="dashboard/app.js"'));
    const uplot = await get(`${base}dashboard/uPlot.iife.min.js`);
    assert.equal(uplot.status, 200);
    assert.match(uplot.type, /javascript/);
    assert.ok(uplot.body.includes("uPlot"));
    assert.ok(uplot.body.length > 20_000);
    const css = await get(`${base}dashboard/uPlot.min.css`);
    assert.equal(css.status, 200);
    assert.match(css.type, /^text\/css/);
    for (const f of ["app.js", "style.css"]) {
      assert.equal((await get(`${base}dashboard/${f}`)).status, 200, f);
    }
    assert.equal((await get(`${base}dashboard/../monitor_routes.ts`)).status, 404);
    assert.equal((await get(`${base}dashboard/nope.js`)).status, 404);
  } finally {
    await finish(c, dir);
  }
});

Deno.test("/status of a pre-training run leaves out the classification task and labels", async () => {
  const corpus = await Deno.makeTempFile({ suffix: ".txt" });
  await Deno.writeTextFile(corpus, "the movie was good\nthe plot was dull\n");
  const c = await startTiny("", ["--objective", "mlm", "--corpus", corpus]);
  try {
    const s = c.monitor.status();
    assert.equal((s.config as Record<string, unknown>).objective, "mlm");
    assert.ok(!("task" in s.config), `config.task is absent: ${JSON.stringify(s.config)}`);
    assert.ok(!("numLabels" in s.model), `model.numLabels is absent: ${JSON.stringify(s.model)}`);
    assert.equal(s.task.name, `mlm-file:${corpus}`);
  } finally {
    await finish(c, corpus);
  }
});
