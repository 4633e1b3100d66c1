/**
 * Reader and writer of the safetensors format used by Hugging Face:
 *
 *     u64 little-endian N | N bytes of UTF-8 JSON header | raw little-endian data
 *
 * The header maps each tensor name to `{dtype, shape, data_offsets: [begin, end]}`
 * (offsets relative to the start of the data buffer) and may carry a
 * `__metadata__` object of string → string. The reader validates the file as
 * strictly as the reference implementation (contiguous offsets, sizes that
 * match shape × dtype, no trailing bytes) and decodes F32, F16 and BF16 into
 * Float32Array; the writer emits F32, F16 or BF16 the way the reference writer
 * does (tensors sorted by name, header padded with spaces to a multiple of 8
 * bytes).
 *
 * Large files never need one buffer of their own size: {@link SafetensorsFile}
 * reads the header first and then one tensor at a time, straight into a buffer
 * the caller provides, and {@link streamSafetensors} writes tensor by tensor
 * (in bounded chunks when converting to 16 bits). The 16-bit conversions
 * themselves are shared/wire/half_float.ts (the wire's f16 weights use them too).
 *
 * @module
 */
import { LITTLE_ENDIAN } from "./endian.ts";
import { isPlainObject } from "./plain_object.ts";
import {
  bf16BitsToF32,
  bf16FromF32Bits,
  decode16,
  f16BitsToF32,
  halfFromF32Bits,
} from "../wire/half_float.ts";

/** Floating-point dtypes this module decodes. */
export type DType = "F32" | "F16" | "BF16";

/** A tensor in host memory: shape and float32 data in row-major order. */
export interface HostTensor {
  shape: number[];
  data: Float32Array;
}

/** Options of {@link readSafetensors}. */
export interface ReadOptions {
  /**
   * Tensors for which this returns true are validated (offsets, contiguity) but
   * not decoded and not returned — e.g. integer `position_ids` buffers, whose
   * dtype would otherwise be rejected.
   */
  skip?: (name: string, dtype: string) => boolean;
}

/** The reference reader refuses headers above 100 MB. */
const MAX_HEADER_BYTES = 100_000_000;

/** Byte sizes of every byte-aligned safetensors dtype (used to validate offsets). */
const DTYPE_BYTES: Readonly<Record<string, number>> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  F8_E8M0: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
  C64: 8,
};

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function product(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * Copies `count` little-endian elements at byte `offset` into a fresh, aligned
 * array of `ctor`'s kind (16-bit words or float32), swapping bytes on a
 * big-endian host.
 */
function readLittleEndian<T extends Uint16Array | Float32Array>(
  bytes: Uint8Array,
  offset: number,
  count: number,
  ctor: { new (buffer: ArrayBuffer): T; new (length: number): T; BYTES_PER_ELEMENT: number },
): T {
  const width = ctor.BYTES_PER_ELEMENT;
  if (LITTLE_ENDIAN) return new ctor(bytes.slice(offset, offset + width * count).buffer);
  const dv = new DataView(bytes.buffer, bytes.byteOffset + offset, width * count);
  const out = new ctor(count);
  for (let i = 0; i < count; i++) {
    out[i] = width === 2 ? dv.getUint16(2 * i, true) : dv.getFloat32(4 * i, true);
  }
  return out;
}

/** One tensor of a safetensors header: dtype, shape and its byte range in the data buffer. */
export interface TensorInfo {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

function parseEntry(name: string, raw: unknown, dataLength: number): TensorInfo {
  const where = `safetensors: tensor "${name}"`;
  if (!isPlainObject(raw)) throw new Error(`${where}: header entry is not an object`);
  for (const key of ["dtype", "shape", "data_offsets"]) {
    if (!(key in raw)) throw new Error(`${where}: header entry is missing "${key}"`);
  }
  const { dtype, shape, data_offsets: offsets } = raw;
  if (typeof dtype !== "string") {
    throw new Error(`${where}: dtype must be a string, got ${JSON.stringify(dtype)}`);
  }
  if (!Array.isArray(shape) || !shape.every(isCount)) {
    throw new Error(
      `${where}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`,
    );
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
    throw new Error(
      `${where}: data_offsets must be [begin, end] non-negative integers, got ${
        JSON.stringify(offsets)
      }`,
    );
  }
  const [begin, end] = offsets as number[];
  if (end < begin) throw new Error(`${where}: data_offsets end ${end} is before begin ${begin}`);
  if (end > dataLength) {
    throw new Error(
      `${where}: data_offsets [${begin}, ${end}] lie outside the data buffer of ${dataLength} bytes`,
    );
  }
  const elements = product(shape);
  if (!Number.isSafeInteger(elements)) {
    throw new Error(`${where}: shape ${JSON.stringify(shape)} has too many elements`);
  }
  const size = DTYPE_BYTES[dtype];
  if (size !== undefined && end - begin !== elements * size) {
    throw new Error(
      `${where}: data_offsets [${begin}, ${end}] span ${end - begin} bytes but shape ${
        JSON.stringify(shape)
      } of ${dtype} needs ${elements * size}`,
    );
  }
  return { name, dtype, shape, begin, end };
}

function parseMetadata(raw: unknown): Record<string, string> {
  if (!isPlainObject(raw)) throw new Error("safetensors: __metadata__ must be an object");
  const pairs: [string, string][] = [];
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v !== "string") {
      throw new Error(
        `safetensors: __metadata__ must map strings to strings, but "${k}" is ${JSON.stringify(v)}`,
      );
    }
    pairs.push([k, v]);
  }
  // fromEntries defines own properties, so a "__proto__" key stays a plain key.
  return Object.fromEntries(pairs);
}

