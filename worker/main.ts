/**
 * `deno task worker --url ws://HOST:PORT/ws --token T [--backend webgpu|wasm|cpu] [--stay]`:
 * lends this machine's GPU (or CPU) to a running coordinator.
 *
 * @module
 */
import { parseFlagsOrExit } from "../shared/cli/flags.ts";
import { type BackendName, disposeBackend, initBackend, pickBackend } from "../shared/backend.ts";
import { runWorker } from "./client.ts";

const flags = parseFlagsOrExit(Deno.args, {
  url: {
    type: "string",
    required: true,
    help: "the coordinator's WebSocket, e.g. ws://10.0.0.5:8787/ws",
  },
  token: { type: "string", required: true, help: "the run token the coordinator printed" },
  backend: {
    type: "string",
    help: "webgpu | wasm | cpu (default: webgpu on a hardware GPU, else wasm)",
  },
  stay: { type: "boolean", help: "after a run ends, wait for the next one" },
  "connect-timeout": {
    type: "number",
    default: 60,
    help: "seconds to keep retrying an unreachable coordinator",
  },
}, "deno task worker --url ws://HOST:PORT/ws --token T [flags]");

const chosen = flags.backend ?? await pickBackend();
if (!["webgpu", "wasm", "cpu"].includes(chosen)) {
  console.error(`error: --backend must be webgpu, wasm or cpu, got "${chosen}"`);
  Deno.exit(2);
}
const log = (line: string) => console.log(`[worker ${Deno.pid}] ${line}`);
let backend;
try {
  backend = await initBackend(chosen as BackendName);
} catch (e) {
  console.error(`error: backend ${chosen}: ${(e as Error).message}`);
  Deno.exit(1);
}
log(`backend ${backend.name} on ${backend.device}${flags.backend ? "" : " (auto)"}`);
const exit = await runWorker({
  url: flags.url,
  token: flags.token,
  backend,
  stay: flags.stay,
  connectTimeoutMs: flags["connect-timeout"] * 1000,
  log,
});
log(`exiting: ${exit.reason}`);
disposeBackend();
Deno.exit(exit.code);
