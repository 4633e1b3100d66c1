/**
 * `--model NAME`: a model named as on the Hugging Face Hub (`bert-base-uncased`,
 * `FacebookAI/roberta-large`), found offline in the local hub cache that
 * huggingface_hub fills (`huggingface-cli download NAME`, or any
 * `from_pretrained`). Nothing is downloaded.
 *
 * The cache folder is the first of `$HF_HUB_CACHE`, `$HUGGINGFACE_HUB_CACHE`,
 * `$HF_HOME/hub`, `$XDG_CACHE_HOME/huggingface/hub` and
 * `~/.cache/huggingface/hub` (huggingface_hub's own order). A model lives in
 * `models--{org}--{name}/`: `refs/main` holds a commit hash, and
 * `snapshots/{hash}/` the files, usually symlinks into `blobs/` (they are read
 * through the links). A `--model` value that is an existing folder is used as
 * it is; anything else is looked up as a name.
 *
 * @module
 */
import { pathExists } from "./path_exists.ts";

/** Reads an environment variable (injectable for tests); undefined when unset or empty. */
export type EnvLookup = (name: string) => string | undefined;

const processEnv: EnvLookup = (name) => Deno.env.get(name) || undefined;

/** The hub cache folder and the setting that chose it (for messages). */
export interface HubCache {
  readonly dir: string;
  /** e.g. `$HF_HOME/hub` or `~/.cache/huggingface/hub (the default)`. */
  readonly from: string;
}

/** The hub cache folder huggingface_hub would use with this environment. */
export function hubCache(env: EnvLookup = processEnv): HubCache {
  const hub = env("HF_HUB_CACHE");
  if (hub) return { dir: hub, from: "$HF_HUB_CACHE" };
  const legacy = env("HUGGINGFACE_HUB_CACHE");
  if (legacy) return { dir: legacy, from: "$HUGGINGFACE_HUB_CACHE" };
  const home = env("HF_HOME");
  if (home) return { dir: `${home}/hub`, from: "$HF_HOME/hub" };
  const xdg = env("XDG_CACHE_HOME");
  if (xdg) return { dir: `${xdg}/huggingface/hub`, from: "$XDG_CACHE_HOME/huggingface/hub" };
  const user = env("HOME") ?? "~";
  return { dir: `${user}/.cache/huggingface/hub`, from: "~/.cache/huggingface/hub (the default)" };
}

/** A Hub model name: `name` or `org/name`, each part letters, digits, `-`, `_`, `.`. */
const HUB_NAME = /^(?:[A-Za-z0-9][A-Za-z0-9._-]*\/)?[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Whether `ref` could name a model on the Hub (rather than being a path). */
export function isHubName(ref: string): boolean {
  return HUB_NAME.test(ref) && !ref.includes("..") && !ref.endsWith(".");
}

/** The cache folder of model `name`: `models--{org}--{name}` (huggingface_hub's repo folder name). */
export function repoFolderName(name: string): string {
  return `models--${name.replaceAll("/", "--")}`;
}

/** `--model NAME` found nowhere; the message says where it looked and how to put it there. */
export class ModelNotFound extends Error {
  override name = "ModelNotFound";
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

async function readRef(path: string): Promise<string | null> {
  try {
    return (await Deno.readTextFile(path)).trim() || null;
  } catch {
    return null;
  }
}

/**
 * The folder `--model ref` means: `ref` itself when it is a folder, else the
 * snapshot of the Hub name `ref` in the local cache ({@link hubCache}) that
 * `refs/main` points at (or, with no `refs/main`, the only snapshot there is).
 * A value that cannot be a Hub name (`/abs`, `./rel`, `a/b/c`) is returned as
 * it is: a path, for the checkpoint loader to read or refuse. Throws {@link ModelNotFound}, naming every place it looked and how to fill
 * the cache on a machine with network, when neither exists.
 */
export async function resolveModel(ref: string, env: EnvLookup = processEnv): Promise<string> {
  // A path (absolute, ./, ../, more than one /) is the loader's to read or refuse.
  if (!isHubName(ref) || await isDir(ref)) return ref;
  const cache = hubCache(env);
  const repo = `${cache.dir}/${repoFolderName(ref)}`;
  const found = await snapshotOf(repo);
  if (found.dir) return found.dir;
  const looked = [`${ref} (no such folder)`, `${repo} (${found.why}; cache from ${cache.from})`];
  throw new ModelNotFound(
    `model "${ref}" not found; looked in:\n` + looked.map((l) => `  ${l}`).join("\n") +
      `\nNothing is downloaded. To put it there, on a machine with network run\n` +
      `  huggingface-cli download ${ref}\n` +
      `and copy its ~/.cache/huggingface/hub/${repoFolderName(ref)} folder into ` +
      `${cache.dir}/ here (or set HF_HUB_CACHE or HF_HOME to where the cache is), ` +
      `or give --model the model's folder.`,
  );
}

/** The snapshot folder `refs/main` names in a repo folder, or why there is none. */
async function snapshotOf(repo: string): Promise<
  { dir: string; why?: undefined } | {
    dir: null;
    why: string;
  }
> {
  if (!(await isDir(repo))) return { dir: null, why: "not there" };
  const hash = await readRef(`${repo}/refs/main`);
  if (hash !== null) {
    const dir = `${repo}/snapshots/${hash}`;
    if (await isDir(dir)) return { dir };
    return { dir: null, why: `refs/main names ${hash}, but snapshots/${hash} is missing` };
  }
  const snapshots: string[] = [];
  if (await pathExists(`${repo}/snapshots`)) {
    for await (const e of Deno.readDir(`${repo}/snapshots`)) {
      if (e.isDirectory) snapshots.push(e.name);
    }
  }
  if (snapshots.length === 1) return { dir: `${repo}/snapshots/${snapshots[0]}` };
  return {
    dir: null,
    why: snapshots.length === 0
      ? "no refs/main and no snapshot"
      : `no refs/main, and ${snapshots.length} snapshots to choose from`,
  };
}
