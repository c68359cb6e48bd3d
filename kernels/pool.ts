/**
 * 2-D pooling with PyTorch's semantics (`ceil_mode=False`): max pooling with argmax indices,
 * average pooling (`count_include_pad=True`) and global average pooling
 * (`AdaptiveAvgPool2d((1, 1))`), forward and backward.
 *
 * Output size: `oh = floor((h + 2 * ph - kh) / sh) + 1` (and the same for the width).
 *
 * Kernels: forward passes use one thread per output element scanning its window (loops
 * unrolled per kernel size). Backward passes are gathers specialized on the window geometry: one
 * thread per block of `sh x sw` inputs aligned to the stride, for which the covering output
 * windows are known at compile time; each input adds their gradients in ascending output order
 * (as PyTorch's CPU scatter does), so overlapping windows (e.g. AlexNet's 3/2 max pool) sum
 * correctly without float atomics. Global average pooling uses one thread per `(b, ch)` plane
 * forward (per segment of at most 16384 elements of a plane plus a second pass for larger planes,
 * to stay under llvmpipe's silent cap of 65535 loop iterations per invocation) and one thread per
 * input element backward.
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

import { assertShape, grid1d, type Shape, type Tensor } from "../gpu/mod.ts";
import { bindingRange, LOOP_BUDGET, type TensorRange, unitRanges } from "./_binding.ts";
import { checkFloat } from "./_dtype.ts";
import {
  checkPositiveInts,
  type PlaneWindow,
  planeWindow,
  window2d,
  type Window2dParams,
} from "./_geometry.ts";
import { defineKernel, perSizes } from "./_kernel.ts";

/** Threads per workgroup of every pooling kernel. */
const WG = 64;

/**
 * Dimensions and hyper-parameters of a 2-D pooling: the window without dilation (stride the
 * kernel size by default; implicit padding, `-inf` for max and zeros for average, default 0 and
 * at most half the kernel) and the sizes.
 */
export interface Pool2dParams extends Omit<Window2dParams, "dilation"> {
  /** Batch size. */
  readonly n: number;
  /** Channels. */
  readonly c: number;
  /** Input height. */
  readonly h: number;
  /** Input width. */
  readonly w: number;
}

/** Dimensions of a global average pooling. */
export interface GlobalPoolParams {
  /** Batch size. */
  readonly n: number;
  /** Channels. */
  readonly c: number;
  /** Input height. */
  readonly h: number;
  /** Input width. */
  readonly w: number;
}

function checkDims(op: string, p: GlobalPoolParams): void {
  checkPositiveInts(op, p, ["n", "c", "h", "w"]);
}

function resolve(op: string, p: Pool2dParams): PlaneWindow {
  checkDims(op, p);
  const { kernel, stride, padding } = p;
  const win = window2d(op, { kernel, stride, padding }, { stride: "kernel" });
  const { kh, kw, ph, pw } = win;
  if (ph > Math.floor(kh / 2) || pw > Math.floor(kw / 2)) {
    throw new RangeError(
      `${op}: padding [${ph}, ${pw}] must be at most half of the kernel size [${kh}, ${kw}]`,
    );
  }
  return planeWindow(op, p, win);
}

/**
 * Validates pooling parameters and returns the output shape `[n, c, oh, ow]`.
 *
 * @throws {RangeError} for non-integer or out-of-range sizes, padding larger than half the kernel
 * (as PyTorch), or an output smaller than 1x1.
 * @example
 * ```ts
 * import { checkPool2d } from "@modern-cnn/webgpu/kernels";
 * checkPool2d({ n: 8, c: 96, h: 54, w: 54, kernel: 3, stride: 2 }); // [8, 96, 26, 26]
 * ```
 */
export function checkPool2d(p: Pool2dParams): Shape {
  const r = resolve("pool2d", p);
  return [r.n, r.c, r.oh, r.ow];
}

function checkI32(op: string, name: string, t: Tensor, expected: Shape): void {
  assertShape(op, name, t.shape, expected);
  if (t.dtype !== "i32") throw new TypeError(`${op}: ${name} must be i32, got ${t}`);
}

