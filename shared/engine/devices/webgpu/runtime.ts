/**
 * The machinery under the WebGPU device's kernels: buffers and views,
 * pipelines compiled once per WGSL source, bind groups made once per set of
 * bound ranges, per-dispatch parameters and the host's integer inputs packed
 * into two arenas uploaded once per submission, every dispatch of a pass
 * recorded into one compute pass of one command encoder, and one staging
 * buffer mapped once per read.
 *
 * Views: a {@link GpuTensor} is (buffer, element offset, length). A kernel
 * binds the range of its buffer from the offset rounded down to the
 * adapter's storage offset alignment, as long as the binding limit allows
 * (so a buffer of any size up to maxBufferSize works while each view fits in
 * one binding), and reads the remaining element offset from its parameters.
 * Bind groups are keyed by (buffer, aligned start) only, so views of any
 * length from the same start share one.
 *
 * Parameters: every dispatch's words (binding offsets first, then the
 * kernel's own) go into a 256-byte slot of one uniform buffer bound with a
 * dynamic offset; identical words share a slot within a submission.
 *
 * @module
 */
import { type DeviceCounts, zeroCounts } from "../../device.ts";

export type { DeviceCounts };

/** A GPU buffer the device made, with an id for cache keys. */
export interface GpuBuffer {
  readonly id: number;
  readonly gpu: GPUBuffer;
  /** Bytes of `gpu`. */
  readonly bytes: number;
}

/** Elements [offset, offset + length) of a buffer, as floats (or 32-bit integers). */
export interface GpuTensor {
  readonly buf: GpuBuffer;
  readonly offset: number;
  readonly length: number;
}

/** Host data a kernel binds: uploaded into the integer arena once per submission. */
export type HostArray = Int32Array | Uint32Array | Float32Array | Uint8Array;

/** The element type a kernel binds a buffer as. */
export type BindType = "f32" | "u32" | "vec4<f32>";

/** A kernel's source and the names and types of its storage bindings, in binding order. */
export interface Kernel {
  readonly name: string;
  readonly bindings: readonly (readonly [name: string, type: BindType])[];
  /** WGSL after the generated prelude: must define `@compute fn main` calling `init()` first. */
  readonly body: string;
  readonly workgroup: readonly [number, number?, number?];
}

const SLOT = 256; // bytes of one parameter slot (the uniform offset alignment on every adapter)
const WORDS = SLOT / 4;

/** The WGSL a kernel compiles to: parameters, bindings with their offsets, then its body. */
export function kernelSource(k: Kernel): string {
  const lines = [
    "struct Params { v: array<vec4<u32>, 16> }",
    "@group(0) @binding(0) var<uniform> P: Params;",
    "fn pu(i: u32) -> u32 { return P.v[i >> 2u][i & 3u]; }",
    "fn pf(i: u32) -> f32 { return bitcast<f32>(pu(i)); }",
    `const PB: u32 = ${k.bindings.length}u;`,
  ];
  k.bindings.forEach(([name, type], i) => {
    lines.push(`@group(0) @binding(${i + 1}) var<storage, read_write> ${name}: array<${type}>;`);
    lines.push(`var<private> ${name}_o: u32;`);
  });
  lines.push(`fn init() {${k.bindings.map(([n], i) => ` ${n}_o = pu(${i}u);`).join("")} }`);
  const [x, y = 1, z = 1] = k.workgroup;
  lines.push(`const WG: vec3<u32> = vec3<u32>(${x}u, ${y}u, ${z}u);`);
  return lines.join("\n") + "\n" + k.body;
}

/** The float32 bits of `x` as a u32 word (for kernel parameters). */
export function f32Bits(x: number): number {
  BITS_F[0] = x;
  return BITS_U[0];
}
const BITS_F = new Float32Array(1), BITS_U = new Uint32Array(BITS_F.buffer);

