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

import { grid1d, type KernelSpec, type Shape, type Tensor } from "../gpu/mod.ts";
import { bindingRange, LOOP_BUDGET, unitRanges } from "./_binding.ts";
import { checkFloat, dtypeTag, type FloatDType, storageType, wgslEnable } from "./_dtype.ts";
import { checkPositiveInts } from "./_geometry.ts";
import { ParamsWriter } from "./_params.ts";

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

/**
 * Records one dispatch per range of whole samples that fits one binding (vec4 units when `h * w`
 * is a multiple of 4): every tensor is bound over the range, which starts at element `base` of
 * its binding (one base per binding: f16 and f32 bindings of the same range start at different
 * elements).
 */
function launch(
  op: string,
  r: Resolved,
  spec: (vec4: boolean) => KernelSpec,
  tensors: readonly Tensor[],
): void {
  const hw = r.h * r.w;
  const vec4 = hw % 4 === 0;
  const v = vec4 ? 4 : 1;
  const per = r.c * hw;
  const gpu = tensors[0].gpu;
  if (Math.min(r.size, r.c) > LOOP_BUDGET) {
    throw new RangeError(`${op}: a window of ${Math.min(r.size, r.c)} channels is too large`);
  }
  for (const [b0, b1] of unitRanges(op, gpu, r.n, per)) {
    const ranges = tensors.map((t) => bindingRange(t, b0 * per, (b1 - b0) * per));
    const total = ((b1 - b0) * per) / v;
    // Binding offsets are multiples of 256 bytes and range starts multiples of h * w elements,
    // so with vec4 units every base (in elements) is a multiple of 4, for f16 as for f32.
    const params = new ParamsWriter().u32(total).u32(r.c).u32(hw / v).i32(r.size)
      .f32(r.alpha / r.size).f32(r.beta).f32(r.k);
    for (const x of ranges) params.u32(x.base / v);
    gpu.dispatch(spec(vec4), {
      params: params.bytes(),
      bindings: ranges.map((x) => x.binding),
      workgroups: grid1d(total, WG),
    });
  }
}

/** The Params struct (one base per binding, named) and its uniform binding. */
function paramsWgsl(bases: readonly string[]): string {
  return `struct Params { total: u32, c: u32, hw: u32, size: i32, alphaN: f32, beta: f32,
  k: f32, ${bases.map((b) => `${b}: u32`).join(", ")} }
@group(0) @binding(0) var<uniform> p: Params;`;
}

const specs = new Map<string, KernelSpec>();
function memo(name: string, make: () => string): KernelSpec {
  let s = specs.get(name);
  if (!s) specs.set(name, s = { name, code: make() });
  return s;
}

/**
 * The kernels come in a scalar variant (one thread per element) and a vec4 variant used when
 * `h * w` is a multiple of 4 (one thread per 4 neighbouring pixels of one channel: vector loads,
 * a quarter of the index arithmetic), each specialized on the storage type of every binding.
 * `hw`, `total` and the bases are counted in units of the element type; indices are local to
 * one range of samples, which starts at element `xBase` of x, `yBase` of y, and so on.
 */
function forwardSpec(
  vec4: boolean,
  dt: { x: FloatDType; y: FloatDType; scale: FloatDType },
): KernelSpec {
  const T = vec4 ? "vec4f" : "f32";
  const [X, Y, S] = [dt.x, dt.y, dt.scale].map((d) => storageType(d, vec4));
  return memo(
    `lrn_fwd${vec4 ? "_vec4" : ""}${dtypeTag(dt)}`,
    () =>
      `${wgslEnable([dt.x, dt.y, dt.scale])}
// LRN forward. One thread per ${vec4 ? "4 pixels" : "element"}: idx indexes the bindings' arrays,
// idx = (b * c + ch) * hw + i; it sums x^2 (in ${T}) over channels ch - size / 2 ..
// ch + (size - 1) / 2 (clipped to 0 .. c - 1) at the same (b, i), writes scale = k + alpha / size
// * sum and y = x * scale^-beta, each rounded once to its binding's type. idx is local to the
// range of samples; every access adds its binding's base.
const WG = ${WG}u;
${paramsWgsl(["xBase", "yBase", "sBase"])}
@group(0) @binding(1) var<storage, read> x: array<${X}>;
@group(0) @binding(2) var<storage, read_write> y: array<${Y}>;
@group(0) @binding(3) var<storage, read_write> scale: array<${S}>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= p.total) { return; }
  let ch = i32((idx / p.hw) % p.c);
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
  y[p.yBase + idx] = ${Y}(${T}(x[p.xBase + idx]) * pow(sc, ${T}(-p.beta)));
}
`,
  );
}

function backwardSpec(
  vec4: boolean,
  dt: { dy: FloatDType; x: FloatDType; scale: FloatDType; dx: FloatDType },
): KernelSpec {
  const T = vec4 ? "vec4f" : "f32";
  const [DY, X, S, DX] = [dt.dy, dt.x, dt.scale, dt.dx].map((d) => storageType(d, vec4));
  return memo(
    `lrn_bwd${vec4 ? "_vec4" : ""}${dtypeTag(dt)}`,
    () =>
      `${wgslEnable([dt.dy, dt.x, dt.scale, dt.dx])}
// LRN backward. One thread per ${vec4 ? "4 pixels" : "element"}: idx indexes the bindings' arrays,
// idx = (b * c + j) * hw + i;
// dx = dy * scale^-beta - 2 * alpha / size * beta * x * sum(dy[c] * x[c] * scale[c]^(-beta - 1))
// over the channels c = j - (size - 1) / 2 .. j + size / 2 (clipped) whose window contains j,
// computed in ${T} and rounded once to dx's type. idx is local to the range of samples; every
// access adds its binding's base.
const WG = ${WG}u;
${paramsWgsl(["dyBase", "xBase", "sBase", "dxBase"])}
@group(0) @binding(1) var<storage, read> dy: array<${DY}>;
@group(0) @binding(2) var<storage, read> x: array<${X}>;
@group(0) @binding(3) var<storage, read> scale: array<${S}>;
@group(0) @binding(4) var<storage, read_write> dx: array<${DX}>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= p.total) { return; }
  let j = i32((idx / p.hw) % p.c);
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
  dx[p.dxBase + idx] = ${DX}(dyv * pow(sv, ${T}(-p.beta)) - 2.0 * p.alphaN * p.beta * xv * s);
}
`,
  );
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
  const dt = {
    x: checkFloat(op, "x", io.x, shape),
    y: checkFloat(op, "y", io.y, shape),
    scale: checkFloat(op, "scale", io.scale, shape),
  };
  launch(op, r, (vec4) => forwardSpec(vec4, dt), [io.x, io.y, io.scale]);
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
  const dt = {
    dy: checkFloat(op, "dy", io.dy, shape),
    x: checkFloat(op, "x", io.x, shape),
    scale: checkFloat(op, "scale", io.scale, shape),
    dx: checkFloat(op, "dx", io.dx, shape),
  };
  launch(op, r, (vec4) => backwardSpec(vec4, dt), [io.dy, io.x, io.scale, io.dx]);
}
