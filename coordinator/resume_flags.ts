/**
 * `--resume` against the flags on its command line: a resumed run takes its
 * settings from the checkpoint (coordinator/run_config.ts, `resumedConfig`),
 * so a training flag given again with another value would be silently
 * ignored. Instead it is an error that lists every such flag — except a
 * longer `--steps` or `--epochs`, which extends the run (the schedule then
 * decays over the new length from the step resumed).
 *
 * @module
 */
import { InputError } from "../shared/io/input_error.ts";
import { type RunConfig, storedSettings } from "./run_config.ts";

/** Flags whose larger value extends a resumed run instead of differing from it. */
const EXTENDING = ["steps", "epochs"] as const;

/**
 * The resumed configuration with the command line's training flags checked
 * against it: `given` is the command line's (its `given` set names the flags
 * written there), `resumed` the checkpoint's. Returns `resumed`, with a
 * longer run length where one was given; throws an {@link InputError}
 * listing the flags that differ.
 */
export function applyResumeFlags(given: RunConfig, resumed: RunConfig, source: string): RunConfig {
  const mine = storedSettings(given), theirs = storedSettings(resumed);
  const differ: string[] = [];
  let extended = resumed;
  for (const flag of given.given ?? []) {
    if (!Object.hasOwn(theirs, flag)) continue;
    const a = mine[flag], b = theirs[flag];
    if (a === b) continue;
    if (
      (EXTENDING as readonly string[]).includes(flag) && typeof a === "number" &&
      typeof b === "number" && a > b
    ) {
      const training = flag === "steps"
        ? { ...extended.training, steps: a }
        : { ...extended.training, epochs: a };
      extended = { ...extended, training };
      continue;
    }
    differ.push(`--${flag} ${a ?? "(not set)"} (checkpoint: ${b ?? "not set"})`);
  }
  if (differ.length > 0) {
    throw new InputError(
      `${source}: training flags differ from the checkpoint's: ${differ.join(", ")}. ` +
        `Drop them to continue the run as it was (a longer --steps or --epochs extends it)`,
    );
  }
  return extended;
}
