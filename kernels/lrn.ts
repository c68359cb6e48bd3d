/**
 * Local response normalization across channels (`torch.nn.LocalResponseNorm(size, alpha, beta,
 * k)`), forward and backward:
 *
 * `y[c] = x[c] * s[c]^-beta`, `s[c] = k + alpha / size * sum(x[c']^2 for c' in W(c))`, with the
 * window `W(c) = c - floor(size / 2) .. c + floor((size - 1) / 2)` zero-padded at the channel
 * edges (PyTorch pads `size // 2` channels before and `(size - 1) // 2` after, then averages
 * `size` channels), so an even size looks one channel further back than forward.
 *
 * Backward: `dx[j] = dy[j] * s[j]^-beta - 2 * alpha * beta / size * x[j] *
 * sum(dy[c] * x[c] * s[c]^(-beta - 1) for c with j in W(c))`, where `j in W(c)` is
 * `c = j - floor((size - 1) / 2) .. j + floor(size / 2)`.
 *
 * Both kernels use one thread per element (or per 4 pixels) and loop over the `size` channels
 * of its window (clipped to the channels: at most `c` iterations). Tensors larger than one storage
 * binding (AlexNet's `[128, 96, 54, 54]`, 143 MB) are processed in ranges of whole samples, one
 * dispatch per range.
 *
 * Every tensor is f32 or f16, each independently (e.g. f16 activations and gradients, the saved
 * `scale` in either type). Arithmetic is f32: f16 values are converted on load and results
 * rounded once on store.
 *
 * Outputs must not alias inputs: WebGPU rejects a buffer bound both read-only and read-write in
 * one dispatch.
 *
 * @module
 */

import { grid1d, type Shape, type Tensor } from "../gpu/mod.ts";
import { bindingRange, LOOP_BUDGET, unitRanges } from "./_binding.ts";
import { checkFloat, storageType } from "./_dtype.ts";
import { checkPositiveInts } from "./_geometry.ts";
import { type BoundTensor, defineKernel, flatMain } from "./_kernel.ts";

/** Threads per workgroup of the LRN kernels. */
const WG = 64;

/** Dimensions and hyper-parameters of a local response normalization. */
export interface LrnParams {
  /** Batch size. */
  readonly n: number;
  /** Channels. */
  readonly c: number;
  /** Height. */
  readonly h: number;
  /** Width. */
  readonly w: number;
  /** Channels in the window. */
  readonly size: number;
  /** Scale of the sum of squares; default 1e-4. */
  readonly alpha?: number;
  /** Exponent; default 0.75. */
  readonly beta?: number;
  /** Additive constant; default 1. */
  readonly k?: number;
}

interface Resolved {
  n: number;
  c: number;
  h: number;
  w: number;
  size: number;
  alpha: number;
  beta: number;
  k: number;
}

function resolve(op: string, p: LrnParams): Resolved {
  checkPositiveInts(op, p, ["n", "c", "h", "w", "size"]);
  const alpha = p.alpha ?? 1e-4, beta = p.beta ?? 0.75, k = p.k ?? 1;
  for (const [key, v] of [["alpha", alpha], ["beta", beta], ["k", k]] as const) {
    if (!Number.isFinite(v)) throw new RangeError(`${op}: ${key} must be finite, got ${v}`);
  }
  if (k <= 0 || alpha < 0) {
    throw new RangeError(`${op}: needs k > 0 and alpha >= 0 (got k ${k}, alpha ${alpha})`);
  }
  return { n: p.n, c: p.c, h: p.h, w: p.w, size: p.size, alpha, beta, k };
}

/**
 * Validates LRN parameters and returns the output shape `[n, c, h, w]` (that of the input).
 *
 * @throws {RangeError} for non-integer sizes, non-finite hyper-parameters, `k <= 0` or
 * `alpha < 0`.
 * @example
 * ```ts
 * import { checkLrn } from "@modern-cnn/webgpu/kernels";
 * checkLrn({ n: 8, c: 96, h: 54, w: 54, size: 5, k: 2 }); // [8, 96, 54, 54]
 * ```
 */
export function checkLrn(p: LrnParams): Shape {
  const r = resolve("lrn", p);
  return [r.n, r.c, r.h, r.w];
}

/** The `Params` fields both kernels start with (each adds one base per binding). */
const COMMON = {
  total: "u32",
  c: "u32",
  hw: "u32",
  size: "i32",
  alphaN: "f32",
  beta: "f32",
  k: "f32",
} as const;

/**
 * The kernels come in a scalar form (one thread per element) and a vec4 form used when `h * w`
 * is a multiple of 4 (one thread per 4 neighbouring pixels of one channel: vector loads, a
 * quarter of the index arithmetic): `[scalar, vec4]`, each specialized by `defineKernel` on the
 * storage type of every binding. `hw`, `total` and the bases are counted in units of the element
 * type; indices are local to one range of samples, which starts at element `xBase` of x, `yBase`
 * of y, and so on.
 */
