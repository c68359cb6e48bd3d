/**
 * The shapes of a 2-D convolution: {@linkcode Conv2dParams} as callers give them, their
 * resolution into a {@linkcode Conv2dGeometry} (the window record of `kernels/_geometry.ts` with
 * the sizes and the output size, see {@linkcode conv2dGeometry}), the output shape
 * ({@linkcode checkConv2d}), the checks of the tensors a call binds, and the
 * {@linkcode DirectConvShape} a direct kernel computes (the convolution itself, or the flipped
 * one that gives a stride-1 input gradient).
 *
 * Pure: no GPU work. Imports no kernel.
 *
 * @module
 */

import { formatShape, type Shape, type Tensor } from "../../gpu/mod.ts";
import { floatDType } from "../_dtype.ts";
import {
  checkPositiveInts,
  checkWindow2d,
  type Conv2dGeometry,
  window2d,
  type Window2dParams,
} from "../_geometry.ts";

export type { Conv2dGeometry } from "../_geometry.ts";

/**
 * Dimensions and hyper-parameters of a 2-D convolution: the window (kernel, stride 1, zero
 * padding 0, dilation 1 by default) and the sizes.
 */
export interface Conv2dParams extends Window2dParams {
  /** Batch size. */
  readonly n: number;
  /** Input channels. */
  readonly cIn: number;
  /** Input height. */
  readonly h: number;
  /** Input width. */
  readonly w: number;
  /** Output channels. */
  readonly cOut: number;
  /** Groups (`cIn` and `cOut` must be multiples); default 1. */
  readonly groups?: number;
}

/**
 * Resolves defaults and validates a convolution, returning every size including the output's.
 *
 * @throws {RangeError} for bad values (non-positive sizes, groups not dividing the channels, an
 * output smaller than 1x1).
 * @example
 * ```ts
 * import { conv2dGeometry } from "./geometry.ts";
 * const g = conv2dGeometry({ n: 1, cIn: 1, h: 224, w: 224, cOut: 96, kernel: 11, stride: 4, padding: 1 });
 * console.log(g.oh, g.ow); // 54 54
 * ```
 */
export function conv2dGeometry(p: Conv2dParams): Conv2dGeometry {
  const op = "conv2d";
  checkPositiveInts(op, p, ["n", "cIn", "h", "w", "cOut"]);
  const win = window2d(op, p);
  const groups = p.groups ?? 1;
  if (!Number.isInteger(groups) || groups < 1) {
    throw new RangeError(`${op}: groups must be an integer >= 1, got ${p.groups}`);
  }
  if (p.cIn % groups !== 0 || p.cOut % groups !== 0) {
    throw new RangeError(
      `${op}: groups ${groups} must divide cIn ${p.cIn} and cOut ${p.cOut}`,
    );
  }
  const [, , oh, ow] = checkWindow2d(op, win, [p.n, p.cIn, p.h, p.w]);
  const { n, cIn, h, w, cOut } = p;
  return { n, cIn, h, w, cOut, ...win, groups, oh, ow };
}

/**
 * Validates a convolution and returns the output shape `[n, cOut, oh, ow]`.
 *
 * @throws {RangeError} for bad values; errors name the op (`conv2d`).
 * @example
 * ```ts
 * import { checkConv2d } from "@modern-cnn/webgpu/kernels";
 * checkConv2d({ n: 256, cIn: 1, h: 28, w: 28, cOut: 6, kernel: 5, padding: 2 }); // [256, 6, 28, 28]
 * ```
 */
export function checkConv2d(p: Conv2dParams): Shape {
  const g = conv2dGeometry(p);
  return [g.n, g.cOut, g.oh, g.ow];
}

/**
 * The convolution a direct kernel computes: a {@linkcode Conv2dGeometry} of one group (the
 * window record and every size resolved). The padding may be negative (the flipped
 * input-gradient convolution, see {@linkcode flippedShape}).
 */
export type DirectConvShape = Omit<Conv2dGeometry, "groups">;

/**
 * The direct kernel's shape of `nb` images of convolution `g`.
 *
 * @example
 * ```ts
 * import { conv2dGeometry, directShape } from "./geometry.ts";
 * directShape(conv2dGeometry({ n: 8, cIn: 1, h: 28, w: 28, cOut: 6, kernel: 5 }), 2).n; // 2
 * ```
 */
export function directShape(g: Conv2dGeometry, nb: number): DirectConvShape {
  const { groups: _, ...s } = g;
  return { ...s, n: nb };
}

/**
 * The input gradient of a stride-1 convolution as a direct convolution of `dy` with the flipped
 * kernel: channels exchanged, padding `dilation*(k-1) - padding` (possibly negative).
 *
 * @example
 * ```ts
 * import { conv2dGeometry, flippedShape } from "./geometry.ts";
 * const g = conv2dGeometry({ n: 8, cIn: 6, h: 14, w: 14, cOut: 16, kernel: 5 });
 * flippedShape(g, 8).ph; // 4
 * ```
 */