/**
 * Records one dispatch per range of whole planes that fits one binding: `make` gets the plane
 * range's bindings of the input-sized tensors (`inTensors`, `h x w` per plane) and of the
 * output-sized ones (`outTensors`, `oh x ow` per plane), and the range's first plane.
 */
function perPlaneRange(
  op: string,
  r: { n: number; c: number; h: number; w: number; oh: number; ow: number },
  inTensors: readonly Tensor[],
  outTensors: readonly Tensor[],
  record: (planes: number, ins: TensorRange[], outs: TensorRange[], first: number) => void,
): void {
  const gpu = (inTensors[0] ?? outTensors[0]).gpu;
  const hw = r.h * r.w, ohw = r.oh * r.ow;
  for (const [p0, p1] of unitRanges(op, gpu, r.n * r.c, Math.max(hw, ohw))) {
    const np = p1 - p0;
    record(
      np,
      inTensors.map((t) => bindingRange(t, p0 * hw, np * hw)),
      outTensors.map((t) => bindingRange(t, p0 * ohw, np * ohw)),
      p0,
    );
  }
}

/**
 * Forward pooling: one thread per output, the window loops unrolled (one description per
 * kh x kw; variants `max` and `avg`, each specialized on the storage types of x and y).
 */
const forwardKernel = perSizes((kh: number, kw: number) =>
  defineKernel({
    name: `pool2d_fwd_${kh}x${kw}`,
    doc: `Max (variant max) or average (avg) pool forward. One thread per output element ` +
      `idx = (plane * oh + oy) * ow + ox (flat over a grid1d launch) scans its ${kh}x${kw} ` +
      "window row by row, skipping positions in the padding. Indices are local to one range of " +
      "planes; the range starts at element xBase of the x binding, yBase of y and amBase of " +
      "argmax (max). x is read as f32 and the result rounded once to y's type. Max keeps the " +
      "first maximum (strictly greater replaces; NaN propagates) and writes the max and its flat " +
      "index iy * w + ix in the input plane (the first in-bounds position when all are -inf). " +
      "Average divides the sum by kh * kw: with ceil_mode=False every window lies inside the " +
      "padded input, so PyTorch's count_include_pad divisor is the full window.",
    params: {
      total: "u32",
      h: "u32",
      w: "u32",
      oh: "u32",
      ow: "u32",
      sh: "i32",
      sw: "i32",
      ph: "i32",
      pw: "i32",
      xBase: "u32",
      yBase: "u32",
      amBase: "u32",
    },
    bindings: {
      x: { type: "float", access: "read" },
      y: { type: "float", access: "read_write" },
      argmax: { type: "i32", access: "read_write", variants: ["max"] },
    },
    variants: ["max", "avg"],
    workgroupSize: WG,
    body: ({ dtypes: dt, variant }) => {
      const max = variant === "max";
      return `const KH = ${kh};
const KW = ${kw};

${
        max
          ? `// NaN test on the bits: compilers may fold v != v away (WGSL lets them assume no NaN).
fn isNan(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }
`
          : ""
      }
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= p.total) { return; }
  let P = p.oh * p.ow;
  let plane = idx / P;
  let q = idx - plane * P;
  let oy = q / p.ow;
  let ox = q - oy * p.ow;
  let base = p.xBase + plane * p.h * p.w;
  let hs = i32(oy) * p.sh - p.ph;
  let ws = i32(ox) * p.sw - p.pw;
  let W = i32(p.w);
${
        max
          ? `  // -inf through a runtime bit pattern: Chrome's WGSL compiler rejects a constant -inf.
  let negInfBits = 0xff800000u;
  var best = bitcast<f32>(negInfBits);
  var bi = max(hs, 0) * W + max(ws, 0);`
          : "  var s = 0.0;"
      }
  for (var ky = 0; ky < KH; ky++) {
    let iy = hs + ky;
    if (iy < 0 || iy >= i32(p.h)) { continue; }
    for (var kx = 0; kx < KW; kx++) {
      let ix = ws + kx;
      if (ix < 0 || ix >= W) { continue; }
      let j = iy * W + ix;
      let v = f32(x[base + u32(j)]);
${
        max
          ? `      if (v > best || isNan(v)) {
        best = v;
        bi = j;
      }`
          : "      s += v;"
      }
    }
  }
${
        max
          ? `  y[p.yBase + idx] = ${dt.y}(best);\n  argmax[p.amBase + idx] = bi;`
          : `  y[p.yBase + idx] = ${dt.y}(s / ${kh * kw}.0);`
      }
}
`;
    },
  })
);