const forward = [false, true].map((vec4) => {
  const T = vec4 ? "vec4f" : "f32";
  return defineKernel({
    name: `lrn_fwd${vec4 ? "_vec4" : ""}`,
    doc: `LRN forward. One thread per ${vec4 ? "4 pixels" : "element"}: idx indexes the ` +
      `bindings' arrays, idx = (b * c + ch) * hw + i; it sums x^2 (in ${T}) over channels ` +
      "ch - size / 2 .. ch + (size - 1) / 2 (clipped to 0 .. c - 1) at the same (b, i), writes " +
      "scale = k + alpha / size * sum and y = x * scale^-beta, each rounded once to its " +
      "binding's type. idx is local to the range of samples; every access adds its binding's base.",
    params: { ...COMMON, xBase: "u32", yBase: "u32", sBase: "u32" },
    bindings: {
      x: { type: "float", access: "read", vec4 },
      y: { type: "float", access: "read_write", vec4 },
      scale: { type: "float", access: "read_write", vec4 },
    },
    workgroupSize: WG,
    body: ({ dtypes }) => {
      const [Y, S] = [dtypes.y, dtypes.scale].map((d) => storageType(d, vec4));
      return flatMain(
        "idx",
        "p.total",
        `  let ch = i32((idx / p.hw) % p.c);
  let c0 = max(ch - p.size / 2, 0);
  let c1 = min(ch + (p.size - 1) / 2, i32(p.c) - 1);
  let first = p.xBase + idx - u32(ch - c0) * p.hw;
  var s = ${T}(0.0);
  for (var cc = c0; cc <= c1; cc++) {
    let v = ${T}(x[first + u32(cc - c0) * p.hw]);
    s += v * v;
  }
  let sc = p.k + p.alphaN * s;
  scale[p.sBase + idx] = ${S}(sc);
  y[p.yBase + idx] = ${Y}(${T}(x[p.xBase + idx]) * pow(sc, ${T}(-p.beta)));`,
      );
    },
  });
});

/** The backward kernels, `[scalar, vec4]` as {@linkcode forward}. */
const backward = [false, true].map((vec4) => {
  const T = vec4 ? "vec4f" : "f32";
  return defineKernel({
    name: `lrn_bwd${vec4 ? "_vec4" : ""}`,
    doc: `LRN backward. One thread per ${vec4 ? "4 pixels" : "element"}: idx indexes the ` +
      "bindings' arrays, idx = (b * c + j) * hw + i; dx = dy * scale^-beta - 2 * alpha / size * " +
      "beta * x * sum(dy[c] * x[c] * scale[c]^(-beta - 1)) over the channels c = j - (size - 1) " +
      `/ 2 .. j + size / 2 (clipped) whose window contains j, computed in ${T} and rounded once ` +
      "to dx's type. idx is local to the range of samples; every access adds its binding's base.",
    params: { ...COMMON, dyBase: "u32", xBase: "u32", sBase: "u32", dxBase: "u32" },
    bindings: {
      dy: { type: "float", access: "read", vec4 },
      x: { type: "float", access: "read", vec4 },
      scale: { type: "float", access: "read", vec4 },
      dx: { type: "float", access: "read_write", vec4 },
    },
    workgroupSize: WG,
    body: ({ dtypes }) => {
      const DX = storageType(dtypes.dx, vec4);
      return flatMain(
        "idx",
        "p.total",
        `  let j = i32((idx / p.hw) % p.c);
  let c0 = max(j - (p.size - 1) / 2, 0);
  let c1 = min(j + p.size / 2, i32(p.c) - 1);
  let first = idx - u32(j - c0) * p.hw;
  var s = ${T}(0.0);
  for (var cc = c0; cc <= c1; cc++) {
    let e = first + u32(cc - c0) * p.hw;
    let sc = ${T}(scale[p.sBase + e]);
    s += ${T}(dy[p.dyBase + e]) * ${T}(x[p.xBase + e]) * pow(sc, ${T}(-p.beta - 1.0));
  }
  let dyv = ${T}(dy[p.dyBase + idx]);
  let xv = ${T}(x[p.xBase + idx]);
  let sv = ${T}(scale[p.sBase + idx]);
  dx[p.dxBase + idx] = ${DX}(dyv * pow(sv, ${T}(-p.beta)) - 2.0 * p.alphaN * p.beta * xv * s);`,
      );
    },
  });
});

/** One tensor's part of a dispatch: its binding and the range's base in it (in units). */
interface At {
  readonly bound: BoundTensor;
  readonly base: number;
}

