/**
 * The data-movement kernels of conv2d's im2col + GEMM path, each described once with
 * `defineKernel` (its float bindings f32 or f16 per call):
 *
 * - {@linkcode im2col}: unfolds images of x into the columns `col[cIn*kh*kw, images*oh*ow]` that
 *   the forward GEMM and the weight-gradient GEMM read (a sliding-window form for horizontal
 *   stride 1 and dilation 1, one description per kernel width);
 * - {@linkcode col2im}: folds `dcol` back into dx, each thread owning one row of dx (no atomics),
 *   in one of three forms the plan picks ({@linkcode Col2imForm}): a scatter into an f32 dx, a
 *   gather for horizontal stride 1 into an f32 dx, and a per-element gather into a dx of any type
 *   (f16: the taps summed in f32, rounded once);
 * - {@linkcode permuteNc}: `[nb, c, len] -> [c, nb * len]` (dy for the GEMMs, and x as the
 *   pointwise convolution's columns).
 *
 * The host functions take ranges of tensors; splitting work over dispatches (col2im's loop
 * budget) is the plan's (`plan.ts`).
 *
 * @module
 */

import { grid1d } from "../../gpu/mod.ts";
import { convert } from "../_dtype.ts";
import type { TensorRange } from "../_binding.ts";
import { defineKernel, flatMain, perSizes } from "../_kernel.ts";
import type { Conv2dGeometry } from "./geometry.ts";

/** Threads per workgroup of every kernel here. */
const WG = 64;

/** Widest kernel of the sliding-window im2col (one register per tap of a row). */
export const WINDOW_MAX_KW = 16;

/** The `Params` of the im2col and col2im kernels: the geometry and two element offsets. */
const GEOMETRY = {
  nb: "u32",
  cIn: "u32",
  h: "u32",
  w: "u32",
  kh: "u32",
  kw: "u32",
  sh: "u32",
  sw: "u32",
  ph: "u32",
  pw: "u32",
  dh: "u32",
  dw: "u32",
  oh: "u32",
  ow: "u32",
  srcOff: "u32",
  dstOff: "u32",
} as const;

/** The values of {@linkcode GEOMETRY} for `nb` images of `g`. */
function geometryParams(g: Conv2dGeometry, nb: number, srcOff: number, dstOff: number) {
  const { cIn, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow } = g;
  return { nb, cIn, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, srcOff, dstOff };
}

// -------------------------------------------------------------------------- im2col ----

/** What the im2col kernels share: their params, bindings (x to col) and workgroup size. */
const IM2COL = {
  params: GEOMETRY,
  bindings: {
    x: { type: "float", access: "read" },
    col: { type: "float", access: "read_write" },
  },
  workgroupSize: WG,
} as const;

const im2colKernel = defineKernel({
  name: "conv2d_im2col",
  doc: "im2col: x (NCHW) to col[cIn*kh*kw, nb*oh*ow]",
  ...IM2COL,
  body: ({ load, store }) => {
    const main = flatMain(
      "t",
      null,
      `  let rows = p.nb * p.oh;
  if (t >= rows * p.cIn * p.kh * p.kw) { return; }
  let r = t % rows;
  let kidx = t / rows;
  let oy = r % p.oh;
  let img = r / p.oh;
  let kx = kidx % p.kw;
  let ky = (kidx / p.kw) % p.kh;
  let ci = kidx / (p.kw * p.kh);
  let cols = rows * p.ow;
  let dst = p.dstOff + kidx * cols + r * p.ow;
  let iy = i32(oy * p.sh + ky * p.dh) - i32(p.ph);
  if (iy < 0 || iy >= i32(p.h)) {
    for (var ox = 0u; ox < p.ow; ox++) { col[dst + ox] = 0.0; }
    return;
  }
  let src = p.srcOff + ((img * p.cIn + ci) * p.h + u32(iy)) * p.w;
  let ix0 = i32(kx * p.dw) - i32(p.pw);
  for (var ox = 0u; ox < p.ow; ox++) {
    let ix = ix0 + i32(ox * p.sw);
    var v = 0.0;
    if (ix >= 0 && ix < i32(p.w)) { v = ${load("x", "x[src + u32(ix)]")}; }
    ${store("col", "col[dst + ox]", "v")}
  }`,
    );
    return `// One thread per (kernel tap kidx = (ci*kh + ky)*kw + kx, image, output row oy): it writes the
// ow columns col[kidx][(image*oh + oy)*ow + ox], zero where the tap falls in the padding.
${main}`;
  },
});

