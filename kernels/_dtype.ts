/**
 * Floating-point storage types of kernel bindings. Every float binding of a kernel takes its WGSL
 * element type from its tensor's dtype (`f32` or `f16`, chosen per binding); arithmetic and
 * accumulation stay in f32, loads convert with `f32(...)` / `vec4<f32>(...)` and stores round
 * once with the binding's type. With every binding f32 the generated WGSL computes exactly what
 * it computed before f16 existed (the conversions are identities).
 *
 * @module
 */

import type { DType, Tensor } from "../gpu/mod.ts";

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

/**
 * A kernel-name suffix naming the operands stored as f16 (`""` when all are f32), so that each
 * dtype specialization has its own pipeline cache key: `{ x: "f16", w: "f32", y: "f16" }` →
 * `"_h-x-y"`.
 */
export function dtypeTag(dtypes: Readonly<Record<string, FloatDType>>): string {
  const half = Object.keys(dtypes).filter((k) => dtypes[k] === "f16");
  return half.length === 0 ? "" : `_h-${half.join("-")}`;
}

/** Bytes per element of a float dtype (for binding byte offsets). */
export function floatBytes(dtype: FloatDType): 2 | 4 {
  return dtype === "f16" ? 2 : 4;
}
