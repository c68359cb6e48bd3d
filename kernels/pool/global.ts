/**
 * Global average pooling (`nn.AdaptiveAvgPool2d((1, 1))`): the kernels and their recorders. The
 * forward pass uses one thread per `(b, ch)` plane or, for planes longer than one segment (at
 * most `GLOBAL_SEGMENT` elements, to stay under llvmpipe's silent cap of 65535 loop iterations
 * per invocation), one thread per segment and a second pass that adds the segments' f32 sums;
 * the backward pass uses one thread per input element. `plan.ts` sizes the segments and the
 * ranges of planes.
 *
 * @module
 */

import { grid1d, type Tensor } from "../../gpu/mod.ts";
import { bindingRange } from "../_binding.ts";
import { defineKernel, flatMain } from "../_kernel.ts";
import { type GlobalPoolPlan, WG } from "./plan.ts";
import { bindPlanes } from "./window.ts";

/**
 * Global average pool forward (or its first pass for planes longer than one segment), specialized
 * on the storage types of x and of the output (y, or the f32 partial sums).
 */
const globalForward = defineKernel({
  name: "global_avgpool_fwd",
  doc: "Global average pool forward (or its first pass for planes longer than one segment). " +
    "One thread per (plane, segment), t = plane * splits + s, over one range of planes: sums " +
    "x[xBase + plane * hw + s * seg ..] (at most seg elements: bounded loop) in f32. With one " +
    "segment per plane it writes y[yBase + plane] = sum / hw, else out[yBase + t] = the " +
    "segment's sum (rounded once to the output's type).",
  params: { planes: "u32", hw: "u32", splits: "u32", seg: "u32", xBase: "u32", yBase: "u32" },
  bindings: {
    x: { type: "float", access: "read" },
    y: { type: "float", access: "read_write" },
  },
  workgroupSize: WG,
  body: ({ dtypes: dt }) =>
    flatMain(
      "t",
      "p.planes * p.splits",
      `  let plane = t / p.splits;
  let s = t - plane * p.splits;
  let beg = s * p.seg;
  let len = min(p.seg, p.hw - beg);
  let base = p.xBase + plane * p.hw + beg;
  var acc = 0.0;
  for (var i = 0u; i < len; i++) { acc += f32(x[base + i]); }
  if (p.splits == 1u) {
    y[p.yBase + plane] = ${dt.y}(acc / f32(p.hw));
  } else {
    y[p.yBase + t] = ${dt.y}(acc);
  }`,
    ),
});

/** Second pass of the global average pool forward (f32 partial sums), specialized on y's type. */
const globalFinal = defineKernel({
  name: "global_avgpool_final",
  doc: "Global average pool forward, second pass for long planes. One thread per plane: " +
    "y[plane] = sum of its splits f32 segment sums (in order) / hw, rounded once to y's type.",
  params: { planes: "u32", hw: "u32", splits: "u32" },
  bindings: {
    partial: { type: "f32", access: "read" },
    y: { type: "float", access: "read_write" },
  },
  workgroupSize: WG,
  body: ({ dtypes: dt }) =>
    flatMain(
      "plane",
      "p.planes",
      `  var acc = 0.0;
  for (var s = 0u; s < p.splits; s++) { acc += partial[plane * p.splits + s]; }
  y[plane] = ${dt.y}(acc / f32(p.hw));`,
    ),
});

/** Global average pool backward, specialized on the storage types of dy and dx. */
const globalBackward = defineKernel({
  name: "global_avgpool_bwd",
  doc: "Global average pool backward. One thread per input element idx of one range of planes: " +
    "dx[dxBase + idx] = dy[dyBase + idx / hw] / hw (in f32, rounded once to dx's type).",
  params: { total: "u32", hw: "u32", dyBase: "u32", dxBase: "u32" },
  bindings: {
    dy: { type: "float", access: "read" },
    dx: { type: "float", access: "read_write" },
  },
  workgroupSize: WG,
  body: ({ dtypes: dt }) =>
    flatMain(
      "idx",
      "p.total",
      `  dx[p.dxBase + idx] = ${dt.dx}(f32(dy[p.dyBase + idx / p.hw]) / f32(p.hw));`,
    ),
});

/**
 * Records a global average pool forward: `y` `[n, c, 1, 1]` (overwritten) from `x`, as `plan`
 * says. The tensors are checked by the caller.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { adapterProfile } from "../_adapter.ts";
 * import { recordGlobalAvgPoolForward } from "./global.ts";
 * import { planGlobalAvgPool } from "./plan.ts";
 * const gpu = await getGpu();
 * const dims = { n: 2, c: 3, h: 4, w: 4 };
 * const plan = planGlobalAvgPool({ op: "globalAvgPoolForward", dims }, adapterProfile(gpu));
 * recordGlobalAvgPoolForward("globalAvgPoolForward", plan, {
 *   y: gpu.empty([2, 3, 1, 1]),
 *   x: gpu.zeros([2, 3, 4, 4]),
 * });
 * ```
 */
export function recordGlobalAvgPoolForward(
  op: string,
  plan: GlobalPoolPlan,
  io: { y: Tensor; x: Tensor },
): void {
  const { planes, hw, splits, seg } = plan;
  const partial = splits > 1 ? io.x.gpu.empty([planes, splits]) : undefined;
  for (const range of plan.ranges) {
    const [p0, p1] = range, np = p1 - p0;
    const x = bindPlanes(io.x, range, hw);
    // With splits, the first pass writes partial[plane * splits + s] (the range's planes).
    const out = partial
      ? bindingRange(partial, p0 * splits, np * splits)
      : bindPlanes(io.y, range, 1);
    globalForward.dispatch({
      op,
      params: { planes: np, hw, splits, seg, xBase: x.base, yBase: out.base },
      bindings: { x, y: out },
      workgroups: grid1d(np * splits, WG),
    });
  }
  if (partial) {
    globalFinal.dispatch({
      op,
      params: { planes, hw, splits },
      bindings: { partial, y: io.y },
      workgroups: grid1d(planes, WG),
    });
    partial.dispose();
  }
}

/**
 * Records a global average pool backward: `dx` `[n, c, h, w]` (overwritten) from `dy`, over
 * `plan`'s ranges of planes. The tensors are checked by the caller.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { adapterProfile } from "../_adapter.ts";
 * import { recordGlobalAvgPoolBackward } from "./global.ts";
 * import { planGlobalAvgPool } from "./plan.ts";
 * const gpu = await getGpu();
 * const dims = { n: 2, c: 3, h: 4, w: 4 };
 * const plan = planGlobalAvgPool({ op: "globalAvgPoolBackward", dims }, adapterProfile(gpu));
 * recordGlobalAvgPoolBackward("globalAvgPoolBackward", plan, {
 *   dx: gpu.empty([2, 3, 4, 4]),
 *   dy: gpu.zeros([2, 3, 1, 1]),
 * });
 * ```
 */
export function recordGlobalAvgPoolBackward(
  op: string,
  plan: GlobalPoolPlan,
  io: { dx: Tensor; dy: Tensor },
): void {
  const { hw } = plan;
  for (const range of plan.ranges) {
    const dx = bindPlanes(io.dx, range, hw);
    const dy = bindPlanes(io.dy, range, 1);
    const total = (range[1] - range[0]) * hw;
    globalBackward.dispatch({
      op,
      params: { total, hw, dyBase: dy.base, dxBase: dx.base },
      bindings: { dy, dx },
      workgroups: grid1d(total, WG),
    });
  }
}
