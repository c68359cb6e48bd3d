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
 * Outputs must not alias inputs: WebGPU rejects a buffer bound both read-only and read-write in
 * one dispatch.
 *
 * @module
 */

import { assertShape, grid1d, type KernelSpec, type Shape, type Tensor } from "../gpu/mod.ts";
import { LOOP_BUDGET, unitRanges } from "./_chunks.ts";
import { checkPositiveInts } from "./_geometry.ts";
import { ParamsWriter } from "./_params.ts";
import { bindingRange } from "./gemm.ts";

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

function checkF32(op: string, name: string, t: Tensor, expected: Shape): void {
  assertShape(op, name, t.shape, expected);
  if (t.dtype !== "f32") throw new TypeError(`${op}: ${name} must be f32, got ${t}`);
}

/**
 * Records one dispatch per range of whole samples that fits one binding (vec4 units when `h * w`
 * is a multiple of 4): every tensor is bound over the range, which starts at the same element
 * `base` of each binding.
 */
function launch(
  op: string,
  r: Resolved,
  specs: { scalar: KernelSpec; vec4: KernelSpec },
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
    gpu.dispatch(vec4 ? specs.vec4 : specs.scalar, {
      params: new ParamsWriter().u32(total).u32(r.c).u32(hw / v).i32(r.size)
        .f32(r.alpha / r.size).f32(r.beta).f32(r.k).u32(ranges[0].base / v).bytes(),
      bindings: ranges.map((x) => x.binding),
      workgroups: grid1d(total, WG),
    });
  }
}

const PARAMS_WGSL = `struct Params { total: u32, c: u32, hw: u32, size: i32, alphaN: f32, beta: f32,
  k: f32, base: u32 }
@group(0) @binding(0) var<uniform> p: Params;`;

/**
 * The kernels come in a scalar variant (one thread per element) and a vec4 variant used when
 * `h * w` is a multiple of 4 (one thread per 4 neighbouring pixels of one channel: vector loads,
 * a quarter of the index arithmetic). `hw`, `total` and `base` are counted in units of the
 * element type; indices are local to one range of samples, which starts at element `base` of
 * every binding.
 */
function forwardSpec(vec4: boolean): KernelSpec {
  const T = vec4 ? "vec4f" : "f32";
  return {
    name: `lrn_fwd${vec4 ? "_vec4" : ""}`,
    code: `
// LRN forward. One thread per ${vec4 ? "4 pixels" : "element"}: idx indexes array<${T}>,
// idx = (b * c + ch) * hw + i; it sums x^2 over channels ch - size / 2 .. ch + (size - 1) / 2
// (clipped to 0 .. c - 1) at the same (b, i), writes scale = k + alpha / size * sum and
// y = x * scale^-beta. idx is local to the range of samples; every access adds p.base.
const WG = ${WG}u;
${PARAMS_WGSL}
@group(0) @binding(1) var<storage, read> x: array<${T}>;
@group(0) @binding(2) var<storage, read_write> y: array<${T}>;
@group(0) @binding(3) var<storage, read_write> scale: array<${T}>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= p.total) { return; }
  let ch = i32((idx / p.hw) % p.c);
  let c0 = max(ch - p.size / 2, 0);
  let c1 = min(ch + (p.size - 1) / 2, i32(p.c) - 1);
  let first = p.base + idx - u32(ch - c0) * p.hw;
  var s = ${T}(0.0);
  for (var cc = c0; cc <= c1; cc++) {
    let v = x[first + u32(cc - c0) * p.hw];
    s += v * v;
  }
  let sc = p.k + p.alphaN * s;
  let e = p.base + idx;
  scale[e] = sc;
  y[e] = x[e] * pow(sc, ${T}(-p.beta));
}
`,
  };
}
const FORWARD = forwardSpec(false);
const FORWARD_V4 = forwardSpec(true);

function backwardSpec(vec4: boolean): KernelSpec {
  const T = vec4 ? "vec4f" : "f32";
  return {
    name: `lrn_bwd${vec4 ? "_vec4" : ""}`,
    code: `
// LRN backward. One thread per ${vec4 ? "4 pixels" : "element"}: idx indexes array<${T}>,
// idx = (b * c + j) * hw + i;
// dx = dy * scale^-beta - 2 * alpha / size * beta * x * sum(dy[c] * x[c] * scale[c]^(-beta - 1))
// over the channels c = j - (size - 1) / 2 .. j + size / 2 (clipped) whose window contains j.
// idx is local to the range of samples; every access adds p.base.
const WG = ${WG}u;
${PARAMS_WGSL}
@group(0) @binding(1) var<storage, read> dy: array<${T}>;
@group(0) @binding(2) var<storage, read> x: array<${T}>;
@group(0) @binding(3) var<storage, read> scale: array<${T}>;
@group(0) @binding(4) var<storage, read_write> dx: array<${T}>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= p.total) { return; }
  let j = i32((idx / p.hw) % p.c);
  let c0 = max(j - (p.size - 1) / 2, 0);
  let c1 = min(j + p.size / 2, i32(p.c) - 1);
  let first = p.base + idx - u32(j - c0) * p.hw;
  var s = ${T}(0.0);
  for (var cc = c0; cc <= c1; cc++) {
    let e = first + u32(cc - c0) * p.hw;
    s += dy[e] * x[e] * pow(scale[e], ${T}(-p.beta - 1.0));
  }
  let e = p.base + idx;
  dx[e] = dy[e] * pow(scale[e], ${T}(-p.beta)) - 2.0 * p.alphaN * p.beta * x[e] * s;
}
`,
  };
}
const BACKWARD = backwardSpec(false);
const BACKWARD_V4 = backwardSpec(true);

/**
 * LRN forward: overwrites `y` and `scale` (shaped like `x`; `k + alpha / size * window sum of
 * squares`, kept for the backward).
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
  checkF32(op, "x", io.x, shape);
  checkF32(op, "y", io.y, shape);
  checkF32(op, "scale", io.scale, shape);
  launch(op, r, { scalar: FORWARD, vec4: FORWARD_V4 }, [io.x, io.y, io.scale]);
}

/**
 * LRN backward: overwrites `dx` from `dy`, the input `x` and the `scale` saved by
 * {@linkcode lrnForward}.
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
  checkF32(op, "dy", io.dy, shape);
  checkF32(op, "x", io.x, shape);
  checkF32(op, "scale", io.scale, shape);
  checkF32(op, "dx", io.dx, shape);
  launch(op, r, { scalar: BACKWARD, vec4: BACKWARD_V4 }, [io.dy, io.x, io.scale, io.dx]);
}
