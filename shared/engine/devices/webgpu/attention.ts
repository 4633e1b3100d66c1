/**
 * Multi-head self-attention on the WebGPU device, fused: the forward is one
 * dispatch with a workgroup per (query, example·head) that forms the scores
 * Q·Kᵀ/√d, masks padding keys, takes the softmax, applies the dropout mask
 * and multiplies by V, reading Q, K and V in place from the packed [N, 3H]
 * projection and writing its head's columns of ctx. The backward is two:
 * per query row dS = P ⊙ (dP − rowsum(dP ⊙ P)) with dP = (dctx·Vᵀ)·mask and
 * dQ = dS·K/√d; per key row dK = dSᵀ·Q/√d and dV = P'ᵀ·dctx. The
 * first-query variants (the last layer under a classifier) run the same
 * kernels over one query. Head rows are bound as vec4 where aligned. On a
 * software adapter the forward and the per-query backward run one
 * invocation per query instead (no barriers), and the per-key backward
 * packs several keys per workgroup. Semantics: shared/engine/devices/cpu/attention.ts.
 *
 * @module
 */
import type { AttentionBackwardKernel, AttentionKernel, AttentionShape } from "../../device.ts";
import { f32Bits, type GpuTensor, type Kernel, type Runtime } from "./runtime.ts";
import { REDUCE, WG } from "./wgsl.ts";

type G = GpuTensor;

/**
 * Constants and indices every attention kernel starts with (one pipeline per
 * L, head size and width): W = 4 binds Q, K, V, ctx, dctx and dqkv as vec4
 * (HDV = HD / 4 vectors per head row, so each head-dimension loop makes a
 * quarter of the loads: on llvmpipe every storage load is a per-lane
 * sequence), W = 1 as floats where a view is not 16-byte aligned.
 */
function prelude(L: number, hd: number, w: number): string {
  const vt = w === 4 ? "vec4<f32>" : "f32";
  return `${REDUCE}
const L: u32 = ${L}u;
const HD: u32 = ${hd}u;
const W: u32 = ${w}u;
const HDV: u32 = ${hd / w}u;
alias VT = ${vt};
fn dotv(x: VT, y: VT) -> f32 { return ${w === 4 ? "dot(x, y)" : "x * y"}; }`;
}

const HEAD = `init();
  let NH = pu(PB); let rows = pu(PB + 1u); let scale = pf(PB + 2u);
  let H = NH * HD; let LD = 3u * H; let LDV = LD / W; let HV = H / W;
  let ba = wid.y; let b = ba / NH; let a = ba % NH;
  let base = b * L * LD + a * HD;
  let po = ba * rows * L;
  let tid = lid.x;`;

const MAIN = `@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>)`;

const vtype = (w: number) => (w === 4 ? "vec4<f32>" : "f32") as "vec4<f32>" | "f32";

function forwardKernel(L: number, hd: number, drop: boolean, w: number): Kernel {
  return {
    name: drop ? "attentionDrop" : "attention",
    bindings: [
      ["qkv", vtype(w)],
      ["mask", "u32"],
      ["probs", "f32"],
      ...(drop ? [["dm", "f32"] as const, ["dropped", "f32"] as const] : []),
      ["ctx", vtype(w)],
    ],
    workgroup: [WG],
    body: `${prelude(L, hd, w)}
var<workgroup> qs: array<VT, HDV>;
var<workgroup> ps: array<f32, L>;
${MAIN} {
  ${HEAD}
  let q = wid.x;
  let qo = (qkv_o + base + q * LD) / W;
  for (var j = tid; j < HDV; j += ${WG}u) { qs[j] = qkv[qo + j]; }
  workgroupBarrier();
  var mx = -3.0e38; var real = 0.0;
  for (var k = tid; k < L; k += ${WG}u) {
    var s = 0.0;
    if (mask[mask_o + b * L + k] != 0u) {
      let ko = (qkv_o + base + k * LD + H) / W;
      for (var j = 0u; j < HDV; j++) { s += dotv(qs[j], qkv[ko + j]); }
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
  for (var j = tid; j < HDV; j += ${WG}u) {
    var acc = VT(0.0);
    let vo = (qkv_o + b * L * LD + 2u * H + a * HD) / W + j;
    for (var k = 0u; k < L; k++) { acc += ps[k] * qkv[vo + k * LDV]; }
    ctx[(ctx_o + (b * rows + q) * H + a * HD) / W + j] = acc;
  }
}`,
  };
}