/**
 * Records one dispatch per range of whole samples that fits one binding (vec4 units when `h * w`
 * is a multiple of 4): `record` gets the form (`vec4`), the common params, each tensor's binding
 * over the range and its base (the element of its binding the range starts at; f16 and f32
 * bindings of the same range start at different elements), and the workgroup counts.
 */
function launch<K extends string>(
  op: string,
  r: Resolved,
  tensors: Readonly<Record<K, Tensor>>,
  record: (
    vec4: 0 | 1,
    common: { readonly [F in keyof typeof COMMON]: number },
    at: Readonly<Record<K, At>>,
    workgroups: [number, number, number],
  ) => void,
): void {
  const hw = r.h * r.w;
  const vec4 = hw % 4 === 0;
  const v = vec4 ? 4 : 1;
  const per = r.c * hw;
  const entries = Object.entries(tensors) as [K, Tensor][];
  const gpu = entries[0][1].gpu;
  if (Math.min(r.size, r.c) > LOOP_BUDGET) {
    throw new RangeError(`${op}: a window of ${Math.min(r.size, r.c)} channels is too large`);
  }
  for (const [b0, b1] of unitRanges(op, gpu, r.n, per)) {
    const total = ((b1 - b0) * per) / v;
    // Binding offsets are multiples of 256 bytes and range starts multiples of h * w elements,
    // so with vec4 units every base (in elements) is a multiple of 4, for f16 as for f32.
    const at = {} as Record<K, At>;
    for (const [name, t] of entries) {
      const x = bindingRange(t, b0 * per, (b1 - b0) * per);
      at[name] = { bound: x, base: x.base / v };
    }
    const common = {
      total,
      c: r.c,
      hw: hw / v,
      size: r.size,
      alphaN: r.alpha / r.size,
      beta: r.beta,
      k: r.k,
    };
    record(vec4 ? 1 : 0, common, at, grid1d(total, WG));
  }
}

/**
 * LRN forward: overwrites `y` and `scale` (shaped like `x`; `k + alpha / size * window sum of
 * squares`, kept for the backward). Each tensor is f32 or f16 (independently); the arithmetic
 * is f32.
 *
 * @throws {TypeError} when a tensor's shape or dtype does not match the parameters.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { lrnForward } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const p = { n: 2, c: 96, h: 54, w: 54, size: 5, alpha: 1e-4, beta: 0.75, k: 2 };
 * const x = gpu.zeros([2, 96, 54, 54]);
 * const y = gpu.empty(x.shape);
 * const scale = gpu.empty(x.shape);
 * lrnForward({ y, scale, x }, p);
 * ```
 */
export function lrnForward(io: { y: Tensor; scale: Tensor; x: Tensor }, p: LrnParams): void {
  const op = "lrnForward";
  const r = resolve(op, p);
  const shape = [r.n, r.c, r.h, r.w];
  for (const name of ["x", "y", "scale"] as const) checkFloat(op, name, io[name], shape);
  launch(
    op,
    r,
    { x: io.x, y: io.y, scale: io.scale },
    (vec4, common, at, workgroups) =>
      forward[vec4].dispatch({
        op,
        params: { ...common, xBase: at.x.base, yBase: at.y.base, sBase: at.scale.base },
        bindings: { x: at.x.bound, y: at.y.bound, scale: at.scale.bound },
        workgroups,
      }),
  );
}

/**
 * LRN backward: overwrites `dx` from `dy`, the input `x` and the `scale` saved by
 * {@linkcode lrnForward}. Each tensor is f32 or f16 (independently); the arithmetic is f32.
 *
 * @throws {TypeError} when a tensor's shape or dtype does not match the parameters.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { lrnBackward } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const p = { n: 2, c: 96, h: 54, w: 54, size: 5, alpha: 1e-4, beta: 0.75, k: 2 };
 * const [x, scale, dy] = [0, 1, 2].map(() => gpu.zeros([2, 96, 54, 54]));
 * const dx = gpu.empty(x.shape);
 * lrnBackward({ dx, dy, x, scale }, p);
 * ```
 */
export function lrnBackward(
  io: { dx: Tensor; dy: Tensor; x: Tensor; scale: Tensor },
  p: LrnParams,
): void {
  const op = "lrnBackward";
  const r = resolve(op, p);
  const shape = [r.n, r.c, r.h, r.w];
  for (const name of ["dy", "x", "scale", "dx"] as const) checkFloat(op, name, io[name], shape);
  const tensors = { dy: io.dy, x: io.x, scale: io.scale, dx: io.dx };
  launch(op, r, tensors, (vec4, common, at, workgroups) =>
    backward[vec4].dispatch({
      op,
      params: {
        ...common,
        dyBase: at.dy.base,
        xBase: at.x.base,
        sBase: at.scale.base,
        dxBase: at.dx.base,
      },
      bindings: { dy: at.dy.bound, x: at.x.bound, scale: at.scale.bound, dx: at.dx.bound },
      workgroups,
    }));
}
