/**
 * Turns a reference pre-training result (`reference_pretrain.py`'s
 * NAME.safetensors) into a checkpoint folder adaptmesh adapts like any other —
 * config.json and vocab.txt of the default model beside the weights — and
 * scores it with adaptmesh's own MLM evaluation (`evaluateMlm`: the first 256
 * held-out sequences, masked with seed 1 at step 0), which must agree with the
 * last point of the PyTorch run's curve: two implementations, one number.
 *
 *   deno run -A bench/reference_pretrain/import_checkpoint.ts NAME.safetensors OUT_DIR DATA_DIR [NAME.json]
 *
 * With NAME.json (the PyTorch run's record, or device.sh's reference_pretrain.json
 * holding it among others) it exits 1 unless the two
 * evaluations agree: loss within 2e-3 (the F16 rounding of the weights moves it
 * by ~1e-4) and accuracy within 0.5 points.
 *
 * DATA_DIR is what export_tokens.ts wrote (its heldout.u16 are the packed
 * held-out sequences, so the corpus is not loaded again).
 *
 * @module
 */
import { loadCheckpoint } from "../../shared/io/checkpoint.ts";
import { loadTokenizer } from "../../shared/text/tokenizer.ts";
import { initBackend } from "../../shared/compute/create.ts";
import { MlmSet } from "../../coordinator/mlm_data.ts";
import { evaluateMlm } from "../../coordinator/training_data.ts";

const [weights, out, data, record] = Deno.args;
if (!weights || !out || !data) {
  throw new Error("usage: import_checkpoint.ts NAME.safetensors OUT_DIR DATA_DIR [NAME.json]");
}
const DEFAULT = "models/adaptmesh-bert-small";
await Deno.mkdir(out, { recursive: true });
const config = JSON.parse(await Deno.readTextFile(`${DEFAULT}/config.json`));
await Deno.writeTextFile(
  `${out}/config.json`,
  JSON.stringify({ ...config, torch_dtype: "float16" }, null, 2) + "\n",
);
// OUT_DIR may be the default's own folder (RECIPE.md's command): never copy a file onto itself.
const copy = async (from: string, to: string) => {
  const target = await Deno.realPath(to).catch(() => null); // null: `to` does not exist yet
  if (target !== (await Deno.realPath(from))) await Deno.copyFile(from, to);
};
await copy(`${DEFAULT}/vocab.txt`, `${out}/vocab.txt`);
await copy(weights, `${out}/model.safetensors`);

await initBackend("tfjs-wasm");
const meta = JSON.parse(await Deno.readTextFile(`${data}/meta.json`));
const flat = new Uint16Array((await Deno.readFile(`${data}/heldout.u16`)).buffer);
const L = meta.maxLen as number;
const seqs: Int32Array[] = [];
for (let i = 0; i < flat.length; i += L) {
  const row = flat.subarray(i, i + L);
  let n = L;
  while (n > 0 && row[n - 1] === 0) n--; // a short last sequence was padded with [PAD] = 0
  seqs.push(Int32Array.from(row.subarray(0, n)));
}
const tokenizer = await loadTokenizer(out);
const ck = await loadCheckpoint(out, { objective: "mlm" });
const model = (await initBackend("tfjs-wasm")).model(ck.config, ck.layout);
model.setWeights(ck.weights);
const result = await evaluateMlm(model, new MlmSet(seqs, tokenizer, meta.seed), meta.heldoutEval);
console.log(JSON.stringify({ checkpoint: out, ...result }));
if (record) {
  type Run = { name: string; curve: { mlm_loss: number; mlm_accuracy: number }[] };
  const json = JSON.parse(await Deno.readTextFile(record)) as Run | { runs: Run[] };
  const run = "runs" in json
    ? json.runs.find((r) => weights.endsWith(`${r.name}.safetensors`))
    : json;
  if (!run) throw new Error(`${record}: no run named after ${weights}`);
  const last = run.curve[run.curve.length - 1];
  const dLoss = Math.abs(last.mlm_loss - result.mlm_loss);
  const dAcc = Math.abs(last.mlm_accuracy - result.mlm_accuracy);
  console.log(JSON.stringify({ pytorch: last, lossDifference: dLoss, accuracyDifference: dAcc }));
  if (!(dLoss < 2e-3 && dAcc < 5e-3)) {
    console.error(`${record}: adaptmesh and PyTorch disagree on the held-out MLM evaluation`);
    Deno.exit(1);
  }
}
