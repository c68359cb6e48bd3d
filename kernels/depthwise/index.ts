/**
 * Depthwise 2-D convolution (`nn.Conv2d(c, c, k, groups=c)`, channel multiplier 1), as in
 * MobileNet: forward, and backward to the input, the weight and an optional bias.
 *
 * The family, one file per part:
 * - `index.ts` (this module): the entry points, which check their tensors, plan the call and
 *   record the plan's passes;
 * - `geometry.ts`: the parameters, their validation and the resolved window (weights
 *   `[c, 1, kh, kw]`, input `[n, c, h, w]`, output `[n, c, oh, ow]`, sizes exactly as PyTorch);
 * - `plan.ts`: `planDepthwise`, the pure planner (the path of each pass, ranges of planes or
 *   samples that fit one storage binding, the weight gradient's chunks under llvmpipe's silent
 *   cap of 65535 loop iterations per invocation);
 * - the kernels, specialized on the kernel size and, where it pays, the stride, so that tap loops
 *   unroll (llvmpipe runs each invocation as a SIMD lane, so fewer loads and integer divisions
 *   per output matter most): `row_conv.ts` (the forward pass, and the input gradient at stride 1,
 *   a correlation of `dy` with the flipped kernel: one thread per 4 consecutive outputs of a row),
 *   `input_grad.ts` (the input gradient at larger strides: a gather over blocks of `sh x sw`
 *   inputs aligned to the stride, no atomics), `weight_grad.ts` (the weight and bias gradients:
 *   a reduction over `n * oh * ow` per channel, serial or in two passes);
 * - their vec4 paths, which the plan prefers where the sizes allow (llvmpipe loads a vec4 for
 *   about the cost of a scalar): `plane.ts` (planes of at most 144 elements, one thread per 1-4
 *   whole planes with compile-time indices: forward and input gradient; its weight gradient is
 *   in `weight_grad.ts`), `row_tile.ts` (widths multiples of 4: tiles of whole vec4 rows for the
 *   forward pass, the flipped stride-1 input gradient and, transposed, the strided one) and
 *   `weight_tile.ts` (the weight gradient's pass 1 in bands of vec4 rows).
 *
 * Storage types: every tensor may be f32 or f16, each binding its own (the training configuration
 * of `--precision f16`: `x`, `y`, `dy`, `dx` and the weights `w` f16, the bias and the parameter
 * gradients `dw`, `db` f32). Values are converted to f32 on load and rounded once on store; the
 * convolution sums, the weight-gradient reductions and their partial sums stay f32. With every
 * tensor f32 the kernels are those of before f16 existed, text included.
 *
 * Each kernel is described once with `defineKernel` (kernels/_kernel.ts), one description per
 * specialization on sizes (kernel size, stride, dilation, padding as each needs); its variants
 * (`flip`, `bias`; which of `dw`, `db` and `acc`) and storage types are the description's.
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
import { type DepthwiseParams, depthwiseWindow } from "./geometry.ts";
import { recordBlockGather } from "./input_grad.ts";
import { type DepthwisePlan, type DepthwiseProblem, planDepthwise } from "./plan.ts";
import { recordRowConv } from "./row_conv.ts";
import { recordRowTile, recordRowTileDx } from "./row_tile.ts";
import { recordPlane } from "./plane.ts";
import { recordWeightGrad } from "./weight_grad.ts";

export { checkDepthwise, type DepthwiseParams } from "./geometry.ts";

/** The plan of a call on `t`'s device. */
function plan(problem: DepthwiseProblem, t: Tensor): DepthwisePlan {
  return planDepthwise(problem, adapterProfile(t.gpu), bindingLimit(t.gpu));
}

/**
 * Depthwise convolution forward: `y[b, ch] = conv2d(x[b, ch], w[ch]) (+ bias[ch])`.
 * `y` is overwritten. Tensors are f32 or f16, each its own (sums in f32, `y` rounded once).
 *
 * @throws {TypeError} when a tensor's shape does not match the parameters, or a tensor is not
 *   f32 or f16 (or is f16 on a device without `shader-f16`).
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { checkDepthwise, depthwiseConv2dForward } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const p = { n: 2, c: 32, h: 48, w: 48, kernel: 3, padding: 1 };
 * const x = gpu.zeros([2, 32, 48, 48]);
 * const w = gpu.zeros([32, 1, 3, 3]);
 * const y = gpu.empty(checkDepthwise(p));
 * depthwiseConv2dForward({ y, x, w }, p);
 * ```
 */
