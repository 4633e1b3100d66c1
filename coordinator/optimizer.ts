/**
 * The outer optimizer: LAMB (default) and AdamW (baseline), exactly as
 * `method.md` ("Outer optimizer") defines them, over the flat parameter buffer
 * of a {@link ParamLayout}. Plain, deterministic JavaScript: per-element math
 * in float64, results stored in Float32Arrays, norms accumulated in float64 in
 * index order. Also the bit-exact binary form of the optimizer state used by
 * checkpoints.
 *
 * @module
 */
import type { ParamLayout } from "../shared/param_layout.ts";

/** Which update rule to apply. */
export type OptimizerKind = "lamb" | "adamw";

/** Hyper-parameters of the outer optimizer. */
export interface OptimizerConfig {
  /** `lamb` (layer-wise trust ratio) or `adamw` (trust ratio 1 everywhere). */
  kind: OptimizerKind;
  /** First-moment decay β1 (default 0.9). */
  beta1: number;
  /** Second-moment decay β2 (default 0.999). */
  beta2: number;
  /** ϵ added to sqrt(v̂) (default 1e-6). */
  eps: number;
  /** Decoupled weight decay λ for tensors with `decay` true (default 0.01). */
  weightDecay: number;
}

/** The method's defaults: LAMB, β1 0.9, β2 0.999, ϵ 1e-6, λ 0.01. */
export const DEFAULT_OPTIMIZER_CONFIG: Readonly<OptimizerConfig> = Object.freeze({
  kind: "lamb",
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-6,
  weightDecay: 0.01,
});

/** Optimizer moments in the layout's flat order, and the number of steps taken. */
export interface OptimizerState {
  /** Steps applied so far (the next step is `step + 1`). */
  step: number;
  /** First moment m, one element per parameter. */
  m: Float32Array;
  /** Second moment v, one element per parameter. */
  v: Float32Array;
}

/** What one step did, for metrics. */
export interface StepStats {
  /** Trust ratio r per tensor in layout order; 1 for excluded tensors and for AdamW. */
  trustRatios: Float64Array;
  /**
   * ‖η·r·u‖₂ over all tensors: the l2 norm of the update as computed in
   * float64, before the new weights are rounded to float32.
   */
  updateNorm: number;
}

/** A fresh state for `total` parameters: step 0, zero moments. */
export function createOptimizerState(total: number): OptimizerState {
  if (!Number.isSafeInteger(total) || total < 0) {
    throw new RangeError(`optimizer state size must be a non-negative integer, got ${total}`);
  }
  return { step: 0, m: new Float32Array(total), v: new Float32Array(total) };
}

function checkConfig(cfg: OptimizerConfig, lr: number): void {
  if (cfg.kind !== "lamb" && cfg.kind !== "adamw") {
    throw new Error(`unknown optimizer kind ${JSON.stringify(cfg.kind)}`);
  }
  const unit = (name: string, x: number) => {
    if (!(x >= 0 && x < 1)) throw new RangeError(`${name} must be in [0, 1), got ${x}`);
  };
  unit("beta1", cfg.beta1);
  unit("beta2", cfg.beta2);
  if (!(cfg.eps > 0 && Number.isFinite(cfg.eps))) {
    throw new RangeError(`eps must be a positive finite number, got ${cfg.eps}`);
  }
  if (!(cfg.weightDecay >= 0 && Number.isFinite(cfg.weightDecay))) {
    throw new RangeError(
      `weightDecay must be a non-negative finite number, got ${cfg.weightDecay}`,
    );
  }
  if (!(lr >= 0 && Number.isFinite(lr))) {
    throw new RangeError(`learning rate must be a non-negative finite number, got ${lr}`);
  }
}

/**
 * Applies one optimizer step in place to `weights`, `state.m`, `state.v` and
 * `state.step`, with gradient `grad` and learning rate `lr`:
 *
 *     t = state.step + 1
 *     m ← β1·m + (1−β1)·g          v ← β2·v + (1−β2)·g²
 *     m̂ = m / (1 − β1^t)           v̂ = v / (1 − β2^t)
 *     u = m̂ / (sqrt(v̂) + ϵ) + λ·w
 *     r = ‖w‖₂ / ‖u‖₂ if both > 0, else 1   (LAMB, decayed tensors only)
 *     w ← w − lr · r · u
 *
 * Tensors with `decay` false use λ = 0 and r = 1; AdamW uses r = 1 everywhere.
 * m and v are stored as float32 first; u is computed in float64 from the
 * stored m, v and the current w. For LAMB a decayed tensor takes two passes
 * (norms, then apply) and u is recomputed in the second pass from the same
 * inputs, so no full-size scratch buffer is allocated.
 */
