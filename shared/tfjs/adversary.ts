/**
 * The adversary of ScaLA: a per-example perturbation δ of the word
 * embeddings, found by projected gradient ascent (docs/method.md, "One
 * micro-batch gradient"). Everything here is deterministic in its inputs.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { AdversaryConfig } from "../method/adversary_config.ts";
import { type DeltaStart, initialDeltaHost } from "../method/adversary.ts";

/** δ_0 as a tensor [B, L, H]: {@link initialDeltaHost} uploaded (zeros made on the device). */
export function initialDelta(...start: DeltaStart): tf.Tensor3D {
  const [, size, seqLen, hidden, init] = start;
  const shape: [number, number, number] = [size, seqLen, hidden];
  if (init === 0) return tf.zeros(shape);
  return tf.tensor3d(initialDeltaHost(...start), shape);
}

/** Per-example l2 norm over [L, H], shaped [B, 1, 1] for broadcasting. */
function exampleNorm(x: tf.Tensor3D): tf.Tensor {
  return tf.sqrt(tf.sum(tf.square(x), [1, 2], true));
}

/**
 * One ascent step and projection: δ ← Π_ε(δ + α·G/‖G‖) (l2, per example) or
 * δ ← clip(δ + α·sign(G), −ε, ε) (linf). G is zeroed at padding first.
 * `mask` is [B, L] float (1 real, 0 padding).
 */
export function ascend(
  delta: tf.Tensor3D,
  grad: tf.Tensor3D,
  mask: tf.Tensor2D,
  cfg: AdversaryConfig,
): tf.Tensor3D {
  return tf.tidy(() => {
    const g = tf.mul(grad, tf.expandDims(mask, 2)) as tf.Tensor3D;
    if (cfg.norm === "linf") {
      return tf.clipByValue(
        tf.add(delta, tf.mul(tf.sign(g), cfg.lr)),
        -cfg.eps,
        cfg.eps,
      ) as tf.Tensor3D;
    }
    const stepped = tf.add(
      delta,
      tf.div(tf.mul(g, cfg.lr), tf.add(exampleNorm(g), 1e-12)),
    ) as tf.Tensor3D;
    const n = exampleNorm(stepped);
    // Scale by ε/‖δ‖ only where ‖δ‖ > ε.
    const scale = tf.where(tf.greater(n, cfg.eps), tf.div(cfg.eps, n), tf.onesLike(n));
    return tf.mul(stepped, scale) as tf.Tensor3D;
  });
}
