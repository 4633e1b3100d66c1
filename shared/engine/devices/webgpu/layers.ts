/**
 * The WebGPU device's kernels other than matrix products and attention:
 * fill, mul, add, embeddings, bias, column sums, dropout, residual,
 * LayerNorm, GELU, tanh, row gather/scatter, the losses, δ's start and the
 * adversary's ascent — the same contracts as shared/engine/devices/cpu/layers.ts
 * (shared/engine/device.ts), as WGSL over {@link GpuTensor}s.
 *
 * Reductions that the host sums in float64 (column sums, norms) sum in
 * float32 here, in a fixed order (no atomics), so a result does not depend
 * on dispatch timing. Integer inputs are host arrays, uploaded with the
 * dispatch that first uses them in a submission.
 *
 * @module
 */
import type { AdversaryConfig } from "../../../method/adversary_config.ts";
import { deltaKey, deltaScales } from "../../../method/adversary.ts";
import { dropoutKey, dropoutScale, dropoutThreshold } from "../../../method/dropout_mask.ts";
import type { BatchIndex, MaskRows, NormState, TaskKey } from "../../device.ts";
import { f32Bits, type GpuTensor, type Kernel, type Runtime } from "./runtime.ts";
import { elementwise, GELU, GROUP_INDEX, HASH, REDUCE, runElementwise, WG } from "./wgsl.ts";

type G = GpuTensor;

/** Elements a workgroup of {@link FILL} sets: one chunk of a range. */
const FILL_CHUNK = 4096;

/**
 * Sets chunks of `t` (pairs (start, length) relative to the view in `ch`,
 * one workgroup each) to the value in word 1.
 */
const FILL = perRow(
  "fill",
  [["t", "f32"], ["ch", "u32"]],
  `let s = t_o + ch[ch_o + 2u * r]; let len = ch[ch_o + 2u * r + 1u]; let v = pf(PB + 1u);
  for (var j = tid; j < len; j += ${WG}u) { t[s + j] = v; }`,
);
const MUL = elementwise(
  "mul",
  [["x", "f32"], ["m", "f32"], ["o", "f32"]],
  "o[o_o + i] = x[x_o + i] * m[m_o + i];",
);
const ADD = elementwise(
  "add",
  [["x", "f32"], ["o", "f32"]],
  "o[o_o + i] = o[o_o + i] + x[x_o + i];",
);
const ADD_BIAS = elementwise(
  "addBias",
  [["y", "f32"], ["b", "f32"]],
  "y[y_o + i] = y[y_o + i] + b[b_o + i % pu(PB + 1u)];",
);

/**
 * vec4 variants of mul, add and colSum (4 elements per invocation, a quarter
 * of the loads; on llvmpipe each storage load is a per-lane sequence), used
 * where every view is 16-byte aligned and the lengths are multiples of 4.
 * The per-element arithmetic and summation order are those of the float
 * kernels, so results are bit-identical.
 */
const MUL4 = elementwise(
  "mul",
  [["x", "vec4<f32>"], ["m", "vec4<f32>"], ["o", "vec4<f32>"]],
  "o[o_o / 4u + i] = x[x_o / 4u + i] * m[m_o / 4u + i];",
);
const ADD4 = elementwise(
  "add",
  [["x", "vec4<f32>"], ["o", "vec4<f32>"]],
  "o[o_o / 4u + i] = o[o_o / 4u + i] + x[x_o / 4u + i];",
);
/** d[i] += Σ_r x[r, i] over column quads i (n = cols / 4). */
const COL_SUM4 = elementwise(
  "colSum",
  [["x", "vec4<f32>"], ["d", "vec4<f32>"]],
  `let rows = pu(PB + 1u); let cols4 = n;
  var s = vec4<f32>(0.0);
  for (var r = 0u; r < rows; r++) { s += x[x_o / 4u + r * cols4 + i]; }
  d[d_o / 4u + i] = d[d_o / 4u + i] + s;`,
);

/**
 * LayerNorm with one invocation per row and vec4 loads (software adapters:
 * no workgroup reductions, whose barriers cost a coroutine switch per 8
 * lanes on llvmpipe). Word 1 is cols / 4.
 */
