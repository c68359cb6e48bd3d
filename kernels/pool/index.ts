/**
 * 2-D pooling with PyTorch's semantics (`ceil_mode=False`): max pooling with argmax indices,
 * average pooling (`count_include_pad=True`) and global average pooling
 * (`AdaptiveAvgPool2d((1, 1))`), forward and backward.
 *
 * The family, one file per part:
 * - `index.ts` (this module): the entry points, which check their tensors, plan the call and
 *   record the plan;
 * - `geometry.ts`: the parameters, their validation and the resolved window (output size
 *   `oh = floor((h + 2 * ph - kh) / sh) + 1`, and the same for the width);
 * - `plan.ts`: the pure planners (ranges of planes that fit one storage binding, segments of
 *   long planes);
 * - `window.ts`: max and average pooling's kernels, forward (one thread per output element
 *   scanning its window, loops unrolled per kernel size) and backward (a gather over blocks of
 *   `sh x sw` inputs aligned to the stride, see `../_gather.ts`: overlapping windows sum in
 *   ascending output order without float atomics);
 * - `global.ts`: global average pooling's kernels (one thread per plane or plane segment
 *   forward, one per input element backward).
 *
 * Tensors larger than one storage binding (128 MiB on llvmpipe, e.g. AlexNet's first activation
 * at batch 128) are processed in ranges of whole planes, one dispatch per range.
 *
 * Float tensors are f32 or f16, each independently (e.g. f16 activations and gradients); argmax
 * indices are i32. Arithmetic and accumulation are f32: f16 values are converted on load and
 * rounded once on store (the maximum of f16 values is one of them: exact).
 *
 * Outputs must not alias inputs: WebGPU rejects a buffer bound both read-only and read-write in
 * one dispatch.
 *
 * @module
 */

import type { Tensor } from "../../gpu/mod.ts";
import { adapterProfile } from "../_adapter.ts";
import { bindingLimit } from "../_binding.ts";
import { checkFloat } from "../_dtype.ts";
import type { PlaneWindow } from "../_geometry.ts";
import {
  checkI32,
  checkPoolDims,
  type GlobalPoolParams,
  type Pool2dParams,
  poolWindow,
} from "./geometry.ts";
import { recordGlobalAvgPoolBackward, recordGlobalAvgPoolForward } from "./global.ts";
import { planGlobalAvgPool, planPool2d, type Pool2dPlan } from "./plan.ts";
import { type PoolKind, recordPool2dBackward, recordPool2dForward } from "./window.ts";

export { checkPool2d, type GlobalPoolParams, type Pool2dParams } from "./geometry.ts";

/** The plan of a windowed pooling call on `t`'s device. */
function plan(op: string, window: PlaneWindow, t: Tensor): Pool2dPlan {
  return planPool2d({ op, window }, adapterProfile(t.gpu), bindingLimit(t.gpu));
}

/** Checks and records a max (with `argmax`) or average pooling forward. */
function poolForward(
  op: string,
  kind: PoolKind,
  io: { y: Tensor; argmax?: Tensor; x: Tensor },
  p: Pool2dParams,
): void {
  const r = poolWindow(op, p);
  checkFloat(op, "x", io.x, [r.n, r.c, r.h, r.w]);
  checkFloat(op, "y", io.y, [r.n, r.c, r.oh, r.ow]);
  if (kind === "max") checkI32(op, "argmax", io.argmax as Tensor, [r.n, r.c, r.oh, r.ow]);
  recordPool2dForward(op, kind, plan(op, r, io.x), io);
}

/** Checks and records a max (with `argmax`) or average pooling backward. */
function poolBackward(
  op: string,
  kind: PoolKind,
  io: { dx: Tensor; dy: Tensor; argmax?: Tensor },
  p: Pool2dParams,
): void {
  const r = poolWindow(op, p);
  checkFloat(op, "dy", io.dy, [r.n, r.c, r.oh, r.ow]);
  if (kind === "max") checkI32(op, "argmax", io.argmax as Tensor, [r.n, r.c, r.oh, r.ow]);
  checkFloat(op, "dx", io.dx, [r.n, r.c, r.h, r.w]);
  recordPool2dBackward(op, kind, plan(op, r, io.dx), io);
}

/**
 * Max pool forward (`nn.MaxPool2d(kernel, stride, padding, return_indices=True)`). Overwrites
 * `y` with the window maxima and `argmax` (an `i32` tensor shaped like `y`) with the flat index
 * `iy * w + ix` of each maximum in its input plane, as PyTorch's indices; ties keep the first
 * index in row-major window order, padding counts as `-inf`. `x` and `y` are f32 or f16 (each
 * independently).
 *
 * @throws {TypeError} when a tensor's shape or dtype does not match the parameters.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { checkPool2d, maxPool2dForward } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const p = { n: 2, c: 96, h: 54, w: 54, kernel: 3, stride: 2 };
 * const x = gpu.zeros([2, 96, 54, 54]);
 * const y = gpu.empty(checkPool2d(p));
 * const argmax = gpu.empty(y.shape, { dtype: "i32" });
 * maxPool2dForward({ y, argmax, x }, p);
 * ```
 */
export function maxPool2dForward(
  io: { y: Tensor; argmax: Tensor; x: Tensor },
  p: Pool2dParams,
): void {
  poolForward("maxPool2dForward", "max", io, p);
}

