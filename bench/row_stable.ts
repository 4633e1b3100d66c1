/**
 * What row-stable scoring costs (shared/engine/devices/cpu/device.ts,
 * `rowStableGemm`): the engine's logits — what `deno task predict` and
 * `deno task evaluate` compute — with plain BLAS calls and with every call
 * cut into 8-row calls, on the built-in small BERT's shape (hidden 128, 2
 * layers) and a BERT-base-wide one (hidden 768, 2 layers), batches of 32
 * examples × 128 tokens, random weights and tokens. Prints examples/s (the
 * median of the runs, plain and row-stable alternating) per BLAS thread count.
 * `deno run -A bench/row_stable.ts [runs]`.
 *
 * @module
 */
import { loadBlas } from "../shared/engine/devices/cpu/blas.ts";
import { cpuBackend } from "../shared/compute/create.ts";
import { defaultModelConfigJson } from "../shared/model/default_model.ts";
import { parseModelConfig } from "../shared/model/config.ts";
import { paramLayout } from "../shared/model/param_layout.ts";
import { initWeights } from "../shared/io/checkpoint.ts";
import type { HostBatch } from "../shared/model/batch.ts";

const runs = Number(Deno.args[0] ?? 5);
const blas = loadBlas({}).blas;
if (!blas) throw new Error("no BLAS library loads");
console.log(blas.describe());

const SHAPES: Record<string, Record<string, unknown>> = {
  "small (128)": {},
  "base-wide (768)": { hidden_size: 768, intermediate_size: 3072, num_attention_heads: 12 },
};
const size = 32, seqLen = 128;
let seed = 3;
const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
const batch: HostBatch = {
  inputIds: Int32Array.from({ length: size * seqLen }, () => 1000 + Math.floor(rnd() * 20000)),
  tokenTypeIds: new Int32Array(size * seqLen),
  attentionMask: new Uint8Array(size * seqLen).fill(1),
  size,
  seqLen,
};

const median = (xs: number[]) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
for (const [name, over] of Object.entries(SHAPES)) {
  const config = parseModelConfig({ ...defaultModelConfigJson(2), ...over });
  const layout = paramLayout(config, "classify");
  const weights = initWeights(config, 1);
  for (const threads of [1, 2]) {
    blas.setThreads(threads);
    const models = [false, true].map((rowStable) => {
      const m = cpuBackend(blas.gemm).model(config, layout, { rowStable });
      m.setWeights(weights);
      return m;
    });
    const times: number[][] = [[], []];
    for (const m of models) await m.logits(batch); // warm-up
    for (let r = 0; r < runs; r++) {
      for (const [i, m] of models.entries()) {
        const t0 = performance.now();
        await m.logits(batch);
        times[i].push(performance.now() - t0);
      }
    }
    const [plain, stable] = times.map((t) => size / (median(t) / 1000));
    console.log(
      `${name}, ${threads} thread(s): plain ${plain.toFixed(1)} ex/s, row-stable ` +
        `${stable.toFixed(1)} ex/s (${((plain / stable - 1) * 100).toFixed(0)}% more time)`,
    );
    for (const m of models) m.dispose();
  }
}
