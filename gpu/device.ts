/**
 * The GPU runtime: adapter and device acquisition, a pipeline cache, a buffer pool, command
 * recording that batches many dispatches into one submit, readbacks on request, and errors that
 * name the kernel.
 *
 * Recording model: `dispatch` only records into an open command encoder; nothing reaches the GPU
 * until `flush()` (one `queue.submit`), and nothing waits on the GPU until `sync()` or a readback.
 * A training step records all its passes and flushes once, so it never waits on the GPU.
 *
 * @module
 */

import {
  DeviceLostError,
  GpuValidationError,
  KernelCompileError,
  NoAdapterError,
} from "./errors.ts";
import { BufferPool } from "./pool.ts";
import { checkShape, formatShape, numel, type Shape } from "./shape.ts";
import { type ArrayFor, type DType, storageBytes, Tensor } from "./tensor.ts";

/**
 * A compute kernel: WGSL source with one entry point. The pipeline cache keys on `name` plus
 * `constants`, so a kernel whose WGSL is generated per specialization must put that
 * specialization into its `name` (e.g. `gemm_tn_64x64`).
 */
export interface KernelSpec {
  /** Unique name of this kernel and specialization; appears in every error about it. */
  readonly name: string;
  /** WGSL source. Convention: `Params` uniform at binding 0, storage buffers from binding 1. */
  readonly code: string;
  /** Entry point; default `main`. */
  readonly entryPoint?: string;
  /** Values of WGSL `override` constants. */
  readonly constants?: Readonly<Record<string, number>>;
}

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
}

/** Options of {@linkcode requestGpu}. */
export interface RequestGpuOptions {
  /** Adapter preference; default `high-performance`. */
  readonly powerPreference?: GPUPowerPreference;
  /** The WebGPU entry point; default `navigator.gpu`. Tests pass a fake to simulate no adapter. */
  readonly gpu?: Pick<GPU, "requestAdapter"> | undefined;
  /** Log a line per uncaptured error to the console as well as raising it; default false. */
  readonly verbose?: boolean;
}

/** Limits raised to the adapter's maximum: what training large models needs. */
const RAISED_LIMITS = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxComputeWorkgroupStorageSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
  "maxUniformBufferBindingSize",
  "maxBindingsPerBindGroup",
] as const;

const UNIFORM_ALIGN = 256;
const ARENA_BYTES = 1 << 20;

/**
 * Acquires a WebGPU adapter and device and returns the runtime around them.
 *
 * @throws {NoAdapterError} when WebGPU or an adapter is unavailable, saying how to get one.
 * @example
 * ```ts
 * import { requestGpu } from "@modern-cnn/webgpu/gpu";
 * const gpu = await requestGpu();
 * console.log(gpu.description); // e.g. "llvmpipe (LLVM 15.0.6, 256 bits)"
 * ```
 */
export async function requestGpu(options: RequestGpuOptions = {}): Promise<Gpu> {
  const entry = "gpu" in options
    ? options.gpu
    : (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!entry) throw new NoAdapterError("navigator.gpu is undefined: this runtime has no WebGPU");
  prepareDenoEnvironment();
  let adapter: GPUAdapter | null;
  try {
    adapter = await entry.requestAdapter({
      powerPreference: options.powerPreference ?? "high-performance",
    });
  } catch (err) {
    throw new NoAdapterError(`requestAdapter() failed: ${(err as Error).message}`);
  }
  if (!adapter) {
    throw new NoAdapterError(
      "navigator.gpu.requestAdapter() returned null" +
        (vulkanOnly
          ? `; ${BACKEND_VAR} was unset, so this library set it to 'vulkan' (Deno's OpenGL ` +
            `backend crashes at exit); set ${BACKEND_VAR}=gl to try OpenGL instead`
          : ""),
    );
  }
  const requiredLimits: Record<string, number> = {};
  const adapterLimits = adapter.limits as unknown as Record<string, number>;
  for (const name of RAISED_LIMITS) {
    const v = adapterLimits[name];
    if (typeof v === "number") requiredLimits[name] = v;
  }
  const requiredFeatures: GPUFeatureName[] = [];
  for (const f of ["shader-f16", "timestamp-query"] as GPUFeatureName[]) {
    if (adapter.features.has(f)) requiredFeatures.push(f);
  }
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  return new Gpu(adapter, device, { verbose: options.verbose ?? false });
}

