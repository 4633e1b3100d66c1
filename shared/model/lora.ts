/**
 * LoRA (low-rank adapters, Hu et al. 2021) as Hugging Face PEFT defines it, on
 * the encoder's linear layers: an adapted layer computes
 *
 *     y = x·Wᵀ + b + (drop(x)·Aᵀ)·Bᵀ·(α/r)        A [r, in], B [out, r]
 *
 * with W and b frozen. What trains is a separate flat buffer, the
 * *trainable* buffer, laid out by {@link loraPlan}: every `lora_A` / `lora_B`
 * (layer by layer, module by module in {@link LORA_MODULES} order, A before B)
 * and then the head PEFT saves for sequence classification (`modules_to_save`:
 * `classifier`, and the BERT pooler too when the checkpoint had none). The
 * frozen base keeps the ordinary layout of shared/model/param_layout.ts; its
 * head tensors are then unused (the trainable buffer's copies win).
 *
 * Tensor names in the trainable layout are the base model's module names plus
 * `.lora_A.weight` / `.lora_B.weight` (PEFT's keys without its
 * `base_model.model.` prefix, shared/io/peft.ts), and the head's ordinary names.
 *
 * @module
 */
import type { ModelConfig } from "./config.ts";
import { adapts, decays, type ParamLayout, paramLayout, type ParamSpec } from "./param_layout.ts";
import { dropoutSite } from "../method/dropout_mask.ts";
import { fnv1a } from "../method/hash32.ts";
import { mixSeed, Rng } from "../method/rng.ts";

/**
 * The linear layers of an encoder layer LoRA can adapt, by their module path
 * inside `<model>.encoder.layer.N.`: the attention's query, key and value, the
 * attention output, the feed-forward's two layers. Index i of this list is
 * the module's number in the LoRA dropout sites ({@link loraDropoutSite}).
 */
export const LORA_MODULES = [
  "attention.self.query",
  "attention.self.key",
  "attention.self.value",
  "attention.output.dense",
  "intermediate.dense",
  "output.dense",
] as const;

/** One of {@link LORA_MODULES}: an adaptable linear layer of every encoder layer. */
export type LoraModule = typeof LORA_MODULES[number];

/**
 * Every module of {@link LORA_MODULES} in PEFT's `target_modules` spelling (the
 * attention's query, key and value by their last name): a configuration that
 * adapts every linear layer of every encoder layer.
 */
export const ALL_TARGET_MODULES: readonly string[] = LORA_MODULES.map((m) =>
  m.startsWith("attention.self.") ? m.slice("attention.self.".length) : m
);

/** A LoRA configuration, in PEFT's terms (`LoraConfig`). */
export interface LoraConfig {
  /** The rank r (PEFT `r`). */
  readonly r: number;
  /** α (PEFT `lora_alpha`): the low-rank term is scaled by α/r. */
  readonly alpha: number;
  /** Dropout on the adapter's input (PEFT `lora_dropout`), in training passes only. */
  readonly dropout: number;
  /**
   * PEFT's `target_modules`: each entry names every module whose full name
   * equals it or ends with `.` + it (so `query` is every layer's
   * `attention.self.query`, and `output.dense` is both `attention.output.dense`
   * and the feed-forward's `output.dense`, as in PEFT).
   */
  readonly targetModules: readonly string[];
}

/** PEFT's defaults for BERT / RoBERTa: r 8, α 8, no dropout, query and value. */
export const DEFAULT_LORA: LoraConfig = {
  r: 8,
  alpha: 8,
  dropout: 0,
  targetModules: ["query", "value"],
};

/**
 * The dropout site of the adapter on `module` of layer `layer`
 * (shared/method/dropout_mask.ts `dropoutSite`, slot = the module's index in
 * {@link LORA_MODULES}). Its mask covers the adapter's whole input [B, L, in].
 */
export function loraDropoutSite(layer: number, module: LoraModule): number {
  return dropoutSite({ at: "lora", layer, slot: LORA_MODULES.indexOf(module) });
}

