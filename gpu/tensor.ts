/**
 * The runtime's two public types: {@linkcode Tensor}, a shape and a dtype over a range of a
 * storage buffer, and {@linkcode Gpu}, the runtime around one WebGPU device that tensors live on
 * (an interface: `requestGpu` returns its implementation, `runtime.ts`). Each names the other (a
 * tensor knows its runtime; the runtime makes, binds and reads tensors), so they are declared in
 * one module, which imports no other of the runtime's but leaves (split, the two would import each
 * other). It is longer than ~500 lines for that reason: the documentation of both types.
 *
 * @module
 */

import type { KernelSpec } from "./kernel.ts";
import type { BufferPool } from "./pool.ts";
import { checkShape, formatShape, numel, type Shape } from "./shape.ts";

/**
 * Element types. `u8` is stored packed, four per 32-bit word (WGSL has no 8-bit type: kernels
 * read it with `(words[i >> 2] >> ((i & 3) * 8)) & 0xff`). `f16` is IEEE half precision, two
 * per word; kernels read it as WGSL `f16` (the device needs the `shader-f16` feature).
 */
export type DType = "f32" | "f16" | "i32" | "u32" | "u8";

/** The TypedArray that holds the elements of a dtype on the CPU. */
export type ArrayFor<D extends DType> = D extends "f32" ? Float32Array
  : D extends "f16" ? Float16Array
  : D extends "i32" ? Int32Array
  : D extends "u32" ? Uint32Array
  : Uint8Array;

/**
 * Bytes of storage for `n` elements of `dtype` (u8 and f16 rounded up to whole 32-bit words; at
 * least 4).
 *
 * @example
 * ```ts
 * import { storageBytes } from "./tensor.ts";
 * storageBytes(5, "u8"); // 8
 * storageBytes(5, "f16"); // 12
 * storageBytes(5, "f32"); // 20
 * ```
 */
export function storageBytes(n: number, dtype: DType): number {
  const bytes = dtype === "u8"
    ? Math.ceil(n / 4) * 4
    : dtype === "f16"
    ? Math.ceil(n / 2) * 4
    : n * 4;
  return Math.max(4, bytes);
}

/** The dtype of a TypedArray. */
export type DTypeOf<A> = A extends Float32Array ? "f32"
  : A extends Float16Array ? "f16"
  : A extends Int32Array ? "i32"
  : A extends Uint32Array ? "u32"
  : "u8";

/** Something bindable as a storage buffer: a tensor, or a raw buffer range. */
export type Binding = Tensor | GPUBuffer | {
  readonly buffer: GPUBuffer;
  readonly offset?: number;
  readonly size?: number;
};

/** Options of {@linkcode Gpu.dispatch}. */
export interface DispatchOptions {
  /** Bytes of the kernel's `Params` uniform (binding 0). Omit for kernels without one. */
  readonly params?: ArrayBufferView | ArrayBuffer;
  /** Storage bindings in binding order: 1, 2, ... (0, 1, ... when there are no params). */
  readonly bindings: readonly Binding[];
  /** Workgroup counts: x, or [x, y, z]. Zero in any dimension skips the dispatch. */
  readonly workgroups: number | readonly [number, number?, number?];
}

/** Optional features found on the adapter and enabled on the device. */
export interface GpuFeatures {
  /** `shader-f16`: f16 types in WGSL. */
  readonly f16: boolean;
  /** `timestamp-query`: GPU timestamps. */
  readonly timestamps: boolean;
}

/** Counters for tests and benchmarks (e.g. "a training step does one submit, zero readbacks"). */
export interface GpuStats {
  /** `queue.submit` calls. */
  submits: number;
  /** Dispatches recorded. */
  dispatches: number;
  /** Zero-fills recorded (`clear`, `zeros`). */
  clears: number;
  /** GPU → CPU copies (`read`/`toArray`). */
  readbacks: number;
  /** CPU → GPU writes of tensor data. */
  uploads: number;
  /** Pipelines compiled (cache misses). */
  pipelines: number;
  /** Bind groups created (cache misses: a repeated training step creates none). */
  bindGroups: number;
}

