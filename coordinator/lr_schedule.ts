/**
 * The learning-rate schedule of docs/method.md: linear warmup from 0 to the peak,
 * then linear decay to 0 at the last step (or constant at the peak).
 *
 * @module
 */

/** What happens after warmup: decay linearly to 0, or hold the peak. */
export type ScheduleKind = "linear" | "constant";

/** The schedule's settings: its kind, and warmup in steps (or a fraction of the run when < 1). */
export interface ScheduleConfig {
  readonly kind: ScheduleKind;
  /** Warmup steps W, or a fraction of the run when < 1 ({@link resolveWarmup}). */
  readonly warmup: number;
}

/** The method's defaults (docs/method.md): linear decay to 0 after warming up over 10% of the run. */
export const DEFAULT_SCHEDULE: ScheduleConfig = { kind: "linear", warmup: 0.1 };

/**
 * The learning rate of optimizer step `step` (1-based, the step about to be
 * applied) in a run of `totalSteps` steps with `warmupSteps` warmup steps:
 *
 *     s ≤ W:              η(s) = peak · s / W
 *     s > W, "linear":    η(s) = peak · max(0, T − s) / max(1, T − W)
 *     s > W, "constant":  η(s) = peak
 *
 * so η(W) = peak and, for "linear", η(T) = 0 at the last step. With W = 0
 * there is no warmup and step 1 already decays: η(1) = peak·(T−1)/T.
 *
 * This is Hugging Face's `get_linear_schedule_with_warmup` (and, for
 * "constant", `get_constant_schedule_with_warmup`) evaluated at index s:
 * HF's multiplier is `c / max(1, W)` for c < W, else
 * `max(0, (T − c) / max(1, T − W))`. For c = s < W both agree; at s = W HF
 * takes its decay branch, which gives (T − W)/(T − W) = 1 = W/W, the same
 * value. (A HF training loop reads the multiplier *before* its first
 * `scheduler.step()`, i.e. optimizer step s uses index s − 1, so HF's first
 * step has rate 0 and its last step peak/(T−W); here step s uses index s, so
 * the first step already learns and the last step has rate 0.)
 */
export function learningRate(
  step: number,
  totalSteps: number,
  peak: number,
  warmupSteps: number,
  schedule: ScheduleKind,
): number {
  if (!Number.isSafeInteger(totalSteps) || totalSteps < 1) {
    throw new RangeError(`totalSteps must be a positive integer, got ${totalSteps}`);
  }
  if (!Number.isSafeInteger(step) || step < 1) {
    throw new RangeError(`step must be a positive integer (1-based), got ${step}`);
  }
  if (!Number.isSafeInteger(warmupSteps) || warmupSteps < 0) {
    throw new RangeError(`warmupSteps must be a non-negative integer, got ${warmupSteps}`);
  }
  if (!(peak >= 0 && Number.isFinite(peak))) {
    throw new RangeError(`peak learning rate must be a non-negative finite number, got ${peak}`);
  }
  if (schedule !== "linear" && schedule !== "constant") {
    throw new Error(`unknown schedule ${JSON.stringify(schedule)}`);
  }
  if (step <= warmupSteps) return peak * step / warmupSteps;
  if (schedule === "constant") return peak;
  return peak * Math.max(0, totalSteps - step) / Math.max(1, totalSteps - warmupSteps);
}

/**
 * Turns a `--warmup` value into a step count: a value in [0, 1) is a fraction
 * of the run, rounded up (as HF's `warmup_ratio`:
 * `ceil(totalSteps · ratio)`, but ignoring float noise of 1e-9 so that
 * 0.1 · 30 gives 3, not 4); a value ≥ 1 is a step count and must be an integer.
 */
export function resolveWarmup(warmup: number, totalSteps: number): number {
  if (!Number.isSafeInteger(totalSteps) || totalSteps < 1) {
    throw new RangeError(`totalSteps must be a positive integer, got ${totalSteps}`);
  }
  if (!(warmup >= 0 && Number.isFinite(warmup))) {
    throw new RangeError(`warmup must be a non-negative finite number, got ${warmup}`);
  }
  if (warmup < 1) return Math.max(0, Math.ceil(warmup * totalSteps - 1e-9));
  if (!Number.isInteger(warmup)) {
    throw new RangeError(`warmup ≥ 1 is a step count and must be an integer, got ${warmup}`);
  }
  return warmup;
}