/**
 * im2col for horizontal stride 1 and dilation 1, one description per kernel width `kw`: one
 * thread per (ci, ky, image, oy) row keeps the kw input values under the kernel in registers and
 * slides them along the row, so each input is loaded once instead of kw times; it writes the kw
 * col rows (ci, ky, 0..kw-1).
 */
const im2colWindowKernel = perSizes((kw: number) =>
  defineKernel({
    name: `conv2d_im2col_window_kw${kw}`,
    doc: "im2col for horizontal stride 1 and dilation 1: x (NCHW) to col[cIn*kh*kw, nb*oh*ow]",
    ...IM2COL,
    body: ({ load, store }) => {
      const taps = Array.from({ length: kw }, (_, j) => j);
      const at = (ix: string) =>
        `select(0.0, ${
          load("x", `x[src + u32(clamp(${ix}, 0, i32(p.w) - 1))]`)
        }, ${ix} >= 0 && ${ix} < i32(p.w))`;
      const main = flatMain(
        "t",
        null,
        `  let rows = p.nb * p.oh;
  if (t >= rows * p.cIn * p.kh) { return; }
  let r = t % rows;
  let cky = t / rows;
  let oy = r % p.oh;
  let img = r / p.oh;
  let ky = cky % p.kh;
  let ci = cky / p.kh;
  let cols = rows * p.ow;
  let dst = p.dstOff + cky * ${kw}u * cols + r * p.ow;
  let iy = i32(oy * p.sh + ky * p.dh) - i32(p.ph);
  if (iy < 0 || iy >= i32(p.h)) {
    for (var ox = 0u; ox < p.ow; ox++) {
${taps.map((j) => `      col[dst + ${j}u * cols + ox] = 0.0;`).join("\n")}
    }
    return;
  }
  let src = p.srcOff + ((img * p.cIn + ci) * p.h + u32(iy)) * p.w;
  let ix0 = -i32(p.pw);
${taps.map((j) => `  var v${j} = ${at(`(ix0 + ${j})`)};`).join("\n")}
  for (var ox = 0u; ox < p.ow; ox++) {
${taps.map((j) => `    ${store("col", `col[dst + ${j}u * cols + ox]`, `v${j}`)}`).join("\n")}
${taps.slice(1).map((j) => `    v${j - 1} = v${j};`).join("\n")}
    let ixn = ix0 + i32(ox) + ${kw};
    v${kw - 1} = ${at("ixn")};
  }`,
      );
      return `// One thread per (ci*kh + ky, image, oy): registers v0..v${
        kw - 1
      } hold x[iy][ox - pw + kx] for
// the current ox; each step stores them to col rows (ci, ky, kx) and slides by one input.
${main}`;
    },
  })
);

/**
 * Records the im2col of `nb` images of convolution `g` from the range `x` into the range `col`
 * (`[cIn*kh*kw, nb*oh*ow]`), each in its own tensor's storage type (f32 or f16).
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { bindingRange } from "../_binding.ts";
 * import { conv2dGeometry } from "./geometry.ts";
 * import { im2col } from "./im2col.ts";
 * const gpu = await getGpu();
 * const g = conv2dGeometry({ n: 1, cIn: 2, h: 5, w: 5, cOut: 3, kernel: 3, padding: 1 });
 * const x = gpu.zeros([1, 2, 5, 5]), col = gpu.empty([2 * 9 * 25]);
 * im2col(g, bindingRange(x, 0, x.size), bindingRange(col, 0, col.size), 1);
 * ```
 */
