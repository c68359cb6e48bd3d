/**
 * Batch normalization (`nn.BatchNorm2d` with `hw = h * w`, `nn.BatchNorm1d` with `hw = 1`) on
 * `x` `[n, c, ...]` holding `n * c * hw` elements: training forward (batch statistics, running
 * statistics updated in place), eval forward (running statistics), and the training backward.
 *
 * Every per-channel reduction runs over `N = n * hw` elements in two passes, so that long
 * reductions (ResNet at batch 256: `256 * 48 * 48` per channel) spread over many workgroups:
 * 1. partial sums: workgroup `(chunk, ch)` reduces up to 4096 elements of channel `ch` (its 64
 *    threads stride over the chunk, then a tree reduction in workgroup memory);
 * 2. finalize: one thread per channel adds the chunks in order, then writes the statistics,
 *    gradients and the per-channel coefficients of
 * 3. an elementwise pass (one thread per element) producing `y` or `dx`.
 *
 * When `hw` is a multiple of 4 the partial-sum and elementwise passes work on `vec4`s (4 elements
 * of one channel per load and per thread), which roughly doubles their throughput on llvmpipe.
 *
 * Statistics are accumulated shifted by the channel's first element (`x[0, ch, 0]`), which keeps
 * `E[(x-K)^2] - E[x-K]^2` accurate when the mean is large relative to the spread.
 *
 * Outputs must not alias inputs: WebGPU rejects a buffer bound both read-only and read-write in
 * one dispatch.
 *
 * @module
 */

import { formatShape, grid1d, type KernelSpec, type Shape, type Tensor } from "../gpu/mod.ts";
import { ParamsWriter } from "./_params.ts";

/** Threads per workgroup of every batch-norm kernel. */
const WG = 64;
/** Elements of one channel reduced by one workgroup of the partial-sum passes. */
const CHUNK = 4096;

/** Dimensions and hyper-parameters of a batch normalization. */
export interface BatchNormParams {
  /** Batch size. */
  readonly n: number;
  /** Channels (features for BatchNorm1d). */
  readonly c: number;
  /** Elements per channel per sample: `h * w` for BatchNorm2d, 1 for BatchNorm1d. */
  readonly hw: number;
  /** Added to the variance; default 1e-5. */
  readonly eps?: number;
  /** Running-statistics update factor; default 0.1. */
  readonly momentum?: number;
}

interface Resolved {
  n: number;
  c: number;
  hw: number;
  eps: number;
  momentum: number;
  chunks: number;
}

function resolve(op: string, p: BatchNormParams): Resolved {
  for (const k of ["n", "c", "hw"] as const) {
    if (!Number.isInteger(p[k]) || p[k] < 1) {
      throw new RangeError(`${op}: ${k} must be an integer >= 1, got ${p[k]}`);
    }
  }
  const eps = p.eps ?? 1e-5;
  const momentum = p.momentum ?? 0.1;
  if (!Number.isFinite(eps) || eps < 0) {
    throw new RangeError(`${op}: eps must be a finite number >= 0, got ${eps}`);
  }
  if (!Number.isFinite(momentum) || momentum < 0 || momentum > 1) {
    throw new RangeError(`${op}: momentum must be in [0, 1], got ${momentum}`);
  }
  const chunks = Math.ceil((p.n * p.hw) / CHUNK);
  if (p.c > 65535 || chunks > 65535) {
    throw new RangeError(`${op}: c = ${p.c} or n * hw = ${p.n * p.hw} is too large`);
  }
  return { n: p.n, c: p.c, hw: p.hw, eps, momentum, chunks };
}

/**
 * Validates batch-norm parameters and returns the shape of `x` and `y`: `[n, c]` when `hw` is 1
 * (BatchNorm1d), else `[n, c, hw]` (tensors may have any shape `[n, c, ...]` with `hw` elements
 * per sample and channel, e.g. `[n, c, h, w]`).
 *
 * @throws {RangeError} for non-integer sizes, or eps / momentum out of range.
 * @example
 * ```ts
 * import { checkBatchNorm } from "@modern-cnn/webgpu/kernels";
 * checkBatchNorm({ n: 8, c: 64, hw: 48 * 48 }); // [8, 64, 2304]
 * checkBatchNorm({ n: 8, c: 120, hw: 1 }); // [8, 120]
 * ```
 */