export function depthwiseConv2dForward(
  io: { y: Tensor; x: Tensor; w: Tensor; b?: Tensor },
  p: DepthwiseParams,
): void {
  const op = "depthwiseConv2dForward";
  const r = depthwiseWindow(op, p);
  checkFloat(op, "x", io.x, [r.n, r.c, r.h, r.w]);
  checkFloat(op, "w", io.w, [r.c, 1, r.kh, r.kw]);
  if (io.b) checkFloat(op, "b", io.b, [r.c]);
  checkFloat(op, "y", io.y, [r.n, r.c, r.oh, r.ow]);
  const { forward } = plan({ op, window: r, call: "forward" }, io.x);
  if (forward?.path === "plane") recordPlane(op, forward, io);
  else if (forward?.tile) recordRowTile(op, forward, io);
  else if (forward) recordRowConv(op, forward, io);
}

/**
 * Depthwise convolution backward. Computes any of `dx` (overwritten), `dw` and `db` (overwritten,
 * or `+=` with `accumulate: true`) from `dy`; `x` is needed for `dw`, `w` for `dx`. Tensors are
 * f32 or f16, each its own (e.g. f16 `dy`, `x`, `w`, `dx` with f32 `dw`, `db`: sums in f32, each
 * output rounded once).
 *
 * @throws {TypeError} when a tensor's shape does not match the parameters, or a tensor is not
 *   f32 or f16 (or is f16 on a device without `shader-f16`).
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { depthwiseConv2dBackward } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const p = { n: 2, c: 32, h: 48, w: 48, kernel: 3, stride: 2, padding: 1 };
 * const x = gpu.zeros([2, 32, 48, 48]);
 * const w = gpu.zeros([32, 1, 3, 3]);
 * const dy = gpu.zeros([2, 32, 24, 24]);
 * const dx = gpu.empty(x.shape);
 * const dw = gpu.zeros(w.shape);
 * depthwiseConv2dBackward({ dx, dw, dy, x, w }, { ...p, accumulate: true });
 * ```
 */
export function depthwiseConv2dBackward(
  io: { dx?: Tensor; dw?: Tensor; db?: Tensor; dy: Tensor; x: Tensor; w: Tensor },
  p: DepthwiseParams & { readonly accumulate?: boolean },
): void {
  const op = "depthwiseConv2dBackward";
  const r = depthwiseWindow(op, p);
  checkFloat(op, "dy", io.dy, [r.n, r.c, r.oh, r.ow]);
  checkFloat(op, "x", io.x, [r.n, r.c, r.h, r.w]);
  checkFloat(op, "w", io.w, [r.c, 1, r.kh, r.kw]);
  if (io.dx) checkFloat(op, "dx", io.dx, [r.n, r.c, r.h, r.w]);
  if (io.dw) checkFloat(op, "dw", io.dw, [r.c, 1, r.kh, r.kw]);
  if (io.db) checkFloat(op, "db", io.db, [r.c]);
  const { inputGrad, weightGrad } = plan({
    op,
    window: r,
    call: "backward",
    dx: io.dx !== undefined,
    dw: io.dw !== undefined,
    db: io.db !== undefined,
    accumulate: p.accumulate ?? false,
  }, io.dy);
  if (io.dx && inputGrad) {
    const row = { y: io.dx, x: io.dy, w: io.w };
    if (inputGrad.path === "plane") recordPlane(op, inputGrad, row);
    else if (inputGrad.path === "rowConv" && inputGrad.tile) recordRowTile(op, inputGrad, row);
    else if (inputGrad.path === "rowConv") recordRowConv(op, inputGrad, row);
    else if (inputGrad.path === "rowTileDx") {
      recordRowTileDx(op, inputGrad, { dx: io.dx, dy: io.dy, w: io.w });
    } else recordBlockGather(op, inputGrad, { dx: io.dx, dy: io.dy, w: io.w });
  }
  if (weightGrad) recordWeightGrad(op, weightGrad, io);
}
