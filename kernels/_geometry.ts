/**
 * Private argument-parsing helpers shared by the spatial kernels (depthwise convolution,
 * pooling, convolution, batch norm, LRN). Not re-exported from `kernels/mod.ts`.
 *
 * @module
 */

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