export function im2col(g: Conv2dGeometry, x: TensorRange, col: TensorRange, nb: number): void {
  const params = geometryParams(g, nb, x.base, col.base);
  if (g.sw === 1 && g.dw === 1 && g.kw > 1 && g.kw <= WINDOW_MAX_KW) {
    im2colWindowKernel(g.kw).dispatch({
      op: "conv2d",
      params,
      bindings: { x, col },
      workgroups: grid1d(g.cIn * g.kh * nb * g.oh, WG),
    });
    return;
  }
  im2colKernel.dispatch({
    op: "conv2d",
    params,
    bindings: { x, col },
    workgroups: grid1d(g.cIn * g.kh * g.kw * nb * g.oh, WG),
  });
}

// -------------------------------------------------------------------------- col2im ----

/**
 * WGSL: the entry point of a col2im kernel, whose thread t owns row (img, ci, iy) of dx, starting
 * at dx[dst], and runs `body`.
 */
function col2imMain(body: string): string {
  return flatMain(
    "t",
    "p.nb * p.cIn * p.h",
    `  let iy = t % p.h;
  let ci = (t / p.h) % p.cIn;
  let img = t / (p.h * p.cIn);
  let dst = p.dstOff + t * p.w;
${body}`,
  );
}

/** The bindings and workgroup size of the col2im kernels into an f32 dx (col f32 or f16). */
const COL2IM_F32 = {
  bindings: {
    col: { type: "float", access: "read" },
    dx: { type: "f32", access: "read_write" },
  },
  workgroupSize: WG,
} as const;

/** Scatter col2im into an f32 dx (col f32 or f16), over kernel rows [kyBeg, kyEnd). */
const col2imScatterKernel = defineKernel({
  name: "conv2d_col2im",
  doc: "col2im (scatter): col[cIn*kh*kw, nb*oh*ow] to an f32 dx (NCHW), kernel rows kyBeg..kyEnd",
  params: { ...GEOMETRY, kyBeg: "u32", kyEnd: "u32", zero: "u32" },
  ...COL2IM_F32,
  body: ({ load }) => {
    const main = col2imMain(`  if (p.zero != 0u) {
    for (var ix = 0u; ix < p.w; ix++) { dx[dst + ix] = 0.0; }
  }
  let cols = p.nb * p.oh * p.ow;
  for (var ky = p.kyBeg; ky < p.kyEnd; ky++) {
    let ty = i32(iy + p.ph) - i32(ky * p.dh);
    if (ty < 0) { break; }
    if (u32(ty) % p.sh != 0u) { continue; }
    let oy = u32(ty) / p.sh;
    if (oy >= p.oh) { continue; }
    let rowBase = p.srcOff + (img * p.oh + oy) * p.ow;
    for (var kx = 0u; kx < p.kw; kx++) {
      let kidx = (ci * p.kh + ky) * p.kw + kx;
      let src = rowBase + kidx * cols;
      let ix0 = i32(kx * p.dw) - i32(p.pw);
      for (var ox = 0u; ox < p.ow; ox++) {
        let ix = ix0 + i32(ox * p.sw);
        if (ix >= 0 && ix < i32(p.w)) {
          dx[dst + u32(ix)] += ${load("col", "col[src + ox]")};
        }
      }
    }
  }`);
    return `// One thread per row (image, ci, iy) of dx: zeroes it (when p.zero), then adds every col entry
// whose tap lands on it: for each ky in [kyBeg, kyEnd) with (iy + ph - ky*dh) = oy*sh,
// 0 <= oy < oh, each kx and each ox, dx[.., ox*sw - pw + kx*dw] += col[kidx][(image*oh + oy)*ow
// + ox]. No two threads share a row.
${main}`;
  },
});