const LAYER_NORM_ROW = elementwise(
  "layerNorm",
  [
    ["x", "vec4<f32>"],
    ["g", "vec4<f32>"],
    ["b", "vec4<f32>"],
    ["mean", "f32"],
    ["rstd", "f32"],
    ["o", "vec4<f32>"],
  ],
  `let c4 = pu(PB + 1u); let eps = pf(PB + 2u); let cols = f32(4u * c4);
  let xb = x_o / 4u + i * c4; let ob = o_o / 4u + i * c4;
  var s = vec4<f32>(0.0);
  for (var j = 0u; j < c4; j++) { s += x[xb + j]; }
  let m = (s.x + s.y + s.z + s.w) / cols;
  var v = vec4<f32>(0.0);
  for (var j = 0u; j < c4; j++) { let d = x[xb + j] - m; v += d * d; }
  let rs = 1.0 / sqrt((v.x + v.y + v.z + v.w) / cols + eps);
  mean[mean_o + i] = m; rstd[rstd_o + i] = rs;
  for (var j = 0u; j < c4; j++) {
    o[ob + j] = (x[xb + j] - m) * rs * g[g_o / 4u + j] + b[b_o / 4u + j];
  }`,
);

/** The LayerNorm input gradient, one invocation per row (see {@link LAYER_NORM_ROW}). */
const LAYER_NORM_DX_ROW = elementwise(
  "layerNormBackward",
  [
    ["x", "vec4<f32>"],
    ["g", "vec4<f32>"],
    ["mean", "f32"],
    ["rstd", "f32"],
    ["dy", "vec4<f32>"],
    ["dx", "vec4<f32>"],
  ],
  `let c4 = pu(PB + 1u); let cols = f32(4u * c4);
  let xb = x_o / 4u + i * c4; let yb = dy_o / 4u + i * c4; let db = dx_o / 4u + i * c4;
  let m = mean[mean_o + i]; let rs = rstd[rstd_o + i];
  var sg = vec4<f32>(0.0); var sgx = vec4<f32>(0.0);
  for (var j = 0u; j < c4; j++) {
    let xh = (x[xb + j] - m) * rs;
    let gg = dy[yb + j] * g[g_o / 4u + j];
    sg += gg; sgx += gg * xh;
  }
  let mg = (sg.x + sg.y + sg.z + sg.w) / cols;
  let mgx = (sgx.x + sgx.y + sgx.z + sgx.w) / cols;
  for (var j = 0u; j < c4; j++) {
    let xh = (x[xb + j] - m) * rs;
    dx[db + j] = rs * (dy[yb + j] * g[g_o / 4u + j] - mg - xh * mgx);
  }`,
);

/** dγ, dβ over column quads (n = cols / 4): the float kernel's arithmetic and order. */
const LAYER_NORM_DGB4 = elementwise(
  "layerNormBackwardParams",
  [
    ["x", "vec4<f32>"],
    ["mean", "f32"],
    ["rstd", "f32"],
    ["dy", "vec4<f32>"],
    ["dg", "vec4<f32>"],
    ["db", "vec4<f32>"],
  ],
  `let rows = pu(PB + 1u); let c4 = n;
  var sg = vec4<f32>(0.0); var sb = vec4<f32>(0.0);
  for (var r = 0u; r < rows; r++) {
    let d = dy[dy_o / 4u + r * c4 + i];
    sg += d * (x[x_o / 4u + r * c4 + i] - mean[mean_o + r]) * rstd[rstd_o + r];
    sb += d;
  }
  if (pu(PB + 2u) != 0u) { dg[dg_o / 4u + i] = dg[dg_o / 4u + i] + sg; }
  if (pu(PB + 3u) != 0u) { db[db_o / 4u + i] = db[db_o / 4u + i] + sb; }`,
);

/** A per-row kernel: one workgroup of {@link WG} per row r < rows (first word). */
function perRow(name: string, bindings: Kernel["bindings"], code: string, extra = ""): Kernel {
  return {
    name,
    bindings,
    workgroup: [WG],
    body: `${REDUCE}
${GROUP_INDEX}
${extra}
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  init();
  let rows = pu(PB);
  let r = groupIndex(wid, nwg);
  if (r >= rows) { return; }
  let tid = lid.x;
  ${code}
}`,
  };
}

function runRows(
  rt: Runtime,
  k: Kernel,
  binds: readonly (G | Int32Array | Uint8Array | Float32Array | Uint32Array)[],
  rows: number,
  words: readonly number[],
  exact: readonly G[] = [],
): void {
  if (rows === 0) return;
  rt.dispatch(k, binds, [rows, ...words], rt.grid(rows), exact);
}

/** dbias[j] += Σ_r x[r, j]: one invocation per column, rows in order. */
const COL_SUM = elementwise(
  "colSum",
  [["x", "f32"], ["d", "f32"]],
  `let rows = pu(PB + 1u); let cols = n;
  var s = 0.0;
  for (var r = 0u; r < rows; r++) { s += x[x_o + r * cols + i]; }
  d[d_o + i] = d[d_o + i] + s;`,
);