export function flippedShape(g: Conv2dGeometry, nb: number): DirectConvShape {
  return {
    n: nb,
    cIn: g.cOut,
    h: g.oh,
    w: g.ow,
    cOut: g.cIn,
    oh: g.h,
    ow: g.w,
    kh: g.kh,
    kw: g.kw,
    sh: 1,
    sw: 1,
    ph: g.dh * (g.kh - 1) - g.ph,
    pw: g.dw * (g.kw - 1) - g.pw,
    dh: g.dh,
    dw: g.dw,
  };
}

function expectShape(name: string, t: Tensor | undefined, want: Shape): void {
  if (!t) return;
  floatDType("conv2d", name, t);
  if (t.shape.length !== want.length || t.shape.some((d, i) => d !== want[i])) {
    throw new TypeError(
      `conv2d: ${name} has shape ${formatShape(t.shape)}, expected ${formatShape(want)}`,
    );
  }
}

/** The tensors of a conv2d call (any may be absent). */
export interface Conv2dTensors {
  /** Input `[n, cIn, h, w]`. */
  readonly x?: Tensor | undefined;
  /** Weight `[cOut, cIn / groups, kh, kw]`. */
  readonly w?: Tensor | undefined;
  /** Bias `[cOut]`. */
  readonly b?: Tensor | undefined;
  /** Output `[n, cOut, oh, ow]`. */
  readonly y?: Tensor | undefined;
  /** Input gradient (x's shape). */
  readonly dx?: Tensor | undefined;
  /** Weight gradient (w's shape). */
  readonly dw?: Tensor | undefined;
  /** Bias gradient (b's shape). */
  readonly db?: Tensor | undefined;
  /** Output gradient (y's shape). */
  readonly dy?: Tensor | undefined;
}

/**
 * Checks that each given tensor is f32 or f16 with its shape under `g` (`y` and `dy`
 * `[n, cOut, oh, ow]`, `w` and `dw` `[cOut, cIn / groups, kh, kw]`, ...).
 *
 * @throws {TypeError} naming the op, the tensor and both shapes.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { checkConv2dTensors, conv2dGeometry } from "./geometry.ts";
 * const gpu = await getGpu();
 * const g = conv2dGeometry({ n: 1, cIn: 1, h: 4, w: 4, cOut: 2, kernel: 3 });
 * checkConv2dTensors(g, { x: gpu.zeros([1, 1, 4, 4]), w: gpu.zeros([2, 1, 3, 3]) });
 * ```
 */
export function checkConv2dTensors(g: Conv2dGeometry, t: Conv2dTensors): void {
  const xs = [g.n, g.cIn, g.h, g.w];
  const ws = [g.cOut, g.cIn / g.groups, g.kh, g.kw];
  const ys = [g.n, g.cOut, g.oh, g.ow];
  expectShape("x", t.x, xs);
  expectShape("w", t.w, ws);
  expectShape("b", t.b, [g.cOut]);
  expectShape("y", t.y, ys);
  expectShape("dx", t.dx, xs);
  expectShape("dw", t.dw, ws);
  expectShape("db", t.db, [g.cOut]);
  expectShape("dy", t.dy, ys);
}

/**
 * Validates `y` of a forward convolution, returning its channel count: exactly
 * `[n, cOut, oh, ow]` without `yChannelOffset`, else `[n, C, oh, ow]` with
 * `C >= yChannelOffset + cOut`.
 *
 * @throws {TypeError} when `y` does not fit; {RangeError} for a bad offset.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { checkOutputSlice, conv2dGeometry } from "./geometry.ts";
 * const gpu = await getGpu();
 * const g = conv2dGeometry({ n: 1, cIn: 1, h: 4, w: 4, cOut: 2, kernel: 3 });
 * checkOutputSlice(g, gpu.zeros([1, 5, 2, 2]), 3); // 5
 * ```
 */
export function checkOutputSlice(g: Conv2dGeometry, y: Tensor, offset: number | undefined): number {
  if (offset === undefined) {
    expectShape("y", y, [g.n, g.cOut, g.oh, g.ow]);
    return g.cOut;
  }
  if (!Number.isInteger(offset) || offset < 0) {
    throw new RangeError(`conv2d: yChannelOffset must be an integer >= 0, got ${offset}`);
  }
  floatDType("conv2d", "y", y);
  const s = y.shape;
  if (
    s.length !== 4 || s[0] !== g.n || s[2] !== g.oh || s[3] !== g.ow || s[1] < offset + g.cOut
  ) {
    throw new TypeError(
      `conv2d: y has shape ${formatShape(s)}, expected ` +
        `${formatShape([g.n, offset + g.cOut, g.oh, g.ow])} or more channels ` +
        `(yChannelOffset ${offset} + cOut ${g.cOut})`,
    );
  }
  return s[1];
}