/** Gather col2im for horizontal stride 1 into an f32 dx (col f32 or f16). */
const col2imGatherKernel = defineKernel({
  name: "conv2d_col2im_gather_s1",
  doc: "col2im (gather, horizontal stride 1): col[cIn*kh*kw, nb*oh*ow] to an f32 dx (NCHW)",
  params: GEOMETRY,
  ...COL2IM_F32,
  body: ({ load }) => {
    const main = col2imMain(`  let cols = p.nb * p.oh * p.ow;
  var first = true;
  for (var ky = 0u; ky < p.kh; ky++) {
    let ty = i32(iy + p.ph) - i32(ky * p.dh);
    if (ty < 0) { break; }
    let oy = u32(ty) / p.sh;
    if (oy * p.sh != u32(ty) || oy >= p.oh) { continue; }
    let rowBase = p.srcOff + (ci * p.kh + ky) * p.kw * cols + (img * p.oh + oy) * p.ow;
    for (var ix = 0u; ix < p.w; ix++) {
      var acc = 0.0;
      for (var kx = 0u; kx < p.kw; kx++) {
        let ox = i32(ix + p.pw) - i32(kx * p.dw);
        if (ox >= 0 && ox < i32(p.ow)) { acc += ${
      load("col", "col[rowBase + kx * cols + u32(ox)]")
    }; }
      }
      if (first) { dx[dst + ix] = acc; } else { dx[dst + ix] += acc; }
    }
    first = false;
  }
  if (first) {
    for (var ix = 0u; ix < p.w; ix++) { dx[dst + ix] = 0.0; }
  }`);
    return `// Horizontal stride 1: one thread per row (image, ci, iy) of dx. For each ky whose output row
// oy = (iy + ph - ky*dh) / sh is exact and in range, and each ix, it sums
// col[(ci, ky, kx)][(image*oh + oy)*ow + ox] over kx with ox = ix + pw - kx*dw in range, and
// writes (first valid ky) or adds it to dx; a row no tap reaches is zeroed.
${main}`;
  },
});

/**
 * Gather col2im into a dx of any storage type (used for f16 dx, which must not accumulate in
 * memory), over the columns [ixBeg, ixEnd): each element's taps are summed in f32 and stored
 * once.
 */
const col2imPixelKernel = defineKernel({
  name: "conv2d_col2im_pixel",
  doc: "col2im (gather per element): col[cIn*kh*kw, nb*oh*ow] to dx (NCHW), columns ixBeg..ixEnd",
  params: { ...GEOMETRY, ixBeg: "u32", ixEnd: "u32" },
  bindings: {
    col: { type: "float", access: "read" },
    dx: { type: "float", access: "read_write" },
  },
  workgroupSize: WG,
  body: ({ load, store }) => {
    const main = col2imMain(`  let cols = p.nb * p.oh * p.ow;
  for (var ix = p.ixBeg; ix < p.ixEnd; ix++) {
    var acc = 0.0;
    for (var ky = 0u; ky < p.kh; ky++) {
      let ty = i32(iy + p.ph) - i32(ky * p.dh);
      if (ty < 0) { break; }
      let oy = u32(ty) / p.sh;
      if (oy * p.sh != u32(ty) || oy >= p.oh) { continue; }
      let rowBase = p.srcOff + (ci * p.kh + ky) * p.kw * cols + (img * p.oh + oy) * p.ow;
      for (var kx = 0u; kx < p.kw; kx++) {
        let tx = i32(ix + p.pw) - i32(kx * p.dw);
        if (tx < 0) { break; }
        let ox = u32(tx) / p.sw;
        if (ox * p.sw == u32(tx) && ox < p.ow) {
          acc += ${load("col", "col[rowBase + kx * cols + ox]")};
        }
      }
    }
    ${store("dx", "dx[dst + ix]", "acc")}
  }`);
    return `// One thread per row (image, ci, iy) of dx, over its columns ix in [ixBeg, ixEnd): sums in f32
// col[(ci, ky, kx)][(image*oh + oy)*ow + ox] over every ky with oy = (iy + ph - ky*dh) / sh
// exact and < oh, and every kx with ox = (ix + pw - kx*dw) / sw exact and < ow, then stores
// the sum once (0 where no tap lands). No two threads share an element.
${main}`;
  },
});

/**
 * How col2im runs (chosen by the plan from dx's type and the loop budget): `pixel` (any dx, one
 * dispatch per range of columns), `gather` (f32 dx, horizontal stride 1, one dispatch) or
 * `scatter` (f32 dx, one dispatch per range of kernel rows, the first zeroing dx).
 */
export interface Col2imForm {
  /** The kernel. */
  readonly form: "pixel" | "gather" | "scatter";
  /** Per dispatch: its columns `[ixBeg, ixEnd)` (pixel) or kernel rows `[kyBeg, kyEnd)`. */
  readonly ranges: readonly (readonly [number, number])[];
}

