/**
 * `deno task worker --url ws://HOST:PORT/ws --token T [--backend B] [--threads N] [--blas PATH] [--stay]
 * [--base-cache DIR] [--base-cache-size 8GB]`:
 * lends this machine's GPU (or CPU) to a running coordinator.
 *
 * @module
 */
import { exitOnFlagError, parseFlagsOrExit } from "../shared/cli/flags.ts";
import { BACKEND_FLAGS, backendRequest } from "../shared/compute/backend.ts";
import { disposeBackend, startBackend } from "../shared/compute/create.ts";
import type { ComputeBackend } from "../shared/compute/model_compute.ts";
import { runWorker } from "./client.ts";
import { BaseCache, DEFAULT_BASE_CACHE_BYTES, defaultBaseCacheDir } from "./base_cache.ts";
import { parseByteSize } from "../shared/io/checkpoint.ts";
import { FlagError } from "../shared/cli/flags.ts";

const flags = parseFlagsOrExit(Deno.args, {
  url: {
    type: "string",
    required: true,
    help: "the coordinator's WebSocket, e.g. ws://10.0.0.5:8787/ws",
  },
  token: { type: "string", required: true, help: "the run token the coordinator printed" },
  ...BACKEND_FLAGS,
  stay: { type: "boolean", help: "after a run ends, wait for the next one" },
  "connect-timeout": {
    type: "number",
    default: 60,
    help: "seconds to keep retrying an unreachable coordinator",
  },
  "base-cache": {
    type: "string",
    help: "LoRA: folder of cached frozen bases (default $XDG_CACHE_HOME/adaptmesh/bases)",
  },
  "base-cache-size": {
    type: "string",
    default: String(DEFAULT_BASE_CACHE_BYTES),
    help: "LoRA: size cap of the base cache, e.g. 8GB (0: keep bases in memory only)",
  },
}, "deno task worker --url ws://HOST:PORT/ws --token T [flags]");

const { requested, opts } = exitOnFlagError(() => backendRequest(flags));
const log = (line: string) => console.log(`[worker ${Deno.pid}] ${line}`);
const cacheBytes = exitOnFlagError(() => {
  try {
    return parseByteSize(flags["base-cache-size"]);
  } catch (e) {
    throw new FlagError(`--base-cache-size: ${(e as Error).message}`);
  }
});
const bases = new BaseCache({
  dir: cacheBytes > 0 ? flags["base-cache"] ?? defaultBaseCacheDir() : null,
  maxBytes: cacheBytes,
  log,
});
let backend: ComputeBackend;
try {
  const started = await startBackend(requested, opts);
  backend = started.backend;
  log(started.line);
} catch (e) {
  console.error(`error: backend ${requested ?? "(auto)"}: ${(e as Error).message}`);
  Deno.exit(1);
}
// Ctrl-C (also delivered to every worker `deno task cluster` started): leave quietly.
const interrupt = new AbortController();
const onSignal = () => interrupt.abort();
for (const s of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(s, onSignal);
const exit = await runWorker({
  url: flags.url,
  token: flags.token,
  backend,
  stay: flags.stay,
  connectTimeoutMs: flags["connect-timeout"] * 1000,
  log,
  interrupt: interrupt.signal,
  bases,
});
await bases.flushed();
log(`exiting: ${exit.reason}`);
disposeBackend();
Deno.exit(exit.code);