/**
 * The outputs covering a block-local input coordinate `u` along one axis (blocks aligned to the
 * stride): output `block + a` covers input `block * s + u` when `0 <= u + pad - a * s < k`.
 * Ascending `a`, so that gradients are added in ascending output order as PyTorch does.
 */
function cover(u: number, s: number, pad: number, k: number): number[] {
  const out: number[] = [];
  for (let a = Math.ceil((u + pad - k + 1) / s); a <= Math.floor((u + pad) / s); a++) out.push(a);
  return out;
}

/**
 * Backward pooling as a gather, specialized on the whole window geometry (one description per
 * geometry; variants `max` and `avg`, each specialized on the storage types of dy and dx): one
 * thread per block of sh x sw inputs aligned to the stride, for which the covering outputs are
 * known at compile time; the thread loads their dy (and argmax) once and writes each input's
 * sum. Every input is written by exactly one thread, once: the sums are accumulated in f32 and
 * rounded once to dx's type.
 */
const backwardKernel = perSizes((
  kh: number,
  kw: number,
  sh: number,
  sw: number,
  ph: number,
  pw: number,
) =>
  defineKernel({
    name: `pool2d_bwd_k${kh}x${kw}_s${sh}x${sw}_p${ph}x${pw}`,
    doc: `Max (variant max) or average (avg) pool backward (specialized on kernel ${kh}x${kw}, ` +
      `stride ${sh}x${sw}, padding ${ph}x${pw}). One thread per block of ${sh}x${sw} inputs ` +
      `aligned to the stride, idx = (plane * hb + by) * wb + bx, inputs (by * ${sh} + u, ` +
      `bx * ${sw} + v). Which outputs (by + a, bx + b) cover which input is known at compile ` +
      "time: the thread loads their dy (and argmax for max; dy / (kh * kw) for avg) once, then " +
      "each input adds, in ascending output order, the dy of the windows whose argmax it is " +
      "(max) or the scaled dy of every window covering it (avg) (a gather: overlapping windows " +
      "need no atomics; each input is written once, by its block's thread, with its f32 sum " +
      "rounded to dx's type). Indices are local to one range of planes, which starts at element " +
      "dyBase of dy, amBase of argmax (max), dxBase of dx.",
    params: {
      total: "u32",
      h: "u32",
      w: "u32",
      oh: "u32",
      ow: "u32",
      hb: "u32",
      wb: "u32",
      dyBase: "u32",
      dxBase: "u32",
      amBase: "u32",
    },
    bindings: {
      dy: { type: "float", access: "read" },
      argmax: { type: "i32", access: "read", variants: ["max"] },
      dx: { type: "float", access: "read_write" },
    },
    variants: ["max", "avg"],
    workgroupSize: WG,
    body: ({ dtypes: dt, variant }) => {
      const max = variant === "max";
      const rows = Array.from({ length: sh }, (_, u) => cover(u, sh, ph, kh));
      const cols = Array.from({ length: sw }, (_, v) => cover(v, sw, pw, kw));
      const as = [...new Set(rows.flat())].sort((x, y) => x - y);
      const bs = [...new Set(cols.flat())].sort((x, y) => x - y);
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
          const ab = `${id(a)}_${id(b)}`;
          lines.push(`  var g${ab} = 0.0;`);
          if (max) lines.push(`  var m${ab} = -1;`);
          lines.push(`  if (okY${id(a)} && okX${id(b)}) {`);
          lines.push(`    let o = u32(oy${id(a)}) * p.ow + u32(ox${id(b)});`);
          if (max) {
            lines.push(`    g${ab} = f32(dy[obase + o]);`, `    m${ab} = argmax[abase + o];`);
          } else lines.push(`    g${ab} = f32(dy[obase + o]) / ${kh * kw}.0;`);
          lines.push("  }");
        }
      }
      const body: string[] = [];
      for (let u = 0; u < sh; u++) {
        for (let v = 0; v < sw; v++) {
          const terms: string[] = [];
          for (const a of rows[u]) {
            for (const b of cols[v]) {
              const ab = `${id(a)}_${id(b)}`;
              terms.push(max ? `select(0.0, g${ab}, m${ab} == me)` : `g${ab}`);
            }
          }
          body.push(`  if (iy0 + ${u} < i32(p.h) && ix0 + ${v} < i32(p.w)) {`);
          if (max) body.push(`    let me = (iy0 + ${u}) * i32(p.w) + ix0 + ${v};`);
          body.push(`    var acc = 0.0;`);
          for (const t of terms) body.push(`    acc += ${t};`);
          body.push(`    dx[ibase + u32((iy0 + ${u}) * i32(p.w) + ix0 + ${v})] = ${dt.dx}(acc);`);
          body.push("  }");
        }
      }
      return `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= p.total) { return; }
  let blocks = p.hb * p.wb;
  let plane = idx / blocks;
  let r = idx - plane * blocks;
  let by = r / p.wb;
  let bx = r - by * p.wb;
  let iy0 = i32(by) * ${sh};
  let ix0 = i32(bx) * ${sw};
  let ibase = p.dxBase + plane * p.h * p.w;
  let obase = p.dyBase + plane * p.oh * p.ow;
${max ? "  let abase = p.amBase + plane * p.oh * p.ow;\n" : ""}${lines.join("\n")}
${body.join("\n")}
}
`;
    },
  })
);