const BIAS_DROP_RES = [false, true].map((masked) =>
  elementwise(
    masked ? "biasDropoutResidual" : "biasResidual",
    masked
      ? [["y", "f32"], ["b", "f32"], ["m", "f32"], ["res", "f32"], ["o", "f32"]]
      : [["y", "f32"], ["b", "f32"], ["res", "f32"], ["o", "f32"]],
    `let v = y[y_o + i] + b[b_o + i % pu(PB + 1u)];
  o[o_o + i] = res[res_o + i] + ${masked ? "v * m[m_o + i]" : "v"};`,
  )
);

const LAYER_NORM = perRow(
  "layerNorm",
  [["x", "f32"], ["g", "f32"], ["b", "f32"], ["mean", "f32"], ["rstd", "f32"], ["o", "f32"]],
  `let cols = pu(PB + 1u); let eps = pf(PB + 2u); let base = r * cols;
  var s = 0.0;
  for (var j = tid; j < cols; j += ${WG}u) { s += x[x_o + base + j]; }
  let m = wsum(s, tid) / f32(cols);
  var v = 0.0;
  for (var j = tid; j < cols; j += ${WG}u) { let d = x[x_o + base + j] - m; v += d * d; }
  let rs = 1.0 / sqrt(wsum(v, tid) / f32(cols) + eps);
  if (tid == 0u) { mean[mean_o + r] = m; rstd[rstd_o + r] = rs; }
  for (var j = tid; j < cols; j += ${WG}u) {
    o[o_o + base + j] = (x[x_o + base + j] - m) * rs * g[g_o + j] + b[b_o + j];
  }`,
);

const LAYER_NORM_DX = perRow(
  "layerNormBackward",
  [["x", "f32"], ["g", "f32"], ["mean", "f32"], ["rstd", "f32"], ["dy", "f32"], ["dx", "f32"]],
  `let cols = pu(PB + 1u); let base = r * cols;
  let m = mean[mean_o + r]; let rs = rstd[rstd_o + r];
  var sg = 0.0; var sgx = 0.0;
  for (var j = tid; j < cols; j += ${WG}u) {
    let xh = (x[x_o + base + j] - m) * rs;
    let gg = dy[dy_o + base + j] * g[g_o + j];
    sg += gg; sgx += gg * xh;
  }
  let mg = wsum(sg, tid) / f32(cols);
  let mgx = wsum(sgx, tid) / f32(cols);
  for (var j = tid; j < cols; j += ${WG}u) {
    let xh = (x[x_o + base + j] - m) * rs;
    dx[dx_o + base + j] = rs * (dy[dy_o + base + j] * g[g_o + j] - mg - xh * mgx);
  }`,
);

/** dγ += Σ_r dy·x̂, dβ += Σ_r dy (flags in words 2 and 3 say which to write). */
const LAYER_NORM_DGB = elementwise(
  "layerNormBackwardParams",
  [["x", "f32"], ["mean", "f32"], ["rstd", "f32"], ["dy", "f32"], ["dg", "f32"], ["db", "f32"]],
  `let rows = pu(PB + 1u); let cols = n;
  var sg = 0.0; var sb = 0.0;
  for (var r = 0u; r < rows; r++) {
    let d = dy[dy_o + r * cols + i];
    sg += d * (x[x_o + r * cols + i] - mean[mean_o + r]) * rstd[rstd_o + r];
    sb += d;
  }
  if (pu(PB + 2u) != 0u) { dg[dg_o + i] = dg[dg_o + i] + sg; }
  if (pu(PB + 3u) != 0u) { db[db_o + i] = db[db_o + i] + sb; }`,
);

const BIAS_GELU = [false, true].map((deriv) =>
  elementwise(
    deriv ? "biasGeluDeriv" : "biasGelu",
    deriv
      ? [["u", "f32"], ["b", "f32"], ["g", "f32"], ["d", "f32"]]
      : [["u", "f32"], ["b", "f32"], ["g", "f32"]],
    `let z = u[u_o + i] + b[b_o + i % pu(PB + 1u)];
  ${deriv ? "d[d_o + i] = geluDeriv(z);" : ""}
  g[g_o + i] = gelu(z);`,
    GELU,
  )
);

const TANH = `fn tanh_(x: f32) -> f32 {
  let t = exp(-2.0 * abs(x));
  return select(-1.0, 1.0, x >= 0.0) * (1.0 - t) / (1.0 + t);
}`;
const BIAS_TANH = elementwise(
  "biasTanh",
  [["y", "f32"], ["b", "f32"]],
  "y[y_o + i] = tanh_(y[y_o + i] + b[b_o + i % pu(PB + 1u)]);",
  TANH,
);
const TANH_BACK = elementwise(
  "tanhBackward",
  [["dy", "f32"], ["y", "f32"]],
  "let v = y[y_o + i]; dy[dy_o + i] = dy[dy_o + i] * (1.0 - v * v);",
);

