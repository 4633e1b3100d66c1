/**
 * The adversary's settings (docs/method.md, "One micro-batch gradient"): the
 * modes and norms `--adv`, `--adv-norm` and the wire accept, the settings of
 * one micro-batch, the project defaults and the `--adv-start` schedule. No
 * tfjs here: the protocol and the run config import it; the ascent itself is
 * shared/tfjs/adversary.ts.
 *
 * @module
 */

/**
 * How g_j is made: adversarial (PGD or FreeLB) or clean (docs/method.md, "One
 * micro-batch gradient"). The list is what `--adv` and the wire's
 * `task.adversary.mode` accept.
 */
export const ADVERSARY_MODES = ["pgd", "freelb", "off"] as const;

/** One of {@link ADVERSARY_MODES}. */
export type AdversaryMode = typeof ADVERSARY_MODES[number];

/**
 * The ball δ is projected onto (docs/method.md, "Projections"): what
 * `--adv-norm` and the wire's `task.adversary.norm` accept.
 */
export const ADVERSARY_NORMS = ["l2", "linf"] as const;

/** One of {@link ADVERSARY_NORMS}. */
export type AdversaryNorm = typeof ADVERSARY_NORMS[number];

/**
 * The adversary's settings for one micro-batch: the one definition, which the
 * run config holds and a `task` message carries (shared/wire/protocol.ts).
 */
export interface AdversaryConfig {
  readonly mode: AdversaryMode;
  /** K: ascent steps (≥ 1 unless mode is `off`). */
  readonly steps: number;
  /** α: ascent step size. */
  readonly lr: number;
  /** ε: radius of the ball δ is projected onto. */
  readonly eps: number;
  readonly norm: AdversaryNorm;
  /** Scale of the random start; 0 starts from δ = 0. */
  readonly init: number;
}

/** The project defaults (docs/method.md): PGD, K = 1, α = 0.1, ε = 1, l2, zero init. */
export const DEFAULT_ADVERSARY: AdversaryConfig = {
  mode: "pgd",
  steps: 1,
  lr: 0.1,
  eps: 1.0,
  norm: "l2",
  init: 0,
};

/**
 * The adversary in effect at `step` (0-based) of a run of `totalSteps`: mode
 * `off` before `start` (a step number, or a fraction of the run when < 1).
 */
export function adversaryAt(
  cfg: AdversaryConfig,
  step: number,
  totalSteps: number,
  start: number,
): AdversaryConfig {
  const first = start < 1 ? Math.floor(start * totalSteps) : start;
  return step < first ? { ...cfg, mode: "off" } : cfg;
}

/** No adversary: the clean gradient (benchmarks' and tests' baseline). */
export const NO_ADVERSARY: AdversaryConfig = { ...DEFAULT_ADVERSARY, mode: "off" };
