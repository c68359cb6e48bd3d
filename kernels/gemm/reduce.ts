/**
 * Strided sums: `reduceStrided` sums `x[outer, mid, inner]` over its outer and inner dimensions
 * (conv2d's bias gradient), and `sumRows` is its column-sum case (linear's bias gradient). `x`
 * and `y` are f32 or f16 each; sums are f32.
 *
 * One thread per kept index sums a contiguous share of the reduced range; when few indices are
 * kept and the reduction is long, the range is split over more threads and a second dispatch sums
 * the f32 partial sums. No thread sums more than 16384 elements (llvmpipe stops an invocation's
 * loops after 65535 iterations, silently, and long serial sums lose precision).
 *
 * @module
 */

import { formatShape, type Gpu, grid1d, type Tensor } from "../../gpu/mod.ts";
import { bindingRange, maxBindingElements, type TensorRange } from "../_binding.ts";
import { floatDTypes } from "../_dtype.ts";
import { defineKernel, flatMain } from "../_kernel.ts";
import { adapterProfile } from "../_adapter.ts";

const RED_WG = 64;
const RED_SPLIT_MIN = 256;
const RED_MAX_LEN = 16384;

/**
 * A reduction over the outer and inner dimensions of `x[outer, mid, inner]` into `y[mid]`
 * (`+=` when `accumulate`): column sums (inner = 1) and conv2d's bias gradient (outer = images,
 * inner = pixels). `x` and `y` are f32 or f16 each; sums are f32.
 */
export interface StridedReduce {
  /** Output `[mid]`. */
  readonly y: TensorRange;
  /** Input `[outer, mid, inner]`. */
  readonly x: TensorRange;
  /** Outer (reduced) size. */
  readonly outer: number;
  /** Kept size. */
  readonly mid: number;
  /** Inner (reduced) size. */
  readonly inner: number;
  /** Add to y instead of overwriting it. */
  readonly accumulate: boolean;
}

/**
 * Records column sums `y[cols] = sum over rows of x[rows, cols]` (or `+=` when `accumulate`):
 * linear's bias gradient from `dy[batch, out]`. `x` and `y` are f32 or f16 each (sums in f32).
 *
 * @throws {RangeError} for bad dimensions. @throws {TypeError} when `x` or `y` do not fit them,
 * or are not f32/f16 tensors.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { sumRows } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const dy = gpu.zeros([128, 10]), db = gpu.empty([10]);
 * sumRows({ y: db, x: dy }, { rows: 128, cols: 10 });
 * ```
 */
export function sumRows(
  io: { y: Tensor; x: Tensor },
  p: { rows: number; cols: number; accumulate?: boolean },
): void {
  for (const key of ["rows", "cols"] as const) {
    if (!Number.isInteger(p[key]) || p[key] < 0) {
      throw new RangeError(`sumRows: ${key} must be an integer >= 0, got ${p[key]}`);
    }
  }
  if (io.x.size !== p.rows * p.cols) {
    throw new TypeError(
      `sumRows: x has shape ${formatShape(io.x.shape)}, expected [${p.rows}, ${p.cols}]`,
    );
  }
  if (io.y.size !== p.cols) {
    throw new TypeError(`sumRows: y has shape ${formatShape(io.y.shape)}, expected [${p.cols}]`);
  }
  floatDTypes("sumRows", io);
  if (p.cols === 0) return;
  const limit = maxBindingElements(io.x.gpu);
  if (p.rows * p.cols > limit) {
    // Sum row blocks that fit one binding, accumulating after the first.
    const rowsPer = Math.max(1, Math.floor(limit / p.cols));
    for (let r0 = 0; r0 < p.rows; r0 += rowsPer) {
      const nr = Math.min(rowsPer, p.rows - r0);
      reduceStrided(io.x.gpu, {
        y: bindingRange(io.y, 0, p.cols),
        x: bindingRange(io.x, r0 * p.cols, nr * p.cols),
        outer: nr,
        mid: p.cols,
        inner: 1,
        accumulate: (p.accumulate ?? false) || r0 > 0,
      });
    }
    return;
  }
  reduceStrided(io.x.gpu, {
    y: bindingRange(io.y, 0, p.cols),
    x: bindingRange(io.x, 0, p.rows * p.cols),
    outer: p.rows,
    mid: p.cols,
    inner: 1,
    accumulate: p.accumulate ?? false,
  });
}

