// adaptmesh dashboard: polls `status` every second and draws the run with uPlot.
// Plain script, no build step; uPlot comes from dashboard/uPlot.iife.min.js.
/* global uPlot */
"use strict";

(() => {
  const POLL_MS = 1000;
  const token = new URLSearchParams(location.search).get("token");
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  const COLORS = [
    "#2563eb",
    "#dc2626",
    "#16a34a",
    "#9333ea",
    "#ea580c",
    "#0891b2",
    "#ca8a04",
    "#db2777",
    "#4b5563",
    "#65a30d",
  ];
  const PHASES = ["compute", "adversary", "transfer", "averaging", "optimizer", "encode", "step"];

  const $ = (id) => document.getElementById(id);
  const state = { polls: 0, errors: 0, last: null, charts: {} };
  // For tests and curious people: window.adaptmesh.last is the latest /status.
  globalThis.adaptmesh = state;

  // ---- formatting ---------------------------------------------------------

  const isNum = (x) => typeof x === "number" && Number.isFinite(x);
  function fmt(x, digits = 4) {
    if (!isNum(x)) return "–";
    if (x !== 0 && (Math.abs(x) < 1e-3 || Math.abs(x) >= 1e6)) return x.toExponential(2);
    return Number(x.toPrecision(digits)).toString();
  }
  /** An axis tick: as many decimals as the tick spacing needs. */
  function tick(v, incr) {
    if (!isNum(v)) return "";
    const big = Math.abs(v) >= 1e6;
    if (big || (incr > 0 && incr < 1e-4)) return v === 0 ? "0" : v.toExponential(big ? 1 : 2);
    let decimals = 0;
    if (!(incr > 0)) decimals = 2;
    else {
      while (
        decimals < 8 && Math.abs(Math.round(incr * 10 ** decimals) - incr * 10 ** decimals) > 1e-6
      ) {
        decimals++;
      }
    }
    return v.toFixed(decimals);
  }
  function duration(s) {
    if (!isNum(s)) return "?";
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, sec = s % 60;
    if (h > 0) return `${h}h${String(m).padStart(2, "0")}m`;
    if (m > 0) return `${m}m${String(sec).padStart(2, "0")}s`;
    return `${sec}s`;
  }
  function bytes(n) {
    if (!isNum(n)) return "–";
    const units = ["B", "kB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) {
      n /= 1000;
      i++;
    }
    return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
  }
  function setText(id, text) {
    const el = $(id);
    if (el && el.textContent !== text) el.textContent = text;
  }

  // ---- charts -------------------------------------------------------------

  function chartWidth(el) {
    return Math.max(240, (el.parentElement?.clientWidth ?? 480) - 8);
  }

  /**
   * Draws `data` ([xs, ...ys]) into the chart with id `id`; the chart is
   * (re)built when its series labels change.
   */
  // The x axes count steps: ticks at whole steps only (uPlot's default increments include 0.5).
  const STEP_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 2.5e3, 5e3, 1e4, 2e4];
  for (let i = 5; i <= 9; i++) STEP_INCRS.push(10 ** i, 2 * 10 ** i, 5 * 10 ** i);
  // For tests: the x-axis ticks each chart drew last, by chart id.
  state.xTicks = {};

  function draw(id, labels, data, opts = {}) {
    const el = $(id);
    if (!el) return;
    const key = labels.join("\u0000");
    let entry = state.charts[id];
    if (!entry || entry.key !== key) {
      entry?.plot.destroy();
      el.textContent = "";
      const plot = new uPlot(
        {
          width: chartWidth(el),
          height: 220,
          scales: { x: { time: false }, y: opts.y ?? {} },
          legend: { show: true, live: true },
          cursor: { drag: { x: true, y: false } },
          axes: [
            {
              label: opts.xLabel ?? "step",
              size: 40,
              incrs: STEP_INCRS,
              values: (_u, splits) => {
                state.xTicks[id] = splits.slice();
                return splits.map((v) => String(v));
              },
            },
            {
              size: 64,
              values: (_u, splits, _i, _space, incr) => splits.map((v) => tick(v, incr)),
            },
          ],
          series: [
            { label: opts.xLabel ?? "step" },
            ...labels.map((label, i) => ({
              label,
              stroke: COLORS[i % COLORS.length],
              width: 2,
              spanGaps: true,
              points: { show: data[0].length < 60 },
              value: (_u, v) => fmt(v),
            })),
          ],
        },
        data,
        el,
      );
      entry = state.charts[id] = { key, plot };
    } else {
      entry.plot.setData(data);
    }
    el.dataset.points = String(data[0].length);
  }

  addEventListener("resize", () => {
    for (const [id, { plot }] of Object.entries(state.charts)) {
      plot.setSize({ width: chartWidth($(id)), height: 220 });
    }
  });

  function drawCharts(s) {
    const h = s.history ?? [];
    const steps = h.map((p) => p.step);
    draw("chart-loss", ["loss"], [steps, h.map((p) => p.loss)]);
    draw("chart-lr", ["learning rate"], [steps, h.map((p) => p.lr)]);

    // examples/s: each step, and a moving average over 10 steps.
    const eps = h.map((p) => p.examplesPerSecond);
    const avg = eps.map((_, i) => {
      const w = eps.slice(Math.max(0, i - 9), i + 1);
      return w.reduce((a, b) => a + b, 0) / w.length;
    });
    draw("chart-throughput", ["examples/s", "10-step average"], [steps, eps, avg], {
      y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.1)] },
    });

    // Per-worker throughput: one series per worker seen in the plotted steps.
    const ids = [];
    for (const p of h) {
      for (const id of Object.keys(p.workers ?? {})) if (!ids.includes(id)) ids.push(id);
    }
    ids.sort();
    draw(
      "chart-workers",
      ids.length ? ids : ["(no worker yet)"],
      [steps, ...(ids.length ? ids : [""]).map((id) => h.map((p) => p.workers?.[id] ?? null))],
      { y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.1)] } },
    );

    draw("chart-timings", PHASES, [
      steps,
      ...PHASES.map((ph) => h.map((p) => p.seconds?.[ph] ?? null)),
    ]);

    // Evaluations: one series per split/metric.
    const evals = s.evaluations ?? [];
    const byName = new Map();
    for (const e of evals) {
      for (const [m, v] of Object.entries(e.metrics)) {
        const n = `${e.split} ${m}`;
        if (!byName.has(n)) byName.set(n, new Map());
        byName.get(n).set(e.step, v);
      }
    }
    const names = [...byName.keys()];
    const evalSteps = [...new Set(evals.map((e) => e.step))].sort((a, b) => a - b);
    const series = names.map((n) => evalSteps.map((st) => byName.get(n).get(st) ?? null));
    draw("chart-eval", names.length ? names : ["(no evaluation yet)"], [
      evalSteps,
      ...(names.length ? series : [[]]),
    ]);
  }

  // ---- tables -------------------------------------------------------------

  function row(cells, cls) {
    const tr = document.createElement("tr");
    if (cls) tr.className = cls;
    for (const c of cells) {
      const td = document.createElement("td");
      td.textContent = String(c);
      tr.appendChild(td);
    }
    return tr;
  }

  function drawWorkers(workers) {
    const body = $("workers-body");
    const rows = workers.map((w) => {
      const tr = row([
        w.id,
        w.backend,
        w.device,
        w.msPerExample > 0 ? w.msPerExample.toFixed(1) : "–",
        fmt(w.examplesPerSecond, 3),
        w.microBatches,
        w.examples,
        w.rejected,
        w.inflight,
        duration(w.connectedSeconds),
      ]);
      tr.dataset.workerId = w.id;
      return tr;
    });
    body.replaceChildren(...(rows.length ? rows : [row(["no workers connected"], "empty")]));
    if (!rows.length) body.firstChild.firstChild.colSpan = 10;
  }

  function drawCounters(c) {
    const entries = [
      ["steps", c.steps],
      ["examples", c.examples],
      ["tokens", c.tokens],
      ["clipped steps", c.clippedSteps],
      ["evaluations", c.evaluations],
      ["checkpoints written", c.checkpoints],
      ["workers joined / left", `${c.workersJoined} / ${c.workersLeft}`],
      ["bytes received", bytes(c.bytesIn)],
      ["bytes sent", bytes(c.bytesOut)],
      ["weights bytes sent", bytes(c.weightsBytesSent)],
    ];
    for (
      const [group, label] of [["redispatched", "re-dispatched"], ["discarded", "discarded"], [
        "rejected",
        "rejected",
      ]]
    ) {
      const m = c[group] ?? {};
      const keys = Object.keys(m);
      entries.push([
        label,
        keys.length ? keys.map((k) => `${k} ${m[k]}`).join(", ") : "0",
      ]);
    }
    $("counters-body").replaceChildren(...entries.map((e) => row(e)));
  }

  function drawConfig(s) {
    const entries = Object.entries(s.config ?? {}).map(([k, v]) => [
      k,
      typeof v === "object" && v !== null ? JSON.stringify(v) : String(v),
    ]);
    entries.unshift(["model", JSON.stringify(s.model)], ["data", JSON.stringify(s.task)]);
    const body = $("config-body");
    if (body.childElementCount !== entries.length) {
      body.replaceChildren(...entries.map((e) => row(e)));
    }
  }

  // ---- the page -----------------------------------------------------------

  function evalText(e) {
    if (!e) return "–";
    return Object.entries(e).filter(([k]) => k !== "examples").map(([k, v]) => `${k} ${fmt(v)}`)
      .join(" · ");
  }

  function render(s) {
    const p = s.progress;
    const pct = p.totalSteps > 0 ? (100 * p.step) / p.totalSteps : 0;
    $("progress-bar").style.width = `${pct.toFixed(2)}%`;
    $("progress").setAttribute("aria-valuenow", pct.toFixed(1));
    setText("run-id", `run ${s.runId.slice(0, 8)}`);
    setText("step", String(p.step));
    setText("total-steps", String(p.totalSteps));
    setText("percent", `${pct.toFixed(1)}%`);
    setText("elapsed", duration(p.elapsedSeconds));
    setText("eta", s.finished ? "done" : p.etaSeconds === null ? "?" : duration(p.etaSeconds));
    const badge = $("state");
    const st = s.finished
      ? (s.summary?.stopped ? "stopped" : "finished")
      : s.workers.length === 0
      ? "waiting for workers"
      : "training";
    setText("state", st);
    badge.dataset.state = st;

    setText("stat-loss", fmt(s.loss));
    setText("stat-eval", evalText(s.lastEvaluation));
    setText("stat-eps", fmt(s.examplesPerSecond, 3));
    setText("stat-lr", fmt(s.lr, 3));
    setText("stat-grad", fmt(s.gradNorm));
    setText(
      "stat-trust",
      s.trustRatio
        ? `${fmt(s.trustRatio.min, 3)} / ${fmt(s.trustRatio.mean, 3)} / ${fmt(s.trustRatio.max, 3)}`
        : "–",
    );
    setText("stat-workers", String(s.workers.length));
    setText("stat-adv", s.adversary ?? "–");
    setText("stat-bytes", `${bytes(s.counters.bytesIn)} / ${bytes(s.counters.bytesOut)}`);

    if (s.finished && s.summary) {
      $("summary").hidden = false;
      const sm = s.summary;
      setText(
        "summary-text",
        `${sm.stopped ? "stopped" : "finished"} after ${sm.steps} steps in ${
          duration(sm.elapsedMs / 1000)
        }` +
          (sm.evaluation ? ` · final evaluation: ${evalText(sm.evaluation)}` : "") +
          (sm.savedTo ? ` · saved to ${sm.savedTo}` : ""),
      );
    }
    drawCharts(s);
    drawWorkers(s.workers);
    drawCounters(s.counters);
    drawConfig(s);
  }

  function showError(text) {
    const el = $("error");
    el.hidden = !text;
    setText("error", text ?? "");
  }

  async function poll() {
    let delay = POLL_MS;
    try {
      const res = await fetch(`status${query}`, { cache: "no-store" });
      if (res.status === 401) {
        showError("unauthorized: open this page with ?token=<metrics token>");
        delay = 5000;
      } else if (!res.ok) {
        showError(`status: HTTP ${res.status}`);
      } else {
        const s = await res.json();
        state.last = s;
        state.polls++;
        showError(null);
        render(s);
      }
    } catch (e) {
      state.errors++;
      showError(
        state.last?.finished
          ? "the run is over and the coordinator has exited"
          : `coordinator unreachable (${e.message})`,
      );
      delay = 2000;
    }
    setTimeout(poll, delay);
  }

  poll();
})();
