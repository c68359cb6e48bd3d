/**
 * What the optimizer updates (`sgd.ts`, `adam.ts`) share: one thread per element (or per vec4)
 * of a parameter tensor or a whole parameter arena, in place; the same optional loss-scale skip
 * and f16/f32 copy of the updated parameter; and the same host side: operands checked disjoint,
 * vec4 when every float operand has room for the last partial vector, and ranges of elements that
 * each fit one binding and start at an aligned element.
 *
 * @module
 */

import { formatShape, grid1d, type Tensor } from "../gpu/mod.ts";
import { unitRanges } from "./_binding.ts";
import { floatBytes, type FloatDType, storageType, vec4Bytes } from "./_dtype.ts";
import { type BoundTensor, flatMain } from "./_kernel.ts";

/** Threads per workgroup of the update kernels. */
export const UPDATE_WG = 256;

/**
 * A test of one `_`-separated part of a variant name (`v4`, `scaled`, `copy`, ...).
 *
 * @example
 * ```ts
 * import { variantHas } from "./_update.ts";
 * variantHas("copy")("wd_copy_v4"); // true
 * ```
 */
export function variantHas(part: string): (variant: string) => boolean {
  return (variant) => variant.split("_").includes(part);
}

/**
 * The bindings every update has after its own: the copy `halfB` (variants with `copy`) and the
 * loss scaler's state (variants with `scaled`).
 *
 * @example
 * ```ts
 * import { updateTailBindings } from "./_update.ts";
 * updateTailBindings(["s", "copy_s"]).halfB.variants; // ["copy_s"]
 * ```
 */
export function updateTailBindings(variants: readonly string[]): {
  readonly halfB: {
    readonly type: "float";
    readonly access: "read_write";
    readonly vec4: (variant: string) => boolean;
    readonly variants: readonly string[];
  };
  readonly lossScale: {
    readonly type: "u32";
    readonly access: "read";
    readonly variants: readonly string[];
  };
} {
  return {
    halfB: {
      type: "float",
      access: "read_write",
      vec4: variantHas("v4"),
      variants: variants.filter(variantHas("copy")),
    },
    lossScale: { type: "u32", access: "read", variants: variants.filter(variantHas("scaled")) },
  };
}

/**
 * The WGSL after the declarations of an update: `param` (type `T`) is loaded from `paramB[i]`,
 * `step` runs (skipped when the loss scaler flagged an overflow), then the copy is written.
 *
 * @example
 * ```ts
 * import { updateMain } from "./_update.ts";
 * const wgsl = updateMain({ step: ["param = param * 2.0;", "paramB[i] = param;"], scaled: false,
 *   vec: false, half: undefined });
 * ```
 */
export function updateMain(
  o: { step: readonly string[]; scaled: boolean; vec: boolean; half: FloatDType | undefined },
): string {
  const body = o.scaled
    ? `if (lossScale[2] == 0u) {\n    ${o.step.join("\n    ")}\n  }`
    : o.step.join("\n  ");
  const aliases = `alias T = ${o.vec ? "vec4<f32>" : "f32"};${
    o.half ? `\nalias H = ${storageType(o.half, o.vec)};` : ""
  }`;
  return `${aliases}\n${
    flatMain(
      "i",
      "p.count",
      `  var param: T = paramB[i];\n  ${body}${o.half ? "\n  halfB[i] = H(param);" : ""}`,
    )
  }`;
}

/** One range of an update: its layout, its thread count and the binding of an operand. */
export interface UpdateRange {
  /** `v4` (one thread per vec4) or `s` (one per element). */
  readonly layout: "v4" | "s";
  /** Threads of the range (its `Params.count`). */
  readonly count: number;
  /** Workgroups of the range. */
  readonly workgroups: [number, number, number];
  /** The binding of operand `t` over the range (undefined for an absent one). */
  at(t: Tensor | undefined): BoundTensor | undefined;
}

/**
 * Checks that no two operands share storage (every one is bound once and at least one is
 * written), then calls `each` once per range of elements of `floats[0]` that fits one binding.
 * `floats` are the float operands (same size as the first), `lossScale` the loss scaler's state.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { updateRanges } from "./_update.ts";
 * const gpu = await getGpu();
 * const [p, g] = [gpu.zeros([10]), gpu.zeros([10])];
 * updateRanges("update", [["param", p], ["grad", g]], undefined, (r) => console.log(r.count));
 * ```
 */
export function updateRanges(
  op: string,
  floats: readonly (readonly [string, Tensor])[],
  lossScale: Tensor | undefined,
  each: (range: UpdateRange) => void,
): void {
  const all = [...floats, ...(lossScale ? [["lossScale", lossScale] as const] : [])];
  for (let a = 0; a < all.length; a++) {
    for (let b = a + 1; b < all.length; b++) {
      if (all[a][1].overlaps(all[b][1])) {
        throw new TypeError(
          `${op}: ${all[a][0]} ${formatShape(all[a][1].shape)} and ${all[b][0]} ` +
            `${formatShape(all[b][1].shape)} share a buffer`,
        );
      }
    }
  }
  const n = floats[0][1].size;
  if (n === 0) return;
  // vec4 when every float binding has room for the last, partial vector (the lanes past the end
  // compute on the buffer's slack, never read); else the scalar path.
  const vec = floats.every(([, t]) => t.capacity >= vec4Bytes(t));
  const gpu = floats[0][1].gpu;
  // Range starts are multiples of the binding offset alignment for the narrowest element (f16
  // when the copy is) and of 4: every range starts at element 0 (vector 0) of its bindings.
  const narrowest = Math.min(...floats.map(([, t]) => floatBytes(t.dtype as FloatDType)));
  const quantum = Math.max(4, gpu.limits.minStorageBufferOffsetAlignment / narrowest);
  for (const [e0, e1] of unitRanges(op, gpu, n, 1, quantum)) {
    const count = vec ? Math.ceil((e1 - e0) / 4) : e1 - e0;
    each({
      layout: vec ? "v4" : "s",
      count,
      workgroups: grid1d(count, UPDATE_WG),
      at: (t) => {
        if (t === undefined) return undefined;
        const bytes = floatBytes(t.dtype as FloatDType);
        const size = vec ? vec4Bytes(t, e1 - e0) : Math.ceil(((e1 - e0) * bytes) / 4) * 4;
        return { tensor: t, offset: e0 * bytes, size };
      },
    });
  }
}