let defaultGpu: Promise<Gpu> | undefined;

/** Every {@linkcode Gpu} constructed and not yet destroyed, for {@linkcode shutdownGpu}. */
const liveGpus = new Set<WeakRef<Gpu>>();

/**
 * The process-wide runtime, created on first use with {@linkcode requestGpu}'s defaults.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * const gpu = await getGpu();
 * console.log(gpu === await getGpu()); // true
 * ```
 */
export function getGpu(): Promise<Gpu> {
  defaultGpu ??= requestGpu().catch((err) => {
    defaultGpu = undefined;
    throw err;
  });
  return defaultGpu;
}

/**
 * Releases every GPU runtime of this process: the one {@linkcode getGpu} made and any other
 * {@linkcode Gpu} not yet destroyed. Each waits for its submitted work, then destroys its buffers
 * and its device ({@linkcode Gpu.close}). Call it once at the end of a command, before exiting:
 * `await shutdownGpu(); Deno.exit(code);`. A later `getGpu()` acquires a new device.
 *
 * @example
 * ```ts
 * import { getGpu, shutdownGpu } from "@modern-cnn/webgpu/gpu";
 * const gpu = await getGpu();
 * console.log(await gpu.tensor(new Float32Array([1, 2]), { shape: [2] }).toArray());
 * await shutdownGpu();
 * ```
 */
export async function shutdownGpu(): Promise<void> {
  const pending = defaultGpu;
  defaultGpu = undefined;
  // A getGpu() still acquiring its device would otherwise construct a Gpu after the sweep.
  if (pending) await pending.catch(() => undefined);
  const gpus = [...liveGpus].map((ref) => ref.deref()).filter((g) => g !== undefined);
  liveGpus.clear();
  await Promise.all(gpus.map((gpu) => gpu.close()));
}

// ---------------------------------------------------------------- process environment ----

const BACKEND_VAR = "DENO_WEBGPU_BACKEND";
const RUNTIME_DIR_VAR = "XDG_RUNTIME_DIR";
/** Unix systems whose GPU stack is Mesa/libglvnd's (not macOS, not Windows). */
const MESA_OSES = ["linux", "freebsd", "netbsd", "openbsd"];
let environmentPrepared = false;
/** Whether {@linkcode prepareDenoEnvironment} restricted Deno's WebGPU to Vulkan. */
let vulkanOnly = false;

/**
 * Deno only, once, before the first adapter request (when Deno creates its wgpu instance and
 * enumerates the adapters, reading these variables): sets two variables inside this process, and
 * only where they are unset, so a user's own settings always win.
 *
 * - `DENO_WEBGPU_BACKEND=vulkan`. Unset, Deno's wgpu starts every backend, OpenGL's included,
 *   which initializes EGL (libglvnd) and makes a context current on the thread running
 *   JavaScript; nothing ever calls `eglReleaseThread`. Where that thread is not the main one
 *   (`deno test` runs each file's isolate on a worker thread; so do Web Workers), the thread's
 *   exit frees libglvnd's per-thread state while the main thread's `exit()` runs libEGL's
 *   destructor, which frees the same state: a double free that glibc aborts on after every test
 *   passed (exit 134, "double free or corruption (fasttop)", "corrupted size vs. prev_size in
 *   fastbins"; cores show exactly these two threads). Where Vulkan sees the same device, wgpu
 *   picks Vulkan's adapter anyway, so this only drops OpenGL as a fallback.
 * - `XDG_RUNTIME_DIR`, when unset (or not absolute): Mesa's Vulkan device-select layer asks
 *   libwayland for the compositor's default GPU while adapters are enumerated, and libwayland
 *   prints `error: XDG_RUNTIME_DIR is invalid or not set in the environment.` twice. A private
 *   per-user folder (mode 0700, as the XDG spec requires) is a harmless value: no socket is found
 *   there and the layer goes on silently, as it does on any machine without a display.
 *
 * Checks permissions with `Deno.permissions.querySync` first, so it never prompts, and gives up
 * silently on anything unexpected: GPU acquisition must not fail for it.
 */
