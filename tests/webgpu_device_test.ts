/**
 * The engine's WebGPU device against the host device (shared/engine/devices/cpu/,
 * jsGemm): kernel by kernel, then whole gradients of EngineModel for every
 * adversary mode × objective × BERT/RoBERTa × dropout on/off (logits, loss
 * and every gradient element within 1e-4 of max |g|); bit-identical dropout
 * masks and δ_0; the counts of a fixed micro-batch after warm-up; the same
 * task twice giving the same bits. Runs on any adapter (llvmpipe here);
 * skipped with a printed reason where there is none. One GPU device serves
 * the whole file and is destroyed by its last test.
 */
import assert from "node:assert/strict";
import { EngineModel } from "../shared/engine/engine.ts";
import { cpuDevice } from "../shared/engine/devices/cpu/device.ts";
import { jsGemm } from "../shared/engine/devices/cpu/gemm.ts";
import {
  createWebGpuDevice,
  type GpuTensor,
  webgpuDevice,
} from "../shared/engine/devices/webgpu/device.ts";
import { Runtime } from "../shared/engine/devices/webgpu/runtime.ts";
import { rowLists } from "../shared/engine/devices/webgpu/layers.ts";
import type { BatchIndex, Device, NormState } from "../shared/engine/device.ts";
import { countsSince } from "../shared/engine/device.ts";
import type { AdversaryConfig } from "../shared/method/adversary_config.ts";
import { DEFAULT_ADVERSARY, NO_ADVERSARY } from "../shared/method/adversary_config.ts";
import { initialDeltaHost } from "../shared/method/adversary.ts";
import { fillDropoutMask } from "../shared/method/dropout_mask.ts";
import { positionIds } from "../shared/model/targets.ts";
import { Rng } from "../shared/method/rng.ts";
import { assertClose } from "./support/assert_close.ts";
import {
  ENGINE_DROPOUTS as DROPOUTS,
  ENGINE_MODELS as MODELS,
  engineModel as model,
  engineTask as task,
} from "./support/engine_cases.ts";

const gpu = await createWebGpuDevice();
if (!gpu) console.log("webgpu_device_test: skipped, no WebGPU adapter on this machine");
const ignore = gpu === null;
const cpu = cpuDevice(jsGemm);
const TOL = 1e-4;

type G = GpuTensor;

function rand(n: number, seed: number, scale = 1): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => scale * rng.normal());
}

/** The GPU device's buffer holding `data`. */
function up(dev: Device<G>, data: Float32Array): G {
  const t = dev.alloc(data.length);
  dev.write(t, data);
  return t;
}

async function down(dev: Device<G>, t: G): Promise<Float32Array> {
  return (await dev.read([t]))[0];
}

/** A batch index of B×L with some padding. */
function index(B: number, L: number, vocab: number, seed = 3): BatchIndex {
  const rng = new Rng(seed), N = B * L;
  const inputIds = new Int32Array(N), tokenTypeIds = new Int32Array(N);
  const attentionMask = new Uint8Array(N);
  for (let b = 0; b < B; b++) {
    const len = b === B - 1 ? 0 : L - (b % 3);
    for (let i = 0; i < L; i++) {
      inputIds[b * L + i] = rng.int(vocab);
      tokenTypeIds[b * L + i] = i >= len / 2 ? 1 : 0;
      attentionMask[b * L + i] = i < len ? 1 : 0;
    }
  }
  const positions = Int32Array.from({ length: N }, (_, n) => n % L);
  return { size: B, seqLen: L, inputIds, tokenTypeIds, positionIds: positions, attentionMask };
}

Deno.test({
  name: "webgpu gemm = jsGemm (tiled and direct): every transpose, strides, offsets, alpha, beta",
  ignore,
  fn: async () => {
    const tiled = webgpuDevice(new Runtime(gpu!.gpu), { gemm: "tiled" });
    const direct = webgpuDevice(new Runtime(gpu!.gpu), { gemm: "direct" });
    for (const dev of [tiled, direct]) await gemmCases(dev);
  },
});