/** out[i] = x[rows[i] − r0] for rows[i] in the window [r0, r1) of x (word 2, 3); others untouched. */
const GATHER = elementwise(
  "gatherRows",
  [["x", "f32"], ["rows", "u32"], ["o", "f32"]],
  `let c = pu(PB + 1u); let row = rows[rows_o + i / c];
  if (row >= pu(PB + 2u) && row < pu(PB + 3u)) {
    o[o_o + i] = x[x_o + (row - pu(PB + 2u)) * c + i % c];
  }`,
);
/** dx[rows[i] − r0] += d[i] for rows[i] in the window [r0, r1) of dx. */
const SCATTER = elementwise(
  "scatterRows",
  [["d", "f32"], ["rows", "u32"], ["dx", "f32"]],
  `let c = pu(PB + 1u); let row = rows[rows_o + i / c];
  if (row >= pu(PB + 2u) && row < pu(PB + 3u)) {
    let at = dx_o + (row - pu(PB + 2u)) * c + i % c; dx[at] = dx[at] + d[d_o + i];
  }`,
);

const EMBED = [false, true].map((withDelta) =>
  elementwise(
    withDelta ? "embedDelta" : "embed",
    [
      ["x0", "f32"],
      ["word", "f32"],
      ["pos", "f32"],
      ["typ", "f32"],
      ["ids", "u32"],
      ["pids", "u32"],
      ["tids", "u32"],
      ...(withDelta ? [["delta", "f32"] as const] : []),
    ],
    `let H = pu(PB + 1u); let t = i / H; let j = i % H; let id = ids[ids_o + t];
  if (id < pu(PB + 2u) || id >= pu(PB + 3u)) { return; } // another window of the word table
  x0[x0_o + i] = word[word_o + (id - pu(PB + 2u)) * H + j] ${
      withDelta ? "+ delta[delta_o + i]" : ""
    }
    + pos[pos_o + pids[pids_o + t] * H + j] + typ[typ_o + tids[tids_o + t] * H + j];`,
  )
);

/**
 * The embedding gradient of one table: per used row (one workgroup each), the
 * sum of dx0 over the positions that looked it up, in position order, added
 * to the row: no atomics, and only used rows are written. Rows of the list
 * from word 2 on, table rows relative to word 3 (the binding window's first row).
 */
const EMBED_BACK = perRow(
  "embedBackward",
  [["dx0", "f32"], ["rowIds", "u32"], ["starts", "u32"], ["items", "u32"], ["d", "f32"]],
  `let H = pu(PB + 1u); let rr = r + pu(PB + 2u);
  let row = rowIds[rowIds_o + rr] - pu(PB + 3u);
  let e0 = starts[starts_o + rr]; let e1 = starts[starts_o + rr + 1u];
  for (var j = tid; j < H; j += ${WG}u) {
    var s = 0.0;
    for (var e = e0; e < e1; e++) { s += dx0[dx0_o + items[items_o + e] * H + j]; }
    d[d_o + row * H + j] = d[d_o + row * H + j] + s;
  }`,
);

/** Per-row cross-entropy: each row's loss into `rl`, its gradient (weight·(softmax − onehot)/rows) into dl. */
const CE_ROWS = [false, true].map((grad) =>
  perRow(
    grad ? "crossEntropyGrad" : "crossEntropy",
    [["l", "f32"], ["y", "u32"], ["rl", "f32"], ...(grad ? [["dl", "f32"] as const] : [])],
    `let cols = pu(PB + 1u); let w = pf(PB + 2u); let base = r * cols;
  var mx = -3.0e38;
  for (var j = tid; j < cols; j += ${WG}u) { mx = max(mx, l[l_o + base + j]); }
  let m = wmax(mx, tid);
  var z = 0.0;
  for (var j = tid; j < cols; j += ${WG}u) { z += exp(l[l_o + base + j] - m); }
  let Z = wsum(z, tid);
  let label = y[y_o + r];
  if (tid == 0u) { rl[rl_o + r] = log(Z) + m - l[l_o + base + label]; }
  ${
      grad
        ? `workgroupBarrier();
  let inv = 1.0 / Z;
  for (var j = tid; j < cols; j += ${WG}u) {
    let p = exp(l[l_o + base + j] - m) * inv;
    dl[dl_o + base + j] = (p - select(0.0, 1.0, j == label)) * w;
  }`
        : ""
    }`,
  )
);

/** loss[0] += weight · (Σ row losses in order) / rows. */
const LOSS_SUM = elementwise(
  "lossSum",
  [["rl", "f32"], ["loss", "f32"]],
  `let rows = pu(PB + 1u); let w = pf(PB + 2u);
  var s = 0.0;
  for (var r = 0u; r < rows; r++) { s += rl[rl_o + r]; }
  loss[loss_o] = loss[loss_o] + w * (s / f32(rows));`,
);

