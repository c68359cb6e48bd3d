/**
 * Floating-point storage types of kernel bindings. Every float binding of a kernel takes its WGSL
 * element type from its tensor's dtype (`f32` or `f16`, chosen per binding); arithmetic and
 * accumulation stay in f32, loads convert with `f32(...)` / `vec4<f32>(...)` and stores round
 * once with the binding's type. With every binding f32 the generated WGSL computes exactly what
 * it computed before f16 existed (the conversions are identities).
 *
 * @module
 */

import { assertShape, type DType, type Shape, type Tensor } from "../gpu/mod.ts";

/** The float storage types a kernel binding can have. */
export type FloatDType = "f32" | "f16";

/**
 * Checks that `t` (operand `name` of `op`) is a float tensor the device can run kernels on and
 * returns its dtype.
 *
 * @throws {TypeError} when `t` is not f32/f16, or is f16 on a device without `shader-f16`.
 */
export function floatDType(op: string, name: string, t: Tensor): FloatDType {
  if (t.dtype !== "f32" && t.dtype !== "f16") {
    throw new TypeError(`${op}: ${name} must be f32 or f16, got ${t}`);
  }
  if (t.dtype === "f16" && !t.gpu.features.f16) {
    throw new TypeError(
      `${op}: ${name} is f16 but the adapter '${t.gpu.description}' lacks the 'shader-f16' ` +
        "feature (use f32 tensors, --precision f32)",
    );
  }
  return t.dtype;
}

/**
 * Checks the shape of `t` (operand `name` of `op`; the TypeError names both shapes), then that it
 * is a float tensor ({@linkcode floatDType}); returns its dtype.
 *
 * @example
 * ```ts
 * import { getGpu } from "../gpu/mod.ts";
 * import { checkFloat } from "./_dtype.ts";
 * const gpu = await getGpu();
 * checkFloat("lrn", "x", gpu.zeros([2, 3]), [2, 3]); // "f32"
 * ```
 */
export function checkFloat(op: string, name: string, t: Tensor, expected: Shape): FloatDType {
  assertShape(op, name, t.shape, expected);
  return floatDType(op, name, t);
}

/**
 * The dtypes of several named float operands (undefined ones skipped), checked with
 * {@linkcode floatDType}.
 */
export function floatDTypes<K extends string>(
  op: string,
  operands: Readonly<Partial<Record<K, Tensor | undefined>>>,
): Record<K, FloatDType> {
  const out = {} as Record<K, FloatDType>;
  for (const [name, t] of Object.entries(operands) as [K, Tensor | undefined][]) {
    out[name] = t === undefined ? "f32" : floatDType(op, name, t);
  }
  return out;
}

/** `enable f16;` when any of the dtypes is f16 (WGSL needs it before any declaration). */
export function wgslEnable(dtypes: Iterable<DType>): string {
  for (const d of dtypes) if (d === "f16") return "enable f16;\n";
  return "";
}

/** Bytes per element of a float dtype (for binding byte offsets). */
export function floatBytes(dtype: FloatDType): 2 | 4 {
  return dtype === "f16" ? 2 : 4;
}

/**
 * Bytes of `count` elements of the float tensor `t` (all of them by default) rounded up to whole
 * vec4s of its dtype (16 bytes per `vec4<f32>`, 8 per `vec4<f16>`): the size of their binding as
 * an array of vec4s.
 *
 * @example
 * ```ts
 * import { getGpu } from "../gpu/mod.ts";
 * import { vec4Bytes } from "./_dtype.ts";
 * const gpu = await getGpu();
 * vec4Bytes(gpu.zeros([5])); // 32
 * ```
 */
export function vec4Bytes(t: Tensor, count: number = t.size): number {
  return Math.ceil(count / 4) * 4 * floatBytes(t.dtype as FloatDType);
}

// ------------------------------------------------------------------ WGSL generation ----
// These return the expression itself wherever no conversion is needed, so that the WGSL of an
// all-f32 kernel is the text it was before f16 existed. `undefined` stands for an optional
// binding that is not bound (as f32, like floatDTypes).

/**
 * The WGSL storage element type of a binding stored as `d`: `f32` or `f16`, with `vec`
 * `vec4<f32>` or `vec4<f16>`.
 *
 * @example
 * ```ts
 * import { storageType } from "./_dtype.ts";
 * storageType("f16", true); // "vec4<f16>"
 * ```
 */
export function storageType(d: FloatDType | undefined, vec = false): string {
  const t = d ?? "f32";
  return vec ? `vec4<${t}>` : t;
}

/**
 * WGSL converting `expr`, a value of storage type `from`, to storage type `to` (scalars, or
 * vec4s with `vec`): `expr` itself when the types agree.
 *
 * @example
 * ```ts
 * import { convert } from "./_dtype.ts";
 * convert("x[i]", "f16", "f32", true); // "vec4<f32>(x[i])"
 * convert("x[i]", "f32", "f32"); // "x[i]"
 * ```
 */
export function convert(
  expr: string,
  from: FloatDType | undefined,
  to: FloatDType | undefined,
  vec = false,
): string {
  return (from ?? "f32") === (to ?? "f32") ? expr : `${storageType(to, vec)}(${expr})`;
}

/**
 * WGSL reading `expr`, an element of a binding stored as `d`, as an f32 (a `vec4<f32>` with
 * `vec`): converted from f16, the expression itself for f32.
 *
 * @example
 * ```ts
 * import { loadF32 } from "./_dtype.ts";
 * loadF32("f16", "x[i]"); // "f32(x[i])"
 * loadF32("f32", "x[i]"); // "x[i]"
 * ```
 */
export function loadF32(d: FloatDType | undefined, expr: string, vec = false): string {
  return convert(expr, d, "f32", vec);
}

/**
 * WGSL of the f32 value `expr` (a `vec4<f32>` with `vec`) as stored into a binding of `d`:
 * rounded once to f16, or as is for f32.
 *
 * @example
 * ```ts
 * import { storeAs } from "./_dtype.ts";
 * storeAs("f16", "acc"); // "f16(acc)"
 * storeAs("f16", "acc", true); // "vec4<f16>(acc)"
 * ```
 */
export function storeAs(d: FloatDType | undefined, expr: string, vec = false): string {
  return convert(expr, "f32", d, vec);
}

/**
 * WGSL statement `target op value` (op `=` or `+=`) on `target`, an element of a binding stored
 * as `d`, with the f32 value `value`. For f16 the result is rounded once; `+=` adds in f32.
 *
 * @example
 * ```ts
 * import { assignAs } from "./_dtype.ts";
 * assignAs("f16", "db[c]", "+=", "s"); // "db[c] = f16(f32(db[c]) + s);"
 * assignAs("f32", "db[c]", "+=", "s"); // "db[c] += s;"
 * ```
 */
export function assignAs(
  d: FloatDType | undefined,
  target: string,
  op: "=" | "+=",
  value: string,
): string {
  if (d !== "f16") return `${target} ${op} ${value};`;
  return `${target} = ${storeAs(d, op === "=" ? value : `${loadF32(d, target)} + ${value}`)};`;
}
