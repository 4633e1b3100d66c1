/**
 * The `--save` folder, checked before anything is loaded (fail fast): a
 * folder that holds an earlier run is refused unless the run continues it
 * (`--resume` of the same folder) or `--overwrite` says to replace it (its
 * run's files are then removed; other files are left alone); the folder is
 * created and written to once, so a folder that cannot take the checkpoints
 * fails now and not at the first checkpoint. Both are {@link InputError}s
 * (exit 2).
 *
 * @module
 */
import { join, resolve } from "node:path";
import { InputError } from "../shared/io/input_error.ts";

/** `--overwrite` (part of the training flags). */
export const SAVE_DIR_FLAGS = {
  overwrite: {
    type: "boolean",
    help: "replace an earlier run in --save (refused without it, unless --resume continues it)",
  },
} as const;

/** What a run writes into its `--save` folder, besides `step-NNNNNN/` checkpoints. */
export const RUN_FILES = ["latest", "model", "best", "metrics.jsonl"] as const;

const STEP_FOLDER = /^step-\d+$/;

/** The names under `dir` that an earlier run wrote (empty when it holds none, or is missing). */
export async function earlierRun(dir: string): Promise<string[]> {
  const found: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if ((RUN_FILES as readonly string[]).includes(e.name) || STEP_FOLDER.test(e.name)) {
        found.push(e.name);
      }
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    if (e instanceof Deno.errors.NotADirectory) {
      throw new InputError(`--save ${dir}: not a folder`);
    }
    throw new InputError(`--save ${dir}: cannot read it: ${(e as Error).message}`);
  }
  return found.sort();
}

/** The `--save`, `--resume` and `--overwrite` a run was given. */
export interface SaveDirChoice {
  readonly save: string | null;
  readonly resume: string | null;
  readonly overwrite: boolean;
}

/**
 * Checks (and prepares) the folder a run will save into: `save`, else the
 * folder resumed. Refuses one holding an earlier run unless it is the run
 * resumed or `overwrite` is set (then removes that run's files), creates it,
 * and proves it writable. Returns the folder, or null without one.
 */
export async function prepareSaveDir(choice: SaveDirChoice): Promise<string | null> {
  const dir = choice.save ?? choice.resume;
  if (dir === null) return null;
  const continuing = choice.resume !== null && resolve(choice.resume) === resolve(dir);
  if (!continuing) {
    const earlier = await earlierRun(dir);
    if (earlier.length > 0) {
      if (!choice.overwrite) {
        throw new InputError(
          `--save ${dir} holds an earlier run (${earlier.join(", ")}): ` +
            `give --overwrite to replace it, or --resume ${dir} to continue it`,
        );
      }
      for (const name of earlier) await Deno.remove(join(dir, name), { recursive: true });
    }
  }
  await checkWritable(dir);
  return dir;
}

/** Creates `dir` if needed and writes (then removes) a probe file in it. */
async function checkWritable(dir: string): Promise<void> {
  const probe = join(dir, `.adaptmesh-write-test-${Deno.pid}`);
  try {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(probe, "");
    await Deno.remove(probe);
  } catch (e) {
    throw new InputError(`--save ${dir}: cannot write there: ${(e as Error).message}`);
  }
}