/** One adapted linear layer of one encoder layer. */
export interface LoraAdapterSpec {
  readonly layer: number;
  readonly module: LoraModule;
  /** The adapted module's full name, e.g. `bert.encoder.layer.0.attention.self.query`. */
  readonly name: string;
  readonly inDim: number;
  readonly outDim: number;
  /** lora_A [r, in] and lora_B [out, r] in the trainable layout. */
  readonly a: ParamSpec;
  readonly b: ParamSpec;
  /** The frozen weight [out, in] and bias the adapter adds to (base layout names). */
  readonly weight: string;
  readonly bias: string;
}

/** A {@link LoraConfig} resolved against a model: which layers, the trainable layout. */
export interface LoraPlan {
  readonly lora: LoraConfig;
  /** The adapted modules of every layer, in {@link LORA_MODULES} order. */
  readonly modules: readonly LoraModule[];
  /** α/r. */
  readonly scale: number;
  /** The trainable buffer's layout: the adapters, then the head tensors. */
  readonly layout: ParamLayout;
  /** Every adapter, in layout order. */
  readonly adapters: readonly LoraAdapterSpec[];
  /** The head tensors trained in full (base-layout names), in layout order. */
  readonly head: readonly string[];
  /** PEFT's `modules_to_save`: `classifier`, plus `pooler` when the pooler trains. */
  readonly modulesToSave: readonly string[];
  /** Whether the BERT pooler is trained (a checkpoint without one: it starts fresh). */
  readonly trainPooler: boolean;
}

/** Options of {@link loraPlan}. */
export interface LoraPlanOptions {
  /**
   * Train the BERT pooler in full too (PEFT `modules_to_save` gets `pooler`):
   * for a checkpoint that had none, whose pooler is initialised fresh.
   * Ignored for RoBERTa, whose head (`classifier.dense`, `classifier.out_proj`)
   * trains whole anyway.
   */
  readonly trainPooler?: boolean;
}

/** Checks r, α and dropout; an error names the field. */
export function checkLoraConfig(lora: LoraConfig): void {
  if (!(Number.isSafeInteger(lora.r) && lora.r >= 1)) {
    throw new Error(`LoRA r must be a positive integer, got ${lora.r}`);
  }
  if (!(Number.isFinite(lora.alpha) && lora.alpha > 0)) {
    throw new Error(`LoRA lora_alpha must be a positive number, got ${lora.alpha}`);
  }
  if (!(lora.dropout >= 0 && lora.dropout < 1)) {
    throw new Error(`LoRA lora_dropout must be in [0, 1), got ${lora.dropout}`);
  }
  if (!Array.isArray(lora.targetModules) || lora.targetModules.length === 0) {
    throw new Error("LoRA target_modules must name at least one module");
  }
}

/** Every linear module of the model's classification form, by full name, and its kind. */
function linearModules(config: ModelConfig): { name: string; module: LoraModule | null }[] {
  const p = config.modelType, out: { name: string; module: LoraModule | null }[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    for (const m of LORA_MODULES) out.push({ name: `${p}.encoder.layer.${l}.${m}`, module: m });
  }
  const head = p === "bert"
    ? ["bert.pooler.dense", "classifier"]
    : ["classifier.dense", "classifier.out_proj"];
  for (const name of head) out.push({ name, module: null });
  return out;
}

/** PEFT's rule for a `target_modules` entry: the full name, or a suffix after a dot. */
function peftMatches(name: string, key: string): boolean {
  return name === key || name.endsWith(`.${key}`);
}

/**
 * The encoder modules `targetModules` names under PEFT's rule, in
 * {@link LORA_MODULES} order, for every layer alike. An entry that names no
 * linear module of the model, that names a head module (they train in full),
 * or that picks a module in some layers only, is an error naming the entry.
 */
