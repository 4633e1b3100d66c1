/**
 * `deno task worker --url ws://HOST:PORT/ws --token T [--backend B] [--threads N] [--blas PATH] [--stay]`:
 * lends this machine's GPU (or CPU) to a running coordinator.
 *
 * @module
 */
import { exitOnFlagError, parseFlagsOrExit } from "../shared/cli/flags.ts";
import { BACKEND_FLAGS, backendRequest } from "../shared/compute/backend.ts";
import { disposeBackend, startBackend } from "../shared/compute/create.ts";
import type { ComputeBackend } from "../shared/compute/model_compute.ts";
import { runWorker } from "./client.ts";

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
}, "deno task worker --url ws://HOST:PORT/ws --token T [flags]");

const { requested, opts } = exitOnFlagError(() => backendRequest(flags));
const log = (line: string) => console.log(`[worker ${Deno.pid}] ${line}`);
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
});
log(`exiting: ${exit.reason}`);
disposeBackend();
Deno.exit(exit.code);
