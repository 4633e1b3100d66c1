/**
 * The parameter layout: every tensor of a model by its Hugging Face name and
 * shape, in one fixed order, packed into one flat Float32Array. Weights,
 * gradients and optimizer moments all share this layout, so they travel and
 * are averaged as single buffers.
 *
 * @module
 */
import type { ModelConfig } from "./config.ts";

/** One named tensor inside the flat buffer. */
export interface ParamSpec {
  /** Hugging Face tensor name, e.g. `bert.encoder.layer.0.attention.self.query.weight`. */
  readonly name: string;
  /** Shape as Hugging Face stores it (linear weights are [out, in]). */
  readonly shape: readonly number[];
  /** Offset of the first element in the flat buffer. */
  readonly offset: number;
  /** Number of elements. */
  readonly size: number;
  /** False for every bias and LayerNorm tensor: no weight decay, no layer adaptation. */
  readonly decay: boolean;
  /** Whether LAMB's trust ratio scales the tensor's update ({@link adapts}). */
  readonly adapt: boolean;
}

/** The ordered list of parameters and the total flat size. */
export interface ParamLayout {
  readonly specs: readonly ParamSpec[];
  readonly byName: ReadonlyMap<string, ParamSpec>;
  readonly total: number;
}

/** Whether weight decay applies to the tensor `name` (not to biases and LayerNorm). */
export function decays(name: string): boolean {
  return !(name.endsWith(".bias") || name.includes("LayerNorm"));
}

/**
 * Whether LAMB's trust ratio ‖w‖/‖u‖ scales the update of the tensor `name`:
 * every decayed tensor except LoRA's B, which starts at zero by design
 * (PEFT's init, so that step 0 is the base model) — its ratio would be 1 at
 * the first step and about the learning rate after it, so B would grow by a
 * factor (1 + lr) per step and the adapter would barely train.
 */
export function adapts(name: string): boolean {
  return decays(name) && !name.endsWith(".lora_B.weight");
}

/**
 * What a model can be trained for: sequence classification, or
 * masked-language modelling (docs/method.md, "MLM objective and masking").
 * The list is what `--objective` and the wire's `welcome.objective` accept.
 */
export const OBJECTIVES = ["classify", "mlm"] as const;

/** One of {@link OBJECTIVES}: the run's objective, which fixes the head and so the layout. */
export type Objective = typeof OBJECTIVES[number];

/** The objective a layout is for: `mlm` when it holds the MLM head, else `classify`. */
export function layoutObjective(layout: ParamLayout): Objective {
  return layout.byName.has("cls.predictions.bias") ? "mlm" : "classify";
}

/**
 * Builds the layout for `config`: the encoder plus the sequence-classification
 * head (pooler + classifier), or, for `mlm`, the encoder plus the MLM head
 * `cls.predictions.*` (its decoder is tied to the word embeddings; no pooler).
 */
export function paramLayout(config: ModelConfig, objective: Objective = "classify"): ParamLayout {
  const p = config.modelType; // the encoder's tensors are `bert.…` or `roberta.…`
  const H = config.hiddenSize, I = config.intermediateSize;
  const entries: [string, number[]][] = [
    [`${p}.embeddings.word_embeddings.weight`, [config.vocabSize, H]],
    [`${p}.embeddings.position_embeddings.weight`, [config.maxPositions, H]],
    [`${p}.embeddings.token_type_embeddings.weight`, [config.typeVocabSize, H]],
    [`${p}.embeddings.LayerNorm.weight`, [H]],
    [`${p}.embeddings.LayerNorm.bias`, [H]],
  ];
  for (let l = 0; l < config.numLayers; l++) {
    const L = `${p}.encoder.layer.${l}`;
    for (const m of ["query", "key", "value"]) {
      entries.push([`${L}.attention.self.${m}.weight`, [H, H]], [`${L}.attention.self.${m}.bias`, [
        H,
      ]]);
    }
    entries.push(
      [`${L}.attention.output.dense.weight`, [H, H]],
      [`${L}.attention.output.dense.bias`, [H]],
      [`${L}.attention.output.LayerNorm.weight`, [H]],
      [`${L}.attention.output.LayerNorm.bias`, [H]],
      [`${L}.intermediate.dense.weight`, [I, H]],
      [`${L}.intermediate.dense.bias`, [I]],
      [`${L}.output.dense.weight`, [H, I]],
      [`${L}.output.dense.bias`, [H]],
      [`${L}.output.LayerNorm.weight`, [H]],
      [`${L}.output.LayerNorm.bias`, [H]],
    );
  }
  const N = config.numLabels;
  if (objective === "mlm") {
    entries.push(
      ["cls.predictions.transform.dense.weight", [H, H]],
      ["cls.predictions.transform.dense.bias", [H]],
      ["cls.predictions.transform.LayerNorm.weight", [H]],
      ["cls.predictions.transform.LayerNorm.bias", [H]],
      ["cls.predictions.bias", [config.vocabSize]],
    );
  } else if (config.modelType === "bert") {
    entries.push(
      [`${p}.pooler.dense.weight`, [H, H]],
      [`${p}.pooler.dense.bias`, [H]],
      ["classifier.weight", [N, H]],
      ["classifier.bias", [N]],
    );
  } else {
    entries.push(
      ["classifier.dense.weight", [H, H]],
      ["classifier.dense.bias", [H]],
      ["classifier.out_proj.weight", [N, H]],
      ["classifier.out_proj.bias", [N]],
    );
  }
  let offset = 0;
  const specs: ParamSpec[] = entries.map(([name, shape]) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const spec = { name, shape, offset, size, decay: decays(name), adapt: adapts(name) };
    offset += size;
    return spec;
  });
  return { specs, byName: new Map(specs.map((s) => [s.name, s])), total: offset };
}

/** The tensor `name` as a view into `flat` (no copy). */
export function view(layout: ParamLayout, flat: Float32Array, name: string): Float32Array {
  const spec = layout.byName.get(name);
  if (!spec) throw new Error(`unknown parameter ${name}`);
  return flat.subarray(spec.offset, spec.offset + spec.size);
}

/** Names of head tensors (replaced when a checkpoint lacks a head): classifier or MLM head. */
export function isHeadParam(name: string): boolean {
  return name.startsWith("classifier.") || name.startsWith("cls.");
}
