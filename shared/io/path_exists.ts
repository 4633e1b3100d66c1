/**
 * Whether a path exists: the one check the loaders make before choosing a
 * source (the shipped default model, a checkpoint's optional files).
 *
 * @module
 */

/**
 * True when `path` can be stat'ed (file, folder or anything else), false when
 * it does not exist. Any other failure (no permission, an I/O error) is
 * thrown: it is not the same as a missing file and must not be read as one.
 */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}
