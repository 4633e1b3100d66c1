/**
 * Terminal progress, on stderr (stdout carries only the run's result line):
 * a one-line bar redrawn in place on a TTY, plain periodic lines otherwise
 * (CI, logs).
 *
 * @module
 */
import type { StepReport, TrainerObserver } from "./trainer.ts";
import type { EvalResult } from "../shared/eval/held_out.ts";

function duration(ms: number): string {
  if (!isFinite(ms)) return "?";
  const s = Math.round(ms / 1000);
  return s >= 3600
    ? `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`
    : s >= 60
    ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`
    : `${s}s`;
}

/** Formats metrics as `accuracy 0.8123 f1 0.7712`. */
export function formatMetrics(r: EvalResult): string {
  return Object.entries(r).map(([k, v]) =>
    k === "examples" ? `(${v} examples)` : `${k} ${v.toFixed(4)}`
  ).join(" ");
}

/** An observer printing progress to stderr (`tty`: whether stderr is a terminal). */
export function progressPrinter(opts: { tty: boolean; everyMs?: number }): TrainerObserver {
  const enc = new TextEncoder();
  let lastPrint = 0;
  let onBar = false;
  const line = (s: string) => {
    if (onBar) Deno.stderr.writeSync(enc.encode("\r\x1b[2K"));
    onBar = false;
    console.error(s);
  };
  return {
    log: line,
    step(r: StepReport) {
      const rate = r.examples / (r.timings.stepMs / 1000);
      const eta = (r.elapsedMs / r.step) * (r.totalSteps - r.step);
      const text =
        `step ${r.step}/${r.totalSteps} loss ${r.loss.toFixed(4)} lr ${r.lr.toExponential(2)} ` +
        `${rate.toFixed(1)} ex/s adv ${r.adversary} ETA ${duration(eta)}`;
      if (opts.tty) {
        const width = 20, done = Math.round((width * r.step) / r.totalSteps);
        Deno.stderr.writeSync(
          enc.encode(`\r\x1b[2K[${"#".repeat(done)}${".".repeat(width - done)}] ${text}`),
        );
        onBar = true;
      } else if (performance.now() - lastPrint >= (opts.everyMs ?? 0) || r.step === r.totalSteps) {
        lastPrint = performance.now();
        line(text);
      }
    },
    evaluated(step: number, split: string, result: EvalResult) {
      line(`eval at step ${step} (${split}): ${formatMetrics(result)}`);
    },
    checkpointed(step: number, folder: string) {
      line(`checkpoint at step ${step}: ${folder}`);
    },
  };
}