/** Sorts and merges flat [start, end) pairs in place; returns the new length. */
function normalise(r: number[]): number {
  const pairs: [number, number][] = [];
  for (let i = 0; i < r.length; i += 2) pairs.push([r[i], r[i + 1]]);
  pairs.sort((a, b) => a[0] - b[0]);
  r.length = 0;
  for (const [s, e] of pairs) {
    const n = r.length;
    if (n && s <= r[n - 1]) r[n - 1] = Math.max(r[n - 1], e);
    else r.push(s, e);
  }
  return r.length;
}

/** A growable host mirror of a GPU arena, uploaded in one write per submission. */
class UploadArena {
  #gpu: GpuBuffer | null = null;
  #host = new Uint32Array(0);
  used = 0;
  constructor(
    private readonly rt: Runtime,
    private readonly usage: number,
    private readonly minWords: number,
  ) {}

  get buffer(): GpuBuffer {
    return this.#gpu ??= this.rt.createBuffer(this.minWords * 4, this.usage);
  }

  /** Words of room left in the current buffer. */
  get room(): number {
    return this.buffer.bytes / 4 - this.used;
  }

  /** Grows the buffer to hold at least `words` (only between submissions). */
  grow(words: number): void {
    const old = this.buffer;
    this.#gpu = this.rt.createBuffer(Math.max(2 * old.bytes, words * 4), this.usage);
    this.rt.destroyLater(old);
  }

