/**
 * Hugging Face checkpoint folders: `config.json` + `model.safetensors` (+ the
 * tokenizer files). Loading maps the file's tensors by their Hugging Face
 * names into the flat parameter layout, accepting the usual variants (old
 * `LayerNorm.gamma/beta` names, bare encoders saved without the `bert.` /
 * `roberta.` prefix) and initialising a missing or mismatched classifier head
 * (and a missing BERT pooler) as `transformers` does — with a note for the user.
 * Saving writes files `transformers` can load, each replaced atomically:
 * `model.safetensors`, or — when the weights would pass a size limit (5 GB by
 * default, as in `transformers`) — shards `model-00001-of-0000N.safetensors`
 * with a `model.safetensors.index.json`, exactly as `save_pretrained` lays
 * them out.
 *
 * Neither direction needs a second copy of the model in memory: loading reads
 * each tensor from its file straight into the flat parameter buffer, and saving
 * writes tensor by tensor (16-bit conversions in bounded chunks).
 *
 * @module
 */
import { join, resolve } from "node:path";
import { atomicWriteFile, atomicWriteStream } from "./atomic_write.ts";
import { type ModelConfig, parseModelConfig, toHfConfig } from "../model/config.ts";
import {
  isHeadParam,
  type Objective,
  type ParamLayout,
  paramLayout,
} from "../model/param_layout.ts";
import { fnv1a } from "../method/hash32.ts";
import { pathExists } from "./path_exists.ts";
import { isPlainObject } from "./plain_object.ts";
import { mixSeed, Rng } from "../method/rng.ts";
import {
  type DType,
  dtypeBytes,
  type HostTensor,
  isFloatDType,
  planSafetensors,
  SafetensorsFile,
  streamSafetensors,
} from "./safetensors.ts";

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
  /**
   * Whether the BERT pooler was initialised here (a checkpoint without one):
   * a LoRA run then trains it in full (shared/model/lora.ts, `trainPooler`).
   */
  freshPooler?: boolean;
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
  /** Stored dtype of the weights (default F32). */
  dtype?: DType;
  /**
   * Largest weights file in bytes of tensor data (default
   * {@link DEFAULT_MAX_SHARD_BYTES}); past it the weights are sharded.
   */
  maxShardBytes?: number;
  /** A folder whose tokenizer files are copied next to the weights. */
  copyTokenizerFrom?: string;
}

/** `transformers`' default `max_shard_size` of `save_pretrained`: "5GB" = 5 × 10⁹ bytes. */
export const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

/** The single-file weights name. */
export const WEIGHTS_NAME = "model.safetensors";
/** The index of a sharded checkpoint. */
export const WEIGHTS_INDEX_NAME = "model.safetensors.index.json";
/** Shard file names as `save_pretrained` writes them. */
const SHARD_NAME = /^model-\d{5}-of-\d{5}\.safetensors$/;

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
  fillNormal(out, new Rng(mixSeed(seed, fnv1a(name))), INIT_STD);
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

/** A tensor of a checkpoint folder: the open file that holds it and its header entry. */
interface TensorSource {
  file: SafetensorsFile;
  name: string;
  shape: readonly number[];
}

/** The open weights files of a checkpoint folder and where each tensor lives. */
interface CheckpointSources {
  tensors: Map<string, TensorSource>;
  files: SafetensorsFile[];
}

/** Integer buffers such as `position_ids` are not parameters: validated, then left out. */
const isBuffer = (name: string): boolean => name.endsWith("position_ids");

/** Opens one safetensors file, prefixing errors with its path. */
async function openTensorFile(path: string): Promise<SafetensorsFile> {
  try {
    return await SafetensorsFile.open(path);
  } catch (e) {
    if (isNotFound(e)) throw e;
    throw new Error(`${path}: ${(e as Error).message}`, { cause: e });
  }
}

