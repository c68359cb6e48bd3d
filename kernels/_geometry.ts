/**
 * Private argument-parsing and shape helpers shared by the spatial kernels (depthwise
 * convolution, pooling, convolution, batch norm, LRN). Not re-exported from `kernels/mod.ts`.
 *
 * @module
 */

import { formatShape } from "../gpu/shape.ts";

/**
 * Parses a `number | [number, number]` hyper-parameter (kernel, stride, padding, dilation) into a
 * pair, checking that both entries are integers `>= min`.
 *
 * @param op Name of the calling op, prefixed to error messages.
 * @param name Name of the parameter, used in error messages.
 * @param v The value given: a number (used for both), a pair, or `undefined` for the default.
 * @param dflt The default: a number (used for both) or a pair.
 * @param min The smallest allowed entry.
 * @returns The pair `[height, width]`.
 * @throws {TypeError} if `v` is neither a number nor an array.
 * @throws {RangeError} if `v` is not of length 2 or an entry is not an integer `>= min`.
 * @example
 * ```ts
 * import { pair } from "./_geometry.ts";
 * console.log(pair("maxPool2d", "stride", undefined, [3, 3], 1)); // [3, 3]
 * console.log(pair("maxPool2d", "padding", 1, 0, 0)); // [1, 1]
 * ```
 */
export function pair(
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

/** A sliding window: kernel, stride, padding and dilation per axis. */
export interface Window {
  readonly kh: number;
  readonly kw: number;
  readonly sh: number;
  readonly sw: number;
  readonly ph: number;
  readonly pw: number;
  readonly dh: number;
  readonly dw: number;
}

/**
 * The output size `[oh, ow]` of a sliding window over an `[n, c, h, w]` input (PyTorch's
 * `floor((h + 2p - d(k - 1) - 1) / s) + 1`), shared by convolution, depthwise convolution and
 * pooling.
 *
 * @throws {RangeError} naming `op`, the input and the window when the output would be empty.
 * @example
 * ```ts
 * import { windowOutput } from "./_geometry.ts";
 * const win = { kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1, dh: 1, dw: 1 };
 * windowOutput("maxPool2d", [1, 8, 48, 48], win); // [24, 24]
 * ```
 */
export function windowOutput(
  op: string,
  input: readonly [number, number, number, number],
  win: Window,
): [number, number] {
  const { kh, kw, sh, sw, ph, pw, dh, dw } = win;
  const oh = Math.floor((input[2] + 2 * ph - dh * (kh - 1) - 1) / sh) + 1;
  const ow = Math.floor((input[3] + 2 * pw - dw * (kw - 1) - 1) / sw) + 1;
  if (oh < 1 || ow < 1) {
    const dilation = dh !== 1 || dw !== 1 ? ` and dilation [${dh}, ${dw}]` : "";
    throw new RangeError(
      `${op}: input ${formatShape(input)} is too small for kernel [${kh}, ${kw}] ` +
        `with padding [${ph}, ${pw}]${dilation} (output ${oh}x${ow})`,
    );
  }
  return [oh, ow];
}

/** A convolution with every hyper-parameter resolved (see `conv2dGeometry` in `conv2d.ts`). */
export interface Conv2dGeometry {
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
  /** Kernel height. */
  readonly kh: number;
  /** Kernel width. */
  readonly kw: number;
  /** Vertical stride. */
  readonly sh: number;
  /** Horizontal stride. */
  readonly sw: number;
  /** Vertical padding. */
  readonly ph: number;
  /** Horizontal padding. */
  readonly pw: number;
  /** Vertical dilation. */
  readonly dh: number;
  /** Horizontal dilation. */
  readonly dw: number;
  /** Groups. */
  readonly groups: number;
  /** Output height. */
  readonly oh: number;
  /** Output width. */
  readonly ow: number;
}