/**
 * Records a {@linkcode StridedReduce}. When `mid` is small and the reduction long, the reduced
 * range is split over more threads and the partial sums (f32) are reduced by a second pass.
 *
 * @throws {TypeError} when `x` or `y` is not an f32/f16 tensor.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { bindingRange } from "../_binding.ts";
 * import { reduceStrided } from "./reduce.ts";
 * const gpu = await getGpu();
 * const x = gpu.zeros([2, 3, 5]), y = gpu.empty([3]);
 * reduceStrided(gpu, {
 *   y: bindingRange(y, 0, 3), x: bindingRange(x, 0, 30), outer: 2, mid: 3, inner: 5, accumulate: false,
 * });
 * ```
 */
export function reduceStrided(gpu: Gpu, r: StridedReduce): void {
  floatDTypes("reduceStrided", { x: r.x.tensor, y: r.y.tensor });
  if (r.mid === 0) return;
  const len = r.outer * r.inner;
  const profile = adapterProfile(gpu);
  const want = profile.isCpu ? 4 * profile.cores * 8 : 16384;
  let splits = 1;
  if (r.mid < want && len >= 2 * RED_SPLIT_MIN) {
    splits = Math.min(Math.ceil(want / r.mid), Math.floor(len / RED_SPLIT_MIN), 1024);
  }
  // At most RED_MAX_LEN elements per thread: llvmpipe caps one invocation's loop iterations at
  // 65535 (silently), and long serial sums lose precision.
  splits = Math.max(splits, Math.ceil(len / RED_MAX_LEN));
  if (splits <= 1) {
    dispatchReduce(r.y, r.x, r.outer, r.mid, r.inner, 1, r.accumulate);
    return;
  }
  const partial = gpu.empty([splits, r.mid]);
  const pr = bindingRange(partial, 0, splits * r.mid);
  dispatchReduce(pr, r.x, r.outer, r.mid, r.inner, splits, false);
  dispatchReduce(r.y, pr, splits, r.mid, 1, 1, r.accumulate);
  partial.dispose();
}

/**
 * The reduction kernel (variant `acc`: `y +=`).
 *
 * @example
 * ```ts
 * import { reduceKernel } from "./reduce.ts";
 * console.log(reduceKernel.spec({ x: "f16", y: "f32" }, "acc").name); // reduce_outer_inner_acc_h-x
 * ```
 */
export const reduceKernel = defineKernel({
  name: "reduce_outer_inner",
  doc: "One thread per (split s, kept index c): sums x[o, c, q] over its share of the " +
    "flattened (o, q) range; the result goes to y[s * mid + c] (splits > 1) or y[c].",
  params: { outer: "u32", mid: "u32", inner: "u32", splits: "u32", xOff: "u32", yOff: "u32" },
  bindings: {
    x: { type: "float", access: "read" },
    y: { type: "float", access: "read_write" },
  },
  variants: ["", "acc"],
  workgroupSize: RED_WG,
  body: ({ variant, load, store }) =>
    flatMain(
      "t",
      "p.mid * p.splits",
      `  let c = t % p.mid;
  let s = t / p.mid;
  let len = p.outer * p.inner;
  let per = (len + p.splits - 1u) / p.splits;
  let beg = min(s * per, len);
  let end = min(beg + per, len);
  var acc = 0.0;
  var o = beg / p.inner;
  var q = beg % p.inner;
  var e = beg;
  while (e < end) {
    let run = min(p.inner - q, end - e);
    let base = p.xOff + (o * p.mid + c) * p.inner + q;
    for (var u = 0u; u < run; u++) { acc += ${load("x", "x[base + u]")}; }
    e += run;
    o += 1u;
    q = 0u;
  }
  let yi = p.yOff + s * p.mid + c;
  ${store("y", "y[yi]", variant === "acc" ? `${load("y", "y[yi]")} + acc` : "acc")}`,
    ),
});

function dispatchReduce(
  y: TensorRange,
  x: TensorRange,
  outer: number,
  mid: number,
  inner: number,
  splits: number,
  accumulate: boolean,
): void {
  reduceKernel.dispatch({
    op: "reduceStrided",
    variant: accumulate ? "acc" : "",
    params: { outer, mid, inner, splits, xOff: x.base, yOff: y.base },
    bindings: { x, y },
    workgroups: grid1d(mid * splits, RED_WG),
  });
}