function forward(
  op: string,
  kind: "max" | "avg",
  r: PlaneWindow,
  io: { y: Tensor; argmax?: Tensor; x: Tensor },
): void {
  const outs = io.argmax ? [io.y, io.argmax] : [io.y];
  const kernel = forwardKernel(r.kh, r.kw);
  perPlaneRange(op, r, [io.x], outs, (planes, [x], [y, argmax]) => {
    const total = planes * r.oh * r.ow;
    kernel.dispatch({
      op,
      variant: kind,
      params: {
        total,
        h: r.h,
        w: r.w,
        oh: r.oh,
        ow: r.ow,
        sh: r.sh,
        sw: r.sw,
        ph: r.ph,
        pw: r.pw,
        xBase: x.base,
        yBase: y.base,
        amBase: argmax?.base ?? 0,
      },
      bindings: { x, y, argmax: argmax ?? undefined },
      workgroups: grid1d(total, WG),
    });
  });
}

function backward(
  op: string,
  kind: "max" | "avg",
  r: PlaneWindow,
  io: { dy: Tensor; argmax?: Tensor; dx: Tensor },
): void {
  const hb = Math.ceil(r.h / r.sh), wb = Math.ceil(r.w / r.sw);
  const outs = io.argmax ? [io.dy, io.argmax] : [io.dy];
  const kernel = backwardKernel(r.kh, r.kw, r.sh, r.sw, r.ph, r.pw);
  perPlaneRange(op, r, [io.dx], outs, (planes, [dx], [dy, argmax]) => {
    const total = planes * hb * wb;
    kernel.dispatch({
      op,
      variant: kind,
      // dy and argmax start at the same element, but at different bases when dy is f16.
      params: {
        total,
        h: r.h,
        w: r.w,
        oh: r.oh,
        ow: r.ow,
        hb,
        wb,
        dyBase: dy.base,
        dxBase: dx.base,
        amBase: argmax?.base ?? 0,
      },
      bindings: { dy, argmax: argmax ?? undefined, dx },
      workgroups: grid1d(total, WG),
    });
  });
}

