/**
 * The row convolution of the depthwise family: the forward pass, and (variant `flip`) the
 * stride-1 backward to the input, which is the same correlation of `dy` with the flipped kernel.
 * One thread per {@linkcode V} consecutive outputs of a row loads each input row span once
 * (llvmpipe runs each invocation as a SIMD lane, so fewer loads and integer divisions per output
 * matter most). Also the WGSL the weight-gradient kernels share with it (the row span's
 * constants and taps).
 *
 * @module
 */

import { grid1d, type Tensor } from "../../gpu/mod.ts";
import { bindingRange } from "../_binding.ts";
import { assignAs, type FloatDType, loadF32 } from "../_dtype.ts";
import { defineKernel, flatMain, perSizes, variantProduct } from "../_kernel.ts";
import { type RowConvPass, rowSpan, V, WG } from "./plan.ts";

/**
 * WGSL constants of the kernels that read a row span per unit of {@linkcode V} outputs: `KH`,
 * `KW`, `SW`, `DW` and `SPAN` (see `rowSpan`).
 *
 * @returns The declarations, one a line.
 * @example
 * ```ts
 * import { rowConsts } from "./row_conv.ts";
 * rowConsts(3, 3, 1, 1).split("\n").at(-1); // "const SPAN = 6;"
 * ```
 */
export function rowConsts(kh: number, kw: number, sw: number, dw: number): string {
  return `const KH = ${kh};
const KW = ${kw};
const SW = ${sw};
const DW = ${dw};
const SPAN = ${rowSpan(kw, sw, dw)};`;
}

/**
 * WGSL: the loop over the kernel rows of a unit of {@linkcode V} outputs (after `base`, `iy0` and
 * `ix0` are defined: its plane's first element in `x`, its first input row and column): for each
 * row inside the plane, loads the row span into `row` (zero outside the plane; only where
 * `guard`, a WGSL condition followed by `&&`, holds), then runs `tap` (a statement) for each tap
 * `kx` (see {@linkcode rowTaps}).
 *
 * @returns The loop, indented for an entry point's body.
 * @example
 * ```ts
 * import { rowLoop, rowTaps } from "./row_conv.ts";
 * const loop = rowLoop("f32", "", `acc += vec4f(${rowTaps(1)}) * wt[ky * KW + kx];`);
 * ```
 */
export function rowLoop(x: FloatDType, guard: string, tap: string): string {
  return `  for (var ky = 0; ky < KH; ky++) {
    let iy = iy0 + ky * p.dh;
    if (iy < 0 || iy >= i32(p.h)) { continue; }
    let rbase = base + u32(iy) * p.w;
    var row: array<f32, SPAN>;
    for (var t = 0; t < SPAN; t++) {
      let ix = ix0 + t;
      if (${guard}ix >= 0 && ix < i32(p.w)) { row[t] = ${loadF32(x, "x[rbase + u32(ix)]")}; }
    }
    for (var kx = 0; kx < KW; kx++) {
      ${tap}
    }
  }`;
}

/**
 * WGSL: the {@linkcode V} inputs of the span `row` under tap `kx` of the unit's outputs (stride
 * `sw`), comma-separated (the components of a `vec4f`).
 *
 * @returns The expressions.
 * @example
 * ```ts
 * import { rowTaps } from "./row_conv.ts";
 * rowTaps(2); // "row[0 + kx * DW], row[2 + kx * DW], row[4 + kx * DW], row[6 + kx * DW]"
 * ```
 */
export function rowTaps(sw: number): string {
  return Array.from({ length: V }, (_, v) => `row[${v * sw} + kx * DW]`).join(", ");
}

/** The variants of the row-convolution kernel: `flip` (backward to the input), `bias`. */
const ROWCONV_VARIANTS = variantProduct(["", "flip"], ["", "bias"]);

/**
 * The row-convolution kernel, specialized on the kernel size, the horizontal stride and dilation:
 * the forward pass, and (variant `flip`) the stride-1 backward to the input, which is the same
 * correlation of dy with the flipped kernel and padding `(k - 1) * d - p`.
 */
