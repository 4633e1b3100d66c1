/**
 * Whether this host stores multi-byte numbers little-endian. Every binary
 * format of the project (safetensors, the optimizer state, the wire's chunk
 * payloads; docs/model-and-data.md, docs/protocol.md) is little-endian, so a
 * typed array's bytes can be written or viewed as they are only when this is
 * true.
 *
 * @module
 */

/** True on a little-endian host (every platform Deno ships for). */
export const LITTLE_ENDIAN: boolean = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
