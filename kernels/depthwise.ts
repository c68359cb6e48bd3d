/**
 * Depthwise 2-D convolution (`nn.Conv2d(c, c, k, groups=c)`, channel multiplier 1), as in
 * MobileNet: forward, and backward to the input, the weight and an optional bias.
 *
 * Weights are `[c, 1, kh, kw]`, input `[n, c, h, w]`, output `[n, c, oh, ow]` with
 * `oh = floor((h + 2 * ph - dh * (kh - 1) - 1) / sh) + 1` (and the same for the width), exactly
 * as PyTorch.
 *
 * Kernels (specialized on the kernel size and, where it pays, the stride, so that tap loops
 * unroll; llvmpipe runs each invocation as a SIMD lane, so fewer loads and integer divisions per
 * output matter most):
 * - forward, and the backward to the input at stride 1 (a correlation of `dy` with the flipped
 *   kernel): one thread per 4 consecutive outputs of a row, loading each input row span once;
 * - backward to the input at larger strides: one thread per `sh x sw` block of inputs aligned
 *   to the stride, for which the covering outputs and taps are known at compile time (a gather:
 *   no atomics);
 * - backward to the weight and bias, a reduction over `n * oh * ow` per channel in units of 4
 *   outputs of a row: one thread per channel when a channel has few units, otherwise two passes
 *   (workgroups of `(chunk, channel)` reduce chunks into partial sums of every tap and of `dy`,
 *   then one thread per `(channel, tap)` adds the chunks in order). `dw` / `db` are overwritten
 *   or accumulated.
 *
 * Limits: every thread's loops stay well under llvmpipe's silent cap of 65535 iterations per
 * invocation (the serial weight-gradient path and the chunk size are sized from the loop count of
 * one unit of work, which grows with the kernel size). Tensors larger than one storage binding
 * (MobileNet's `[256, 64, 48, 48]` at its first strided depthwise layer, 151 MB) are processed in
 * ranges of whole planes (forward, backward to the input) or samples (backward to the weight: each
 * range reduces into its own chunks of partial sums), one dispatch per range.
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

import { grid1d, type Shape, type Tensor } from "../gpu/mod.ts";
import { bindingRange, LOOP_BUDGET, unitRanges } from "./_binding.ts";
import { assignAs, checkFloat, type FloatDType, loadF32 } from "./_dtype.ts";
import {
  checkPositiveInts,
  type PlaneWindow,
  planeWindow,
  window2d,
  type Window2dParams,
} from "./_geometry.ts";
import { defineKernel, perSizes, variantProduct } from "./_kernel.ts";

/** Threads per workgroup of every depthwise kernel. */
const WG = 64;
/**
 * Most units of work (an output row segment of up to 4 outputs) of one channel reduced by one
 * workgroup of the chunked weight-gradient pass (about 4096 outputs); fewer for large kernels.
 */
const CHUNK_UNITS = 1024;
/**
 * Most units per channel whose weight gradient is reduced serially by one thread per channel
 * (no workgroup barriers); longer reductions use the two-pass chunked one. Fewer for large
 * kernels.
 */
const SERIAL_UNITS = 512;

/**
 * Dimensions and hyper-parameters of a depthwise convolution: the window (kernel, stride 1, zero
 * padding 0, dilation 1 by default) and the sizes.
 */
export interface DepthwiseParams extends Window2dParams {
  /** Batch size. */
  readonly n: number;
  /** Channels (input = output = groups). */
  readonly c: number;
  /** Input height. */
  readonly h: number;
  /** Input width. */
  readonly w: number;
}

function resolve(op: string, p: DepthwiseParams): PlaneWindow {
  checkPositiveInts(op, p, ["n", "c", "h", "w"]);
  return planeWindow(op, p, window2d(op, p));
}

