/**
 * GPU tensors: a shape, a dtype and a storage buffer, contiguous in row-major (NCHW) order.
 *
 * @module
 */

import type { Gpu } from "./device.ts";
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