/**
 * The runtime around one WebGPU device: a pipeline cache, a buffer pool, command recording that
 * batches many dispatches into one submit, readbacks on request, and errors that name the kernel.
 * Get one with {@linkcode requestGpu} or {@linkcode getGpu}.
 *
 * Recording model: `dispatch` only records into an open command encoder; nothing reaches the GPU
 * until `flush()` (one `queue.submit`), and nothing waits on the GPU until `sync()` or a readback.
 * A training step records all its passes and flushes once, so it never waits on the GPU.
 *
 * @example
 * ```ts
 * import { requestGpu } from "@modern-cnn/webgpu/gpu";
 * const gpu = await requestGpu();
 * const x = gpu.tensor(new Float32Array([1, -2, 3]), { shape: [3] });
 * const y = gpu.empty([3]);
 * gpu.dispatch({
 *   name: "negate",
 *   code: `@group(0) @binding(0) var<storage, read> x: array<f32>;
 *          @group(0) @binding(1) var<storage, read_write> y: array<f32>;
 *          @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
 *            if (g.x < arrayLength(&y)) { y[g.x] = -x[g.x]; }
 *          }`,
 * }, { bindings: [x, y], workgroups: 1 });
 * console.log(await y.toArray()); // Float32Array [-1, 2, -3]
 * ```
 */
export interface Gpu {
  /** The adapter. */
  readonly adapter: GPUAdapter;

  /** The device. */
  readonly device: GPUDevice;

  /** The adapter's description (e.g. `NVIDIA H100 80GB HBM3` or `llvmpipe (LLVM 15.0.6, 256 bits)`). */
  readonly description: string;

  /** Whether this is a CPU (fallback/software) adapter, where barrier-free kernels do better. */
  readonly isCpu: boolean;

  /** Optional features enabled on the device. */
  readonly features: GpuFeatures;

  /** The device's limits. */
  readonly limits: GPUSupportedLimits;

  /** The buffer pool behind every tensor. */
  readonly pool: BufferPool;

  /** Counters (mutable: tests reset them). */
  readonly stats: GpuStats;

  /**
   * The compute pipeline of a kernel, compiled on first use and cached by name and constants.
   * A compile error is raised at the next `dispatch`, `flush`-then-`sync` or readback; use
   * {@linkcode Gpu.compile} to get it at once.
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * const p = gpu.pipeline({ name: "noop", code: "@compute @workgroup_size(1) fn main() {}" });
   * ```
   */
  pipeline(spec: KernelSpec): GPUComputePipeline;

  /**
   * Compiles a kernel now and throws {@linkcode KernelCompileError} naming it if the WGSL is
   * invalid. Use it to warm the cache before timing, or to validate generated WGSL.
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * await gpu.compile({ name: "noop", code: "@compute @workgroup_size(1) fn main() {}" });
   * ```
   */
  compile(spec: KernelSpec): Promise<void>;

  /**
   * Records one dispatch of `kernel` into the open command encoder (nothing is submitted).
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * const y = gpu.empty([4]);
   * gpu.dispatch({
   *   name: "fill",
   *   code: `struct Params { v: f32 }
   *          @group(0) @binding(0) var<uniform> p: Params;
   *          @group(0) @binding(1) var<storage, read_write> y: array<f32>;
   *          @compute @workgroup_size(4) fn main(@builtin(global_invocation_id) g: vec3u) {
   *            y[g.x] = p.v;
   *          }`,
   * }, { params: new Float32Array([2.5]), bindings: [y], workgroups: 1 });
   * ```
   */
  dispatch(kernel: KernelSpec, options: DispatchOptions): void;

  /**
   * Records a copy of `src` into `dst` (whole tensors of equal byte length, or the given ranges).
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * const a = gpu.tensor(new Float32Array([1, 2]), { shape: [2] });
   * const b = gpu.empty([2]);
   * gpu.copy(a, b);
   * ```
   */
  copy(
    src: Tensor,
    dst: Tensor,
    options?: { srcOffset?: number; dstOffset?: number; bytes?: number },
  ): void;

  /**
   * Records zero-filling of a tensor (in order with recorded dispatches).
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * const g = gpu.empty([16]);
   * gpu.clear(g);
   * ```
   */
  clear(t: Tensor): void;

  /**
   * Submits all recorded work in one `queue.submit`. Does not wait for the GPU.
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * gpu.flush();
   * ```
   */
  flush(): void;

  /**
   * Submits recorded work, waits until the GPU has finished it, and throws the first GPU error
   * raised since the last check (compile, validation, out of memory, device lost).
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * await gpu.sync();
   * ```
   */
  sync(): Promise<void>;

  /**
   * Throws the first GPU error raised so far and not yet thrown (errors arrive asynchronously;
   * `sync()` waits for them).
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * gpu.checkErrors();
   * ```
   */
  checkErrors(): void;