/**
 * Validates depthwise-convolution parameters and returns the output shape `[n, c, oh, ow]`.
 *
 * @throws {RangeError} for non-integer or out-of-range sizes, or an output smaller than 1x1.
 * @example
 * ```ts
 * import { checkDepthwise } from "@modern-cnn/webgpu/kernels";
 * checkDepthwise({ n: 8, c: 32, h: 48, w: 48, kernel: 3, stride: 2, padding: 1 }); // [8, 32, 24, 24]
 * ```
 */
export function checkDepthwise(p: DepthwiseParams): Shape {
  const r = resolve("depthwiseConv2d", p);
  return [r.n, r.c, r.oh, r.ow];
}

/** The window geometry fields of the weight-gradient kernels' `Params`, in struct order. */
const GEOMETRY = {
  c: "u32",
  h: "u32",
  w: "u32",
  oh: "u32",
  ow: "u32",
  sh: "i32",
  sw: "i32",
  ph: "i32",
  pw: "i32",
  dh: "i32",
  dw: "i32",
} as const;

/** Outputs along a row computed by one thread of the row-convolution kernel. */
const V = 4;

/** The variants of the row-convolution kernel: `flip` (backward to the input), `bias`. */
const ROWCONV_VARIANTS = variantProduct(["", "flip"], ["", "bias"]);

/**
 * The row-convolution kernel, specialized on the kernel size, the horizontal stride and dilation:
 * the forward pass, and (variant `flip`) the stride-1 backward to the input, which is the same
 * correlation of dy with the flipped kernel and padding `(k - 1) * d - p`.
 */
const rowConvKernel = perSizes((kh: number, kw: number, sw: number, dw: number) => {
  const span = (V - 1) * sw + (kw - 1) * dw + 1;
  const taps = Array.from({ length: V }, (_, v) => `row[${v * sw} + kx * DW]`).join(", ");
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
      return `const KH = ${kh};
const KW = ${kw};
const SW = ${sw};
const DW = ${dw};
const SPAN = ${span};

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= p.total) { return; }
  let rows = p.oh * p.owb;
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
  for (var ky = 0; ky < KH; ky++) {
    let iy = iy0 + ky * p.dh;
    if (iy < 0 || iy >= i32(p.h)) { continue; }
    let rbase = base + u32(iy) * p.w;
    var row: array<f32, SPAN>;
    for (var t = 0; t < SPAN; t++) {
      let ix = ix0 + t;
      if (ix >= 0 && ix < i32(p.w)) { row[t] = ${loadF32(dt.x, "x[rbase + u32(ix)]")}; }
    }
    for (var kx = 0; kx < KW; kx++) {
      acc += vec4f(${taps}) * ${loadF32(dt.wt, `wt[wbase + u32(${wIndex})]`)};
    }
  }
  ${bias ? `acc += ${loadF32(dt.bias, "bias[ch]")};` : ""}
  let o = p.yBase + (plane * p.oh + oy) * p.ow + ox0;
  let n = min(p.ow - ox0, ${V}u);
  for (var v = 0u; v < n; v++) { ${assignAs(dt.y, "y[o + v]", "=", "acc[v]")} }
}
`;
    },
  });
});

/**
 * Records the row-convolution kernel: `x` planes of `h x w` to `y` planes of `oh x ow`, one
 * dispatch per range of planes that fits one binding.
 */
function rowConv(
  op: string,
  x: Tensor,
  w: Tensor,
  b: Tensor | undefined,
  y: Tensor,
  g: Omit<PlaneWindow, "n"> & { readonly flip: boolean },
): void {
  const owb = Math.ceil(g.ow / V);
  const hw = g.h * g.w, ohw = g.oh * g.ow;
  const planes = y.size / ohw;
  const kernel = rowConvKernel(g.kh, g.kw, g.sw, g.dw);
  const variant = [g.flip ? "flip" : "", b ? "bias" : ""].filter((s) => s !== "").join(
    "_",
  ) as (typeof ROWCONV_VARIANTS)[number];
  for (const [p0, p1] of unitRanges(op, x.gpu, planes, Math.max(hw, ohw))) {
    const xr = bindingRange(x, p0 * hw, (p1 - p0) * hw);
    const yr = bindingRange(y, p0 * ohw, (p1 - p0) * ohw);
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
      bindings: { x: xr, wt: w, bias: b, y: yr },
      workgroups: grid1d(total, WG),
    });
  }
}