/** A parsed and validated header: its tensors, metadata, and where the data starts. */
export interface SafetensorsHeader {
  /** Tensors in header order (the reference writer's order is by name). */
  tensors: TensorInfo[];
  metadata: Record<string, string>;
  /** Byte offset of the data buffer in the file (8 + header length). */
  dataStart: number;
}

/**
 * Validates the header length `n64` (the file's first 8 bytes) against the
 * reference limit and the file size, and returns it as a number.
 */
function headerLength(n64: bigint, fileLength: number): number {
  if (n64 > BigInt(MAX_HEADER_BYTES)) {
    throw new Error(
      `safetensors: header length ${n64} is absurd (limit ${MAX_HEADER_BYTES} bytes)`,
    );
  }
  const n = Number(n64);
  if (8 + n > fileLength) {
    throw new Error(
      `safetensors: header length ${n} reaches beyond the end of the ${fileLength}-byte file`,
    );
  }
  return n;
}

/**
 * Parses the JSON header of a file of `fileLength` bytes and checks, as the
 * reference reader does, that the tensors tile the data buffer exactly.
 */
function parseHeader(json: Uint8Array, fileLength: number): SafetensorsHeader {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(json);
  } catch {
    throw new Error("safetensors: header is not valid UTF-8");
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    throw new Error(`safetensors: header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(header)) throw new Error("safetensors: header is not a JSON object");

  const dataStart = 8 + json.length;
  const dataLength = fileLength - dataStart;
  let metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  for (const [name, raw] of Object.entries(header)) {
    if (name === "__metadata__") metadata = parseMetadata(raw);
    else tensors.push(parseEntry(name, raw, dataLength));
  }

  const byOffset = [...tensors].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const e of byOffset) {
    if (e.begin < cursor) {
      throw new Error(
        `safetensors: tensor "${e.name}" at [${e.begin}, ${e.end}] overlaps the previous tensor (ending at ${cursor})`,
      );
    }
    if (e.begin > cursor) {
      throw new Error(
        `safetensors: gap in the data buffer: bytes [${cursor}, ${e.begin}) before tensor "${e.name}" belong to no tensor`,
      );
    }
    cursor = e.end;
  }
  if (cursor !== dataLength) {
    throw new Error(
      `safetensors: data buffer is ${dataLength} bytes but the tensors cover only ${cursor} (trailing bytes)`,
    );
  }
  return { tensors, metadata, dataStart };
}

function unsupported(e: TensorInfo): Error {
  return new Error(
    `safetensors: tensor "${e.name}" has unsupported dtype ${
      JSON.stringify(e.dtype)
    } (supported: F32, F16, BF16)`,
  );
}

/** Whether this module decodes `dtype`. */
export function isFloatDType(dtype: string): dtype is DType {
  return dtype === "F32" || dtype === "F16" || dtype === "BF16";
}

/**
 * Parses a safetensors file. F32, F16 and BF16 tensors are decoded into
 * Float32Array; any other dtype is an error unless `opts.skip` excludes the
 * tensor. Throws an Error naming the problem for every malformed file.
 */
export function readSafetensors(
  bytes: Uint8Array,
  opts: ReadOptions = {},
): { tensors: Map<string, HostTensor>; metadata: Record<string, string> } {
  if (bytes.length < 8) {
    throw new Error(
      `safetensors: file is ${bytes.length} bytes, shorter than the 8-byte header length`,
    );
  }
  const n64 = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  const n = headerLength(n64, bytes.length);
  const { tensors: entries, metadata, dataStart } = parseHeader(
    bytes.subarray(8, 8 + n),
    bytes.length,
  );
  const tensors = new Map<string, HostTensor>();
  for (const e of entries) {
    if (opts.skip?.(e.name, e.dtype)) continue;
    const count = product(e.shape);
    const at = dataStart + e.begin;
    let data: Float32Array;
    switch (e.dtype) {
      case "F32":
        data = readLittleEndian(bytes, at, count, Float32Array);
        break;
      case "F16":
        data = f16BitsToF32(readLittleEndian(bytes, at, count, Uint16Array));
        break;
      case "BF16":
        data = bf16BitsToF32(readLittleEndian(bytes, at, count, Uint16Array));
        break;
      default:
        throw unsupported(e);
    }
    tensors.set(e.name, { shape: [...e.shape], data });
  }
  return { tensors, metadata };
}

/** Elements converted per chunk when reading or writing 16-bit tensors (2 MiB of f16). */
const CHUNK_ELEMENTS = 1 << 20;

/** Reads exactly `buf.length` bytes of `file` at `position`; a short file is an error. */
async function readExactly(file: Deno.FsFile, position: number, buf: Uint8Array): Promise<void> {
  await file.seek(position, Deno.SeekMode.Start);
  let got = 0;
  while (got < buf.length) {
    const n = await file.read(buf.subarray(got));
    if (n === null) {
      throw new Error(`safetensors: file ended ${buf.length - got} bytes early at ${position}`);
    }
    got += n;
  }
}

/**
 * A safetensors file opened for reading one tensor at a time. Opening reads and
 * validates only the header (as strictly as {@link readSafetensors}); each
 * {@link read} then reads that tensor's bytes, straight into the caller's
 * buffer for F32 and through a bounded scratch buffer for F16/BF16, so reading
 * a whole checkpoint needs no more memory than the decoded tensors themselves.
 * Close it when done.
 */
export class SafetensorsFile {
  /** The file's path, as given to {@link open}. */
  readonly path: string;
  /** Its tensors by name (every dtype, including ones this module does not decode). */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  readonly metadata: Readonly<Record<string, string>>;
  /** Size of the file in bytes. */
  readonly size: number;
  readonly #file: Deno.FsFile;
  readonly #dataStart: number;

  private constructor(path: string, file: Deno.FsFile, header: SafetensorsHeader, size: number) {
    this.path = path;
    this.#file = file;
    this.#dataStart = header.dataStart;
    this.tensors = new Map(header.tensors.map((t) => [t.name, t]));
    this.metadata = header.metadata;
    this.size = size;
  }

  /** Opens `path` and validates its header; throws naming the problem (not the path). */
  static async open(path: string): Promise<SafetensorsFile> {
    const file = await Deno.open(path, { read: true });
    try {
      const size = (await file.stat()).size;
      if (size < 8) {
        throw new Error(
          `safetensors: file is ${size} bytes, shorter than the 8-byte header length`,
        );
      }
      const prefix = new Uint8Array(8);
      await readExactly(file, 0, prefix);
      const n = headerLength(new DataView(prefix.buffer).getBigUint64(0, true), size);
      const json = new Uint8Array(n);
      await readExactly(file, 8, json);
      return new SafetensorsFile(path, file, parseHeader(json, size), size);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /**
   * Decodes tensor `name` (F32, F16 or BF16) into `out` (allocated when not
   * given; it must hold exactly the tensor's element count) and returns it.
   */
  async read(name: string, out?: Float32Array): Promise<Float32Array> {
    const e = this.tensors.get(name);
    if (e === undefined) throw new Error(`safetensors: no tensor "${name}" in ${this.path}`);
    if (!isFloatDType(e.dtype)) throw unsupported(e);
    const count = product(e.shape);
    const dst = out ?? new Float32Array(count);
    if (dst.length !== count) {
      throw new Error(
        `safetensors: tensor "${name}" has ${count} values but the buffer holds ${dst.length}`,
      );
    }
    const at = this.#dataStart + e.begin;
    if (e.dtype === "F32") {
      await readExactly(this.#file, at, new Uint8Array(dst.buffer, dst.byteOffset, 4 * count));
      if (!LITTLE_ENDIAN) {
        const dv = new DataView(dst.buffer, dst.byteOffset, 4 * count);
        for (let i = 0; i < count; i++) dst[i] = dv.getFloat32(4 * i, true);
      }
      return dst;
    }
    const words = new Uint16Array(Math.min(count, CHUNK_ELEMENTS));
    const bytes = new Uint8Array(words.buffer);
    const bits = new Int32Array(dst.buffer, dst.byteOffset, count);
    for (let i = 0; i < count; i += words.length) {
      const n = Math.min(words.length, count - i);
      await readExactly(this.#file, at + 2 * i, bytes.subarray(0, 2 * n));
      if (!LITTLE_ENDIAN) {
        const dv = new DataView(words.buffer);
        for (let k = 0; k < n; k++) words[k] = dv.getUint16(2 * k, true);
      }
      decode16(words, n, e.dtype, bits.subarray(i, i + n));
    }
    return dst;
  }

  /** Closes the file. */
  close(): void {
    this.#file.close();
  }
}

/** Orders strings by Unicode code point, as Rust's `String` ordering does. */
function byCodePoint(a: string, b: string): number {
  const ai = a[Symbol.iterator](), bi = b[Symbol.iterator]();
  for (;;) {
    const x = ai.next(), y = bi.next();
    if (x.done || y.done) return x.done ? (y.done ? 0 : -1) : 1;
    const d = x.value.codePointAt(0)! - y.value.codePointAt(0)!;
    if (d !== 0) return d;
  }
}

/** Bytes per element of a dtype this module writes. */
export function dtypeBytes(dtype: DType): number {
  return dtype === "F32" ? 4 : 2;
}

/** A safetensors file laid out but not yet written: its header and its tensors in file order. */
export interface SafetensorsPlan {
  /** The 8-byte length and the space-padded JSON header. */
  header: Uint8Array;
  /** Tensors in file order (sorted by name). */
  tensors: [string, HostTensor][];
  dtype: DType;
  /** Total file size in bytes. */
  size: number;
}

/**
 * Validates the tensors and lays out a safetensors file in `dtype` (F32, F16 or
 * BF16): tensors in sorted-name order with contiguous offsets, `metadata` as
 * `__metadata__`, header padded with spaces to a multiple of 8 bytes.
 */
export function planSafetensors(
  tensors: Map<string, HostTensor> | [string, HostTensor][],
  dtype: DType,
  metadata?: Record<string, string>,
): SafetensorsPlan {
  if (!isFloatDType(dtype)) {
    throw new Error(
      `safetensors: cannot write dtype ${JSON.stringify(dtype)} (F32, F16 or BF16 only)`,
    );
  }
  const list = tensors instanceof Map ? [...tensors.entries()] : [...tensors];
  const seen = new Set<string>();
  for (const [name, t] of list) {
    if (name === "__metadata__") {
      throw new Error('safetensors: "__metadata__" is not a tensor name');
    }
    if (seen.has(name)) throw new Error(`safetensors: duplicate tensor name "${name}"`);
    seen.add(name);
    if (!Array.isArray(t.shape) || !t.shape.every(isCount)) {
      throw new Error(
        `safetensors: tensor "${name}" has an invalid shape ${JSON.stringify(t.shape)}`,
      );
    }
    if (product(t.shape) !== t.data.length) {
      throw new Error(
        `safetensors: tensor "${name}" has shape ${
          JSON.stringify(t.shape)
        } but ${t.data.length} values`,
      );
    }
  }
  if (metadata !== undefined) parseMetadata(metadata);
  list.sort((a, b) => byCodePoint(a[0], b[0]));

  const width = dtypeBytes(dtype);
  // Built by hand: a JS object would move integer-like names to the front.
  const parts: string[] = [];
  if (metadata !== undefined) parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  let offset = 0;
  for (const [name, t] of list) {
    const end = offset + t.data.length * width;
    const info = { dtype, shape: t.shape, data_offsets: [offset, end] };
    parts.push(`${JSON.stringify(name)}:${JSON.stringify(info)}`);
    offset = end;
  }
  const json = new TextEncoder().encode(`{${parts.join(",")}}`);
  const headerLength = Math.ceil(json.length / 8) * 8;
  const header = new Uint8Array(8 + headerLength);
  new DataView(header.buffer).setBigUint64(0, BigInt(headerLength), true);
  header.set(json, 8);
  header.fill(0x20, 8 + json.length); // pad with spaces
  return { header, tensors: list, dtype, size: header.length + offset };
}

/**
 * The bytes of one tensor in `dtype`, little-endian, as a sequence of pieces: an
 * F32 tensor is one view of its own data (no copy on little-endian machines); a
 * 16-bit tensor is converted into one reused buffer of at most 1 Mi elements,
 * so a piece is valid only until the next one is requested.
 */
export function* tensorBytes(data: Float32Array, dtype: DType): Generator<Uint8Array> {
  if (dtype === "F32") {
    if (LITTLE_ENDIAN) {
      yield new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      return;
    }
    const out = new Uint8Array(4 * Math.min(data.length, CHUNK_ELEMENTS));
    const dv = new DataView(out.buffer);
    for (let i = 0; i < data.length; i += out.length / 4) {
      const n = Math.min(out.length / 4, data.length - i);
      for (let k = 0; k < n; k++) dv.setFloat32(4 * k, data[i + k], true);
      yield out.subarray(0, 4 * n);
    }
    return;
  }
  const convert = dtype === "F16" ? halfFromF32Bits : bf16FromF32Bits;
  const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
  const words = new Uint16Array(Math.min(data.length, CHUNK_ELEMENTS));
  const bytes = new Uint8Array(words.buffer);
  const dv = new DataView(words.buffer);
  for (let i = 0; i < data.length; i += words.length) {
    const n = Math.min(words.length, data.length - i);
    if (LITTLE_ENDIAN) { for (let k = 0; k < n; k++) words[k] = convert(bits[i + k]); }
    else for (let k = 0; k < n; k++) dv.setUint16(2 * k, convert(bits[i + k]), true);
    yield bytes.subarray(0, 2 * n);
  }
}

/**
 * Writes a planned file to `sink` piece by piece (header, then each tensor via
 * {@link tensorBytes}), awaiting each write before the next piece is made: the
 * whole file never exists in memory. Returns the bytes written.
 */
export async function streamSafetensors(
  plan: SafetensorsPlan,
  sink: { write(bytes: Uint8Array): Promise<void> },
): Promise<number> {
  await sink.write(plan.header);
  let total = plan.header.length;
  for (const [, t] of plan.tensors) {
    for (const piece of tensorBytes(t.data, plan.dtype)) {
      await sink.write(piece);
      total += piece.length;
    }
  }
  return total;
}