  /**
   * A tensor holding a copy of `data` (length must equal the shape's element count).
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * const x = gpu.tensor(new Float32Array(6), { shape: [2, 3] });
   * const labels = gpu.tensor(new Int32Array([3, 1]), { shape: [2] });
   * const pixels = gpu.tensor(new Uint8Array([0, 255, 128]), { shape: [3] }); // dtype u8
   * const half = gpu.tensor(new Float16Array([0.5, 1]), { shape: [2] }); // dtype f16
   * ```
   */
  tensor<A extends Float32Array | Float16Array | Int32Array | Uint32Array | Uint8Array>(
    data: A,
    options: { shape: Shape },
  ): Tensor<DTypeOf<A>>;

  /**
   * A tensor with undefined contents (a pooled buffer may hold old data).
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * const y = gpu.empty([128, 10]);
   * ```
   */
  empty<D extends DType = "f32">(shape: Shape, options?: { dtype?: D }): Tensor<D>;

  /**
   * A zero-filled tensor (the fill is recorded in order with other GPU work).
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * const g = gpu.zeros([64, 3, 3, 3]);
   * ```
   */
  zeros<D extends DType = "f32">(shape: Shape, options?: { dtype?: D }): Tensor<D>;

  /**
   * Overwrites a tensor's contents from the CPU. Recorded work is submitted first so that the
   * write cannot overtake it.
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * const idx = gpu.empty([4], { dtype: "u32" });
   * gpu.write(idx, new Uint32Array([3, 1, 0, 2]));
   * ```
   */
  write(
    t: Tensor,
    data: Float32Array | Float16Array | Int32Array | Uint32Array | Uint8Array,
  ): void;

  /**
   * Copies a tensor to the CPU: submits recorded work, copies, and waits once.
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * const t = gpu.tensor(new Float32Array([1, 2]), { shape: [2] });
   * console.log(await gpu.read(t)); // Float32Array [1, 2]
   * ```
   */
  read<D extends DType>(t: Tensor<D>): Promise<ArrayFor<D>>;

  /**
   * Runs `fn` and disposes every tensor created inside it, except those in its result (a tensor,
   * or arrays / plain objects holding tensors). Works with async functions too.
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * const kept = gpu.scope(() => {
   *   const tmp = gpu.zeros([1024]); // disposed when the scope ends
   *   return gpu.zeros([4]); // kept
   * });
   * ```
   */
  scope<T>(fn: () => T): T;

  /**
   * Destroys the free buffers of the pool (after submitting recorded work that may use them).
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * gpu.trimPool();
   * ```
   */
  trimPool(): void;

  /**
   * Waits for the work already submitted, then {@linkcode Gpu.destroy}s the runtime. Recorded
   * work not yet flushed is dropped (nothing could read its results). {@linkcode shutdownGpu}
   * closes every runtime of the process.
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * await gpu.close();
   * ```
   */
  close(): Promise<void>;

  /**
   * Destroys the runtime at once: every pooled buffer, the uniform buffer and the device; drops
   * the pipeline cache. The runtime is unusable afterwards; calling it again does nothing. Prefer
   * {@linkcode Gpu.close}, which first waits for submitted work.
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * gpu.destroy();
   * ```
   */
  destroy(): void;

  /** @internal Registers a new tensor with the innermost scope. */
  _track(t: Tensor): void;

  /** @internal Forgets a disposed tensor. */
  _untrack(t: Tensor): void;
}

/** Shared storage of a tensor and its views; the buffer goes back to the pool at zero refs. */
interface Storage {
  readonly buffer: GPUBuffer;
  refs: number;
}

/**
 * A tensor on the GPU. Create one with `gpu.tensor(data, { shape })`, `gpu.empty(shape)` or
 * `gpu.zeros(shape)`; free it with `dispose()` or inside `gpu.scope(...)`.
 *
 * @example
 * ```ts
 * import { requestGpu } from "@modern-cnn/webgpu/gpu";
 * const gpu = await requestGpu();
 * const t = gpu.tensor(new Float32Array([1, 2, 3, 4, 5, 6]), { shape: [2, 3] });
 * const flat = t.reshape([6]); // a view: no copy
 * console.log(await flat.toArray()); // Float32Array [1, 2, 3, 4, 5, 6]
 * t.dispose();
 * flat.dispose();
 * ```
 */