const MSE = [false, true].map((grad) =>
  elementwise(
    grad ? "meanSquaredErrorGrad" : "meanSquaredError",
    [["l", "f32"], ["t", "u32"], ["loss", "f32"], ...(grad ? [["dl", "f32"] as const] : [])],
    `let rows = pu(PB + 1u); let w = pf(PB + 2u);
  var s = 0.0;
  for (var r = 0u; r < rows; r++) {
    let d = l[l_o + r] - bitcast<f32>(t[t_o + r]);
    s += d * d;
    ${grad ? "dl[dl_o + r] = 2.0 * d * w / f32(rows);" : ""}
  }
  loss[loss_o] = loss[loss_o] + w * (s / f32(rows));`,
  )
);

const DROPOUT = [false, true].map((rows) =>
  elementwise(
    rows ? "dropoutMaskRows" : "dropoutMask",
    rows ? [["m", "f32"], ["starts", "u32"]] : [["m", "f32"]],
    `let key = pu(PB + 1u); let threshold = pu(PB + 2u); let scale = pf(PB + 3u);
  ${rows ? "let w = pu(PB + 4u); let e = starts[starts_o + i / w] + i % w;" : "let e = i;"}
  m[m_o + i] = select(0.0, scale, hashBits(key, e) >= threshold);`,
    HASH,
  )
);

/** δ_0 = U(e)·scale[b] at real tokens, 0 at padding (shared/method/adversary.ts initialDeltaHost). */
const INIT_DELTA = elementwise(
  "initDelta",
  [["d", "f32"], ["mask", "u32"], ["scales", "u32"]],
  `let H = pu(PB + 1u); let L = pu(PB + 2u); let key = pu(PB + 3u);
  let t = i / H;
  let k = hashBits(key, i) >> 8u;
  let u = f32(i32(2u * k + 1u) - 16777216) * (1.0 / 16777216.0);
  d[d_o + i] = select(0.0, u * bitcast<f32>(scales[scales_o + t / L]), mask[mask_o + t] != 0u);`,
  HASH,
);

const ASCEND_LINF = elementwise(
  "ascendLinf",
  [["d", "f32"], ["g", "f32"], ["mask", "u32"]],
  `let H = pu(PB + 1u); let lr = pf(PB + 2u); let eps = pf(PB + 3u);
  let gv = select(0.0, g[g_o + i], mask[mask_o + i / H] != 0u);
  d[d_o + i] = clamp(d[d_o + i] + lr * sign(gv), -eps, eps);`,
);

/** The l2 ascent on one example per workgroup: step along G/‖G‖, then project onto the ε-ball. */
const ASCEND_L2 = perRow(
  "ascendL2",
  [["d", "f32"], ["g", "f32"], ["mask", "u32"]],
  `let L = pu(PB + 1u); let H = pu(PB + 2u); let lr = pf(PB + 3u); let eps = pf(PB + 4u);
  let n = L * H; let base = r * n;
  var gg = 0.0;
  for (var e = tid; e < n; e += ${WG}u) {
    if (mask[mask_o + r * L + e / H] != 0u) { let v = g[g_o + base + e]; gg += v * v; }
  }
  let step = lr / (sqrt(wsum(gg, tid)) + 1e-12);
  var dd = 0.0;
  for (var e = tid; e < n; e += ${WG}u) {
    var v = d[d_o + base + e];
    if (mask[mask_o + r * L + e / H] != 0u) { v = v + g[g_o + base + e] * step; }
    d[d_o + base + e] = v;
    dd += v * v;
  }
  let norm = sqrt(wsum(dd, tid));
  if (norm > eps) {
    let s = eps / norm;
    for (var e = tid; e < n; e += ${WG}u) { d[d_o + base + e] = d[d_o + base + e] * s; }
  }`,
);

/** Rows of one embedding table a batch used, and per row the positions that used it (in order). */
interface RowLists {
  readonly rowIds: Uint32Array;
  readonly starts: Uint32Array;
  readonly items: Uint32Array;
}

/** Groups positions 0..n-1 by `ids[n]` (rows ascending, positions ascending within a row). */
export function rowLists(ids: Int32Array): RowLists {
  const order = Array.from(ids.keys()).sort((a, b) => ids[a] - ids[b] || a - b);
  const rowIds: number[] = [], starts: number[] = [];
  order.forEach((n, e) => {
    if (e === 0 || ids[n] !== ids[order[e - 1]]) {
      rowIds.push(ids[n]);
      starts.push(e);
    }
  });
  starts.push(order.length);
  return {
    rowIds: Uint32Array.from(rowIds),
    starts: Uint32Array.from(starts),
    items: Uint32Array.from(order),
  };
}

