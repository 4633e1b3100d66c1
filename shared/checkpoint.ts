/**
 * Hugging Face checkpoint folders: `config.json` + `model.safetensors` (+ the
 * tokenizer files). Loading maps the file's tensors by their Hugging Face
 * names into the flat parameter layout, accepting the usual variants (old
 * `LayerNorm.gamma/beta` names, bare encoders saved without the `bert.` /
 * `roberta.` prefix) and initialising a missing or mismatched classifier head
 * (and a missing BERT pooler) as `transformers` does — with a note for the user.
 * Saving writes files `transformers` can load, each replaced atomically.
 *
 * @module
 */
import { join, resolve } from "node:path";
import { atomicWriteFile } from "./atomic_write.ts";
import { type ModelConfig, parseModelConfig, toHfConfig } from "./model_config.ts";
import { isHeadParam, type Objective, type ParamLayout, paramLayout } from "./param_layout.ts";
import { mixSeed, Rng } from "./rng.ts";
import { type HostTensor, readSafetensors, writeSafetensors } from "./safetensors.ts";

/** A checkpoint folder loaded into the flat parameter layout. */
export interface LoadedCheckpoint {
  /** The configuration, with `numLabels` / `id2label` as requested. */
  config: ModelConfig;
  layout: ParamLayout;
  /** All parameters of `layout`, in one flat buffer. */
  weights: Float32Array;
  /** Tensors of the file that are not in the layout, e.g. `cls.predictions.*` for MLM. */
  extra: Map<string, HostTensor>;
  /** Things the user must be told, e.g. that a new classifier head was initialised. */
  notes: string[];
  /** Whether the head (classifier, or MLM head) was initialised here rather than loaded. */
  freshHead: boolean;
}

/** Options of {@link loadCheckpoint}. */
export interface LoadOptions {
  /** Label count of the task; overrides config.json. A head of another size is replaced. */
  numLabels?: number;
  /** Label names by id; their count is the label count when `numLabels` is absent. */
  labelNames?: string[];
  /** Seed of any freshly initialised tensors (default 0). */
  seed?: number;
  /** Which head to load: the classifier (default) or the MLM head (pre-training). */
  objective?: Objective;
}

/** Options of {@link saveCheckpoint}. */
export interface SaveOptions {
  /** Stored dtype of model.safetensors (default F32). */
  dtype?: "F32" | "F16";
  /** A folder whose tokenizer files are copied next to the weights. */
  copyTokenizerFrom?: string;
}

/** Standard deviation of HF's normal initialiser (`initializer_range`). */
const INIT_STD = 0.02;

/** Tokenizer files copied by `copyTokenizerFrom` (BERT WordPiece and RoBERTa BPE). */
export const TOKENIZER_FILES = [
  "vocab.txt",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "vocab.json",
  "merges.txt",
];

/** FNV-1a hash of a tensor name: each tensor draws from its own seeded stream. */
function hashName(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** Fills `out` with normal(0, std) draws, both Box–Muller outputs used. */
function fillNormal(out: Float32Array, rng: Rng, std: number): void {
  for (let i = 0; i < out.length; i += 2) {
    const r = std * Math.sqrt(-2 * Math.log(1 - rng.next()));
    const a = 2 * Math.PI * rng.next();
    out[i] = r * Math.cos(a);
    if (i + 1 < out.length) out[i + 1] = r * Math.sin(a);
  }
}

/**
 * Initialises one tensor as HF's `_init_weights` does: LayerNorm weight 1 and
 * bias 0, other biases 0, every linear and embedding weight normal(0, 0.02)
 * with the padding row of padded embeddings zeroed. The draws depend only on
 * `seed` and the tensor name.
 */
function initTensor(config: ModelConfig, name: string, out: Float32Array, seed: number): void {
  if (name.includes("LayerNorm")) {
    out.fill(name.endsWith(".weight") ? 1 : 0);
    return;
  }
  if (name.endsWith(".bias")) {
    out.fill(0);
    return;
  }
  fillNormal(out, new Rng(mixSeed(seed, hashName(name))), INIT_STD);
  const p = config.modelType;
  const padded = name === `${p}.embeddings.word_embeddings.weight` ||
    // RoBERTa's position embeddings also carry padding_idx = pad_token_id.
    (p === "roberta" && name === `${p}.embeddings.position_embeddings.weight`);
  const H = config.hiddenSize;
  if (padded && (config.padTokenId + 1) * H <= out.length) {
    out.fill(0, config.padTokenId * H, (config.padTokenId + 1) * H);
  }
}

/** Fresh weights for `config` as Hugging Face initialises them, deterministic in `seed`. */
export function initWeights(
  config: ModelConfig,
  seed: number,
  objective: Objective = "classify",
): Float32Array {
  const layout = paramLayout(config, objective);
  const weights = new Float32Array(layout.total);
  for (const s of layout.specs) {
    initTensor(config, s.name, weights.subarray(s.offset, s.offset + s.size), seed);
  }
  return weights;
}

/**
 * Re-initialises only the classifier head (`classifier.*`) of `weights` in
 * place; the result equals the head of `initWeights(config, seed)`.
 */
export function initHead(config: ModelConfig, weights: Float32Array, seed: number): void {
  const layout = paramLayout(config);
  checkLength(layout, weights);
  for (const s of layout.specs) {
    if (isHeadParam(s.name)) {
      initTensor(config, s.name, weights.subarray(s.offset, s.offset + s.size), seed);
    }
  }
}

function checkLength(layout: ParamLayout, weights: Float32Array): void {
  if (weights.length !== layout.total) {
    throw new Error(
      `weights hold ${weights.length} values but the model config needs ${layout.total}`,
    );
  }
}

function isNotFound(e: unknown): boolean {
  return e instanceof Deno.errors.NotFound;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (isNotFound(e)) return false;
    throw e;
  }
}