/**
 * Records the col2im of `nb` images of convolution `g`: the range `col` (`[cIn*kh*kw, nb*oh*ow]`)
 * folded into the range `dx` (overwritten), in the form and dispatches `c` gives.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { bindingRange } from "../_binding.ts";
 * import { conv2dGeometry } from "./geometry.ts";
 * import { col2im } from "./im2col.ts";
 * const gpu = await getGpu();
 * const g = conv2dGeometry({ n: 1, cIn: 2, h: 5, w: 5, cOut: 3, kernel: 3, padding: 1 });
 * const col = gpu.zeros([2 * 9 * 25]), dx = gpu.empty([1, 2, 5, 5]);
 * col2im(g, bindingRange(col, 0, col.size), bindingRange(dx, 0, dx.size), 1, {
 *   form: "gather",
 *   ranges: [[0, 3]],
 * });
 * ```
 */
export function col2im(
  g: Conv2dGeometry,
  col: TensorRange,
  dx: TensorRange,
  nb: number,
  c: Col2imForm,
): void {
  const workgroups = grid1d(nb * g.cIn * g.h, WG);
  const params = geometryParams(g, nb, col.base, dx.base);
  for (const [a, b] of c.ranges) {
    if (c.form === "pixel") {
      col2imPixelKernel.dispatch({
        op: "conv2d",
        params: { ...params, ixBeg: a, ixEnd: b },
        bindings: { col, dx },
        workgroups,
      });
    } else if (c.form === "gather") {
      col2imGatherKernel.dispatch({ op: "conv2d", params, bindings: { col, dx }, workgroups });
    } else {
      col2imScatterKernel.dispatch({
        op: "conv2d",
        params: { ...params, kyBeg: a, kyEnd: b, zero: a === 0 ? 1 : 0 },
        bindings: { col, dx },
        workgroups,
      });
    }
  }
}

// ------------------------------------------------------------------------- permute ----

/** Positions per thread of the permutation. */
const RUN = 16;

const permuteKernel = defineKernel({
  name: "conv2d_permute_nc",
  doc: "permutation [nb, c, len] -> [c, nb * len]",
  params: { nb: "u32", c: "u32", len: "u32", runs: "u32", srcOff: "u32", dstOff: "u32" },
  bindings: {
    src: { type: "float", access: "read" },
    dst: { type: "float", access: "read_write" },
  },
  workgroupSize: WG,
  body: ({ dtypes }) => {
    const main = flatMain(
      "t",
      "p.c * p.nb * p.runs",
      `  let q = t % p.runs;
  let row = t / p.runs;
  let img = row % p.nb;
  let ch = row / p.nb;
  let beg = q * ${RUN}u;
  let end = min(beg + ${RUN}u, p.len);
  let s = p.srcOff + (img * p.c + ch) * p.len;
  let d = p.dstOff + (ch * p.nb + img) * p.len;
  for (var i = beg; i < end; i++) { dst[d + i] = ${
        convert("src[s + i]", dtypes.src, dtypes.dst)
      }; }`,
    );
    return `// [nb, c, len] -> [c, nb * len]. One thread per (channel, image, run of ${RUN} positions).
${main}`;
  },
});

/**
 * Records the permutation `[nb, c, len] -> [c, nb * len]` of the range `src` into the range
 * `dst`, each in its own tensor's storage type (f32 or f16).
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { bindingRange } from "../_binding.ts";
 * import { permuteNc } from "./im2col.ts";
 * const gpu = await getGpu();
 * const dy = gpu.zeros([2, 3, 4, 4]), dyT = gpu.empty([3, 2 * 16]);
 * permuteNc(bindingRange(dy, 0, dy.size), bindingRange(dyT, 0, dyT.size), { nb: 2, c: 3, len: 16 });
 * ```
 */
export function permuteNc(
  src: TensorRange,
  dst: TensorRange,
  s: { readonly nb: number; readonly c: number; readonly len: number },
): void {
  const runs = Math.ceil(s.len / RUN);
  permuteKernel.dispatch({
    op: "conv2d",
    params: { nb: s.nb, c: s.c, len: s.len, runs, srcOff: src.base, dstOff: dst.base },
    bindings: { src, dst },
    workgroups: grid1d(s.c * s.nb * runs, WG),
  });
}
