/**
 * The gradient of one micro-batch: the pure function a worker computes
 * (docs/method.md, "One micro-batch gradient"). Same weights, batch, step, index,
 * seed and settings give the same bits on the same backend.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { type AdversaryConfig, ascend, initialDelta } from "./adversary.ts";
import type { LabelledBatch } from "./batch.ts";
import {
  type BatchTensors,
  batchTensors,
  type DeviceModel,
  type DropoutConfig,
  objectiveLoss,
  type Targets,
  targetTensors,
  type Weights,
} from "./model.ts";
import { mixSeed } from "./rng.ts";

/** Everything the gradient depends on besides the weights. */
export interface GradientTask {
  readonly step: number;
  readonly index: number;
  readonly seed: number;
  readonly adversary: AdversaryConfig;
  readonly batch: LabelledBatch;
  /** Dropout rates; 0 for exact checks. */
  readonly dropout: { readonly hidden: number; readonly attention: number };
}

/** g_j, the mean loss it is the gradient of, n_j, and where the time went. */
export interface GradientResult {
  readonly grad: Float32Array;
  readonly loss: number;
  readonly count: number;
  readonly timings: { readonly computeMs: number; readonly adversaryMs: number };
}

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
  const { config, weights } = model;
  return tf.grad((d: tf.Tensor) =>
    objectiveLoss(config, weights, batch, d as tf.Tensor3D, drop, targets)
  )(
    delta,
  ) as tf.Tensor3D;
}

/** Computes g_j for one micro-batch (modes pgd, freelb, off). */
export async function microBatchGradient(
  model: DeviceModel,
  task: GradientTask,
): Promise<GradientResult> {
  const t0 = performance.now();
  const { config, layout, weights } = model;
  const { batch, adversary: adv } = task;
  const names = layout.specs.map((s) => s.name);
  const params = names.map((n) => weights[n]);
  const drop: DropoutConfig = {
    hidden: task.dropout.hidden,
    attention: task.dropout.attention,
    seed: mixSeed(task.seed, task.step, task.index),
  };
  const bt = batchTensors(config, batch);
  const targets = targetTensors(batch.labels, batch);
  const withParams = (ps: tf.Tensor[]): Weights =>
    Object.fromEntries(names.map((n, i) => [n, ps[i]]));
  const lossAt = (w: Weights, delta: tf.Tensor3D | null) =>
    objectiveLoss(config, w, bt, delta, drop, targets);

  let delta = adv.mode === "off" ? null : initialDelta(
    batch.attentionMask,
    batch.size,
    batch.seqLen,
    config.hiddenSize,
    adv.init,
    task,
  );
  let flat: tf.Tensor1D;
  let lossT: tf.Scalar;
  let adversaryMs = 0;
  try {
    if (adv.mode === "pgd" && delta) {
      for (let k = 0; k < adv.steps; k++) {
        const d: tf.Tensor3D = delta;
        const next = tf.tidy(() => {
          return ascend(d, deltaGradient(model, bt, targets, d, drop), bt.mask, adv);
        });
        d.dispose();
        delta = next;
      }
      await delta.data(); // settle the queue so the timing is the adversary's
      adversaryMs = performance.now() - t0;
    }
    if (adv.mode === "freelb" && delta) {
      let sum: tf.Tensor1D | null = null;
      let lossSum: tf.Scalar | null = null;
      for (let k = 0; k < adv.steps; k++) {
        const d: tf.Tensor3D = delta;
        const out = tf.tidy(() => {
          const { value, grads } = tf.valueAndGrads((x: tf.Tensor, ...ps: tf.Tensor[]) =>
            lossAt(withParams(ps), x as tf.Tensor3D)
          )([d, ...params]);
          const g = flatten(grads.slice(1));
          return {
            next: ascend(d, grads[0] as tf.Tensor3D, bt.mask, adv),
            sum: sum ? tf.add(sum, g) as tf.Tensor1D : g,
            loss: lossSum ? tf.add(lossSum, value) as tf.Scalar : value,
          };
        });
        d.dispose();
        sum?.dispose();
        lossSum?.dispose();
        delta = out.next;
        sum = out.sum;
        lossSum = out.loss;
      }
      flat = tf.tidy(() => tf.div(sum!, adv.steps) as tf.Tensor1D);
      lossT = tf.tidy(() => tf.div(lossSum!, adv.steps) as tf.Scalar);
      sum!.dispose();
      lossSum!.dispose();
      adversaryMs = performance.now() - t0; // in FreeLB every pass is both
    } else {
      const d = delta;
      const out = tf.tidy(() => {
        const { value, grads } = tf.valueAndGrads((...ps: tf.Tensor[]) =>
          lossAt(withParams(ps), d)
        )(
          params,
        );
        return { flat: flatten(grads), loss: value };
      });
      flat = out.flat;
      lossT = out.loss;
    }
    const [grad, loss] = await Promise.all([flat.data() as Promise<Float32Array>, lossT.data()]);
    flat.dispose();
    lossT.dispose();
    return {
      grad,
      loss: loss[0],
      count: batch.size,
      timings: { computeMs: performance.now() - t0, adversaryMs },
    };
  } finally {
    delta?.dispose();
    tf.dispose(targets.kind === "classify" ? [targets.labels] : [targets.positions, targets.ids]);
    for (const t of Object.values(bt)) t.dispose();
  }
}
