/**
 * Planning a pooling: {@linkcode planPool2d} and {@linkcode planGlobalAvgPool} turn a pooling's
 * sizes and an adapter's profile into a plain value that says how the runner (`index.ts`)
 * records it: the ranges of whole planes dispatched one at a time (tensors larger than one
 * storage binding, e.g. AlexNet's first activation at batch 128, are processed in ranges), the
 * gather blocks of the backward pass, and how a global average splits long planes (llvmpipe's
 * silent cap of 65535 loop iterations per invocation). Pure: the same inputs give the same plan.
 *
 * @module
 */

import type { AdapterProfile } from "../_adapter.ts";
import { LOOP_BUDGET, splitUnits } from "../_binding.ts";
import type { PlaneWindow } from "../_geometry.ts";
import type { GlobalPoolParams } from "./geometry.ts";

/** Threads per workgroup of every pooling kernel. */
export const WG = 64;

/** Most elements of a plane summed by one thread of the global average pool forward. */
export const GLOBAL_SEGMENT = LOOP_BUDGET;

/** A pooling to plan: its window and sizes, and the calling function (named in errors). */
export interface Pool2dProblem {
  /** The calling function, e.g. `maxPool2dForward`. */
  readonly op: string;
  /** The window and sizes (`poolWindow`). */
  readonly window: PlaneWindow;
}

/** How a windowed pooling (forward or backward) is recorded. */
export interface Pool2dPlan {
  /** The window and sizes. */
  readonly window: PlaneWindow;
  /**
   * Ranges `[first, end)` of planes, one dispatch each: each range's input planes (`h x w`) and
   * output planes (`oh x ow`) fit one binding.
   */
  readonly ranges: readonly (readonly [number, number])[];
  /** Backward: the gather blocks of `sh x sw` inputs per plane column (`ceil(h / sh)`). */
  readonly hb: number;
  /** Backward: the gather blocks per plane row (`ceil(w / sw)`). */
  readonly wb: number;
}

/**
 * Plans a max or average pooling's forward or backward pass (both are recorded over the same
 * ranges of planes).
 *
 * @param limit The most elements one binding may span (default: the profile's limit; runners
 * pass `bindingLimit(gpu)`, which tests may lower).
 * @returns The plan.
 * @throws {RangeError} when one plane does not fit a binding.
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { poolWindow } from "./geometry.ts";
 * import { planPool2d } from "./plan.ts";
 * const op = "maxPool2dForward";
 * const window = poolWindow(op, { n: 128, c: 96, h: 54, w: 54, kernel: 3, stride: 2 });
 * planPool2d({ op, window }, WEBGPU_DEFAULT_PROFILE).ranges.length; // 2
 * ```
 */
export function planPool2d(
  problem: Pool2dProblem,
  profile: AdapterProfile,
  limit?: number,
): Pool2dPlan {
  const r = problem.window;
  const perUnit = Math.max(r.h * r.w, r.oh * r.ow);
  return {
    window: r,
    ranges: splitUnits(problem.op, profile, { units: r.n * r.c, perUnit, limit }),
    hb: Math.ceil(r.h / r.sh),
    wb: Math.ceil(r.w / r.sw),
  };
}

/** A global average pooling to plan. */
export interface GlobalPoolProblem {
  /** The calling function, e.g. `globalAvgPoolForward`. */
  readonly op: string;
  /** The sizes. */
  readonly dims: GlobalPoolParams;
}

/** How a global average pooling (forward or backward) is recorded. */
export interface GlobalPoolPlan {
  /** Planes (`n * c`). */
  readonly planes: number;
  /** Elements of a plane (`h * w`). */
  readonly hw: number;
  /**
   * Forward: segments per plane, each summed by one thread (at most {@linkcode GLOBAL_SEGMENT}
   * elements); with more than one, a second pass adds the f32 partial sums.
   */
  readonly splits: number;
  /** Forward: elements per segment (the last may be shorter). */
  readonly seg: number;
  /** Ranges `[first, end)` of planes, one dispatch each, whose planes fit one binding. */
  readonly ranges: readonly (readonly [number, number])[];
}

/**
 * Plans a global average pooling's forward or backward pass.
 *
 * @param limit The most elements one binding may span (default: the profile's limit).
 * @returns The plan.
 * @throws {RangeError} when one plane does not fit a binding.
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { planGlobalAvgPool } from "./plan.ts";
 * const dims = { n: 2, c: 8, h: 200, w: 200 };
 * planGlobalAvgPool({ op: "globalAvgPoolForward", dims }, WEBGPU_DEFAULT_PROFILE).splits; // 3
 * ```
 */
export function planGlobalAvgPool(
  problem: GlobalPoolProblem,
  profile: AdapterProfile,
  limit?: number,
): GlobalPoolPlan {
  const { n, c, h, w } = problem.dims;
  const hw = h * w;
  const splits = Math.ceil(hw / GLOBAL_SEGMENT);
  return {
    planes: n * c,
    hw,
    splits,
    seg: Math.ceil(hw / splits),
    ranges: splitUnits(problem.op, profile, { units: n * c, perUnit: hw, limit }),
  };
}
