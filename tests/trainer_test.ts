/**
 * The trainer's step: how micro-batch results are weighted into the global
 * step, checked through what the step reports.
 */
import assert from "node:assert/strict";
import { initBackend } from "../shared/compute/create.ts";
import { parseRunFlags } from "../coordinator/run_config.ts";
import { type RunSummary, Trainer, type TrainerObserver } from "../coordinator/trainer.ts";
import { Scheduler } from "../coordinator/scheduler.ts";
import { InProcessWorker } from "./support/in_process.ts";
import { TINY_VOCAB, tinyModelDir, tinyRunArgs, tinyTaskDir } from "./support/fixtures.ts";
import { mixSeed, Rng } from "../shared/method/rng.ts";

await initBackend("tfjs-wasm");
const model = await tinyModelDir();
const task = await tinyTaskDir();

/** Loss and gradient norm of step 1 of a pre-training run split into micro-batches of `micro`. */
async function firstStep(micro: number): Promise<{ loss: number; gradNorm: number }> {
  const args = tinyRunArgs(model, task, [
    "--objective",
    "mlm",
    "--corpus-docs",
    "3",
    "--max-len",
    "32",
    "--steps",
    "1",
    "--global-batch",
    "8",
    "--micro-batch",
    String(micro),
    "--adv",
    "off",
    "--dropout",
    "0",
    "--eval-limit",
    "8",
  ]);
  let out: { loss: number; gradNorm: number } | null = null;
  await pretrain(args, { step: (s) => out ??= { loss: s.loss, gradNorm: s.gradNorm } });
  assert.ok(out, "the step was reported");
  return out;
}

/** A whole pre-training run on one in-process worker. */
async function pretrain(args: string[], observer: TrainerObserver = {}): Promise<RunSummary> {
  const { config } = await parseRunFlags(args, {}, "");
  const trainer = await Trainer.create(config);
  const scheduler = new Scheduler({ gradLayout: trainer.gradLayout, taskTimeoutMs: 0 });
  const w = new InProcessWorker("w", scheduler, trainer);
  const summary = await trainer.run(scheduler, observer);
  await w.settle();
  return summary;
}

Deno.test("MLM micro-batches are weighted by predicted tokens: the step does not depend on the split", async () => {
  // The global loss is the mean over every masked token of the global batch.
  // Micro-batches hold different numbers of masked tokens, so weighting them
  // by examples would make the reported loss and gradient depend on the split.
  const whole = await firstStep(8);
  for (const micro of [2, 4]) {
    const split = await firstStep(micro);
    assert.ok(
      Math.abs(split.loss - whole.loss) <= 1e-5 * whole.loss,
      `micro-batch ${micro}: loss ${split.loss} vs ${whole.loss}`,
    );
    assert.ok(
      Math.abs(split.gradNorm - whole.gradNorm) <= 1e-4 * whole.gradNorm,
      `micro-batch ${micro}: gradient norm ${split.gradNorm} vs ${whole.gradNorm}`,
    );
  }
});

Deno.test("MLM pre-training learns from context: a rule no unigram model can predict", async () => {
  // Every document walks the fixture words in a fixed cyclic order from a
  // random start, so a masked word is fixed by its neighbours, while a model
  // of word frequencies alone is right about 1 time in WORDS.length.
  const words = TINY_VOCAB.slice(5);
  const rng = new Rng(mixSeed(3));
  const lines = Array.from({ length: 1500 }, () => {
    const start = rng.int(words.length);
    return Array.from({ length: 40 }, (_, i) => words[(start + i) % words.length]).join(" ");
  });
  const corpus = await Deno.makeTempFile({ suffix: ".txt" });
  await Deno.writeTextFile(corpus, lines.join("\n") + "\n");
  const args = tinyRunArgs(model, task, [
    "--objective",
    "mlm",
    "--corpus",
    corpus,
    "--max-len",
    "32",
    "--steps",
    "600",
    "--global-batch",
    "32",
    "--micro-batch",
    "16",
    "--optimizer",
    "adamw",
    "--lr",
    "1e-2",
    "--warmup",
    "10",
    "--adv",
    "off",
    "--dropout",
    "0",
  ]);
  const summary = await pretrain(args);
  await Deno.remove(corpus);
  const acc = summary.evaluation?.mlm_accuracy ?? 0;
  console.log(`held-out MLM accuracy ${acc} (unigram ≈ ${(1 / words.length).toFixed(3)})`);
  assert.ok(acc > 0.4, `held-out MLM accuracy ${acc}`);
});

Deno.test("a fresh MLM head starts from the corpus's unigram log-frequencies", async () => {
  const corpus = await Deno.makeTempFile({ suffix: ".txt" });
  await Deno.writeTextFile(corpus, "good good good movie the good plot\n");
  const args = tinyRunArgs(model, task, ["--objective", "mlm", "--corpus", corpus, "--steps", "1"]);
  const { config } = await parseRunFlags(args, {}, "");
  const trainer = await Trainer.create(config);
  await Deno.remove(corpus);
  const spec = trainer.layout.byName.get("cls.predictions.bias")!;
  const bias = trainer.weights.subarray(spec.offset, spec.offset + spec.size);
  const at = (w: string) => bias[TINY_VOCAB.indexOf(w)];
  // One document (line 1 is a training line): 7 predictable tokens (good ×4, movie, the, plot),
  // add-½ smoothing over the vocabulary.
  const total = 7 + 0.5 * TINY_VOCAB.length;
  assert.ok(Math.abs(at("good") - Math.log(4.5 / total)) < 1e-5, `good: ${at("good")}`);
  assert.ok(Math.abs(at("movie") - Math.log(1.5 / total)) < 1e-5, `movie: ${at("movie")}`);
  assert.ok(trainer.notes.some((n) => n.includes("unigram")), trainer.notes.join("; "));
});

Deno.test("a step reports the norm of the update it applied", async () => {
  const { config } = await parseRunFlags(tinyRunArgs(model, task, ["--steps", "1"]), {}, "");
  const trainer = await Trainer.create(config);
  const before = trainer.weights.slice();
  const scheduler = new Scheduler({ gradLayout: trainer.gradLayout, taskTimeoutMs: 0 });
  const w = new InProcessWorker("w", scheduler, trainer);
  let updateNorm = NaN;
  await trainer.run(scheduler, { step: (r) => updateNorm = r.updateNorm });
  await w.settle();
  let sq = 0;
  for (let i = 0; i < before.length; i++) sq += (trainer.weights[i] - before[i]) ** 2;
  assert.ok(updateNorm > 0, `updateNorm ${updateNorm}`);
  // The report is the float64 update; the weights moved by its float32 rounding.
  assert.ok(
    Math.abs(Math.sqrt(sq) - updateNorm) <= 1e-3 * updateNorm,
    `${Math.sqrt(sq)} vs ${updateNorm}`,
  );
});
