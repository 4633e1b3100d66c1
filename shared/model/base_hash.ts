/**
 * The content hash that names a frozen LoRA base on the wire and in a
 * worker's base cache (docs/protocol.md, "LoRA: the base by hash"): SHA-256
 * over the layout (every tensor's name and shape, in order) and then the
 * weights' little-endian float32 bytes, as 64 lowercase hex digits. Two
 * bases with the same hash hold the same tensors, bit for bit.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { ParamLayout } from "./param_layout.ts";

/** Bytes hashed per update call (keeps a large base's views small). */
const SLICE_BYTES = 64 * 1024 * 1024;

/** A base hash's form: 64 lowercase hex digits. */
export const BASE_HASH_PATTERN = /^[0-9a-f]{64}$/;

/** The hash of `weights` (layout `layout`): what names the base. */
export function baseHash(layout: ParamLayout, weights: Float32Array): string {
  if (weights.length !== layout.total) {
    throw new Error(`baseHash: ${weights.length} values for a layout of ${layout.total}`);
  }
  const h = createHash("sha256");
  h.update(JSON.stringify(layout.specs.map((s) => [s.name, s.shape])));
  const bytes = new Uint8Array(weights.buffer, weights.byteOffset, weights.byteLength);
  for (let at = 0; at < bytes.length; at += SLICE_BYTES) {
    h.update(bytes.subarray(at, Math.min(bytes.length, at + SLICE_BYTES)));
  }
  return h.digest("hex");
}