/**
 * Taps of one block-local coordinate along an axis for the strided backward to the input: the
 * input `i = block * s + u` receives from output `block + a` through tap `k` when
 * `u + pad - a * s = k * d` with `0 <= k < kernel`.
 */
function blockTaps(u: number, s: number, pad: number, k: number, d: number): [number, number][] {
  const out: [number, number][] = [];
  const span = (k - 1) * d;
  for (let a = Math.ceil((u + pad - span) / s); a <= Math.floor((u + pad) / s); a++) {
    const t = u + pad - a * s;
    if (t >= 0 && t <= span && t % d === 0) out.push([a, t / d]);
  }
  return out;
}

/**
 * The strided backward to the input, specialized on the kernel size, stride, padding and
 * dilation.
 */
const backwardDataBlockKernel = perSizes((
  kh: number,
  kw: number,
  sh: number,
  sw: number,
  ph: number,
  pw: number,
  dh: number,
  dw: number,
) =>
  defineKernel({
    name: `depthwise_bwd_data_block_k${kh}x${kw}_s${sh}x${sw}_p${ph}x${pw}_d${dh}x${dw}`,
    doc: `Depthwise conv backward to the input, strided. One thread per block of ${sh}x${sw} ` +
      `inputs, idx = (plane * hb + by) * wb + bx, inputs (by * ${sh} + u, bx * ${sw} + v): with ` +
      "the block aligned to the stride, which output (by + a, bx + b) reaches which input " +
      "through which tap is known at compile time, so the thread loads the dy patch it needs " +
      "and the used taps once and writes each input's sum (a gather: no atomics). idx is local " +
      "to one range of planes: global plane planeOff + plane, starting at element dyBase of dy " +
      "and dxBase of dx.",
    params: {
      c: "u32",
      h: "u32",
      w: "u32",
      oh: "u32",
      ow: "u32",
      hb: "u32",
      wb: "u32",
      total: "u32",
      planeOff: "u32",
      dyBase: "u32",
      dxBase: "u32",
    },
    bindings: {
      dy: { type: "float", access: "read" },
      wt: { type: "float", access: "read" },
      dx: { type: "float", access: "read_write" },
    },
    workgroupSize: WG,
    body: ({ dtypes: dt }) => {
      const rows = Array.from({ length: sh }, (_, u) => blockTaps(u, sh, ph, kh, dh));
      const cols = Array.from({ length: sw }, (_, v) => blockTaps(v, sw, pw, kw, dw));
      const as = [...new Set(rows.flat().map(([a]) => a))].sort((x, y) => x - y);
      const bs = [...new Set(cols.flat().map(([b]) => b))].sort((x, y) => x - y);
      const id = (v: number) => (v < 0 ? `m${-v}` : `${v}`);
      const lines: string[] = [];
      for (const a of as) {
        lines.push(`  let oy${id(a)} = i32(by) + ${a};`);
        lines.push(`  let okY${id(a)} = oy${id(a)} >= 0 && oy${id(a)} < i32(p.oh);`);
      }
      for (const b of bs) {
        lines.push(`  let ox${id(b)} = i32(bx) + ${b};`);
        lines.push(`  let okX${id(b)} = ox${id(b)} >= 0 && ox${id(b)} < i32(p.ow);`);
      }
      for (const a of as) {
        for (const b of bs) {
          const d = `d${id(a)}_${id(b)}`;
          lines.push(`  var ${d} = 0.0;`);
          lines.push(
            `  if (okY${id(a)} && okX${id(b)}) { ${d} = ${
              loadF32(dt.dy, `dy[obase + u32(oy${id(a)}) * p.ow + u32(ox${id(b)})]`)
            }; }`,
          );
        }
      }
      const used = new Set<string>();
      const body: string[] = [];
      for (let u = 0; u < sh; u++) {
        for (let v = 0; v < sw; v++) {
          const terms: string[] = [];
          for (const [a, ky] of rows[u]) {
            for (const [b, kx] of cols[v]) {
              used.add(`${ky}_${kx}`);
              terms.push(`d${id(a)}_${id(b)} * w${ky}_${kx}`);
            }
          }
          const target = `dx[ibase + (iy0 + ${u}u) * p.w + ix0 + ${v}u]`;
          const sum = terms.length ? terms.join(" + ") : "0.0";
          body.push(
            `  if (iy0 + ${u}u < p.h && ix0 + ${v}u < p.w) { ${
              assignAs(dt.dx, target, "=", sum)
            } }`,
          );
        }
      }
      for (const k of used) {
        const [ky, kx] = k.split("_").map(Number);
        lines.push(`  let w${k} = ${loadF32(dt.wt, `wt[wbase + ${ky * kw + kx}u]`)};`);
      }
      return `@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= p.total) { return; }
  let blocks = p.hb * p.wb;
  let plane = idx / blocks;
  let r = idx - plane * blocks;
  let by = r / p.wb;
  let bx = r - by * p.wb;
  let ch = (p.planeOff + plane) % p.c;
  let iy0 = by * ${sh}u;
  let ix0 = bx * ${sw}u;
  let ibase = p.dxBase + plane * p.h * p.w;
  let obase = p.dyBase + plane * p.oh * p.ow;
  let wbase = ch * ${kh * kw}u;
${lines.join("\n")}
${body.join("\n")}
}
`;
    },
  })
);

