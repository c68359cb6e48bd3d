/**
 * A model's parameters in arenas: the f32 values, their gradients, the SGD momentum and the f16
 * working copies each live in one buffer, and every parameter's tensors (`Param.value`, `grad`,
 * `momentum`, `half`) are views into them. Work that treats every parameter alike is then one
 * clear or one dispatch for the whole model, as in llm.c: zeroing the gradients
 * ({@linkcode ParamArena.zeroGrad}), the SGD update (`sgdUpdate` over the arenas), the f16 copies
 * ({@linkcode ParamArena.syncHalves}) and the Inf/NaN checks (`finiteCheck`, `lossScaleCheck`).
 *
 * Layout: the parameters in state-dict order, each from an element offset that is a multiple of
 * {@linkcode arenaQuantum} (so that its f32 view and its f16 view both start at a multiple of
 * the device's `minStorageBufferOffsetAlignment`), the gaps between them zero. Every arena has
 * the same layout: element `i` of the values, gradients, momentum and copies belong together.
 * The padding stays zero: it starts zero, clearing keeps it so, and every elementwise operation
 * over the arenas (the SGD update with weight decay and momentum, the copies) maps zeros to
 * zeros; kernels that write one parameter's gradient write inside its view.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/mod.ts";
import { cast } from "../kernels/elementwise.ts";
import type { Param } from "../layers/mod.ts";

/** Where one parameter lives in the arenas. */
export interface ArenaSlot {
  /** The state-dict name. */
  readonly name: string;
  /** The parameter. */
  readonly param: Param;
  /** First element (a multiple of {@linkcode arenaQuantum}). */
  readonly offset: number;
  /** Elements. */
  readonly size: number;
}

/**
 * The element offsets at which parameters may start: a multiple of the device's
 * `minStorageBufferOffsetAlignment` bytes in f16 (hence in f32) and of 4 elements (whole vec4s).
 *
 * @returns Elements (128 for an alignment of 256 bytes).
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { arenaQuantum } from "./arena.ts";
 * arenaQuantum(await getGpu()); // 128 on most devices
 * ```
 */
export function arenaQuantum(gpu: Gpu): number {
  return Math.max(4, gpu.limits.minStorageBufferOffsetAlignment / 2);
}

/**
 * Places parameters one after another, each from a multiple of `quantum` elements.
 *
 * @returns The slots in order, and the arena's size in elements (a multiple of `quantum`).
 * @example
 * ```ts
 * import { param } from "@modern-cnn/webgpu/layers";
 * import { arenaLayout } from "./arena.ts";
 * const w = param("weight", [3, 5], { init: "zeros", fanIn: 5, fanOut: 3 });
 * const b = param("bias", [3], { init: "zeros", fanIn: 5, fanOut: 3 });
 * arenaLayout([["0.weight", w], ["0.bias", b]], 128).size; // 256 (offsets 0 and 128)
 * ```
 */
export function arenaLayout(
  params: readonly (readonly [string, Param])[],
  quantum: number,
): { slots: ArenaSlot[]; size: number } {
  const slots: ArenaSlot[] = [];
  let size = 0;
  for (const [name, param] of params) {
    const n = param.shape.reduce((a, b) => a * b, 1);
    slots.push({ name, param, offset: size, size: n });
    size += Math.ceil(n / quantum) * quantum;
  }
  return { slots, size: Math.max(size, quantum) };
}

/** Adam's state over an arena: the first and second moments, laid out as the values. */
export interface AdamMoments {
  /** `exp_avg`. */
  readonly expAvg: Tensor<"f32">;
  /** `exp_avg_sq`. */
  readonly expAvgSq: Tensor<"f32">;
}

/**
 * The arenas of a set of parameters (a model's). Creating it points every parameter's `value`
 * and `grad` at its views (the values from `initial`, the gradients zero); momentum and f16
 * copies are added on demand.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { param } from "@modern-cnn/webgpu/layers";
 * import { ParamArena } from "@modern-cnn/webgpu/models";
 * const gpu = await getGpu();
 * const w = param("weight", [2, 3], { init: "ones", fanIn: 3, fanOut: 2 });
 * const initial = () => new Float32Array(6).fill(1);
 * const arena = new ParamArena(gpu, [["weight", w]], { initial });
 * arena.zeroGrad(); // one clear, whatever the number of parameters
 * console.log(await w.value!.toArray()); // Float32Array(6) [1, 1, 1, 1, 1, 1]
 * arena.dispose();
 * ```
 */
