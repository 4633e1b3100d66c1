/**
 * The training engine: the model's forward and backward passes written out
 * explicitly (shared/engine/encoder.ts, heads.ts) over a {@link Device} — the
 * host device of shared/engine/devices/cpu/ (matrix products on the machine's
 * BLAS), or a GPU device. `EngineModel.gradient` computes what
 * `microBatchGradient` (shared/tfjs/gradient.ts) computes with tfjs, mode by mode
 * (docs/method.md, "One micro-batch gradient"):
 *
 * - off: one full pass (forward, backward to δ and every parameter).
 * - pgd K: K δ-only passes (no parameter gradients), each followed by the
 *   ascent step on δ, then one full pass at δ_K.
 * - freelb K: K full passes at δ_0 … δ_{K−1}, each followed by the ascent
 *   step; gradient and loss are the mean over the K passes.
 *
 * Dropout masks come from shared/method/dropout_mask.ts with the same seed and site
 * numbers as shared/tfjs/model.ts, and the random start of δ from
 * shared/method/adversary.ts's `initialDeltaHost`, so the result equals tfjs's
 * within float32 rounding. Buffers are made once per batch shape and reused;
 * a pass only enqueues kernels, and one read at its end brings the gradient
 * and the loss to the host.
 *
 * LoRA ({@link EngineModel.setLora}, shared/model/lora.ts): the weights of
 * {@link EngineModel.setWeights} become the frozen base, adapters and the head
 * come from a separate trainable buffer, and `gradient` returns the gradient
 * of that buffer only; no gradient product of a frozen matrix is run.
 *
 * @module
 */
import { dropoutSite } from "../method/dropout_mask.ts";
import type { GradientResult, GradientTask } from "../compute/task.ts";
import type { HostBatch } from "../model/batch.ts";
import { checkLabels, maskedTokens, positionIds } from "../model/targets.ts";
import type { ModelConfig } from "../model/config.ts";
import { layoutObjective, type ParamLayout } from "../model/param_layout.ts";
import { mixSeed } from "../method/rng.ts";
import {
  type BatchIndex,
  type Device,
  type KernelProfile,
  type MaskRows,
  profiled,
} from "./device.ts";
import {
  encoderBackward,
  EncoderBuffers,
  encoderForward,
  type EncoderGrads,
  encoderGrads,
  type EncoderMasks,
  type EncoderWeights,
  encoderWeights,
} from "./encoder.ts";
import { Arena } from "./arena.ts";
import type { LoraPlan } from "../model/lora.ts";
import { type LoraBuffers, loraBuffers, type LoraWeights, loraWeights } from "./lora.ts";
import {
  classifierBackward,
  ClassifierBuffers,
  classifierForward,
  type ClassifierGrads,
  classifierLoss,
  type ClassifierMasks,
  type ClassifierParams,
  classifierParams,
  type ClassifierTargets,
  mlmBackward,
  MlmBuffers,
  mlmForwardLoss,
  type MlmParams,
  mlmParams,
  type MlmTargets,
} from "./heads.ts";

/** The dropout masks of one batch shape, and which site each buffer holds. */
interface Masks<T> {
  readonly enc: EncoderMasks<T>;
  readonly cls: ClassifierMasks<T>;
  readonly sites: readonly {
    readonly site: number;
    readonly buf: T;
    readonly kind: "hidden" | "attention" | "lora";
    readonly rows?: MaskRows;
  }[];
}

/** Buffers of one batch shape: activations, dropout masks, δ, loss (views of one arena). */
interface Workspace<T> {
  readonly enc: EncoderBuffers<T>;
  readonly cls: ClassifierBuffers<T>;
  readonly delta: T;
  readonly loss: T;
  readonly masks: Masks<T>;
  /** The LoRA adapters' buffers (a LoRA model only). */
  readonly lora: LoraBuffers<T> | null;
}

/** Dropout rates of a task. */
type DropoutRates = GradientTask["dropout"];

