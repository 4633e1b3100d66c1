/** Helpers for tests that run real coordinator and worker processes. */
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** Spawns `deno run -A <script> ...args` from the repo root with piped output (`env` added). */
export function spawnDeno(
  script: string,
  args: string[],
  env: Record<string, string> = {},
): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).spawn();
}

/** Runs `deno run -A <script> ...args` from the repo root to the end: its exit code and output. */
export async function runDeno(
  script: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return decoded(await spawnDeno(script, args, env).output());
}

/** Runs `deno task <name> ...args` from the repo root to the end: its exit code and output. */
export async function runDenoTask(
  name: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", name, ...args],
    cwd: ROOT,
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).output();
  return decoded(out);
}

function decoded(out: Deno.CommandOutput): { code: number; stdout: string; stderr: string } {
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** A worker process on `backend` (tfjs-wasm unless named) joining `url`. */
export function spawnWorker(
  url: string,
  token: string,
  extra: string[] = [],
  backend = "tfjs-wasm",
): Deno.ChildProcess {
  return spawnDeno("worker/main.ts", [
    "--url",
    url,
    "--token",
    token,
    "--backend",
    backend,
    ...extra,
  ]);
}

/** Reads a process's stdout line by line, collecting everything; `waitFor` resolves on a matching line. */
export class LineReader {
  readonly lines: string[] = [];
  #waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  readonly done: Promise<void>;
  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = (async () => {
      let buf = "";
      const decoder = new TextDecoder();
      for await (const bytes of stream) {
        buf += decoder.decode(bytes, { stream: true });
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          this.#push(buf.slice(0, i));
          buf = buf.slice(i + 1);
        }
      }
      if (buf) this.#push(buf);
    })();
  }
  #push(line: string) {
    this.lines.push(line);
    this.#waiters = this.#waiters.filter((w) => {
      if (!w.re.test(line)) return true;
      w.resolve(line);
      return false;
    });
  }
  waitFor(re: RegExp, timeoutMs = 120_000): Promise<string> {
    const hit = this.lines.find((l) => re.test(l));
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`timed out waiting for ${re}; got:\n${this.lines.join("\n")}`)),
        timeoutMs,
      );
      this.#waiters.push({ re, resolve: (l) => (clearTimeout(timer), resolve(l)) });
    });
  }
}

/** Waits for a process and drains its output (so the sanitizers see no open resources). */
export async function finish(
  p: Deno.ChildProcess,
  readers: LineReader[] = [],
): Promise<Deno.CommandStatus> {
  const status = await p.status;
  await Promise.all(readers.map((r) => r.done));
  return status;
}
