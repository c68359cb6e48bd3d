/**
 * The one record of a 2-D sliding window and its maths, shared by convolution (im2col + GEMM and
 * direct), depthwise convolution, pooling and the layers, in the spirit of candle's
 * `ParamsConv2D`: {@linkcode Window2dParams} is the window as callers give it (numbers or
 * pairs, defaults left out), {@linkcode Window2d} the readonly record with every entry resolved
 * per axis, {@linkcode window2d} resolves and validates the one into the other, and
 * {@linkcode checkWindow2d} validates a window against an `[n, c, h, w]` input and returns the
 * output shape. The records that extend it: {@linkcode PlaneWindow} (pooling, depthwise),
 * {@linkcode Conv2dGeometry} (conv2d) and the direct kernels' `DirectConvShape`. Also the small
 * size check of the spatial kernels (batch norm and LRN too).
 *
 * The types are public (re-exported by `conv2d/index.ts`); the functions are private to `kernels/`
 * and `layers/`. Imports no kernel: a leaf of the kernels' module graph.
 *
 * @module
 */

import { formatShape, type Shape } from "../gpu/shape.ts";

/**
 * A 2-D window as callers give it, as `torch.nn.Conv2d` and `torch.nn.MaxPool2d` take it: each
 * entry one number for both axes or a pair `[height, width]`. Kernels' params extend it
 * (`Conv2dParams`, `DepthwiseParams`; `Pool2dParams` without dilation).
 */
export interface Window2dParams {
  /** Kernel (window) size: `k` or `[kh, kw]`. */
  readonly kernel: number | readonly [number, number];
  /** Stride: `s` or `[sh, sw]`; default 1 (pooling: the kernel size). */
  readonly stride?: number | readonly [number, number];
  /**
   * Padding on each side: `p` or `[ph, pw]`; default 0. Zeros for convolutions; pooling pads
   * implicitly (`-inf` for max, zeros for average) and by at most half the kernel.
   */
  readonly padding?: number | readonly [number, number];
  /** Dilation: `d` or `[dh, dw]`; default 1 (convolutions only). */
  readonly dilation?: number | readonly [number, number];
}

/**
 * A 2-D sliding window with every entry resolved per axis: the one record of kernel, stride,
 * padding and dilation (see {@linkcode window2d} and {@linkcode checkWindow2d}).
 */
export interface Window2d {
  /** Kernel height. */
  readonly kh: number;
  /** Kernel width. */
  readonly kw: number;
  /** Vertical stride. */
  readonly sh: number;
  /** Horizontal stride. */
  readonly sw: number;
  /** Vertical padding (on each side). */
  readonly ph: number;
  /** Horizontal padding (on each side). */
  readonly pw: number;
  /** Vertical dilation. */
  readonly dh: number;
  /** Horizontal dilation. */
  readonly dw: number;
}

/** A window over the planes of an `[n, c, h, w]` input, with its output size (pooling, depthwise). */
export interface PlaneWindow extends Window2d {
  /** Batch. */
  readonly n: number;
  /** Channels (planes per image). */
  readonly c: number;
  /** Input height. */
  readonly h: number;
  /** Input width. */
  readonly w: number;
  /** Output height. */
  readonly oh: number;
  /** Output width. */
  readonly ow: number;
}

/** A convolution with every hyper-parameter resolved (see `conv2dGeometry` in `conv2d/geometry.ts`). */
export interface Conv2dGeometry extends Window2d {
  /** Batch. */
  readonly n: number;
  /** Input channels. */
  readonly cIn: number;
  /** Input height. */
  readonly h: number;
  /** Input width. */
  readonly w: number;
  /** Output channels. */
  readonly cOut: number;
  /** Groups. */
  readonly groups: number;
  /** Output height. */
  readonly oh: number;
  /** Output width. */
  readonly ow: number;
}

