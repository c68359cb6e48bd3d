/**
 * The shapes of pooling: the parameters of a windowed pooling ({@linkcode Pool2dParams}) and of a
 * global average pooling ({@linkcode GlobalPoolParams}), their validation, and the resolved
 * window ({@linkcode poolWindow}) the planner and the kernels read.
 *
 * Output size: `oh = floor((h + 2 * ph - kh) / sh) + 1` (and the same for the width), PyTorch's
 * `ceil_mode=False`.
 *
 * @module
 */

import { assertShape, type Shape, type Tensor } from "../../gpu/mod.ts";
import {
  checkPositiveInts,
  type PlaneWindow,
  planeWindow,
  window2d,
  type Window2dParams,
} from "../_geometry.ts";

/**
 * Dimensions and hyper-parameters of a 2-D pooling: the window without dilation (stride the
 * kernel size by default; implicit padding, `-inf` for max and zeros for average, default 0 and
 * at most half the kernel) and the sizes.
 */
export interface Pool2dParams extends Omit<Window2dParams, "dilation"> {
  /** Batch size. */
  readonly n: number;
  /** Channels. */
  readonly c: number;
  /** Input height. */
  readonly h: number;
  /** Input width. */
  readonly w: number;
}

/** Dimensions of a global average pooling. */
export interface GlobalPoolParams {
  /** Batch size. */
  readonly n: number;
  /** Channels. */
  readonly c: number;
  /** Input height. */
  readonly h: number;
  /** Input width. */
  readonly w: number;
}

/**
 * Validates the sizes of a pooling (positive integers), naming `op`.
 *
 * @throws {RangeError} for a size that is not a positive integer.
 * @example
 * ```ts
 * import { checkPoolDims } from "./geometry.ts";
 * checkPoolDims("globalAvgPoolForward", { n: 8, c: 512, h: 3, w: 3 });
 * ```
 */
export function checkPoolDims(op: string, p: GlobalPoolParams): void {
  checkPositiveInts(op, p, ["n", "c", "h", "w"]);
}

/**
 * The window and sizes of a pooling, validated (naming `op`).
 *
 * @returns The window with its sizes and output size.
 * @throws {RangeError} for non-integer or out-of-range sizes, padding larger than half the kernel
 * (as PyTorch), or an output smaller than 1x1.
 * @example
 * ```ts
 * import { poolWindow } from "./geometry.ts";
 * poolWindow("maxPool2dForward", { n: 8, c: 96, h: 54, w: 54, kernel: 3, stride: 2 }).oh; // 26
 * ```
 */
export function poolWindow(op: string, p: Pool2dParams): PlaneWindow {
  checkPoolDims(op, p);
  const { kernel, stride, padding } = p;
  const win = window2d(op, { kernel, stride, padding }, { stride: "kernel" });
  const { kh, kw, ph, pw } = win;
  if (ph > Math.floor(kh / 2) || pw > Math.floor(kw / 2)) {
    throw new RangeError(
      `${op}: padding [${ph}, ${pw}] must be at most half of the kernel size [${kh}, ${kw}]`,
    );
  }
  return planeWindow(op, p, win);
}

/**
 * Validates pooling parameters and returns the output shape `[n, c, oh, ow]`.
 *
 * @throws {RangeError} for non-integer or out-of-range sizes, padding larger than half the kernel
 * (as PyTorch), or an output smaller than 1x1.
 * @example
 * ```ts
 * import { checkPool2d } from "@modern-cnn/webgpu/kernels";
 * checkPool2d({ n: 8, c: 96, h: 54, w: 54, kernel: 3, stride: 2 }); // [8, 96, 26, 26]
 * ```
 */
export function checkPool2d(p: Pool2dParams): Shape {
  const r = poolWindow("pool2d", p);
  return [r.n, r.c, r.oh, r.ow];
}

/**
 * Checks that `t` is an i32 tensor of shape `expected` (argmax indices), naming `op` and `name`.
 *
 * @throws {TypeError} for another shape or dtype.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { checkI32 } from "./geometry.ts";
 * const gpu = await getGpu();
 * checkI32("maxPool2dForward", "argmax", gpu.zeros([2, 3], { dtype: "i32" }), [2, 3]);
 * ```
 */
export function checkI32(op: string, name: string, t: Tensor, expected: Shape): void {
  assertShape(op, name, t.shape, expected);
  if (t.dtype !== "i32") throw new TypeError(`${op}: ${name} must be i32, got ${t}`);
}