function prepareDenoEnvironment(): void {
  if (environmentPrepared) return;
  environmentPrepared = true;
  const deno = (globalThis as { Deno?: typeof Deno }).Deno;
  if (!deno?.permissions?.querySync || !MESA_OSES.includes(deno.build.os)) return;
  const granted = (desc: Deno.PermissionDescriptor) =>
    deno.permissions.querySync(desc).state === "granted";
  try {
    if (
      granted({ name: "env", variable: BACKEND_VAR }) && deno.env.get(BACKEND_VAR) === undefined
    ) {
      deno.env.set(BACKEND_VAR, "vulkan");
      vulkanOnly = true;
    }
  } catch {
    // leave the backends to Deno
  }
  try {
    if (!granted({ name: "env", variable: RUNTIME_DIR_VAR })) return;
    if (deno.env.get(RUNTIME_DIR_VAR)?.startsWith("/")) return;
    const dir = privateRuntimeDir(deno, granted);
    if (dir) deno.env.set(RUNTIME_DIR_VAR, dir);
  } catch {
    // the warning is cosmetic
  }
}

/**
 * `$TMPDIR/modern-cnn-runtime-<uid>` (or under `/tmp`), created with mode 0700; undefined when
 * it cannot be made or is not private (a symlink, another owner, open to others).
 */
function privateRuntimeDir(
  deno: typeof Deno,
  granted: (desc: Deno.PermissionDescriptor) => boolean,
): string | undefined {
  if (!granted({ name: "sys", kind: "uid" })) return undefined;
  const uid = deno.uid();
  if (uid === null) return undefined;
  const tmp = granted({ name: "env", variable: "TMPDIR" }) ? deno.env.get("TMPDIR") : undefined;
  const base = tmp?.startsWith("/") ? tmp.replace(/\/+$/, "") : "/tmp"; // "" for TMPDIR=/
  const dir = `${base}/modern-cnn-runtime-${uid}`;
  if (!granted({ name: "write", path: dir }) || !granted({ name: "read", path: dir })) {
    return undefined;
  }
  try {
    deno.mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    if (!(err instanceof deno.errors.AlreadyExists)) return undefined;
  }
  const info = deno.lstatSync(dir);
  if (!info.isDirectory || info.uid !== uid || ((info.mode ?? 0) & 0o077) !== 0) return undefined;
  return dir;
}

/**
 * Workgroup counts for `n` threads in workgroups of `wg`, split over x and y so that no dimension
 * exceeds 65535. In WGSL the flat index is `gid.x + gid.y * nwg.x * WG` (with
 * `@builtin(num_workgroups) nwg`), and threads with an index `>= n` must return.
 *
 * @example
 * ```ts
 * import { grid1d } from "@modern-cnn/webgpu/gpu";
 * grid1d(1000, 64); // [16, 1, 1]
 * grid1d(64 * 70000, 64); // [35000, 2, 1]
 * ```
 */
export function grid1d(n: number, wg: number): [number, number, number] {
  const groups = Math.ceil(n / wg);
  if (groups <= 65535) return [groups, 1, 1];
  const y = Math.ceil(groups / 65535);
  return [Math.ceil(groups / y), y, 1];
}

