/**
 * `deno task cluster [flags]`: a coordinator and `--workers N` local worker
 * processes in one command. With no flags it adapts the built-in small BERT
 * to IMDB with ScaLA, shows progress, prints the dashboard URL and the final
 * evaluation.
 *
 * Local workers: on the cpu backend one process with every core as BLAS
 * threads (a deterministic run: one single-threaded process per core); on
 * the tfjs backends one process per core.
 *
 * `deno task pretrain` (coordinator/pretrain.ts) is the same command with the
 * objective fixed to mlm: {@link runCluster} with `objective`.
 *
 * @module
 */
import { exitOnFlagError } from "../shared/cli/flags.ts";
import {
  availableCores,
  BACKEND_FLAGS,
  type BackendName,
  backendRequest,
  CPU_HINT,
  pickBackend,
} from "../shared/compute/backend.ts";
import { backendUnavailable } from "../shared/compute/create.ts";
import type { FlagSpecs } from "../shared/cli/flags.ts";
import type { Objective } from "../shared/model/param_layout.ts";
import { parseOrExit, serveRun } from "./main.ts";
import { spawnLocalWorkers, stopLocalWorkers } from "./local_workers.ts";

/** The flags `cluster` (and `pretrain`) take besides the training flags: the local workers. */
export const CLUSTER_FLAGS = {
  workers: {
    type: "int",
    help: "local worker processes (default: cpu: one using every core; else one per core)",
  },
  backend: {
    ...BACKEND_FLAGS.backend,
    help: `backend of the local workers: ${BACKEND_FLAGS.backend.help}`,
  },
  threads: {
    ...BACKEND_FLAGS.threads,
    help: "cpu: BLAS threads per local worker (default: cores / workers)",
  },
  blas: BACKEND_FLAGS.blas,
} as const satisfies FlagSpecs;

/** The usage line of `deno task cluster --help`. */
export const CLUSTER_USAGE = "deno task cluster [--workers N] [--backend B] [training flags]";

/**
 * Runs `cluster` on `args` to its end and returns the exit status (`--help`
 * and usage errors exit here). `objective` fixes the run's objective (no
 * `--objective` flag; see `parseRunFlags`), `usage` is the help's first lines.
 */
export async function runCluster(
  args: string[],
  opts: { readonly usage?: string; readonly objective?: Objective } = {},
): Promise<number> {
  const { config, flags } = await parseOrExit(
    args,
    CLUSTER_FLAGS,
    opts.usage ?? CLUSTER_USAGE,
    opts.objective,
  );
  if (flags.workers !== undefined && flags.workers < 0) {
    console.error("error: --workers must be >= 0");
    return 2;
  }
  const { requested, opts: backendOpts } = exitOnFlagError(() => backendRequest(flags));

  /** The local workers' backend: as asked, else picked here (workers on this machine pick the same). */
  let backend: BackendName;
  let note: string | null = null;
  try {
    if (requested !== undefined) backend = requested;
    else ({ name: backend, note } = await pickBackend(backendOpts));
    const unavailable = await backendUnavailable(backend);
    if (unavailable) throw new Error(unavailable);
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    return 1;
  }
  const cores = availableCores();
  const cpu = backend === "cpu";
  return await serveRun(config, "more machines can join with", (url, token, log, resolved) => {
    // A resumed run's `deterministic` comes from its checkpoint, not from this command line.
    const { deterministic } = resolved.training;
    // One process drives a GPU, or (cpu) every core as BLAS threads; else one per core.
    const workers = flags.workers ?? (backend === "webgpu" || (cpu && !deterministic) ? 1 : cores);
    const threads = cpu
      ? (flags.threads ??
        (deterministic ? 1 : Math.max(1, Math.floor(cores / Math.max(1, workers)))))
      : undefined;
    const children = spawnLocalWorkers(workers, url, token, {
      backend,
      threads,
      blas: flags.blas,
      output: resolved.ui.quiet ? "null" : "stderr",
    });
    const each = threads ? `, ${threads} BLAS thread${threads === 1 ? "" : "s"} each` : "";
    const why = requested !== undefined ? "" : ` (auto${note ? `; ${note}; ${CPU_HINT}` : ""})`;
    log(`started ${children.length} local worker(s): ${backend}${each}${why}`);
    return Promise.resolve(() => stopLocalWorkers(children));
  });
}

if (import.meta.main) Deno.exit(await runCluster(Deno.args));