export class ParamArena {
  /** The runtime. */
  readonly gpu: Gpu;
  /** Every parameter's place, in order. */
  readonly slots: readonly ArenaSlot[];
  /** Elements of each arena (parameters and padding). */
  readonly size: number;
  /** The f32 values (`Param.value` views). */
  readonly values: Tensor<"f32">;
  /** The f32 gradients (`Param.grad` views). */
  readonly grads: Tensor<"f32">;
  #momentum: Tensor<"f32"> | null = null;
  #adam: AdamMoments | null = null;
  #halves: Tensor<"f16"> | null = null;
  /** The views handed out, per arena, to dispose with it. */
  #views = new Map<Tensor, Tensor[]>();
  #disposed = false;

  /**
   * Lays the parameters out, allocates the values and gradients and points each parameter's
   * `value` and `grad` at its views (disposing the tensors they held). `initial` gives each
   * parameter's values (in slot order; default zeros): one upload for the whole arena.
   *
   * @throws {RangeError} when the arena is larger than one buffer may be (`maxBufferSize`).
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { param } from "@modern-cnn/webgpu/layers";
   * import { ParamArena } from "@modern-cnn/webgpu/models";
   * const b = param("bias", [5], { init: "zeros", fanIn: 1, fanOut: 5 });
   * const arena = new ParamArena(await getGpu(), [["bias", b]]);
   * console.log(arena.size); // 128 on most devices
   * ```
   */
  constructor(
    gpu: Gpu,
    params: readonly (readonly [string, Param])[],
    options: { initial?: (param: Param) => Float32Array } = {},
  ) {
    this.gpu = gpu;
    const { slots, size } = arenaLayout(params, arenaQuantum(gpu));
    this.slots = slots;
    this.size = size;
    if (size * 4 > gpu.limits.maxBufferSize) {
      throw new RangeError(
        `ParamArena: ${size} parameters (${size * 4} bytes) do not fit one buffer ` +
          `(maxBufferSize ${gpu.limits.maxBufferSize} bytes)`,
      );
    }
    const init = new Float32Array(size);
    if (options.initial) {
      for (const s of slots) init.set(options.initial(s.param).subarray(0, s.size), s.offset);
    }
    this.values = gpu.tensor(init, { shape: [size] });
    this.grads = gpu.zeros([size]);
    for (const s of slots) {
      s.param.value?.dispose();
      s.param.grad?.dispose();
      s.param.value = this.#view(this.values, s);
      s.param.grad = this.#view(this.grads, s);
    }
  }

  /**
   * The SGD momentum buffers (`Param.momentum` views), or null before
   * {@linkcode ParamArena.ensureMomentum}.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * createModel(await getGpu(), { name: "lenet" }).arena.momentum; // null
   * ```
   */
  get momentum(): Tensor<"f32"> | null {
    return this.#momentum;
  }

  /**
   * The f16 working copies (`Param.half` views, on the parameters chosen by
   * {@linkcode ParamArena.enableHalves}), or null.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * createModel(await getGpu(), { name: "lenet" }).arena.halves; // null in f32
   * ```
   */
  get halves(): Tensor<"f16"> | null {
    return this.#halves;
  }