export class Tensor<D extends DType = DType> {
  /** The runtime this tensor lives on. */
  readonly gpu: Gpu;
  /** Dimensions, outermost first. */
  readonly shape: Shape;
  /** Element type. */
  readonly dtype: D;
  /** Number of elements. */
  readonly size: number;
  /**
   * Where the elements start in {@linkcode Tensor.buffer}, in bytes (0 unless the tensor is a view
   * into a larger allocation, such as a model's parameter arena; a multiple of the device's
   * `minStorageBufferOffsetAlignment`).
   */
  readonly byteOffset: number;
  #storage: Storage;
  #disposed = false;

  /**
   * Wraps a storage buffer. Prefer the factories on {@linkcode Gpu}; this is for runtime code.
   *
   * @example
   * ```ts
   * import { requestGpu, Tensor } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * const buf = gpu.pool.acquire(16);
   * const t = new Tensor(gpu, buf, { shape: [4], dtype: "f32" });
   * ```
   */
  constructor(
    gpu: Gpu,
    buffer: GPUBuffer | Tensor,
    options: { shape: Shape; dtype: D; byteOffset?: number },
  ) {
    checkShape("Tensor", options.shape);
    this.gpu = gpu;
    this.shape = Object.freeze([...options.shape]);
    this.dtype = options.dtype;
    this.size = numel(this.shape);
    const offset = options.byteOffset ?? 0;
    const align = gpu.limits.minStorageBufferOffsetAlignment;
    if (!Number.isInteger(offset) || offset < 0 || offset % align !== 0) {
      throw new RangeError(
        `Tensor: byteOffset ${offset} must be a non-negative multiple of ${align} ` +
          `(the device's minStorageBufferOffsetAlignment)`,
      );
    }
    if (buffer instanceof Tensor) {
      buffer.#assertLive("view");
      this.#storage = buffer.#storage;
      this.#storage.refs++;
      this.byteOffset = buffer.byteOffset + offset;
    } else {
      this.#storage = { buffer, refs: 1 };
      this.byteOffset = offset;
    }
    const need = storageBytes(this.size, this.dtype);
    if (this.byteOffset + need > this.#storage.buffer.size) {
      this.#storage.refs--;
      throw new RangeError(
        `Tensor: shape ${formatShape(this.shape)} (${this.dtype}) needs ${need} bytes from ` +
          `byte ${this.byteOffset}, the buffer has ${this.#storage.buffer.size}`,
      );
    }
    gpu._track(this);
  }

  /**
   * The GPU buffer (may be larger than the tensor: bind `byteLength` bytes from `byteOffset`).
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * console.log(gpu.zeros([3]).buffer.size >= 12); // true
   * ```
   */
  get buffer(): GPUBuffer {
    this.#assertLive("buffer");
    return this.#storage.buffer;
  }

  /**
   * Bytes the elements occupy (u8 and f16 padded to whole words, at least 4).
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * console.log(gpu.zeros([3]).byteLength); // 12
   * ```
   */
  get byteLength(): number {
    return storageBytes(this.size, this.dtype);
  }

  /**
   * Whether `dispose()` was called.
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * const t = gpu.zeros([1]);
   * t.dispose();
   * console.log(t.disposed); // true
   * ```
   */
  get disposed(): boolean {
    return this.#disposed;
  }

  /**
   * Copies the elements to the CPU (flushes recorded work and waits for it: one GPU round trip).
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * console.log(await gpu.tensor(new Int32Array([7]), { shape: [1] }).toArray()); // Int32Array [7]
   * ```
   */
  toArray(): Promise<ArrayFor<D>> {
    this.#assertLive("toArray");
    return this.gpu.read(this);
  }

  /**
   * A view with another shape of the same number of elements (no copy). One dimension may be -1.
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * const x = gpu.zeros([2, 3, 4, 4]);
   * console.log(x.reshape([2, -1]).shape); // [2, 48]
   * ```
   */
  reshape(shape: Shape): Tensor<D> {
    this.#assertLive("reshape");
    const unknown = shape.filter((d) => d === -1).length;
    let resolved = [...shape];
    if (unknown > 1) throw new TypeError(`reshape: at most one -1 in ${formatShape(shape)}`);
    if (unknown === 1) {
      const known = numel(shape.filter((d) => d !== -1));
      const missing = known === 0 ? 0 : this.size / known;
      resolved = shape.map((d) => (d === -1 ? missing : d));
    }
    checkShape("reshape", resolved);
    if (numel(resolved) !== this.size) {
      throw new TypeError(
        `reshape: cannot view shape ${formatShape(this.shape)} as ${formatShape(shape)}`,
      );
    }
    return new Tensor(this.gpu, this, { shape: resolved, dtype: this.dtype });
  }