/**
 * The runtime around one WebGPU device. Create it with {@linkcode requestGpu} or
 * {@linkcode getGpu}.
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
export class Gpu {
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
  readonly stats: GpuStats = {
    submits: 0,
    dispatches: 0,
    clears: 0,
    readbacks: 0,
    uploads: 0,
    pipelines: 0,
  };

  #verbose: boolean;
  #pipelines = new Map<string, { code: string; pipeline: GPUComputePipeline }>();
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #batchKernels = new Set<string>();
  #lastKernels: string[] = [];
  #arena: GPUBuffer;
  #arenaCpu = new Uint8Array(ARENA_BYTES);
  #arenaUsed = 0;
  #errors: Error[] = [];
  #pendingScopes: Promise<void>[] = [];
  #lost: Error | null = null;
  #destroyed = false;
  #scopes: Set<Tensor>[] = [];
  #registration = new WeakRef<Gpu>(this);

  /**
   * Wraps an adapter and a device. Prefer {@linkcode requestGpu}, which raises the limits.
   *
   * @example
   * ```ts
   * import { Gpu } from "@modern-cnn/webgpu/gpu";
   * const adapter = (await navigator.gpu.requestAdapter())!;
   * const gpu = new Gpu(adapter, await adapter.requestDevice());
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
    this.pool = new BufferPool(device);
    this.#verbose = options.verbose ?? false;
    this.#arena = this.#createArena();
    liveGpus.add(this.#registration);
    device.addEventListener("uncapturederror", (ev) => {
      const error = (ev as GPUUncapturedErrorEvent).error;
      const err = new GpuValidationError(this.#lastKernels, "uncaptured", error.message);
      if (this.#verbose) console.error(err.message);
      this.#errors.push(err);
    });
    device.lost.then((info) => {
      if (!this.#destroyed) {
        this.#lost = new DeviceLostError(info.reason ?? "unknown", info.message, this.#lastKernels);
      }
    });
  }

  // ------------------------------------------------------------------ pipelines ----

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
  pipeline(spec: KernelSpec): GPUComputePipeline {
    const key = this.#key(spec);
    const hit = this.#pipelines.get(key);
    if (hit) {
      if (hit.code !== spec.code) {
        throw new TypeError(
          `kernel '${spec.name}': two different WGSL sources share one cache key; put the ` +
            "specialization into the kernel name",
        );
      }
      return hit.pipeline;
    }
    this.device.pushErrorScope("validation");
    const module = this.device.createShaderModule({ label: spec.name, code: spec.code });
    const pipeline = this.device.createComputePipeline({
      label: spec.name,
      layout: "auto",
      compute: { module, entryPoint: spec.entryPoint ?? "main", constants: spec.constants },
    });
    this.#pendingScopes.push(
      this.device.popErrorScope().then((e) => {
        if (e) {
          this.#pipelines.delete(key);
          this.#errors.push(new KernelCompileError(spec.name, e.message));
        }
      }),
    );
    this.#pipelines.set(key, { code: spec.code, pipeline });
    this.stats.pipelines++;
    return pipeline;
  }

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
  async compile(spec: KernelSpec): Promise<void> {
    this.pipeline(spec);
    await this.#settleScopes();
    this.checkErrors();
  }

  #key(spec: KernelSpec): string {
    return spec.constants ? `${spec.name}|${JSON.stringify(spec.constants)}` : spec.name;
  }

  // ------------------------------------------------------------------ recording ----

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
  dispatch(kernel: KernelSpec, options: DispatchOptions): void {
    this.checkErrors();
    const wg = typeof options.workgroups === "number"
      ? [options.workgroups, 1, 1]
      : [options.workgroups[0], options.workgroups[1] ?? 1, options.workgroups[2] ?? 1];
    if (wg.some((v) => !Number.isInteger(v) || v < 0)) {
      throw new RangeError(`dispatch '${kernel.name}': bad workgroup counts [${wg.join(", ")}]`);
    }
    const maxWg = this.limits.maxComputeWorkgroupsPerDimension;
    if (wg.some((v) => v > maxWg)) {
      throw new RangeError(
        `dispatch '${kernel.name}': workgroup counts [${wg.join(", ")}] exceed the device limit ` +
          `${maxWg} per dimension`,
      );
    }
    if (wg[0] === 0 || wg[1] === 0 || wg[2] === 0) return;
    const pipeline = this.pipeline(kernel);
    const entries: GPUBindGroupEntry[] = [];
    let binding = 0;
    if (options.params !== undefined) {
      entries.push({ binding: binding++, resource: this.#uniform(options.params) });
    }
    for (const b of options.bindings) {
      entries.push({ binding: binding++, resource: this.#resource(kernel.name, b) });
    }
    const pass = this.#openPass();
    const group = this.device.createBindGroup({
      label: kernel.name,
      layout: pipeline.getBindGroupLayout(0),
      entries,
    });
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(wg[0], wg[1], wg[2]);
    this.#batchKernels.add(kernel.name);
    this.stats.dispatches++;
  }

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
    options: { srcOffset?: number; dstOffset?: number; bytes?: number } = {},
  ): void {
    this.checkErrors();
    const bytes = options.bytes ?? src.byteLength;
    if (options.bytes === undefined && src.byteLength !== dst.byteLength) {
      throw new TypeError(`copy: source ${src} and destination ${dst} differ in size`);
    }
    this.#endPass();
    const from = src.byteOffset + (options.srcOffset ?? 0);
    const to = dst.byteOffset + (options.dstOffset ?? 0);
    const encoder = this.#openEncoder();
    if (src.buffer !== dst.buffer) {
      encoder.copyBufferToBuffer(src.buffer, from, dst.buffer, to, bytes);
      return;
    }
    // WebGPU copies between two buffers only: views of one buffer go through a temporary.
    if (from !== to) {
      const tmp = this.pool.acquire(bytes);
      encoder.copyBufferToBuffer(src.buffer, from, tmp, 0, bytes);
      encoder.copyBufferToBuffer(tmp, 0, dst.buffer, to, bytes);
      this.pool.release(tmp);
    }
  }

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
  clear(t: Tensor): void {
    this.checkErrors();
    this.#endPass();
    this.#openEncoder().clearBuffer(t.buffer, t.byteOffset, t.byteLength);
    this.stats.clears++;
  }

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
  flush(): void {
    this.checkErrors();
    if (!this.#encoder) return;
    this.#endPass();
    if (this.#arenaUsed > 0) {
      this.device.queue.writeBuffer(this.#arena, 0, this.#arenaCpu, 0, this.#arenaUsed);
      this.#arenaUsed = 0;
    }
    const kernels = [...this.#batchKernels];
    const cb = this.#encoder.finish();
    this.device.queue.submit([cb]);
    this.stats.submits++;
    this.#encoder = null;
    this.#batchKernels.clear();
    this.#lastKernels = kernels;
    // The three scopes were pushed in #openEncoder: pop in reverse order.
    for (const kind of ["validation", "out-of-memory", "internal"]) {
      this.#pendingScopes.push(
        this.device.popErrorScope().then((e) => {
          if (e) this.#errors.push(new GpuValidationError(kernels, kind, e.message));
        }),
      );
    }
  }

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
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    await this.#settleScopes();
    this.checkErrors();
  }

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
  checkErrors(): void {
    if (this.#lost) throw this.#lost;
    if (this.#destroyed) throw new TypeError("this Gpu was destroyed");
    if (this.#errors.length > 0) {
      const [first] = this.#errors;
      this.#errors = [];
      throw first;
    }
  }

  #openEncoder(): GPUCommandEncoder {
    if (!this.#encoder) {
      this.device.pushErrorScope("internal");
      this.device.pushErrorScope("out-of-memory");
      this.device.pushErrorScope("validation");
      this.#encoder = this.device.createCommandEncoder();
    }
    return this.#encoder;
  }

  #openPass(): GPUComputePassEncoder {
    if (!this.#pass) this.#pass = this.#openEncoder().beginComputePass();
    return this.#pass;
  }

  #endPass(): void {
    if (this.#pass) {
      this.#pass.end();
      this.#pass = null;
    }
  }

  #createArena(): GPUBuffer {
    return this.device.createBuffer({
      label: "params-arena",
      size: ARENA_BYTES,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
  }

  #uniform(params: ArrayBufferView | ArrayBuffer): GPUBufferBinding {
    const bytes = params instanceof ArrayBuffer
      ? new Uint8Array(params)
      : new Uint8Array(params.buffer, params.byteOffset, params.byteLength);
    const size = Math.max(16, Math.ceil(bytes.byteLength / 16) * 16);
    if (this.#arenaUsed + size > ARENA_BYTES) this.flush();
    const offset = this.#arenaUsed;
    this.#arenaCpu.fill(0, offset, offset + size);
    this.#arenaCpu.set(bytes, offset);
    this.#arenaUsed = Math.ceil((offset + size) / UNIFORM_ALIGN) * UNIFORM_ALIGN;
    return { buffer: this.#arena, offset, size };
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

  async #settleScopes(): Promise<void> {
    while (this.#pendingScopes.length > 0) {
      const pending = this.#pendingScopes;
      this.#pendingScopes = [];
      await Promise.all(pending);
    }
  }

  // ------------------------------------------------------------------ tensors ----

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
  empty<D extends DType = "f32">(shape: Shape, options: { dtype?: D } = {}): Tensor<D> {
    checkShape("empty", shape);
    const dtype = (options.dtype ?? "f32") as D;
    const n = numel(shape);
    const buffer = this.pool.acquire(storageBytes(n, dtype));
    return new Tensor<D>(this, buffer, { shape, dtype });
  }

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
  zeros<D extends DType = "f32">(shape: Shape, options: { dtype?: D } = {}): Tensor<D> {
    const t = this.empty<D>(shape, options);
    this.clear(t);
    return t;
  }

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
  ): void {
    if (dtypeOf(data) !== t.dtype || data.length !== t.size) {
      throw new TypeError(
        `write: ${data.constructor.name}(${data.length}) does not fit ${t}`,
      );
    }
    if (this.#encoder) this.flush();
    let bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (bytes.byteLength % 4 !== 0 || bytes.byteLength === 0) {
      const padded = new Uint8Array(t.byteLength);
      padded.set(bytes);
      bytes = padded;
    }
    this.device.queue.writeBuffer(t.buffer, t.byteOffset, bytes as Uint8Array<ArrayBuffer>);
    this.stats.uploads++;
  }

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
  async read<D extends DType>(t: Tensor<D>): Promise<ArrayFor<D>> {
    this.checkErrors();
    const bytes = t.byteLength;
    const staging = this.device.createBuffer({
      label: "readback",
      size: bytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    this.#endPass();
    this.#openEncoder().copyBufferToBuffer(t.buffer, t.byteOffset, staging, 0, bytes);
    this.flush();
    this.stats.readbacks++;
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (err) {
      await this.#settleScopes();
      this.checkErrors();
      throw err;
    }
    const copy = staging.getMappedRange().slice(0);
    staging.unmap();
    staging.destroy();
    await this.#settleScopes();
    this.checkErrors();
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
  trimPool(): void {
    this.flush();
    this.pool.destroyFree();
  }

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
  async close(): Promise<void> {
    if (this.#destroyed) return;
    this.#pass = null;
    this.#encoder = null;
    if (!this.#lost) {
      try {
        await this.device.queue.onSubmittedWorkDone();
        await this.#settleScopes();
      } catch {
        // a device lost meanwhile: nothing left to wait for
      }
    }
    this.destroy();
  }

  /**
   * Destroys the runtime at once: every pooled buffer, the params arena and the device; drops
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
  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    liveGpus.delete(this.#registration);
    this.#pass = null;
    this.#encoder = null;
    this.#pipelines.clear();
    this.pool.destroyAll();
    this.#arena.destroy();
    this.device.destroy();
  }

  /** @internal Registers a new tensor with the innermost scope. */
  _track(t: Tensor): void {
    this.#scopes.at(-1)?.add(t);
  }

  /** @internal Forgets a disposed tensor. */
  _untrack(t: Tensor): void {
    for (const s of this.#scopes) s.delete(t);
  }
}

/** The dtype of a TypedArray. */
export type DTypeOf<A> = A extends Float32Array ? "f32"
  : A extends Float16Array ? "f16"
  : A extends Int32Array ? "i32"
  : A extends Uint32Array ? "u32"
  : "u8";

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
