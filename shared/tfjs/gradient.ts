/**
 * The gradient of one micro-batch: the pure function a worker computes
 * (docs/method.md, "One micro-batch gradient"). Same weights, batch, step, index,
 * seed and settings give the same bits on the same backend.
 *
 * A LoRA model (`DeviceModel.lora`) differentiates the trainable tensors only
 * (adapters and head, in `plan.layout` order); the base weights are
 * constants, so tfjs forms none of their gradients.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { ascend, initialDelta } from "./adversary.ts";
import type { AdversaryConfig } from "../method/adversary_config.ts";
import type { GradientResult, GradientTask } from "../compute/task.ts";
import {
  type BatchTensors,
  batchTensors,
  type DeviceModel,
  type DropoutConfig,
  type LoraRun,
  objectiveLoss,
  passWeights,
  type Targets,
  targetTensors,
  type Weights,
} from "./model.ts";
import { mixSeed } from "../method/rng.ts";

/** Concatenates flattened tensors in bounded groups (software WebGPU allows 8 buffers per shader). */
export function flatten(tensors: readonly tf.Tensor[]): tf.Tensor1D {
  return tf.tidy(() => {
    let level = tensors.map((t) => tf.reshape(t, [-1]));
    while (level.length > 1) {
      const next: tf.Tensor[] = [];
      for (let i = 0; i < level.length; i += 6) next.push(tf.concat(level.slice(i, i + 6)));
      level = next;
    }
    return level[0] as tf.Tensor1D;
  });
}

/**
 * ∇_δ of the mean loss at E + δ: one forward and one backward pass. The
 * weights are constants here, so tfjs forms no parameter gradients.
 */
export function deltaGradient(
  model: DeviceModel,
  batch: BatchTensors,
  targets: Targets,
  delta: tf.Tensor3D,
  drop: DropoutConfig,
): tf.Tensor3D {
  const { config } = model;
  const weights = passWeights(model), lora = loraRun(model);
  return tf.grad((d: tf.Tensor) =>
    objectiveLoss(config, weights, batch, d as tf.Tensor3D, drop, targets, lora)
  )(
    delta,
  ) as tf.Tensor3D;
}

/** What every pass of one micro-batch shares: the model, the batch on the device, its targets, dropout. */
interface Pass {
  readonly model: DeviceModel;
  readonly batch: BatchTensors;
  readonly targets: Targets;
  readonly drop: DropoutConfig;
  /** The parameters in layout order (the variables of the full passes). */
  readonly params: tf.Tensor[];
  /** The mean loss at parameters `ps` (layout order) and embedding noise `delta`. */
  lossAt(ps: tf.Tensor[], delta: tf.Tensor3D | null): tf.Scalar;
}

/** A mode's outcome, still on the device: g_j flat, its loss, the adversary's share of the time. */
interface DeviceGradient {
  readonly flat: tf.Tensor1D;
  readonly loss: tf.Scalar;
  readonly adversaryMs: number;
}

/** A LoRA model's adapters in a training pass (their dropout on), or null. */
function loraRun(model: DeviceModel): LoraRun | null {
  const lora = model.lora;
  return lora ? { scale: lora.plan.scale, dropout: lora.plan.lora.dropout } : null;
}

/** Uploads the task's batch and targets and fixes its dropout seed. */
function openPass(model: DeviceModel, task: GradientTask): Pass {
  const { config } = model;
  // What is differentiated: every parameter, or a LoRA model's trainable tensors.
  const layout = model.lora ? model.lora.plan.layout : model.layout;
  const weights = model.lora ? model.lora.weights : model.weights;
  const names = layout.specs.map((s) => s.name);
  const lora = loraRun(model);
  const drop: DropoutConfig = {
    hidden: task.dropout.hidden,
    attention: task.dropout.attention,
    seed: mixSeed(task.seed, task.step, task.index),
  };
  const batch = batchTensors(config, task.batch);
  const targets = targetTensors(task.batch.labels, task.batch);
  return {
    model,
    batch,
    targets,
    drop,
    params: names.map((n) => weights[n]),
    lossAt: (ps, delta) => {
      const w: Weights = Object.fromEntries(names.map((n, i) => [n, ps[i]]));
      return objectiveLoss(config, passWeights(model, w), batch, delta, drop, targets, lora);
    },
  };
}

/** Frees what {@link openPass} uploaded. */
function closePass(pass: Pass): void {
  const t = pass.targets;
  tf.dispose(t.kind === "classify" ? [t.labels] : [t.positions, t.ids]);
  for (const x of Object.values(pass.batch)) x.dispose();
}

/** δ_0 for the task (docs/method.md, "One micro-batch gradient"). */
function startDelta(model: DeviceModel, task: GradientTask): tf.Tensor3D {
  const { attentionMask, size, seqLen } = task.batch;
  const { hiddenSize } = model.config;
  return initialDelta(attentionMask, size, seqLen, hiddenSize, task.adversary.init, task);
}