export function checkBatchNorm(p: BatchNormParams): Shape {
  const r = resolve("batchNorm", p);
  return r.hw === 1 ? [r.n, r.c] : [r.n, r.c, r.hw];
}

function checkData(op: string, name: string, t: Tensor, r: Resolved): void {
  const s = t.shape;
  if (s.length < 2 || s[0] !== r.n || s[1] !== r.c || t.size !== r.n * r.c * r.hw) {
    throw new TypeError(
      `${op}: ${name} has shape ${formatShape(s)}, expected [${r.n}, ${r.c}, ...] with ` +
        `${r.hw} element(s) per sample and channel`,
    );
  }
  if (t.dtype !== "f32") throw new TypeError(`${op}: ${name} must be f32, got ${t}`);
}

function checkChannel(op: string, name: string, t: Tensor, r: Resolved): void {
  if (t.shape.length !== 1 || t.shape[0] !== r.c) {
    throw new TypeError(`${op}: ${name} has shape ${formatShape(t.shape)}, expected [${r.c}]`);
  }
  if (t.dtype !== "f32") throw new TypeError(`${op}: ${name} must be f32, got ${t}`);
}

/**
 * WGSL of a partial-sum pass: workgroup (chunk, ch) accumulates `(v1, v2)` given by `body` (which
 * sees `v = x[e]`, the element index `e` and `ch`) over its chunk and writes the two sums to
 * `partial[(ch * chunks + chunk) * 2 + {0, 1}]`.
 */
function partialWgsl(vec4: boolean, header: string, prologue: string, body: string): string {
  const T = vec4 ? "vec4f" : "f32";
  return `
// Thread lid of workgroup (chunk, ch) walks the flat per-channel index j = b * hw + i over
// [chunk * CHUNK, min((chunk + 1) * CHUNK, n * hw)) in steps of WG (b, i advanced without
// divisions); element e = (b * c + ch) * hw + i, in units of ${T} (hw, chunk counted in ${T}).
// The two register sums are tree-reduced in workgroup memory and written to
// partial[(ch * chunks + chunk) * 2 + {0, 1}].
const WG = ${WG}u;
alias T = ${T};
${
    vec4
      ? `fn hsum(v: vec4f) -> f32 { return v.x + v.y + v.z + v.w; }
fn hdot(a: vec4f, b: vec4f) -> f32 { return dot(a, b); }
fn first(v: vec4f) -> f32 { return v.x; }`
      : `fn hsum(v: f32) -> f32 { return v; }
fn hdot(a: f32, b: f32) -> f32 { return a * b; }
fn first(v: f32) -> f32 { return v; }`
  }
struct Params { n: u32, c: u32, hw: u32, chunk: u32, chunks: u32, stepB: u32, stepI: u32 }
@group(0) @binding(0) var<uniform> p: Params;
${header}
var<workgroup> red: array<vec2f, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3u) {
  let chunk = wid.x;
  let ch = wid.y;
  let total = p.n * p.hw;
  let j0 = chunk * p.chunk + lid;
  let j1 = min((chunk + 1u) * p.chunk, total);
  ${prologue}
  var s = vec2f(0.0);
  var b = j0 / p.hw;
  var i = j0 % p.hw;
  for (var j = j0; j < j1; j += WG) {
    let e = (b * p.c + ch) * p.hw + i;
    ${body}
    i += p.stepI;
    b += p.stepB;
    if (i >= p.hw) { i -= p.hw; b += 1u; }
  }
  red[lid] = s;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (lid < k) { red[lid] += red[lid + k]; }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let o = (ch * p.chunks + chunk) * 2u;
    partial[o] = red[0].x;
    partial[o + 1u] = red[0].y;
  }
}
`;
}