/** Reads one safetensors file, prefixing errors with its path; skips position_ids buffers. */
async function readTensorFile(path: string): Promise<Map<string, HostTensor>> {
  const bytes = await Deno.readFile(path);
  try {
    return readSafetensors(bytes, { skip: (name) => name.endsWith("position_ids") }).tensors;
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`, { cause: e });
  }
}

/** Reads `model.safetensors`, or the shards listed by `model.safetensors.index.json`. */
async function readCheckpointTensors(dir: string): Promise<Map<string, HostTensor>> {
  const single = join(dir, "model.safetensors");
  try {
    return await readTensorFile(single);
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
  const indexPath = join(dir, "model.safetensors.index.json");
  if (await exists(indexPath)) {
    const index = JSON.parse(await Deno.readTextFile(indexPath)) as { weight_map?: unknown };
    const map = index.weight_map;
    if (typeof map !== "object" || map === null) {
      throw new Error(`${indexPath}: missing "weight_map"`);
    }
    const shards = [...new Set(Object.values(map as Record<string, unknown>).map(String))];
    const all = new Map<string, HostTensor>();
    for (const shard of shards.sort()) {
      for (const [name, t] of await readTensorFile(join(dir, shard))) {
        if (all.has(name)) throw new Error(`${dir}: tensor ${name} appears in two shards`);
        all.set(name, t);
      }
    }
    return all;
  }
  if (await exists(join(dir, "pytorch_model.bin"))) {
    throw new Error(
      `${dir} holds pytorch_model.bin but no model.safetensors: the PyTorch pickle format is ` +
        `not supported (it can run arbitrary code). Convert it once with Python:\n` +
        `  python -c "import torch; from safetensors.torch import save_file; ` +
        `sd = torch.load('${dir}/pytorch_model.bin', map_location='cpu'); ` +
        `save_file({k: v.clone().contiguous() for k, v in sd.items()}, ` +
        `'${dir}/model.safetensors', metadata={'format': 'pt'})"`,
    );
  }
  throw new Error(`${dir}: no model.safetensors (a Hugging Face checkpoint folder needs one)`);
}

