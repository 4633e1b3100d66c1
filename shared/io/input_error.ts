/**
 * Input the user gave that cannot be used — a label outside the task's
 * classes, an empty evaluation split, a `--save` folder holding an earlier
 * run, a `--resume` whose flags differ from the checkpoint's. Like a bad flag
 * (shared/cli/flags.ts, `FlagError`) it is a usage error: commands print it
 * and exit 2, where failures at run time exit 1.
 *
 * @module
 */

/** A usage error found past flag parsing (files, folders, checkpoints); exit 2. */
export class InputError extends Error {
  override name = "InputError";
}