/** gemm against jsGemm; beta = 0 ignores NaN in C. */
async function gemmCases(dev: Device<G>): Promise<void> {
  // Unaligned offsets and strides (the scalar kernels), then 16-byte aligned ones (vec4 on "direct").
  for (const aligned of [false, true]) {
    const up4 = (x: number) => aligned ? Math.ceil(x / 4) * 4 + 4 : x;
    const oa = aligned ? 4 : 5, ob = aligned ? 8 : 3;
    const sizes = aligned
      ? [[1, 1, 4], [5, 7, 3], [70, 33, 132], [36, 44, 130], [128, 65, 64]]
      : [[1, 1, 1], [5, 7, 3], [70, 33, 130], [128, 65, 64]];
    for (const [m, n, k] of sizes) {
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          for (const [alpha, beta] of [[1, 0], [0.5, 1], [2, -0.5]]) {
            const lda = up4((transA ? m : k) + 2), ldb = up4((transB ? k : n) + 1), ldc = n + 3;
            const aRows = transA ? k : m, bRows = transB ? n : k;
            const a = rand(aRows * lda + oa, 1), b = rand(bRows * ldb + ob, 2);
            const c = rand(m * ldc, 3);
            if (beta === 0) c.fill(NaN);
            const want = c.slice();
            jsGemm(
              transA,
              transB,
              m,
              n,
              k,
              alpha,
              a.subarray(oa),
              lda,
              b.subarray(ob),
              ldb,
              beta,
              want,
              ldc,
            );
            const ga = up(dev, a), gb = up(dev, b), gc = up(dev, c);
            dev.gemm(
              transA,
              transB,
              m,
              n,
              k,
              alpha,
              dev.view(ga, oa, a.length - oa),
              lda,
              dev.view(gb, ob, b.length - ob),
              ldb,
              beta,
              gc,
              ldc,
            );
            const got = await down(dev, gc);
            for (let i = 0; i < m; i++) {
              for (let j = n; j < ldc; j++) want[i * ldc + j] = got[i * ldc + j] = 0; // padding
            }
            assertClose(
              got,
              want,
              `gemm ${m}x${n}x${k} ${transA}${transB} α${alpha} β${beta} aligned=${aligned}`,
              1e-5,
            );
            for (const t of [ga, gb, gc]) dev.release(t);
          }
        }
      }
    }
  }
}

Deno.test({
  name: "webgpu dropout masks and δ_0 are bit-identical to the host's",
  ignore,
  fn: async () => {
    const dev = gpu!.device;
    for (const [seed, site, rate, n] of [[7, 0, 0.1, 1000], [12345, 1_000_001, 0.5, 777]]) {
      const want = fillDropoutMask(new Float32Array(n), seed, site, rate);
      const t = dev.alloc(n);
      dev.dropoutMask(t, seed, site, rate);
      assert.deepEqual(await down(dev, t), want, `mask ${seed}/${site}`);
      const rows = { starts: Int32Array.from([0, 300, 610]), width: 40 };
      const r = dev.alloc(120);
      dev.dropoutMask(r, seed, site, rate, rows);
      assert.deepEqual(
        await down(dev, r),
        fillDropoutMask(new Float32Array(120), seed, site, rate, rows),
      );
    }
    const batch = index(3, 5, 10);
    const key = { seed: 4, step: 9, index: 2 };
    const d = dev.alloc(3 * 5 * 8);
    dev.initDelta(d, batch, 8, 0.7, key);
    const want = initialDeltaHost(batch.attentionMask, 3, 5, 8, 0.7, key);
    assert.deepEqual(await down(dev, d), want);
    assert.ok(want.some((v) => v !== 0));
  },
});

Deno.test({
  name: "webgpu layer kernels = host kernels",
  ignore,
  fn: async () => {
    // The software adapter's kernels, then the hardware path's (workgroup LayerNorm and attention).
    for (const dev of [gpu!.device, webgpuDevice(new Runtime(gpu!.gpu), { gemm: "tiled" })]) {
      await layerCases(dev);
    }
  },
});

/** A kernel call on either device over its buffers. */
type OnDevice = <T>(d: Device<T>, b: T[]) => void;

/**
 * Runs `f` on the host device and on `dev` over copies of `inputs`; compares
 * every buffer after (to 2e-6 of max(max|host|, 1)).
 */
async function onBoth(dev: Device<G>, what: string, inputs: Float32Array[], f: OnDevice) {
  const hb = inputs.map((a) => a.slice());
  f(cpu, hb);
  const gb = inputs.map((a) => up(dev, a));
  f(dev, gb);
  const got = await dev.read(gb);
  got.forEach((g, i) => assertClose(g, hb[i], `${what} buffer ${i}`, 2e-6, 1));
  gb.forEach((t) => dev.release(t));
}

