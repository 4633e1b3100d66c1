/**
 * The WebGPU device's matrix product: C = alpha·op(A)·op(B) + beta·C
 * (shared/engine/device.ts {@link GemmOn}), tiled and register-blocked: a
 * workgroup of 16×16 invocations computes a 64×64 tile of C, each invocation
 * a 4×4 block held in registers (vec4 rows, read from workgroup memory as one
 * vec4 of op(A)'s and one of op(B)'s per k), with 64×16 panels of op(A) and
 * op(B) staged in workgroup memory per step of k. One pipeline per (transA, transB);
 * offsets, sizes, strides, alpha and beta are parameters.
 *
 * @module
 */
import type { GemmOn } from "../../device.ts";
import { f32Bits, type GpuTensor, type Kernel, type Runtime } from "./runtime.ts";

const T = 16, R = 4, BM = T * R, BK = 16;

function gemmKernel(transA: boolean, transB: boolean): Kernel {
  // op(A)[i, kk] and op(B)[kk, j] in global memory.
  const aAt = transA ? "a[a_o + kk * lda + i]" : "a[a_o + i * lda + kk]";
  const bAt = transB ? "b[b_o + j * ldb + kk]" : "b[b_o + kk * ldb + j]";
  // Which tile element a loader invocation takes: consecutive invocations along memory.
  const aIdx = transA ? "let ti = e % BM; let tk = e / BM;" : "let tk = e % BK; let ti = e / BK;";
  const bIdx = transB ? "let tk = e % BK; let tj = e / BK;" : "let tj = e % BM; let tk = e / BM;";
  return {
    name: `gemm${transA ? "T" : "N"}${transB ? "T" : "N"}`,
    bindings: [["a", "f32"], ["b", "f32"], ["c", "f32"]],
    workgroup: [T, T],
    body: `
const BM: u32 = ${BM}u;
const BK: u32 = ${BK}u;
var<workgroup> As: array<vec4<f32>, ${(BK * BM) / 4}>;
var<workgroup> Bs: array<vec4<f32>, ${(BK * BM) / 4}>;
@compute @workgroup_size(${T}, ${T})
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  init();
  let m = pu(PB); let n = pu(PB + 1u); let K = pu(PB + 2u);
  let lda = pu(PB + 3u); let ldb = pu(PB + 4u); let ldc = pu(PB + 5u);
  let alpha = pf(PB + 6u); let beta = pf(PB + 7u);
  let row0 = wid.y * BM; let col0 = wid.x * BM;
  let tid = lid.y * ${T}u + lid.x;
  var acc: array<vec4<f32>, ${R}>;
  for (var k0 = 0u; k0 < K; k0 += BK) {
    for (var l = 0u; l < ${(BM * BK) / (T * T)}u; l++) {
      let e = tid + l * ${T * T}u;
      {
        ${aIdx}
        let i = row0 + ti; let kk = k0 + tk;
        var v = 0.0;
        if (i < m && kk < K) { v = ${aAt}; }
        As[(tk * BM + ti) / 4u][ti % 4u] = v;
      }
      {
        ${bIdx}
        let j = col0 + tj; let kk = k0 + tk;
        var v = 0.0;
        if (j < n && kk < K) { v = ${bAt}; }
        Bs[(tk * BM + tj) / 4u][tj % 4u] = v;
      }
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      // One vec4 read each of this invocation's 4 rows of op(A) and 4 columns of op(B).
      let ar = As[kk * ${BM / R}u + lid.y];
      let br = Bs[kk * ${BM / R}u + lid.x];
      acc[0] = fma(vec4<f32>(ar.x), br, acc[0]);
      acc[1] = fma(vec4<f32>(ar.y), br, acc[1]);
      acc[2] = fma(vec4<f32>(ar.z), br, acc[2]);
      acc[3] = fma(vec4<f32>(ar.w), br, acc[3]);
    }
    workgroupBarrier();
  }
  for (var r = 0u; r < ${R}u; r++) {
    let i = row0 + lid.y * ${R}u + r;
    if (i >= m) { break; }
    for (var s = 0u; s < ${R}u; s++) {
      let j = col0 + lid.x * ${R}u + s;
      if (j >= n) { break; }
      let at = c_o + i * ldc + j;
      var v = alpha * acc[r][s];
      if (beta != 0.0) { v = v + beta * c[at]; }
      c[at] = v;
    }
  }
}`,
  };
}