/** Parses one `number | [number, number]` entry into a pair of integers `>= min`. */
function pair(
  op: string,
  name: string,
  v: number | readonly [number, number] | undefined,
  dflt: number | readonly [number, number],
  min: number,
): [number, number] {
  let p: readonly number[];
  if (v === undefined) p = typeof dflt === "number" ? [dflt, dflt] : dflt;
  else if (typeof v === "number") p = [v, v];
  else if (Array.isArray(v)) p = v;
  else throw new TypeError(`${op}: ${name} must be a number or a pair, got ${JSON.stringify(v)}`);
  if (p.length !== 2 || p.some((d) => !Number.isInteger(d) || d < min)) {
    throw new RangeError(
      `${op}: ${name} must be an integer >= ${min} or a pair of them, got ${JSON.stringify(v)}`,
    );
  }
  return [p[0], p[1]];
}

/**
 * Resolves a window as callers give it into a {@linkcode Window2d}: defaults filled in (stride 1,
 * or the kernel size with `stride: "kernel"` as pooling has it; padding 0; dilation 1), every
 * entry checked in the order kernel, stride, padding, dilation.
 *
 * @param op Name of the calling op, prefixed to error messages.
 * @param p The window: kernel, and optionally stride, padding and dilation.
 * @param defaults `stride: "kernel"` makes the kernel size the default stride.
 * @returns The resolved window.
 * @throws {TypeError} when an entry is neither a number nor an array.
 * @throws {RangeError} when an entry is not of length 2 or holds a non-integer or one below its
 * minimum (1 for kernel, stride and dilation; 0 for padding).
 * @example
 * ```ts
 * import { window2d } from "./_geometry.ts";
 * window2d("conv2d", { kernel: 3, padding: 1 }); // { kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1, dh: 1, dw: 1 }
 * window2d("maxPool2d", { kernel: [3, 2] }, { stride: "kernel" }).sw; // 2
 * ```
 */
export function window2d(
  op: string,
  p: Window2dParams,
  defaults: { readonly stride?: "kernel" } = {},
): Window2d {
  const [kh, kw] = pair(op, "kernel", p.kernel, 1, 1);
  const [sh, sw] = pair(op, "stride", p.stride, defaults.stride === "kernel" ? [kh, kw] : 1, 1);
  const [ph, pw] = pair(op, "padding", p.padding, 0, 0);
  const [dh, dw] = pair(op, "dilation", p.dilation, 1, 1);
  return { kh, kw, sh, sw, ph, pw, dh, dw };
}

/** `kernel [3, 3], stride [2, 2], padding [1, 1], dilation [1, 1]`. */
function describe(win: Window2d): string {
  return `kernel [${win.kh}, ${win.kw}], stride [${win.sh}, ${win.sw}], ` +
    `padding [${win.ph}, ${win.pw}], dilation [${win.dh}, ${win.dw}]`;
}

/**
 * Validates a window against an `[n, c, h, w]` input and returns the output shape
 * `[n, c, oh, ow]`, with PyTorch's `oh = floor((h + 2 ph - dh (kh - 1) - 1) / sh) + 1` (and
 * likewise `ow`); a convolution replaces `c` by its output channels.
 *
 * @param op Name of the calling op, prefixed to error messages.
 * @param win The window (as {@linkcode window2d} returns it, or built by hand).
 * @param input The input shape `[n, c, h, w]`.
 * @returns The output shape `[n, c, oh, ow]`.
 * @throws {TypeError} when `input` is not a 4-d shape or an entry of `win` is not a number.
 * @throws {RangeError} naming `op`, the input shape and the kernel when a size of `input` or an
 * entry of `win` is out of range, or when the output would be empty.
 * @example
 * ```ts
 * import { checkWindow2d, window2d } from "./_geometry.ts";
 * const win = window2d("maxPool2d", { kernel: 3, stride: 2, padding: 1 });
 * checkWindow2d("maxPool2d", win, [1, 8, 48, 48]); // [1, 8, 24, 24]
 * ```
 */