async function layerCases(dev: Device<G>): Promise<void> {
  {
    const R = 13, C = 70;
    const x = rand(R * C, 1), y = rand(R * C, 2), bias = rand(C, 3), mask = rand(R * C, 4);
    const gamma = rand(C, 5), beta = rand(C, 6);
    const both = (what: string, inputs: Float32Array[], f: OnDevice) =>
      onBoth(dev, what, inputs, f);
    await both("mul", [x, mask, y], (d, [a, m, o]) => d.mul(a, m, o));
    await both("add", [x, y], (d, [a, o]) => d.add(a, o));
    // 16-byte aligned views with lengths that are multiples of 4: the vec4 kernels.
    await both(
      "mul vec4",
      [x, mask, y],
      (d, [a, m, o]) => d.mul(d.view(a, 4, 900), d.view(m, 8, 900), d.view(o, 0, 900)),
    );
    await both("add vec4", [x, y], (d, [a, o]) => d.add(d.view(a, 4, 900), d.view(o, 8, 900)));
    await both("colSum vec4", [x, bias], (d, [a, b]) => d.colSum(a, R, 68, d.view(b, 0, 68)));
    await both("fill", [x], (d, [a]) => d.fill(a, 0.25));
    await both("addBias", [x, bias], (d, [a, b]) => d.addBias(a, b, R, C));
    await both("colSum", [x, bias], (d, [a, b]) => d.colSum(a, R, C, b));
    await both(
      "bdr",
      [x, bias, mask, y, y],
      (d, [a, b, m, r, o]) => d.biasDropoutResidual(a, b, m, r, o, R, C),
    );
    await both(
      "bdr no mask",
      [x, bias, y],
      (d, [a, b, r]) => d.biasDropoutResidual(a, b, null, r, a, R, C),
    );
    await both("gelu", [x, bias, y, mask], (d, [u, b, g, dv]) => d.biasGelu(u, b, g, dv, R, C));
    await both("gelu in place", [x, bias], (d, [u, b]) => d.biasGelu(u, b, u, null, R, C));
    await both("geluBackward", [x, y, bias], (d, [g, dv, b]) => d.geluBackward(g, dv, b, R, C));
    await both("tanh", [x, bias], (d, [a, b]) => d.biasTanh(a, b, R, C));
    await both("tanhBackward", [x, y, bias], (d, [a, t, b]) => d.tanhBackward(a, t, b, R, C));
    const rows = Int32Array.from([3, 0, 7]);
    await both("gather", [x, new Float32Array(3 * C)], (d, [a, o]) => d.gatherRows(a, rows, C, o));
    await both(
      "scatter",
      [new Float32Array(3 * C).fill(1.5), x],
      (d, [a, o]) => d.scatterRows(a, rows, C, o),
    );
    const norm = <T>(b: T[]): NormState<T> => ({
      x: b[0],
      gamma: b[1],
      mean: b[2],
      rstd: b[3],
      rows: R,
      cols: C,
    });
    const stats = [new Float32Array(R), new Float32Array(R)];
    await both(
      "layerNorm",
      [x, gamma, ...stats, beta, y],
      (d, b) => d.layerNorm(norm(b), b[4], b[5], 1e-5),
    );
    const lnMean = new Float32Array(R), lnRstd = new Float32Array(R);
    cpu.layerNorm(
      { x, gamma, mean: lnMean, rstd: lnRstd, rows: R, cols: C },
      beta,
      y.slice(),
      1e-5,
    );
    await both(
      "layerNormBackward",
      [x, gamma, lnMean, lnRstd, y, mask, bias, beta],
      (d, b) => d.layerNormBackward(norm(b), b[4], b[5], b[6], b[7]),
    );
    // Columns a multiple of 4, aligned views: the vec4 kernels (per-row ones on a software adapter).
    const norm4 = <T>(b: T[]): NormState<T> => ({ ...norm(b), cols: 68 });
    await both(
      "layerNorm vec4",
      [x, gamma, ...stats, beta, y],
      (d, b) => d.layerNorm(norm4(b), b[4], b[5], 1e-5),
    );
    {
      const m4 = new Float32Array(R), r4 = new Float32Array(R);
      cpu.layerNorm({ x, gamma, mean: m4, rstd: r4, rows: R, cols: 68 }, beta, y.slice(), 1e-5);
      await both(
        "layerNormBackward vec4",
        [x, gamma, m4, r4, y, mask, bias, beta],
        (d, b) => d.layerNormBackward(norm4(b), b[4], b[5], b[6], b[7]),
      );
    }
    await both(
      "layerNormBackward in place",
      [x, gamma, lnMean, lnRstd, y],
      (d, b) => d.layerNormBackward(norm(b), b[4], b[4], null, null),
    );
    const labels = Int32Array.from({ length: R }, (_, r) => (r * 7) % C);
    await both(
      "crossEntropy",
      [x, Float32Array.of(0.5), y],
      (d, [l, loss, dl]) => d.crossEntropy(l, labels, R, C, loss, 0.7, dl),
    );
    await both(
      "crossEntropy in place",
      [x, Float32Array.of(0)],
      (d, [l, loss]) => d.crossEntropy(l, labels, R, C, loss, 1, l),
    );
    const targets = rand(R, 9);
    await both(
      "mse",
      [x.subarray(0, R), Float32Array.of(1), y.subarray(0, R)],
      (d, [l, loss, dl]) => d.meanSquaredError(l, targets, R, loss, 0.5, dl),
    );
    const batch = index(4, 6, 11), H = 8, N = 24;
    const word = rand(11 * H, 11),
      pos = rand(6 * H, 12),
      type = rand(2 * H, 13),
      delta = rand(N * H, 14);
    await both(
      "embed",
      [new Float32Array(N * H), word, pos, type, delta],
      (d, [o, w, p, t, dl]) => d.embed(o, w, p, t, dl, batch, H),
    );
    await both(
      "embed clean",
      [new Float32Array(N * H), word, pos, type],
      (d, [o, w, p, t]) => d.embed(o, w, p, t, null, batch, H),
    );
    await both(
      "embedBackward",
      [delta, word, pos, type],
      (d, [dx, w, p, t]) => d.embedBackward(dx, w, p, t, batch, H),
    );
    for (
      const cfg of [DEFAULT_ADVERSARY, { ...DEFAULT_ADVERSARY, lr: 5, eps: 0.3 }, {
        ...DEFAULT_ADVERSARY,
        norm: "linf" as const,
        lr: 0.05,
        eps: 0.07,
      }]
    ) {
      await both(
        `ascend ${cfg.norm} ${cfg.lr}`,
        [rand(N * H, 15, 0.05), rand(N * H, 16)],
        (d, [dl, g]) => d.ascend(dl, g, batch, H, cfg),
      );
    }
    // hd 4: vec4 bindings; hd 3: float bindings (W = 1).
    for (const [L, hd] of [[6, 4], [70, 4], [6, 3]]) {
      const B = 3, nh = 2, Hh = nh * hd, b = index(B, L, 5, L);
      const shape = { batch: b, heads: nh, headDim: hd };
      const qkv = rand(B * L * 3 * Hh, 20),
        A = B * nh * L * L,
        dm = fillDropoutMask(new Float32Array(A), 1, 2, 0.3);
      for (const first of [false, true]) {
        const rowsQ = first ? 1 : L, Af = B * nh * rowsQ * L;
        const dmf = dm.subarray(0, Af);
        for (const drop of [false, true]) {
          const what = `attention L=${L} hd=${hd} first=${first} drop=${drop}`;
          const fwdInputs = [
            qkv,
            new Float32Array(Af),
            dmf,
            new Float32Array(Af),
            new Float32Array(B * rowsQ * Hh),
          ];
          await both(
            what,
            fwdInputs,
            (d, [q, p, m, pd, c]) =>
              (first ? d.attentionFirst : d.attention)(
                q,
                p,
                drop ? m : null,
                drop ? pd : p,
                c,
                shape,
              ),
          );
          const probs = new Float32Array(Af), dropped = new Float32Array(Af);
          (first ? cpu.attentionFirst : cpu.attention)(
            qkv,
            probs,
            drop ? dmf : null,
            drop ? dropped : probs,
            new Float32Array(B * rowsQ * Hh),
            shape,
          );
          const dctx = rand(B * rowsQ * Hh, 21);
          await both(
            `${what} backward`,
            [dctx, qkv, probs, dmf, dropped, rand(B * L * 3 * Hh, 22)],
            (d, [dc, q, p, m, pd, dq]) =>
              (first ? d.attentionFirstBackward : d.attentionBackward)(
                dc,
                q,
                p,
                drop ? m : null,
                drop ? pd : p,
                dq,
                shape,
              ),
          );
        }
      }
    }
  }
}

