/**
 * Worker processes on this machine, for `deno task cluster` and the
 * benchmarks: started with the coordinator's URL and token, stopped once the
 * run is over.
 *
 * @module
 */
import { fileURLToPath } from "node:url";

const WORKER_MAIN = fileURLToPath(new URL("../worker/main.ts", import.meta.url));

/** Starts `n` worker processes joining `url`. */
export function spawnLocalWorkers(
  n: number,
  url: string,
  token: string,
  opts: {
    backend?: string;
    /** cpu: BLAS threads per worker. */
    threads?: number;
    /** cpu: the BLAS library (`--blas`). */
    blas?: string;
    output?: "inherit" | "null";
  } = {},
): Deno.ChildProcess[] {
  const output = opts.output ?? "inherit";
  return Array.from({ length: n }, () =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        WORKER_MAIN,
        "--url",
        url,
        "--token",
        token,
        ...(opts.backend ? ["--backend", opts.backend] : []),
        ...(opts.threads !== undefined ? ["--threads", String(opts.threads)] : []),
        ...(opts.blas !== undefined ? ["--blas", opts.blas] : []),
      ],
      stdin: "null",
      stdout: output,
      stderr: output,
    }).spawn());
}

/** Waits for workers to exit after the coordinator's bye; kills those still running after `graceMs`. */
export async function stopLocalWorkers(
  children: Deno.ChildProcess[],
  graceMs = 10_000,
): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const exited = await Promise.race([
    Promise.all(children.map((p) => p.status)).then(() => true),
    new Promise<false>((r) => (timer = setTimeout(() => r(false), graceMs))),
  ]);
  clearTimeout(timer);
  if (!exited) {
    for (const p of children) {
      try {
        p.kill("SIGKILL");
      } catch { /* already exited */ }
    }
    await Promise.all(children.map((p) => p.status));
  }
}