  /**
   * The momentum arena, created zero-filled on first use (every parameter's `momentum` then
   * views it; a `momentum` tensor a parameter already had is copied in and disposed). Call it
   * outside a `gpu.scope`: the arena lives as long as the parameters.
   *
   * @returns The momentum arena.
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * const m = createModel(await getGpu(), { name: "lenet" });
   * m.arena.ensureMomentum();
   * console.log(m.params[0][1].momentum!.shape); // [6, 1, 5, 5]
   * ```
   */
  ensureMomentum(): Tensor<"f32"> {
    this.#assertLive("ensureMomentum");
    if (this.#momentum) return this.#momentum;
    const m = this.gpu.zeros([this.size]);
    this.#momentum = m;
    for (const s of this.slots) {
      const old = s.param.momentum;
      s.param.momentum = this.#view(m, s);
      // A buffer set by hand (a restored optimizer state, say) is adopted: copied in, then freed.
      if (old) {
        this.gpu.copy(old, s.param.momentum);
        old.dispose();
      }
    }
    return m;
  }

  /**
   * Adam's and AdamW's moments (`exp_avg`, `exp_avg_sq`), or null before
   * {@linkcode ParamArena.ensureAdamMoments}.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * createModel(await getGpu(), { name: "lenet" }).arena.adamMoments; // null
   * ```
   */
  get adamMoments(): AdamMoments | null {
    return this.#adam;
  }

  /**
   * Adam's moment arenas (`exp_avg`, `exp_avg_sq`, laid out as the values: parameter `s` at
   * `slots[s].offset`), created zero-filled on first use (PyTorch's lazily created state). Call
   * it outside a `gpu.scope`: the arenas live as long as the parameters.
   *
   * @returns The two arenas.
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * const m = createModel(await getGpu(), { name: "lenet" });
   * console.log(m.arena.ensureAdamMoments().expAvg.size === m.arena.size); // true
   * ```
   */
  ensureAdamMoments(): AdamMoments {
    this.#assertLive("ensureAdamMoments");
    this.#adam ??= { expAvg: this.gpu.zeros([this.size]), expAvgSq: this.gpu.zeros([this.size]) };
    return this.#adam;
  }

  /**
   * Creates the f16 copies (if there are none) and points `half` of the parameters `which`
   * accepts at their views (the others' `half` is null; their copies are written but unused),
   * then writes every copy from the values ({@linkcode ParamArena.syncHalves}).
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * const gpu = await getGpu();
   * const m = createModel(gpu, { name: "lenet" });
   * if (gpu.features.f16) m.arena.enableHalves((p) => p.shape.length >= 2);
   * ```
   */
  enableHalves(which: (param: Param) => boolean): void {
    this.#assertLive("enableHalves");
    this.#halves ??= this.gpu.empty([this.size], { dtype: "f16" });
    const h = this.#halves;
    for (const s of this.slots) {
      const want = which(s.param);
      const ours = this.#views.get(h)?.includes(s.param.half!) ?? false;
      if (s.param.half && (!want || !ours)) {
        s.param.half.dispose();
        s.param.half = null;
      }
      if (want && !s.param.half) s.param.half = this.#view(h, s);
    }
    this.syncHalves();
  }

  /**
   * Frees the f16 copies; every parameter's `half` becomes null.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * createModel(await getGpu(), { name: "lenet" }).arena.disableHalves();
   * ```
   */
  disableHalves(): void {
    if (!this.#halves) return;
    this.#release(this.#halves, "half");
    this.#halves = null;
  }

  /**
   * Records zero-filling of every gradient: one clear.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * createModel(await getGpu(), { name: "lenet" }).arena.zeroGrad();
   * ```
   */
  zeroGrad(): void {
    this.#assertLive("zeroGrad");
    this.gpu.clear(this.grads);
  }

  /**
   * Records the rewrite of every f16 copy from the f32 values: one cast (none without copies).
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * createModel(await getGpu(), { name: "lenet" }).arena.syncHalves();
   * ```
   */
  syncHalves(): void {
    this.#assertLive("syncHalves");
    if (this.#halves) cast({ y: this.#halves, x: this.values });
  }

  /**
   * Frees the arenas and their views; the parameters that still point at them get null tensors.
   * Idempotent.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * createModel(await getGpu(), { name: "lenet" }).arena.dispose();
   * ```
   */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#release(this.values, "value");
    this.#release(this.grads, "grad");
    if (this.#momentum) this.#release(this.#momentum, "momentum");
    if (this.#halves) this.#release(this.#halves, "half");
    this.#adam?.expAvg.dispose();
    this.#adam?.expAvgSq.dispose();
    this.#momentum = this.#halves = this.#adam = null;
  }

  #view<D extends "f32" | "f16">(arena: Tensor<D>, s: ArenaSlot): Tensor<D> {
    const v = arena.slice(s.offset, s.size, s.param.shape);
    let list = this.#views.get(arena);
    if (!list) this.#views.set(arena, list = []);
    list.push(v);
    return v;
  }

  /** Disposes an arena and its views, nulling the parameter fields that still hold them. */
  #release(arena: Tensor, field: "value" | "grad" | "momentum" | "half"): void {
    const views = this.#views.get(arena) ?? [];
    for (const s of this.slots) {
      const t = s.param[field];
      if (t && views.includes(t)) s.param[field] = null;
    }
    for (const v of views) v.dispose();
    this.#views.delete(arena);
    arena.dispose();
  }

  #assertLive(op: string): void {
    if (this.#disposed) throw new TypeError(`ParamArena.${op}: the arena was disposed`);
  }
}
