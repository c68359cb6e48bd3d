/**
 * The shape of a depthwise convolution: its parameters ({@linkcode DepthwiseParams}), their
 * validation and the resolved window ({@linkcode depthwiseWindow}) the planner and the kernels
 * read. Weights are `[c, 1, kh, kw]`, input `[n, c, h, w]`, output `[n, c, oh, ow]` with
 * `oh = floor((h + 2 * ph - dh * (kh - 1) - 1) / sh) + 1` (and the same for the width), exactly
 * as PyTorch.
 *
 * @module
 */

import type { Shape } from "../../gpu/mod.ts";
import {
  checkPositiveInts,
  type PlaneWindow,
  planeWindow,
  window2d,
  type Window2dParams,
} from "../_geometry.ts";

/**
 * Dimensions and hyper-parameters of a depthwise convolution: the window (kernel, stride 1, zero
 * padding 0, dilation 1 by default) and the sizes.
 */
export interface DepthwiseParams extends Window2dParams {
  /** Batch size. */
  readonly n: number;
  /** Channels (input = output = groups). */
  readonly c: number;
  /** Input height. */
  readonly h: number;
  /** Input width. */
  readonly w: number;
}

/**
 * The window and sizes of a depthwise convolution, validated (naming `op`).
 *
 * @returns The window with its sizes and output size.
 * @throws {RangeError} for non-integer or out-of-range sizes, or an output smaller than 1x1.
 * @example
 * ```ts
 * import { depthwiseWindow } from "./geometry.ts";
 * const p = { n: 8, c: 32, h: 48, w: 48, kernel: 3, stride: 2, padding: 1 };
 * depthwiseWindow("depthwiseConv2dForward", p).oh; // 24
 * ```
 */
export function depthwiseWindow(op: string, p: DepthwiseParams): PlaneWindow {
  checkPositiveInts(op, p, ["n", "c", "h", "w"]);
  return planeWindow(op, p, window2d(op, p));
}

/**
 * Validates depthwise-convolution parameters and returns the output shape `[n, c, oh, ow]`.
 *
 * @throws {RangeError} for non-integer or out-of-range sizes, or an output smaller than 1x1.
 * @example
 * ```ts
 * import { checkDepthwise } from "@modern-cnn/webgpu/kernels";
 * checkDepthwise({ n: 8, c: 32, h: 48, w: 48, kernel: 3, stride: 2, padding: 1 }); // [8, 32, 24, 24]
 * ```
 */
export function checkDepthwise(p: DepthwiseParams): Shape {
  const r = depthwiseWindow("depthwiseConv2d", p);
  return [r.n, r.c, r.oh, r.ow];
}