Deno.test({
  name: "webgpu kernels on views larger than one binding (a 1 KB binding cap) = host kernels",
  ignore,
  fn: async () => {
    for (const gemm of ["direct", "tiled"] as const) {
      const rt = new Runtime(gpu!.gpu, { maxBindingBytes: 1024 });
      assert.ok(rt.maxView < 256, `maxView ${rt.maxView}`);
      const dev = webgpuDevice(rt, { gemm });
      const both = (what: string, inputs: Float32Array[], f: OnDevice) =>
        onBoth(dev, `split ${what}`, inputs, f);
      const V = 100, H = 8, n = 1000;
      if (gemm === "direct") {
        const x = rand(n, 1), y = rand(n, 2), m = rand(n, 3);
        await both("fill", [x], (d, [a]) => d.fill(a, 0.25));
        await both("fill 0 of a view", [x], (d, [a]) => d.fill(d.view(a, 7, 900), 0));
        await both("add", [x, y], (d, [a, o]) => d.add(d.view(a, 3, 990), d.view(o, 5, 990)));
        await both("mul", [x, m, y], (d, [a, b, o]) => d.mul(a, b, o));
        const rows = Int32Array.from([3, 97, 50, 0, 99, 31]);
        const word = rand(V * H, 4);
        await both(
          "gather",
          [word, new Float32Array(rows.length * H)],
          (d, [a, o]) => d.gatherRows(a, rows, H, o),
        );
        await both(
          "scatter",
          [rand(rows.length * H, 5), word],
          (d, [a, o]) => d.scatterRows(a, rows, H, o),
        );
        const batch = index(4, 6, V), N = 24;
        const pos = rand(6 * H, 12), type = rand(2 * H, 13), delta = rand(N * H, 14);
        await both(
          "embed",
          [new Float32Array(N * H), word, pos, type, delta],
          (d, [o, w, p, t, dl]) => d.embed(o, w, p, t, dl, batch, H),
        );
        await both(
          "embedBackward",
          [delta, word, pos, type],
          (d, [dx, w, p, t]) => d.embedBackward(dx, w, p, t, batch, H),
        );
      }
      for (
        const [m, n, k] of [[20, 100, 8], [100, 8, 20], [20, 8, 100], [300, 3, 2], [4, 4, 300]]
      ) {
        for (const transA of [false, true]) {
          for (const transB of [false, true]) {
            for (const [alpha, beta] of [[1, 0], [0.5, 1]]) {
              const lda = transA ? m : k, ldb = transB ? k : n;
              const a = rand(m * k + 4, 6), b = rand(n * k, 7), c = rand(m * n, 8);
              await both(
                `gemm ${gemm} ${m}x${n}x${k} ${transA}${transB} β${beta}`,
                [a, b, c],
                (d, [ga, gb, gc]) =>
                  d.gemm(
                    transA,
                    transB,
                    m,
                    n,
                    k,
                    alpha,
                    d.view(ga, 4, m * k),
                    lda,
                    gb,
                    ldb,
                    beta,
                    gc,
                    n,
                  ),
              );
            }
          }
        }
      }
    }
  },
});