export function resolveTargets(
  config: ModelConfig,
  targetModules: readonly string[],
): LoraModule[] {
  const all = linearModules(config);
  const chosen = new Set<LoraModule>();
  for (const key of targetModules) {
    if (typeof key !== "string" || key.length === 0) {
      throw new Error(`target_modules: ${JSON.stringify(key)} is not a module name`);
    }
    const hits = all.filter((m) => peftMatches(m.name, key));
    if (hits.length === 0) {
      throw new Error(
        `target_modules: "${key}" matches no linear module of this ${config.modelType} model ` +
          `(adaptable: ${LORA_MODULES.join(", ")})`,
      );
    }
    const head = hits.find((m) => m.module === null);
    if (head) {
      throw new Error(
        `target_modules: "${key}" matches the head module ${head.name}, which trains in full ` +
          `(modules_to_save); adaptmesh adapts encoder layers only`,
      );
    }
    for (const h of hits) chosen.add(h.module!);
  }
  // A per-layer entry ("layer.0.output.dense") must still cover every layer.
  for (const m of chosen) {
    for (let l = 0; l < config.numLayers; l++) {
      const name = `${config.modelType}.encoder.layer.${l}.${m}`;
      if (!targetModules.some((k) => peftMatches(name, k))) {
        throw new Error(
          `target_modules: ${m} is adapted in some layers but not in layer ${l}; ` +
            `adaptmesh adapts the same modules in every layer`,
        );
      }
    }
  }
  return LORA_MODULES.filter((m) => chosen.has(m));
}

/**
 * `target_modules` for PEFT that name exactly `modules`: the short names
 * (`query`, `key`, `value`, `attention.output.dense`, `intermediate.dense`),
 * and the feed-forward output as `output.dense` when the attention output is
 * adapted too, else as `layer.N.output.dense` per layer (PEFT's bare
 * `output.dense` would also match the attention output).
 */
export function peftTargetModules(config: ModelConfig, modules: readonly LoraModule[]): string[] {
  const out: string[] = [];
  const has = new Set(modules);
  for (const m of LORA_MODULES) {
    if (!has.has(m)) continue;
    if (m.startsWith("attention.self.")) out.push(m.slice("attention.self.".length));
    else if (m !== "output.dense") out.push(m);
    else if (has.has("attention.output.dense")) out.push(m);
    else for (let l = 0; l < config.numLayers; l++) out.push(`layer.${l}.output.dense`);
  }
  return out;
}

/** The head tensors trained in full, base-layout names in layout order. */
function headTensors(config: ModelConfig, trainPooler: boolean): string[] {
  if (config.modelType === "roberta") {
    return [
      "classifier.dense.weight",
      "classifier.dense.bias",
      "classifier.out_proj.weight",
      "classifier.out_proj.bias",
    ];
  }
  const pooler = trainPooler ? ["bert.pooler.dense.weight", "bert.pooler.dense.bias"] : [];
  return [...pooler, "classifier.weight", "classifier.bias"];
}

/**
 * Resolves `lora` against the model `config` (classification form): which
 * modules of every layer carry an adapter, α/r, and the trainable layout.
 */
export function loraPlan(
  config: ModelConfig,
  lora: LoraConfig,
  opts: LoraPlanOptions = {},
): LoraPlan {
  checkLoraConfig(lora);
  const modules = resolveTargets(config, lora.targetModules);
  const trainPooler = config.modelType === "bert" && (opts.trainPooler ?? false);
  const H = config.hiddenSize, I = config.intermediateSize, r = lora.r;
  const specs: ParamSpec[] = [];
  let offset = 0;
  const add = (name: string, shape: number[]) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const spec: ParamSpec = {
      name,
      shape,
      offset,
      size,
      decay: decays(name),
      adapt: adapts(name),
    };
    specs.push(spec);
    offset += size;
    return spec;
  };
  const adapters: LoraAdapterSpec[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    for (const module of modules) {
      const name = `${config.modelType}.encoder.layer.${l}.${module}`;
      const inDim = module === "output.dense" ? I : H;
      const outDim = module === "intermediate.dense" ? I : H;
      const a = add(`${name}.lora_A.weight`, [r, inDim]);
      const b = add(`${name}.lora_B.weight`, [outDim, r]);
      adapters.push({
        layer: l,
        module,
        name,
        inDim,
        outDim,
        a,
        b,
        weight: `${name}.weight`,
        bias: `${name}.bias`,
      });
    }
  }
  const head = headTensors(config, trainPooler);
  const baseLayout = paramLayout(config);
  for (const name of head) add(name, [...baseLayout.byName.get(name)!.shape]);
  return {
    lora,
    modules,
    scale: lora.alpha / lora.r,
    layout: { specs, byName: new Map(specs.map((s) => [s.name, s])), total: offset },
    adapters,
    head,
    modulesToSave: trainPooler ? ["classifier", "pooler"] : ["classifier"],
    trainPooler,
  };
}

