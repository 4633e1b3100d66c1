/**
 * The frozen LoRA bases a worker holds, by hash (shared/model/base_hash.ts):
 * the last one in memory, across reconnects and runs, and every one in an
 * on-disk cache with a size cap, so that a worker that restarts, or joins a
 * later run on the same base, does not download it again (docs/protocol.md,
 * "LoRA: the base by hash").
 *
 * On disk a base is `DIR/<hash>.f32`: its float32 values, little-endian. A
 * file is checked against its name when it is read (its layout comes from
 * the run's welcome); one that does not hash to its name is deleted and
 * reported as absent. Past the size cap the least recently used files go.
 * The default folder is `$XDG_CACHE_HOME/adaptmesh/bases`, else
 * `~/.cache/adaptmesh/bases`.
 *
 * @module
 */
import { join } from "node:path";
import { atomicWriteFile } from "../shared/io/atomic_write.ts";
import { BASE_HASH_PATTERN, baseHash } from "../shared/model/base_hash.ts";
import type { ParamLayout } from "../shared/model/param_layout.ts";
import { MAX_HELLO_BASES } from "../shared/wire/protocol.ts";

/** The default size cap of the disk cache: 8 GB. */
export const DEFAULT_BASE_CACHE_BYTES = 8_000_000_000;

/** Where the bases are cached by default, or null when neither XDG_CACHE_HOME nor HOME is set. */
export function defaultBaseCacheDir(): string | null {
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  if (xdg) return join(xdg, "adaptmesh", "bases");
  const home = Deno.env.get("HOME");
  return home ? join(home, ".cache", "adaptmesh", "bases") : null;
}

/** Options of a {@link BaseCache}. */
export interface BaseCacheOptions {
  /** The disk cache's folder; null: memory only. */
  readonly dir: string | null;
  /** The disk cache's size cap in bytes (0: nothing is written to disk). */
  readonly maxBytes: number;
  /** Where to say what happened (a base loaded, a bad file deleted). */
  readonly log?: (line: string) => void;
}

/** The bases held: one in memory, the rest on disk. */
export class BaseCache {
  #memory: { hash: string; data: Float32Array } | null = null;
  /** Disk writes, one at a time. */
  #writes: Promise<void> = Promise.resolve();

  /** A cache in `opts.dir` capped at `opts.maxBytes`. */
  constructor(readonly opts: BaseCacheOptions) {}

  /** The hashes held, the one in memory first (at most the hello's limit). */
  async hashes(): Promise<string[]> {
    const out = this.#memory ? [this.#memory.hash] : [];
    for (const f of await this.#files()) if (!out.includes(f.hash)) out.push(f.hash);
    return out.slice(0, MAX_HELLO_BASES);
  }

  /**
   * The base `hash` (layout `layout`): from memory, else from disk, checked
   * against the hash (a file that fails is deleted). Null when not held.
   */
  async get(hash: string, layout: ParamLayout): Promise<Float32Array | null> {
    if (this.#memory?.hash === hash) return this.#memory.data;
    const path = this.#path(hash);
    if (!path) return null;
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(path);
    } catch {
      return null;
    }
    const data = bytes.byteLength === layout.total * 4
      ? new Float32Array(bytes.buffer, bytes.byteOffset, layout.total)
      : null;
    if (!data || baseHash(layout, data) !== hash) {
      this.opts.log?.(`base cache: ${path} does not hash to its name; deleted`);
      await Deno.remove(path).catch(() => {});
      return null;
    }
    const now = new Date();
    await Deno.utime(path, now, now).catch(() => {});
    this.#memory = { hash, data };
    this.opts.log?.(`base ${hash.slice(0, 12)}… loaded from ${path}`);
    return data;
  }

  /**
   * Keeps a base already checked against `hash`: in memory now, on disk in
   * the background (see {@link flushed}), evicting the least recently used
   * files past the cap.
   */
  put(hash: string, data: Float32Array): void {
    this.#memory = { hash, data };
    const path = this.#path(hash);
    if (!path || data.byteLength > this.opts.maxBytes) return;
    this.#writes = this.#writes.then(async () => {
      try {
        await Deno.mkdir(this.opts.dir!, { recursive: true });
        await atomicWriteFile(
          path,
          new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
        );
        await this.#evict(hash);
      } catch (e) {
        this.opts.log?.(`base cache: cannot write ${path}: ${(e as Error).message}`);
      }
    });
  }

  /** Resolves when every disk write asked for so far is done. */
  flushed(): Promise<void> {
    return this.#writes;
  }

  #path(hash: string): string | null {
    if (!this.opts.dir || !BASE_HASH_PATTERN.test(hash)) return null;
    return join(this.opts.dir, `${hash}.f32`);
  }

  /** The cached files, most recently used first. */
  async #files(): Promise<{ hash: string; path: string; size: number; used: number }[]> {
    const dir = this.opts.dir;
    if (!dir) return [];
    const out: { hash: string; path: string; size: number; used: number }[] = [];
    try {
      for await (const e of Deno.readDir(dir)) {
        const hash = e.name.endsWith(".f32") ? e.name.slice(0, -4) : "";
        if (!e.isFile || !BASE_HASH_PATTERN.test(hash)) continue;
        const path = join(dir, e.name);
        const st = await Deno.stat(path).catch(() => null);
        if (st) out.push({ hash, path, size: st.size, used: st.mtime?.getTime() ?? 0 });
      }
    } catch {
      return [];
    }
    return out.sort((a, b) => b.used - a.used);
  }

  /** Deletes the least recently used files (never `keep`) until the cache fits its cap. */
  async #evict(keep: string): Promise<void> {
    const files = await this.#files();
    let total = files.reduce((a, f) => a + f.size, 0);
    for (const f of files.reverse()) {
      if (total <= this.opts.maxBytes) break;
      if (f.hash === keep) continue;
      await Deno.remove(f.path).catch(() => {});
      total -= f.size;
      this.opts.log?.(`base cache: evicted ${f.hash.slice(0, 12)}… (over the size cap)`);
    }
  }
}
