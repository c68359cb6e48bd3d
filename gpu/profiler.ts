/**
 * Device time per kernel, from GPU timestamps (`timestamp-query`): while a {@linkcode Profiler}
 * is attached to the recorder, every dispatch gets a compute pass of its own whose beginning and
 * end write a timestamp; each submit resolves its timestamps into a buffer that is read back
 * after it (one readback per submit, started at once and awaited by {@linkcode Profiler.result}).
 * A kernel's time is the sum of its dispatches' `end - begin`.
 *
 * What it measures: the device's time inside each dispatch. What it changes: one pass per
 * dispatch instead of one per run of dispatches (on llvmpipe a pass boundary costs nothing
 * measurable; on a GPU it may add the barrier a pass implies), and one readback per submit, so
 * it is for finding where a step's time goes (`deno task bench:train --profile`), not for timing
 * the step itself. WebGPU defines timestamps in nanoseconds, but implementations may round them
 * (Chromium to 100 µs unless told otherwise), and a native implementation that hands on a
 * driver's raw ticks would scale every figure by the tick period (1 ns on llvmpipe and NVIDIA):
 * `bench:train --profile` prints the summed device time beside the step's wall time, which shows
 * either.
 *
 * Errors: a readback that fails (a lost device) is kept and thrown by
 * {@linkcode Profiler.result}, never left as an unhandled rejection.
 *
 * @module
 */

/** Queries per query set (the WebGPU limit): two per dispatch. */
const QUERIES = 4096;

/** One kernel's device time over a profile. */
export interface KernelTime {
  /** The kernel's full name (its specialization: variant and storage types). */
  readonly kernel: string;
  /** Its descriptor's name (all specializations of one kernel), or the full name. */
  readonly family: string;
  /** Dispatches of it. */
  readonly calls: number;
  /** Device milliseconds, summed over its dispatches. */
  readonly ms: number;
  /** The shortest of its dispatches, device milliseconds. */
  readonly minMs: number;
}

/** The query sets and dispatch names of one submit. */
interface Batch {
  readonly sets: GPUQuerySet[];
  readonly names: string[];
  readonly families: string[];
}

/**
 * Collects the timestamps of the dispatches recorded while it is attached (see the module doc).
 *
 * @example
 * ```ts
 * import { Profiler } from "./profiler.ts";
 * const adapter = (await navigator.gpu.requestAdapter())!;
 * const features: GPUFeatureName[] = adapter.features.has("timestamp-query") ? ["timestamp-query"] : [];
 * const device = await adapter.requestDevice({ requiredFeatures: features });
 * if (features.length > 0) {
 *   const profiler = new Profiler(device);
 *   console.log(await profiler.result()); // []
 * }
 * ```
 */
export class Profiler {
  readonly #device: GPUDevice;
  #batch: Batch = { sets: [], names: [], families: [] };
  #free: GPUQuerySet[] = [];
  #pending: Promise<void>[] = [];
  #times = new Map<string, { family: string; calls: number; ns: number; min: number }>();
  /** The first failed readback's error, thrown by `result`. */
  #error: unknown = null;

  /**
   * Profiles dispatches on `device`, which must have `timestamp-query` enabled.
   *
   * @example
   * ```ts
   * import { Profiler } from "./profiler.ts";
   * const adapter = (await navigator.gpu.requestAdapter())!;
   * if (adapter.features.has("timestamp-query")) {
   *   new Profiler(await adapter.requestDevice({ requiredFeatures: ["timestamp-query"] }));
   * }
   * ```
   */
  constructor(device: GPUDevice) {
    this.#device = device;
  }

  /**
   * The timestamp writes of the next dispatch's pass (kernel `name`, of descriptor `family`).
   *
   * @example
   * ```ts
   * import { Profiler } from "./profiler.ts";
   * const adapter = (await navigator.gpu.requestAdapter())!;
   * if (adapter.features.has("timestamp-query")) {
   *   const device = await adapter.requestDevice({ requiredFeatures: ["timestamp-query"] });
   *   const writes = new Profiler(device).next("scale_vec4", "scale");
   *   console.log(writes.beginningOfPassWriteIndex); // 0
   * }
   * ```
   */
  next(name: string, family: string): GPUComputePassTimestampWrites {
    const b = this.#batch;
    const i = b.names.length;
    const k = Math.floor((2 * i) / QUERIES);
    if (k === b.sets.length) {
      b.sets.push(
        this.#free.pop() ?? this.#device.createQuerySet({ type: "timestamp", count: QUERIES }),
      );
    }
    b.names.push(name);
    b.families.push(family);
    const at = (2 * i) % QUERIES;
    return { querySet: b.sets[k], beginningOfPassWriteIndex: at, endOfPassWriteIndex: at + 1 };
  }