  /** Room for `words` more words at the end; returns their word offset. */
  take(words: number): number {
    const at = this.used;
    this.used += words;
    if (this.#host.length < this.used) {
      const h = new Uint32Array(Math.max(this.used, 2 * this.#host.length));
      h.set(this.#host);
      this.#host = h;
    }
    return at;
  }

  get host(): Uint32Array {
    return this.#host;
  }

  /** Uploads what was taken since the last flush; returns the bytes written. */
  flush(queue: GPUQueue): number {
    const n = this.used;
    this.used = 0;
    if (n === 0) return 0;
    queue.writeBuffer(this.buffer.gpu, 0, this.#host, 0, n);
    return n * 4;
  }
}

/** Options of {@link Runtime}. */
export interface RuntimeOptions {
  /** Time every dispatch with timestamp queries (one compute pass per dispatch). */
  readonly profile?: boolean;
  /**
   * Caps the storage binding size below the adapter's (bytes; for tests of
   * the split paths: kernels that may see a view larger than one binding
   * split it by rows).
   */
  readonly maxBindingBytes?: number;
}

/** Dispatch recording, caches and counters over one GPUDevice. */
export class Runtime {
  readonly counts: DeviceCounts = zeroCounts();
  /** Milliseconds and dispatches per kernel name, filled when profiling. */
  readonly profile = { ms: new Map<string, number>(), calls: new Map<string, number>() };
  readonly align: number;
  readonly maxBinding: number;
  /** Elements a view may hold and still fit in one binding from any element offset (a multiple of 4). */
  readonly maxView: number;
  /**
   * Per buffer id, element ranges [start, end) (flat pairs) that may be
   * non-zero; everything else is known to be zero. Every view a dispatch
   * binds (unless it says otherwise) and every write marks its range, and a
   * fill with 0 zeroes only the marked ranges it covers
   * ({@link Runtime.takeDirty}).
   */
  readonly #dirty = new Map<number, { r: number[]; clean: number }>();
  #nextId = 1;
  readonly #pipelines = new Map<string, GPUComputePipeline>();
  readonly #layouts = new Map<number, { bgl: GPUBindGroupLayout; pl: GPUPipelineLayout }>();
  readonly #groups = new Map<string, GPUBindGroup>();
  /** Bind-group keys by the buffer ids they hold (purged when a buffer goes). */
  readonly #groupsOf = new Map<number, string[]>();
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  readonly #params: UploadArena;
  readonly #ints: UploadArena;
  readonly #slots = new Map<string, number>();
  readonly #uploaded = new Map<ArrayBufferView, GpuTensor>();
  #doomed: GpuBuffer[] = [];
  #staging: GPUBuffer | null = null;
  readonly #timing: {
    set: GPUQuerySet;
    resolve: GPUBuffer;
    names: string[];
    capacity: number;
  } | null;

  constructor(readonly device: GPUDevice, options: RuntimeOptions = {}) {
    const l = device.limits;
    this.align = Math.max(l.minStorageBufferOffsetAlignment, 4);
    this.maxBinding = Math.min(
      l.maxStorageBufferBindingSize,
      l.maxBufferSize,
      options.maxBindingBytes ?? Infinity,
    );
    this.maxView = Math.floor((this.maxBinding - this.align) / 16) * 4;
    const U = GPUBufferUsage;
    this.#params = new UploadArena(this, U.UNIFORM | U.COPY_DST, 64 * WORDS);
    this.#ints = new UploadArena(this, U.STORAGE | U.COPY_DST, 1 << 16);
    if (options.profile && device.features.has("timestamp-query")) {
      const capacity = 4096;
      this.#timing = {
        set: device.createQuerySet({ type: "timestamp", count: capacity }),
        resolve: device.createBuffer({ size: capacity * 8, usage: U.QUERY_RESOLVE | U.COPY_SRC }),
        names: [],
        capacity,
      };
    } else this.#timing = null;
  }

  /** A new zero-filled buffer of `bytes` (rounded up; a little spare so any binding is valid). */
  createBuffer(bytes: number, usage?: number): GpuBuffer {
    const U = GPUBufferUsage;
    const size = Math.ceil(Math.max(bytes, 4) / 256) * 256 + 256;
    if (size > this.device.limits.maxBufferSize) {
      throw new Error(
        `webgpu: a buffer of ${bytes} bytes exceeds maxBufferSize ${this.device.limits.maxBufferSize}`,
      );
    }
    const gpu = this.device.createBuffer({
      size,
      usage: usage ?? (U.STORAGE | U.COPY_SRC | U.COPY_DST),
    });
    const b = { id: this.#nextId++, gpu, bytes: size };
    this.#dirty.set(b.id, { r: [], clean: 0 }); // new buffers are zero
    return b;
  }

  /** Marks elements [start, end) of `b` as possibly non-zero. */
  markDirty(b: GpuBuffer, start: number, end: number): void {
    const d = this.#dirty.get(b.id);
    if (!d || end <= start) return;
    const r = d.r, n = r.length;
    if (n >= 2 && r[n - 2] <= start && start <= r[n - 1]) r[n - 1] = Math.max(r[n - 1], end);
    else r.push(start, end);
    if (r.length > 2 * d.clean + 256) d.clean = normalise(r);
  }

  /**
   * The marked ranges of `b` within [start, end), merged and in order (flat
   * pairs), and unmarks them: the caller zeroes them.
   */
  takeDirty(b: GpuBuffer, start: number, end: number): number[] {
    const d = this.#dirty.get(b.id);
    if (!d) return [start, end];
    normalise(d.r);
    const out: number[] = [], keep: number[] = [];
    for (let i = 0; i < d.r.length; i += 2) {
      const s = d.r[i], e = d.r[i + 1];
      if (e <= start || s >= end) {
        keep.push(s, e);
        continue;
      }
      if (s < start) keep.push(s, start);
      out.push(Math.max(s, start), Math.min(e, end));
      if (e > end) keep.push(end, e);
    }
    d.r = keep;
    d.clean = keep.length;
    return out;
  }

  /** Destroys `b` once the work recorded so far has been submitted, and forgets its bind groups. */
  destroyLater(b: GpuBuffer): void {
    this.#dirty.delete(b.id);
    for (const key of this.#groupsOf.get(b.id) ?? []) this.#groups.delete(key);
    this.#groupsOf.delete(b.id);
    if (this.#encoder) this.#doomed.push(b);
    else b.gpu.destroy();
  }

  /** Whether work is recorded and not yet submitted. */
  get pending(): boolean {
    return this.#encoder !== null;
  }

  #pipeline(k: Kernel): { pipeline: GPUComputePipeline; bgl: GPUBindGroupLayout } {
    const n = k.bindings.length;
    let layout = this.#layouts.get(n);
    if (!layout) {
      const entries: GPUBindGroupLayoutEntry[] = [{
        binding: 0,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: "uniform", hasDynamicOffset: true, minBindingSize: SLOT },
      }];
      for (let i = 1; i <= n; i++) {
        entries.push({
          binding: i,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type: "storage" },
        });
      }
      const bgl = this.device.createBindGroupLayout({ entries });
      layout = { bgl, pl: this.device.createPipelineLayout({ bindGroupLayouts: [bgl] }) };
      this.#layouts.set(n, layout);
    }
    const code = kernelSource(k);
    let pipeline = this.#pipelines.get(code);
    if (!pipeline) {
      const module = this.device.createShaderModule({ code, label: k.name });
      pipeline = this.device.createComputePipeline({
        label: k.name,
        layout: layout.pl,
        compute: { module, entryPoint: "main" },
      });
      this.#pipelines.set(code, pipeline);
      this.counts.pipelinesCompiled++;
    }
    return { pipeline, bgl: layout.bgl };
  }

  /** The binding range of `t`: its buffer from the aligned start, and the element offset within. */
  #range(t: GpuTensor): { start: number; size: number; offset: number } {
    const first = t.offset * 4, start = first - (first % this.align);
    const size = Math.min(this.maxBinding, t.buf.bytes - start);
    if (first + t.length * 4 - start > size) {
      throw new Error(
        `webgpu: a view of ${t.length} floats exceeds the storage binding limit of ${this.maxBinding} bytes`,
      );
    }
    return { start, size: size - (size % 16), offset: (first - start) / 4 };
  }

  /** The parameter slot holding `words` in this submission (shared with equal words). */
  #slot(words: readonly number[]): number {
    if (words.length > WORDS) throw new Error(`webgpu: ${words.length} parameter words > ${WORDS}`);
    const key = words.join(",");
    let slot = this.#slots.get(key);
    if (slot === undefined) {
      const at = this.#params.take(WORDS);
      const h = this.#params.host;
      for (let i = 0; i < words.length; i++) h[at + i] = words[i];
      slot = at * 4;
      this.#slots.set(key, slot);
    }
    return slot;
  }