Deno.test("rowLists groups positions by row, in order", () => {
  const l = rowLists(Int32Array.from([5, 2, 5, 9, 2, 5]));
  assert.deepEqual([...l.rowIds], [2, 5, 9]);
  assert.deepEqual([...l.starts], [0, 2, 5, 6]);
  assert.deepEqual([...l.items], [1, 4, 0, 2, 5, 3]);
});

const MODES: AdversaryConfig[] = [
  NO_ADVERSARY,
  DEFAULT_ADVERSARY,
  { ...DEFAULT_ADVERSARY, steps: 2, init: 0.5 },
  { ...DEFAULT_ADVERSARY, norm: "linf", lr: 0.05, eps: 0.1 },
  { ...DEFAULT_ADVERSARY, norm: "linf", steps: 2, lr: 0.05, eps: 0.1 },
  { ...DEFAULT_ADVERSARY, mode: "freelb", steps: 2, init: 0.3 },
  { ...DEFAULT_ADVERSARY, mode: "freelb", steps: 3, lr: 2, eps: 0.5 },
];

for (const { name, over, mlm } of MODELS) {
  Deno.test({
    name: `webgpu engine = cpu engine: ${name}, every adversary mode, dropout off and on`,
    ignore,
    fn: async () => {
      const t = model(over, mlm);
      const host = new EngineModel(cpuDevice(jsGemm), t.config, t.layout);
      const dev = new EngineModel(gpu!.device, t.config, t.layout);
      host.setWeights(t.weights);
      dev.setWeights(t.weights);
      if (!mlm) {
        assertClose(await dev.logits(t.batch), await host.logits(t.batch), `${name} logits`);
      }
      for (const adv of MODES) {
        for (const drop of DROPOUTS) {
          const what = `${name} ${adv.mode} K=${adv.steps} ${adv.norm} dropout=${drop.hidden}`;
          const k = task(t, adv, drop);
          const want = await host.gradient(k), got = await dev.gradient(k);
          assert.ok(
            Math.abs(got.loss - want.loss) <= TOL * Math.abs(want.loss),
            `${what}: loss ${got.loss} vs ${want.loss}`,
          );
          assertClose(got.grad, want.grad, `${what} grad`);
        }
      }
      dev.dispose();
    },
  });
}

