/**
 * Command recording for one device, on raw buffers: the pipeline cache, the open command encoder
 * and compute pass, the uniform buffer that every dispatch's `Params` are packed into, submits,
 * readbacks, and the GPU errors of each batch (collected from error scopes, thrown at the next
 * call). The runtime (`runtime.ts`) turns tensors into buffer ranges and calls this.
 *
 * Recording model: `dispatch` only records into an open command encoder; nothing reaches the GPU
 * until `flush()` (one `queue.submit`), and nothing waits on the GPU until `sync()` or a readback.
 * Between `beginCapture` and `endCapture` every command is also appended to a {@linkcode Tape},
 * which `replay` re-encodes later (`tape.ts`). Over 500 lines: capture and replay share the open
 * encoder, the pass and the uniform buffer's packing with recording, which stay private to this
 * one class.
 *
 * @module
 */

import { BindGroupCache, uniformLayoutEntries } from "./bind_groups.ts";
import { DeviceLostError, GpuValidationError, KernelCompileError } from "./errors.ts";
import type { KernelSpec } from "./kernel.ts";
import type { Profiler } from "./profiler.ts";
import { type Tape, TAPE_CLEAR, TAPE_COPY, TAPE_DISPATCH } from "./tape.ts";
import type { GpuStats } from "./tensor.ts";

const UNIFORM_ALIGN = 256;
/** Bytes of the uniform buffer: the `Params` of one batch of dispatches (flushed when full). */
const UNIFORM_BYTES = 1 << 20;
/** Bind groups kept (several steps' worth of the largest model's ~1,500 dispatches). */
const BIND_GROUPS_KEPT = 1 << 14;

/** A compiled kernel: its pipeline and how its bind groups are laid out and cached. */
interface Compiled {
  readonly code: string;
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
  /** Whether the uniform (binding 0) takes a dynamic offset (an explicit layout). */
  readonly dynamic: boolean;
  /** The bind group cache key's prefix: the layout (shared by equal explicit layouts). */
  readonly prefix: string;
}

/**
 * Records dispatches, copies and clears of one device into batches and submits them.
 *
 * @example
 * ```ts
 * import { requestGpu } from "@modern-cnn/webgpu/gpu";
 * import { Recorder } from "./recorder.ts";
 * const gpu = await requestGpu();
 * const stats = { ...gpu.stats };
 * const rec = new Recorder(gpu.device, stats);
 * rec.flush();
 * ```
 */
export class Recorder {
  /** The device. */
  readonly device: GPUDevice;
  /** The runtime's counters (submits, dispatches, clears, readbacks, pipelines). */
  readonly stats: GpuStats;
  #verbose: boolean;
  #pipelines = new Map<string, Compiled>();
  #layouts = new Map<string, { layout: GPUBindGroupLayout; pipelineLayout: GPUPipelineLayout }>();
  #autoLayouts = 0;
  #groups = new BindGroupCache(BIND_GROUPS_KEPT);
  #offsets = new Uint32Array(1);
  /** The device limit (reading `device.limits` costs ~1 µs on Deno). */
  #maxWorkgroups: number;
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #batchKernels = new Set<string>();
  #lastKernels: string[] = [];
  #uniforms: GPUBuffer;
  #uniformsCpu = new Uint8Array(UNIFORM_BYTES);
  #uniformsUsed = 0;
  /** Where the uniform buffer restarts after a submit: past a replayed tape's params. */
  #uniformsFloor = 0;
  /** The tape being captured, and the depth of live entries (whose commands it leaves out). */
  #tape: Tape | null = null;
  #liveDepth = 0;
  /** Submits so far (a capture that sees one is not kept), and at the capture's start. */
  #flushes = 0;
  #captureFlushes = 0;
  #errors: Error[] = [];
  #pendingScopes: Promise<void>[] = [];
  #lost: Error | null = null;
  #destroyed = false;
  /**
   * Record and finish command buffers but never submit them (nothing executes; readbacks throw):
   * for measuring the host's cost of recording a step (`deno task bench:train --host-only`).
   */
  discard = false;
  /** Whether bind groups are cached (off: one is created per dispatch, as a reference). */
  cacheBindGroups = true;
  /**
   * Times every dispatch recorded while set (each in a pass of its own; see `profiler.ts`); set
   * and cleared by the runtime's `startProfile` / `stopProfile`, between submits.
   */
  profiler: Profiler | null = null;