function statsPartialSpec(vec4: boolean): KernelSpec {
  return {
    name: `batchnorm_stats_partial${vec4 ? "_vec4" : ""}`,
    code: `
// Batch norm training forward, pass 1: shifted sums of x - K and (x - K)^2 per (chunk, channel),
// K = x[0, ch, 0].` + partialWgsl(
      vec4,
      `@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;`,
      "let K = first(x[ch * p.hw]);",
      `let v = x[e] - K;
    s += vec2f(hsum(v), hdot(v, v));`,
    ),
  };
}
const STATS_PARTIAL = statsPartialSpec(false);
const STATS_PARTIAL_V4 = statsPartialSpec(true);

const STATS_FINAL: KernelSpec = {
  name: "batchnorm_stats_final",
  code: `
// Batch norm training forward, pass 2: one thread per channel adds the chunk sums, then writes
// saveMean, saveInvStd = 1 / sqrt(var + eps) (biased variance), updates the running statistics
// (unbiased variance), and writes coef[ch] = (mean, weight * invstd) for pass 3.
const WG = ${WG}u;
struct Params { n: u32, c: u32, hw: u32, chunks: u32, eps: f32, momentum: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read_write> saveMean: array<f32>;
@group(0) @binding(5) var<storage, read_write> saveInvStd: array<f32>;
@group(0) @binding(6) var<storage, read_write> runningMean: array<f32>;
@group(0) @binding(7) var<storage, read_write> runningVar: array<f32>;
@group(0) @binding(8) var<storage, read_write> coef: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let ch = gid.x;
  if (ch >= p.c) { return; }
  var s1 = 0.0;
  var s2 = 0.0;
  for (var k = 0u; k < p.chunks; k++) {
    let o = (ch * p.chunks + k) * 2u;
    s1 += partial[o];
    s2 += partial[o + 1u];
  }
  let N = f32(p.n * p.hw);
  let d = s1 / N;
  let mean = x[ch * p.hw] + d;
  let variance = max(s2 / N - d * d, 0.0);
  let invstd = 1.0 / sqrt(variance + p.eps);
  saveMean[ch] = mean;
  saveInvStd[ch] = invstd;
  let unbiased = variance * N / max(N - 1.0, 1.0);
  runningMean[ch] = (1.0 - p.momentum) * runningMean[ch] + p.momentum * mean;
  runningVar[ch] = (1.0 - p.momentum) * runningVar[ch] + p.momentum * unbiased;
  coef[ch * 2u] = mean;
  coef[ch * 2u + 1u] = weight[ch] * invstd;
}
`,
};

const EVAL_COEF: KernelSpec = {
  name: "batchnorm_eval_coef",
  code: `
// Batch norm eval forward, pass 1: one thread per channel writes
// coef[ch] = (runningMean, weight / sqrt(runningVar + eps)).
const WG = ${WG}u;
struct Params { c: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> runningMean: array<f32>;
@group(0) @binding(2) var<storage, read> runningVar: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read_write> coef: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let ch = gid.x;
  if (ch >= p.c) { return; }
  coef[ch * 2u] = runningMean[ch];
  coef[ch * 2u + 1u] = weight[ch] / sqrt(runningVar[ch] + p.eps);
}
`,
};

/**
 * Elementwise passes come in two variants: scalar (one thread per element), and vec4 when `hw`
 * is a multiple of 4 (one thread per 4 elements of one channel: a quarter of the index
 * divisions, vector loads and stores). `T` is the element type, `hw` counts elements of `T`.
 */