/**
 * The forward with one invocation per (query, example·head) and no workgroup
 * memory or barriers (software adapters, vec4 views only): scores into
 * probs, softmax in place, then ctx = P·V accumulated in registers. On
 * llvmpipe the workgroup version's reductions (a coroutine switch per 8
 * lanes at each barrier) cost more than the serial loops over keys.
 */
function forwardRowKernel(L: number, hd: number, drop: boolean): Kernel {
  return {
    name: drop ? "attentionDrop" : "attention",
    bindings: [
      ["qkv", "vec4<f32>"],
      ["mask", "u32"],
      ["probs", "f32"],
      ...(drop ? [["dm", "f32"] as const, ["dropped", "f32"] as const] : []),
      ["ctx", "vec4<f32>"],
    ],
    workgroup: [WG],
    body: `
const L: u32 = ${L}u;
const HD: u32 = ${hd}u;
const HDV: u32 = ${hd / 4}u;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  init();
  let NH = pu(PB); let rows = pu(PB + 1u); let scale = pf(PB + 2u);
  let H = NH * HD; let LD = 3u * H; let LDV = LD / 4u;
  let ba = wid.y; let b = ba / NH; let a = ba % NH;
  let base = b * L * LD + a * HD;
  let q = gid.x;
  if (q >= rows) { return; }
  let pr = probs_o + ba * rows * L + q * L;
  var qv: array<vec4<f32>, HDV>;
  let qo = (qkv_o + base + q * LD) / 4u;
  for (var j = 0u; j < HDV; j++) { qv[j] = qkv[qo + j]; }
  var mx = -3.0e38; var real = 0.0;
  for (var k = 0u; k < L; k++) {
    var s = 0.0;
    if (mask[mask_o + b * L + k] != 0u) {
      let ko = (qkv_o + base + k * LD + H) / 4u;
      for (var j = 0u; j < HDV; j++) { s += dot(qv[j], qkv[ko + j]); }
      s = s * scale;
      mx = max(mx, s);
      real += 1.0;
    }
    probs[pr + k] = s;
  }
  var z = 0.0;
  for (var k = 0u; k < L; k++) {
    var e = 0.0;
    if (mask[mask_o + b * L + k] != 0u) { e = exp(probs[pr + k] - mx); }
    probs[pr + k] = e;
    z += e;
  }
  let inv = 1.0 / z;
  var acc: array<vec4<f32>, HDV>;
  let vb = (qkv_o + b * L * LD + 2u * H + a * HD) / 4u;
  for (var k = 0u; k < L; k++) {
    var p = select(probs[pr + k] * inv, 1.0 / f32(L), real == 0.0);
    probs[pr + k] = p;
    ${drop ? "let at = pr - probs_o + k; p = p * dm[dm_o + at]; dropped[dropped_o + at] = p;" : ""}
    let vo = vb + k * LDV;
    for (var j = 0u; j < HDV; j++) { acc[j] += p * qkv[vo + j]; }
  }
  let co = (ctx_o + (b * rows + q) * H + a * HD) / 4u;
  for (var j = 0u; j < HDV; j++) { ctx[co + j] = acc[j]; }
}`,
  };
}

/** Backward per query row: dS into `ds`, dQ into dqkv. */
function backwardRowsKernel(L: number, hd: number, drop: boolean, w: number): Kernel {
  return {
    name: drop ? "attentionBackwardRowsDrop" : "attentionBackwardRows",
    bindings: [
      ["dctx", vtype(w)],
      ["qkv", vtype(w)],
      ["probs", "f32"],
      ...(drop ? [["dm", "f32"] as const] : []),
      ["ds", "f32"],
      ["dqkv", vtype(w)],
    ],
    workgroup: [WG],
    body: `${prelude(L, hd, w)}
var<workgroup> dcs: array<VT, HDV>;
var<workgroup> ss: array<f32, L>;
${MAIN} {
  ${HEAD}
  let q = wid.x;
  let co = (dctx_o + (b * rows + q) * H + a * HD) / W;
  for (var j = tid; j < HDV; j += ${WG}u) { dcs[j] = dctx[co + j]; }
  workgroupBarrier();
  var dot = 0.0;
  for (var k = tid; k < L; k += ${WG}u) {
    let vo = (qkv_o + base + k * LD + 2u * H) / W;
    var dp = 0.0;
    for (var j = 0u; j < HDV; j++) { dp += dotv(dcs[j], qkv[vo + j]); }
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
  for (var j = tid; j < HDV; j += ${WG}u) {
    var acc = VT(0.0);
    let ko = (qkv_o + base + H) / W + j;
    for (var k = 0u; k < L; k++) { acc += ss[k] * qkv[ko + k * LDV]; }
    dqkv[(dqkv_o + base + q * LD) / W + j] = acc * scale;
  }
}`,
  };
}