  /**
   * A view of `count` elements (`shape`, default `[count]`) starting at element `start` (no copy;
   * the start's byte offset must be a multiple of the device's `minStorageBufferOffsetAlignment`,
   * e.g. 64 f32 elements for 256 bytes).
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * const arena = gpu.tensor(new Float32Array(128).map((_, i) => i), { shape: [128] });
   * const tail = arena.slice(64, 2); // elements 64 and 65
   * console.log(await tail.toArray()); // Float32Array [64, 65]
   * ```
   */
  slice(start: number, count: number, shape: Shape = [count]): Tensor<D> {
    this.#assertLive("slice");
    if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0) {
      throw new RangeError(`slice: start ${start} and count ${count} must be integers >= 0`);
    }
    if (start + count > this.size) {
      throw new RangeError(
        `slice: elements [${start}, ${start + count}) are outside ${this} (${this.size} elements)`,
      );
    }
    if (numel(shape) !== count) {
      throw new TypeError(`slice: shape ${formatShape(shape)} does not hold ${count} elements`);
    }
    const bytesPerElement = this.dtype === "u8" ? 1 : this.dtype === "f16" ? 2 : 4;
    return new Tensor(this.gpu, this, {
      shape,
      dtype: this.dtype,
      byteOffset: start * bytesPerElement,
    });
  }

  /**
   * Whether this tensor's bytes and `other`'s may overlap (same storage, intersecting ranges).
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * const x = gpu.zeros([4]);
   * console.log(x.overlaps(x.reshape([2, 2])), x.overlaps(gpu.zeros([4]))); // true false
   * ```
   */
  overlaps(other: Tensor): boolean {
    if (this.#storage.buffer !== other.#storage.buffer) return false;
    return this.byteOffset < other.byteOffset + other.byteLength &&
      other.byteOffset < this.byteOffset + this.byteLength;
  }

  /**
   * Whether `other` is this tensor's storage from the same first byte (an in-place operand).
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * const x = gpu.zeros([4]);
   * console.log(x.sameStart(x.retain())); // true
   * ```
   */
  sameStart(other: Tensor): boolean {
    return this.#storage.buffer === other.#storage.buffer && this.byteOffset === other.byteOffset;
  }

  /**
   * Bytes of the buffer from this tensor's first byte on (at least {@linkcode byteLength}): what a
   * binding of whole vec4s may span.
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * console.log(gpu.zeros([3]).capacity >= 12); // true
   * ```
   */
  get capacity(): number {
    return this.#storage.buffer.size - this.byteOffset;
  }

  /**
   * A second handle to the same storage and shape (the storage lives until every handle is
   * disposed). Layers retain the activations their backward needs this way.
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * const x = gpu.zeros([4]);
   * const saved = x.retain();
   * x.dispose(); // saved still reads the data
   * ```
   */
  retain(): Tensor<D> {
    return new Tensor(this.gpu, this, { shape: this.shape, dtype: this.dtype });
  }

  /**
   * A view with dimensions `startDim..` merged into one (as `torch.flatten(x, startDim)`).
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * console.log(gpu.zeros([8, 16, 5, 5]).flatten().shape); // [8, 400]
   * ```
   */
  flatten(startDim = 1): Tensor<D> {
    if (!Number.isInteger(startDim) || startDim < 0 || startDim > this.shape.length) {
      throw new RangeError(
        `flatten: startDim ${startDim} is out of range for shape ${formatShape(this.shape)}`,
      );
    }
    return this.reshape([...this.shape.slice(0, startDim), numel(this.shape.slice(startDim))]);
  }

  /**
   * Releases this tensor; its buffer returns to the pool once no view uses it. Idempotent.
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * gpu.zeros([4]).dispose();
   * ```
   */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.gpu._untrack(this);
    if (--this.#storage.refs === 0) this.gpu.pool.release(this.#storage.buffer);
  }

  /**
   * A short description: `Tensor(f32, [2, 3])`.
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * console.log(String(gpu.zeros([2, 3]))); // Tensor(f32, [2, 3])
   * ```
   */
  toString(): string {
    return `Tensor(${this.dtype}, ${formatShape(this.shape)}${this.#disposed ? ", disposed" : ""})`;
  }

  #assertLive(op: string): void {
    if (this.#disposed) throw new TypeError(`${op}: ${this} was disposed`);
  }
}