function normalizeSpec(vec4: boolean): KernelSpec {
  const T = vec4 ? "vec4f" : "f32";
  return {
    name: `batchnorm_normalize${vec4 ? "_vec4" : ""}`,
    code: `
// Batch norm forward, last pass. One thread per ${vec4 ? "4 elements" : "element"}: idx indexes
// array<${T}>, channel (idx / hw) % c with hw in ${T} units:
// y = (x - coef.mean) * coef.scale + bias.
const WG = ${WG}u;
struct Params { total: u32, c: u32, hw: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<${T}>;
@group(0) @binding(2) var<storage, read> coef: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<${T}>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= p.total) { return; }
  let ch = (idx / p.hw) % p.c;
  y[idx] = (x[idx] - coef[ch * 2u]) * coef[ch * 2u + 1u] + bias[ch];
}
`,
  };
}
const NORMALIZE = normalizeSpec(false);
const NORMALIZE_V4 = normalizeSpec(true);

function gradPartialSpec(vec4: boolean): KernelSpec {
  return {
    name: `batchnorm_grad_partial${vec4 ? "_vec4" : ""}`,
    code: `
// Batch norm backward, pass 1: sums of dy and dy * (x - mean) per (chunk, channel).` +
      partialWgsl(
        vec4,
        `@group(0) @binding(1) var<storage, read> dy: array<T>;
@group(0) @binding(2) var<storage, read> x: array<T>;
@group(0) @binding(3) var<storage, read> saveMean: array<f32>;
@group(0) @binding(4) var<storage, read_write> partial: array<f32>;`,
        "let mean = saveMean[ch];",
        `let g = dy[e];
    s += vec2f(hsum(g), hdot(g, x[e] - mean));`,
      ),
  };
}
const GRAD_PARTIAL = gradPartialSpec(false);
const GRAD_PARTIAL_V4 = gradPartialSpec(true);

function gradFinalSpec(accumulate: boolean): KernelSpec {
  const op = accumulate ? "+=" : "=";
  return {
    name: `batchnorm_grad_final${accumulate ? "_acc" : ""}`,
    code: `
// Batch norm backward, pass 2: one thread per channel adds the chunk sums (sdy, sdyxm), then
// ${accumulate ? "accumulates into" : "overwrites"} dbias = sdy and dweight = sdyxm * invstd, and
// writes coef[ch] = (mean, A, B, C) of dx = A * dy + B * (x - mean) + C for pass 3.
const WG = ${WG}u;
struct Params { n: u32, c: u32, hw: u32, chunks: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> saveMean: array<f32>;
@group(0) @binding(4) var<storage, read> saveInvStd: array<f32>;
@group(0) @binding(5) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(6) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(7) var<storage, read_write> coef: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let ch = gid.x;
  if (ch >= p.c) { return; }
  var sdy = 0.0;
  var sdyxm = 0.0;
  for (var k = 0u; k < p.chunks; k++) {
    let o = (ch * p.chunks + k) * 2u;
    sdy += partial[o];
    sdyxm += partial[o + 1u];
  }
  let invstd = saveInvStd[ch];
  dbias[ch] ${op} sdy;
  dweight[ch] ${op} sdyxm * invstd;
  let N = f32(p.n * p.hw);
  let a = weight[ch] * invstd;
  coef[ch * 4u] = saveMean[ch];
  coef[ch * 4u + 1u] = a;
  coef[ch * 4u + 2u] = -a * invstd * invstd * sdyxm / N;
  coef[ch * 4u + 3u] = -a * sdy / N;
}
`,
  };
}
const GRAD_FINAL = gradFinalSpec(false);
const GRAD_FINAL_ACC = gradFinalSpec(true);

function gradInputSpec(vec4: boolean): KernelSpec {
  const T = vec4 ? "vec4f" : "f32";
  return {
    name: `batchnorm_grad_input${vec4 ? "_vec4" : ""}`,
    code: `
// Batch norm backward, pass 3. One thread per ${vec4 ? "4 elements" : "element"}: idx indexes
// array<${T}>, channel (idx / hw) % c with hw in ${T} units:
// dx = A * dy + B * (x - mean) + C with the per-channel coefficients of pass 2.
const WG = ${WG}u;
struct Params { total: u32, c: u32, hw: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<${T}>;
@group(0) @binding(2) var<storage, read> x: array<${T}>;
@group(0) @binding(3) var<storage, read> coef: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<${T}>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= p.total) { return; }
  let k = ((idx / p.hw) % p.c) * 4u;
  dx[idx] = coef[k + 1u] * dy[idx] + coef[k + 2u] * (x[idx] - coef[k]) + coef[k + 3u];
}
`,
  };
}
const GRAD_INPUT = gradInputSpec(false);
const GRAD_INPUT_V4 = gradInputSpec(true);