/** The targets of a labelled batch, for either objective. */
type Targets =
  | { readonly kind: "classify"; readonly t: ClassifierTargets }
  | { readonly kind: "mlm"; readonly t: MlmTargets };

/**
 * Where a pass's parameter gradients go: the encoder's (null for a LoRA model:
 * the base is frozen), the adapters' (LoRA only) and the head's.
 */
type PassGrads<T> = {
  enc: EncoderGrads<T> | null;
  lora: LoraWeights<T> | null;
  head: ClassifierGrads<T> | MlmParams<T>;
};

/** A LoRA model's adapters on the device: the plan, the trainable buffer and its views. */
interface LoraState<T> {
  readonly plan: LoraPlan;
  /** The trainable buffer on the device (the caller's array on a host device). */
  readonly buf: T;
  readonly w: LoraWeights<T>;
  /** Distinguishes the workspaces of one plan from another's. */
  readonly id: number;
}

/** What a mode's passes need of one task, bound to its batch, buffers and adversary. */
interface ModeRun<T> {
  /** One pass at δ (null: clean), gradients into `grads` (null: δ only) scaled by `weight`; returns ∂/∂δ. */
  pass(delta: T | null, grads: PassGrads<T> | null, weight: number): T;
  /** The ascent step and projection on δ in place, from its gradient. */
  ascend(delta: T, g: T): void;
  /** Restarts the loss the passes add to. */
  resetLoss(): void;
}

/**
 * Mode pgd: K δ-only passes, each followed by the ascent step, then one full
 * pass at δ_K (whose loss is the result's). Returns the adversary's time.
 */
function pgdPasses<T>(
  run: ModeRun<T>,
  delta: T,
  grads: PassGrads<T>,
  steps: number,
  t0: number,
): number {
  for (let k = 0; k < steps; k++) run.ascend(delta, run.pass(delta, null, 1));
  const adversaryMs = performance.now() - t0;
  run.resetLoss(); // the loss is the final pass's
  run.pass(delta, grads, 1);
  return adversaryMs;
}

/**
 * Mode freelb: K full passes at δ_0 … δ_{K−1}, each weighted 1/K and followed
 * (but the last) by the ascent step. Returns the adversary's time: all of it.
 */
function freelbPasses<T>(
  run: ModeRun<T>,
  delta: T,
  grads: PassGrads<T>,
  steps: number,
  t0: number,
) {
  if (!(steps >= 1)) throw new Error(`freelb needs at least one step, got ${steps}`);
  for (let k = 0; k < steps; k++) {
    const g = run.pass(delta, grads, 1 / steps);
    if (k < steps - 1) run.ascend(delta, g);
  }
  return performance.now() - t0; // in FreeLB every pass is both
}

/** Options of {@link EngineModel}. */
export interface EngineOptions {
  /** Time every kernel into this profile (by `clock`, default wall time). */
  readonly profile?: KernelProfile;
  readonly clock?: () => number;
  /** Compute the last layer at every position even under a classifier (default false). */
  readonly fullLastLayer?: boolean;
}

/** A model on a device: weights in layout order, buffers reused across calls. */
export class EngineModel<T> {
  readonly #dev: Device<T>;
  readonly #mlm: boolean;
  readonly #firstOnly: boolean;
  readonly #packed: { w: T; b: T }[];
  /** Workspaces by shape and dropouts on: views of #arena (cleared when it grows). */
  readonly #shapes = new Map<string, Workspace<T>>();
  readonly #arena: Arena<T>;
  #mlmBuffers: MlmBuffers<T> | null = null;
  /** The weights on the device (the caller's array itself on a host device). */
  #weights: T | null = null;
  /** The gradient buffer of a device that is not host memory (made once). */
  #grad: T | null = null;
  #enc: EncoderWeights<T> | null = null;
  #cls: ClassifierParams<T> | null = null;
  #mlmW: MlmParams<T> | null = null;
  #lora: LoraState<T> | null = null;
  /** The trainable gradient buffer of a device that is not host memory. */
  #loraGrad: T | null = null;
  #loraIds = 0;