/**
 * A register-tiled kernel without workgroup memory: each invocation keeps a
 * TM×TN block of C in registers and streams its TM rows of op(A) and TN
 * columns of op(B) from memory (rows and columns past the edge are clamped
 * to the last one and their results dropped). On a CPU-backed adapter such
 * as llvmpipe, which runs invocations as SIMD lanes over caches, this beats
 * staging tiles in workgroup memory (barriers are expensive there).
 */
export function directGemmKernel(
  transA: boolean,
  transB: boolean,
  TM: number,
  TN: number,
  WX: number,
  WY: number,
): Kernel {
  const rows = Array.from({ length: TM }, (_, r) => r),
    cols = Array.from({ length: TN }, (_, s) => s);
  const aBase = rows.map((r) =>
    `let pa${r} = a_o + min(i0 + ${r}u, m - 1u)${transA ? "" : " * lda"};`
  );
  const bBase = cols.map((s) =>
    `let pb${s} = b_o + min(j0 + ${s}u, n - 1u)${transB ? " * ldb" : ""};`
  );
  const sa = transA ? "lda" : "1u", sb = transB ? "1u" : "ldb";
  const acc = rows.flatMap((r) => cols.map((s) => `var c${r}_${s} = 0.0;`));
  const step = [
    ...rows.map((r) => `let a${r} = a[pa${r} + kk * ${sa}];`),
    ...cols.map((s) => `let b${s} = b[pb${s} + kk * ${sb}];`),
    ...rows.flatMap((r) => cols.map((s) => `c${r}_${s} = fma(a${r}, b${s}, c${r}_${s});`)),
  ];
  const store = rows.flatMap((r) =>
    cols.map((s) =>
      `if (i0 + ${r}u < m && j0 + ${s}u < n) { let at = c_o + (i0 + ${r}u) * ldc + j0 + ${s}u; ` +
      `var v = alpha * c${r}_${s}; if (beta != 0.0) { v = v + beta * c[at]; } c[at] = v; }`
    )
  );
  return {
    name: `gemm${transA ? "T" : "N"}${transB ? "T" : "N"}`,
    bindings: [["a", "f32"], ["b", "f32"], ["c", "f32"]],
    workgroup: [WX, WY],
    body: `
@compute @workgroup_size(${WX}, ${WY})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  init();
  let m = pu(PB); let n = pu(PB + 1u); let K = pu(PB + 2u);
  let lda = pu(PB + 3u); let ldb = pu(PB + 4u); let ldc = pu(PB + 5u);
  let alpha = pf(PB + 6u); let beta = pf(PB + 7u);
  let i0 = gid.y * ${TM}u; let j0 = gid.x * ${TN}u;
  if (i0 >= m || j0 >= n) { return; }
  ${aBase.join("\n  ")}
  ${bBase.join("\n  ")}
  ${acc.join(" ")}
  for (var kk = 0u; kk < K; kk++) {
    ${step.join("\n    ")}
  }
  ${store.join("\n  ")}
}`,
  };
}