/** Adds the parameters of `file` to `out`; a parameter of a dtype we cannot decode is an error. */
function addTensors(file: SafetensorsFile, out: Map<string, TensorSource>, dir: string): void {
  for (const info of file.tensors.values()) {
    if (isBuffer(info.name)) continue;
    if (!isFloatDType(info.dtype)) {
      throw new Error(
        `${file.path}: safetensors: tensor "${info.name}" has unsupported dtype ${
          JSON.stringify(info.dtype)
        } (supported: F32, F16, BF16)`,
      );
    }
    if (out.has(info.name)) throw new Error(`${dir}: tensor ${info.name} appears in two shards`);
    out.set(info.name, { file, name: info.name, shape: info.shape });
  }
}

/** Parses and validates `model.safetensors.index.json`: its `weight_map` of tensor → shard file. */
function parseIndex(indexPath: string, text: string): Map<string, string> {
  let index: unknown;
  try {
    index = JSON.parse(text);
  } catch (e) {
    throw new Error(`${indexPath}: not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(index)) throw new Error(`${indexPath}: expected a JSON object`);
  const map = index.weight_map;
  if (!isPlainObject(map)) {
    throw new Error(`${indexPath}: missing "weight_map" (an object of tensor name → shard file)`);
  }
  const out = new Map<string, string>();
  for (const [name, file] of Object.entries(map)) {
    if (typeof file !== "string" || !file.endsWith(".safetensors")) {
      throw new Error(
        `${indexPath}: weight_map["${name}"] must name a .safetensors file, got ${
          JSON.stringify(file)
        }`,
      );
    }
    if (file.includes("/") || file.includes("\\") || file.startsWith(".")) {
      throw new Error(
        `${indexPath}: weight_map["${name}"] is ${JSON.stringify(file)}: a shard must be ` +
          `a plain file name in the checkpoint folder`,
      );
    }
    out.set(name, file);
  }
  if (out.size === 0) throw new Error(`${indexPath}: weight_map lists no tensors`);
  return out;
}

/**
 * Opens the shards listed by `model.safetensors.index.json` and checks that the
 * index and the shards agree: every shard exists, every listed tensor is in the
 * shard the index names, and no shard holds a tensor the index does not assign to it.
 */
async function openShards(dir: string, indexPath: string): Promise<CheckpointSources> {
  const weightMap = parseIndex(indexPath, await Deno.readTextFile(indexPath));
  const byShard = new Map<string, string[]>();
  for (const [name, file] of weightMap) {
    const list = byShard.get(file) ?? [];
    list.push(name);
    byShard.set(file, list);
  }
  const shards = [...byShard.keys()].sort();
  const missing: string[] = [];
  for (const shard of shards) {
    if (!(await pathExists(join(dir, shard)))) {
      const names = byShard.get(shard)!;
      missing.push(`${shard} (${names.length} tensors, e.g. ${names[0]})`);
    }
  }
  if (missing.length > 0) {
    throw new Error(
      `${dir}: ${WEIGHTS_INDEX_NAME} lists ${shards.length} shards but ${missing.length} ` +
        `${missing.length === 1 ? "is" : "are"} missing: ${missing.join(", ")}`,
    );
  }
  const sources: CheckpointSources = { tensors: new Map(), files: [] };
  try {
    for (const shard of shards) sources.files.push(await openTensorFile(join(dir, shard)));
    for (const [i, file] of sources.files.entries()) {
      const shard = shards[i];
      for (const name of file.tensors.keys()) {
        const listed = weightMap.get(name);
        if (listed !== shard) {
          throw new Error(
            `${file.path}: holds tensor ${name}, which ${WEIGHTS_INDEX_NAME} ${
              listed === undefined ? "does not list" : `assigns to ${listed}`
            }`,
          );
        }
      }
    }
    for (const [i, file] of sources.files.entries()) {
      const shard = shards[i];
      for (const name of byShard.get(shard)!) {
        if (!file.tensors.has(name)) {
          throw new Error(
            `${dir}: ${WEIGHTS_INDEX_NAME} puts tensor ${name} in ${shard}, which does not hold it`,
          );
        }
      }
      addTensors(file, sources.tensors, dir);
    }
  } catch (e) {
    closeSources(sources);
    throw e;
  }
  return sources;
}

function closeSources(sources: CheckpointSources): void {
  for (const f of sources.files) f.close();
}

/** Opens `model.safetensors`, or the shards listed by `model.safetensors.index.json`. */
async function openCheckpointTensors(dir: string): Promise<CheckpointSources> {
  try {
    const file = await openTensorFile(join(dir, WEIGHTS_NAME));
    const sources: CheckpointSources = { tensors: new Map(), files: [file] };
    try {
      addTensors(file, sources.tensors, dir);
    } catch (e) {
      file.close();
      throw e;
    }
    return sources;
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
  const indexPath = join(dir, WEIGHTS_INDEX_NAME);
  if (await pathExists(indexPath)) return await openShards(dir, indexPath);
  if (await pathExists(join(dir, "pytorch_model.bin"))) {
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
 * mismatch is an error naming the tensor. Format and tensor names:
 * docs/model-and-data.md, "Checkpoint folder" and "Tensor names".
 */
export async function loadCheckpoint(
  dir: string,
  opts: LoadOptions = {},
): Promise<LoadedCheckpoint> {
  const base = await readModelConfig(dir);
  const sources = await openCheckpointTensors(dir);
  try {
    return await loadFromSources(dir, base, sources, opts);
  } finally {
    closeSources(sources);
  }
}

/** The folder's config.json, parsed; a missing or broken one is an error that says so. */
async function readModelConfig(dir: string): Promise<ModelConfig> {
  const configPath = join(dir, "config.json");
  let configText: string;
  try {
    configText = await Deno.readTextFile(configPath);
  } catch (e) {
    if (isNotFound(e)) throw new Error(`${dir}: no config.json (not a checkpoint folder?)`);
    throw e;
  }
  try {
    return parseModelConfig(JSON.parse(configText));
  } catch (e) {
    if (!(e instanceof SyntaxError)) throw e;
    throw new Error(`${configPath}: not valid JSON (${e.message})`);
  }
}

/** The file's tensors under their layout names, and each layout name's name in the file. */
interface NamedTensors {
  readonly tensors: Map<string, TensorSource>;
  readonly original: Map<string, string>;
}

/** Maps the file's tensor names onto the layout's; two that map to one name are an error. */
function layoutNames(dir: string, sources: CheckpointSources, prefix: string): NamedTensors {
  const tensors = new Map<string, TensorSource>();
  const original = new Map<string, string>();
  for (const [name, t] of sources.tensors) {
    const n = normaliseName(name, prefix);
    if (tensors.has(n)) {
      throw new Error(`${dir}: tensors "${original.get(n)}" and "${name}" both map to ${n}`);
    }
    tensors.set(n, t);
    original.set(n, name);
  }
  return { tensors, original };
}

/** The label count asked for (`numLabels`, else the label names' count), checked; undefined: none. */
function requestedLabels(opts: LoadOptions): number | undefined {
  const { numLabels: asked, labelNames } = opts;
  if (labelNames && asked !== undefined && labelNames.length !== asked) {
    throw new Error(`numLabels ${asked} disagrees with ${labelNames.length} label names`);
  }
  const requested = asked ?? labelNames?.length;
  if (requested !== undefined && (!Number.isInteger(requested) || requested < 1)) {
    throw new Error(`numLabels must be a positive integer, got ${requested}`);
  }
  return requested;
}

/** Whether the head is initialised here, and the note that tells the user so. */
interface HeadChoice {
  readonly fresh: boolean;
  readonly note?: string;
}

/** MLM: the file's `cls.predictions.*` head, or a fresh one when it has none. */
function mlmHead(
  dir: string,
  base: ModelConfig,
  tensors: ReadonlyMap<string, unknown>,
  seed: number,
): HeadChoice {
  const names = paramLayout(base, "mlm").specs.map((s) => s.name).filter(isHeadParam);
  const present = names.filter((n) => tensors.has(n));
  if (present.length === 0) {
    return {
      fresh: true,
      note: `no MLM head (cls.predictions.*) in checkpoint: initialised a new one (seed ${seed})`,
    };
  }
  if (present.length < names.length) {
    throw new Error(
      `${dir}: incomplete MLM head: lacks ${names.filter((n) => !tensors.has(n)).join(", ")}`,
    );
  }
  return { fresh: false };
}

/**
 * Classification: the file's classifier head, or a fresh one when it has
 * none or one of another label count than was asked for (without a request,
 * a head that disagrees with config.json is an error).
 */
function classifierHead(
  dir: string,
  prefix: string,
  tensors: ReadonlyMap<string, TensorSource>,
  numLabels: number,
  requested: number | undefined,
  seed: number,
): HeadChoice {
  const headNames = prefix === "bert" ? ["classifier.weight", "classifier.bias"] : [
    "classifier.dense.weight",
    "classifier.dense.bias",
    "classifier.out_proj.weight",
    "classifier.out_proj.bias",
  ];
  const outName = classifierOutput(prefix).weight;
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
    return {
      fresh: true,
      note:
        `no classifier head in checkpoint: initialised a new one (${numLabels} labels, seed ${seed})`,
    };
  }
  if (fileLabels === numLabels) return { fresh: false };
  if (requested === undefined) {
    throw new Error(
      `${dir}: config.json says num_labels ${numLabels} but ${outName} has ${fileLabels} rows; ` +
        `pass numLabels to replace the head`,
    );
  }
  return {
    fresh: true,
    note: `checkpoint classifier head has ${fileLabels} labels but ${numLabels} were requested: ` +
      `initialised a new head (${numLabels} labels, seed ${seed})`,
  };
}

/**
 * id2label of the loaded model: the given label names, else the
 * checkpoint's when the label count is unchanged; a note when the head's rows
 * are reordered to the given names (`order`, from {@link headRowOrder}), or
 * when given names replace other real names on a kept head.
 */
function labelMap(
  base: ModelConfig,
  labelNames: readonly string[] | undefined,
  numLabels: number,
  freshHead: boolean,
  order: readonly number[] | null,
  notes: string[],
): string[] | undefined {
  const named = base.id2label && !base.id2label.every((l, i) => l === `LABEL_${i}`);
  if (order) {
    notes.push(
      `classifier rows reordered to the task's labels [${labelNames!.join(", ")}] ` +
        `(the checkpoint's order: [${base.id2label!.join(", ")}])`,
    );
  } else if (
    labelNames && !freshHead && named && !base.id2label!.every((l, i) => l === labelNames[i])
  ) {
    notes.push(
      `label names [${labelNames.join(", ")}] replace the checkpoint's [${
        base.id2label!.join(", ")
      }] for the same head rows: check that the order matches`,
    );
  }
  if (labelNames) return [...labelNames];
  return numLabels === base.numLabels ? base.id2label?.slice() : undefined;
}

