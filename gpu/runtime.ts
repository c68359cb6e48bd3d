/**
 * The implementation of {@linkcode Gpu} that `requestGpu` returns: tensors (factories, uploads,
 * readbacks, views copied through a temporary), lifetimes (scopes, the pool, closing), and every
 * binding turned into a buffer range for the {@linkcode Recorder}, which records and submits.
 * Recorded steps ({@linkcode Tape}, `tape.ts`): `beginTape` / `live` / `endTape` capture one,
 * `replay` re-encodes it, and the runtime keeps the buffers it binds valid (its scratch claimed
 * from the pool; dropped when any other buffer it binds is released or destroyed). Over 500
 * lines: every member of {@linkcode Gpu} with its runnable example, and the tapes' lifetimes,
 * which the pool's hooks tie to the runtime.
 * Every runtime not yet destroyed is listed in {@linkcode liveRuntimes} (for `shutdownGpu`).
 *
 * @module
 */

import type { KernelSpec } from "./kernel.ts";
import { BufferPool } from "./pool.ts";
import { type KernelTime, Profiler } from "./profiler.ts";
import { Recorder } from "./recorder.ts";
import { Tape } from "./tape.ts";
import { checkShape, formatShape, numel, type Shape } from "./shape.ts";
import {
  type ArrayFor,
  type Binding,
  type DispatchOptions,
  type DType,
  type DTypeOf,
  type Gpu,
  type GpuFeatures,
  type GpuStats,
  storageBytes,
  Tensor,
} from "./tensor.ts";

/** Every {@linkcode GpuRuntime} constructed and not yet destroyed. */
export const liveRuntimes: Set<WeakRef<GpuRuntime>> = new Set();

/**
 * The runtime around one WebGPU device (see {@linkcode Gpu} for every member). Prefer
 * `requestGpu`, which raises the limits.
 *
 * @example
 * ```ts
 * import { GpuRuntime } from "./runtime.ts";
 * const adapter = (await navigator.gpu.requestAdapter())!;
 * const gpu = new GpuRuntime(adapter, await adapter.requestDevice());
 * console.log(await gpu.zeros([2]).toArray()); // Float32Array [0, 0]
 * await gpu.close();
 * ```
 */
export class GpuRuntime implements Gpu {
  readonly adapter: GPUAdapter;
  readonly device: GPUDevice;
  readonly description: string;
  readonly isCpu: boolean;
  readonly features: GpuFeatures;
  readonly limits: GPUSupportedLimits;
  readonly pool: BufferPool;
  readonly stats: GpuStats = {
    submits: 0,
    dispatches: 0,
    clears: 0,
    readbacks: 0,
    uploads: 0,
    pipelines: 0,
    bindGroups: 0,
  };
  /**
   * Host-side counters of the runtime (not part of {@linkcode Gpu}): `planned`, the calls of
   * {@linkcode GpuRuntime.dispatch} (each resolves its bindings and looks up or creates a pipeline
   * and a bind group); `replayed`, the dispatches re-encoded from tapes without any of that;
   * `captures` and `replays`, the tapes kept and replayed.
   */
  readonly hostStats: { planned: number; replayed: number; captures: number; replays: number } = {
    planned: 0,
    replayed: 0,
    captures: 0,
    replays: 0,
  };
  #rec: Recorder;
  /** Tapes kept (not dropped), and the tapes that each non-scratch buffer they bind keeps. */
  #tapes = new Set<Tape>();
  #watched = new Map<GPUBuffer, Set<Tape>>();
  /** While a tape is recorded: the buffers acquired from the pool since it started. */
  #acquired: Set<GPUBuffer> | null = null;
  #destroyed = false;
  #scopes: Set<Tensor>[] = [];
  #registration = new WeakRef<GpuRuntime>(this);