  /** Arena words `data` needs, or 0 when it is already uploaded in this submission. */
  #wordsFor(data: HostArray): number {
    if (this.#uploaded.has(data)) return 0;
    const pad = this.align / 4;
    return Math.ceil(Math.max(data.length, 1) / pad) * pad;
  }

  /** Host integers (or floats, by bits) as a tensor of the integer arena, for this submission. */
  #upload(data: HostArray): GpuTensor {
    let t = this.#uploaded.get(data);
    if (t) return t;
    const n = data.length;
    const at = this.#ints.take(this.#wordsFor(data)), h = this.#ints.host;
    if (data instanceof Uint8Array) { for (let i = 0; i < n; i++) h[at + i] = data[i]; }
    else h.set(new Uint32Array(data.buffer, data.byteOffset, n), at);
    t = { buf: this.#ints.buffer, offset: at, length: n };
    this.#uploaded.set(data, t);
    return t;
  }

  #bindGroup(
    bgl: GPUBindGroupLayout,
    n: number,
    ranges: { start: number; size: number }[],
    bufs: GpuBuffer[],
  ): GPUBindGroup {
    const params = this.#params.buffer;
    let key = `${n}|${params.id}`;
    for (let i = 0; i < bufs.length; i++) key += `|${bufs[i].id}:${ranges[i].start}`;
    let g = this.#groups.get(key);
    if (!g) {
      const entries: GPUBindGroupEntry[] = [{
        binding: 0,
        resource: { buffer: params.gpu, size: SLOT },
      }];
      bufs.forEach((b, i) => {
        entries.push({
          binding: i + 1,
          resource: { buffer: b.gpu, offset: ranges[i].start, size: ranges[i].size },
        });
      });
      g = this.device.createBindGroup({ layout: bgl, entries });
      this.#groups.set(key, g);
      for (const id of new Set([params.id, ...bufs.map((b) => b.id)])) {
        const list = this.#groupsOf.get(id);
        if (list) list.push(key);
        else this.#groupsOf.set(id, [key]);
      }
    }
    return g;
  }

  /**
   * Records one dispatch of `k` over `groups` workgroups with `binds` bound in
   * order and `words` (u32; floats through {@link f32Bits}) after the offsets.
   * Every bound view is marked as possibly non-zero except those in `exact`,
   * whose writes the caller marks ({@link Runtime.markDirty}).
   */
  dispatch(
    k: Kernel,
    binds: readonly (GpuTensor | HostArray)[],
    words: readonly number[],
    groups: readonly [number, number?, number?],
    exact: readonly GpuTensor[] = [],
  ): void {
    const [gx, gy = 1, gz = 1] = groups;
    if (gx === 0 || gy === 0 || gz === 0) return;
    if (binds.length !== k.bindings.length) {
      throw new Error(
        `webgpu ${k.name}: ${binds.length} buffers for ${k.bindings.length} bindings`,
      );
    }
    const { pipeline, bgl } = this.#pipeline(k);
    // Room in both arenas first, so that nothing taken below is flushed before it is used.
    let intWords = 0;
    for (const b of binds) if (ArrayBuffer.isView(b)) intWords += this.#wordsFor(b);
    const paramsFull = this.#params.room < WORDS, intsFull = this.#ints.room < intWords;
    if (paramsFull || intsFull) {
      // Submit what is recorded, and grow the arena that ran out so that next time it fits.
      const params = this.#params.used + WORDS, ints = this.#ints.used + intWords;
      this.submit();
      if (paramsFull) this.#params.grow(params);
      if (intsFull) this.#ints.grow(ints);
    }
    for (const b of binds) {
      if (!ArrayBuffer.isView(b) && !exact.includes(b)) {
        this.markDirty(b.buf, b.offset, b.offset + b.length);
      }
    }
    const views = binds.map((b) => ArrayBuffer.isView(b) ? this.#upload(b) : b);
    const ranges = views.map((t) => this.#range(t));
    const slot = this.#slot([...ranges.map((r) => r.offset), ...words]);
    const group = this.#bindGroup(bgl, views.length, ranges, views.map((t) => t.buf));
    const pass = this.#beginPass(k.name);
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group, [slot]);
    pass.dispatchWorkgroups(gx, gy, gz);
    if (this.#timing) this.#endPass();
    this.counts.dispatches++;
  }

  /** Workgroup counts covering `n` groups in x (and y beyond the per-dimension limit). */
  grid(n: number): [number, number] {
    const max = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (n <= max) return [n, 1];
    const y = Math.ceil(n / max);
    return [Math.ceil(n / y), y];
  }

  #encoderNow(): GPUCommandEncoder {
    return this.#encoder ??= this.device.createCommandEncoder();
  }

  #beginPass(name: string): GPUComputePassEncoder {
    if (this.#pass) return this.#pass;
    const enc = this.#encoderNow(), t = this.#timing;
    if (t && t.names.length * 2 + 2 <= t.capacity) {
      const i = t.names.length;
      t.names.push(name);
      this.#pass = enc.beginComputePass({
        timestampWrites: {
          querySet: t.set,
          beginningOfPassWriteIndex: 2 * i,
          endOfPassWriteIndex: 2 * i + 1,
        },
      });
    } else this.#pass = enc.beginComputePass();
    return this.#pass;
  }

  #endPass(): void {
    this.#pass?.end();
    this.#pass = null;
  }

  /** Copies `bytes` between buffers after the work recorded so far. */
  copy(src: GpuBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    if (bytes === 0) return;
    this.#endPass();
    this.#encoderNow().copyBufferToBuffer(src.gpu, srcOffset, dst, dstOffset, bytes);
  }

  /** Uploads the arenas and submits everything recorded (nothing when nothing is). */
  submit(): void {
    this.#endPass();
    const enc = this.#encoder;
    if (!enc) return;
    const q = this.device.queue;
    this.counts.uploadBytes += this.#params.flush(q) + this.#ints.flush(q);
    this.#slots.clear();
    this.#uploaded.clear();
    const t = this.#timing;
    const timed = t ? t.names.splice(0) : [];
    let times: GPUBuffer | null = null; // a fresh one per submission: earlier ones may be mapping
    if (t && timed.length) {
      times = this.device.createBuffer({
        size: 16 * timed.length,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      enc.resolveQuerySet(t.set, 0, 2 * timed.length, t.resolve, 0);
      enc.copyBufferToBuffer(t.resolve, 0, times, 0, 16 * timed.length);
    }
    q.submit([enc.finish()]);
    this.#encoder = null;
    this.counts.submits++;
    for (const b of this.#doomed.splice(0)) b.gpu.destroy();
    if (times) this.#pendingTimes.push(this.#collect(timed, times));
  }

  #pendingTimes: Promise<void>[] = [];

  async #collect(names: string[], times: GPUBuffer): Promise<void> {
    await times.mapAsync(GPUMapMode.READ);
    const ns = new BigInt64Array(times.getMappedRange());
    names.forEach((name, i) => {
      const ms = Number(ns[2 * i + 1] - ns[2 * i]) / 1e6;
      this.profile.ms.set(name, (this.profile.ms.get(name) ?? 0) + ms);
      this.profile.calls.set(name, (this.profile.calls.get(name) ?? 0) + 1);
    });
    times.destroy();
  }

  /**
   * Host copies of `views` after all recorded work: one staging buffer, one
   * map; view i goes into `into[i]` when given (of its length).
   */
  async read(
    views: readonly GpuTensor[],
    into?: readonly (Float32Array | undefined)[],
  ): Promise<Float32Array[]> {
    const total = views.reduce((s, v) => s + v.length, 0);
    const bytes = Math.max(4, total * 4);
    if (!this.#staging || this.#staging.size < bytes) {
      this.#staging?.destroy();
      this.#staging = this.device.createBuffer({
        size: Math.ceil(bytes / 256) * 256,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
    }
    const staging = this.#staging;
    let at = 0;
    for (const v of views) {
      this.copy(v.buf, v.offset * 4, staging, at * 4, v.length * 4);
      at += v.length;
    }
    this.#encoderNow(); // a read submits even when nothing else was recorded
    this.submit();
    await staging.mapAsync(GPUMapMode.READ, 0, bytes);
    const all = new Float32Array(staging.getMappedRange(0, bytes));
    at = 0;
    const out = views.map((v, i) => {
      const dst = into?.[i] ?? new Float32Array(v.length);
      if (dst.length !== v.length) {
        throw new Error(`webgpu read: ${v.length} values into an array of ${dst.length}`);
      }
      dst.set(all.subarray(at, at + v.length));
      at += v.length;
      return dst;
    });
    staging.unmap();
    this.counts.readbacks++;
    await Promise.all(this.#pendingTimes.splice(0));
    return out;
  }

  /** Writes host data into `t` after the work recorded so far (submitting it first). */
  write(t: GpuTensor, data: Float32Array): void {
    if (data.length !== t.length) {
      throw new Error(`webgpu write: ${data.length} values into a view of ${t.length}`);
    }
    if (this.pending) this.submit();
    this.markDirty(t.buf, t.offset, t.offset + t.length);
    this.device.queue.writeBuffer(t.buf.gpu, t.offset * 4, data as Float32Array<ArrayBuffer>);
    this.counts.uploadBytes += data.byteLength;
  }
}