/**
 * When the checkpoint's head names the same labels as the task in another
 * order: for each of the task's labels, the checkpoint row that scores it
 * (so training starts from the head's real knowledge, not a permutation of
 * it). Null when no reordering applies (fresh head, unnamed or other labels,
 * same order).
 */
function headRowOrder(
  base: ModelConfig,
  labelNames: readonly string[] | undefined,
  freshHead: boolean,
): number[] | null {
  const own = base.id2label;
  if (freshHead || !labelNames || !own || own.length !== labelNames.length) return null;
  if (new Set(own).size !== own.length) return null;
  const order = labelNames.map((n) => own.indexOf(n));
  if (order.some((i) => i < 0) || new Set(order).size !== order.length) return null;
  return order.every((i, k) => i === k) ? null : order;
}

/** The classifier's output projection, one row per label: weight [N, H] and bias [N]. */
function classifierOutput(prefix: string): { weight: string; bias: string } {
  const p = prefix === "bert" ? "classifier" : "classifier.out_proj";
  return { weight: `${p}.weight`, bias: `${p}.bias` };
}

/** Reorders the classifier's output rows (weight [N, H] and bias [N]) to `order`. */
function reorderHeadRows(
  layout: ParamLayout,
  weights: Float32Array,
  prefix: string,
  order: readonly number[],
): void {
  const out = classifierOutput(prefix);
  for (const s of layout.specs) {
    if (s.name !== out.weight && s.name !== out.bias) continue;
    const rowSize = s.size / order.length;
    const t = weights.subarray(s.offset, s.offset + s.size);
    const old = t.slice();
    order.forEach((from, to) =>
      t.set(old.subarray(from * rowSize, (from + 1) * rowSize), to * rowSize)
    );
  }
}

