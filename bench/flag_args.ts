/**
 * A command line from flag values, for the benchmarks that start a run
 * in-process through `parseRunFlags` (coordinator/run_config.ts) with the
 * same flags a user would type.
 *
 * @module
 */

/** A flag's value: a string or number is `--name value`, true is `--name`, false or undefined nothing. */
export type FlagArg = string | number | boolean | undefined;

/** `{ steps: 1, adv: "off", quiet: true }` → `["--steps", "1", "--adv", "off", "--quiet"]`, in key order. */
export function flagArgs(values: Readonly<Record<string, FlagArg>>): string[] {
  return Object.entries(values).flatMap(([name, v]) =>
    v === undefined || v === false ? [] : v === true ? [`--${name}`] : [`--${name}`, String(v)]
  );
}
