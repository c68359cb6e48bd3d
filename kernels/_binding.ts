/**
 * The binding primitives of the kernels, and the limits every kernel must respect:
 *
 * - **Storage bindings**: no binding may exceed the device's `maxStorageBufferBindingSize`
 *   (128 MiB on llvmpipe) although tensors may be larger (up to `maxBufferSize`). Kernels bind
 *   ranges of tensors ({@linkcode bindingRange}, a {@linkcode TensorRange}); kernels over large
 *   tensors dispatch once per range of whole units (samples, planes, rows, see
 *   {@linkcode unitRanges}), so that no range exceeds {@linkcode bindingLimit} elements.
 * - **Loop budget**: llvmpipe (gallivm) silently stops the loops of one shader invocation after
 *   65535 iterations in total. Measured: every pass through a loop header counts (the final
 *   failing test included), summed over all loops of the invocation, nested and sequential
 *   alike; loops with a small constant trip count (8) are unrolled and do not count, larger
 *   constant ones (64) do. Kernels keep each invocation's loop count, every loop counted, under
 *   {@linkcode LOOP_BUDGET} by splitting long reductions (or under {@linkcode LOOP_CAP} when the
 *   host counts every pass exactly).
 *
 * A leaf of the kernels' module graph (it imports only `gpu/`, `_adapter.ts` and `_dtype.ts`), so
 * every kernel file can import it without an import cycle. Private to `kernels/`: not re-exported
 * by the package.
 *
 * @module
 */

import type { Binding, Gpu, Tensor } from "../gpu/mod.ts";
import { bindingElements } from "./_adapter.ts";
import { floatBytes } from "./_dtype.ts";

/**
 * A range of a tensor's elements to bind: the binding starts at a byte offset aligned to the
 * device's `minStorageBufferOffsetAlignment`, and `base` is the element offset of the range
 * inside the binding. Lets kernels work on slices of tensors larger than one binding may be.
 */
export interface TensorRange {
  /** What to bind. */
  readonly binding: Binding;
  /** Element offset of the range's first element inside the binding. */
  readonly base: number;
  /** Elements in the range. */
  readonly count: number;
  /** The tensor. */
  readonly tensor: Tensor;
}

/**
 * The binding of elements `[offset, offset + count)` of `t` (see {@linkcode TensorRange}).
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { bindingRange } from "./_binding.ts";
 * const gpu = await getGpu();
 * const r = bindingRange(gpu.zeros([1000]), 100, 50); // r.base === 36 (binding starts at byte 256)
 * ```
 */
export function bindingRange(t: Tensor, offset: number, count: number): TensorRange {
  const align = t.gpu.limits.minStorageBufferOffsetAlignment;
  // 4-byte words for u8, i32 and u32 tensors (u8 ones are bound whole, offset 0).
  const bytes = t.dtype === "f32" || t.dtype === "f16" ? floatBytes(t.dtype) : 4;
  // Byte offsets from the tensor's first byte (itself aligned: a view's byteOffset is).
  const startByte = Math.floor((offset * bytes) / align) * align;
  const endByte = Math.min(t.capacity, Math.ceil(((offset + count) * bytes) / 16) * 16);
  const size = Math.max(16, endByte - startByte);
  return {
    binding: {
      buffer: t.buffer,
      offset: t.byteOffset + startByte,
      size: Math.min(size, t.capacity - startByte),
    },
    base: offset - startByte / bytes,
    count,
    tensor: t,
  };
}

/**
 * What {@linkcode maxBindingElements} reads: a `Gpu`, or an `AdapterProfile` (pure planners).
 */
export interface BindingLimitsOf {
  /** The binding limits. */
  readonly limits: {
    readonly maxStorageBufferBindingSize: number;
    readonly minStorageBufferOffsetAlignment: number;
  };
}

/**
 * The most f32 elements one storage binding may span on this device (a `Gpu`, or the limits of
 * an `AdapterProfile`), less one alignment unit (so that a range starting anywhere still fits).
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { maxBindingElements } from "./_binding.ts";
 * const gpu = await getGpu();
 * maxBindingElements(gpu); // e.g. 33554368 on llvmpipe (128 MiB)
 * ```
 */
export function maxBindingElements(gpu: BindingLimitsOf): number {
  return bindingElements(gpu.limits);
}

/**
 * The most loop iterations (all loops together) one invocation of a kernel may run: a quarter
 * of llvmpipe's silent cap of 65535, leaving room for the loop bookkeeping of each kernel.
 */
export const LOOP_BUDGET = 16384;

/**
 * The most loop iterations one invocation may run when the host counts every pass of every loop
 * exactly (col2im and the direct convolutions plan their work with it): just under llvmpipe's
 * cap of 65535, past which the rest is silently skipped.
 */
export const LOOP_CAP = 60000;

