/**
 * The few tensor ops the model is built from, each with the gradient that is
 * fastest on the active backend. On wasm, matMul with transpose flags runs
 * ~10x slower than without (docs/platform.md), and tfjs's own matMul
 * gradient uses those flags; so on cpu/wasm every product here transposes
 * explicitly and multiplies plainly, forward and backward (the backward
 * through {@link installMatMulGradient}).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { dropoutMask } from "../method/dropout_mask.ts";

let explicitTranspose = true;

/** Chooses explicit transposes (cpu, wasm) or transpose flags (webgpu). */
export function setExplicitTranspose(on: boolean): void {
  explicitTranspose = on;
}

function swapLast(x: tf.Tensor): tf.Tensor {
  const r = x.rank;
  const perm = [...Array(r).keys()];
  [perm[r - 2], perm[r - 1]] = [perm[r - 1], perm[r - 2]];
  return tf.transpose(x, perm);
}

type M3 = tf.Tensor3D;

/**
 * Replaces tfjs's BatchMatMul gradient with one that, in explicit-transpose
 * mode, multiplies plainly: dA = dY·Bᵀ and dB = Aᵀ·dY with the transposes as
 * their own ops. Each input's gradient is a separate thunk, so a pass that
 * needs only ∇δ never forms the weight gradients. Called by `initBackend`,
 * after tfjs has registered its own gradients.
 */
export function installMatMulGradient(): void {
  tf.registerGradient({
    kernelName: tf.BatchMatMul,
    inputsToSave: ["a", "b"],
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: tf.NamedAttrMap) => {
      const [a, b] = saved as M3[];
      const g = dy as M3;
      const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
      if (!transposeA && !transposeB) {
        return explicitTranspose
          ? { a: () => tf.matMul(g, swapLast(b) as M3), b: () => tf.matMul(swapLast(a) as M3, g) }
          : { a: () => tf.matMul(g, b, false, true), b: () => tf.matMul(a, g, true, false) };
      }
      // tfjs's own formulas for the flagged products.
      if (!transposeA && transposeB) {
        return { a: () => tf.matMul(g, b, false, false), b: () => tf.matMul(g, a, true, false) };
      }
      if (transposeA && !transposeB) {
        return { a: () => tf.matMul(b, g, false, true), b: () => tf.matMul(a, g, false, false) };
      }
      return { a: () => tf.matMul(b, g, true, true), b: () => tf.matMul(g, a, true, true) };
    },
  });
}

/** a·bᵀ (when `transposeB`) or a·b, rank 2 or 3, on the backend's fast path. */
export function matMul(a: tf.Tensor, b: tf.Tensor, transposeB = false): tf.Tensor {
  if (!explicitTranspose) return tf.matMul(a as tf.Tensor3D, b as tf.Tensor3D, false, transposeB);
  return tf.matMul(a as M3, (transposeB ? swapLast(b) : b) as M3);
}

/** y = x·Wᵀ + bias for x [..., in], W [out, in] (Hugging Face layout). */
export function linear(x: tf.Tensor, w: tf.Tensor, bias: tf.Tensor): tf.Tensor {
  const inDim = x.shape[x.rank - 1];
  const flat = tf.reshape(x, [-1, inDim]);
  const y = tf.add(matMul(flat, w, true), bias);
  return tf.reshape(y, [...x.shape.slice(0, -1), w.shape[0]]);
}

/** Exact GELU: 0.5·x·(1 + erf(x/√2)). */
export function gelu(x: tf.Tensor): tf.Tensor {
  return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2))));
}

/** LayerNorm over the last axis with learned scale and shift. */
export function layerNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number): tf.Tensor {
  const { mean, variance } = tf.moments(x, -1, true);
  const normed = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps)));
  return tf.add(tf.mul(normed, gamma), beta);
}

/**
 * Inverted dropout at site `site` of the pass seeded `seed`: x times the
 * host-made mask of shared/method/dropout_mask.ts, so every backend (and the native
 * engine) drops the same elements. Identity when `rate` is 0.
 */
export function dropout(x: tf.Tensor, rate: number, seed: number, site: number): tf.Tensor {
  if (!(rate > 0)) return x;
  return tf.mul(x, tf.tensor(dropoutMask(seed, site, rate, x.size), x.shape, "float32"));
}