  /**
   * Wraps an adapter and a device (`verbose`: log each uncaptured error to the console too).
   *
   * @example
   * ```ts
   * import { GpuRuntime } from "./runtime.ts";
   * const adapter = (await navigator.gpu.requestAdapter())!;
   * new GpuRuntime(adapter, await adapter.requestDevice(), { verbose: true });
   * ```
   */
  constructor(adapter: GPUAdapter, device: GPUDevice, options: { verbose?: boolean } = {}) {
    this.adapter = adapter;
    this.device = device;
    const info = adapter.info;
    this.description = info.description || [info.vendor, info.architecture, info.device]
      .filter(Boolean).join(" ") ||
      "unknown adapter";
    const fallback = (info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter;
    this.isCpu = fallback === true ||
      /llvmpipe|lavapipe|swiftshader|software/i.test(this.description);
    this.features = {
      f16: device.features.has("shader-f16"),
      timestamps: device.features.has("timestamp-query"),
    };
    this.limits = device.limits;
    this.#rec = new Recorder(device, this.stats, { verbose: options.verbose ?? false });
    this.pool = new BufferPool(device, {
      onDestroy: (b) => {
        this.#rec.forget(b);
        this.#released(b);
      },
      onRelease: (b) => this.#released(b),
    });
    liveRuntimes.add(this.#registration);
  }

  // ------------------------------------------------------------------ recording ----

  /**
   * Whether recorded work is finished and then dropped instead of submitted: nothing executes,
   * readbacks throw, the pool recycles as usual. Only for measuring the host's cost of recording
   * (`deno task bench:train --host-only`); not part of {@linkcode Gpu}. Setting it flushes first,
   * so the switch applies to the work recorded while it is on.
   *
   * @example
   * ```ts
   * import { GpuRuntime } from "./runtime.ts";
   * const adapter = (await navigator.gpu.requestAdapter())!;
   * const gpu = new GpuRuntime(adapter, await adapter.requestDevice());
   * gpu.discardSubmits = true;
   * gpu.zeros([4]); // recorded, never executed
   * gpu.discardSubmits = false;
   * ```
   */
  get discardSubmits(): boolean {
    return this.#rec.discard;
  }

  set discardSubmits(on: boolean) {
    if (on && this.#rec.profiler !== null) {
      throw new TypeError("discardSubmits: a profile is running (stopProfile first)");
    }
    this.#rec.flush();
    this.#rec.discard = on;
  }

  /**
   * Whether bind groups are cached and reused (default true). Off, every dispatch creates its
   * own, as a reference for tests and benches; not part of {@linkcode Gpu}.
   *
   * @example
   * ```ts
   * import { GpuRuntime } from "./runtime.ts";
   * const adapter = (await navigator.gpu.requestAdapter())!;
   * const gpu = new GpuRuntime(adapter, await adapter.requestDevice());
   * gpu.cacheBindGroups = false;
   * ```
   */
  get cacheBindGroups(): boolean {
    return this.#rec.cacheBindGroups;
  }

  set cacheBindGroups(on: boolean) {
    this.#rec.cacheBindGroups = on;
  }

  /**
   * Starts timing every dispatch on the device (GPU timestamps; see `profiler.ts`) until
   * {@linkcode GpuRuntime.stopProfile}, which returns each kernel's device time. Each dispatch
   * runs in a compute pass of its own and each submit is read back once, so a profiled step takes
   * a little longer than an unprofiled one. For finding where a step's time goes
   * (`deno task bench:train --profile`); not part of {@linkcode Gpu}. Submits what is recorded
   * first, so the profile covers exactly the work recorded after the call.
   *
   * @throws {TypeError} when the device has no `timestamp-query` (`features.timestamps`), when
   *   a profile is already running, while a tape is being recorded, or while submits are
   *   discarded.
   * @example
   * ```ts
   * import { GpuRuntime } from "./runtime.ts";
   * const adapter = (await navigator.gpu.requestAdapter())!;
   * const features: GPUFeatureName[] = adapter.features.has("timestamp-query") ? ["timestamp-query"] : [];
   * const gpu = new GpuRuntime(adapter, await adapter.requestDevice({ requiredFeatures: features }));
   * if (gpu.features.timestamps) {
   *   gpu.startProfile();
   *   gpu.zeros([4]);
   *   console.log(await gpu.stopProfile()); // [] (a zero fill is not a dispatch)
   * }
   * ```
   */
  startProfile(): void {
    if (!this.features.timestamps) {
      throw new TypeError(
        `startProfile: the device has no 'timestamp-query' feature (${this.description}); ` +
          "profiles need GPU timestamps",
      );
    }
    if (this.#rec.profiler !== null) throw new TypeError("startProfile: a profile is running");
    if (this.#rec.capturing) {
      throw new TypeError("startProfile: a tape is being recorded (its step would not be kept)");
    }
    if (this.#rec.discard) {
      throw new TypeError("startProfile: submits are discarded, nothing would execute");
    }
    this.#rec.flush();
    this.#rec.profiler = new Profiler(this.device);
  }

  /**
   * Ends the profile begun by {@linkcode GpuRuntime.startProfile}: submits what is recorded,
   * waits for the device, and returns each kernel's dispatches and device milliseconds, the
   * longest first.
   *
   * @throws {TypeError} when no profile is running, or while a tape is being recorded.
   * @throws the GPU's error (`DeviceLostError`, `GpuValidationError`) when the profiled work
   *   failed; the profile's query sets are released in any case.
   * @example
   * ```ts
   * import { GpuRuntime } from "./runtime.ts";
   * const adapter = (await navigator.gpu.requestAdapter())!;
   * const features: GPUFeatureName[] = adapter.features.has("timestamp-query") ? ["timestamp-query"] : [];
   * const gpu = new GpuRuntime(adapter, await adapter.requestDevice({ requiredFeatures: features }));
   * if (gpu.features.timestamps) {
   *   gpu.startProfile();
   *   for (const k of await gpu.stopProfile()) console.log(k.kernel, k.calls, k.ms);
   * }
   * ```
   */
  async stopProfile(): Promise<KernelTime[]> {
    const profiler = this.#rec.profiler;
    if (profiler === null) throw new TypeError("stopProfile: no profile is running");
    if (this.#rec.capturing) {
      throw new TypeError("stopProfile: a tape is being recorded (its step would not be kept)");
    }
    let failed: unknown = null;
    try {
      this.#rec.flush();
    } catch (err) {
      failed = err;
    } finally {
      this.#rec.profiler = null;
    }
    try {
      const times = await profiler.result();
      if (failed !== null) throw failed;
      return times;
    } catch (err) {
      // A lost device or a GPU error of the profiled work: reported as such, not as the raw
      // error of a readback.
      this.#rec.checkErrors();
      throw failed ?? err;
    } finally {
      profiler.destroy();
    }
  }

  pipeline(spec: KernelSpec): GPUComputePipeline {
    return this.#rec.pipeline(spec);
  }

  compile(spec: KernelSpec): Promise<void> {
    return this.#rec.compile(spec);
  }

  dispatch(kernel: KernelSpec, options: DispatchOptions): void {
    this.hostStats.planned++;
    const wg = this.#rec.workgroups(kernel.name, options.workgroups);
    if (wg === null) return;
    const storage = options.bindings.map((b) => this.#resource(kernel.name, b));
    this.#rec.dispatch(kernel, wg, options.params, storage);
  }

  copy(
    src: Tensor,
    dst: Tensor,
    options: { srcOffset?: number; dstOffset?: number; bytes?: number } = {},
  ): void {
    this.#rec.checkErrors();
    const bytes = options.bytes ?? src.byteLength;
    if (options.bytes === undefined && src.byteLength !== dst.byteLength) {
      throw new TypeError(`copy: source ${src} and destination ${dst} differ in size`);
    }
    const from = src.byteOffset + (options.srcOffset ?? 0);
    const to = dst.byteOffset + (options.dstOffset ?? 0);
    if (src.buffer !== dst.buffer) {
      this.#rec.copy(src.buffer, from, dst.buffer, to, bytes);
      return;
    }
    // WebGPU copies between two buffers only: views of one buffer go through a temporary.
    if (from !== to) {
      const tmp = this.pool.acquire(bytes);
      this.#rec.copy(src.buffer, from, tmp, 0, bytes);
      this.#rec.copy(tmp, 0, dst.buffer, to, bytes);
      this.pool.release(tmp);
    }
  }

  clear(t: Tensor): void {
    this.#rec.clear(t.buffer, t.byteOffset, t.byteLength);
  }

  flush(): void {
    this.#rec.flush();
  }

  sync(): Promise<void> {
    return this.#rec.sync();
  }

  checkErrors(): void {
    this.#rec.checkErrors();
  }

  #resource(kernel: string, b: Binding): GPUBufferBinding {
    if (b instanceof Tensor) {
      if (b.disposed) throw new TypeError(`dispatch '${kernel}': ${b} was disposed`);
      return { buffer: b.buffer, offset: b.byteOffset, size: b.byteLength };
    }
    if ("buffer" in b && !(b instanceof GPUBuffer)) {
      return { buffer: b.buffer, offset: b.offset ?? 0, size: b.size };
    }
    return { buffer: b as GPUBuffer };
  }

  // ------------------------------------------------------------------ tapes ----

  /**
   * Starts recording a tape: every command from now until {@linkcode GpuRuntime.endTape} is also
   * kept, in order, for {@linkcode GpuRuntime.replay} (see `tape.ts`). Not part of {@linkcode Gpu}.
   * What a replay must plan again (anything that differs between steps) goes through
   * {@linkcode GpuRuntime.live}.
   *
   * @example
   * ```ts
   * import { GpuRuntime } from "./runtime.ts";
   * const adapter = (await navigator.gpu.requestAdapter())!;
   * const gpu = new GpuRuntime(adapter, await adapter.requestDevice());
   * const y = gpu.zeros([4]);
   * gpu.beginTape();
   * gpu.clear(y);
   * const tape = gpu.endTape()!;
   * gpu.replay(tape); // clears y again
   * gpu.dropTape(tape);
   * ```
   */
  beginTape(): void {
    this.#rec.beginCapture(new Tape());
    this.#acquired = new Set();
  }

  /**
   * Runs `record` now; while a tape is recorded, it becomes a live entry of the tape: each replay
   * calls it again at that place (it plans and records as usual, reading whatever changed since).
   * The tensors it binds must outlive the tape (retain them). Outside a tape it just runs.
   *
   * @example
   * ```ts
   * import { GpuRuntime } from "./runtime.ts";
   * const adapter = (await navigator.gpu.requestAdapter())!;
   * const gpu = new GpuRuntime(adapter, await adapter.requestDevice());
   * const y = gpu.zeros([8]);
   * let n = 4;
   * gpu.beginTape();
   * gpu.live(() => gpu.scope(() => gpu.clear(y.slice(0, n)))); // a replay clears as many as `n` says then
   * const tape = gpu.endTape()!;
   * n = 8;
   * gpu.replay(tape);
   * ```
   */
  live(record: () => void): void {
    this.#rec.live(record);
  }

  /**
   * Stops recording the tape and keeps it: the scratch buffers it binds (free in the pool by now)
   * are claimed from the pool until it is dropped, and it is dropped as soon as another buffer it
   * binds is released or destroyed. Null, and nothing kept, when the step cannot be replayed: it
   * submitted in the middle (a write or a read, say), its params fill over half the uniform
   * buffer, or it created a buffer that outlives it (state made on first use, such as optimizer
   * moments: its initialization would be replayed) other than those of `held` (the tensors its
   * live entries bind, which its owner keeps and frees after dropping it).
   *
   * @example
   * ```ts
   * import { GpuRuntime } from "./runtime.ts";
   * const adapter = (await navigator.gpu.requestAdapter())!;
   * const gpu = new GpuRuntime(adapter, await adapter.requestDevice());
   * gpu.beginTape();
   * console.log(gpu.endTape()?.dispatches); // 0
   * ```
   */
  endTape(options: { held?: readonly Tensor[] } = {}): Tape | null {
    const acquired = this.#acquired!;
    this.#acquired = null;
    const tape = this.#rec.endCapture();
    if (tape === null) return null;
    for (const t of options.held ?? []) if (!t.disposed) acquired.delete(t.buffer);
    for (const b of acquired) if (this.pool.isHandedOut(b)) return null;
    for (const b of tape.buffers) {
      if (this.pool.claim(b)) {
        tape.pinned.push(b);
        continue;
      }
      let tapes = this.#watched.get(b);
      if (!tapes) this.#watched.set(b, tapes = new Set());
      tapes.add(tape);
    }
    this.#tapes.add(tape);
    this.hostStats.captures++;
    return tape;
  }

  /**
   * Re-encodes a tape kept by {@linkcode GpuRuntime.endTape}: its commands as recorded, its live
   * entries called again (no pipeline or bind group lookup, no binding resolved, for the rest).
   *
   * @throws {TypeError} when the tape was dropped.
   * @example
   * ```ts
   * import { GpuRuntime } from "./runtime.ts";
   * const adapter = (await navigator.gpu.requestAdapter())!;
   * const gpu = new GpuRuntime(adapter, await adapter.requestDevice());
   * gpu.beginTape();
   * const tape = gpu.endTape()!;
   * gpu.replay(tape);
   * ```
   */
  replay(tape: Tape): void {
    this.#rec.replay(tape);
    this.hostStats.replayed += tape.dispatches;
    this.hostStats.replays++;
  }

  /**
   * Drops a tape: it can no longer be replayed, and its scratch buffers return to the pool.
   * Idempotent.
   *
   * @example
   * ```ts
   * import { GpuRuntime } from "./runtime.ts";
   * const adapter = (await navigator.gpu.requestAdapter())!;
   * const gpu = new GpuRuntime(adapter, await adapter.requestDevice());
   * gpu.beginTape();
   * gpu.dropTape(gpu.endTape()!);
   * ```
   */
  dropTape(tape: Tape): void {
    if (!tape.valid) return;
    tape.invalidate();
    this.#tapes.delete(tape);
    for (const b of tape.buffers) {
      const tapes = this.#watched.get(b);
      tapes?.delete(tape);
      if (tapes?.size === 0) this.#watched.delete(b);
    }
    for (const b of tape.pinned.splice(0)) this.pool.release(b);
  }

  /**
   * Drops every kept tape ({@linkcode GpuRuntime.dropTape}): their owners record their next step
   * again. For what changes the kernels a step would plan (the autotuner's table), which no tape
   * watches.
   *
   * @example
   * ```ts
   * import { GpuRuntime } from "./runtime.ts";
   * const adapter = (await navigator.gpu.requestAdapter())!;
   * const gpu = new GpuRuntime(adapter, await adapter.requestDevice());
   * gpu.beginTape();
   * const tape = gpu.endTape()!;
   * gpu.dropTapes();
   * console.log(tape.valid); // false
   * ```
   */
  dropTapes(): void {
    for (const t of [...this.#tapes]) this.dropTape(t);
  }

  /** A buffer returned to the pool or destroyed: the tapes that bind it are dropped. */
  #released(b: GPUBuffer): void {
    const tapes = this.#watched.get(b);
    if (tapes) { for (const t of [...tapes]) this.dropTape(t); }
  }

  // ------------------------------------------------------------------ tensors ----

  tensor<A extends Float32Array | Float16Array | Int32Array | Uint32Array | Uint8Array>(
    data: A,
    options: { shape: Shape },
  ): Tensor<DTypeOf<A>> {
    const dtype = dtypeOf(data);
    checkShape("tensor", options.shape);
    if (numel(options.shape) !== data.length) {
      throw new TypeError(
        `tensor: data has ${data.length} elements, shape ${formatShape(options.shape)} needs ` +
          `${numel(options.shape)}`,
      );
    }
    const t = this.empty(options.shape, { dtype }) as Tensor<DTypeOf<A>>;
    this.write(t, data);
    return t;
  }

  empty<D extends DType = "f32">(shape: Shape, options: { dtype?: D } = {}): Tensor<D> {
    checkShape("empty", shape);
    const dtype = (options.dtype ?? "f32") as D;
    const buffer = this.pool.acquire(storageBytes(numel(shape), dtype));
    this.#acquired?.add(buffer);
    return new Tensor<D>(this, buffer, { shape, dtype });
  }

  zeros<D extends DType = "f32">(shape: Shape, options: { dtype?: D } = {}): Tensor<D> {
    const t = this.empty<D>(shape, options);
    this.clear(t);
    return t;
  }

  write(
    t: Tensor,
    data: Float32Array | Float16Array | Int32Array | Uint32Array | Uint8Array,
  ): void {
    if (dtypeOf(data) !== t.dtype || data.length !== t.size) {
      throw new TypeError(
        `write: ${data.constructor.name}(${data.length}) does not fit ${t}`,
      );
    }
    // Recorded work is submitted first so that the write cannot overtake it.
    if (this.#rec.recording) this.#rec.flush();
    let bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (bytes.byteLength % 4 !== 0 || bytes.byteLength === 0) {
      const padded = new Uint8Array(t.byteLength);
      padded.set(bytes);
      bytes = padded;
    }
    this.device.queue.writeBuffer(t.buffer, t.byteOffset, bytes as Uint8Array<ArrayBuffer>);
    this.stats.uploads++;
  }

  async read<D extends DType>(t: Tensor<D>): Promise<ArrayFor<D>> {
    this.#rec.checkErrors();
    const copy = await this.#rec.read(t.buffer, t.byteOffset, t.byteLength);
    switch (t.dtype) {
      case "f32":
        return new Float32Array(copy, 0, t.size) as ArrayFor<D>;
      case "f16":
        return new Float16Array(copy, 0, t.size) as ArrayFor<D>;
      case "i32":
        return new Int32Array(copy, 0, t.size) as ArrayFor<D>;
      case "u32":
        return new Uint32Array(copy, 0, t.size) as ArrayFor<D>;
      default:
        return new Uint8Array(copy, 0, t.size) as ArrayFor<D>;
    }
  }

  // ------------------------------------------------------------------ lifetimes ----

  scope<T>(fn: () => T): T {
    const owned = new Set<Tensor>();
    this.#scopes.push(owned);
    const finish = (result: unknown) => {
      const i = this.#scopes.lastIndexOf(owned);
      if (i >= 0) this.#scopes.splice(i, 1);
      const keep = new Set<Tensor>();
      collectTensors(result, keep);
      for (const t of owned) {
        if (keep.has(t)) this.#scopes.at(-1)?.add(t);
        else t.dispose();
      }
    };
    let result: T;
    try {
      result = fn();
    } catch (err) {
      finish(undefined);
      throw err;
    }
    if (result instanceof Promise) {
      return result.then((v) => {
        finish(v);
        return v;
      }, (err) => {
        finish(undefined);
        throw err;
      }) as T;
    }
    finish(result);
    return result;
  }

  trimPool(): void {
    this.flush();
    this.pool.destroyFree();
  }

  async close(): Promise<void> {
    if (this.#destroyed) return;
    await this.#rec.drain();
    this.destroy();
  }

  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    liveRuntimes.delete(this.#registration);
    for (const t of this.#tapes) t.invalidate();
    this.#tapes.clear();
    this.#watched.clear();
    this.#rec.profiler?.destroy();
    this.#rec.profiler = null;
    this.#rec.destroy();
    this.pool.destroyAll();
    this.device.destroy();
  }

  _track(t: Tensor): void {
    this.#scopes.at(-1)?.add(t);
  }

  _untrack(t: Tensor): void {
    for (const s of this.#scopes) s.delete(t);
  }
}

function dtypeOf(data: unknown): DType {
  if (data instanceof Float32Array) return "f32";
  if (data instanceof Float16Array) return "f16";
  if (data instanceof Int32Array) return "i32";
  if (data instanceof Uint32Array) return "u32";
  if (data instanceof Uint8Array) return "u8";
  throw new TypeError(
    `expected a Float32Array, Float16Array, Int32Array, Uint32Array or Uint8Array, got ${
      (data as object)?.constructor?.name ?? typeof data
    }`,
  );
}

function collectTensors(value: unknown, out: Set<Tensor>, depth = 0): void {
  if (depth > 4 || value === null || typeof value !== "object") return;
  if (value instanceof Tensor) {
    out.add(value);
    return;
  }
  if (Array.isArray(value)) {
    for (const v of value) collectTensors(v, out, depth + 1);
    return;
  }
  if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) collectTensors(v, out, depth + 1);
  }
}