/** Params of a partial-sum pass, in vec4 units when hw is a multiple of 4. */
function partialParams(r: Resolved): Uint8Array {
  const v = r.hw % 4 === 0 ? 4 : 1;
  const hw = r.hw / v;
  return new ParamsWriter().u32(r.n).u32(r.c).u32(hw).u32(CHUNK / v).u32(r.chunks)
    .u32(Math.floor(WG / hw)).u32(WG % hw).bytes();
}

/** Params and workgroups of an elementwise pass (vec4 when hw is a multiple of 4). */
function elementwise(r: Resolved): {
  vec4: boolean;
  params: Uint8Array;
  workgroups: [number, number, number];
} {
  const vec4 = r.hw % 4 === 0;
  const v = vec4 ? 4 : 1;
  const total = (r.n * r.c * r.hw) / v;
  return {
    vec4,
    params: new ParamsWriter().u32(total).u32(r.c).u32(r.hw / v).bytes(),
    workgroups: grid1d(total, WG),
  };
}

/**
 * Batch normalization forward.
 *
 * Training (`training: true`): normalizes with the batch mean and biased batch variance over
 * `n * hw` elements per channel, overwrites `saveMean` and `saveInvStd = 1 / sqrt(var + eps)`
 * (`[c]`, for the backward), and updates `runningMean` / `runningVar` in place:
 * `r = (1 - momentum) * r + momentum * stat`, with the unbiased variance for `runningVar`.
 * Eval: `y = (x - runningMean) / sqrt(runningVar + eps) * weight + bias`; `saveMean` and
 * `saveInvStd` are untouched. `y` is overwritten in both modes.
 *
 * @throws {TypeError} when a tensor's shape or dtype does not match the parameters.
 * @throws {RangeError} in training with a single value per channel (`n * hw == 1`), as PyTorch.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { batchNormForward } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const x = gpu.zeros([4, 64, 24, 24]);
 * const y = gpu.empty(x.shape);
 * const [saveMean, saveInvStd, runningMean, runningVar, weight, bias] = [0, 1, 2, 3, 4, 5].map(
 *   () => gpu.zeros([64]),
 * );
 * batchNormForward(
 *   { y, saveMean, saveInvStd, runningMean, runningVar, x, weight, bias },
 *   { n: 4, c: 64, hw: 24 * 24, training: true },
 * );
 * ```
 */