/** Maps a tensor name of the file to the name the layout uses. */
function normaliseName(name: string, prefix: string): string {
  let n = name;
  if (n.endsWith(".gamma")) n = n.slice(0, -".gamma".length) + ".weight";
  else if (n.endsWith(".beta")) n = n.slice(0, -".beta".length) + ".bias";
  // A bare BertModel / RobertaModel is saved without the prefix.
  if (/^(embeddings|encoder|pooler)\./.test(n)) n = `${prefix}.${n}`;
  return n;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

const fmt = (shape: readonly number[]): string => `[${shape.join(", ")}]`;

/**
 * Loads a Hugging Face checkpoint folder (config.json + model.safetensors).
 * A missing classifier head, or one whose label count differs from
 * `opts.numLabels`, is freshly initialised (normal std 0.02, seeded) with a
 * note; so is a missing BERT pooler. Any other missing tensor or shape
 * mismatch is an error naming the tensor.
 */
export async function loadCheckpoint(
  dir: string,
  opts: LoadOptions = {},
): Promise<LoadedCheckpoint> {
  const seed = opts.seed ?? 0;
  const objective = opts.objective ?? "classify";
  const configPath = join(dir, "config.json");
  let configText: string;
  try {
    configText = await Deno.readTextFile(configPath);
  } catch (e) {
    if (isNotFound(e)) throw new Error(`${dir}: no config.json (not a checkpoint folder?)`);
    throw e;
  }
  let rawConfig: unknown;
  try {
    rawConfig = JSON.parse(configText);
  } catch (e) {
    throw new Error(`${configPath}: not valid JSON (${(e as Error).message})`);
  }
  const base = parseModelConfig(rawConfig);
  const p = base.modelType;

  const tensors = new Map<string, HostTensor>();
  const original = new Map<string, string>();
  for (const [name, t] of await readCheckpointTensors(dir)) {
    const n = normaliseName(name, p);
    if (tensors.has(n)) {
      throw new Error(`${dir}: tensors "${original.get(n)}" and "${name}" both map to ${n}`);
    }
    tensors.set(n, t);
    original.set(n, name);
  }

  // Label count: requested, else config.json.
  const { numLabels: askedLabels, labelNames } = opts;
  if (labelNames && askedLabels !== undefined && labelNames.length !== askedLabels) {
    throw new Error(`numLabels ${askedLabels} disagrees with ${labelNames.length} label names`);
  }
  const requested = askedLabels ?? labelNames?.length;
  if (requested !== undefined && (!Number.isInteger(requested) || requested < 1)) {
    throw new Error(`numLabels must be a positive integer, got ${requested}`);
  }
  const numLabels = requested ?? base.numLabels;

  const notes: string[] = [];
  let freshHead = false;
  if (objective === "mlm") {
    const mlmNames = paramLayout(base, "mlm").specs.map((s) => s.name).filter(isHeadParam);
    const present = mlmNames.filter((n) => tensors.has(n));
    if (present.length === 0) {
      freshHead = true;
      notes.push(
        `no MLM head (cls.predictions.*) in checkpoint: initialised a new one (seed ${seed})`,
      );
    } else if (present.length < mlmNames.length) {
      throw new Error(
        `${dir}: incomplete MLM head: lacks ${mlmNames.filter((n) => !tensors.has(n)).join(", ")}`,
      );
    }
  } else {
    // The classifier head in the file, if any.
    const headNames = p === "bert" ? ["classifier.weight", "classifier.bias"] : [
      "classifier.dense.weight",
      "classifier.dense.bias",
      "classifier.out_proj.weight",
      "classifier.out_proj.bias",
    ];
    const outName = p === "bert" ? "classifier.weight" : "classifier.out_proj.weight";
    const presentHead = headNames.filter((n) => tensors.has(n));
    if (presentHead.length > 0 && presentHead.length < headNames.length) {
      const missing = headNames.filter((n) => !tensors.has(n));
      throw new Error(
        `${dir}: incomplete classifier head: has ${presentHead.join(", ")} but lacks ${
          missing.join(", ")
        }`,
      );
    }
    const fileLabels = presentHead.length > 0 ? tensors.get(outName)!.shape[0] : undefined;
    if (fileLabels === undefined) {
      freshHead = true;
      notes.push(
        `no classifier head in checkpoint: initialised a new one (${numLabels} labels, seed ${seed})`,
      );
    } else if (fileLabels !== numLabels) {
      if (requested === undefined) {
        throw new Error(
          `${dir}: config.json says num_labels ${numLabels} but ${outName} has ${fileLabels} rows; ` +
            `pass numLabels to replace the head`,
        );
      }
      freshHead = true;
      notes.push(
        `checkpoint classifier head has ${fileLabels} labels but ${numLabels} were requested: ` +
          `initialised a new head (${numLabels} labels, seed ${seed})`,
      );
    }
  }

  let id2label = labelNames ? [...labelNames] : undefined;
  if (!id2label && numLabels === base.numLabels) id2label = base.id2label?.slice();
  if (
    labelNames && !freshHead && base.id2label && !base.id2label.every((l, i) => l === `LABEL_${i}`)
  ) {
    if (!base.id2label.every((l, i) => l === labelNames[i])) {
      notes.push(
        `label names [${labelNames.join(", ")}] replace the checkpoint's [${
          base.id2label.join(", ")
        }] for the same head rows: check that the order matches`,
      );
    }
  }
  const config: ModelConfig = { ...base, numLabels, id2label };
  const layout = paramLayout(config, objective);
  const weights = new Float32Array(layout.total);

  const poolerNames = p === "bert" ? [`${p}.pooler.dense.weight`, `${p}.pooler.dense.bias`] : [];
  const freshPooler = objective === "classify" && poolerNames.length > 0 &&
    poolerNames.every((n) => !tensors.has(n));
  if (freshPooler) {
    notes.push(
      `no pooler in checkpoint (encoder saved without its pooling layer): ` +
        `initialised ${p}.pooler.dense with seed ${seed}`,
    );
  }

  const problems: string[] = [];
  for (const s of layout.specs) {
    const out = weights.subarray(s.offset, s.offset + s.size);
    if ((freshHead && isHeadParam(s.name)) || (freshPooler && poolerNames.includes(s.name))) {
      initTensor(config, s.name, out, seed);
      continue;
    }
    const t = tensors.get(s.name);
    if (!t) {
      problems.push(`missing tensor ${s.name} (expected shape ${fmt(s.shape)})`);
    } else if (!sameShape(t.shape, s.shape)) {
      problems.push(
        `tensor ${original.get(s.name)} has shape ${fmt(t.shape)}, expected ${fmt(s.shape)}`,
      );
    } else {
      out.set(t.data);
    }
  }
  if (problems.length > 0) {
    const shown = problems.slice(0, 8).join("; ");
    const more = problems.length > 8 ? `; and ${problems.length - 8} more` : "";
    throw new Error(`${dir}: checkpoint does not match its config.json: ${shown}${more}`);
  }

  const extra = new Map<string, HostTensor>();
  for (const [name, t] of tensors) if (!layout.byName.has(name)) extra.set(name, t);
  return { config, layout, weights, extra, notes, freshHead };
}

/**
 * Writes a checkpoint folder `transformers` can load: model.safetensors (F32
 * or F16, exact HF tensor names, metadata format "pt") and config.json, each
 * replaced atomically; optionally copies the tokenizer files of another folder.
 */
export async function saveCheckpoint(
  dir: string,
  ck: {
    config: ModelConfig;
    weights: Float32Array;
    extra?: Map<string, HostTensor>;
    objective?: Objective;
  },
  opts: SaveOptions = {},
): Promise<void> {
  const dtype = opts.dtype ?? "F32";
  const layout = paramLayout(ck.config, ck.objective);
  checkLength(layout, ck.weights);
  const list: [string, HostTensor][] = layout.specs.map((s) => [
    s.name,
    { shape: [...s.shape], data: ck.weights.subarray(s.offset, s.offset + s.size) },
  ]);
  for (const [name, t] of ck.extra ?? []) {
    if (layout.byName.has(name)) throw new Error(`extra tensor ${name} is also a model parameter`);
    list.push([name, t]);
  }

  // Read the tokenizer files first, so that a wrong folder fails before anything is written.
  const tokenizer: [string, Uint8Array][] = [];
  const from = opts.copyTokenizerFrom;
  if (from !== undefined && resolve(from) !== resolve(dir)) {
    for (const f of TOKENIZER_FILES) {
      try {
        tokenizer.push([f, await Deno.readFile(join(from, f))]);
      } catch (e) {
        if (!isNotFound(e)) throw e;
      }
    }
    if (tokenizer.length === 0) {
      throw new Error(`${from}: no tokenizer files (${TOKENIZER_FILES.join(", ")}) to copy`);
    }
  }

  const bytes = writeSafetensors(list, dtype, { format: "pt" });
  const hf = {
    ...toHfConfig(ck.config, ck.objective),
    torch_dtype: dtype === "F16" ? "float16" : "float32",
  };
  await Deno.mkdir(dir, { recursive: true });
  await atomicWriteFile(join(dir, "model.safetensors"), bytes);
  await atomicWriteFile(join(dir, "config.json"), JSON.stringify(hf, null, 2) + "\n");
  for (const [f, data] of tokenizer) await atomicWriteFile(join(dir, f), data);
}
