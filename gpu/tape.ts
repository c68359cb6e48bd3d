/**
 * A recorded step (issue #15, section 1): the commands a training step encodes, kept so that the
 * next steps re-encode them without planning anything in JavaScript.
 *
 * Why it holds: buffers come from the pool (FIFO by creation), so a step that repeats binds the
 * same buffer ranges with the same pipelines, workgroup counts and params every time. A
 * {@linkcode Tape} keeps, in order, every dispatch's pipeline, bind group, dynamic uniform offset
 * and workgroup counts, every copy and clear, and the bytes of the uniform buffer the step packed
 * its params into (always from offset 0: capture and replay start on an empty uniform buffer).
 * Replaying is `setPipeline` / `setBindGroup` / `dispatchWorkgroups` per dispatch and one memcpy
 * of the params; the one `writeBuffer` of the uniform buffer per submit is the same as when the
 * step is recorded normally.
 *
 * What changes from step to step goes through *live* entries: a closure recorded at its place in
 * the tape and called again at every replay, where it plans and dispatches as usual (the batch's
 * indices and augmentation seed, dropout's seeds, the Inf/NaN watch's step mark, the optimizer's
 * learning rate and step count). They are a handful of dispatches per step, so the host cost of a
 * replay is the tape's length times ~1 µs plus a few normal dispatches; the alternative, every
 * per-step value in a GPU-side step-state buffer read by the kernels, would touch every kernel
 * with a per-step parameter (the data kernel, dropout, the optimizers, the finite watch) and save
 * only those few dispatches' planning. The uniform bytes of a live entry's dispatches are packed
 * after the tape's own, so they never overwrite the recorded ones.
 *
 * Lifetimes (the runtime's `endTape` / `dropTape`, `runtime.ts`): the scratch buffers the step
 * used (free in the pool when the capture ends) are claimed from the pool for the tape's lifetime
 * ({@linkcode Tape.pinned}), so nothing else is given them and its bind groups stay valid; the
 * buffers still handed out when it ends (parameters, optimizer state, the caller's tensors) are
 * watched, and the tape is dropped (invalid, its scratch given back) as soon as one of them
 * returns to the pool or is destroyed. A tape whose capture saw a submit (a write or read in the
 * middle of the step) or whose params fill more than half of the uniform buffer is not kept.
 *
 * @module
 */

import type { KernelSpec } from "./kernel.ts";

/** {@linkcode TapeOp} kind: a dispatch. */
export const TAPE_DISPATCH = 0;
/** {@linkcode TapeOp} kind: a copy between buffers. */
export const TAPE_COPY = 1;
/** {@linkcode TapeOp} kind: a zero fill. */
export const TAPE_CLEAR = 2;
/** {@linkcode TapeOp} kind: a live entry (planned and recorded again at every replay). */
export const TAPE_LIVE = 3;

/** One recorded command, in order. */
export type TapeOp =
  | {
    readonly kind: typeof TAPE_DISPATCH;
    /** The kernel (its name, for error reports and profiles). */
    readonly kernel: KernelSpec;
    readonly pipeline: GPUComputePipeline;
    readonly group: GPUBindGroup;
    /** The params' dynamic offset into the uniform buffer; -1 without one. */
    readonly offset: number;
    readonly x: number;
    readonly y: number;
    readonly z: number;
  }
  | {
    readonly kind: typeof TAPE_COPY;
    readonly src: GPUBuffer;
    readonly srcOffset: number;
    readonly dst: GPUBuffer;
    readonly dstOffset: number;
    readonly bytes: number;
  }
  | {
    readonly kind: typeof TAPE_CLEAR;
    readonly buffer: GPUBuffer;
    readonly offset: number;
    readonly bytes: number;
  }
  | {
    readonly kind: typeof TAPE_LIVE;
    /** Plans and records again, at every replay, what it recorded during the capture. */
    readonly run: () => void;
  };

const EMPTY = new Uint8Array(0);

/**
 * A step's commands as recorded once (see the module doc); made by the runtime's `beginTape` /
 * `endTape`, replayed by its `replay`.
 *
 * @example
 * ```ts
 * import { Tape } from "./tape.ts";
 * const tape = new Tape();
 * console.log(tape.valid, tape.dispatches); // true 0
 * ```
 */