export function checkWindow2d(
  op: string,
  win: Window2d,
  input: Shape,
): [number, number, number, number] {
  if (!Array.isArray(input) || input.length !== 4) {
    const got = Array.isArray(input) ? formatShape(input) : JSON.stringify(input);
    throw new TypeError(`${op}: expected an [n, c, h, w] input, got ${got}`);
  }
  if (input.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new RangeError(`${op}: input ${formatShape(input)} must have integer sizes >= 1`);
  }
  const { kh, kw, sh, sw, ph, pw, dh, dw } = win;
  if ([kh, kw, sh, sw, ph, pw, dh, dw].some((v) => typeof v !== "number")) {
    throw new TypeError(`${op}: window entries must be numbers, got ${JSON.stringify(win)}`);
  }
  if (
    [kh, kw, sh, sw, dh, dw].some((v) => !Number.isInteger(v) || v < 1) ||
    [ph, pw].some((v) => !Number.isInteger(v) || v < 0)
  ) {
    throw new RangeError(
      `${op}: window ${describe(win)} over input ${formatShape(input)} needs integers, ` +
        "kernel, stride and dilation >= 1, padding >= 0",
    );
  }
  const oh = Math.floor((input[2] + 2 * ph - dh * (kh - 1) - 1) / sh) + 1;
  const ow = Math.floor((input[3] + 2 * pw - dw * (kw - 1) - 1) / sw) + 1;
  if (oh < 1 || ow < 1) {
    const dilation = dh !== 1 || dw !== 1 ? ` and dilation [${dh}, ${dw}]` : "";
    throw new RangeError(
      `${op}: input ${formatShape(input)} is too small for kernel [${kh}, ${kw}] ` +
        `with padding [${ph}, ${pw}]${dilation} (output ${oh}x${ow})`,
    );
  }
  return [input[0], input[1], oh, ow];
}

/**
 * The {@linkcode PlaneWindow} of a window over an `[n, c, h, w]` input: the dims, the window and
 * the output size (validated by {@linkcode checkWindow2d}).
 *
 * @returns The record, the window's entries after the input's sizes.
 * @throws {TypeError} / {RangeError} as {@linkcode checkWindow2d}.
 * @example
 * ```ts
 * import { planeWindow, window2d } from "./_geometry.ts";
 * const dims = { n: 8, c: 32, h: 48, w: 48 };
 * planeWindow("depthwiseConv2d", dims, window2d("depthwiseConv2d", { kernel: 3, stride: 2, padding: 1 })).oh; // 24
 * ```
 */
export function planeWindow(
  op: string,
  dims: { readonly n: number; readonly c: number; readonly h: number; readonly w: number },
  win: Window2d,
): PlaneWindow {
  const { n, c, h, w } = dims;
  const [, , oh, ow] = checkWindow2d(op, win, [n, c, h, w]);
  const { kh, kw, sh, sw, ph, pw, dh, dw } = win;
  return { n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow };
}

/**
 * Checks that each of the named sizes of `p` (e.g. `n, c, h, w`) is an integer `>= 1`.
 *
 * @param op Name of the calling op, prefixed to error messages.
 * @param p The parameters holding the sizes.
 * @param keys The names of the sizes to check, in the order they are checked.
 * @returns Nothing; throws on the first bad size.
 * @throws {RangeError} if a size is not an integer `>= 1`.
 * @example
 * ```ts
 * import { checkPositiveInts } from "./_geometry.ts";
 * checkPositiveInts("lrn", { n: 1, c: 3, h: 5, w: 5 }, ["n", "c", "h", "w"]); // ok
 * ```
 */
export function checkPositiveInts<K extends string>(
  op: string,
  p: { readonly [k in K]: number },
  keys: readonly K[],
): void {
  for (const k of keys) {
    if (!Number.isInteger(p[k]) || p[k] < 1) {
      throw new RangeError(`${op}: ${k} must be an integer >= 1, got ${p[k]}`);
    }
  }
}
