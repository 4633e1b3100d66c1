/**
 * Multi-head self-attention on the WebGPU device, fused: the forward is one
 * dispatch with a workgroup per (query, example·head) that forms the scores
 * Q·Kᵀ/√d, masks padding keys, takes the softmax, applies the dropout mask
 * and multiplies by V, reading Q, K and V in place from the packed [N, 3H]
 * projection and writing its head's columns of ctx. The backward is two:
 * per query row dS = P ⊙ (dP − rowsum(dP ⊙ P)) with dP = (dctx·Vᵀ)·mask and
 * dQ = dS·K/√d; per key row dK = dSᵀ·Q/√d and dV = P'ᵀ·dctx. The
 * first-query variants (the last layer under a classifier) run the same
 * kernels over one query. Semantics: shared/engine/devices/cpu/attention.ts.
 *
 * @module
 */
import type { AttentionBackwardKernel, AttentionKernel, AttentionShape } from "../../device.ts";
import { f32Bits, type GpuTensor, type Kernel, type Runtime } from "./runtime.ts";
import { REDUCE, WG } from "./wgsl.ts";

type G = GpuTensor;

/** Constants and indices every attention kernel starts with (one pipeline per L, head size). */
function prelude(L: number, hd: number): string {
  return `${REDUCE}
const L: u32 = ${L}u;
const HD: u32 = ${hd}u;`;
}

const HEAD = `init();
  let NH = pu(PB); let rows = pu(PB + 1u); let scale = pf(PB + 2u);
  let H = NH * HD; let LD = 3u * H;
  let ba = wid.y; let b = ba / NH; let a = ba % NH;
  let base = b * L * LD + a * HD;
  let po = ba * rows * L;
  let tid = lid.x;`;

const MAIN = `@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>)`;

function forwardKernel(L: number, hd: number, drop: boolean): Kernel {
  return {
    name: drop ? "attentionDrop" : "attention",
    bindings: [
      ["qkv", "f32"],
      ["mask", "u32"],
      ["probs", "f32"],
      ...(drop ? [["dm", "f32"] as const, ["dropped", "f32"] as const] : []),
      ["ctx", "f32"],
    ],
    workgroup: [WG],
    body: `${prelude(L, hd)}
var<workgroup> qs: array<f32, HD>;
var<workgroup> ps: array<f32, L>;
${MAIN} {
  ${HEAD}
  let q = wid.x;
  for (var j = tid; j < HD; j += ${WG}u) { qs[j] = qkv[qkv_o + base + q * LD + j]; }
  workgroupBarrier();
  var mx = -3.0e38; var real = 0.0;
  for (var k = tid; k < L; k += ${WG}u) {
    var s = 0.0;
    if (mask[mask_o + b * L + k] != 0u) {
      let ko = qkv_o + base + k * LD + H;
      for (var j = 0u; j < HD; j++) { s = fma(qs[j], qkv[ko + j], s); }
      s = s * scale;
      mx = max(mx, s);
      real += 1.0;
    }
    ps[k] = s;
  }
  let m = wmax(mx, tid);
  let nreal = wsum(real, tid);
  var z = 0.0;
  for (var k = tid; k < L; k += ${WG}u) {
    var e = 0.0;
    if (mask[mask_o + b * L + k] != 0u) { e = exp(ps[k] - m); }
    ps[k] = e;
    z += e;
  }
  let inv = 1.0 / wsum(z, tid);
  for (var k = tid; k < L; k += ${WG}u) {
    var p = ps[k] * inv;
    if (nreal == 0.0) { p = 1.0 / f32(L); }
    let at = po + q * L + k;
    probs[probs_o + at] = p;
    ${drop ? "p = p * dm[dm_o + at]; dropped[dropped_o + at] = p;" : ""}
    ps[k] = p;
  }
  workgroupBarrier();
  for (var j = tid; j < HD; j += ${WG}u) {
    var acc = 0.0;
    let vo = qkv_o + b * L * LD + 2u * H + a * HD + j;
    for (var k = 0u; k < L; k++) { acc = fma(ps[k], qkv[vo + k * LD], acc); }
    ctx[ctx_o + (b * rows + q) * H + a * HD + j] = acc;
  }
}`,
  };
}

/** Backward per query row: dS into `ds`, dQ into dqkv. */
function backwardRowsKernel(L: number, hd: number, drop: boolean): Kernel {
  return {
    name: drop ? "attentionBackwardRowsDrop" : "attentionBackwardRows",
    bindings: [
      ["dctx", "f32"],
      ["qkv", "f32"],
      ["probs", "f32"],
      ...(drop ? [["dm", "f32"] as const] : []),
      ["ds", "f32"],
      ["dqkv", "f32"],
    ],
    workgroup: [WG],
    body: `${prelude(L, hd)}
var<workgroup> dcs: array<f32, HD>;
var<workgroup> ss: array<f32, L>;
${MAIN} {
  ${HEAD}
  let q = wid.x;
  for (var j = tid; j < HD; j += ${WG}u) { dcs[j] = dctx[dctx_o + (b * rows + q) * H + a * HD + j]; }
  workgroupBarrier();
  var dot = 0.0;
  for (var k = tid; k < L; k += ${WG}u) {
    let vo = qkv_o + base + k * LD + 2u * H;
    var dp = 0.0;
    for (var j = 0u; j < HD; j++) { dp = fma(dcs[j], qkv[vo + j], dp); }
    let at = po + q * L + k;
    ${drop ? "dp = dp * dm[dm_o + at];" : ""}
    ss[k] = dp;
    dot += dp * probs[probs_o + at];
  }
  let D = wsum(dot, tid);
  for (var k = tid; k < L; k += ${WG}u) {
    let at = po + q * L + k;
    let s = probs[probs_o + at] * (ss[k] - D);
    ss[k] = s;
    ds[ds_o + at] = s;
  }
  workgroupBarrier();
  for (var j = tid; j < HD; j += ${WG}u) {
    var acc = 0.0;
    let ko = qkv_o + base + H + j;
    for (var k = 0u; k < L; k++) { acc = fma(ss[k], qkv[ko + k * LD], acc); }
    dqkv[dqkv_o + base + q * LD + j] = acc * scale;
  }
}`,
  };
}