export class Tape {
  /** The commands, in order. */
  readonly ops: TapeOp[] = [];
  /** Every buffer that a recorded (not live) command binds, copies or clears. */
  readonly buffers: Set<GPUBuffer> = new Set();
  /** The names of the recorded dispatches' kernels (for GPU error reports). */
  readonly kernels: Set<string> = new Set();
  /** The scratch buffers claimed from the pool for the tape's lifetime. */
  readonly pinned: GPUBuffer[] = [];
  /** The uniform buffer's bytes `[0, n)` as the step packed them. */
  uniforms: Uint8Array = EMPTY;
  /** Recorded (not live) dispatches. */
  dispatches = 0;
  /** Recorded clears. */
  clears = 0;
  /** Live entries. */
  lives = 0;
  #valid = true;

  /**
   * Whether it may be replayed (false once dropped: a buffer it binds was released or destroyed,
   * or its owner dropped it).
   *
   * @example
   * ```ts
   * import { Tape } from "./tape.ts";
   * const tape = new Tape();
   * tape.invalidate();
   * console.log(tape.valid); // false
   * ```
   */
  get valid(): boolean {
    return this.#valid;
  }

  /**
   * Marks it dropped (the runtime gives its pinned buffers back).
   *
   * @example
   * ```ts
   * import { Tape } from "./tape.ts";
   * new Tape().invalidate();
   * ```
   */
  invalidate(): void {
    this.#valid = false;
  }

  /**
   * Appends a dispatch (`offset` -1 without a dynamic uniform offset) that binds `storage`.
   *
   * @example
   * ```ts
   * import { Tape } from "./tape.ts";
   * const device = await (await navigator.gpu.requestAdapter())!.requestDevice();
   * const module = device.createShaderModule({ code: "@compute @workgroup_size(1) fn main() {}" });
   * const pipeline = device.createComputePipeline({ layout: "auto", compute: { module } });
   * const layout = device.createBindGroupLayout({ entries: [] });
   * const group = device.createBindGroup({ layout, entries: [] });
   * const tape = new Tape();
   * const kernel = { name: "noop", code: "" };
   * tape.dispatch(kernel, { pipeline, group, offset: -1, workgroups: [1, 1, 1] }, []);
   * console.log(tape.dispatches); // 1
   * ```
   */
  dispatch(
    kernel: KernelSpec,
    cmd: {
      pipeline: GPUComputePipeline;
      group: GPUBindGroup;
      offset: number;
      workgroups: readonly [number, number, number];
    },
    storage: readonly GPUBufferBinding[],
  ): void {
    const [x, y, z] = cmd.workgroups;
    const { pipeline, group, offset } = cmd;
    this.ops.push({ kind: TAPE_DISPATCH, kernel, pipeline, group, offset, x, y, z });
    for (const r of storage) this.buffers.add(r.buffer);
    this.kernels.add(kernel.name);
    this.dispatches++;
  }

  /**
   * Appends a copy between two buffers.
   *
   * @example
   * ```ts
   * import { Tape } from "./tape.ts";
   * const device = await (await navigator.gpu.requestAdapter())!.requestDevice();
   * const usage = GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
   * const [a, b] = [0, 1].map(() => device.createBuffer({ size: 16, usage }));
   * new Tape().copy(a, 0, b, 0, 16);
   * ```
   */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.ops.push({ kind: TAPE_COPY, src, srcOffset, dst, dstOffset, bytes });
    this.buffers.add(src).add(dst);
  }

  /**
   * Appends a zero fill of a byte range.
   *
   * @example
   * ```ts
   * import { Tape } from "./tape.ts";
   * const device = await (await navigator.gpu.requestAdapter())!.requestDevice();
   * const buffer = device.createBuffer({ size: 16, usage: GPUBufferUsage.COPY_DST });
   * new Tape().clear(buffer, 0, 16);
   * ```
   */
  clear(buffer: GPUBuffer, offset: number, bytes: number): void {
    this.ops.push({ kind: TAPE_CLEAR, buffer, offset, bytes });
    this.buffers.add(buffer);
    this.clears++;
  }

  /**
   * Appends a live entry: `run` is called again at every replay, at this place.
   *
   * @example
   * ```ts
   * import { Tape } from "./tape.ts";
   * const tape = new Tape();
   * tape.live(() => {});
   * console.log(tape.lives); // 1
   * ```
   */
  live(run: () => void): void {
    this.ops.push({ kind: TAPE_LIVE, run });
    this.lives++;
  }
}