/** The layer kernels of the device over `rt`; `scratch(n)` is device memory reused between kernels. */
export function webgpuLayers(
  rt: Runtime,
  scratch: (n: number) => G,
  dummy: G,
  software = false,
) {
  const lists = new WeakMap<BatchIndex, { word: RowLists; pos: RowLists; type: RowLists }>();
  const scales = new WeakMap<BatchIndex, Map<string, Float32Array>>();
  const distinct = new WeakSet<Int32Array>();
  const checkDistinct = (rows: Int32Array) => {
    if (distinct.has(rows)) return;
    if (new Set(rows).size !== rows.length) {
      throw new Error("webgpu scatterRows: repeated row indices are not supported");
    }
    distinct.add(rows);
  };
  /**
   * fill: with 0 only the ranges of `t` that kernels or writes may have made
   * non-zero since it was last zeroed (the rest is zero already: a gradient's
   * unused word rows cost nothing); chunks grouped by binding window, so a
   * view of any size works.
   */
  const fill = (t: G, value: number) => {
    const end = t.offset + t.length;
    const zero = Object.is(value, 0);
    const ranges = zero ? rt.takeDirty(t.buf, t.offset, end) : [t.offset, end];
    if (!zero) rt.markDirty(t.buf, t.offset, end);
    let w0 = -1, wEnd = 0;
    let chunks: number[] = [];
    const flush = () => {
      if (chunks.length === 0) return;
      const win: G = { buf: t.buf, offset: w0, length: wEnd - w0 };
      runRows(rt, FILL, [win, Uint32Array.from(chunks)], chunks.length / 2, [f32Bits(value)], [
        win,
      ]);
      chunks = [];
    };
    for (let i = 0; i < ranges.length; i += 2) {
      const step = Math.min(FILL_CHUNK, rt.maxView);
      for (let s = ranges[i]; s < ranges[i + 1]; s += step) {
        const e = Math.min(s + step, ranges[i + 1]);
        if (w0 < 0 || e - w0 > rt.maxView) {
          flush();
          w0 = s;
        }
        chunks.push(s - w0, e - s);
        wEnd = e;
      }
    }
    flush();
  };
  /** Rows of width `cols` a binding window of `t` holds (all of t when it fits in one binding). */
  const rowsPerView = (t: G, cols: number) => {
    if (t.length <= rt.maxView) return Math.ceil(t.length / Math.max(cols, 1)) + 1;
    const per = Math.floor(rt.maxView / cols);
    if (per < 1) throw new Error(`webgpu: a row of ${cols} floats exceeds one storage binding`);
    return per;
  };
  /**
   * The binding windows of table `t` (rows of width `cols`) that rows `used`
   * touch: [window view, first row, end row); one window [0, 2³²−1) when t
   * fits in one binding.
   */
  const windows = (t: G, cols: number, used: Int32Array): [G, number, number][] => {
    if (t.length <= rt.maxView) return [[t, 0, 0xffffffff]];
    const per = rowsPerView(t, cols), rows = Math.floor(t.length / cols);
    const ws = [...new Set(Array.from(used, (r) => Math.floor(r / per)))].sort((a, b) => a - b);
    return ws.map((w) => {
      const r0 = w * per, r1 = Math.min(rows, r0 + per);
      return [{ buf: t.buf, offset: t.offset + r0 * cols, length: (r1 - r0) * cols }, r0, r1];
    });
  };
  /** Runs `f` per piece of ≤ maxView elements of `n` (views cut by `sub`; one piece when n fits). */
  const chunked = (n: number, f: (sub: (t: G) => G) => void) => {
    if (n <= rt.maxView) return f((t) => t);
    for (let at = 0; at < n; at += rt.maxView) {
      const len = Math.min(rt.maxView, n - at);
      f((t) => ({ buf: t.buf, offset: t.offset + at, length: len }));
    }
  };
  /** Marks row `r` (width `cols`) of `t` as written. */
  const markRow = (t: G, r: number, cols: number) =>
    rt.markDirty(t.buf, t.offset + r * cols, t.offset + (r + 1) * cols);
  /** Whether vec4 bindings fit: every view 16-byte aligned, every count a multiple of 4. */
  const v4 = (views: readonly G[], ...counts: number[]) =>
    rt.align % 16 === 0 && views.every((v) => v.offset % 4 === 0) &&
    counts.every((c) => c % 4 === 0);
  const colSum = (x: G, rows: number, cols: number, d: G) => {
    if (v4([x, d], cols)) runElementwise(rt, COL_SUM4, [x, d], cols / 4, [rows]);
    else runElementwise(rt, COL_SUM, [x, d], cols, [rows]);
  };
  const mul = (x: G, m: G, o: G) =>
    chunked(x.length, (sub) => {
      const [a, b, c] = [sub(x), sub(m), sub(o)];
      if (v4([a, b, c], a.length)) runElementwise(rt, MUL4, [a, b, c], a.length / 4);
      else runElementwise(rt, MUL, [a, b, c], a.length);
    });
  return {
    fill,
    colSum,
    mul,
    add: (x: G, o: G) =>
      chunked(x.length, (sub) => {
        const [a, c] = [sub(x), sub(o)];
        if (v4([a, c], a.length)) runElementwise(rt, ADD4, [a, c], a.length / 4);
        else runElementwise(rt, ADD, [a, c], a.length);
      }),
    addBias: (y: G, b: G, rows: number, cols: number) =>
      runElementwise(rt, ADD_BIAS, [y, b], rows * cols, [cols]),
    biasDropoutResidual: (
      y: G,
      b: G,
      mask: G | null,
      res: G,
      out: G,
      rows: number,
      cols: number,
    ) => {
      const binds = mask ? [y, b, mask, res, out] : [y, b, res, out];
      runElementwise(rt, BIAS_DROP_RES[mask ? 1 : 0], binds, rows * cols, [cols]);
    },
    layerNorm: (n: NormState<G>, beta: G, out: G, eps: number) => {
      const binds = [n.x, n.gamma, beta, n.mean, n.rstd, out];
      if (software && v4([n.x, n.gamma, beta, out], n.cols)) {
        runElementwise(rt, LAYER_NORM_ROW, binds, n.rows, [n.cols / 4, f32Bits(eps)]);
      } else runRows(rt, LAYER_NORM, binds, n.rows, [n.cols, f32Bits(eps)]);
    },
    layerNormBackward: (n: NormState<G>, dy: G, dx: G, dg: G | null, db: G | null) => {
      const vec = v4([n.x, n.gamma, dy, dx, dg ?? dummy, db ?? dummy], n.cols);
      if (dg || db) { // before dx, which may overwrite dy
        const binds = [n.x, n.mean, n.rstd, dy, dg ?? dummy, db ?? dummy];
        const words = [n.rows, dg ? 1 : 0, db ? 1 : 0];
        if (vec) runElementwise(rt, LAYER_NORM_DGB4, binds, n.cols / 4, words);
        else runElementwise(rt, LAYER_NORM_DGB, binds, n.cols, words);
      }
      const binds = [n.x, n.gamma, n.mean, n.rstd, dy, dx];
      if (software && vec) runElementwise(rt, LAYER_NORM_DX_ROW, binds, n.rows, [n.cols / 4]);
      else runRows(rt, LAYER_NORM_DX, binds, n.rows, [n.cols]);
    },
    biasGelu: (u: G, b: G, g: G, deriv: G | null, rows: number, cols: number) => {
      const binds = deriv ? [u, b, g, deriv] : [u, b, g];
      runElementwise(rt, BIAS_GELU[deriv ? 1 : 0], binds, rows * cols, [cols]);
    },
    geluBackward: (dg: G, deriv: G, dbias: G | null, rows: number, cols: number) => {
      mul({ ...dg, length: rows * cols }, deriv, dg);
      if (dbias) colSum(dg, rows, cols, dbias);
    },
    biasTanh: (y: G, b: G, rows: number, cols: number) =>
      runElementwise(rt, BIAS_TANH, [y, b], rows * cols, [cols]),
    tanhBackward: (dy: G, y: G, dbias: G | null, rows: number, cols: number) => {
      runElementwise(rt, TANH_BACK, [dy, y], rows * cols);
      if (dbias) colSum(dy, rows, cols, dbias);
    },
    gatherRows: (x: G, rows: Int32Array, cols: number, out: G) => {
      for (const [win, r0, r1] of windows(x, cols, rows)) {
        runElementwise(rt, GATHER, [win, rows, out], rows.length * cols, [cols, r0, r1]);
      }
    },
    scatterRows: (d: G, rows: Int32Array, cols: number, dx: G) => {
      checkDistinct(rows);
      for (const [win, r0, r1] of windows(dx, cols, rows)) {
        runElementwise(rt, SCATTER, [d, rows, win], rows.length * cols, [cols, r0, r1], [win]);
        for (const r of rows) if (r >= r0 && r < r1) markRow(win, r - r0, cols);
      }
    },
    embed: (x0: G, word: G, pos: G, type: G, delta: G | null, batch: BatchIndex, H: number) => {
      const ints = [batch.inputIds, batch.positionIds, batch.tokenTypeIds];
      for (const [win, r0, r1] of windows(word, H, batch.inputIds)) {
        const binds = [x0, win, pos, type, ...ints, ...(delta ? [delta] : [])];
        runElementwise(rt, EMBED[delta ? 1 : 0], binds, batch.size * batch.seqLen * H, [H, r0, r1]);
      }
    },
    embedBackward: (
      dx0: G,
      dword: G | null,
      dpos: G,
      dtype: G,
      batch: BatchIndex,
      H: number,
    ) => {
      let l = lists.get(batch);
      if (!l) {
        l = {
          word: rowLists(batch.inputIds),
          pos: rowLists(batch.positionIds),
          type: rowLists(batch.tokenTypeIds),
        };
        lists.set(batch, l);
      }
      // Per binding window of the table: the used rows in it (rowIds ascend), each marked as written.
      const one = (t: RowLists, d: G) => {
        const per = rowsPerView(d, H), ids = t.rowIds;
        for (let i = 0; i < ids.length;) {
          const r0 = ids[i];
          let j = i;
          while (j < ids.length && ids[j] < r0 + per) j++;
          const win: G = {
            buf: d.buf,
            offset: d.offset + r0 * H,
            length: (ids[j - 1] + 1 - r0) * H,
          };
          const binds = [dx0, ids, t.starts, t.items, win];
          runRows(rt, EMBED_BACK, binds, j - i, [H, i, r0], [win]);
          for (let e = i; e < j; e++) markRow(win, ids[e] - r0, H);
          i = j;
        }
      };
      if (dword) one(l.word, dword);
      one(l.pos, dpos);
      one(l.type, dtype);
    },
    crossEntropy: (
      logits: G,
      labels: Int32Array,
      rows: number,
      cols: number,
      loss: G,
      weight: number,
      dlogits: G | null,
    ) => {
      for (let r = 0; r < rows; r++) {
        const y = labels[r];
        if (!(y >= 0 && y < cols)) {
          throw new Error(`cross-entropy: label ${y} is not in [0, ${cols})`);
        }
      }
      const rl = scratch(rows);
      const binds = [logits, labels, rl, ...(dlogits ? [dlogits] : [])];
      runRows(rt, CE_ROWS[dlogits ? 1 : 0], binds, rows, [cols, f32Bits(weight / rows)]);
      runElementwise(rt, LOSS_SUM, [rl, loss], 1, [rows, f32Bits(weight)]);
    },
    meanSquaredError: (
      logits: G,
      targets: Float32Array,
      rows: number,
      loss: G,
      weight: number,
      dlogits: G | null,
    ) => {
      const binds = [logits, targets, loss, ...(dlogits ? [dlogits] : [])];
      runElementwise(rt, MSE[dlogits ? 1 : 0], binds, 1, [rows, f32Bits(weight)]);
    },
    dropoutMask: (mask: G, seed: number, site: number, rate: number, rows?: MaskRows) => {
      const words = [dropoutKey(seed, site), dropoutThreshold(rate), f32Bits(dropoutScale(rate))];
      if (rows) {
        if (rows.starts.length * rows.width !== mask.length) {
          throw new Error(
            `dropout: ${rows.starts.length} rows of ${rows.width} do not fill ${mask.length} elements`,
          );
        }
        runElementwise(rt, DROPOUT[1], [mask, rows.starts], mask.length, [...words, rows.width]);
      } else runElementwise(rt, DROPOUT[0], [mask], mask.length, words);
    },
    initDelta: (delta: G, batch: BatchIndex, H: number, init: number, key: TaskKey) => {
      if (init === 0) return fill(delta, 0);
      const { attentionMask, size, seqLen } = batch;
      let byInit = scales.get(batch);
      if (!byInit) scales.set(batch, byInit = new Map());
      const id = `${H}:${init}`;
      let s = byInit.get(id);
      if (!s) byInit.set(id, s = deltaScales(attentionMask, size, seqLen, H, init));
      const words = [H, seqLen, deltaKey(key)];
      runElementwise(rt, INIT_DELTA, [delta, attentionMask, s], size * seqLen * H, words);
    },
    ascend: (delta: G, grad: G, batch: BatchIndex, H: number, cfg: AdversaryConfig) => {
      const { attentionMask, size, seqLen } = batch;
      const n = size * seqLen * H;
      if (delta.length !== n || grad.length !== n) {
        throw new Error("ascend: delta, grad and mask do not match [B, L, H]");
      }
      const lr = f32Bits(cfg.lr), eps = f32Bits(cfg.eps);
      if (cfg.norm === "linf") {
        runElementwise(rt, ASCEND_LINF, [delta, grad, attentionMask], n, [H, lr, eps]);
      } else runRows(rt, ASCEND_L2, [delta, grad, attentionMask], size, [seqLen, H, lr, eps]);
    },
  };
}
