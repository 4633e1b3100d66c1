/**
 * Crash-safe replacement of files (and of whole folders): write a temporary copy
 * flush it to disk, then rename it over the target. Readers see either the old
 * file or the complete new one, never a torn write.
 *
 * @module
 */
import { basename, dirname, join } from "node:path";

/** Where {@link atomicWriteStream} sends bytes: each call resolves once all of `bytes` is written. */
export interface ByteSink {
  write(bytes: Uint8Array): Promise<void>;
}

/**
 * Atomically replaces `path` with `bytes` (a string is written as UTF-8): the
 * data goes to a temporary file beside the target, is fsynced, and is renamed
 * over the target; the directory is then fsynced where the platform allows.
 * On failure the temporary file is removed and the target is left untouched.
 */
export async function atomicWriteFile(path: string, bytes: Uint8Array | string): Promise<void> {
  const data = typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes;
  await atomicWriteStream(path, (sink) => sink.write(data));
}

/**
 * Atomically replaces `path` with whatever `fill` writes to its sink, piece by
 * piece, so a file far larger than any one buffer can be written: the pieces go
 * to a temporary file beside the target, which is fsynced and renamed over the
 * target once `fill` resolves; the directory is then fsynced where the platform
 * allows. If `fill` (or a write) throws, the temporary file is removed, the
 * target is left untouched, and the error propagates. The sink does not keep
 * the pieces: a caller may reuse a buffer once its `write` has resolved.
 * Returns the number of bytes written.
 */
export async function atomicWriteStream(
  path: string,
  fill: (sink: ByteSink) => Promise<void>,
): Promise<number> {
  const dir = dirname(path), base = basename(path);
  if (base === "" || path.endsWith("/")) {
    throw new Error(`atomicWriteFile: "${path}" names a directory, not a file`);
  }
  const suffix = `${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  const tmp = join(dir, `.${base}.tmp-${suffix}`);
  let file: Deno.FsFile | undefined;
  let total = 0;
  try {
    const f = await Deno.open(tmp, { write: true, createNew: true });
    file = f;
    await fill({
      async write(data: Uint8Array): Promise<void> {
        let written = 0;
        while (written < data.length) written += await f.write(data.subarray(written));
        total += data.length;
      },
    });
    await f.sync();
    f.close();
    file = undefined;
    await Deno.rename(tmp, path);
  } catch (err) {
    try {
      file?.close();
    } catch { /* already closed */ }
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
  await syncDirectory(dir);
  return total;
}

/** Flushes a directory entry change (the rename) to disk; best effort. */
async function syncDirectory(dir: string): Promise<void> {
  let handle: Deno.FsFile | undefined;
  try {
    handle = await Deno.open(dir, { read: true });
    await handle.sync();
  } catch {
    // Not every platform can open or fsync a directory (e.g. Windows).
  } finally {
    handle?.close();
  }
}

/**
 * Replaces the folder `path` as a whole: `fill` writes the new contents into a
 * fresh sibling folder, which is then renamed into place (any old folder is
 * first renamed aside, then removed). A reader sees the complete old folder or
 * the complete new one, never a mix; if `fill` throws, the old folder is left
 * as it was and the new one is removed.
 */
export async function replaceDirectory(
  path: string,
  fill: (tmp: string) => Promise<void>,
): Promise<void> {
  const dir = dirname(path), base = basename(path);
  const suffix = `${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  const tmp = join(dir, `.${base}.tmp-${suffix}`), old = join(dir, `.${base}.old-${suffix}`);
  await Deno.mkdir(tmp, { recursive: true });
  try {
    await fill(tmp);
  } catch (err) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw err;
  }
  let hadOld = true;
  try {
    await Deno.rename(path, old);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    hadOld = false;
  }
  await Deno.rename(tmp, path);
  await syncDirectory(dir);
  if (hadOld) await Deno.remove(old, { recursive: true });
}
