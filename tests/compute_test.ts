/**
 * worker/compute.ts on the cpu backend (the engine): the same results as the
 * tfjs-wasm path — logits-level agreement is the engine's test; here the
 * worker's whole answer: loss, count, rows and the row-sparse (classifier)
 * or dense (MLM) gradient, on every adversary mode, with dropout — and the
 * same bits for the same task; deterministic runs pin the BLAS to one thread.
 */
import assert from "node:assert/strict";
import { cpuBackend, initBackend } from "../shared/compute/create.ts";
import type { ComputeBackend } from "../shared/compute/model_compute.ts";
import {
  type AdversaryConfig,
  DEFAULT_ADVERSARY,
  NO_ADVERSARY,
} from "../shared/method/adversary_config.ts";
import { jsGemm } from "../shared/engine/devices/cpu/gemm.ts";
import { IGNORE_INDEX } from "../shared/model/targets.ts";
import type { Objective } from "../shared/model/param_layout.ts";
import type { ResultMessage, TaskMessage, WelcomeMessage } from "../shared/wire/protocol.ts";
import { Rng } from "../shared/method/rng.ts";
import { WorkerCompute } from "../worker/compute.ts";
import { TINY_HF_CONFIG, tinyBatch, tinyConfig, tinyWeights } from "./support/tiny.ts";
import { testGemms } from "./support/backends.ts";
import { paramLayout } from "../shared/model/param_layout.ts";

const gemms = testGemms();
const blas = gemms.find((g) => g.blas)?.blas ?? null;

/** The engines under test: the machine's BLAS (when it loads, at 2 threads) and the JS gemm. */
const engines: [string, ComputeBackend][] = gemms.map((
  g,
) => [g.name, g.blas ? cpuBackend(g.gemm, { blas: g.blas, threads: 2 }) : cpuBackend(g.gemm)]);

const HF = { ...TINY_HF_CONFIG, hidden_dropout_prob: 0.1, attention_probs_dropout_prob: 0.1 };

const MODES: [string, AdversaryConfig][] = [
  ["off", NO_ADVERSARY],
  ["pgd K=1", { ...DEFAULT_ADVERSARY, init: 0.5 }],
  ["pgd K=2 linf", { ...DEFAULT_ADVERSARY, steps: 2, norm: "linf", init: 0.5 }],
  ["freelb K=2", { ...DEFAULT_ADVERSARY, mode: "freelb", steps: 2, init: 0.5 }],
];

function welcome(objective: Objective, deterministic = false): WelcomeMessage {
  return {
    type: "welcome",
    workerId: "w",
    runId: `run-${objective}`,
    modelConfig: HF,
    objective,
    dropout: null,
    deterministic,
    gradEncoding: "f32",
  };
}

/** A worker holding the run's weights (version 1). */
function worker(backend: ComputeBackend, objective: Objective, deterministic = false) {
  const w = new WorkerCompute(backend);
  const config = w.welcome(welcome(objective, deterministic));
  const layout = paramLayout(config, objective);
  w.weights({
    type: "weights",
    runId: `run-${objective}`,
    version: 1,
    encoding: "f32",
    data: tinyWeights(layout, 5),
  });
  return { w, config };
}

function task(objective: Objective, adversary: AdversaryConfig): TaskMessage {
  const config = tinyConfig({ num_labels: 3 });
  const batch = tinyBatch(config, 4, 7, 9);
  let labels = batch.labels;
  if (objective === "mlm") {
    const rng = new Rng(4);
    labels = new Float32Array(batch.size * batch.seqLen).map((_, i) =>
      batch.attentionMask[i] && rng.next() < 0.4 ? 2 + rng.int(HF.vocab_size - 2) : IGNORE_INDEX
    );
  }
  return {
    type: "task",
    taskId: 1,
    runId: `run-${objective}`,
    step: 3,
    index: 1,
    weightsVersion: 1,
    seed: 77,
    adversary,
    batch: { ...batch, labels },
    hold: false,
  };
}

function assertSameResult(got: ResultMessage, want: ResultMessage, what: string): void {
  assert.equal(got.count, want.count, `${what}: count`);
  assert.deepEqual(got.rows, want.rows, `${what}: rows`);
  assert.equal(got.grad.length, want.grad.length, `${what}: gradient length`);
  assert.ok(Math.abs(got.loss - want.loss) <= 1e-4 * Math.max(1, Math.abs(want.loss)), what);
  let scale = 0;
  for (const g of want.grad) scale = Math.max(scale, Math.abs(g));
  assert.ok(scale > 0, `${what}: a zero gradient proves nothing`);
  for (let i = 0; i < want.grad.length; i++) {
    const d = Math.abs(got.grad[i] - want.grad[i]);
    assert.ok(d <= 1e-4 * scale, `${what}: grad[${i}] ${got.grad[i]} vs ${want.grad[i]}`);
  }
}

for (const objective of ["classify", "mlm"] as const) {
  Deno.test(`cpu worker = tfjs-wasm worker on every adversary mode, dropout on (${objective})`, async () => {
    const ref = worker(await initBackend("tfjs-wasm"), objective);
    assert.equal(ref.w.backend.name, "tfjs-wasm");
    for (const [name, cpu] of engines) {
      const n = worker(cpu, objective);
      assert.equal(n.w.backend.name, "cpu");
      for (const [mode, adv] of MODES) {
        const t = task(objective, adv);
        const want = await ref.w.task(t);
        const got = await n.w.task(t);
        // Classifier: row-sparse word embeddings; MLM: dense.
        assert.equal(want.rows === undefined, objective === "mlm");
        assertSameResult(got, want, `${name} ${objective} ${mode}`);
      }
      n.w.dispose();
    }
    ref.w.dispose();
  });
}

Deno.test({
  name: "cpu worker: same task, same bits; a deterministic run pins the BLAS to one thread",
  ignore: !blas || !blas.threadControl,
  async fn() {
    const before = blas!.threads();
    try {
      const cpu = cpuBackend(blas!.gemm, { blas: blas!, threads: 2 });
      const free = worker(cpu, "classify");
      assert.equal(blas!.threads(), 2);
      const t = task("classify", MODES[1][1]);
      const a = await free.w.task(t), b = await free.w.task(t);
      assert.deepEqual(a.grad, b.grad);
      assert.equal(a.loss, b.loss);
      const det = worker(cpu, "classify", true);
      assert.equal(blas!.threads(), 1, "deterministic: one BLAS thread");
      const c = await det.w.task(t);
      // Another process's setting in between must not change a deterministic worker's bits.
      blas!.setThreads(2);
      const d = await det.w.task(t);
      assert.deepEqual(c.grad, d.grad);
      assert.equal(blas!.threads(), 1);
      // A non-deterministic run gets its threads back.
      await free.w.task(t);
      assert.equal(blas!.threads(), 2);
      free.w.dispose();
      det.w.dispose();
    } finally {
      if (before !== null) blas!.setThreads(before);
    }
  },
});

Deno.test("cpu worker: a reconnect to the same run keeps its weights; a new run drops them", async () => {
  const n = worker(cpuBackend(jsGemm), "classify");
  const t = task("classify", MODES[0][1]);
  const first = await n.w.task(t);
  n.w.welcome(welcome("classify"));
  assert.equal(n.w.version, 1);
  assert.deepEqual((await n.w.task(t)).grad, first.grad);
  n.w.welcome({ ...welcome("classify"), runId: "other" });
  assert.equal(n.w.version, -1);
  await assert.rejects(n.w.task({ ...t, runId: "other" }), /worker holds -1/);
  n.w.dispose();
});