let testLimit: number | undefined;

/**
 * The most f32 (or other 4-byte) elements one range of a tensor may span in one binding: the
 * device's limit (`maxBindingElements`), or a smaller one set by tests.
 *
 * @example
 * ```ts
 * import { getGpu } from "../gpu/mod.ts";
 * import { bindingLimit } from "./_binding.ts";
 * const gpu = await getGpu();
 * bindingLimit(gpu); // 33554368 on llvmpipe (128 MiB less one alignment unit)
 * ```
 */
export function bindingLimit(gpu: Gpu): number {
  const device = maxBindingElements(gpu);
  return testLimit === undefined ? device : Math.min(device, testLimit);
}

/**
 * Tests only: lowers {@linkcode bindingLimit} to `elements` (or restores the device's limit with
 * `undefined`), so that the range splitting of every kernel can be checked on small tensors.
 *
 * @example
 * ```ts
 * import { setBindingLimitForTests } from "./_binding.ts";
 * setBindingLimitForTests(1000);
 * // ... run kernels: every binding now spans at most ~1000 elements ...
 * setBindingLimitForTests(undefined);
 * ```
 */
export function setBindingLimitForTests(elements: number | undefined): void {
  if (elements !== undefined && (!Number.isInteger(elements) || elements < 64)) {
    throw new RangeError(`setBindingLimitForTests: expected an integer >= 64, got ${elements}`);
  }
  testLimit = elements;
}

/** What {@linkcode splitUnits} splits: units of work and what one range of them may hold. */
export interface UnitSplit {
  /** Consecutive units of work (samples, planes, rows). */
  readonly units: number;
  /** Elements per unit of the largest tensor. */
  readonly perUnit: number;
  /** Range starts are multiples of `quantum` units (default 1). */
  readonly quantum?: number;
  /** Most units per range (default unlimited), e.g. to respect the workgroup count limit. */
  readonly maxUnits?: number;
  /**
   * Most elements one binding may span: default `maxBindingElements(of)`; runners pass
   * {@linkcode bindingLimit} (which tests may lower).
   */
  readonly limit?: number;
}

/**
 * {@linkcode unitRanges} for pure planners: splits `s.units` units of `s.perUnit` elements into
 * ranges `[u0, u1)` that each fit one binding of `of` (an `AdapterProfile` or a `Gpu`) under
 * `s.limit` elements.
 *
 * @returns The ranges in order (none when `units` is 0).
 * @throws {RangeError} when `quantum` units alone exceed one binding, naming `op`.
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "./_adapter.ts";
 * import { splitUnits } from "./_binding.ts";
 * splitUnits("maxPool2dForward", WEBGPU_DEFAULT_PROFILE, { units: 128 * 96, perUnit: 54 * 54 }).length; // 2
 * ```
 */
export function splitUnits(op: string, of: BindingLimitsOf, s: UnitSplit): [number, number][] {
  const { units, perUnit, quantum = 1, maxUnits = Infinity } = s;
  const limit = s.limit ?? maxBindingElements(of);
  let per = Math.min(Math.floor(limit / Math.max(1, perUnit)), maxUnits);
  per = Math.floor(per / quantum) * quantum;
  if (per < 1) {
    throw new RangeError(
      `${op}: ${quantum} unit(s) of ${perUnit} elements (${quantum * perUnit * 4} bytes) do not ` +
        `fit one storage binding (maxStorageBufferBindingSize ` +
        `${of.limits.maxStorageBufferBindingSize} bytes)`,
    );
  }
  const out: [number, number][] = [];
  for (let u0 = 0; u0 < units; u0 += per) out.push([u0, Math.min(u0 + per, units)]);
  return out;
}

/**
 * Splits `units` consecutive units of work (samples, planes, rows), whose largest tensor takes
 * `perUnit` elements per unit, into ranges `[u0, u1)` that each fit one binding (and hold at
 * most `maxUnits` units, e.g. to respect the workgroup count limit). Range starts are multiples
 * of `quantum` units. {@linkcode splitUnits} under this device's {@linkcode bindingLimit}.
 *
 * @returns The ranges in order (none when `units` is 0).
 * @throws {RangeError} when `quantum` units alone exceed one binding, naming `op`.
 * @example
 * ```ts
 * import { getGpu } from "../gpu/mod.ts";
 * import { unitRanges } from "./_binding.ts";
 * const gpu = await getGpu();
 * unitRanges("maxPool2dForward", gpu, 128 * 96, 54 * 54); // two ranges of planes on llvmpipe
 * ```
 */
export function unitRanges(
  op: string,
  gpu: Gpu,
  units: number,
  perUnit: number,
  quantum = 1,
  maxUnits = Infinity,
): [number, number][] {
  return splitUnits(op, gpu, { units, perUnit, quantum, maxUnits, limit: bindingLimit(gpu) });
}
