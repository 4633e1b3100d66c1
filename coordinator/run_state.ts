/**
 * Checkpoints of a whole run (docs/architecture.md, principle 2): the weights in
 * Hugging Face format, the optimizer moments, the step, the weights version
 * and the run configuration that fixes the data order. Each checkpoint is a
 * folder `step-NNNNNN/` written completely (every file fsynced) before the
 * pointer file `latest` is atomically replaced to name it, so a crash leaves
 * either the old or the new checkpoint, never a mix. The newest
 * `--save-total-limit` checkpoints are kept (default 1), and never the one of
 * the best evaluation's step.
 *
 * In each checkpoint, `run_state.json` is what adaptmesh resumes from (step,
 * weights version, run id, settings, model selection) and
 * `trainer_state.json` follows Hugging Face's `TrainerState` layout
 * (`global_step`, `log_history`, `best_metric`, `best_model_checkpoint`, …;
 * coordinator/run_log.ts). Checkpoints written before 2026-12-06 kept
 * adaptmesh's fields in trainer_state.json; they still resume.
 *
 * @module
 */
import { join } from "node:path";
import { loadCheckpoint, saveCheckpoint } from "../shared/io/checkpoint.ts";
import { atomicWriteFile } from "../shared/io/atomic_write.ts";
import type { ModelConfig } from "../shared/model/config.ts";
import type { Objective } from "../shared/model/param_layout.ts";
import { decodeOptimizerState, encodeOptimizerState, type OptimizerState } from "./optimizer.ts";
import { loadLoraState, type LoraState, saveLoraState } from "./lora_state.ts";

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
  /** The best evaluation so far (coordinator/best_model.ts, `BestState`). */
  readonly best?: unknown;
  /** trainer_state.json in Hugging Face's layout (coordinator/run_log.ts); absent: not written. */
  readonly trainerState?: Record<string, unknown>;
  /**
   * A LoRA run: the trainable state and the base's hash (coordinator/lora_state.ts).
   * Then `weights` is not written (the base comes from `--model`, checked by
   * hash) and, read back, is empty; `optimizer` is over the trainable layout.
   */
  readonly lora?: LoraState | null;
}

/** Which step checkpoints a save keeps. */
export interface KeepCheckpoints {
  /** The newest N step folders (default 1). */
  readonly limit?: number;
  /** A step whose folder is kept whatever its age (the best evaluation's), if it has one. */
  readonly protectStep?: number | null;
}

/** The folder name of step `step`'s checkpoint. */
export function stepFolderName(step: number): string {
  return `step-${String(step).padStart(6, "0")}`;
}

/** Writes a checkpoint of `state` under `dir` and points `latest` at it. Returns its folder. */
export async function saveRunState(
  dir: string,
  state: RunState,
  tokenizerFrom?: string,
  keep: KeepCheckpoints = {},
): Promise<string> {
  const name = stepFolderName(state.step);
  const folder = join(dir, name);
  await Deno.mkdir(folder, { recursive: true });
  if (state.lora) await saveLoraState(folder, state.modelConfig, state.lora, tokenizerFrom);
  else {
    await saveCheckpoint(folder, {
      config: state.modelConfig,
      weights: state.weights,
      objective: state.objective,
    }, {
      dtype: "F32",
      copyTokenizerFrom: tokenizerFrom,
    });
  }
  await atomicWriteFile(join(folder, "optimizer.bin"), encodeOptimizerState(state.optimizer));
  await atomicWriteFile(
    join(folder, RUN_STATE_FILE),
    JSON.stringify(
      {
        step: state.step,
        weightsVersion: state.weightsVersion,
        runId: state.runId,
        objective: state.objective,
        backend: state.backend,
        runConfig: state.runConfig,
        best: state.best ?? null,
        ...(state.lora ? { lora: { baseHash: state.lora.baseHash } } : {}),
      },
      null,
      2,
    ),
  );
  if (state.trainerState) {
    await atomicWriteFile(
      join(folder, "trainer_state.json"),
      JSON.stringify(state.trainerState, null, 2),
    );
  }
  await atomicWriteFile(join(dir, "latest"), name + "\n");
  await rotate(dir, name, keep);
  return folder;
}

/** adaptmesh's resume state in a checkpoint folder. */
const RUN_STATE_FILE = "run_state.json";

/** Removes step folders beyond the newest `keep.limit`, never `latest`'s nor the protected step's. */
async function rotate(dir: string, latest: string, keep: KeepCheckpoints): Promise<void> {
  const steps: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isDirectory && /^step-\d+$/.test(e.name)) steps.push(e.name);
  }
  steps.sort((a, b) => Number(a.slice(5)) - Number(b.slice(5)));
  const kept = new Set(steps.slice(-Math.max(1, keep.limit ?? 1)));
  kept.add(latest);
  if (keep.protectStep != null) kept.add(stepFolderName(keep.protectStep));
  for (const name of steps) {
    if (!kept.has(name)) await Deno.remove(join(dir, name), { recursive: true }).catch(() => {});
  }
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
  // Checkpoints before 2026-12-06 kept this state in trainer_state.json.
  const meta = JSON.parse(
    await Deno.readTextFile(join(folder, RUN_STATE_FILE)).catch(() =>
      Deno.readTextFile(join(folder, "trainer_state.json"))
    ),
  );
  const objective: Objective = meta.objective ?? "classify";
  const lora = meta.lora ? await loadLoraState(folder, meta.lora) : null;
  const ck = lora
    ? { config: lora.config, weights: new Float32Array(0), layout: lora.state.plan.layout }
    : await loadCheckpoint(folder, { objective });
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
    best: meta.best ?? null,
    lora: lora?.state ?? null,
  };
}