/** Taps reduced per round of the workgroup reduction (bounds the workgroup memory). */
function roundTaps(kk1: number): number {
  return Math.min(kk1, 32);
}

/** The `Params` of the weight-gradient kernels that run {@linkcode unitWgsl}, in struct order. */
const WEIGHT_PARAMS = {
  ...GEOMETRY,
  n: "u32",
  owb: "u32",
  chunk: "u32",
  chunks: "u32",
  stepOb: "u32",
  stepRow: "u32",
  xBase: "u32",
  dyBase: "u32",
  chunkOff: "u32",
} as const;

/**
 * WGSL shared by the weight-gradient kernels (after their declarations of `p`, `dy` and `x`):
 * `unit` adds the contribution of one unit of work, the outputs (oy, ox0 .. ox0 + 3) of one plane
 * (fewer at the row's end), to the per-tap sums: it loads dy as a vec4 (zero past the row), and
 * for each kernel row the input span those outputs read (zero outside the plane and past what
 * valid outputs use), then adds dot(dy, inputs under tap) for each tap, and sum(dy) for the bias.
 */
function unitWgsl(
  g: { kh: number; kw: number; sw: number; dw: number },
  dt: { dy: FloatDType; x: FloatDType },
): string {
  const { kh, kw, sw, dw } = g;
  const kk = kh * kw;
  const span = (V - 1) * sw + (kw - 1) * dw + 1;
  const taps = Array.from({ length: V }, (_, v) => `row[${v * sw} + kx * DW]`).join(", ");
  return `const KH = ${kh};
const KW = ${kw};
const SW = ${sw};
const DW = ${dw};
const SPAN = ${span};
const KK = ${kk}u;
const KK1 = ${kk + 1}u;

// plane is local to the range of samples bound (which starts at element xBase of x, dyBase of dy).
fn unit(plane: u32, oy: u32, ox0: u32, acc: ptr<function, array<f32, KK1>>) {
  let o = p.dyBase + (plane * p.oh + oy) * p.ow + ox0;
  let n = min(p.ow - ox0, ${V}u);
  var g = vec4f(0.0);
  for (var v = 0u; v < n; v++) { g[v] = ${loadF32(dt.dy, "dy[o + v]")}; }
  (*acc)[KK] += g.x + g.y + g.z + g.w;
  let base = p.xBase + plane * p.h * p.w;
  let iy0 = i32(oy) * p.sh - p.ph;
  let ix0 = i32(ox0) * SW - p.pw;
  let tmax = i32(n - 1u) * SW + (KW - 1) * DW;
  for (var ky = 0; ky < KH; ky++) {
    let iy = iy0 + ky * p.dh;
    if (iy < 0 || iy >= i32(p.h)) { continue; }
    let rbase = base + u32(iy) * p.w;
    var row: array<f32, SPAN>;
    for (var t = 0; t < SPAN; t++) {
      let ix = ix0 + t;
      if (t <= tmax && ix >= 0 && ix < i32(p.w)) { row[t] = ${
    loadF32(dt.x, "x[rbase + u32(ix)]")
  }; }
    }
    for (var kx = 0; kx < KW; kx++) {
      (*acc)[ky * KW + kx] += dot(g, vec4f(${taps}));
    }
  }
}`;
}

