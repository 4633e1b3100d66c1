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

function scatterAdd(
  x: TypedArray,
  ids: TypedArray,
  out: TypedArray,
  rows: number,
  width: number,
  numSegments: number,
): void {
  out.fill(0);
  for (let r = 0; r < rows; r++) {
    const s = ids[r];
    if (s < 0 || s >= numSegments) continue; // tf semantics: out-of-range ids are dropped
    const src = r * width, dst = s * width;
    for (let c = 0; c < width; c++) out[dst + c] += x[src + c];
  }
}

/** The kernel's inputs and the sizes of its scatter. */
function unpack({ inputs, attrs }: { inputs: tf.NamedTensorInfoMap; attrs?: tf.NamedAttrMap }) {
  const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
  const numSegments = (attrs as { numSegments: number }).numSegments;
  const rows = segmentIds.shape.reduce((a, b) => a * b, 1);
  const inner = x.shape.slice(segmentIds.shape.length);
  const width = inner.reduce((a, b) => a * b, 1);
  return { x, segmentIds, numSegments, rows, width, outShape: [numSegments, ...inner] };
}

const wasmKernel: tf.KernelConfig = {
  kernelName: tf.UnsortedSegmentSum,
  backendName: "wasm",
  kernelFunc: (args) => {
    const b = args.backend as BackendWasm;
    const { x, segmentIds, numSegments, rows, width, outShape } = unpack(args);
    const out = b.makeOutput(outShape, x.dtype);
    // Views are taken after allocating the output: allocation may grow the heap.
    scatterAdd(
      b.typedArrayFromHeap(x) as TypedArray,
      b.typedArrayFromHeap(segmentIds) as TypedArray,
      b.typedArrayFromHeap(out) as TypedArray,
      rows,
      width,
      numSegments,
    );
    return out;
  },
};

const cpuKernel: tf.KernelConfig = {
  kernelName: tf.UnsortedSegmentSum,
  backendName: "cpu",
  kernelFunc: (args) => {
    const b = args.backend as MathBackendCPU;
    const { x, segmentIds, numSegments, rows, width, outShape } = unpack(args);
    const xv = b.data.get(x.dataId).values as TypedArray;
    const iv = b.data.get(segmentIds.dataId).values as TypedArray;
    const size = numSegments * width;
    const out = x.dtype === "int32" ? new Int32Array(size) : new Float32Array(size);
    scatterAdd(xv, iv, out, rows, width, numSegments);
    return b.makeTensorInfo(outShape, x.dtype, out);
  },
};

/** Registers the fast kernel for `backendName` ("cpu" or "wasm"), replacing any built-in one. */
export function registerUnsortedSegmentSum(backendName: "cpu" | "wasm"): void {
  const config = backendName === "wasm" ? wasmKernel : cpuKernel;
  if (tf.getKernel(tf.UnsortedSegmentSum, backendName)) {
    tf.unregisterKernel(tf.UnsortedSegmentSum, backendName);
  }
  tf.registerKernel(config);
}
