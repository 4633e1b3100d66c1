/**
 * Whether a path exists: the one check the loaders make before choosing a
 * source (the shipped default model, a checkpoint's optional files).
 *
 * @module
 */

/** True when `path` can be stat'ed (file, folder or anything else); false on any error. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