function weightParams(
  r: PlaneWindow,
  g: { n: number; chunk: number; chunks: number; xBase: number; dyBase: number; chunkOff: number },
): { readonly [K in keyof typeof WEIGHT_PARAMS]: number } {
  const owb = Math.ceil(r.ow / V);
  const { c, h, w, oh, ow, sh, sw, ph, pw, dh, dw } = r;
  return {
    c,
    h,
    w,
    oh,
    ow,
    sh,
    sw,
    ph,
    pw,
    dh,
    dw,
    n: g.n,
    owb,
    chunk: g.chunk,
    chunks: g.chunks,
    stepOb: WG % owb,
    stepRow: Math.floor(WG / owb),
    xBase: g.xBase,
    dyBase: g.dyBase,
    chunkOff: g.chunkOff,
  };
}

/** Loop iterations of one call of `unit` (see {@linkcode unitWgsl}), its own loop step included. */
function unitIterations(r: PlaneWindow): number {
  const span = (V - 1) * r.sw + (r.kw - 1) * r.dw + 1;
  return V + r.kh * (span + r.kw + 1) + 1;
}

/** Pass 1 of the chunked weight gradient, specialized as {@linkcode unitWgsl}. */
const backwardWeightPartialKernel = perSizes((kh: number, kw: number, sw: number, dw: number) => {
  const kk1 = kh * kw + 1;
  const r = roundTaps(kk1);
  return defineKernel({
    name: `depthwise_bwd_weight_partial_${kh}x${kw}_sw${sw}_dw${dw}`,
    doc: "Depthwise conv backward to the weight and bias, pass 1 of 2, over one range of " +
      "samples (one dispatch per range). The work of a channel is split in units (b, oy, block " +
      `of ${V} ox), unit index j = (b * oh + oy) * owb + block (b local to the range). Workgroup ` +
      "(chunk, ch) reduces units [chunk * chunkUnits, (chunk + 1) * chunkUnits) of channel ch: " +
      "thread lid takes j = start + lid, + WG, ... (row and block advanced without divisions) " +
      `and accumulates the ${kk1 - 1} tap sums and sum(dy) in registers; a tree reduction in ` +
      `workgroup memory (${r} sums per round) writes partial[(ch * chunks + chunkOff + chunk) * ` +
      `${kk1} + tap] (chunks: all ranges' chunks).`,
    params: WEIGHT_PARAMS,
    bindings: {
      dy: { type: "float", access: "read" },
      x: { type: "float", access: "read" },
      partial: { type: "f32", access: "read_write" },
    },
    workgroupSize: WG,
    body: ({ dtypes }) =>
      `const R = ${r}u;
${unitWgsl({ kh, kw, sw, dw }, dtypes)}
var<workgroup> red: array<f32, ${r * WG}>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3u) {
  let chunk = wid.x;
  let ch = wid.y;
  let units = p.n * p.oh * p.owb;
  let j0 = chunk * p.chunk + lid;
  let j1 = min((chunk + 1u) * p.chunk, units);
  var acc: array<f32, KK1>;
  for (var t = 0u; t < KK1; t++) { acc[t] = 0.0; }
  var row = j0 / p.owb;
  var ob = j0 % p.owb;
  for (var j = j0; j < j1; j += WG) {
    let b = row / p.oh;
    unit(b * p.c + ch, row - b * p.oh, ob * ${V}u, &acc);
    ob += p.stepOb;
    row += p.stepRow;
    if (ob >= p.owb) { ob -= p.owb; row += 1u; }
  }
  let out = (ch * p.chunks + p.chunkOff + chunk) * KK1;
  for (var r0 = 0u; r0 < KK1; r0 += R) {
    for (var t = 0u; t < R; t++) {
      let tap = min(r0 + t, KK1 - 1u);
      red[t * WG + lid] = acc[tap];
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
      if (lid < s) {
        for (var t = 0u; t < R; t++) { red[t * WG + lid] += red[t * WG + lid + s]; }
      }
      workgroupBarrier();
    }
    if (lid < R && r0 + lid < KK1) { partial[out + r0 + lid] = red[lid * WG]; }
    workgroupBarrier();
  }
}
`,
  });
});

