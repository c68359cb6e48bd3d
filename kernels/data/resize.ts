/**
 * {@linkcode resizeBilinear}: bilinear resize of f32 or f16 images, exactly
 * `F.interpolate(x, size, mode="bilinear", align_corners=False)` (see `index.ts`), in ranges of
 * whole planes that each fit one binding.
 *
 * @module
 */

import { formatShape, grid1d, type Tensor } from "../../gpu/mod.ts";
import { sameShape } from "../../gpu/shape.ts";
import { bindingRange, unitRanges } from "../_binding.ts";
import { floatDTypes } from "../_dtype.ts";
import { defineKernel, flatMain } from "../_kernel.ts";

/** Threads per workgroup of the resize kernel. */
const WG = 128;

const isPositiveInt = (v: unknown): v is number =>
  typeof v === "number" && Number.isInteger(v) && v > 0;

/** Hyper-parameters of {@linkcode resizeBilinear}. */
export interface ResizeParams {
  /** Output height. */
  readonly outH: number;
  /** Output width. */
  readonly outW: number;
}

/**
 * Validates the input shape `[N, C, H, W]` and sizes of {@linkcode resizeBilinear}; returns the
 * output shape `[N, C, outH, outW]`.
 *
 * @example
 * ```ts
 * import { checkResize } from "@modern-cnn/webgpu/kernels";
 * checkResize({ outH: 96, outW: 96 }, [8, 1, 28, 28]); // [8, 1, 96, 96]
 * ```
 */
export function checkResize(p: ResizeParams, xShape: readonly number[]): number[] {
  if (!isPositiveInt(p.outH) || !isPositiveInt(p.outW)) {
    throw new RangeError(
      `resizeBilinear: outH and outW must be positive integers, got ${p.outH} x ${p.outW}`,
    );
  }
  if (xShape.length !== 4 || xShape.some((d) => !isPositiveInt(d))) {
    throw new TypeError(
      `resizeBilinear: x has shape ${formatShape(xShape)}, expected [N, C, H, W] with sizes > 0`,
    );
  }
  return [xShape[0], xShape[1], p.outH, p.outW];
}

/**
 * The kernel of resizeBilinear: `x` and `y` f32 or f16 each (taps converted to f32 on load, the
 * interpolation in f32, rounded once on store).
 */
const resize = defineKernel({
  name: "resize_bilinear",
  doc: "one thread per output element t = ((n * C + c) * outH + oy) * outW + ox of " +
    "y [N, C, outH, outW]; bilinear with align_corners = False (PyTorch's source-index rule). " +
    "One dispatch per range of planes: t is local to it, which starts at element xBase of the x " +
    "binding and yBase of the y binding. Arithmetic in f32.",
  params: {
    total: "u32",
    inH: "u32",
    inW: "u32",
    outH: "u32",
    outW: "u32",
    xBase: "u32",
    scaleY: "f32",
    scaleX: "f32",
    yBase: "u32",
  },
  bindings: {
    y: { type: "float", access: "read_write" },
    x: { type: "float", access: "read" },
  },
  workgroupSize: WG,
  body: ({ load, store }) => {
    const tap = (i: string) => load("x", `x[${i}]`);
    const v = `ly0 * (lx0 * ${tap("r0 + x0")} + lx1 * ${tap("r0 + x1")}) + ly1 * (lx0 * ${
      tap("r1 + x0")
    } + lx1 * ${tap("r1 + x1")})`;
    return flatMain(
      "t",
      "p.total",
      /* wgsl */ `  let ox = t % p.outW;
  let oy = (t / p.outW) % p.outH;
  let plane = t / (p.outW * p.outH);
  let ry = max((f32(oy) + 0.5) * p.scaleY - 0.5, 0.0);
  let y0 = min(u32(ry), p.inH - 1u);
  let y1 = select(y0, y0 + 1u, y0 < p.inH - 1u);
  let ly1 = ry - f32(y0);
  let ly0 = 1.0 - ly1;
  let rx = max((f32(ox) + 0.5) * p.scaleX - 0.5, 0.0);
  let x0 = min(u32(rx), p.inW - 1u);
  let x1 = select(x0, x0 + 1u, x0 < p.inW - 1u);
  let lx1 = rx - f32(x0);
  let lx0 = 1.0 - lx1;
  let base = p.xBase + plane * p.inH * p.inW;
  let r0 = base + y0 * p.inW;
  let r1 = base + y1 * p.inW;
  ${store("y", "y[p.yBase + t]", v)}`,
    );
  },
});

/**
 * Records a bilinear resize of images `x [N, C, H, W]` into `y [N, C, outH, outW]`
 * (overwritten), exactly `F.interpolate(x, (outH, outW), mode="bilinear", align_corners=False)`
 * without antialias. `x` and `y` are f32 or f16 each (interpolated in f32, rounded once into
 * an f16 `y`).
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { resizeBilinear } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const x = gpu.tensor(new Float32Array([0, 1, 2, 3]), { shape: [1, 1, 2, 2] });
 * const y = gpu.empty([1, 1, 4, 4]);
 * resizeBilinear({ y, x }, { outH: 4, outW: 4 });
 * ```
 */
export function resizeBilinear(
  io: { readonly y: Tensor; readonly x: Tensor },
  p: ResizeParams,
): void {
  floatDTypes("resizeBilinear", { y: io.y, x: io.x });
  const out = checkResize(p, io.x.shape);
  if (!sameShape(io.y.shape, out)) {
    throw new TypeError(
      `resizeBilinear: y has shape ${formatShape(io.y.shape)}, expected ${formatShape(out)} ` +
        `for x ${formatShape(io.x.shape)}`,
    );
  }
  const [, , inH, inW] = io.x.shape;
  const hw = inH * inW, ohw = p.outH * p.outW;
  for (
    const [p0, p1] of unitRanges("resizeBilinear", io.x.gpu, out[0] * out[1], Math.max(hw, ohw))
  ) {
    const x = bindingRange(io.x, p0 * hw, (p1 - p0) * hw);
    const y = bindingRange(io.y, p0 * ohw, (p1 - p0) * ohw);
    const total = (p1 - p0) * ohw;
    resize.dispatch({
      op: "resizeBilinear",
      params: {
        total,
        inH,
        inW,
        outH: p.outH,
        outW: p.outW,
        xBase: x.base,
        scaleY: inH / p.outH,
        scaleX: inW / p.outW,
        yBase: y.base,
      },
      bindings: { y, x },
      workgroups: grid1d(total, WG),
    });
  }
}