  /**
   * Options: `profile` times every kernel into it by `clock` (for profiling);
   * `fullLastLayer` computes the last layer at every position even under a
   * classifier (which reads only the first; by default those rows alone are
   * computed after the last attention: the same numbers, less work).
   */
  constructor(
    dev: Device<T>,
    readonly config: ModelConfig,
    readonly layout: ParamLayout,
    options: EngineOptions = {},
  ) {
    this.#dev = options.profile ? profiled(dev, options.profile, options.clock) : dev;
    this.#mlm = layoutObjective(layout) === "mlm";
    this.#firstOnly = !this.#mlm && !options.fullLastLayer;
    this.#arena = new Arena(this.#dev);
    const H = config.hiddenSize;
    this.#packed = Array.from({ length: config.numLayers }, () => ({
      w: this.#dev.alloc(3 * H * H),
      b: this.#dev.alloc(3 * H),
    }));
  }

  /**
   * Sets the weights (flat, in layout order). A host device keeps the array by
   * reference, so do not change it mid-call; another device uploads a copy.
   */
  setWeights(flat: Float32Array): void {
    if (flat.length !== this.layout.total) {
      throw new Error(`setWeights: expected ${this.layout.total} values, got ${flat.length}`);
    }
    const dev = this.#dev, c = this.config, l = this.layout;
    let w: T;
    if (dev.alias) w = dev.alias(flat);
    else {
      w = this.#weights ?? dev.alloc(l.total);
      dev.write(w, flat);
    }
    this.#enc = encoderWeights(dev, c, l, w, flat, this.#packed);
    this.#weights = w;
    if (this.#mlm) this.#mlmW = mlmParams(dev, l, w);
    else this.#cls = this.#headWeights();
  }

  /** The LoRA plan in use, or null (full fine-tuning). */
  get lora(): LoraPlan | null {
    return this.#lora?.plan ?? null;
  }

  /**
   * Turns LoRA on: the weights of {@link setWeights} (base layout) become the
   * frozen base; adapters and head come from `trainable` (layout
   * `plan.layout`: shared/model/lora.ts `loraPlan`, `initTrainable`), and
   * {@link gradient} returns the gradient of `trainable` only (base-weight
   * gradient products are skipped). Call again with new values each step (a
   * host device keeps the array by reference; another uploads a copy); `null`
   * turns LoRA off. A classification layout only.
   */
  setLora(plan: LoraPlan | null, trainable?: Float32Array): void {
    const dev = this.#dev;
    if (!plan) {
      this.#dropLora();
      if (this.#weights && !this.#mlm) this.#cls = this.#headWeights();
      return;
    }
    if (this.#mlm) throw new Error("setLora: LoRA needs a classification layout, not MLM");
    if (!trainable || trainable.length !== plan.layout.total) {
      throw new Error(
        `setLora: expected ${plan.layout.total} trainable values, got ${trainable?.length}`,
      );
    }
    const same = this.#lora?.plan === plan;
    if (!same) this.#dropLora();
    let buf: T;
    if (dev.alias) buf = dev.alias(trainable);
    else {
      buf = this.#lora?.buf ?? dev.alloc(plan.layout.total);
      dev.write(buf, trainable);
    }
    const id = same ? this.#lora!.id : ++this.#loraIds;
    this.#lora = { plan, buf, w: loraWeights(dev, plan, buf), id };
    if (!same) this.#shapes.clear(); // workspaces hold the adapters' buffers
    if (this.#weights) this.#cls = this.#headWeights();
  }

  /** Frees the LoRA buffers of a device that is not host memory. */
  #dropLora(): void {
    const dev = this.#dev;
    if (this.#lora && !dev.alias) dev.release(this.#lora.buf);
    if (this.#loraGrad) dev.release(this.#loraGrad);
    if (this.#lora) this.#shapes.clear();
    this.#lora = this.#loraGrad = null;
  }

  /** The classifier's weights: the base's, with a LoRA model's trained head tensors instead. */
  #headWeights(): ClassifierParams<T> {
    const base = classifierParams(this.#dev, this.config, this.layout, this.#weights!);
    const lora = this.#lora;
    if (!lora) return base;
    const names = this.#headNames();
    const pick = (key: keyof ClassifierParams<T>) => {
      const spec = lora.plan.layout.byName.get(names[key]);
      return spec ? this.#dev.view(lora.buf, spec.offset, spec.size) : base[key];
    };
    return {
      denseW: pick("denseW"),
      denseB: pick("denseB"),
      outW: pick("outW"),
      outB: pick("outB"),
    };
  }

  /** The head tensors' names by role. */
  #headNames(): Record<keyof ClassifierParams<T>, string> {
    return this.config.modelType === "bert"
      ? {
        denseW: "bert.pooler.dense.weight",
        denseB: "bert.pooler.dense.bias",
        outW: "classifier.weight",
        outB: "classifier.bias",
      }
      : {
        denseW: "classifier.dense.weight",
        denseB: "classifier.dense.bias",
        outW: "classifier.out_proj.weight",
        outB: "classifier.out_proj.bias",
      };
  }

  /** Views of the trainable gradient `flat`: adapters and head (frozen pooler: null). */
  #loraGrads(lora: LoraState<T>, flat: T): PassGrads<T> {
    const names = this.#headNames(), dev = this.#dev;
    const P = (key: keyof ClassifierParams<T>) => {
      const spec = lora.plan.layout.byName.get(names[key]);
      return spec ? dev.view(flat, spec.offset, spec.size) : null;
    };
    const head: ClassifierGrads<T> = {
      denseW: P("denseW"),
      denseB: P("denseB"),
      outW: P("outW")!,
      outB: P("outB")!,
    };
    return { enc: null, lora: loraWeights(dev, lora.plan, flat), head };
  }

  /** Frees the device buffers; the model needs {@link setWeights} again before use. */
  dispose(): void {
    const dev = this.#dev;
    this.#arena.dispose();
    this.#shapes.clear();
    for (const p of this.#packed) {
      dev.release(p.w);
      dev.release(p.b);
    }
    this.#packed.length = 0;
    if (this.#mlmBuffers) this.#mlmBuffers.dispose();
    if (this.#weights && !dev.alias) dev.release(this.#weights);
    if (this.#grad) dev.release(this.#grad);
    this.#dropLora();
    this.#mlmBuffers =
      this.#weights =
      this.#grad =
      this.#enc =
      this.#cls =
      this.#mlmW =
        null;
  }

  /**
   * g_j, the mean loss, n_j and timings: the same contract as
   * `microBatchGradient`. The gradient goes into `out` when given (zeroed
   * first, then returned as `grad`): a caller done with each result before
   * the next call saves the page faults of a fresh 4-byte-per-parameter array.
   * With LoRA on ({@link setLora}) the gradient is that of the trainable
   * buffer (layout `plan.layout`), and `out` must have its length.
   */
  async gradient(task: GradientTask, out?: Float32Array): Promise<GradientResult> {
    const t0 = performance.now();
    const enc = this.#needWeights();
    const { batch, adversary: adv } = task;
    const index = this.#index(batch);
    const targets = this.#targets(batch.labels, batch);
    const lora = this.#lora;
    const loraDrop = lora ? lora.plan.lora.dropout : 0;
    const ws = this.#workspace(batch.size, batch.seqLen, task.dropout, loraDrop);
    const masks = this.#masks(
      ws,
      mixSeed(task.seed, task.step, task.index),
      task.dropout,
      loraDrop,
    );
    const dev = this.#dev, H = this.config.hiddenSize;
    const total = lora ? lora.plan.layout.total : this.layout.total;
    if (out && out.length !== total) {
      throw new Error(
        `gradient: out holds ${out.length} values, the ${lora ? "trainable " : ""}layout ${total}`,
      );
    }
    const host = out ?? new Float32Array(total);
    const grad = this.#gradBuffer(host);
    dev.fill(grad, 0);
    let grads: PassGrads<T>;
    if (lora) grads = this.#loraGrads(lora, grad);
    else {
      const head = this.#mlm
        ? mlmParams(dev, this.layout, grad)
        : classifierParams(dev, this.config, this.layout, grad);
      grads = { enc: encoderGrads(dev, this.config, this.layout, grad), lora: null, head };
    }
    const run: ModeRun<T> = {
      pass: (delta, g, weight) => this.#pass(ws, masks, index, targets, enc, delta, g, weight),
      ascend: (delta, g) => dev.ascend(delta, g, index, H, adv),
      resetLoss: () => dev.fill(ws.loss, 0),
    };
    const start = () => (dev.initDelta(ws.delta, index, H, adv.init, task), ws.delta);
    run.resetLoss();
    let adversaryMs = 0;
    if (adv.mode === "pgd") adversaryMs = pgdPasses(run, start(), grads, adv.steps, t0);
    else if (adv.mode === "freelb") adversaryMs = freelbPasses(run, start(), grads, adv.steps, t0);
    else run.pass(null, grads, 1);
    const [g, loss] = await dev.read([grad, ws.loss], [host]);
    return {
      grad: g,
      loss: loss[0],
      count: batch.size,
      timings: { computeMs: performance.now() - t0, adversaryMs },
    };
  }

  /** Logits [size·numLabels] without dropout or δ: the same as `predictLogits`. */
  async logits(batch: HostBatch): Promise<Float32Array> {
    const enc = this.#needWeights();
    if (this.#mlm) throw new Error("EngineModel.logits: an MLM layout has no classifier head");
    const index = this.#index(batch);
    const none = { hidden: 0, attention: 0 };
    const ws = this.#workspace(batch.size, batch.seqLen, none, 0);
    const masks = this.#masks(ws, 0, none, 0);
    const dev = this.#dev, config = this.config;
    encoderForward(
      {
        dev,
        config,
        w: enc,
        bufs: ws.enc,
        masks: masks.enc,
        batch: index,
        lora: this.#encLora(ws),
      },
      null,
      false,
    );
    classifierForward({ dev, config, w: this.#cls!, bufs: ws.cls, masks: masks.cls }, ws.enc.last);
    const [logits] = await this.#dev.read([ws.cls.logits]);
    return logits;
  }

  /**
   * One pass: forward, loss (weight·mean added to ws.loss) and backward.
   * Parameter gradients accumulate into `grads` (scaled by `weight`) unless
   * it is null; returns ∂(weight·loss)/∂δ.
   */
  #pass(
    ws: Workspace<T>,
    masks: Masks<T>,
    index: BatchIndex,
    targets: Targets,
    enc: EncoderWeights<T>,
    delta: T | null,
    grads: PassGrads<T> | null,
    weight: number,
  ): T {
    const dev = this.#dev, config = this.config;
    const lora = this.#encLora(ws);
    const encoder = { dev, config, w: enc, bufs: ws.enc, masks: masks.enc, batch: index, lora };
    encoderForward(encoder, delta, true);
    const dLast = ws.enc.dLast;
    if (targets.kind === "mlm") {
      const bufs = this.#mlmHead(targets.t.positions.length);
      const mlm = { dev, config, w: this.#mlmW!, word: enc.word, bufs, targets: targets.t };
      mlmForwardLoss(mlm, ws.enc.last, ws.loss, weight, true);
      const g = grads ? grads.head as MlmParams<T> : null;
      mlmBackward(mlm, dLast, g, grads?.enc?.word ?? null);
    } else {
      const cls = { dev, config, w: this.#cls!, bufs: ws.cls, masks: masks.cls };
      classifierForward(cls, ws.enc.last);
      classifierLoss(cls, targets.t, ws.loss, weight, true);
      const g = grads ? grads.head as ClassifierGrads<T> : null;
      classifierBackward(cls, dLast, g);
    }
    return encoderBackward(encoder, grads?.enc ?? null, grads?.lora ?? null);
  }

  /** The adapters of a pass over workspace `ws`, or null without LoRA. */
  #encLora(ws: Workspace<T>) {
    const lora = this.#lora;
    return lora && ws.lora ? { w: lora.w, bufs: ws.lora } : null;
  }

  #needWeights(): EncoderWeights<T> {
    if (!this.#weights || !this.#enc) throw new Error("EngineModel: call setWeights first");
    return this.#enc;
  }

  /** Where the gradient is summed: `host` itself on a host device, else one device buffer. */
  #gradBuffer(host: Float32Array): T {
    const dev = this.#dev;
    if (dev.alias) return dev.alias(host);
    if (this.#lora) return this.#loraGrad ??= dev.alloc(this.#lora.plan.layout.total);
    return this.#grad ??= dev.alloc(this.layout.total);
  }

  /** The batch's integer side, checked against the model's tables. */
  #index(batch: HostBatch): BatchIndex {
    const { size, seqLen, inputIds, tokenTypeIds, attentionMask } = batch;
    const N = size * seqLen, c = this.config;
    if (!(size >= 1 && seqLen >= 1)) throw new Error(`batch: empty shape [${size}, ${seqLen}]`);
    if (inputIds.length !== N || tokenTypeIds.length !== N || attentionMask.length !== N) {
      throw new Error(`batch: ids, token types and mask must each hold ${size}×${seqLen} values`);
    }
    const positions = positionIds(c, batch);
    for (let n = 0; n < N; n++) {
      if (!(inputIds[n] >= 0 && inputIds[n] < c.vocabSize)) {
        throw new Error(
          `batch: token id ${inputIds[n]} is outside the vocabulary (${c.vocabSize})`,
        );
      }
      if (!(tokenTypeIds[n] >= 0 && tokenTypeIds[n] < c.typeVocabSize)) {
        throw new Error(`batch: token type ${tokenTypeIds[n]} is not below ${c.typeVocabSize}`);
      }
      if (positions[n] >= c.maxPositions) {
        throw new Error(`batch: position ${positions[n]} is not below ${c.maxPositions}`);
      }
    }
    return { size, seqLen, inputIds, tokenTypeIds, positionIds: positions, attentionMask };
  }

  #targets(labels: Float32Array, batch: HostBatch): Targets {
    checkLabels(labels, batch, this.#mlm ? "mlm" : "classify");
    if (this.#mlm) return { kind: "mlm", t: maskedTokens(labels) };
    return {
      kind: "classify",
      t: { classes: Int32Array.from(labels), scores: labels },
    };
  }

  /**
   * The buffers for a batch shape and which dropouts are on (the LoRA
   * adapters' rate `loraRate`; made on first use, then reused).
   */
  #workspace(size: number, seqLen: number, rates: DropoutRates, loraRate: number): Workspace<T> {
    const hidden = rates.hidden > 0, attention = rates.attention > 0, loraOn = loraRate > 0;
    // #firstOnly is fixed per model; the LoRA plan's id names its adapters' buffers.
    const key = `${size}x${seqLen}x${hidden}x${attention}x${this.#lora?.id ?? 0}x${loraOn}`;
    const generation = this.#arena.generation;
    let ws = this.#shapes.get(key);
    if (!ws) {
      ws = this.#arena.build((dev) =>
        this.#buildWorkspace(dev, size, seqLen, hidden, attention, loraOn)
      );
      if (this.#arena.generation !== generation) this.#shapes.clear(); // their views are stale
      this.#shapes.set(key, ws);
    }
    return ws;
  }

  #buildWorkspace(
    dev: Device<T>,
    size: number,
    seqLen: number,
    hiddenOn: boolean,
    attentionOn: boolean,
    loraDropout: boolean,
  ): Workspace<T> {
    const c = this.config, H = c.hiddenSize, nh = c.numHeads, B = size, L = seqLen;
    const enc = new EncoderBuffers(dev, c, size, seqLen, attentionOn, this.#firstOnly);
    const sites: Masks<T>["sites"][number][] = [];
    const mask = (site: number, n: number, kind: "hidden" | "attention", rows?: MaskRows) => {
      if (!(kind === "hidden" ? hiddenOn : attentionOn)) return null;
      const buf = dev.alloc(n);
      sites.push({ site, buf, kind, rows });
      return buf;
    };
    // Site numbers of shared/method/dropout_mask.ts; a first-position-only layer holds compact rows.
    const probRows = { starts: Int32Array.from({ length: B * nh }, (_, i) => i * L * L), width: L };
    const hiddenRows = { starts: Int32Array.from({ length: B }, (_, b) => b * L * H), width: H };
    const layers = enc.layers.map((a, layer) => {
      const attention = dropoutSite({ at: "attention", layer });
      const attentionOut = dropoutSite({ at: "attentionOutput", layer });
      const ffnOut = dropoutSite({ at: "ffnOutput", layer });
      return a.first
        ? {
          attention: mask(attention, B * nh * L, "attention", probRows),
          attentionOut: mask(attentionOut, B * H, "hidden", hiddenRows),
          ffnOut: mask(ffnOut, B * H, "hidden", hiddenRows),
        }
        : {
          attention: mask(attention, B * nh * L * L, "attention"),
          attentionOut: mask(attentionOut, B * L * H, "hidden"),
          ffnOut: mask(ffnOut, B * L * H, "hidden"),
        };
    });
    const bert = c.modelType === "bert";
    const plan = this.#lora?.plan;
    const lora = plan ? loraBuffers(dev, c, plan, B, L, enc.lastIsFirstRows, loraDropout) : null;
    for (const s of lora?.sites ?? []) sites.push({ ...s, kind: "lora" });
    const masks: Masks<T> = {
      enc: { embedding: mask(dropoutSite({ at: "embedding" }), B * L * H, "hidden"), layers },
      cls: this.#mlm ? { pre: null, post: null } : {
        pre: bert ? null : mask(dropoutSite({ at: "head", index: 0 }), B * H, "hidden"),
        post: mask(dropoutSite({ at: "head", index: bert ? 0 : 1 }), B * H, "hidden"),
      },
      sites,
    };
    return {
      enc,
      cls: new ClassifierBuffers(dev, c, size, seqLen, enc.lastIsFirstRows),
      delta: dev.alloc(B * L * H),
      loss: dev.alloc(1),
      masks,
      lora,
    };
  }

  /** Fills the workspace's dropout masks for the task seeded `seed`. */
  #masks(ws: Workspace<T>, seed: number, rates: DropoutRates, loraRate: number): Masks<T> {
    for (const s of ws.masks.sites) {
      const rate = s.kind === "hidden"
        ? rates.hidden
        : s.kind === "attention"
        ? rates.attention
        : loraRate;
      this.#dev.dropoutMask(s.buf, seed, s.site, rate, s.rows);
    }
    return ws.masks;
  }

  #mlmHead(M: number): MlmBuffers<T> {
    if (!this.#mlmBuffers || this.#mlmBuffers.capacity < M) {
      this.#mlmBuffers?.dispose(); // before allocating the new ones
      this.#mlmBuffers = null;
      this.#mlmBuffers = new MlmBuffers(this.#dev, this.config, Math.ceil(M / 64) * 64);
    }
    return this.#mlmBuffers;
  }
}