export function batchNormForward(
  io: {
    y: Tensor;
    saveMean: Tensor;
    saveInvStd: Tensor;
    runningMean: Tensor;
    runningVar: Tensor;
    x: Tensor;
    weight: Tensor;
    bias: Tensor;
  },
  p: BatchNormParams & { readonly training: boolean },
): void {
  const op = "batchNormForward";
  const r = resolve(op, p);
  checkData(op, "x", io.x, r);
  checkData(op, "y", io.y, r);
  for (
    const k of ["saveMean", "saveInvStd", "runningMean", "runningVar", "weight", "bias"] as const
  ) {
    checkChannel(op, k, io[k], r);
  }
  const gpu = io.x.gpu;
  const coef = gpu.empty([r.c, 2]);
  if (p.training) {
    if (r.n * r.hw < 2) {
      throw new RangeError(
        `${op}: expected more than 1 value per channel when training, got input ` +
          `${formatShape(io.x.shape)}`,
      );
    }
    const partial = gpu.empty([r.c, r.chunks, 2]);
    gpu.dispatch(r.hw % 4 === 0 ? STATS_PARTIAL_V4 : STATS_PARTIAL, {
      params: partialParams(r),
      bindings: [io.x, partial],
      workgroups: [r.chunks, r.c, 1],
    });
    gpu.dispatch(STATS_FINAL, {
      params: new ParamsWriter().u32(r.n).u32(r.c).u32(r.hw).u32(r.chunks).f32(r.eps)
        .f32(r.momentum).bytes(),
      bindings: [
        partial,
        io.x,
        io.weight,
        io.saveMean,
        io.saveInvStd,
        io.runningMean,
        io.runningVar,
        coef,
      ],
      workgroups: Math.ceil(r.c / WG),
    });
    partial.dispose();
  } else {
    gpu.dispatch(EVAL_COEF, {
      params: new ParamsWriter().u32(r.c).f32(r.eps).bytes(),
      bindings: [io.runningMean, io.runningVar, io.weight, coef],
      workgroups: Math.ceil(r.c / WG),
    });
  }
  const ew = elementwise(r);
  gpu.dispatch(ew.vec4 ? NORMALIZE_V4 : NORMALIZE, {
    params: ew.params,
    bindings: [io.x, coef, io.bias, io.y],
    workgroups: ew.workgroups,
  });
  coef.dispose();
}

/**
 * Batch normalization backward (training mode, with the `saveMean` / `saveInvStd` of the
 * forward): `dx` is overwritten; `dweight` and `dbias` are overwritten, or `+=` with
 * `accumulate: true`.
 *
 * @throws {TypeError} when a tensor's shape or dtype does not match the parameters.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { batchNormBackward } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const x = gpu.zeros([4, 64, 24, 24]);
 * const dy = gpu.zeros(x.shape);
 * const dx = gpu.empty(x.shape);
 * const [dweight, dbias, weight, saveMean, saveInvStd] = [0, 1, 2, 3, 4].map(() => gpu.zeros([64]));
 * batchNormBackward(
 *   { dx, dweight, dbias, dy, x, weight, saveMean, saveInvStd },
 *   { n: 4, c: 64, hw: 24 * 24 },
 * );
 * ```
 */
export function batchNormBackward(
  io: {
    dx: Tensor;
    dweight: Tensor;
    dbias: Tensor;
    dy: Tensor;
    x: Tensor;
    weight: Tensor;
    saveMean: Tensor;
    saveInvStd: Tensor;
  },
  p: BatchNormParams & { readonly accumulate?: boolean },
): void {
  const op = "batchNormBackward";
  const r = resolve(op, p);
  checkData(op, "dy", io.dy, r);
  checkData(op, "x", io.x, r);
  checkData(op, "dx", io.dx, r);
  for (const k of ["dweight", "dbias", "weight", "saveMean", "saveInvStd"] as const) {
    checkChannel(op, k, io[k], r);
  }
  const gpu = io.x.gpu;
  const partial = gpu.empty([r.c, r.chunks, 2]);
  const coef = gpu.empty([r.c, 4]);
  gpu.dispatch(r.hw % 4 === 0 ? GRAD_PARTIAL_V4 : GRAD_PARTIAL, {
    params: partialParams(r),
    bindings: [io.dy, io.x, io.saveMean, partial],
    workgroups: [r.chunks, r.c, 1],
  });
  gpu.dispatch(p.accumulate ? GRAD_FINAL_ACC : GRAD_FINAL, {
    params: new ParamsWriter().u32(r.n).u32(r.c).u32(r.hw).u32(r.chunks).bytes(),
    bindings: [
      partial,
      io.weight,
      io.saveMean,
      io.saveInvStd,
      io.dweight,
      io.dbias,
      coef,
    ],
    workgroups: Math.ceil(r.c / WG),
  });
  const ew = elementwise(r);
  gpu.dispatch(ew.vec4 ? GRAD_INPUT_V4 : GRAD_INPUT, {
    params: ew.params,
    bindings: [io.dy, io.x, coef, io.dx],
    workgroups: ew.workgroups,
  });
  partial.dispose();
  coef.dispose();
}