const TILED = [false, true].map((ta) => [false, true].map((tb) => gemmKernel(ta, tb)));
/** The direct kernels' shape: 4×8 blocks, 8×8 invocations (a 32×64 tile of C per workgroup). */
const DM = 4, DN = 8, DW = 8;
const DIRECT = [false, true].map((ta) =>
  [false, true].map((tb) => directGemmKernel(ta, tb, DM, DN, DW, DW))
);
/**
 * The vec4 kernels' shape: 8×16 blocks, 8×4 invocations (a 32×128 tile of C
 * per workgroup). On llvmpipe (2 loaded cores, 2026-12-05, best of 5) the
 * engine's shapes ran at 3–7 GFLOP/s against 1.3–3 for the scalar 4×8 direct
 * kernel in the same run; 4×4, 8×8, 16×8, 16×16 and 8×32 blocks were slower.
 */
const VM = 8, VN = 16, VWX = 8, VWY = 4;
const VEC4 = [false, true].map((ta) =>
  [false, true].map((tb) => vec4GemmKernel(ta, tb, VM, VN, VWX, VWY))
);

/**
 * Whether {@link vec4GemmKernel} applies: both operands start 16-byte aligned
 * within their bindings (element offset % 4 = 0, bindings aligned to 16),
 * strides are multiples of 4, and K % 4 = 0 where an operand is vectorised along k.
 */
export function vec4Fits(
  rt: Runtime,
  transA: boolean,
  transB: boolean,
  k: number,
  a: GpuTensor,
  lda: number,
  b: GpuTensor,
  ldb: number,
): boolean {
  if (rt.align % 16 !== 0) return false;
  if (a.offset % 4 !== 0 || b.offset % 4 !== 0 || lda % 4 !== 0 || ldb % 4 !== 0) return false;
  return (transA || k % 4 === 0) && (!transB || k % 4 === 0);
}

/** Checks that the views hold the matrices the arguments describe. */
function checkFits(name: string, t: GpuTensor, rows: number, cols: number, ld: number): void {
  if (ld < Math.max(1, cols)) throw new Error(`gemm: ld${name} ${ld} < ${cols} columns`);
  if (rows > 0 && cols > 0 && t.length < (rows - 1) * ld + cols) {
    throw new Error(`gemm: ${name} holds ${t.length}, fewer than ${rows}×${cols} at stride ${ld}`);
  }
}

/**
 * The device's gemm over `rt`: workgroup-tiled on a hardware adapter; on a
 * software one (`direct`) the vec4 kernel where operands are aligned, else
 * the scalar register-tiled one. Operands larger than one binding are split
 * ({@link splitGemm}).
 */