  /**
   * Starts recording for `device`, counting into `stats`; listens for its uncaptured errors and
   * its loss (reported at the next call).
   *
   * @example
   * ```ts
   * import { requestGpu } from "@modern-cnn/webgpu/gpu";
   * import { Recorder } from "./recorder.ts";
   * const gpu = await requestGpu();
   * new Recorder(gpu.device, { ...gpu.stats }, { verbose: true });
   * ```
   */
  constructor(device: GPUDevice, stats: GpuStats, options: { verbose?: boolean } = {}) {
    this.device = device;
    this.stats = stats;
    this.#verbose = options.verbose ?? false;
    this.#maxWorkgroups = device.limits.maxComputeWorkgroupsPerDimension;
    this.#uniforms = device.createBuffer({
      label: "params-uniforms",
      size: UNIFORM_BYTES,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
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

  /** Whether work is recorded and not yet submitted. */
  get recording(): boolean {
    return this.#encoder !== null;
  }

  // ------------------------------------------------------------------ pipelines ----

  /** The compute pipeline of a kernel (see `Gpu.pipeline`). */
  pipeline(spec: KernelSpec): GPUComputePipeline {
    return this.#compiled(spec).pipeline;
  }

  #compiled(spec: KernelSpec): Compiled {
    const key = spec.constants ? `${spec.name}|${JSON.stringify(spec.constants)}` : spec.name;
    const hit = this.#pipelines.get(key);
    if (hit) {
      if (hit.code !== spec.code) {
        throw new TypeError(
          `kernel '${spec.name}': two different WGSL sources share one cache key; put the ` +
            "specialization into the kernel name",
        );
      }
      return hit;
    }
    this.device.pushErrorScope("validation");
    const module = this.device.createShaderModule({ label: spec.name, code: spec.code });
    const explicit = this.#explicitLayout(spec.code);
    const pipeline = this.device.createComputePipeline({
      label: spec.name,
      layout: explicit?.pipelineLayout ?? "auto",
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
    const compiled: Compiled = explicit
      ? { code: spec.code, pipeline, layout: explicit.layout, dynamic: true, prefix: explicit.key }
      : {
        code: spec.code,
        pipeline,
        layout: pipeline.getBindGroupLayout(0),
        dynamic: false,
        prefix: `auto${this.#autoLayouts++}`,
      };
    this.#pipelines.set(key, compiled);
    this.stats.pipelines++;
    return compiled;
  }

  /** The explicit layout of a kernel with a dynamic uniform offset (shared by equal ones). */
  #explicitLayout(
    code: string,
  ): { layout: GPUBindGroupLayout; pipelineLayout: GPUPipelineLayout; key: string } | null {
    const entries = uniformLayoutEntries(code);
    if (!entries) return null;
    const key = entries.map((e) => e.buffer!.type![0]).join("");
    let hit = this.#layouts.get(key);
    if (!hit) {
      const layout = this.device.createBindGroupLayout({ label: `params+${key}`, entries });
      const pipelineLayout = this.device.createPipelineLayout({ bindGroupLayouts: [layout] });
      this.#layouts.set(key, hit = { layout, pipelineLayout });
    }
    return { ...hit, key };
  }

  /** Drops the cached bind groups that bind `buffer` (before it is destroyed). */
  forget(buffer: GPUBuffer): void {
    this.#groups.forget(buffer);
  }

  /** Compiles a kernel now; throws its compile error (see `Gpu.compile`). */
  async compile(spec: KernelSpec): Promise<void> {
    this.pipeline(spec);
    await this.settle();
    this.checkErrors();
  }

  // ------------------------------------------------------------------ recording ----

  /**
   * Checks a dispatch's workgroup counts (after any pending error): `[x, y, z]`, or null when
   * one is zero (nothing to record).
   */
  workgroups(
    kernel: string,
    workgroups: number | readonly [number, number?, number?],
  ): [number, number, number] | null {
    this.checkErrors();
    const wg: [number, number, number] = typeof workgroups === "number"
      ? [workgroups, 1, 1]
      : [workgroups[0], workgroups[1] ?? 1, workgroups[2] ?? 1];
    if (wg.some((v) => !Number.isInteger(v) || v < 0)) {
      throw new RangeError(`dispatch '${kernel}': bad workgroup counts [${wg.join(", ")}]`);
    }
    const maxWg = this.#maxWorkgroups;
    if (wg.some((v) => v > maxWg)) {
      throw new RangeError(
        `dispatch '${kernel}': workgroup counts [${wg.join(", ")}] exceed the device limit ` +
          `${maxWg} per dimension`,
      );
    }
    return wg[0] === 0 || wg[1] === 0 || wg[2] === 0 ? null : wg;
  }

  /**
   * Records one dispatch (counts checked by {@linkcode Recorder.workgroups}): `params` packed
   * into the uniform buffer as binding 0, then the storage buffer ranges.
   */
  dispatch(
    kernel: KernelSpec,
    workgroups: readonly [number, number, number],
    params: ArrayBufferView | ArrayBuffer | undefined,
    storage: readonly GPUBufferBinding[],
  ): void {
    const compiled = this.#compiled(kernel);
    let uniform: GPUBufferBinding | undefined;
    let prefix = compiled.prefix;
    if (params !== undefined) {
      uniform = this.#uniform(params);
      prefix += compiled.dynamic
        ? `u${this.#slot(uniform.size!)}`
        : `u${uniform.offset}:${uniform.size}`;
    }
    const key = this.cacheBindGroups ? this.#groups.key(prefix, storage) : "";
    let group = this.cacheBindGroups ? this.#groups.get(key) : undefined;
    if (group === undefined) {
      const entries: GPUBindGroupEntry[] = [];
      let binding = 0;
      if (uniform !== undefined) {
        // With a dynamic offset, the binding covers the whole 256-byte slot (packed zero past
        // the params), so it is never smaller than the shader's struct.
        const resource = compiled.dynamic
          ? { ...uniform, offset: 0, size: this.#slot(uniform.size!) }
          : uniform;
        entries.push({ binding: binding++, resource });
      }
      for (const resource of storage) entries.push({ binding: binding++, resource });

      group = this.device.createBindGroup({ label: kernel.name, layout: compiled.layout, entries });
      this.stats.bindGroups++;
      if (this.cacheBindGroups) this.#groups.set(key, group, storage);
    }
    const pass = this.#openPass(kernel);
    pass.setPipeline(compiled.pipeline);
    if (uniform !== undefined && compiled.dynamic) {
      this.#offsets[0] = uniform.offset!;
      pass.setBindGroup(0, group, this.#offsets, 0, 1);
    } else {
      pass.setBindGroup(0, group);
    }
    pass.dispatchWorkgroups(workgroups[0], workgroups[1], workgroups[2]);
    if (this.profiler !== null) this.#endPass();
    this.#batchKernels.add(kernel.name);
    this.stats.dispatches++;
    if (this.#tape !== null && this.#liveDepth === 0) {
      const offset = uniform !== undefined && compiled.dynamic ? uniform.offset! : -1;
      this.#tape.dispatch(
        kernel,
        { pipeline: compiled.pipeline, group, offset, workgroups },
        storage,
      );
    }
  }

  /** Records a copy between two different buffers (in order with recorded dispatches). */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.#endPass();
    this.#openEncoder().copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
    if (this.#tape !== null && this.#liveDepth === 0) {
      this.#tape.copy(src, srcOffset, dst, dstOffset, bytes);
    }
  }

  /** Records zero-filling of a byte range (in order with recorded dispatches). */
  clear(buffer: GPUBuffer, offset: number, bytes: number): void {
    this.checkErrors();
    this.#endPass();
    this.#openEncoder().clearBuffer(buffer, offset, bytes);
    this.stats.clears++;
    if (this.#tape !== null && this.#liveDepth === 0) this.#tape.clear(buffer, offset, bytes);
  }

  // ------------------------------------------------------------------ tapes ----

  /** Whether a tape is being captured. */
  get capturing(): boolean {
    return this.#tape !== null;
  }

  /**
   * Starts appending every command to `tape` (after submitting what is recorded, if it packed
   * params: the tape's params start at offset 0 of the uniform buffer).
   */
  beginCapture(tape: Tape): void {
    if (this.#tape !== null) throw new TypeError("beginTape: a tape is already being recorded");
    if (this.#uniformsUsed > 0) this.flush();
    this.#tape = tape;
    this.#captureFlushes = this.#flushes;
  }

  /**
   * Stops capturing: the tape with its params, or null when it cannot be replayed (a submit in
   * the middle, or params beyond half of the uniform buffer, which the replay's live entries
   * need room after).
   */
  endCapture(): Tape | null {
    const tape = this.#tape;
    this.#tape = null;
    if (tape === null) throw new TypeError("endTape: no tape is being recorded");
    if (this.#flushes !== this.#captureFlushes || this.#uniformsUsed * 2 > UNIFORM_BYTES) {
      return null;
    }
    tape.uniforms = this.#uniformsCpu.slice(0, this.#uniformsUsed);
    return tape;
  }

  /**
   * Runs `fn` (which records commands); while capturing, appends it to the tape as a live entry
   * instead of the commands it records, so that a replay calls it again.
   */
  live(fn: () => void): void {
    const tape = this.#tape;
    if (tape === null || this.#liveDepth > 0) return fn();
    tape.live(fn);
    this.#liveDepth++;
    try {
      fn();
    } finally {
      this.#liveDepth--;
    }
  }

  /**
   * Re-encodes `tape` (into the open command encoder, in order with what is recorded): its
   * params copied to the uniform buffer's start (after submitting what is recorded, if that
   * packed params), then each command as captured, each live entry called.
   */
  replay(tape: Tape): void {
    this.checkErrors();
    if (this.#tape !== null) throw new TypeError("replay: a tape is being recorded");
    if (!tape.valid) throw new TypeError("replay: the tape was dropped");
    if (this.#uniformsUsed > 0) this.flush();
    const bytes = tape.uniforms.byteLength;
    this.#uniformsCpu.set(tape.uniforms, 0);
    this.#uniformsUsed = this.#uniformsFloor = bytes;
    const offsets = this.#offsets;
    let pass: GPUComputePassEncoder | null = null;
    try {
      for (const op of tape.ops) {
        if (op.kind === TAPE_DISPATCH) {
          pass ??= this.#openPass(op.kernel);
          pass.setPipeline(op.pipeline);
          if (op.offset >= 0) {
            offsets[0] = op.offset;
            pass.setBindGroup(0, op.group, offsets, 0, 1);
          } else {
            pass.setBindGroup(0, op.group);
          }
          pass.dispatchWorkgroups(op.x, op.y, op.z);
          if (this.profiler !== null) {
            this.#endPass();
            pass = null;
          }
          continue;
        }
        pass = null;
        if (op.kind === TAPE_COPY) {
          this.#endPass();
          this.#openEncoder().copyBufferToBuffer(
            op.src,
            op.srcOffset,
            op.dst,
            op.dstOffset,
            op.bytes,
          );
        } else if (op.kind === TAPE_CLEAR) {
          this.#endPass();
          this.#openEncoder().clearBuffer(op.buffer, op.offset, op.bytes);
        } else {
          op.run();
        }
      }
    } finally {
      this.#uniformsFloor = 0;
    }
    this.stats.dispatches += tape.dispatches;
    this.stats.clears += tape.clears;
    for (const k of tape.kernels) this.#batchKernels.add(k);
  }

  /** Submits all recorded work in one `queue.submit` (see `Gpu.flush`). */
  flush(): void {
    this.checkErrors();
    if (!this.#encoder) return;
    this.#endPass();
    if (this.#uniformsUsed > 0) {
      this.device.queue.writeBuffer(this.#uniforms, 0, this.#uniformsCpu, 0, this.#uniformsUsed);
      // In a replay, the tape's params stay for the commands still to come.
      this.#uniformsUsed = this.#uniformsFloor;
    }
    this.#flushes++;
    const kernels = [...this.#batchKernels];
    const profiled = this.profiler?.resolve(this.#encoder);
    const cb = this.#encoder.finish();
    if (!this.discard) {
      this.device.queue.submit([cb]);
      this.stats.submits++;
    }
    profiled?.(!this.discard);
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

  /** Submits, waits for the GPU and throws the first error (see `Gpu.sync`). */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    await this.settle();
    this.checkErrors();
  }

  /**
   * Copies `bytes` from `offset` of `buffer` to the CPU: submits recorded work, copies, and
   * waits once (one readback).
   */
  async read(buffer: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
    this.checkErrors();
    if (this.discard) throw new TypeError("read: submits are being discarded, nothing executes");
    const staging = this.device.createBuffer({
      label: "readback",
      size: bytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    this.#endPass();
    this.#openEncoder().copyBufferToBuffer(buffer, offset, staging, 0, bytes);
    this.flush();
    this.stats.readbacks++;
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (err) {
      await this.settle();
      this.checkErrors();
      throw err;
    }
    const copy = staging.getMappedRange().slice(0);
    staging.unmap();
    staging.destroy();
    await this.settle();
    this.checkErrors();
    return copy;
  }

  /** Throws the first GPU error raised so far and not yet thrown (see `Gpu.checkErrors`). */
  checkErrors(): void {
    if (this.#lost) throw this.#lost;
    if (this.#destroyed) throw new TypeError("this Gpu was destroyed");
    if (this.#errors.length > 0) {
      const [first] = this.#errors;
      this.#errors = [];
      throw first;
    }
  }

  /** Waits until every pending error scope has reported. */
  async settle(): Promise<void> {
    while (this.#pendingScopes.length > 0) {
      const pending = this.#pendingScopes;
      this.#pendingScopes = [];
      await Promise.all(pending);
    }
  }

  /** Drops recorded work not yet flushed and waits for the submitted work (unless lost). */
  async drain(): Promise<void> {
    this.#pass = null;
    this.#encoder = null;
    this.#tape = null;
    if (this.#lost) return;
    try {
      await this.device.queue.onSubmittedWorkDone();
      await this.settle();
    } catch {
      // a device lost meanwhile: nothing left to wait for
    }
  }

  /** Drops recorded work and the pipeline cache and destroys the uniform buffer. */
  destroy(): void {
    this.#destroyed = true;
    this.#pass = null;
    this.#encoder = null;
    this.#pipelines.clear();
    this.#groups.clear();
    this.#uniforms.destroy();
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

  /**
   * The open compute pass, or a new one; while profiling, a new pass for `kernel`'s dispatch
   * alone, with its timestamp writes (the caller ends it after the dispatch).
   */
  #openPass(kernel: KernelSpec): GPUComputePassEncoder {
    if (this.profiler !== null) {
      this.#endPass();
      const timestampWrites = this.profiler.next(kernel.name, kernel.family ?? kernel.name);
      this.#pass = this.#openEncoder().beginComputePass({ timestampWrites });
    }
    if (!this.#pass) this.#pass = this.#openEncoder().beginComputePass();
    return this.#pass;
  }

  #endPass(): void {
    if (this.#pass) {
      this.#pass.end();
      this.#pass = null;
    }
  }

  /** Bytes of the uniform buffer's slot for `size` bytes of params. */
  #slot(size: number): number {
    return Math.ceil(size / UNIFORM_ALIGN) * UNIFORM_ALIGN;
  }

  #uniform(params: ArrayBufferView | ArrayBuffer): GPUBufferBinding {
    const bytes = params instanceof ArrayBuffer
      ? new Uint8Array(params)
      : new Uint8Array(params.buffer, params.byteOffset, params.byteLength);
    const size = Math.max(16, Math.ceil(bytes.byteLength / 16) * 16);
    if (this.#uniformsUsed + size > UNIFORM_BYTES) this.flush();
    const offset = this.#uniformsUsed;
    this.#uniformsUsed = offset + this.#slot(size);
    this.#uniformsCpu.fill(0, offset, this.#uniformsUsed);
    this.#uniformsCpu.set(bytes, offset);
    return { buffer: this.#uniforms, offset, size };
  }
}