/**
 * The trainable buffer at step 0, as PEFT initialises it: every lora_A
 * Kaiming-uniform with a = √5 (`reset_lora_parameters`: U(−1/√in, 1/√in)),
 * drawn from the stream `mixSeed(seed, fnv1a(name))`; every lora_B zero (so
 * the model starts as the base model); the head copied from the base
 * weights `base` (layout `baseLayout`: a fresh head is already initialised there).
 */
export function initTrainable(
  plan: LoraPlan,
  baseLayout: ParamLayout,
  base: Float32Array,
  seed: number,
): Float32Array {
  const out = new Float32Array(plan.layout.total);
  for (const ad of plan.adapters) {
    const rng = new Rng(mixSeed(seed, fnv1a(ad.a.name)));
    const bound = 1 / Math.sqrt(ad.inDim);
    for (let i = 0; i < ad.a.size; i++) out[ad.a.offset + i] = rng.uniform(-bound, bound);
  }
  copyHead(plan, baseLayout, base, out);
  return out;
}

/** Copies the head tensors from the base weights into the trainable buffer `out`. */
export function copyHead(
  plan: LoraPlan,
  baseLayout: ParamLayout,
  base: Float32Array,
  out: Float32Array,
): void {
  for (const name of plan.head) {
    const from = baseLayout.byName.get(name), to = plan.layout.byName.get(name)!;
    if (!from) throw new Error(`LoRA: the base layout has no head tensor ${name}`);
    if (from.size !== to.size) {
      throw new Error(`LoRA: head tensor ${name} holds ${from.size} values, expected ${to.size}`);
    }
    out.set(base.subarray(from.offset, from.offset + from.size), to.offset);
  }
}

/**
 * The merged model (base layout): each adapted W + (α/r)·B·A, summed in
 * float64 and rounded once, and the head tensors from the trainable buffer;
 * every other tensor is the base's. What PEFT's `merge_and_unload` gives.
 */
export function mergeLora(
  plan: LoraPlan,
  baseLayout: ParamLayout,
  base: Float32Array,
  trainable: Float32Array,
): Float32Array {
  if (trainable.length !== plan.layout.total) {
    throw new Error(
      `mergeLora: the trainable buffer holds ${trainable.length} values, expected ${plan.layout.total}`,
    );
  }
  const merged = base.slice();
  const r = plan.lora.r, s = plan.scale;
  const acc = new Float64Array(r);
  for (const ad of plan.adapters) {
    const w = baseLayout.byName.get(ad.weight)!;
    const A = trainable.subarray(ad.a.offset, ad.a.offset + ad.a.size);
    const B = trainable.subarray(ad.b.offset, ad.b.offset + ad.b.size);
    for (let o = 0; o < ad.outDim; o++) {
      for (let k = 0; k < r; k++) acc[k] = s * B[o * r + k];
      for (let i = 0; i < ad.inDim; i++) {
        let d = 0;
        for (let k = 0; k < r; k++) d += acc[k] * A[k * ad.inDim + i];
        const at = w.offset + o * ad.inDim + i;
        merged[at] = base[at] + d;
      }
    }
  }
  for (const name of plan.head) {
    const to = baseLayout.byName.get(name)!, from = plan.layout.byName.get(name)!;
    merged.set(trainable.subarray(from.offset, from.offset + from.size), to.offset);
  }
  return merged;
}