export function webgpuGemm(rt: Runtime, direct = false): GemmOn<GpuTensor> {
  const one: GemmOn<GpuTensor> = (transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) => {
    const words = [m, n, k, lda, ldb, ldc, f32Bits(alpha), f32Bits(beta)];
    const ta = transA ? 1 : 0, tb = transB ? 1 : 0;
    if (direct && vec4Fits(rt, transA, transB, k, a, lda, b, ldb)) {
      const groups = [Math.ceil(n / (VN * VWX)), Math.ceil(m / (VM * VWY))] as const;
      rt.dispatch(VEC4[ta][tb], [a, b, c], words, groups);
    } else if (direct) {
      const groups = [Math.ceil(n / (DN * DW)), Math.ceil(m / (DM * DW))] as const;
      rt.dispatch(DIRECT[ta][tb], [a, b, c], words, groups);
    } else rt.dispatch(TILED[ta][tb], [a, b, c], words, [Math.ceil(n / BM), Math.ceil(m / BM)]);
  };
  const split = splitGemm(rt.maxView, one);
  return (transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) => {
    checkFits("a", a, transA ? k : m, transA ? m : k, lda);
    checkFits("b", b, transB ? n : k, transB ? k : n, ldb);
    checkFits("c", c, m, n, ldc);
    if (m === 0 || n === 0) return;
    split(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  };
}

/** Elements a rows×cols matrix at row stride ld spans. */
function span(rows: number, cols: number, ld: number): number {
  return rows === 0 || cols === 0 ? 0 : (rows - 1) * ld + cols;
}

/** `t` from element `at` on. */
function from(t: GpuTensor, at: number): GpuTensor {
  return { buf: t.buf, offset: t.offset + at, length: t.length - at };
}

/**
 * A gemm over views of any size from `one`, which needs every operand to
 * span at most `limit` elements: an operand that spans more is halved along
 * its rows (or its columns when one row is too long): m or n into separate
 * products, k into two products of which the second accumulates (beta 1).
 * Split points are multiples of 4, so aligned operands stay aligned.
 * Operands are cut to the span they hold before `one` sees them.
 */
export function splitGemm(limit: number, one: GemmOn<GpuTensor>): GemmOn<GpuTensor> {
  const go: GemmOn<GpuTensor> = (tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) => {
    if (m === 0 || n === 0) return;
    const aRows = tA ? k : m, aCols = tA ? m : k, bRows = tB ? n : k, bCols = tB ? k : n;
    const sa = span(aRows, aCols, lda), sb = span(bRows, bCols, ldb), sc = span(m, n, ldc);
    if (sa <= limit && sb <= limit && sc <= limit) {
      const cut = (t: GpuTensor, len: number) => ({ buf: t.buf, offset: t.offset, length: len });
      // A product over k = 0 still scales C: bind something valid for A and B.
      one(
        tA,
        tB,
        m,
        n,
        k,
        alpha,
        cut(a, Math.max(sa, 1)),
        lda,
        cut(b, Math.max(sb, 1)),
        ldb,
        beta,
        cut(c, sc),
        ldc,
      );
      return;
    }
    let dim: "m" | "n" | "k";
    if (sc > limit) dim = n > limit ? "n" : "m";
    else if (sa > limit) dim = aCols > limit ? (tA ? "m" : "k") : (tA ? "k" : "m");
    else dim = bCols > limit ? (tB ? "k" : "n") : (tB ? "n" : "k");
    const size = dim === "m" ? m : dim === "n" ? n : k;
    if (size <= 1) throw new Error(`webgpu gemm: one row or column exceeds a storage binding`);
    const h = size > 8 ? Math.ceil(size / 8) * 4 : Math.ceil(size / 2);
    if (dim === "m") {
      go(tA, tB, h, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
      go(
        tA,
        tB,
        m - h,
        n,
        k,
        alpha,
        from(a, tA ? h : h * lda),
        lda,
        b,
        ldb,
        beta,
        from(c, h * ldc),
        ldc,
      );
    } else if (dim === "n") {
      go(tA, tB, m, h, k, alpha, a, lda, b, ldb, beta, c, ldc);
      go(tA, tB, m, n - h, k, alpha, a, lda, from(b, tB ? h * ldb : h), ldb, beta, from(c, h), ldc);
    } else {
      go(tA, tB, m, n, h, alpha, a, lda, b, ldb, beta, c, ldc);
      const a2 = from(a, tA ? h * lda : h), b2 = from(b, tB ? h : h * ldb);
      go(tA, tB, m, n, k - h, alpha, a2, lda, b2, ldb, 1, c, ldc);
    }
  };
  return go;
}

/**
 * The direct kernel with vec4 loads along each operand's contiguous
 * dimension (k for A unless transposed, rows of A when transposed; k for B
 * when transposed, columns of B otherwise): on llvmpipe every load from a
 * storage buffer is a per-lane sequence, so one vec4 load in place of four
 * scalar ones is most of the win. Each invocation holds a TM×TN block (TM,
 * TN multiples of 4) and steps k by 4. Needs 16-byte aligned operands with
 * row strides that are multiples of 4, and K % 4 = 0 where k is the
 * vectorised dimension (see {@link vec4Fits}).
 */
export function vec4GemmKernel(
  transA: boolean,
  transB: boolean,
  TM: number,
  TN: number,
  WX: number,
  WY: number,
): Kernel {
  const rows = Array.from({ length: TM }, (_, r) => r),
    cols = Array.from({ length: TN }, (_, s) => s);
  const C4 = ["x", "y", "z", "w"];
  const lines: string[] = [];
  const pre: string[] = [];
  // A: av (vec4). Value of op(A)[i0 + r, k + q] as an expression after the loads.
  const aVal: (r: number, q: number) => string = transA
    ? (r, q) => `ta${q}_${r >> 2}.${C4[r & 3]}`
    : (r, q) => `ta${r}.${C4[q]}`;
  if (transA) {
    pre.push(`let pa = a_o / 4u + i0 / 4u; let sa = lda / 4u;`);
    for (let q = 0; q < 4; q++) {
      for (let v = 0; v < TM / 4; v++) {
        lines.push(`let ta${q}_${v} = a[pa + min(k + ${q}u, kmax) * sa + ${v}u];`);
      }
    }
  } else {
    rows.forEach((r) => pre.push(`let pa${r} = (a_o + min(i0 + ${r}u, m - 1u) * lda) / 4u;`));
    rows.forEach((r) => lines.push(`let ta${r} = a[pa${r} + k / 4u];`));
  }
  const bVal: (q: number, s: number) => string = transB
    ? (q, s) => `tb${s}.${C4[q]}`
    : (q, s) => `tb${q}_${s >> 2}.${C4[s & 3]}`;
  if (transB) {
    cols.forEach((s) => pre.push(`let pb${s} = (b_o + min(j0 + ${s}u, n - 1u) * ldb) / 4u;`));
    cols.forEach((s) => lines.push(`let tb${s} = b[pb${s} + k / 4u];`));
  } else {
    pre.push(`let pb = b_o / 4u + j0 / 4u; let sb = ldb / 4u;`);
    for (let q = 0; q < 4; q++) {
      for (let v = 0; v < TN / 4; v++) {
        lines.push(`let tb${q}_${v} = b[pb + min(k + ${q}u, kmax) * sb + ${v}u];`);
      }
    }
  }
  // Only the transA && !transB kernel steps k past K (K % 4 ≠ 0): zero the extra terms.
  const tail = transA && !transB;
  for (let q = 0; q < 4; q++) {
    const guard = tail && q > 0 ? `if (k + ${q}u < K) ` : "";
    const body = rows.flatMap((r) =>
      cols.map((s) => `c${r}_${s} = fma(${aVal(r, q)}, ${bVal(q, s)}, c${r}_${s});`)
    );
    lines.push(`${guard}{ ${body.join(" ")} }`);
  }
  const acc = rows.flatMap((r) => cols.map((s) => `var c${r}_${s} = 0.0;`));
  const store = rows.flatMap((r) =>
    cols.map((s) =>
      `if (i0 + ${r}u < m && j0 + ${s}u < n) { let at = c_o + (i0 + ${r}u) * ldc + j0 + ${s}u; ` +
      `var v = alpha * c${r}_${s}; if (beta != 0.0) { v = v + beta * c[at]; } c[at] = v; }`
    )
  );
  return {
    name: `gemm${transA ? "T" : "N"}${transB ? "T" : "N"}`,
    bindings: [["a", "vec4<f32>"], ["b", "vec4<f32>"], ["c", "f32"]],
    workgroup: [WX, WY],
    body: `
@compute @workgroup_size(${WX}, ${WY})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  init();
  let m = pu(PB); let n = pu(PB + 1u); let K = pu(PB + 2u);
  let lda = pu(PB + 3u); let ldb = pu(PB + 4u); let ldc = pu(PB + 5u);
  let alpha = pf(PB + 6u); let beta = pf(PB + 7u);
  let i0 = gid.y * ${TM}u; let j0 = gid.x * ${TN}u;
  if (i0 >= m || j0 >= n) { return; }
  let kmax = K - 1u;
  ${pre.join("\n  ")}
  ${acc.join(" ")}
  for (var k = 0u; k < K; k += 4u) {
    ${lines.join("\n    ")}
  }
  ${store.join("\n  ")}
}`,
  };
}