/** BERT classification without a pooler in the file: its names, to initialise; else none. */
function freshPoolerNames(
  prefix: string,
  objective: Objective,
  tensors: ReadonlyMap<string, unknown>,
): string[] {
  if (prefix !== "bert" || objective !== "classify") return [];
  const names = [`${prefix}.pooler.dense.weight`, `${prefix}.pooler.dense.bias`];
  return names.every((n) => !tensors.has(n)) ? names : [];
}

/**
 * The flat weights: tensors named in `fresh` initialised (seeded, as
 * `initWeights`), the rest read from the file straight into the buffer (no
 * second copy of the model). Missing tensors and shape mismatches are one
 * error naming them.
 */
async function fillWeights(
  dir: string,
  config: ModelConfig,
  layout: ParamLayout,
  named: NamedTensors,
  fresh: (name: string) => boolean,
  seed: number,
): Promise<Float32Array> {
  const weights = new Float32Array(layout.total);
  const problems: string[] = [];
  const reads: [TensorSource, Float32Array][] = [];
  for (const s of layout.specs) {
    const out = weights.subarray(s.offset, s.offset + s.size);
    if (fresh(s.name)) {
      initTensor(config, s.name, out, seed);
      continue;
    }
    const t = named.tensors.get(s.name);
    if (!t) {
      problems.push(`missing tensor ${s.name} (expected shape ${fmt(s.shape)})`);
    } else if (!sameShape(t.shape, s.shape)) {
      problems.push(
        `tensor ${named.original.get(s.name)} has shape ${fmt(t.shape)}, expected ${fmt(s.shape)}`,
      );
    } else {
      reads.push([t, out]);
    }
  }
  if (problems.length > 0) {
    const shown = problems.slice(0, 8).join("; ");
    const more = problems.length > 8 ? `; and ${problems.length - 8} more` : "";
    throw new Error(`${dir}: checkpoint does not match its config.json: ${shown}${more}`);
  }
  for (const [t, out] of reads) await readTensor(t, out);
  return weights;
}