/** Backward per key row: dK, dV (and zero dQ at queries past `rows`). */
function backwardKeysKernel(L: number, hd: number): Kernel {
  return {
    name: "attentionBackwardKeys",
    bindings: [["dctx", "f32"], ["qkv", "f32"], ["ds", "f32"], ["pd", "f32"], ["dqkv", "f32"]],
    workgroup: [WG],
    body: `${prelude(L, hd)}
var<workgroup> cs: array<f32, L>;
var<workgroup> pds: array<f32, L>;
${MAIN} {
  ${HEAD}
  let k = wid.x;
  for (var q = tid; q < rows; q += ${WG}u) {
    cs[q] = ds[ds_o + po + q * L + k];
    pds[q] = pd[pd_o + po + q * L + k];
  }
  workgroupBarrier();
  for (var j = tid; j < HD; j += ${WG}u) {
    var dk = 0.0; var dv = 0.0;
    for (var q = 0u; q < rows; q++) {
      dk = fma(cs[q], qkv[qkv_o + base + q * LD + j], dk);
      dv = fma(pds[q], dctx[dctx_o + (b * rows + q) * H + a * HD + j], dv);
    }
    let at = dqkv_o + base + k * LD + j;
    dqkv[at + H] = dk * scale;
    dqkv[at + 2u * H] = dv;
    if (k >= rows) { dqkv[at] = 0.0; }
  }
}`,
  };
}

/** A cache of kernels by a shape key (each kernel object made once, so its WGSL is too). */
function memo<K>(make: (key: K) => Kernel): (key: K, id: string) => Kernel {
  const m = new Map<string, Kernel>();
  return (key, id) => {
    let k = m.get(id);
    if (!k) m.set(id, k = make(key));
    return k;
  };
}

/** The attention kernels of the device over `rt`; `scratch(n)` holds dS between the two backward kernels. */
export function webgpuAttention(rt: Runtime, scratch: (n: number) => G): {
  attention: AttentionKernel<G>;
  attentionBackward: AttentionBackwardKernel<G>;
  attentionFirst: AttentionKernel<G>;
  attentionFirstBackward: AttentionBackwardKernel<G>;
} {
  type S = { L: number; hd: number; drop: boolean };
  const fwd = memo<S>((s) => forwardKernel(s.L, s.hd, s.drop));
  const bwdRows = memo<S>((s) => backwardRowsKernel(s.L, s.hd, s.drop));
  const bwdKeys = memo<S>((s) => backwardKeysKernel(s.L, s.hd));
  const words = (shape: AttentionShape, rows: number) => [
    shape.heads,
    rows,
    f32Bits(1 / Math.sqrt(shape.headDim)),
  ];
  const forward =
    (first: boolean): AttentionKernel<G> => (qkv, probs, dropMask, dropped, ctx, shape) => {
      const { batch, heads, headDim: hd } = shape, L = batch.seqLen, rows = first ? 1 : L;
      const s = { L, hd, drop: dropMask !== null };
      const binds = [
        qkv,
        batch.attentionMask,
        probs,
        ...(dropMask ? [dropMask, dropped] : []),
        ctx,
      ];
      rt.dispatch(fwd(s, `${L}:${hd}:${s.drop}`), binds, words(shape, rows), [
        rows,
        batch.size * heads,
      ]);
    };
  const backward =
    (first: boolean): AttentionBackwardKernel<G> =>
    (dctx, qkv, probs, dropMask, dropped, dqkv, shape) => {
      const { batch, heads, headDim: hd } = shape, L = batch.seqLen, rows = first ? 1 : L;
      const s = { L, hd, drop: dropMask !== null };
      const ds = scratch(batch.size * heads * rows * L);
      const w = words(shape, rows), groups = batch.size * heads;
      const rowBinds = [dctx, qkv, probs, ...(dropMask ? [dropMask] : []), ds, dqkv];
      rt.dispatch(bwdRows(s, `${L}:${hd}:${s.drop}`), rowBinds, w, [rows, groups]);
      const pd = dropMask ? dropped : probs;
      rt.dispatch(bwdKeys(s, `${L}:${hd}`), [dctx, qkv, ds, pd, dqkv], w, [L, groups]);
    };
  return {
    attention: forward(false),
    attentionBackward: backward(false),
    attentionFirst: forward(true),
    attentionFirstBackward: backward(true),
  };
}