/**
 * The per-query backward with one invocation per (query, example·head), no
 * workgroup memory or barriers (software adapters, vec4 views): dP = dctx·Vᵀ
 * (through the dropout mask) into ds, D = rowsum(dP ⊙ P), then dS = P ⊙
 * (dP − D) into ds and dQ = dS·K/√d accumulated in registers.
 */
function backwardRowsRowKernel(L: number, hd: number, drop: boolean): Kernel {
  return {
    name: drop ? "attentionBackwardRowsDrop" : "attentionBackwardRows",
    bindings: [
      ["dctx", "vec4<f32>"],
      ["qkv", "vec4<f32>"],
      ["probs", "f32"],
      ...(drop ? [["dm", "f32"] as const] : []),
      ["ds", "f32"],
      ["dqkv", "vec4<f32>"],
    ],
    workgroup: [WG],
    body: `
const L: u32 = ${L}u;
const HD: u32 = ${hd}u;
const HDV: u32 = ${hd / 4}u;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  init();
  let NH = pu(PB); let rows = pu(PB + 1u); let scale = pf(PB + 2u);
  let H = NH * HD; let LD = 3u * H; let LDV = LD / 4u;
  let ba = wid.y; let b = ba / NH; let a = ba % NH;
  let base = b * L * LD + a * HD;
  let q = gid.x;
  if (q >= rows) { return; }
  let at0 = ba * rows * L + q * L;
  var dc: array<vec4<f32>, HDV>;
  let co = (dctx_o + (b * rows + q) * H + a * HD) / 4u;
  for (var j = 0u; j < HDV; j++) { dc[j] = dctx[co + j]; }
  var D = 0.0;
  for (var k = 0u; k < L; k++) {
    let vo = (qkv_o + base + k * LD + 2u * H) / 4u;
    var dp = 0.0;
    for (var j = 0u; j < HDV; j++) { dp += dot(dc[j], qkv[vo + j]); }
    ${drop ? "dp = dp * dm[dm_o + at0 + k];" : ""}
    ds[ds_o + at0 + k] = dp;
    D += dp * probs[probs_o + at0 + k];
  }
  var acc: array<vec4<f32>, HDV>;
  let kb = (qkv_o + base + H) / 4u;
  for (var k = 0u; k < L; k++) {
    let s = probs[probs_o + at0 + k] * (ds[ds_o + at0 + k] - D);
    ds[ds_o + at0 + k] = s;
    let ko = kb + k * LDV;
    for (var j = 0u; j < HDV; j++) { acc[j] += s * qkv[ko + j]; }
  }
  let qo = (dqkv_o + base + q * LD) / 4u;
  for (var j = 0u; j < HDV; j++) { dqkv[qo + j] = acc[j] * scale; }
}`,
  };
}

/**
 * Backward per key row: dK, dV (and zero dQ at queries past `rows`); KPW
 * keys per workgroup, each over HDV invocations (all 64 busy when HDV ≤ 64).
 */
