/**
 * WGSL pieces the WebGPU device's kernels share: the element-wise kernel
 * shape, workgroup reductions, the dropout hash and GELU with a precise erf.
 *
 * @module
 */
import type { BindType, GpuTensor, HostArray, Kernel, Runtime } from "./runtime.ts";

/** Invocations per workgroup of the 1-D and per-row kernels. */
export const WG = 64;

/** Sum and max over the 64 invocations of a workgroup (call in uniform control flow). */
export const REDUCE = `
var<workgroup> red: array<f32, ${WG}>;
fn wsum(v: f32, tid: u32) -> f32 {
  red[tid] = v;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (tid < s) { red[tid] += red[tid + s]; }
    workgroupBarrier();
  }
  let r = workgroupUniformLoad(&red[0]);
  return r;
}
fn wmax(v: f32, tid: u32) -> f32 {
  red[tid] = v;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (tid < s) { red[tid] = max(red[tid], red[tid + s]); }
    workgroupBarrier();
  }
  let r = workgroupUniformLoad(&red[0]);
  return r;
}
`;

/** The workgroup index of a 2-D grid laid out by {@link Runtime.grid}, as one number. */
export const GROUP_INDEX =
  "fn groupIndex(wid: vec3<u32>, nwg: vec3<u32>) -> u32 { return wid.x + wid.y * nwg.x; }";

/** lowbias32 and the dropout bits of shared/method/dropout_mask.ts (u32 ops wrap like Math.imul). */
export const HASH = `
fn lowbias32(v: u32) -> u32 {
  var x = v;
  x ^= x >> 16u; x *= 0x7feb352du; x ^= x >> 15u; x *= 0x846ca68bu; x ^= x >> 16u;
  return x;
}
fn hashBits(key: u32, i: u32) -> u32 { return lowbias32(lowbias32(i ^ key) + key); }
`;

/** Numerical Recipes (3rd ed.) erfc Chebyshev coefficients, 28 terms (relative error ~1e-16 in float64). */
const ERFC_C = [
  -1.3026537197817094,
  6.4196979235649026e-1,
  1.9476473204185836e-2,
  -9.561514786808631e-3,
  -9.46595344482036e-4,
  3.66839497852761e-4,
  4.2523324806907e-5,
  -2.0278578112534e-5,
  -1.624290004647e-6,
  1.303655835580e-6,
  1.5626441722e-8,
  -8.5238095915e-8,
  6.529054439e-9,
  5.059343495e-9,
  -9.91364156e-10,
  -2.27365122e-10,
  9.6467911e-11,
  2.394038e-12,
  -6.886027e-12,
  8.94487e-13,
  3.13092e-13,
  -1.12708e-13,
  3.81e-16,
  7.106e-15,
  -1.523e-15,
  -9.4e-17,
  1.21e-16,
  -2.8e-17,
];

/** The Clenshaw recurrence over {@link ERFC_C} as unrolled WGSL. */
function erfcCoefficients(): string {
  const lines: string[] = [];
  for (let j = ERFC_C.length - 1; j > 0; j--) {
    lines.push(`{ let tmp = d; d = ty * d - dd + ${ERFC_C[j]}; dd = tmp; }`);
  }
  return lines.join("\n  ");
}

/**
 * erf to ~1e-7 in float32 (a Taylor series below 0.5, Numerical Recipes' erfc
 * Chebyshev fit above) and GELU = ½z(1 + erf(z/√2)), GELU' = Φ(z) + z·φ(z).
 */
export const GELU = `
fn erfc_pos(z: f32) -> f32 {
  let t = 2.0 / (2.0 + z);
  let ty = 4.0 * t - 2.0;
  var d = 0.0; var dd = 0.0;
  ${erfcCoefficients()}
  return t * exp(-z * z + 0.5 * (${ERFC_C[0]} + ty * d) - dd);
}
fn erf_(x: f32) -> f32 {
  let z = abs(x);
  var r: f32;
  if (z < 0.5) {
    let x2 = x * x;
    // Taylor series of erf to x^13 (error < 1e-9 below 0.5)
    r = z * (1.1283791670955126 + x2 * (-0.37612638903183754 + x2 * (0.11283791670955126 +
      x2 * (-0.026866170645131252 + x2 * (0.005223977625442188 + x2 * (-0.0008548327023450852 +
      x2 * 0.00012055332981789664))))));
  } else {
    r = 1.0 - erfc_pos(z);
  }
  return select(r, -r, x < 0.0);
}
fn gelu(z: f32) -> f32 { return 0.5 * z * (1.0 + erf_(z * 0.7071067811865476)); }
fn geluDeriv(z: f32) -> f32 {
  return 0.5 * (1.0 + erf_(z * 0.7071067811865476)) + z * 0.3989422804014327 * exp(-0.5 * z * z);
}
`;

/**
 * An element-wise kernel: `code` runs for i in [0, n) (n = its first
 * parameter word; its own words start at PB + 1).
 */
export function elementwise(
  name: string,
  bindings: readonly (readonly [string, BindType])[],
  code: string,
  extra = "",
): Kernel {
  return {
    name,
    bindings,
    workgroup: [WG],
    body: `${extra}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  init();
  let n = pu(PB);
  let i = gid.x + gid.y * nwg.x * ${WG}u;
  if (i >= n) { return; }
  ${code}
}`,
  };
}

/** Dispatches an {@link elementwise} kernel over `n` elements. */
export function runElementwise(
  rt: Runtime,
  k: Kernel,
  binds: readonly (GpuTensor | HostArray)[],
  n: number,
  words: readonly number[] = [],
  exact: readonly GpuTensor[] = [],
): void {
  if (n === 0) return;
  rt.dispatch(k, binds, [n, ...words], rt.grid(Math.ceil(n / WG)), exact);
}