/** One full pass at `delta` (null: clean): the loss and ∇ of every parameter, flattened. */
function fullPass(pass: Pass, delta: tf.Tensor3D | null): { flat: tf.Tensor1D; loss: tf.Scalar } {
  return tf.tidy(() => {
    const { value, grads } = tf.valueAndGrads((...ps: tf.Tensor[]) => pass.lossAt(ps, delta))(
      pass.params,
    );
    return { flat: flatten(grads), loss: value };
  });
}

/** Mode off: g_j is the clean gradient. */
function cleanGradient(pass: Pass): DeviceGradient {
  return { ...fullPass(pass, null), adversaryMs: 0 };
}

/**
 * Mode pgd: K δ-only passes, each followed by the ascent step, then one full
 * pass at δ_K. Owns `delta` (disposes it and every step's successor).
 */
async function pgdGradient(
  pass: Pass,
  adv: AdversaryConfig,
  delta: tf.Tensor3D,
  t0: number,
): Promise<DeviceGradient> {
  try {
    for (let k = 0; k < adv.steps; k++) {
      const d: tf.Tensor3D = delta;
      const next = tf.tidy(() =>
        ascend(
          d,
          deltaGradient(pass.model, pass.batch, pass.targets, d, pass.drop),
          pass.batch.mask,
          adv,
        )
      );
      d.dispose();
      delta = next;
    }
    await delta.data(); // settle the queue so the timing is the adversary's
    const adversaryMs = performance.now() - t0;
    return { ...fullPass(pass, delta), adversaryMs };
  } finally {
    delta.dispose();
  }
}

/** FreeLB's running state: the next δ and the sums of the passes so far. */
interface FreeLbSums {
  readonly delta: tf.Tensor3D;
  readonly grad: tf.Tensor1D;
  readonly loss: tf.Scalar;
}

/** One FreeLB pass at `delta`: its ascent step, and g and loss added to `prev`'s sums (null first). */
function freelbPass(
  pass: Pass,
  adv: AdversaryConfig,
  delta: tf.Tensor3D,
  prev: FreeLbSums | null,
): FreeLbSums {
  return tf.tidy(() => {
    const { value, grads } = tf.valueAndGrads((x: tf.Tensor, ...ps: tf.Tensor[]) =>
      pass.lossAt(ps, x as tf.Tensor3D)
    )([delta, ...pass.params]);
    const g = flatten(grads.slice(1));
    return {
      delta: ascend(delta, grads[0] as tf.Tensor3D, pass.batch.mask, adv),
      grad: prev ? tf.add(prev.grad, g) as tf.Tensor1D : g,
      loss: prev ? tf.add(prev.loss, value) as tf.Scalar : value,
    };
  });
}

/**
 * Mode freelb: K full passes at δ_0 … δ_{K−1}, each followed by the ascent
 * step; g_j and the loss are the means over the K passes. Owns `delta`.
 */
function freelbGradient(
  pass: Pass,
  adv: AdversaryConfig,
  delta: tf.Tensor3D,
  t0: number,
): DeviceGradient {
  let sums: FreeLbSums | null = null;
  try {
    for (let k = 0; k < adv.steps; k++) {
      const prev: FreeLbSums | null = sums;
      sums = freelbPass(pass, adv, prev?.delta ?? delta, prev);
      if (prev) tf.dispose([prev.delta, prev.grad, prev.loss]);
      else delta.dispose();
    }
    const { grad, loss } = sums!;
    return {
      flat: tf.tidy(() => tf.div(grad, adv.steps) as tf.Tensor1D),
      loss: tf.tidy(() => tf.div(loss, adv.steps) as tf.Scalar),
      adversaryMs: performance.now() - t0, // in FreeLB every pass is both
    };
  } finally {
    if (sums) tf.dispose([sums.delta, sums.grad, sums.loss]);
    else delta.dispose();
  }
}

/** Computes g_j for one micro-batch: the mode's passes, then one read back to the host. */
export async function microBatchGradient(
  model: DeviceModel,
  task: GradientTask,
): Promise<GradientResult> {
  const t0 = performance.now();
  const adv = task.adversary;
  const pass = openPass(model, task);
  try {
    const out = adv.mode === "pgd"
      ? await pgdGradient(pass, adv, startDelta(model, task), t0)
      : adv.mode === "freelb"
      ? freelbGradient(pass, adv, startDelta(model, task), t0)
      : cleanGradient(pass);
    try {
      const [grad, loss] = await Promise.all([
        out.flat.data() as Promise<Float32Array>,
        out.loss.data(),
      ]);
      return {
        grad,
        loss: loss[0],
        count: task.batch.size,
        timings: { computeMs: performance.now() - t0, adversaryMs: out.adversaryMs },
      };
    } finally {
      out.flat.dispose();
      out.loss.dispose();
    }
  } finally {
    closePass(pass);
  }
}
