/**
 * Identical inputs, identical logits on the cpu engine when scoring
 * (shared/engine/devices/cpu/device.ts, `rowStableGemm`): a row's bits do
 * not depend on its place in the matrix nor on the row count, an example's
 * logits not on its place in the batch nor on the batch size — through the
 * scoring compute and through `deno task predict --backend cpu`. Needs a
 * BLAS library (skipped without one); the plain calls are shown to differ
 * (logged: whether they do depends on the library and CPU).
 */
import assert from "node:assert/strict";
import { loadBlas } from "../shared/engine/devices/cpu/blas.ts";
import { jsGemm } from "../shared/engine/devices/cpu/gemm.ts";
import { ROW_STABLE_ROWS, rowStableGemm } from "../shared/engine/devices/cpu/device.ts";
import { cpuBackend } from "../shared/compute/create.ts";
import { loadCheckpoint } from "../shared/io/checkpoint.ts";
import { loadTokenizer } from "../shared/text/tokenizer.ts";
import { EncodedSet } from "../shared/data/batching.ts";
import { tinyModelDir } from "./support/fixtures.ts";
import { runDeno } from "./support/processes.ts";

const blas = loadBlas({ threads: 1 }).blas;
const ignore = blas === null;

let seed = 7;
const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) - 0.5;

/** The bits of a float row, as a string key. */
const key = (v: Float32Array) => Array.from(new Uint32Array(v.slice().buffer)).join(",");

Deno.test({
  name: "rowStableGemm: a repeated row of A gives the same bits at every place, for M = 1..40",
  ignore,
  fn() {
    const n = 96, k = 80;
    const row = Float32Array.from({ length: k }, rnd);
    const b = Float32Array.from({ length: n * k }, rnd);
    const c0 = Float32Array.from({ length: n }, rnd);
    for (const transA of [false, true]) {
      for (const beta of [0, 1]) {
        const stable = rowStableGemm(blas!.gemm);
        const seen = new Set<string>(), plain = new Set<string>();
        for (let m = 1; m <= 40; m++) {
          // op(A): m copies of `row` (transA: stored k × m with a wider leading dimension).
          const lda = transA ? m + 3 : k + 5;
          const a = new Float32Array(transA ? k * lda : m * lda);
          for (let i = 0; i < m; i++) {
            for (let p = 0; p < k; p++) a[transA ? p * lda + i : i * lda + p] = row[p];
          }
          const ldc = n + 2;
          for (const [g, into] of [[stable, seen], [blas!.gemm, plain]] as const) {
            const c = new Float32Array(m * ldc);
            for (let i = 0; i < m; i++) c.set(c0, i * ldc);
            g(transA, true, m, n, k, 1, a, lda, b, k, beta, c, ldc);
            for (let i = 0; i < m; i++) into.add(key(c.subarray(i * ldc, i * ldc + n)));
            if (g === stable) {
              const want = new Float32Array(m * ldc);
              for (let i = 0; i < m; i++) want.set(c0, i * ldc);
              jsGemm(transA, true, m, n, k, 1, a, lda, b, k, beta, want, ldc);
              for (let i = 0; i < c.length; i++) {
                assert.ok(Math.abs(c[i] - want[i]) < 1e-4, `m=${m} at ${i}: ${c[i]} vs ${want[i]}`);
              }
            }
          }
        }
        console.log(
          `transA=${transA} beta=${beta}: row-stable ${seen.size} result(s), plain ${plain.size}`,
        );
        assert.equal(seen.size, 1, `row-stable gemm: ${seen.size} different results`);
      }
    }
  },
});

/** A tiny model large enough for the BLAS's blocked paths, and its tokenizer. */
async function scoringFixture() {
  const dir = await tinyModelDir(11, {
    hidden_size: 64,
    intermediate_size: 128,
    num_attention_heads: 4,
    num_labels: 3,
  });
  return { dir, ck: await loadCheckpoint(dir), tokenizer: await loadTokenizer(dir) };
}

const TEXT = "the movie was not really good but the plot is fun";

Deno.test({
  name: "the scoring compute gives one example the same logits at every place, batch sizes 1..12",
  ignore,
  async fn() {
    const { dir, ck, tokenizer } = await scoringFixture();
    const others = ["a dull film", "the actor was great", "boring", "lovely story very fun"];
    const examples = [TEXT, ...others].map((text) => ({ text, label: 0 }));
    const set = new EncodedSet(examples, tokenizer, 32);
    const n = ck.config.numLabels;
    for (const rowStable of [true, false]) {
      const model = cpuBackend(blas!.gemm).model(ck.config, ck.layout, { rowStable });
      model.setWeights(ck.weights);
      const seen = new Set<string>();
      for (let size = 1; size <= 12; size++) {
        // The example at every other place; the rest of the batch other texts.
        const idx = Array.from({ length: size }, (_, i) => i % 2 === 0 ? 0 : 1 + (i % 4));
        const logits = await model.logits(set.batch(idx));
        idx.forEach((e, i) => e === 0 && seen.add(key(logits.subarray(i * n, i * n + n))));
      }
      model.dispose();
      console.log(`rowStable=${rowStable}: ${seen.size} different logits for one example`);
      if (rowStable) assert.equal(seen.size, 1, `${seen.size} different logits`);
    }
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "deno task predict --backend cpu: the same line gives bit-identical logits in any batch",
  ignore,
  async fn() {
    const { dir } = await scoringFixture();
    const input = await Deno.makeTempFile({ suffix: ".jsonl" });
    await Deno.writeTextFile(input, `${JSON.stringify({ text: TEXT })}\n`.repeat(13));
    const logits = new Set<string>();
    for (const bs of ["1", "5", "12"]) {
      const r = await runDeno("shared/cli/predict.ts", [
        "--model",
        dir,
        "--input",
        input,
        "--backend",
        "cpu",
        "--threads",
        "1",
        "--batch-size",
        bs,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.trim().split("\n");
      assert.equal(lines.length, 13);
      for (const l of lines) logits.add(JSON.stringify(JSON.parse(l).logits));
    }
    assert.equal(logits.size, 1, [...logits].join("\n"));
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(input);
  },
});

Deno.test("rowStableGemm computes in calls of exactly ROW_STABLE_ROWS rows (padded at the end)", () => {
  const calls: number[] = [];
  const spy = rowStableGemm((...args) => {
    calls.push(args[2]);
    jsGemm(...args);
  });
  const m = 19, n = 3, k = 2;
  const a = Float32Array.from({ length: m * k }, rnd),
    b = Float32Array.from({ length: k * n }, rnd);
  const c = new Float32Array(m * n), want = new Float32Array(m * n);
  spy(false, false, m, n, k, 1, a, k, b, n, 0, c, n);
  jsGemm(false, false, m, n, k, 1, a, k, b, n, 0, want, n);
  assert.deepEqual(calls, [ROW_STABLE_ROWS, ROW_STABLE_ROWS, ROW_STABLE_ROWS]);
  assert.deepEqual(c, want);
});
