/**
 * Shape helpers shared by every op: formatting, element counts and checks whose errors name the
 * op and both shapes.
 *
 * @module
 */

/** A tensor shape: sizes of each dimension, outermost first (NCHW for images). */
export type Shape = readonly number[];

/**
 * Formats a shape as `[2, 3, 4]`.
 *
 * @example
 * ```ts
 * import { formatShape } from "@modern-cnn/webgpu/gpu";
 * formatShape([2, 3]); // "[2, 3]"
 * ```
 */
export function formatShape(shape: Shape): string {
  return `[${shape.join(", ")}]`;
}

/**
 * Number of elements of a shape (1 for a scalar `[]`).
 *
 * @example
 * ```ts
 * import { numel } from "@modern-cnn/webgpu/gpu";
 * numel([2, 3, 4]); // 24
 * ```
 */
export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * Throws a `TypeError` unless `shape` is a list of non-negative integers.
 *
 * @example
 * ```ts
 * import { checkShape } from "./shape.ts";
 * checkShape("zeros", [2, 3]); // ok
 * ```
 */
export function checkShape(op: string, shape: Shape): void {
  if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new TypeError(`${op}: shape ${JSON.stringify(shape)} is not a list of integers >= 0`);
  }
}

/**
 * Whether two shapes are equal dimension by dimension.
 *
 * @example
 * ```ts
 * import { sameShape } from "./shape.ts";
 * sameShape([2, 3], [2, 3]); // true
 * ```
 */
export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Throws a `TypeError` naming the op, the argument and both shapes unless `actual` equals
 * `expected`. A `-1` in `expected` matches any size.
 *
 * @example
 * ```ts
 * import { assertShape } from "@modern-cnn/webgpu/gpu";
 * assertShape("linear", "weight", [10, 84], [10, 84]); // ok
 * // assertShape("linear", "weight", [10, 80], [10, 84]) throws:
 * // TypeError: linear: weight has shape [10, 80], expected [10, 84]
 * ```
 */
export function assertShape(op: string, name: string, actual: Shape, expected: Shape): void {
  const ok = actual.length === expected.length &&
    actual.every((d, i) => expected[i] === -1 || d === expected[i]);
  if (!ok) {
    const exp = expected.map((d) => (d === -1 ? "*" : String(d))).join(", ");
    throw new TypeError(`${op}: ${name} has shape ${formatShape(actual)}, expected [${exp}]`);
  }
}