/**
 * Max pool backward: `dx` (overwritten) gets `dy` at each window's argmax, summed (in f32) where
 * overlapping windows share a maximum. `dy` and `dx` are f32 or f16 (each independently).
 *
 * @throws {TypeError} when a tensor's shape or dtype does not match the parameters.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { maxPool2dBackward } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const p = { n: 2, c: 96, h: 54, w: 54, kernel: 3, stride: 2 };
 * const dy = gpu.zeros([2, 96, 26, 26]);
 * const argmax = gpu.zeros([2, 96, 26, 26], { dtype: "i32" });
 * const dx = gpu.empty([2, 96, 54, 54]);
 * maxPool2dBackward({ dx, dy, argmax }, p);
 * ```
 */
export function maxPool2dBackward(
  io: { dx: Tensor; dy: Tensor; argmax: Tensor },
  p: Pool2dParams,
): void {
  poolBackward("maxPool2dBackward", "max", io, p);
}

/**
 * Average pool forward (`nn.AvgPool2d(kernel, stride, padding)`, `count_include_pad=True`):
 * `y` is overwritten with window sums divided by the window size (padding included). `x` and `y`
 * are f32 or f16 (each independently); the sums are f32.
 *
 * @throws {TypeError} when a tensor's shape or dtype does not match the parameters.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { avgPool2dForward, checkPool2d } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const p = { n: 4, c: 6, h: 28, w: 28, kernel: 2, stride: 2 };
 * const x = gpu.zeros([4, 6, 28, 28]);
 * const y = gpu.empty(checkPool2d(p)); // [4, 6, 14, 14]
 * avgPool2dForward({ y, x }, p);
 * ```
 */
export function avgPool2dForward(io: { y: Tensor; x: Tensor }, p: Pool2dParams): void {
  poolForward("avgPool2dForward", "avg", { y: io.y, x: io.x }, p);
}

/**
 * Average pool backward: `dx` (overwritten) gets each window's `dy / window size`, summed (in
 * f32) over overlapping windows. `dy` and `dx` are f32 or f16 (each independently).
 *
 * @throws {TypeError} when a tensor's shape or dtype does not match the parameters.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { avgPool2dBackward } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const p = { n: 4, c: 6, h: 28, w: 28, kernel: 2, stride: 2 };
 * const dy = gpu.zeros([4, 6, 14, 14]);
 * const dx = gpu.empty([4, 6, 28, 28]);
 * avgPool2dBackward({ dx, dy }, p);
 * ```
 */
export function avgPool2dBackward(io: { dx: Tensor; dy: Tensor }, p: Pool2dParams): void {
  poolBackward("avgPool2dBackward", "avg", { dx: io.dx, dy: io.dy }, p);
}

/**
 * Global average pool forward (`nn.AdaptiveAvgPool2d((1, 1))`): `y` `[n, c, 1, 1]` is overwritten
 * with the mean of each `h x w` plane of `x` `[n, c, h, w]`. `x` and `y` are f32 or f16 (each
 * independently); the sums are f32.
 *
 * @throws {TypeError} when a tensor's shape or dtype does not match the parameters.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { globalAvgPoolForward } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const x = gpu.zeros([8, 512, 3, 3]);
 * const y = gpu.empty([8, 512, 1, 1]);
 * globalAvgPoolForward({ y, x }, { n: 8, c: 512, h: 3, w: 3 });
 * ```
 */
export function globalAvgPoolForward(io: { y: Tensor; x: Tensor }, p: GlobalPoolParams): void {
  const op = "globalAvgPoolForward";
  checkPoolDims(op, p);
  checkFloat(op, "x", io.x, [p.n, p.c, p.h, p.w]);
  checkFloat(op, "y", io.y, [p.n, p.c, 1, 1]);
  const gpu = io.x.gpu;
  const pl = planGlobalAvgPool({ op, dims: p }, adapterProfile(gpu), bindingLimit(gpu));
  recordGlobalAvgPoolForward(op, pl, io);
}

/**
 * Global average pool backward: `dx` `[n, c, h, w]` is overwritten with `dy[b, ch] / (h * w)`.
 * `dy` and `dx` are f32 or f16 (each independently).
 *
 * @throws {TypeError} when a tensor's shape or dtype does not match the parameters.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { globalAvgPoolBackward } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const dy = gpu.zeros([8, 512, 1, 1]);
 * const dx = gpu.empty([8, 512, 3, 3]);
 * globalAvgPoolBackward({ dx, dy }, { n: 8, c: 512, h: 3, w: 3 });
 * ```
 */
export function globalAvgPoolBackward(io: { dx: Tensor; dy: Tensor }, p: GlobalPoolParams): void {
  const op = "globalAvgPoolBackward";
  checkPoolDims(op, p);
  checkFloat(op, "dy", io.dy, [p.n, p.c, 1, 1]);
  checkFloat(op, "dx", io.dx, [p.n, p.c, p.h, p.w]);
  const gpu = io.dx.gpu;
  const pl = planGlobalAvgPool({ op, dims: p }, adapterProfile(gpu), bindingLimit(gpu));
  recordGlobalAvgPoolBackward(op, pl, io);
}