const rowConvKernel = perSizes((kh: number, kw: number, sw: number, dw: number) => {
  const span = rowSpan(kw, sw, dw);
  const taps = rowTaps(sw);
  return defineKernel({
    name: `depthwise_rowconv_${kh}x${kw}_sw${sw}_dw${dw}`,
    doc: `Depthwise conv forward, or (flip) backward to the input at stride 1 (input dy, output ` +
      `dx, weights flipped, padding (k - 1) * d - p): one thread per (plane, oy, block of ${V} ` +
      `consecutive ox); idx = (plane * oh + oy) * owb + block (flat over a grid1d launch), ` +
      "local to one range of planes: global plane planeOff + plane, starting at element xBase " +
      `of the x binding and yBase of the y binding. For each of the ${kh} kernel rows it loads ` +
      `the ${span} inputs its ${V} outputs need into registers (zero outside the plane), then ` +
      `accumulates the ${kw} taps into a vec4.`,
    params: {
      c: "u32",
      h: "u32",
      w: "u32",
      oh: "u32",
      ow: "u32",
      owb: "u32",
      sh: "i32",
      ph: "i32",
      pw: "i32",
      dh: "i32",
      total: "u32",
      planeOff: "u32",
      xBase: "u32",
      yBase: "u32",
    },
    bindings: {
      x: { type: "float", access: "read" },
      wt: { type: "float", access: "read" },
      bias: { type: "float", access: "read", variants: ["bias", "flip_bias"] },
      y: { type: "float", access: "read_write" },
    },
    variants: ROWCONV_VARIANTS,
    workgroupSize: WG,
    body: ({ dtypes: dt, variant }) => {
      const parts = variant.split("_");
      const flip = parts.includes("flip"), bias = parts.includes("bias");
      const wIndex = flip ? "(KH - 1 - ky) * KW + (KW - 1 - kx)" : "ky * KW + kx";
      const main = flatMain(
        "idx",
        "p.total",
        `  let rows = p.oh * p.owb;
  let plane = idx / rows;
  let r = idx - plane * rows;
  let oy = r / p.owb;
  let ox0 = (r - oy * p.owb) * ${V}u;
  let ch = (p.planeOff + plane) % p.c;
  let base = p.xBase + plane * p.h * p.w;
  let iy0 = i32(oy) * p.sh - p.ph;
  let ix0 = i32(ox0) * SW - p.pw;
  let wbase = ch * u32(KH * KW);
  var acc = vec4f(0.0);
${rowLoop(dt.x, "", `acc += vec4f(${taps}) * ${loadF32(dt.wt, `wt[wbase + u32(${wIndex})]`)};`)}
  ${bias ? `acc += ${loadF32(dt.bias, "bias[ch]")};` : ""}
  let o = p.yBase + (plane * p.oh + oy) * p.ow + ox0;
  let n = min(p.ow - ox0, ${V}u);
  for (var v = 0u; v < n; v++) { ${assignAs(dt.y, "y[o + v]", "=", "acc[v]")} }`,
      );
      return `${rowConsts(kh, kw, sw, dw)}

${main}`;
    },
  });
});

/**
 * Records a row-convolution pass: `y` (planes of `oh x ow`, overwritten) from `x` (planes of
 * `h x w`), the weights `w` (and the bias `b`), one dispatch per range of planes. The tensors are
 * checked by the caller.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { adapterProfile } from "../_adapter.ts";
 * import { depthwiseWindow } from "./geometry.ts";
 * import { planDepthwise, type RowConvPass } from "./plan.ts";
 * import { recordRowConv } from "./row_conv.ts";
 * const gpu = await getGpu();
 * const op = "depthwiseConv2dForward";
 * const window = depthwiseWindow(op, { n: 1, c: 2, h: 5, w: 5, kernel: 3 });
 * const plan = planDepthwise({ op, window, call: "forward" }, adapterProfile(gpu));
 * const [x, w, y] = [gpu.zeros([1, 2, 5, 5]), gpu.zeros([2, 1, 3, 3]), gpu.empty([1, 2, 3, 3])];
 * recordRowConv(op, plan.forward as RowConvPass, { y, x, w });
 * ```
 */
export function recordRowConv(
  op: string,
  pass: RowConvPass,
  io: { y: Tensor; x: Tensor; w: Tensor; b?: Tensor | undefined },
): void {
  const g = pass.window, owb = pass.owb;
  const hw = g.h * g.w, ohw = g.oh * g.ow;
  const kernel = rowConvKernel(g.kh, g.kw, g.sw, g.dw);
  const variant = [pass.flip ? "flip" : "", io.b ? "bias" : ""].filter((s) => s !== "").join(
    "_",
  ) as (typeof ROWCONV_VARIANTS)[number];
  for (const [p0, p1] of pass.ranges) {
    const xr = bindingRange(io.x, p0 * hw, (p1 - p0) * hw);
    const yr = bindingRange(io.y, p0 * ohw, (p1 - p0) * ohw);
    const total = (p1 - p0) * g.oh * owb;
    kernel.dispatch({
      op,
      variant,
      params: {
        c: g.c,
        h: g.h,
        w: g.w,
        oh: g.oh,
        ow: g.ow,
        owb,
        sh: g.sh,
        ph: g.ph,
        pw: g.pw,
        dh: g.dh,
        total,
        planeOff: p0,
        xBase: xr.base,
        yBase: yr.base,
      },
      bindings: { x: xr, wt: io.w, bias: io.b, y: yr },
      workgroups: grid1d(total, WG),
    });
  }
}