/** The file's tensors that are not in the layout, read whole. */
async function extraTensors(
  tensors: ReadonlyMap<string, TensorSource>,
  layout: ParamLayout,
): Promise<Map<string, HostTensor>> {
  const extra = new Map<string, HostTensor>();
  for (const [name, t] of tensors) {
    if (!layout.byName.has(name)) {
      extra.set(name, { shape: [...t.shape], data: await readTensor(t) });
    }
  }
  return extra;
}

/** {@link loadCheckpoint} once config.json is parsed and the weights files are open. */
async function loadFromSources(
  dir: string,
  base: ModelConfig,
  sources: CheckpointSources,
  opts: LoadOptions,
): Promise<LoadedCheckpoint> {
  const seed = opts.seed ?? 0;
  const objective = opts.objective ?? "classify";
  const prefix = base.modelType;
  const named = layoutNames(dir, sources, prefix);
  const requested = requestedLabels(opts);
  const numLabels = requested ?? base.numLabels;
  const head = objective === "mlm"
    ? mlmHead(dir, base, named.tensors, seed)
    : classifierHead(dir, prefix, named.tensors, numLabels, requested, seed);
  const notes = head.note ? [head.note] : [];
  const order = objective === "classify" ? headRowOrder(base, opts.labelNames, head.fresh) : null;
  const id2label = labelMap(base, opts.labelNames, numLabels, head.fresh, order, notes);
  const config: ModelConfig = { ...base, numLabels, id2label };
  const layout = paramLayout(config, objective);
  const pooler = freshPoolerNames(prefix, objective, named.tensors);
  if (pooler.length > 0) {
    notes.push(
      `no pooler in checkpoint (encoder saved without its pooling layer): ` +
        `initialised ${prefix}.pooler.dense with seed ${seed}`,
    );
  }
  const fresh = (name: string) => (head.fresh && isHeadParam(name)) || pooler.includes(name);
  const weights = await fillWeights(dir, config, layout, named, fresh, seed);
  if (order) reorderHeadRows(layout, weights, prefix, order);
  const extra = await extraTensors(named.tensors, layout);
  return {
    config,
    layout,
    weights,
    extra,
    notes,
    freshHead: head.fresh,
    freshPooler: pooler.length > 0,
  };
}