function backwardKeysKernel(L: number, hd: number, w: number): Kernel {
  const hdv = hd / w, lanes = Math.min(hdv, WG), kpw = Math.max(1, Math.floor(WG / hdv));
  return {
    name: "attentionBackwardKeys",
    bindings: [
      ["dctx", vtype(w)],
      ["qkv", vtype(w)],
      ["ds", "f32"],
      ["pd", "f32"],
      ["dqkv", vtype(w)],
    ],
    workgroup: [WG],
    body: `${prelude(L, hd, w)}
const KPW: u32 = ${kpw}u;
var<workgroup> cs: array<f32, ${kpw * L}>;
var<workgroup> pds: array<f32, ${kpw * L}>;
${MAIN} {
  ${HEAD}
  let k0 = wid.x * KPW;
  for (var e = tid; e < KPW * rows; e += ${WG}u) {
    let kk = e / rows; let q = e % rows; let key = min(k0 + kk, L - 1u);
    cs[kk * L + q] = ds[ds_o + po + q * L + key];
    pds[kk * L + q] = pd[pd_o + po + q * L + key];
  }
  workgroupBarrier();
  let kk = tid / ${lanes}u; let k = k0 + kk;
  if (kk >= KPW || k >= L) { return; }
  for (var j = tid % ${lanes}u; j < HDV; j += ${lanes}u) {
    var dk = VT(0.0); var dv = VT(0.0);
    let qo = (qkv_o + base) / W + j;
    let co = (dctx_o + b * rows * H + a * HD) / W + j;
    for (var q = 0u; q < rows; q++) {
      dk += cs[kk * L + q] * qkv[qo + q * LDV];
      dv += pds[kk * L + q] * dctx[co + q * HV];
    }
    let at = (dqkv_o + base + k * LD) / W + j;
    dqkv[at + HV] = dk * scale;
    dqkv[at + 2u * HV] = dv;
    if (k >= rows) { dqkv[at] = VT(0.0); }
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
export function webgpuAttention(rt: Runtime, scratch: (n: number) => G, software = false): {
  attention: AttentionKernel<G>;
  attentionBackward: AttentionBackwardKernel<G>;
  attentionFirst: AttentionKernel<G>;
  attentionFirstBackward: AttentionBackwardKernel<G>;
} {
  type S = { L: number; hd: number; drop: boolean; w: number };
  const fwd = memo<S>((s) => forwardKernel(s.L, s.hd, s.drop, s.w));
  const fwdRow = memo<S>((s) => forwardRowKernel(s.L, s.hd, s.drop));
  const bwdRowsRow = memo<S>((s) => backwardRowsRowKernel(s.L, s.hd, s.drop));
  const bwdRows = memo<S>((s) => backwardRowsKernel(s.L, s.hd, s.drop, s.w));
  const bwdKeys = memo<S>((s) => backwardKeysKernel(s.L, s.hd, s.w));
  /** 4 (vec4 bindings) when the head size and every head-row view allow it, else 1. */
  const width = (hd: number, views: readonly G[]) =>
    hd % 4 === 0 && rt.align % 16 === 0 && views.every((v) => v.offset % 4 === 0) ? 4 : 1;
  const id = (s: S) => `${s.L}:${s.hd}:${s.drop}:${s.w}`;
  const words = (shape: AttentionShape, rows: number) => [
    shape.heads,
    rows,
    f32Bits(1 / Math.sqrt(shape.headDim)),
  ];
  const forward =
    (first: boolean): AttentionKernel<G> => (qkv, probs, dropMask, dropped, ctx, shape) => {
      const { batch, heads, headDim: hd } = shape, L = batch.seqLen, rows = first ? 1 : L;
      const s = { L, hd, drop: dropMask !== null, w: width(hd, [qkv, ctx]) };
      const binds = [
        qkv,
        batch.attentionMask,
        probs,
        ...(dropMask ? [dropMask, dropped] : []),
        ctx,
      ];
      if (software && s.w === 4) {
        rt.dispatch(fwdRow(s, id(s)), binds, words(shape, rows), [
          Math.ceil(rows / WG),
          batch.size * heads,
        ]);
      } else rt.dispatch(fwd(s, id(s)), binds, words(shape, rows), [rows, batch.size * heads]);
    };
  const backward =
    (first: boolean): AttentionBackwardKernel<G> =>
    (dctx, qkv, probs, dropMask, dropped, dqkv, shape) => {
      const { batch, heads, headDim: hd } = shape, L = batch.seqLen, rows = first ? 1 : L;
      const s = { L, hd, drop: dropMask !== null, w: width(hd, [dctx, qkv, dqkv]) };
      const ds = scratch(batch.size * heads * rows * L);
      const w = words(shape, rows), groups = batch.size * heads;
      const rowBinds = [dctx, qkv, probs, ...(dropMask ? [dropMask] : []), ds, dqkv];
      if (software && s.w === 4) {
        rt.dispatch(bwdRowsRow(s, id(s)), rowBinds, w, [Math.ceil(rows / WG), groups]);
      } else rt.dispatch(bwdRows(s, id(s)), rowBinds, w, [rows, groups]);
      const pd = dropMask ? dropped : probs;
      const keys = bwdKeys({ ...s, drop: false }, id({ ...s, drop: false }));
      const kpw = Math.max(1, Math.floor(WG / (hd / s.w)));
      rt.dispatch(keys, [dctx, qkv, ds, pd, dqkv], w, [Math.ceil(L / kpw), groups]);
    };
  return {
    attention: forward(false),
    attentionBackward: backward(false),
    attentionFirst: forward(true),
    attentionFirstBackward: backward(true),
  };
}
