/**
 * A pool of GPU storage buffers that reuses freed buffers by size class.
 *
 * Size classes are 256-byte multiples rounded up to the next power of two or 1.5× a power of two,
 * so at most a third of a buffer is slack. A request takes the free buffer of its class that was
 * created first, whatever order buffers were released in: a sequence of requests and releases
 * that starts from the same free buffers (a training step, every step) gets the same buffers,
 * so its bind groups are found in the cache. A buffer released to the pool may still be read by GPU
 * work already recorded: that is safe, because every later use of it is recorded (and therefore
 * executed) after that work on the same queue. Only `destroy` must wait until pending work is
 * submitted, which {@linkcode Gpu.trimPool} does.
 *
 * @module
 */

/** Buffer usage of every pooled buffer: storage, copy source and copy destination. */
export const POOL_USAGE: number = 0x80 /* STORAGE */ | 0x04 /* COPY_SRC */ | 0x08; /* COPY_DST */

/**
 * The size class (bytes) a request of `bytes` is served from.
 *
 * @example
 * ```ts
 * import { sizeClass } from "./pool.ts";
 * sizeClass(1000); // 1024
 * sizeClass(1025); // 1536
 * ```
 */
export function sizeClass(bytes: number): number {
  const b = Math.max(256, Math.ceil(bytes / 256) * 256);
  const p = 2 ** Math.floor(Math.log2(b));
  if (b === p) return p;
  if (b <= p * 1.5) return Math.ceil((p * 1.5) / 256) * 256;
  return p * 2;
}

/** Counters of a {@linkcode BufferPool}. */
export interface PoolStats {
  /** Bytes of all buffers the pool has created and not destroyed (live and free). */
  readonly allocatedBytes: number;
  /** The largest `allocatedBytes` seen. */
  readonly peakBytes: number;
  /** Bytes of buffers currently handed out. */
  readonly liveBytes: number;
  /** The largest `liveBytes` seen (peak memory actually in use). */
  readonly peakLiveBytes: number;
  /** Bytes of free buffers waiting for reuse. */
  readonly freeBytes: number;
  /** How many requests were served by a reused buffer. */
  readonly reuses: number;
  /** How many buffers were created. */
  readonly creates: number;
}

/**
 * Reuses GPU buffers by size class. Created by {@linkcode Gpu}; use `gpu.pool`.
 *
 * @example
 * ```ts
 * import { requestGpu } from "@modern-cnn/webgpu/gpu";
 * const gpu = await requestGpu();
 * const buf = gpu.pool.acquire(4096);
 * gpu.pool.release(buf);
 * console.log(gpu.pool.stats.reuses); // 0
 * ```
 */
export class BufferPool {
  #device: GPUDevice;
  #onDestroy: ((buffer: GPUBuffer) => void) | undefined;
  #onRelease: ((buffer: GPUBuffer) => void) | undefined;
  #free = new Map<number, GPUBuffer[]>();
  #handedOut = new Set<GPUBuffer>();
  /** Creation order of each buffer: a free list is kept newest first (the oldest is popped). */
  #serial = new WeakMap<GPUBuffer, number>();
  #created = 0;
  #destroyed = false;
  #allocated = 0;
  #peak = 0;
  #live = 0;
  #peakLive = 0;
  #freeBytes = 0;
  #reuses = 0;
  #creates = 0;

  /**
   * Creates a pool on `device`; `onDestroy` is told of each buffer just before the pool destroys
   * it (the runtime drops the bind groups that bind it), `onRelease` of each buffer returned to
   * it (the runtime drops the recorded steps that bind it, `gpu/tape.ts`).
   *
   * @example
   * ```ts
   * import { BufferPool } from "@modern-cnn/webgpu/gpu";
   * const adapter = await navigator.gpu.requestAdapter();
   * const pool = new BufferPool(await adapter!.requestDevice(), { onDestroy: () => {} });
   * ```
   */
  constructor(
    device: GPUDevice,
    options: {
      onDestroy?: (buffer: GPUBuffer) => void;
      onRelease?: (buffer: GPUBuffer) => void;
    } = {},
  ) {
    this.#device = device;
    this.#onDestroy = options.onDestroy;
    this.#onRelease = options.onRelease;
  }