/**
 * The variants of the kernels that write the weight gradient: which of `dw`, `db` they write
 * (bound in that order), and whether they accumulate (`acc`: `+=`) or overwrite.
 */
const OUTPUT_VARIANTS = variantProduct(["dw", "db", "dw_db"], ["", "acc"]);
type OutputVariant = (typeof OUTPUT_VARIANTS)[number];

/** The output variants that write `name`. */
const writing = (name: "dw" | "db") => OUTPUT_VARIANTS.filter((v) => v.split("_").includes(name));

/** The output variant for the outputs bound and `accumulate`. */
function outputVariant(dw: boolean, db: boolean, accumulate: boolean): OutputVariant {
  return [dw ? "dw" : "", db ? "db" : "", accumulate ? "acc" : ""].filter((s) => s !== "")
    .join("_") as OutputVariant;
}

/** The serial weight gradient, specialized as {@linkcode unitWgsl}. */
const backwardWeightSerialKernel = perSizes((kh: number, kw: number, sw: number, dw: number) =>
  defineKernel({
    name: `depthwise_bwd_weight_serial_${kh}x${kw}_sw${sw}_dw${dw}`,
    doc: "Depthwise conv backward to the weight and bias for short reductions (few outputs per " +
      `channel): one thread per channel walks all its units (b, oy, block of ${V} ox) in order, ` +
      `accumulating the ${kh * kw} tap sums and sum(dy) in registers (no barriers, no ` +
      "divisions), then overwrites (acc: accumulates into) dw[ch, tap] and db[ch].",
    params: WEIGHT_PARAMS,
    bindings: {
      dy: { type: "float", access: "read" },
      x: { type: "float", access: "read" },
      dw: { type: "float", access: "read_write", variants: writing("dw") },
      db: { type: "float", access: "read_write", variants: writing("db") },
    },
    variants: OUTPUT_VARIANTS,
    workgroupSize: WG,
    body: ({ dtypes: dt, variant }) => {
      const parts = variant.split("_");
      const op = parts.includes("acc") ? "+=" : "=";
      return `${unitWgsl({ kh, kw, sw, dw }, dt)}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let ch = gid.x;
  if (ch >= p.c) { return; }
  var acc: array<f32, KK1>;
  for (var t = 0u; t < KK1; t++) { acc[t] = 0.0; }
  for (var b = 0u; b < p.n; b++) {
    for (var oy = 0u; oy < p.oh; oy++) {
      for (var ob = 0u; ob < p.owb; ob++) { unit(b * p.c + ch, oy, ob * ${V}u, &acc); }
    }
  }
  ${
        parts.includes("dw")
          ? `for (var t = 0u; t < KK; t++) { ${assignAs(dt.dw, "dw[ch * KK + t]", op, "acc[t]")} }`
          : ""
      }
  ${parts.includes("db") ? assignAs(dt.db, "db[ch]", op, "acc[KK]") : ""}
}
`;
    },
  })
);

