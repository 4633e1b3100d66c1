/**
 * Test helper for safetensors files (shared/io/safetensors.ts): a whole file
 * built in memory, the reference that the streamed writer is checked against
 * and the way tests build fixture files.
 *
 * @module
 */
import {
  type DType,
  type HostTensor,
  planSafetensors,
  tensorBytes,
} from "../../shared/io/safetensors.ts";

/**
 * Serialises tensors as one in-memory safetensors file in `dtype` (F32, F16 or
 * BF16), tensors in sorted-name order with contiguous offsets, and `metadata`
 * as `__metadata__` (`planSafetensors` + `tensorBytes`, as `streamSafetensors`
 * writes them).
 */
export function writeSafetensors(
  tensors: Map<string, HostTensor> | [string, HostTensor][],
  dtype: DType,
  metadata?: Record<string, string>,
): Uint8Array {
  const plan = planSafetensors(tensors, dtype, metadata);
  const out = new Uint8Array(plan.size);
  out.set(plan.header);
  let at = plan.header.length;
  for (const [, t] of plan.tensors) {
    for (const piece of tensorBytes(t.data, dtype)) {
      out.set(piece, at);
      at += piece.length;
    }
  }
  return out;
}
