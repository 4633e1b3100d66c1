/**
 * `deno run -A bench/lora_wire.ts [--rank 8] [--micro-batch 32] [--seq 128]`:
 * bytes per step per worker on the wire, LoRA vs full fine-tuning, at the
 * BERT-base shape (bench/model_shapes.ts), measured as the sizes of the real
 * prepared frames (shared/wire/transfer.ts `prepareMessage`, chunk headers
 * included): the weights message down and one result up (one result per
 * worker per step, issue 21; the full gradient row-sparse over the rows a
 * micro-batch of random token ids uses), plus the one-time base for LoRA.
 * Writes bench/results/lora_wire-<date>.json and prints a Markdown table.
 *
 * @module
 */
import { parseFlags } from "../shared/cli/flags.ts";
import { parseModelConfig } from "../shared/model/config.ts";
import { paramLayout } from "../shared/model/param_layout.ts";
import { DEFAULT_LORA, loraPlan } from "../shared/model/lora.ts";
import { compactGrad, gradLayout, usedRows } from "../shared/model/sparse_grad.ts";
import { prepareMessage } from "../shared/wire/transfer.ts";
import { Rng } from "../shared/method/rng.ts";
import { BERT_BASE_CONFIG } from "./model_shapes.ts";

const flags = parseFlags(Deno.args, {
  rank: { type: "int", default: 8, help: "LoRA rank (query, value)" },
  "micro-batch": { type: "int", default: 32, help: "examples per result" },
  seq: { type: "int", default: 128, help: "tokens per example" },
}, "deno run -A bench/lora_wire.ts");

const config = parseModelConfig(BERT_BASE_CONFIG);
const layout = paramLayout(config);
const plan = loraPlan(config, { ...DEFAULT_LORA, r: flags.rank, alpha: flags.rank });
const runId = "bench";
const timings = { computeMs: 0, adversaryMs: 0, encodeMs: 0 };

/** Bytes of a message as it goes on the wire. */
function frameBytes(m: Parameters<typeof prepareMessage>[0]): number {
  return prepareMessage(m, { runId }).byteLength;
}

// Random token ids of one micro-batch: the rows a full result carries.
const rng = new Rng(1);
const ids = Int32Array.from(
  { length: flags["micro-batch"] * flags.seq },
  () => rng.int(config.vocabSize),
);
const rows = usedRows(ids);

const fullWeights = frameBytes({
  type: "weights",
  runId,
  version: 1,
  encoding: "f32",
  data: new Float32Array(layout.total),
});
const fullResult = frameBytes({
  type: "result",
  taskId: 0,
  step: 0,
  index: 0,
  weightsVersion: 1,
  grad: compactGrad(new Float32Array(layout.total), rows, gradLayout(layout, "classify")),
  rows,
  loss: 0,
  count: flags["micro-batch"],
  timings,
});
const loraWeights = frameBytes({
  type: "weights",
  runId,
  version: 1,
  encoding: "f32",
  data: new Float32Array(plan.layout.total),
});
const loraResult = frameBytes({
  type: "result",
  taskId: 0,
  step: 0,
  index: 0,
  weightsVersion: 1,
  grad: new Float32Array(plan.layout.total),
  loss: 0,
  count: flags["micro-batch"],
  timings,
});
const baseOnce = frameBytes({
  type: "base",
  runId,
  hash: "0".repeat(64),
  data: new Float32Array(layout.total),
});
const full = fullWeights + fullResult, lora = loraWeights + loraResult;
const result = {
  date: new Date().toISOString().slice(0, 10),
  shape: "bert-base-uncased (110 M parameters)",
  parameters: layout.total,
  lora: { r: flags.rank, alpha: flags.rank, targets: DEFAULT_LORA.targetModules },
  trainable: plan.layout.total,
  microBatch: flags["micro-batch"],
  seq: flags.seq,
  resultRows: rows.length,
  bytesPerStepPerWorker: {
    full: { weights: fullWeights, result: fullResult, total: full },
    lora: { weights: loraWeights, result: loraResult, total: lora },
    ratio: lora / full,
  },
  loraBaseOncePerWorker: baseOnce,
};
const mb = (n: number) => (n / 1e6).toFixed(3);
console.log(`| | weights down | result up | per step per worker |
|---|---:|---:|---:|
| full | ${mb(fullWeights)} MB | ${mb(fullResult)} MB (${rows.length} word rows) | ${mb(full)} MB |
| LoRA r=${flags.rank} | ${mb(loraWeights)} MB | ${mb(loraResult)} MB | ${mb(lora)} MB (${
  (100 * lora / full).toFixed(3)
}%) |
| LoRA base, once per worker | ${mb(baseOnce)} MB | | |`);
const out = new URL(`./results/lora_wire-${result.date}.json`, import.meta.url);
await Deno.writeTextFile(out, JSON.stringify(result, null, 2) + "\n");