export function optimizerStep(
  layout: ParamLayout,
  weights: Float32Array,
  grad: Float32Array,
  state: OptimizerState,
  lr: number,
  cfg: OptimizerConfig,
): StepStats {
  const n = layout.total;
  if (weights.length !== n || grad.length !== n || state.m.length !== n || state.v.length !== n) {
    throw new RangeError(
      `optimizer buffers must all have ${n} elements (weights ${weights.length}, grad ${grad.length}, m ${state.m.length}, v ${state.v.length})`,
    );
  }
  if (!Number.isSafeInteger(state.step) || state.step < 0) {
    throw new RangeError(`optimizer state step must be a non-negative integer, got ${state.step}`);
  }
  checkConfig(cfg, lr);
  const t = state.step + 1;
  const b1 = cfg.beta1, b2 = cfg.beta2, eps = cfg.eps;
  const c1 = 1 - b1, c2 = 1 - b2;
  const bc1 = 1 - Math.pow(b1, t), bc2 = 1 - Math.pow(b2, t);
  const m = state.m, v = state.v;
  const trustRatios = new Float64Array(layout.specs.length);
  let updateSq = 0;

  for (let s = 0; s < layout.specs.length; s++) {
    const spec = layout.specs[s];
    const start = spec.offset, end = spec.offset + spec.size;
    const lambda = spec.decay ? cfg.weightDecay : 0;
    const adapt = cfg.kind === "lamb" && spec.decay;

    if (!adapt) {
      // r = 1: one pass updates the moments and applies the step.
      trustRatios[s] = 1;
      for (let i = start; i < end; i++) {
        const g = grad[i];
        m[i] = b1 * m[i] + c1 * g;
        v[i] = b2 * v[i] + c2 * g * g;
        const w = weights[i];
        const d = lr * ((m[i] / bc1) / (Math.sqrt(v[i] / bc2) + eps) + lambda * w);
        updateSq += d * d;
        weights[i] = w - d;
      }
      continue;
    }
    // LAMB pass 1: update the moments, accumulate ‖w‖² and ‖u‖².
    let wSq = 0, uSq = 0;
    for (let i = start; i < end; i++) {
      const g = grad[i];
      m[i] = b1 * m[i] + c1 * g;
      v[i] = b2 * v[i] + c2 * g * g;
      const w = weights[i];
      const u = (m[i] / bc1) / (Math.sqrt(v[i] / bc2) + eps) + lambda * w;
      wSq += w * w;
      uSq += u * u;
    }
    const r = wSq > 0 && uSq > 0 ? Math.sqrt(wSq) / Math.sqrt(uSq) : 1;
    trustRatios[s] = r;
    // LAMB pass 2: recompute u from the stored moments (same bits) and apply.
    const scale = lr * r;
    for (let i = start; i < end; i++) {
      const w = weights[i];
      const d = scale * ((m[i] / bc1) / (Math.sqrt(v[i] / bc2) + eps) + lambda * w);
      updateSq += d * d;
      weights[i] = w - d;
    }
  }
  state.step = t;
  return { trustRatios, updateNorm: Math.sqrt(updateSq) };
}

const MAGIC = 0x534f4441; // "ADOS" read as a little-endian u32
const FORMAT_VERSION = 1;
const HEADER_BYTES = 16;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Serialises an optimizer state bit-exactly. Layout (little-endian):
 * bytes 0–3 magic "ADOS", 4–7 format version (1), 8–11 step (u32),
 * 12–15 element count n (u32), then m (n float32), then v (n float32).
 */
export function encodeOptimizerState(s: OptimizerState): Uint8Array {
  const n = s.m.length;
  if (s.v.length !== n) throw new RangeError(`m has ${n} elements but v has ${s.v.length}`);
  if (!Number.isSafeInteger(s.step) || s.step < 0 || s.step > 0xffffffff) {
    throw new RangeError(`optimizer step must be an integer in [0, 2^32), got ${s.step}`);
  }
  if (n > 0xffffffff) throw new RangeError(`optimizer state too large: ${n} elements`);
  if (!LITTLE_ENDIAN) throw new Error("optimizer state encoding needs a little-endian host");
  const out = new Uint8Array(HEADER_BYTES + 8 * n);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, FORMAT_VERSION, true);
  dv.setUint32(8, s.step, true);
  dv.setUint32(12, n, true);
  out.set(new Uint8Array(s.m.buffer, s.m.byteOffset, 4 * n), HEADER_BYTES);
  out.set(new Uint8Array(s.v.buffer, s.v.byteOffset, 4 * n), HEADER_BYTES + 4 * n);
  return out;
}

/**
 * Parses the output of {@link encodeOptimizerState}, checking the magic, the
 * format version, that the element count equals `total` and that the byte
 * length matches. Returns fresh (copied, aligned) arrays.
 */
export function decodeOptimizerState(bytes: Uint8Array, total: number): OptimizerState {
  if (bytes.byteLength < HEADER_BYTES) {
    throw new Error(
      `optimizer state: ${bytes.byteLength} bytes is shorter than the ${HEADER_BYTES}-byte header`,
    );
  }
  if (!LITTLE_ENDIAN) throw new Error("optimizer state decoding needs a little-endian host");
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = dv.getUint32(0, true);
  if (magic !== MAGIC) {
    throw new Error(`optimizer state: bad magic 0x${magic.toString(16)} (not an optimizer state)`);
  }
  const version = dv.getUint32(4, true);
  if (version !== FORMAT_VERSION) {
    throw new Error(
      `optimizer state: format version ${version} is not supported (expected ${FORMAT_VERSION})`,
    );
  }
  const step = dv.getUint32(8, true);
  const n = dv.getUint32(12, true);
  if (n !== total) {
    throw new Error(`optimizer state: holds ${n} parameters but the model has ${total}`);
  }
  const expected = HEADER_BYTES + 8 * n;
  if (bytes.byteLength !== expected) {
    throw new Error(
      `optimizer state: ${bytes.byteLength} bytes, expected ${expected} for ${n} parameters`,
    );
  }
  const m = new Float32Array(n), v = new Float32Array(n);
  const at = bytes.byteOffset + HEADER_BYTES;
  new Uint8Array(m.buffer).set(new Uint8Array(bytes.buffer, at, 4 * n));
  new Uint8Array(v.buffer).set(new Uint8Array(bytes.buffer, at + 4 * n, 4 * n));
  return { step, m, v };
}
