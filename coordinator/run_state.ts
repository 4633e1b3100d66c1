/**
 * Checkpoints of a whole run (docs/architecture.md, principle 2): the weights in
 * Hugging Face format, the optimizer moments, the step, the weights version
 * and the run configuration that fixes the data order. Each checkpoint is a
 * folder `step-NNNNNN/` written completely (every file fsynced) before the
 * pointer file `latest` is atomically replaced to name it, so a crash leaves
 * either the old or the new checkpoint, never a mix.
 *
 * @module
 */
import { join } from "node:path";
import { loadCheckpoint, saveCheckpoint } from "../shared/io/checkpoint.ts";
import { atomicWriteFile } from "../shared/io/atomic_write.ts";
import type { ModelConfig } from "../shared/model/config.ts";
import type { Objective } from "../shared/model/param_layout.ts";
import { decodeOptimizerState, encodeOptimizerState, type OptimizerState } from "./optimizer.ts";

/** Everything a resumed run needs. */
export interface RunState {
  readonly modelConfig: ModelConfig;
  readonly weights: Float32Array;
  /** Which head the weights carry. */
  readonly objective: Objective;
  readonly optimizer: OptimizerState;
  /** Steps completed. */
  readonly step: number;
  readonly weightsVersion: number;
  readonly runId: string;
  /**
   * The backend the first worker of a deterministic run pinned it to (null:
   * not deterministic, or no worker yet): a resumed run keeps it.
   */
  readonly backend: string | null;
  /**
   * The run's stored settings (coordinator/run_config.ts, `storedSettings`):
   * flag names and resolved values, checked on resume like flags.
   */
  readonly runConfig: Record<string, unknown>;
}

/** Writes a checkpoint of `state` under `dir` and points `latest` at it. Returns its folder. */
export async function saveRunState(
  dir: string,
  state: RunState,
  tokenizerFrom?: string,
): Promise<string> {
  const name = `step-${String(state.step).padStart(6, "0")}`;
  const folder = join(dir, name);
  await Deno.mkdir(folder, { recursive: true });
  await saveCheckpoint(folder, {
    config: state.modelConfig,
    weights: state.weights,
    objective: state.objective,
  }, {
    dtype: "F32",
    copyTokenizerFrom: tokenizerFrom,
  });
  await atomicWriteFile(join(folder, "optimizer.bin"), encodeOptimizerState(state.optimizer));
  await atomicWriteFile(
    join(folder, "trainer_state.json"),
    JSON.stringify(
      {
        step: state.step,
        weightsVersion: state.weightsVersion,
        runId: state.runId,
        objective: state.objective,
        backend: state.backend,
        runConfig: state.runConfig,
      },
      null,
      2,
    ),
  );
  let previous: string | null = null;
  try {
    previous = (await Deno.readTextFile(join(dir, "latest"))).trim();
  } catch { /* first checkpoint */ }
  await atomicWriteFile(join(dir, "latest"), name + "\n");
  if (previous && previous !== name) {
    await Deno.remove(join(dir, previous), { recursive: true }).catch(() => {});
  }
  return folder;
}

/** The folder `latest` names under `dir`, or null when `dir` holds no run checkpoint. */
export async function latestCheckpoint(dir: string): Promise<string | null> {
  try {
    return join(dir, (await Deno.readTextFile(join(dir, "latest"))).trim());
  } catch {
    return null;
  }
}

/** Loads the latest checkpoint under `dir`. */
export async function loadRunState(dir: string): Promise<RunState & { folder: string }> {
  const folder = await latestCheckpoint(dir);
  if (!folder) throw new Error(`--resume ${dir}: no run checkpoint there (no "latest" file)`);
  const meta = JSON.parse(await Deno.readTextFile(join(folder, "trainer_state.json")));
  const objective: Objective = meta.objective ?? "classify";
  const ck = await loadCheckpoint(folder, { objective });
  const optimizer = decodeOptimizerState(
    await Deno.readFile(join(folder, "optimizer.bin")),
    ck.layout.total,
  );
  return {
    folder,
    modelConfig: ck.config,
    weights: ck.weights,
    objective,
    optimizer,
    step: meta.step,
    weightsVersion: meta.weightsVersion,
    runId: meta.runId,
    backend: typeof meta.backend === "string" ? meta.backend : null,
    runConfig: meta.runConfig,
  };
}
