/**
 * A fast JavaScript `UnsortedSegmentSum` kernel for the cpu and wasm
 * backends. It is the gradient of `gather` — of the embedding lookup — and
 * tfjs's cpu version is O(segments × rows) while wasm has none at all. This
 * one is a single scatter-add pass: O(rows × width).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { BackendWasm } from "@tensorflow/tfjs-backend-wasm";
import type { MathBackendCPU } from "@tensorflow/tfjs-backend-cpu";

type TypedArray = Float32Array | Int32Array | Uint8Array;

/** The sizes of one scatter: `rows` ids, each moving a row of `width` into one of `numSegments`. */
interface ScatterShape {
  readonly rows: number;
  readonly width: number;
  readonly numSegments: number;
}

/** out = the sum of x's rows per segment id (out-of-range ids dropped, as in tf). */
function scatterAdd(x: TypedArray, ids: TypedArray, out: TypedArray, shape: ScatterShape): void {
  const { rows, width, numSegments } = shape;
  out.fill(0);
  for (let r = 0; r < rows; r++) {
    const s = ids[r];
    if (s < 0 || s >= numSegments) continue; // tf semantics: out-of-range ids are dropped
    const src = r * width, dst = s * width;
    for (let c = 0; c < width; c++) out[dst + c] += x[src + c];
  }
}

/** The kernel's inputs, the sizes of its scatter, and the output's shape. */
interface Unpacked {
  readonly x: tf.TensorInfo;
  readonly segmentIds: tf.TensorInfo;
  readonly scatter: ScatterShape;
  readonly outShape: number[];
}

function unpack(
  { inputs, attrs }: { inputs: tf.NamedTensorInfoMap; attrs?: tf.NamedAttrMap },
): Unpacked {
  const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
  const numSegments = (attrs as { numSegments: number }).numSegments;
  const rows = segmentIds.shape.reduce((a, b) => a * b, 1);
  const inner = x.shape.slice(segmentIds.shape.length);
  const width = inner.reduce((a, b) => a * b, 1);
  return {
    x,
    segmentIds,
    scatter: { rows, width, numSegments },
    outShape: [numSegments, ...inner],
  };
}

/** The kernel on `backendName`: `run` gets the backend and the unpacked inputs. */
function segmentSumKernel<B>(
  backendName: "cpu" | "wasm",
  run: (backend: B, u: Unpacked) => tf.TensorInfo,
): tf.KernelConfig {
  return {
    kernelName: tf.UnsortedSegmentSum,
    backendName,
    kernelFunc: (args) => run(args.backend as B, unpack(args)),
  };
}

const wasmKernel = segmentSumKernel<BackendWasm>(
  "wasm",
  (b, { x, segmentIds, scatter, outShape }) => {
    const out = b.makeOutput(outShape, x.dtype);
    // Views are taken after allocating the output: allocation may grow the heap.
    const view = (t: tf.TensorInfo) => b.typedArrayFromHeap(t) as TypedArray;
    scatterAdd(view(x), view(segmentIds), view(out), scatter);
    return out;
  },
);

const cpuKernel = segmentSumKernel<MathBackendCPU>(
  "cpu",
  (b, { x, segmentIds, scatter, outShape }) => {
    const values = (t: tf.TensorInfo) => b.data.get(t.dataId).values as TypedArray;
    const size = scatter.numSegments * scatter.width;
    const out = x.dtype === "int32" ? new Int32Array(size) : new Float32Array(size);
    scatterAdd(values(x), values(segmentIds), out, scatter);
    return b.makeTensorInfo(outShape, x.dtype, out);
  },
);

/** Registers the fast kernel for `backendName` ("cpu" or "wasm"), replacing any built-in one. */
export function registerUnsortedSegmentSum(backendName: "cpu" | "wasm"): void {
  const config = backendName === "wasm" ? wasmKernel : cpuKernel;
  if (tf.getKernel(tf.UnsortedSegmentSum, backendName)) {
    tf.unregisterKernel(tf.UnsortedSegmentSum, backendName);
  }
  tf.registerKernel(config);
}
