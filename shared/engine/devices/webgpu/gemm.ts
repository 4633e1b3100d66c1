/**
 * The WebGPU device's matrix product: C = alpha·op(A)·op(B) + beta·C
 * (shared/engine/device.ts {@link GemmOn}), tiled and register-blocked: a
 * workgroup of 16×16 invocations computes a 64×64 tile of C, each invocation
 * a 4×4 block held in registers, with 64×16 panels of op(A) and op(B) staged
 * in workgroup memory per step of k. One pipeline per (transA, transB);
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
var<workgroup> As: array<f32, ${BK * BM}>;
var<workgroup> Bs: array<f32, ${BK * BM}>;
@compute @workgroup_size(${T}, ${T})
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  init();
  let m = pu(PB); let n = pu(PB + 1u); let K = pu(PB + 2u);
  let lda = pu(PB + 3u); let ldb = pu(PB + 4u); let ldc = pu(PB + 5u);
  let alpha = pf(PB + 6u); let beta = pf(PB + 7u);
  let row0 = wid.y * BM; let col0 = wid.x * BM;
  let tid = lid.y * ${T}u + lid.x;
  var acc: array<f32, ${R * R}>;
  for (var k0 = 0u; k0 < K; k0 += BK) {
    for (var l = 0u; l < ${(BM * BK) / (T * T)}u; l++) {
      let e = tid + l * ${T * T}u;
      {
        ${aIdx}
        let i = row0 + ti; let kk = k0 + tk;
        var v = 0.0;
        if (i < m && kk < K) { v = ${aAt}; }
        As[tk * BM + ti] = v;
      }
      {
        ${bIdx}
        let j = col0 + tj; let kk = k0 + tk;
        var v = 0.0;
        if (j < n && kk < K) { v = ${bAt}; }
        Bs[tk * BM + tj] = v;
      }
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      var ar: array<f32, ${R}>;
      var br: array<f32, ${R}>;
      for (var r = 0u; r < ${R}u; r++) {
        ar[r] = As[kk * BM + lid.y * ${R}u + r];
        br[r] = Bs[kk * BM + lid.x * ${R}u + r];
      }
      for (var r = 0u; r < ${R}u; r++) {
        for (var s = 0u; s < ${R}u; s++) {
          acc[r * ${R}u + s] = fma(ar[r], br[s], acc[r * ${R}u + s]);
        }
      }
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
      var v = alpha * acc[r * ${R}u + s];
      if (beta != 0.0) { v = v + beta * c[at]; }
      c[at] = v;
    }
  }
}`,
  };
}

const KERNELS = [false, true].map((ta) => [false, true].map((tb) => gemmKernel(ta, tb)));

/** Checks that the views hold the matrices the arguments describe. */
function checkFits(name: string, t: GpuTensor, rows: number, cols: number, ld: number): void {
  if (ld < Math.max(1, cols)) throw new Error(`gemm: ld${name} ${ld} < ${cols} columns`);
  if (rows > 0 && cols > 0 && t.length < (rows - 1) * ld + cols) {
    throw new Error(`gemm: ${name} holds ${t.length}, fewer than ${rows}×${cols} at stride ${ld}`);
  }
}

/** The device's gemm over `rt`. */
export function webgpuGemm(rt: Runtime): GemmOn<GpuTensor> {
  return (transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) => {
    checkFits("a", a, transA ? k : m, transA ? m : k, lda);
    checkFits("b", b, transB ? n : k, transB ? k : n, ldb);
    checkFits("c", c, m, n, ldc);
    if (m === 0 || n === 0) return;
    const kernel = KERNELS[transA ? 1 : 0][transB ? 1 : 0];
    const words = [m, n, k, lda, ldb, ldc, f32Bits(alpha), f32Bits(beta)];
    rt.dispatch(kernel, [a, b, c], words, [Math.ceil(n / BM), Math.ceil(m / BM)]);
  };
}