/** Reads one tensor (into `out` when given), prefixing errors with its file's path. */
async function readTensor(t: TensorSource, out?: Float32Array): Promise<Float32Array> {
  try {
    return await t.file.read(t.name, out);
  } catch (e) {
    throw new Error(`${t.file.path}: ${(e as Error).message}`, { cause: e });
  }
}

const BYTE_UNITS: Readonly<Record<string, number>> = {
  B: 1,
  KB: 1e3,
  MB: 1e6,
  GB: 1e9,
  TB: 1e12,
  KIB: 2 ** 10,
  MIB: 2 ** 20,
  GIB: 2 ** 30,
  TIB: 2 ** 40,
};

/**
 * Parses a size as `transformers`' `max_shard_size` is written: a byte count
 * ("500000000") or a number with a unit, decimal KB/MB/GB/TB (10³ steps) or
 * binary KiB/MiB/GiB/TiB (2¹⁰ steps), case-insensitive ("5GB", "500MB",
 * "1.5GiB"). Throws a RangeError naming the text for anything else or below 1 byte.
 */
export function parseByteSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = m ? BYTE_UNITS[(m[2] || "B").toUpperCase()] : undefined;
  const bytes = m && unit !== undefined ? Math.floor(Number(m[1]) * unit) : NaN;
  if (!Number.isSafeInteger(bytes) || bytes < 1) {
    throw new RangeError(
      `size must be a byte count or a number with a unit (KB MB GB TB, KiB MiB GiB TiB), ` +
        `at least 1 byte, e.g. "5GB" or "500MB"; got ${JSON.stringify(text)}`,
    );
  }
  return bytes;
}

/**
 * Groups tensors into shards as `transformers` (`huggingface_hub`'s
 * `split_state_dict_into_shards`) does, in the given order: a tensor never spans
 * two files; a tensor larger than `maxShardBytes` gets a shard of its own
 * (appended when it is met, while the current shard stays open); otherwise a
 * tensor that would take the current shard past the limit closes it and starts
 * the next. Returns the tensor names of each shard, in shard order.
 */
export function planShards(
  tensors: readonly { name: string; bytes: number }[],
  maxShardBytes: number,
): string[][] {
  if (!Number.isSafeInteger(maxShardBytes) || maxShardBytes < 1) {
    throw new RangeError(`maxShardBytes must be a positive integer, got ${maxShardBytes}`);
  }
  const shards: string[][] = [];
  let current: string[] = [], size = 0;
  for (const { name, bytes } of tensors) {
    if (bytes > maxShardBytes) {
      shards.push([name]);
      continue;
    }
    if (size + bytes > maxShardBytes && current.length > 0) {
      shards.push(current);
      current = [];
      size = 0;
    }
    current.push(name);
    size += bytes;
  }
  if (current.length > 0 || shards.length === 0) shards.push(current);
  return shards;
}

/** `model-00001-of-00003.safetensors`: the name of shard `i` (0-based) of `n`. */
export function shardFileName(i: number, n: number): string {
  const pad = (k: number) => String(k).padStart(5, "0");
  return `model-${pad(i + 1)}-of-${pad(n)}.safetensors`;
}

