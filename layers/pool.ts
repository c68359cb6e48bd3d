/**
 * The pooling layers: max and average pooling over a window, and global average pooling.
 *
 * @module
 */

import type { Shape, Tensor } from "../gpu/mod.ts";
import {
  avgPool2dBackward,
  avgPool2dForward,
  checkPool2d,
  globalAvgPoolBackward,
  globalAvgPoolForward,
  maxPool2dBackward,
  maxPool2dForward,
} from "../kernels/pool/index.ts";
import { window2d, type Window2dParams } from "../kernels/_geometry.ts";
import { expectRank, type Layer, leaf, release } from "./layer.ts";

/**
 * Options of {@linkcode maxPool2d} and {@linkcode avgPool2d}: the window without dilation (stride
 * the window size by default; implicit padding, default 0, at most half the window).
 */
export interface Pool2dOptions extends Omit<Window2dParams, "dilation"> {}

function poolParams(kind: string, input: Shape, o: Pool2dOptions) {
  expectRank(kind, input, 4, "[n, c, h, w]");
  return {
    n: input[0],
    c: input[1],
    h: input[2],
    w: input[3],
    kernel: o.kernel,
    stride: o.stride ?? o.kernel,
    padding: o.padding ?? 0,
  };
}

/**
 * Max pooling (`torch.nn.MaxPool2d`, ceil_mode false). Forward saves the argmax of each window.
 *
 * @example
 * ```ts
 * import { maxPool2d } from "@modern-cnn/webgpu/layers";
 * maxPool2d({ kernel: 3, stride: 2 }).outputShape([1, 96, 54, 54]); // [1, 96, 26, 26]
 * ```
 */
export function maxPool2d(options: Pool2dOptions): Layer<{ argmax: Tensor; x: Shape }> {
  window2d("MaxPool2d", options, { stride: "kernel" }); // bad options fail here, not at the first use
  return leaf({
    kind: "MaxPool2d",
    outputShape: (input) => checkPool2d(poolParams("MaxPool2d", input, options)),
    forward(x, ctx) {
      const p = poolParams("MaxPool2d", x.shape, options);
      const shape = checkPool2d(p);
      const y = ctx.gpu.empty(shape, { dtype: x.dtype });
      const argmax = ctx.gpu.empty(shape, { dtype: "i32" });
      maxPool2dForward({ y, argmax, x }, p);
      return { y, cache: { argmax, x: x.shape } };
    },
    backward(dy, { cache, ctx, needDx }) {
      let dx: Tensor | null = null;
      if (needDx) {
        dx = ctx.gpu.empty(cache.x, { dtype: dy.dtype });
        maxPool2dBackward(
          { dx, dy, argmax: cache.argmax },
          poolParams("MaxPool2d", cache.x, options),
        );
      }
      release(cache.argmax);
      return dx;
    },
  });
}

/**
 * Average pooling (`torch.nn.AvgPool2d`, count_include_pad true). Saves nothing but the shape.
 *
 * @example
 * ```ts
 * import { avgPool2d } from "@modern-cnn/webgpu/layers";
 * avgPool2d({ kernel: 2 }).outputShape([1, 6, 28, 28]); // [1, 6, 14, 14]
 * ```
 */
export function avgPool2d(options: Pool2dOptions): Layer<Shape> {
  window2d("AvgPool2d", options, { stride: "kernel" }); // bad options fail here, not at the first use
  return leaf({
    kind: "AvgPool2d",
    outputShape: (input) => checkPool2d(poolParams("AvgPool2d", input, options)),
    forward(x, ctx) {
      const p = poolParams("AvgPool2d", x.shape, options);
      const y = ctx.gpu.empty(checkPool2d(p), { dtype: x.dtype });
      avgPool2dForward({ y, x }, p);
      return { y, cache: x.shape };
    },
    backward(dy, { cache, ctx, needDx }) {
      if (!needDx) return null;
      const dx = ctx.gpu.empty(cache, { dtype: dy.dtype });
      avgPool2dBackward({ dx, dy }, poolParams("AvgPool2d", cache, options));
      return dx;
    },
  });
}

/**
 * Global average pooling (`torch.nn.AdaptiveAvgPool2d((1, 1))`): `[n, c, h, w]` → `[n, c, 1, 1]`.
 *
 * @example
 * ```ts
 * import { globalAvgPool } from "@modern-cnn/webgpu/layers";
 * globalAvgPool().outputShape([2, 512, 3, 3]); // [2, 512, 1, 1]
 * ```
 */
export function globalAvgPool(): Layer<Shape> {
  const dims = (input: Shape) => {
    expectRank("AdaptiveAvgPool2d", input, 4, "[n, c, h, w]");
    return { n: input[0], c: input[1], h: input[2], w: input[3] };
  };
  return leaf({
    kind: "AdaptiveAvgPool2d",
    outputShape: (input) => (dims(input), [input[0], input[1], 1, 1]),
    forward(x, ctx) {
      const y = ctx.gpu.empty([x.shape[0], x.shape[1], 1, 1], { dtype: x.dtype });
      globalAvgPoolForward({ y, x }, dims(x.shape));
      return { y, cache: x.shape };
    },
    backward(dy, { cache, ctx, needDx }) {
      if (!needDx) return null;
      const dx = ctx.gpu.empty(cache, { dtype: dy.dtype });
      globalAvgPoolBackward({ dx, dy }, dims(cache));
      return dx;
    },
  });
}