/** Most elements of a plane summed by one thread of the global average pool forward. */
const GLOBAL_SEGMENT = LOOP_BUDGET;

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
  body: ({ dtypes: dt }) => `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * WG;
  if (t >= p.planes * p.splits) { return; }
  let plane = t / p.splits;
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
  }
}
`,
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
  body: ({ dtypes: dt }) => `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let plane = gid.x + gid.y * nwg.x * WG;
  if (plane >= p.planes) { return; }
  var acc = 0.0;
  for (var s = 0u; s < p.splits; s++) { acc += partial[plane * p.splits + s]; }
  y[plane] = ${dt.y}(acc / f32(p.hw));
}
`,
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
  body: ({ dtypes: dt }) => `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= p.total) { return; }
  dx[p.dxBase + idx] = ${dt.dx}(f32(dy[p.dyBase + idx / p.hw]) / f32(p.hw));
}
`,
});

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
  const op = "maxPool2dForward";
  const r = resolve(op, p);
  checkFloat(op, "x", io.x, [r.n, r.c, r.h, r.w]);
  checkFloat(op, "y", io.y, [r.n, r.c, r.oh, r.ow]);
  checkI32(op, "argmax", io.argmax, [r.n, r.c, r.oh, r.ow]);
  forward(op, "max", r, io);
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
  const op = "maxPool2dBackward";
  const r = resolve(op, p);
  checkFloat(op, "dy", io.dy, [r.n, r.c, r.oh, r.ow]);
  checkI32(op, "argmax", io.argmax, [r.n, r.c, r.oh, r.ow]);
  checkFloat(op, "dx", io.dx, [r.n, r.c, r.h, r.w]);
  backward(op, "max", r, io);
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
  const op = "avgPool2dForward";
  const r = resolve(op, p);
  checkFloat(op, "x", io.x, [r.n, r.c, r.h, r.w]);
  checkFloat(op, "y", io.y, [r.n, r.c, r.oh, r.ow]);
  forward(op, "avg", r, io);
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
  const op = "avgPool2dBackward";
  const r = resolve(op, p);
  checkFloat(op, "dy", io.dy, [r.n, r.c, r.oh, r.ow]);
  checkFloat(op, "dx", io.dx, [r.n, r.c, r.h, r.w]);
  backward(op, "avg", r, io);
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
  checkDims(op, p);
  checkFloat(op, "x", io.x, [p.n, p.c, p.h, p.w]);
  checkFloat(op, "y", io.y, [p.n, p.c, 1, 1]);
  const gpu = io.x.gpu;
  const hw = p.h * p.w;
  const splits = Math.ceil(hw / GLOBAL_SEGMENT);
  const seg = Math.ceil(hw / splits);
  const planes = p.n * p.c;
  const partial = splits > 1 ? gpu.empty([planes, splits]) : undefined;
  const g = { n: p.n, c: p.c, h: p.h, w: p.w, oh: 1, ow: 1 };
  perPlaneRange(op, g, [io.x], [io.y], (np, [x], [y], p0) => {
    // With splits, the first pass writes partial[plane * splits + s] (the range's planes).
    const out = partial ? bindingRange(partial, p0 * splits, np * splits) : y;
    globalForward.dispatch({
      op,
      params: { planes: np, hw, splits, seg, xBase: x.base, yBase: out.base },
      bindings: { x, y: out },
      workgroups: grid1d(np * splits, WG),
    });
  });
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
  checkDims(op, p);
  checkFloat(op, "dy", io.dy, [p.n, p.c, 1, 1]);
  checkFloat(op, "dx", io.dx, [p.n, p.c, p.h, p.w]);
  const hw = p.h * p.w;
  const g = { n: p.n, c: p.c, h: p.h, w: p.w, oh: 1, ow: 1 };
  perPlaneRange(op, g, [io.dx], [io.dy], (planes, [dx], [dy]) => {
    const total = planes * hw;
    globalBackward.dispatch({
      op,
      params: { total, hw, dyBase: dy.base, dxBase: dx.base },
      bindings: { dy, dx },
      workgroups: grid1d(total, WG),
    });
  });
}