/** Pass 2 of the chunked weight gradient, specialized on the kernel size. */
const backwardWeightFinalKernel = perSizes((kh: number, kw: number) => {
  const kk = kh * kw;
  const kk1 = kk + 1;
  return defineKernel({
    name: `depthwise_bwd_weight_final_${kh}x${kw}`,
    doc: "Depthwise conv backward to the weight and bias, pass 2 of 2. One thread per (ch, " +
      `tap), idx = ch * ${kk1} + tap, adds the per-chunk partial sums of pass 1 in chunk order ` +
      `and overwrites (acc: accumulates into) dw[ch * ${kk} + tap] (tap < ${kk}) or db[ch] ` +
      `(tap ${kk}).`,
    params: { c: "u32", chunks: "u32" },
    bindings: {
      partial: { type: "f32", access: "read" },
      dw: { type: "float", access: "read_write", variants: writing("dw") },
      db: { type: "float", access: "read_write", variants: writing("db") },
    },
    variants: OUTPUT_VARIANTS,
    workgroupSize: WG,
    body: ({ dtypes: dt, variant }) => {
      const parts = variant.split("_");
      const op = parts.includes("acc") ? "+=" : "=";
      return `const KK1 = ${kk1}u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let idx = gid.x;
  if (idx >= p.c * KK1) { return; }
  let ch = idx / KK1;
  let tap = idx % KK1;
  var s = 0.0;
  for (var k = 0u; k < p.chunks; k++) { s += partial[(ch * p.chunks + k) * KK1 + tap]; }
  if (tap < KK1 - 1u) {
    ${parts.includes("dw") ? assignAs(dt.dw, "dw[ch * (KK1 - 1u) + tap]", op, "s") : ""}
  } else {
    ${parts.includes("db") ? assignAs(dt.db, "db[ch]", op, "s") : ""}
  }
}
`;
    },
  });
});

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
  const r = resolve(op, p);
  checkFloat(op, "x", io.x, [r.n, r.c, r.h, r.w]);
  checkFloat(op, "w", io.w, [r.c, 1, r.kh, r.kw]);
  if (io.b) checkFloat(op, "b", io.b, [r.c]);
  checkFloat(op, "y", io.y, [r.n, r.c, r.oh, r.ow]);
  rowConv(op, io.x, io.w, io.b, io.y, { ...r, flip: false });
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
  const r = resolve(op, p);
  checkFloat(op, "dy", io.dy, [r.n, r.c, r.oh, r.ow]);
  checkFloat(op, "x", io.x, [r.n, r.c, r.h, r.w]);
  checkFloat(op, "w", io.w, [r.c, 1, r.kh, r.kw]);
  if (io.dx) checkFloat(op, "dx", io.dx, [r.n, r.c, r.h, r.w]);
  if (io.dw) checkFloat(op, "dw", io.dw, [r.c, 1, r.kh, r.kw]);
  if (io.db) checkFloat(op, "db", io.db, [r.c]);
  const gpu = io.dy.gpu;
  if (io.dx) {
    if (r.sh === 1 && r.sw === 1) {
      rowConv(op, io.dy, io.w, undefined, io.dx, {
        c: r.c,
        h: r.oh,
        w: r.ow,
        oh: r.h,
        ow: r.w,
        kh: r.kh,
        kw: r.kw,
        sh: 1,
        sw: 1,
        ph: (r.kh - 1) * r.dh - r.ph,
        pw: (r.kw - 1) * r.dw - r.pw,
        dh: r.dh,
        dw: r.dw,
        flip: true,
      });
    } else {
      const hb = Math.ceil(r.h / r.sh), wb = Math.ceil(r.w / r.sw);
      const hw = r.h * r.w, ohw = r.oh * r.ow;
      for (const [p0, p1] of unitRanges(op, gpu, r.n * r.c, Math.max(hw, ohw))) {
        const dy = bindingRange(io.dy, p0 * ohw, (p1 - p0) * ohw);
        const dx = bindingRange(io.dx, p0 * hw, (p1 - p0) * hw);
        const total = (p1 - p0) * hb * wb;
        backwardDataBlockKernel(r.kh, r.kw, r.sh, r.sw, r.ph, r.pw, r.dh, r.dw).dispatch({
          op,
          params: {
            c: r.c,
            h: r.h,
            w: r.w,
            oh: r.oh,
            ow: r.ow,
            hb,
            wb,
            total,
            planeOff: p0,
            dyBase: dy.base,
            dxBase: dx.base,
          },
          bindings: { dy, wt: io.w, dx },
          workgroups: grid1d(total, WG),
        });
      }
    }
  }
  if (!io.dw && !io.db) return;
  const variant = outputVariant(io.dw !== undefined, io.db !== undefined, p.accumulate ?? false);
  const kk1 = r.kh * r.kw + 1;
  const owb = Math.ceil(r.ow / V);
  // Loop budget: a serial thread runs units * (unit + 1) iterations, its (b, oy) loops (at most
  // 2 * units) and its tap loops; a chunked thread chunkUnits / WG units plus the tree reduction
  // (about 8 * (kk1 + 32) iterations).
  const perUnit = unitIterations(r) + 1;
  const serialUnits = Math.min(
    SERIAL_UNITS,
    Math.floor((LOOP_BUDGET - 2 * kk1) / (perUnit + 2)),
  );
  const perThread = Math.min(
    CHUNK_UNITS / WG,
    Math.floor((LOOP_BUDGET - 8 * (kk1 + 32)) / perUnit),
  );
  if (perThread < 1) {
    throw new RangeError(
      `${op}: kernel [${r.kh}, ${r.kw}] with stride ${r.sw} and dilation ${r.dw} is too large`,
    );
  }
  const chunkUnits = WG * perThread;
  const ranges = unitRanges(op, gpu, r.n, r.c * Math.max(r.h * r.w, r.oh * r.ow));
  const units = r.n * r.oh * owb;
  if (ranges.length === 1 && units <= serialUnits) {
    backwardWeightSerialKernel(r.kh, r.kw, r.sw, r.dw).dispatch({
      op,
      variant,
      params: weightParams(r, {
        n: r.n,
        chunk: units,
        chunks: 1,
        xBase: 0,
        dyBase: 0,
        chunkOff: 0,
      }),
      bindings: { dy: io.dy, x: io.x, dw: io.dw, db: io.db },
      workgroups: Math.ceil(r.c / WG),
    });
    return;
  }
  const counts = ranges.map(([b0, b1]) => Math.ceil(((b1 - b0) * r.oh * owb) / chunkUnits));
  const chunks = counts.reduce((a, b) => a + b, 0);
  if (chunks > LOOP_BUDGET) {
    throw new RangeError(`${op}: n * oh * ceil(ow / 4) = ${units} is too large`);
  }
  const partial = gpu.empty([r.c, chunks, kk1]);
  const hw = r.h * r.w, ohw = r.oh * r.ow;
  let chunkOff = 0;
  ranges.forEach(([b0, b1], k) => {
    const nb = b1 - b0;
    const dy = bindingRange(io.dy, b0 * r.c * ohw, nb * r.c * ohw);
    const x = bindingRange(io.x, b0 * r.c * hw, nb * r.c * hw);
    backwardWeightPartialKernel(r.kh, r.kw, r.sw, r.dw).dispatch({
      op,
      params: weightParams(r, {
        n: nb,
        chunk: chunkUnits,
        chunks,
        xBase: x.base,
        dyBase: dy.base,
        chunkOff,
      }),
      bindings: { dy, x, partial },
      workgroups: [counts[k], r.c, 1],
    });
    chunkOff += counts[k];
  });
  backwardWeightFinalKernel(r.kh, r.kw).dispatch({
    op,
    variant,
    params: { c: r.c, chunks },
    bindings: { partial, dw: io.dw, db: io.db },
    workgroups: Math.ceil((r.c * kk1) / WG),
  });
  partial.dispose();
}
