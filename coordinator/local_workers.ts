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
    /**
     * Where the workers' output goes: this process's stdout and stderr
     * (`inherit`, the default), nowhere, or all of it to this process's
     * stderr (`stderr`: the cluster's stdout stays for its result line).
     */
    output?: "inherit" | "null" | "stderr";
  } = {},
): Deno.ChildProcess[] {
  const output = opts.output ?? "inherit";
  const toStderr = output === "stderr";
  return Array.from({ length: n }, () => {
    const child = new Deno.Command(Deno.execPath(), {
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
      stdout: toStderr ? "piped" : output,
      stderr: toStderr ? "inherit" : output,
    }).spawn();
    if (toStderr) void copyToStderr(child.stdout);
    return child;
  });
}

/** Copies a child's stdout to this process's stderr until it closes. */
async function copyToStderr(stream: ReadableStream<Uint8Array>): Promise<void> {
  try {
    for await (const chunk of stream) {
      let off = 0;
      while (off < chunk.length) off += Deno.stderr.writeSync(chunk.subarray(off));
    }
  } catch { /* the child went away */ }
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