  /**
   * A buffer of at least `bytes` bytes (usage STORAGE | COPY_SRC | COPY_DST); contents are undefined.
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * const b = gpu.pool.acquire(100); // b.size === 256
   * ```
   */
  acquire(bytes: number, label = "tensor"): GPUBuffer {
    const cls = sizeClass(bytes);
    const list = this.#free.get(cls);
    let buf: GPUBuffer;
    if (list && list.length > 0) {
      buf = list.pop()!;
      this.#freeBytes -= cls;
      this.#reuses++;
    } else {
      buf = this.#device.createBuffer({ label, size: cls, usage: POOL_USAGE });
      this.#serial.set(buf, this.#created++);
      this.#allocated += cls;
      this.#creates++;
      this.#peak = Math.max(this.#peak, this.#allocated);
    }
    this.#live += cls;
    this.#peakLive = Math.max(this.#peakLive, this.#live);
    this.#handedOut.add(buf);
    return buf;
  }

  /**
   * Returns a buffer obtained from {@linkcode BufferPool.acquire} for reuse.
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * gpu.pool.release(gpu.pool.acquire(512));
   * ```
   */
  release(buf: GPUBuffer): void {
    if (this.#destroyed) return; // a tensor disposed after destroyAll: its buffer is gone
    this.#handedOut.delete(buf);
    const cls = buf.size;
    let list = this.#free.get(cls);
    if (!list) this.#free.set(cls, list = []);
    // Insert newest first (a binary search; the list's end is the oldest buffer).
    const serial = this.#serial.get(buf) ?? -1;
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((this.#serial.get(list[mid]) ?? -1) > serial) lo = mid + 1;
      else hi = mid;
    }
    list.splice(lo, 0, buf);
    this.#live -= cls;
    this.#freeBytes += cls;
    this.#onRelease?.(buf);
  }

  /**
   * Whether `buf` is this pool's and handed out (acquired or claimed, not released).
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * const b = gpu.pool.acquire(256);
   * console.log(gpu.pool.isHandedOut(b)); // true
   * gpu.pool.release(b);
   * ```
   */
  isHandedOut(buf: GPUBuffer): boolean {
    return this.#handedOut.has(buf);
  }

  /**
   * Takes `buf` out of the free buffers, as if {@linkcode BufferPool.acquire} had handed it out
   * (give it back with {@linkcode BufferPool.release}); false, and nothing changes, when it is not
   * free here (handed out, or not this pool's). A recorded step keeps its scratch buffers so
   * (`gpu/tape.ts`): nothing else is given them while it may be replayed.
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * const b = gpu.pool.acquire(256);
   * console.log(gpu.pool.claim(b)); // false: handed out
   * gpu.pool.release(b);
   * console.log(gpu.pool.claim(b)); // true
   * gpu.pool.release(b);
   * ```
   */
  claim(buf: GPUBuffer): boolean {
    if (this.#destroyed) return false;
    const list = this.#free.get(buf.size);
    const i = list?.indexOf(buf) ?? -1;
    if (i < 0) return false;
    list!.splice(i, 1);
    this.#freeBytes -= buf.size;
    this.#live += buf.size;
    this.#peakLive = Math.max(this.#peakLive, this.#live);
    this.#handedOut.add(buf);
    return true;
  }

  /**
   * Destroys every free buffer. Callers must have submitted all work that uses them; prefer
   * `gpu.trimPool()`, which does so first.
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * gpu.trimPool();
   * ```
   */
  destroyFree(): void {
    for (const list of this.#free.values()) {
      for (const b of list) {
        this.#allocated -= b.size;
        this.#onDestroy?.(b);
        b.destroy();
      }
    }
    this.#free.clear();
    this.#freeBytes = 0;
  }

  /**
   * Destroys every buffer of the pool, free or handed out (tensors still holding one become
   * unusable): the end of the device's life, see {@linkcode Gpu.destroy}.
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * gpu.zeros([16]);
   * await gpu.sync();
   * gpu.pool.destroyAll();
   * ```
   */
  destroyAll(): void {
    this.#destroyed = true;
    this.destroyFree();
    for (const b of this.#handedOut) {
      this.#onDestroy?.(b);
      b.destroy();
    }
    this.#handedOut.clear();
    this.#allocated = 0;
    this.#live = 0;
  }

  /**
   * Resets the peak counters to the current values (to measure one phase).
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * gpu.pool.resetPeak();
   * ```
   */
  resetPeak(): void {
    this.#peak = this.#allocated;
    this.#peakLive = this.#live;
  }

  /**
   * Current counters.
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * const gpu = await requestGpu();
   * console.log(gpu.pool.stats.liveBytes);
   * ```
   */
  get stats(): PoolStats {
    return {
      allocatedBytes: this.#allocated,
      peakBytes: this.#peak,
      liveBytes: this.#live,
      peakLiveBytes: this.#peakLive,
      freeBytes: this.#freeBytes,
      reuses: this.#reuses,
      creates: this.#creates,
    };
  }
}