/** Orders strings by Unicode code point, as Python's `sort_keys` does. */
function byCodePoint(a: string, b: string): number {
  const x = Array.from(a, (c) => c.codePointAt(0)!), y = Array.from(b, (c) => c.codePointAt(0)!);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

/**
 * The text of `model.safetensors.index.json` as `transformers` writes it
 * (`json.dumps(index, indent=2, sort_keys=True) + "\n"`): `metadata.total_size`
 * (bytes of tensor data over all shards) and `weight_map` (tensor → shard file).
 */
export function shardIndexJson(totalSize: number, weightMap: ReadonlyMap<string, string>): string {
  // By hand, so that keys keep code-point order even where a JS object would reorder them.
  const names = [...weightMap.keys()].sort(byCodePoint);
  const rows = names.map((n) => `    ${JSON.stringify(n)}: ${JSON.stringify(weightMap.get(n))}`);
  return `{\n  "metadata": {\n    "total_size": ${totalSize}\n  },\n  "weight_map": {\n` +
    `${rows.join(",\n")}\n  }\n}\n`;
}

/** The HF `torch_dtype` of a stored dtype. */
const TORCH_DTYPE: Readonly<Record<DType, string>> = {
  F32: "float32",
  F16: "float16",
  BF16: "bfloat16",
};

/**
 * Writes a checkpoint folder `transformers` can load: the weights (F32, F16 or
 * BF16, exact HF tensor names, metadata format "pt") as `model.safetensors`,
 * or, when their data would pass `opts.maxShardBytes` (default 5 GB), as
 * shards `model-0000i-of-0000n.safetensors` plus `model.safetensors.index.json`
 * (see {@link planShards}); then config.json; optionally the tokenizer files of
 * another folder. Every file is streamed tensor by tensor and replaced
 * atomically; weights files of an earlier save that the new one does not use
 * (a single file replaced by shards, or shards no longer listed) are removed
 * afterwards. A reader that must never see a mix of two saves should have the
 * folder replaced as a whole (`replaceDirectory`).
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
  if (!isFloatDType(dtype)) {
    throw new Error(`cannot save dtype ${JSON.stringify(dtype)} (F32, F16 or BF16)`);
  }
  const maxShardBytes = opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  const layout = paramLayout(ck.config, ck.objective);
  checkLength(layout, ck.weights);
  // Views into the flat buffer: nothing is copied.
  const list: [string, HostTensor][] = layout.specs.map((s) => [
    s.name,
    { shape: [...s.shape], data: ck.weights.subarray(s.offset, s.offset + s.size) },
  ]);
  for (const [name, t] of ck.extra ?? []) {
    if (layout.byName.has(name)) throw new Error(`extra tensor ${name} is also a model parameter`);
    list.push([name, t]);
  }
  const width = dtypeBytes(dtype);
  const groups = planShards(
    list.map(([name, t]) => ({ name, bytes: t.data.length * width })),
    maxShardBytes,
  );
  const byName = new Map(list);
  // Validates every tensor (names, shapes) before anything is written.
  const plans = groups.map((names) =>
    planSafetensors(names.map((n) => [n, byName.get(n)!]), dtype, { format: "pt" })
  );

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

  const hf = { ...toHfConfig(ck.config, ck.objective), torch_dtype: TORCH_DTYPE[dtype] };
  await Deno.mkdir(dir, { recursive: true });
  const files = plans.length === 1
    ? [WEIGHTS_NAME]
    : plans.map((_, i) => shardFileName(i, plans.length));
  for (const [i, plan] of plans.entries()) {
    await atomicWriteStream(join(dir, files[i]), (sink) => streamSafetensors(plan, sink).then());
  }
  if (plans.length > 1) {
    const weightMap = new Map<string, string>();
    groups.forEach((names, i) => names.forEach((n) => weightMap.set(n, files[i])));
    const total = list.reduce((sum, [, t]) => sum + t.data.length * width, 0);
    await atomicWriteFile(join(dir, WEIGHTS_INDEX_NAME), shardIndexJson(total, weightMap));
  }
  await atomicWriteFile(join(dir, "config.json"), JSON.stringify(hf, null, 2) + "\n");
  for (const [f, data] of tokenizer) await atomicWriteFile(join(dir, f), data);
  await removeStaleWeights(dir, new Set(plans.length > 1 ? [...files, WEIGHTS_INDEX_NAME] : files));
}

/** Removes weights files of an earlier save (single file, index, shards) not in `keep`. */
async function removeStaleWeights(dir: string, keep: ReadonlySet<string>): Promise<void> {
  for await (const entry of Deno.readDir(dir)) {
    const name = entry.name;
    const weights = name === WEIGHTS_NAME || name === WEIGHTS_INDEX_NAME || SHARD_NAME.test(name);
    if (entry.isFile && weights && !keep.has(name)) await Deno.remove(join(dir, name));
  }
}