Deno.test({
  name:
    "webgpu engine with the word table split over bindings (vocab 2000, 32 KB cap) = cpu engine; " +
    "exact zeros where the cpu gradient is zero after another batch",
  ignore,
  fn: async () => {
    const capped = webgpuDevice(new Runtime(gpu!.gpu, { maxBindingBytes: 32768 }));
    for (const mlm of [false, true]) {
      const t = model({ vocab_size: 2000 }, mlm);
      assert.ok(t.config.vocabSize * t.config.hiddenSize > 32768 / 4, "the word table must split");
      const host = new EngineModel(cpuDevice(jsGemm), t.config, t.layout);
      const dev = new EngineModel(capped, t.config, t.layout);
      host.setWeights(t.weights);
      dev.setWeights(t.weights);
      const word = t.layout.specs.find((s) => s.name.endsWith("word_embeddings.weight"))!;
      const other = { ...t.batch, inputIds: t.batch.inputIds.map((id) => (id * 7 + 1000) % 2000) };
      for (const adv of [NO_ADVERSARY, DEFAULT_ADVERSARY]) {
        for (const drop of DROPOUTS) {
          for (const batch of [t.batch, other]) {
            const what = `capped mlm=${mlm} ${adv.mode} dropout=${drop.hidden}`;
            const k = { ...task(t, adv, drop), batch };
            const want = await host.gradient(k), got = await dev.gradient(k);
            assert.ok(Math.abs(got.loss - want.loss) <= TOL * Math.abs(want.loss), `${what}: loss`);
            assertClose(got.grad, want.grad, `${what} grad`);
            // The word rows the batch did not use (the previous batch did): exactly zero.
            for (let i = word.offset; i < word.offset + word.size; i++) {
              if (want.grad[i] === 0) assert.equal(got.grad[i], 0, `${what}: grad[${i}] not zero`);
            }
          }
        }
      }
      dev.dispose();
    }
  },
});

Deno.test({
  name: "webgpu engine: counts of a micro-batch after warm-up; the same task twice, the same bits",
  ignore,
  fn: async () => {
    const t = model({}, false);
    const m = new EngineModel(gpu!.device, t.config, t.layout);
    m.setWeights(t.weights);
    for (const adv of [NO_ADVERSARY, DEFAULT_ADVERSARY]) {
      for (const drop of DROPOUTS) {
        const k = task(t, { ...adv, init: 0.2 }, drop);
        const first = await m.gradient(k);
        const before = gpu!.counts();
        const again = await m.gradient(k);
        const c = countsSince(before, gpu!.counts());
        const what = `${adv.mode} dropout=${drop.hidden}`;
        assert.deepEqual(again.grad, first.grad, `${what}: same bits`);
        assert.equal(again.loss, first.loss);
        assert.equal(c.readbacks, 1, `${what}: readbacks`);
        assert.equal(c.submits, 1, `${what}: submits`);
        assert.equal(c.pipelinesCompiled, 0, `${what}: pipelines`);
        assert.equal(c.hostRandom, 0, `${what}: host random numbers`);
        assert.ok(c.dispatches > 0);
      }
    }
    m.dispose();
    // The host device counts too: kernel calls, one read, its host-made random numbers.
    const h = cpuDevice(jsGemm), hm = new EngineModel(h, t.config, t.layout);
    hm.setWeights(t.weights);
    const before = h.counts!();
    await hm.gradient(task(t, DEFAULT_ADVERSARY, DROPOUTS[1]));
    const c = countsSince(before, h.counts!());
    assert.equal(c.readbacks, 1);
    assert.equal(c.pipelinesCompiled, 0);
    assert.ok(c.dispatches > 0 && c.hostRandom > 0);
    void positionIds;
  },
});

Deno.test({
  name: "webgpu device: destroyed at the end of the file",
  ignore,
  fn: () => gpu!.destroy(),
});