  /**
   * Records, at the end of a submit's commands, the copy of its timestamps to a readable buffer;
   * `submitted` then starts reading it (call it after `queue.submit`, or with `false` when the
   * commands were dropped unsubmitted).
   *
   * @example
   * ```ts
   * import { Profiler } from "./profiler.ts";
   * const adapter = (await navigator.gpu.requestAdapter())!;
   * if (adapter.features.has("timestamp-query")) {
   *   const device = await adapter.requestDevice({ requiredFeatures: ["timestamp-query"] });
   *   const encoder = device.createCommandEncoder();
   *   const submitted = new Profiler(device).resolve(encoder);
   *   device.queue.submit([encoder.finish()]);
   *   submitted(true);
   * }
   * ```
   */
  resolve(encoder: GPUCommandEncoder): (submitted: boolean) => void {
    const batch = this.#batch;
    this.#batch = { sets: [], names: [], families: [] };
    const n = batch.names.length;
    if (n === 0) return () => {};
    const bytes = 2 * n * 8;
    const usage = GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC;
    const resolved = this.#device.createBuffer({ label: "profile-resolve", size: bytes, usage });
    const staging = this.#device.createBuffer({
      label: "profile-read",
      size: bytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    batch.sets.forEach((set, k) => {
      const count = Math.min(QUERIES, 2 * n - k * QUERIES);
      encoder.resolveQuerySet(set, 0, count, resolved, k * QUERIES * 8);
    });
    encoder.copyBufferToBuffer(resolved, 0, staging, 0, bytes);
    return (submitted) => {
      const done = () => {
        resolved.destroy();
        staging.destroy();
        this.#free.push(...batch.sets);
      };
      if (!submitted) return done();
      const read = staging.mapAsync(GPUMapMode.READ).then(() => {
        const t = new BigUint64Array(staging.getMappedRange());
        for (let i = 0; i < n; i++) {
          const ns = Math.max(0, Number(t[2 * i + 1] - t[2 * i]));
          const name = batch.names[i];
          const e = this.#times.get(name) ??
            { family: batch.families[i], calls: 0, ns: 0, min: Infinity };
          e.calls++;
          e.ns += ns;
          e.min = Math.min(e.min, ns);
          this.#times.set(name, e);
        }
        staging.unmap();
      }).catch((err) => {
        this.#error ??= err;
      }).finally(done);
      this.#pending.push(read);
    };
  }

  /**
   * Waits for every submit's timestamps and returns each kernel's time, the longest first.
   *
   * @throws the error of a readback that failed (a lost device, for one).
   *
   * @example
   * ```ts
   * import { Profiler } from "./profiler.ts";
   * const adapter = (await navigator.gpu.requestAdapter())!;
   * if (adapter.features.has("timestamp-query")) {
   *   const device = await adapter.requestDevice({ requiredFeatures: ["timestamp-query"] });
   *   console.log((await new Profiler(device).result()).length); // 0
   * }
   * ```
   */
  async result(): Promise<KernelTime[]> {
    while (this.#pending.length > 0) {
      const pending = this.#pending;
      this.#pending = [];
      await Promise.all(pending);
    }
    if (this.#error !== null) throw this.#error;
    return [...this.#times].map(([kernel, e]) => ({
      kernel,
      family: e.family,
      calls: e.calls,
      ms: e.ns / 1e6,
      minMs: e.min / 1e6,
    })).sort((a, b) => b.ms - a.ms || (a.kernel < b.kernel ? -1 : 1));
  }

  /**
   * Destroys its query sets (after {@linkcode Profiler.result}).
   *
   * @example
   * ```ts
   * import { Profiler } from "./profiler.ts";
   * const adapter = (await navigator.gpu.requestAdapter())!;
   * if (adapter.features.has("timestamp-query")) {
   *   new Profiler(await adapter.requestDevice({ requiredFeatures: ["timestamp-query"] })).destroy();
   * }
   * ```
   */
  destroy(): void {
    for (const s of [...this.#free, ...this.#batch.sets]) s.destroy();
    this.#free = [];
  }
}
