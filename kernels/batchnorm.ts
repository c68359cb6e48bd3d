/**
 * Batch normalization (`nn.BatchNorm2d` with `hw = h * w`, `nn.BatchNorm1d` with `hw = 1`) on
 * `x` `[n, c, ...]` holding `n * c * hw` elements: training forward (batch statistics, running
 * statistics updated in place), eval forward (running statistics), and the training backward.
 *
 * Every per-channel reduction runs over `N = n * hw` elements in two passes, so that long
 * reductions (ResNet at batch 256: `256 * 48 * 48` per channel) spread over many workgroups:
 * 1. partial sums: workgroup `(chunk, ch)` reduces a chunk of 4096 elements of channel `ch`
 *    (more for huge `N`, so that there are at most about 8192 chunks; its 64 threads stride over
 *    the chunk, then a tree reduction in workgroup memory, in two stages);
 * 2. finalize: one thread per channel adds the chunks in order, then writes the statistics,
 *    gradients and the per-channel coefficients of
 * 3. an elementwise pass producing `y` or `dx`, in which each thread loads one channel's
 *    coefficients once and walks a strided run of up to 64 elements of that channel: a segment
 *    of one `(sample, channel)` plane, or for BatchNorm1d (`hw` = 1) one channel over several
 *    samples (no per-element channel division or coefficient loads: 1.4 to 2.2 times the
 *    throughput of one thread per element on llvmpipe; runs are shorter on GPUs, to keep
 *    enough threads).
 *
 * Every thread's loops stay far below llvmpipe's silent cap of 65535 iterations per invocation
 * (pass 1: chunk / 64, pass 2: the chunk count, pass 3: 64). Tensors larger than one storage
 * binding (ResNet's `[256, 64, 48, 48]`, 151 MB) are processed in ranges of whole samples:
 * passes 1 and 3 run once per range (pass 1 writing the range's chunks), pass 2 once.
 *
 * When `hw` is a multiple of 4 the partial-sum and elementwise passes work on `vec4`s (4 elements
 * of one channel per load), which roughly doubles their throughput on llvmpipe.
 *
 * With `activation` (any `ActivationKind`: `"relu"`, `"relu6"`, `"sigmoid"`, `"tanh"`) the forward
 * applies the activation in the normalize pass (`y = f(BN(x))`, no extra pass), and the backward
 * takes the fused forward's output `y` and uses `dz = f'(BN(x)) * dy`, computed from `y` and `dy`
 * (for ReLU `dy * (y > 0)`, for sigmoid `dy * y * (1 - y)`), as the upstream gradient in both the
 * partial-sum and the input-gradient passes (no separate activation-backward pass or buffer). The
 * activation WGSL is the one of `_activation_wgsl.ts`, so the fused results are bit for bit those
 * of the separate kernels.
 *
 * Statistics are accumulated shifted by the channel's first element (`x[0, ch, 0]`), which keeps
 * `E[(x-K)^2] - E[x-K]^2` accurate when the mean is large relative to the spread.
 *
 * Storage types: every tensor may be f32 or f16, each binding its own (the training configuration
 * of `--precision f16`: `x`, `y`, `dy`, `dx` f16; `weight`, `bias`, running and saved statistics,
 * `dweight`, `dbias` f32). Values are converted to f32 on load and rounded once on store; all
 * arithmetic, the statistics and gradient sums, the partial sums and the per-channel
 * coefficients stay f32 (the statistics of f16 activations are accumulated in f32, as PyTorch's
 * autocast does). The vec4 paths read and write `vec4<f16>` (8 bytes, always aligned: `hw` and
 * every range's first element are multiples of 4). Data tensors of different dtypes in one
 * kernel have different binding bases (`bindingRange` aligns offsets to 256 bytes, 64 f32 or
 * 128 f16 elements): those kernels add `p.delta` to the index of the bindings whose dtype is
 * not `x`'s. With every tensor f32 the kernels are those of before f16 existed, text included.
 *
 * Outputs must not alias inputs: WebGPU rejects a buffer bound both read-only and read-write in
 * one dispatch.
 *
 * @module
 */

import {
  formatShape,
  type Gpu,
  grid1d,
  type KernelSpec,
  type Shape,
  type Tensor,
} from "../gpu/mod.ts";
import { actBackwardFn, actForwardFn, checkActivationKind } from "./_activation_wgsl.ts";
import { bindingRange, type TensorRange, unitRanges } from "./_binding.ts";
import {
  assignAs,
  dtypeSpecs,
  type FloatDType,
  floatDType,
  loadF32,
  storageType,
} from "./_dtype.ts";
import { checkPositiveInts } from "./_geometry.ts";
import { ParamsWriter } from "./_params.ts";
import type { ActivationKind } from "./_activation_wgsl.ts";

/** Threads per workgroup of every batch-norm kernel. */
const WG = 64;
/** Elements of one channel reduced by one workgroup of the partial-sum passes (at least). */
const CHUNK = 4096;
/** Chunks per channel beyond which chunks grow (bounds the loop of the finalize pass). */
const MAX_CHUNKS = 8192;
/** Loop steps per pass of the partial-sum passes' first loop (fewer loop passes on llvmpipe). */
const PARTIAL_UNROLL = 4;
/**
 * Lanes of the first stage of the partial-sum passes' two-stage tree reduction (two barriers
 * instead of one per level: each costs a suspension of every SIMD group on llvmpipe).
 */
const TREE_LANES = 8;

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
  /** Elements of a channel per chunk of the partial-sum passes (a multiple of 4096). */
  chunk: number;
}

function resolve(op: string, p: BatchNormParams): Resolved {
  checkPositiveInts(op, p, ["n", "c", "hw"]);
  const eps = p.eps ?? 1e-5;
  const momentum = p.momentum ?? 0.1;
  if (!Number.isFinite(eps) || eps < 0) {
    throw new RangeError(`${op}: eps must be a finite number >= 0, got ${eps}`);
  }
  if (!Number.isFinite(momentum) || momentum < 0 || momentum > 1) {
    throw new RangeError(`${op}: momentum must be in [0, 1], got ${momentum}`);
  }
  if (p.c > 65535) {
    throw new RangeError(`${op}: c = ${p.c} is too large (at most 65535 channels)`);
  }
  const chunk = CHUNK * Math.max(1, Math.ceil((p.n * p.hw) / (CHUNK * MAX_CHUNKS)));
  return { n: p.n, c: p.c, hw: p.hw, eps, momentum, chunk };
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

/** Checks a data tensor (`x`, `y`, `dy`, `dx`) and returns its dtype. */
function checkData(op: string, name: string, t: Tensor, r: Resolved): FloatDType {
  const s = t.shape;
  if (s.length < 2 || s[0] !== r.n || s[1] !== r.c || t.size !== r.n * r.c * r.hw) {
    throw new TypeError(
      `${op}: ${name} has shape ${formatShape(s)}, expected [${r.n}, ${r.c}, ...] with ` +
        `${r.hw} element(s) per sample and channel`,
    );
  }
  return floatDType(op, name, t);
}

/** Checks a per-channel tensor (`[c]`) and returns its dtype. */
function checkChannel(op: string, name: string, t: Tensor, r: Resolved): FloatDType {
  if (t.shape.length !== 1 || t.shape[0] !== r.c) {
    throw new TypeError(`${op}: ${name} has shape ${formatShape(t.shape)}, expected [${r.c}]`);
  }
  return floatDType(op, name, t);
}

// ------------------------------------------------------------------ storage types ----

/** Storage types of the float bindings of one kernel, by binding name. */
type DTypes = Readonly<Record<string, FloatDType>>;

/** The kernels, by name and storage types (see {@linkcode dtypeSpecs}). */
const spec = dtypeSpecs();

/**
 * Data bindings (x, y, dy, dx: arrays of `T`, f32 or vec4f) of a kernel: their storage element
 * types, loads (`T(...)` from f16), stores (rounded once to f16) and indices (`e`, or
 * `e + p.delta` for a binding whose dtype is not `x`'s, see the module doc).
 */
class DataTypes {
  /** Whether some data binding has another dtype than `x` (Params gets `delta`). */
  readonly mixed: boolean;
  /** Whether some data binding is f16 (the WGSL declares `alias H`). */
  readonly half: boolean;
  /** Storage type of each data binding. */
  readonly dtypes: DTypes;
  constructor(dtypes: DTypes) {
    this.dtypes = dtypes;
    const ds = Object.values(dtypes);
    this.mixed = ds.some((d) => d !== dtypes.x);
    this.half = ds.includes("f16");
  }
  /** `alias H` (the f16 storage type matching `T`), when needed. */
  alias(vec4: boolean): string {
    return this.half
      ? `alias H = ${vec4 ? "vec4<f16>" : "f16"};
`
      : "";
  }
  /** The WGSL array type of binding `name`. */
  array(name: string): string {
    return this.dtypes[name] === "f16" ? "array<H>" : "array<T>";
  }
  /** `name[e]` (with the binding's delta) as a `T`. */
  load(name: string): string {
    const v = `${name}[${this.#index(name)}]`;
    return this.dtypes[name] === "f16" ? `T(${v})` : v;
  }
  /** WGSL statement storing the `T` value `value` into `name[e]`. */
  store(name: string, value: string): string {
    const v = this.dtypes[name] === "f16" ? `H(${value})` : value;
    return `${name}[${this.#index(name)}] = ${v};`;
  }
  /** The `, delta: u32` Params field of mixed kernels. */
  field(): string {
    return this.mixed ? ", delta: u32" : "";
  }
  #index(name: string): string {
    return this.dtypes[name] === this.dtypes.x ? "e" : "e + p.delta";
  }
}

/**
 * Validates the `activation` option (RangeError naming `op` for an unknown kind): returns the
 * fused kind, or undefined for none.
 */
function checkActivationOption(op: string, activation: unknown): ActivationKind | undefined {
  checkActivationKind(op, activation as ActivationKind | undefined);
  return activation as ActivationKind | undefined;
}

/** WGSL `act` and `actBackward` of a fused activation (`_activation_wgsl.ts`). */
function activationFns(kind: ActivationKind): string {
  return `${actForwardFn(kind)}
${actBackwardFn(kind)}`;
}

/**
 * WGSL expression of the value lane `lane` holds in the halving tree over `red` (level k:
 * `red[l] += red[l + k]` for l < k, k = WG / 2, ..., 1) once the levels from `width / 2` down to
 * `to` are done, starting from `red[0..width)`: the tree's additions, in its order, written out.
 */
function treeSum(lane: string, width: number, to: number): string {
  const at = (off: number) => (off === 0 ? `red[${lane}]` : `red[${lane} + ${off}u]`);
  const expr = (k: number, off: number): string =>
    k === width ? at(off) : `(${expr(2 * k, off)} + ${expr(2 * k, off + k)})`;
  return expr(to, 0);
}

/**
 * WGSL of a partial-sum pass over one range of samples: workgroup (chunk, ch) accumulates
 * `(v1, v2)` given by `body` (which sees the element index `e` and `ch`) over its chunk and
 * writes the two sums to `partial[(ch * totalChunks + chunkOff + chunk) * 2 + {0, 1}]`. `data`
 * describes the data bindings (declared by `header`).
 */
function partialWgsl(
  vec4: boolean,
  data: DataTypes,
  parts: { header: string; prologue: string; body: string },
): string {
  const { header, prologue, body } = parts;
  const T = vec4 ? "vec4f" : "f32";
  const step = `
    {
      let e = p.xBase + (b * p.c + ch) * p.hw + i;
      ${body}
      i += p.stepI;
      b += p.stepB;
      if (i >= p.hw) { i -= p.hw; b += 1u; }
    }`;
  return `
// One dispatch per range of n samples (starting at element xBase of its bindings). Thread lid of
// workgroup (chunk, ch) walks the flat per-channel index j = b * hw + i over
// [chunk * CHUNK, min((chunk + 1) * CHUNK, n * hw)) in steps of WG (b, i advanced without
// divisions; at most CHUNK / WG iterations); element e = xBase + (b * c + ch) * hw + i, in units
// of ${T} (hw, chunk, xBase counted in ${T}). The two register sums are tree-reduced in workgroup
// memory and written to partial[(ch * totalChunks + chunkOff + chunk) * 2 + {0, 1}].${
    data.mixed
      ? "\n// Bindings of another dtype than x's are indexed e + delta (their base differs)."
      : ""
  }
const WG = ${WG}u;
const UNROLL = ${PARTIAL_UNROLL}u;
const LANES = ${TREE_LANES}u;
alias T = ${T};
${data.alias(vec4)}${
    vec4
      ? `fn hsum(v: vec4f) -> f32 { return v.x + v.y + v.z + v.w; }
fn hdot(a: vec4f, b: vec4f) -> f32 { return dot(a, b); }
fn first(v: vec4f) -> f32 { return v.x; }`
      : `fn hsum(v: f32) -> f32 { return v; }
fn hdot(a: f32, b: f32) -> f32 { return a * b; }
fn first(v: f32) -> f32 { return v; }`
  }
struct Params { n: u32, c: u32, hw: u32, chunk: u32, totalChunks: u32, stepB: u32, stepI: u32,
  xBase: u32, chunkOff: u32${data.field()} }
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
  var j = j0;
  // UNROLL steps per pass, then one at a time: the same additions in the same order.
  for (; j + (UNROLL - 1u) * WG < j1; j += UNROLL * WG) {${step.repeat(PARTIAL_UNROLL)}
  }
  for (; j < j1; j += WG) {${step}
  }
  // The halving tree red[l] += red[l + k] (k = WG / 2, ..., 1) in two stages: lanes l < LANES
  // fold their ${WG / TREE_LANES} sums (levels k >= LANES), then lane 0 the LANES results.
  red[lid] = s;
  workgroupBarrier();
  if (lid < LANES) {
    red[lid] = ${treeSum("lid", WG, TREE_LANES)};
  }
  workgroupBarrier();
  if (lid == 0u) {
    let r = ${treeSum("0u", TREE_LANES, 1)};
    let o = (ch * p.totalChunks + p.chunkOff + chunk) * 2u;
    partial[o] = r.x;
    partial[o + 1u] = r.y;
  }
}
`;
}

/** Pass 1 of the training forward, for `x` of dtype `xd`. */
function statsPartialSpec(vec4: boolean, xd: FloatDType): KernelSpec {
  const data = new DataTypes({ x: xd });
  return spec(`batchnorm_stats_partial${vec4 ? "_vec4" : ""}`, data.dtypes, () =>
    `
// Batch norm training forward, pass 1: shifted sums of x - K and (x - K)^2 per (chunk, channel),
// K = x[0, ch, 0] (read from x0, the binding of the first sample).` + partialWgsl(vec4, data, {
      header: `@group(0) @binding(1) var<storage, read> x: ${data.array("x")};
@group(0) @binding(2) var<storage, read> x0: ${data.array("x")};
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;`,
      prologue: `let K = first(${xd === "f16" ? "T(x0[ch * p.hw])" : "x0[ch * p.hw]"});`,
      body: `let v = ${data.load("x")} - K;
    s += vec2f(hsum(v), hdot(v, v));`,
    }));
}

/** Storage types of the bindings of the training forward's pass 2. */
interface StatsDTypes {
  x: FloatDType;
  weight: FloatDType;
  saveMean: FloatDType;
  saveInvStd: FloatDType;
  runningMean: FloatDType;
  runningVar: FloatDType;
}

function statsFinalSpec(d: StatsDTypes): KernelSpec {
  return spec("batchnorm_stats_final", { ...d }, () => `
// Batch norm training forward, pass 2: one thread per channel adds the chunk sums, then writes
// saveMean, saveInvStd = 1 / sqrt(var + eps) (biased variance), updates the running statistics
// (unbiased variance), and writes coef[ch] = (mean, weight * invstd) for pass 3. x0 is the
// binding of the first sample (for the shift K = x[0, ch, 0]).
const WG = ${WG}u;
struct Params { n: u32, c: u32, hw: u32, chunks: u32, eps: f32, momentum: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read> x0: array<${storageType(d.x)}>;
@group(0) @binding(3) var<storage, read> weight: array<${storageType(d.weight)}>;
@group(0) @binding(4) var<storage, read_write> saveMean: array<${storageType(d.saveMean)}>;
@group(0) @binding(5) var<storage, read_write> saveInvStd: array<${storageType(d.saveInvStd)}>;
@group(0) @binding(6) var<storage, read_write> runningMean: array<${storageType(d.runningMean)}>;
@group(0) @binding(7) var<storage, read_write> runningVar: array<${storageType(d.runningVar)}>;
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
  let mean = ${loadF32(d.x, "x0[ch * p.hw]")} + d;
  let variance = max(s2 / N - d * d, 0.0);
  let invstd = 1.0 / sqrt(variance + p.eps);
  ${assignAs(d.saveMean, "saveMean[ch]", "=", "mean")}
  ${assignAs(d.saveInvStd, "saveInvStd[ch]", "=", "invstd")}
  let unbiased = variance * N / max(N - 1.0, 1.0);
  ${
    assignAs(
      d.runningMean,
      "runningMean[ch]",
      "=",
      `(1.0 - p.momentum) * ${loadF32(d.runningMean, "runningMean[ch]")} + p.momentum * mean`,
    )
  }
  ${
    assignAs(
      d.runningVar,
      "runningVar[ch]",
      "=",
      `(1.0 - p.momentum) * ${loadF32(d.runningVar, "runningVar[ch]")} + p.momentum * unbiased`,
    )
  }
  coef[ch * 2u] = mean;
  coef[ch * 2u + 1u] = ${loadF32(d.weight, "weight[ch]")} * invstd;
}
`);
}

function evalCoefSpec(
  d: { runningMean: FloatDType; runningVar: FloatDType; weight: FloatDType },
): KernelSpec {
  return spec("batchnorm_eval_coef", d, () => `
// Batch norm eval forward, pass 1: one thread per channel writes
// coef[ch] = (runningMean, weight / sqrt(runningVar + eps)).
const WG = ${WG}u;
struct Params { c: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> runningMean: array<${storageType(d.runningMean)}>;
@group(0) @binding(2) var<storage, read> runningVar: array<${storageType(d.runningVar)}>;
@group(0) @binding(3) var<storage, read> weight: array<${storageType(d.weight)}>;
@group(0) @binding(4) var<storage, read_write> coef: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let ch = gid.x;
  if (ch >= p.c) { return; }
  coef[ch * 2u] = ${loadF32(d.runningMean, "runningMean[ch]")};
  coef[ch * 2u + 1u] = ${loadF32(d.weight, "weight[ch]")} / sqrt(${
    loadF32(d.runningVar, "runningVar[ch]")
  } + p.eps);
}
`);
}

/**
 * Thread mappings of the elementwise passes (normalize, input gradient), in which each thread
 * loads its channel's coefficients once and then walks a strided run of elements of that
 * channel (on llvmpipe every load of a per-channel value costs as much as a data load, and the
 * channel is computed once per thread instead of once per element):
 * - `"planes"` / `"planes_vec4"` (`hw` > 1; vec4 when `hw` is a multiple of 4): the
 *   `(sample, channel)` planes of `hw` elements (of `T`) are cut into `segs` interleaved
 *   segments; thread `t` takes plane `t / segs`, segment `s = t % segs`, and the plane's elements
 *   `s, s + segs, s + 2 * segs, ...` (consecutive threads, consecutive elements);
 * - `"columns"` (`hw` = 1, BatchNorm1d): thread `t` takes channel `t % c` and the samples
 *   `t / c + k * segs` (consecutive threads, consecutive channels).
 *
 * `segs` is chosen by {@linkcode elementwise}: each thread walks at most {@linkcode RUN}
 * elements, fewer where that leaves too few threads for the device.
 */
type Layout = "planes" | "planes_vec4" | "columns";

/** Elements (of `T`) walked by one thread of an elementwise pass, at most. */
const RUN = 64;
/**
 * Threads an elementwise pass should have at least, where runs get shorter to reach them: on a
 * CPU a few workgroups per core; on a GPU enough to fill a large one (runs of a few elements, as
 * one thread per element did before; a guess, not measured on a GPU).
 */
function minThreads(gpu: Gpu): number {
  if (!gpu.isCpu) return 1 << 17;
  return 4 * WG * Math.max(1, globalThis.navigator?.hardwareConcurrency ?? 4);
}

/**
 * WGSL of an elementwise pass over one range of whole samples (starting at element `base` of
 * its bindings, in units of `T`): the thread mapping of `layout`, then `prologue` (which sees
 * `ch` and loads the channel's coefficients) once, and `body` (which sees the element index `e`)
 * per element. `header` declares the bindings from 1 on.
 */
function elementwiseWgsl(
  layout: Layout,
  data: DataTypes,
  parts: { header: string; prologue: string; body: string },
): string {
  const { header, prologue, body } = parts;
  const T = layout === "planes_vec4" ? "vec4f" : "f32";
  const walk = layout === "columns"
    ? `let sb = t / p.c;
  let ch = t - sb * p.c;
  ${prologue}
  for (var b = sb; b < p.n; b += p.segs) {
    let e = p.base + b * p.c + ch;
    ${body}
  }`
    : `let plane = t / p.segs;
  let seg = t - plane * p.segs;
  let ch = plane % p.c;
  ${prologue}
  let off = p.base + plane * p.hw;
  for (var j = seg; j < p.hw; j += p.segs) {
    let e = off + j;
    ${body}
  }`;
  return `
// Thread mapping (${layout}): ${
    layout === "columns"
      ? `thread t < p.threads = segs * c takes channel ch = t % c and samples
// b = t / c + k * segs < n: elements e = base + b * c + ch`
      : `thread t < p.threads = n * c * segs takes plane t / segs (= b * c + ch),
// ch = plane % c, and j = t % segs + k * segs < hw: elements e = base + plane * hw + j`
  } (at most
// ${RUN} per thread, set by the host's segs); t = gid.x + gid.y * nwg.x * WG (grid1d). n counts
// the range's samples; hw and base are in units of ${T}.${
    data.mixed
      ? "\n// Bindings of another dtype than x's are indexed e + delta (their base differs)."
      : ""
  }
const WG = ${WG}u;
alias T = ${T};
${
    data.alias(layout === "planes_vec4")
  }struct Params { threads: u32, n: u32, c: u32, hw: u32, base: u32, segs: u32${data.field()} }
@group(0) @binding(0) var<uniform> p: Params;
${header}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * WG;
  if (t >= p.threads) { return; }
  ${walk}
}
`;
}

function normalizeSpec(
  layout: Layout,
  kind: ActivationKind | undefined,
  d: { x: FloatDType; bias: FloatDType; y: FloatDType },
): KernelSpec {
  const data = new DataTypes({ x: d.x, y: d.y });
  return spec(
    `batchnorm_normalize_${layout}${kind ? `_${kind}` : ""}`,
    { x: d.x, bias: d.bias, y: d.y },
    () =>
      `
// Batch norm forward, last pass:
// y = ${kind ? `act(` : ""}(x - coef.mean) * coef.scale + bias${kind ? `), act = ${kind}` : ""}.` +
      elementwiseWgsl(layout, data, {
        header: `@group(0) @binding(1) var<storage, read> x: ${data.array("x")};
@group(0) @binding(2) var<storage, read> coef: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<${storageType(d.bias)}>;
@group(0) @binding(4) var<storage, read_write> y: ${data.array("y")};
${kind ? activationFns(kind) : ""}`,
        prologue: `let mean = coef[ch * 2u];
  let scale = coef[ch * 2u + 1u];
  let shift = ${loadF32(d.bias, "bias[ch]")};`,
        body: `let v = (${data.load("x")} - mean) * scale + shift;
    ${data.store("y", kind ? "act(v)" : "v")}`,
      }),
  );
}

/** Storage types of the data bindings of the backward's passes 1 and 3 (`y` with a fused activation). */
interface GradDataDTypes {
  dy: FloatDType;
  x: FloatDType;
  y?: FloatDType;
}

/** `g`, the gradient reaching the batch norm: `dy`, or the fused activation's backward. */
function gradExpr(data: DataTypes, kind: ActivationKind | undefined): string {
  return kind ? `actBackward(${data.load("dy")}, ${data.load("y")})` : data.load("dy");
}

function gradPartialSpec(
  vec4: boolean,
  kind: ActivationKind | undefined,
  d: GradDataDTypes & { saveMean: FloatDType },
): KernelSpec {
  const data = new DataTypes({ x: d.x, dy: d.dy, ...(kind ? { y: d.y ?? "f32" } : {}) });
  return spec(
    `batchnorm_grad_partial${kind ? `_${kind}` : ""}${vec4 ? "_vec4" : ""}`,
    { ...data.dtypes, saveMean: d.saveMean },
    () =>
      `
// Batch norm backward, pass 1: sums of g and g * (x - mean) per (chunk, channel), with
// ${kind ? `g = actBackward(dy, y) (the fused ${kind}'s backward, y its output)` : "g = dy"}.` +
      partialWgsl(vec4, data, {
        header: `@group(0) @binding(1) var<storage, read> dy: ${data.array("dy")};
@group(0) @binding(2) var<storage, read> x: ${data.array("x")};
@group(0) @binding(3) var<storage, read> saveMean: array<${storageType(d.saveMean)}>;
@group(0) @binding(4) var<storage, read_write> partial: array<f32>;${
          kind
            ? `
@group(0) @binding(5) var<storage, read> y: ${data.array("y")};
${activationFns(kind)}`
            : ""
        }`,
        prologue: `let mean = ${loadF32(d.saveMean, "saveMean[ch]")};`,
        body: `let g = ${gradExpr(data, kind)};
    s += vec2f(hsum(g), hdot(g, ${data.load("x")} - mean));`,
      }),
  );
}

/** Storage types of the bindings of the backward's pass 2. */
interface GradFinalDTypes {
  weight: FloatDType;
  saveMean: FloatDType;
  saveInvStd: FloatDType;
  dweight: FloatDType;
  dbias: FloatDType;
}

function gradFinalSpec(accumulate: boolean, d: GradFinalDTypes): KernelSpec {
  const op = accumulate ? "+=" : "=";
  return spec(`batchnorm_grad_final${accumulate ? "_acc" : ""}`, { ...d }, () => `
// Batch norm backward, pass 2: one thread per channel adds the chunk sums (sdy, sdyxm), then
// ${accumulate ? "accumulates into" : "overwrites"} dbias = sdy and dweight = sdyxm * invstd, and
// writes coef[ch] = (mean, A, B, C) of dx = A * dy + B * (x - mean) + C for pass 3.
const WG = ${WG}u;
struct Params { n: u32, c: u32, hw: u32, chunks: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<${storageType(d.weight)}>;
@group(0) @binding(3) var<storage, read> saveMean: array<${storageType(d.saveMean)}>;
@group(0) @binding(4) var<storage, read> saveInvStd: array<${storageType(d.saveInvStd)}>;
@group(0) @binding(5) var<storage, read_write> dweight: array<${storageType(d.dweight)}>;
@group(0) @binding(6) var<storage, read_write> dbias: array<${storageType(d.dbias)}>;
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
  let invstd = ${loadF32(d.saveInvStd, "saveInvStd[ch]")};
  ${assignAs(d.dbias, "dbias[ch]", op, "sdy")}
  ${assignAs(d.dweight, "dweight[ch]", op, "sdyxm * invstd")}
  let N = f32(p.n * p.hw);
  let a = ${loadF32(d.weight, "weight[ch]")} * invstd;
  coef[ch * 4u] = ${loadF32(d.saveMean, "saveMean[ch]")};
  coef[ch * 4u + 1u] = a;
  coef[ch * 4u + 2u] = -a * invstd * invstd * sdyxm / N;
  coef[ch * 4u + 3u] = -a * sdy / N;
}
`);
}

function gradInputSpec(
  layout: Layout,
  kind: ActivationKind | undefined,
  d: GradDataDTypes & { dx: FloatDType },
): KernelSpec {
  const data = new DataTypes({
    x: d.x,
    dy: d.dy,
    dx: d.dx,
    ...(kind ? { y: d.y ?? "f32" } : {}),
  });
  return spec(
    `batchnorm_grad_input_${layout}${kind ? `_${kind}` : ""}`,
    data.dtypes,
    () =>
      `
// Batch norm backward, pass 3: dx = A * g + B * (x - mean) + C with the per-channel
// coefficients coef[ch] = (mean, A, B, C) of pass 2 and
// ${kind ? `g = actBackward(dy, y) (the fused ${kind}'s backward, y its output)` : "g = dy"}.` +
      elementwiseWgsl(layout, data, {
        header: `@group(0) @binding(1) var<storage, read> dy: ${data.array("dy")};
@group(0) @binding(2) var<storage, read> x: ${data.array("x")};
@group(0) @binding(3) var<storage, read> coef: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: ${data.array("dx")};${
          kind
            ? `
@group(0) @binding(5) var<storage, read> y: ${data.array("y")};
${activationFns(kind)}`
            : ""
        }`,
        prologue: `let mean = coef[ch * 4u];
  let A = coef[ch * 4u + 1u];
  let B = coef[ch * 4u + 2u];
  let C = coef[ch * 4u + 3u];`,
        body: `let g = ${gradExpr(data, kind)};
    ${data.store("dx", `A * g + B * (${data.load("x")} - mean) + C`)}`,
      }),
  );
}

/** One range of whole samples `[b0, b1)` and its first chunk among all ranges' chunks. */
interface SampleRange {
  b0: number;
  b1: number;
  chunkOff: number;
  chunks: number;
}

/**
 * Ranges of whole samples that fit one binding, with their chunks of the partial-sum passes;
 * returns them and the total chunk count.
 */
function sampleRanges(op: string, gpu: Gpu, r: Resolved): { ranges: SampleRange[]; total: number } {
  const ranges: SampleRange[] = [];
  let total = 0;
  for (const [b0, b1] of unitRanges(op, gpu, r.n, r.c * r.hw)) {
    const chunks = Math.ceil(((b1 - b0) * r.hw) / r.chunk);
    ranges.push({ b0, b1, chunkOff: total, chunks });
    total += chunks;
  }
  return { ranges, total };
}

/** The binding of samples `[b0, b1)` of a data tensor. */
function samples(t: Tensor, r: Resolved, s: SampleRange): TensorRange {
  const per = r.c * r.hw;
  return bindingRange(t, s.b0 * per, (s.b1 - s.b0) * per);
}

/**
 * Appends the `delta` field of a mixed-dtype kernel to `w`: the base of the data bindings whose
 * dtype is not that of `data[0]` (x) less x's base, in units of `v` elements, modulo 2^32 (the
 * WGSL index `e + delta` wraps). Nothing when all have x's dtype (see `DataTypes`).
 */
function withDelta(w: ParamsWriter, data: readonly TensorRange[], v: number): ParamsWriter {
  const x = data[0];
  const other = data.find((d) => d.tensor.dtype !== x.tensor.dtype);
  return other === undefined ? w : w.u32(((other.base - x.base) / v) >>> 0);
}

/**
 * Params of a partial-sum pass over one range (`data`: the ranges of its data bindings, x's
 * first), in vec4 units when hw is a multiple of 4.
 */
function partialParams(
  r: Resolved,
  s: SampleRange,
  total: number,
  data: readonly TensorRange[],
): Uint8Array {
  const v = r.hw % 4 === 0 ? 4 : 1;
  const hw = r.hw / v;
  const w = new ParamsWriter().u32(s.b1 - s.b0).u32(r.c).u32(hw).u32(r.chunk / v).u32(total)
    .u32(Math.floor(WG / hw)).u32(WG % hw).u32(data[0].base / v).u32(s.chunkOff);
  return withDelta(w, data, v).bytes();
}

/**
 * Layout, params and workgroups of an elementwise pass over one range (see `Layout`; `data`: the
 * ranges of its data bindings, x's first): runs of at most `RUN` elements per thread, shorter
 * where that leaves fewer than `minThreads` threads.
 */
function elementwise(gpu: Gpu, r: Resolved, s: SampleRange, data: readonly TensorRange[]): {
  layout: Layout;
  params: Uint8Array;
  workgroups: [number, number, number];
} {
  const n = s.b1 - s.b0;
  const layout: Layout = r.hw === 1 ? "columns" : r.hw % 4 === 0 ? "planes_vec4" : "planes";
  const v = layout === "planes_vec4" ? 4 : 1;
  const hw = r.hw / v;
  // each of `lines` lines of `len` elements (planes; channels over the samples for "columns")
  // is cut into `segs` strided runs, one per thread
  const [len, lines] = layout === "columns" ? [n, r.c] : [hw, n * r.c];
  const segs = Math.min(len, Math.max(Math.ceil(len / RUN), Math.ceil(minThreads(gpu) / lines)));
  const threads = segs * lines;
  return {
    layout,
    params: withDelta(
      new ParamsWriter().u32(threads).u32(n).u32(r.c).u32(hw).u32(data[0].base / v).u32(segs),
      data,
      v,
    ).bytes(),
    workgroups: grid1d(threads, WG),
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
 * With `activation` (an `ActivationKind`: `"relu"`, `"relu6"`, `"sigmoid"` or `"tanh"`),
 * `y = f(BN(x))` in both modes, computed in the normalize pass (bit for bit
 * `activationForward({ kind })` of the unfused output); the statistics are those of `x` as
 * without it. Pass that `y` to {@linkcode batchNormBackward} with the same `activation`.
 *
 * Tensors are f32 or f16, each its own (mixed precision: f16 `x` and `y`, f32 `weight`, `bias`
 * and statistics); the statistics are accumulated in f32 from the loaded values and `y` is
 * rounded once.
 *
 * @throws {TypeError} when a tensor's shape does not match the parameters, or a tensor is not
 *   f32 or f16 (or is f16 on a device without `shader-f16`).
 * @throws {RangeError} in training with a single value per channel (`n * hw == 1`), as PyTorch,
 *   or for an unknown activation kind.
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
 * // BatchNorm2d followed by ReLU (or "relu6", "sigmoid", "tanh"), in one pass over the output:
 * batchNormForward(
 *   { y, saveMean, saveInvStd, runningMean, runningVar, x, weight, bias },
 *   { n: 4, c: 64, hw: 24 * 24, training: true, activation: "relu" },
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
  p: BatchNormParams & {
    /** Batch statistics (and running-statistics update) when true, running statistics else. */
    readonly training: boolean;
    /**
     * Activation fused into the output, `y = f(BN(x))` (e.g. `"relu"`: `max(BN(x), 0)`,
     * `"sigmoid"`: `1 / (1 + exp(-BN(x)))`); default none.
     */
    readonly activation?: ActivationKind;
  },
): void {
  const op = "batchNormForward";
  const r = resolve(op, p);
  const kind = checkActivationOption(op, p.activation);
  const xd = checkData(op, "x", io.x, r);
  const yd = checkData(op, "y", io.y, r);
  const cd = {} as Record<
    "saveMean" | "saveInvStd" | "runningMean" | "runningVar" | "weight" | "bias",
    FloatDType
  >;
  for (
    const k of ["saveMean", "saveInvStd", "runningMean", "runningVar", "weight", "bias"] as const
  ) {
    cd[k] = checkChannel(op, k, io[k], r);
  }
  const gpu = io.x.gpu;
  if (p.training && r.n * r.hw < 2) {
    throw new RangeError(
      `${op}: expected more than 1 value per channel when training, got input ` +
        `${formatShape(io.x.shape)}`,
    );
  }
  const { ranges, total } = sampleRanges(op, gpu, r);
  const coef = gpu.empty([r.c, 2]);
  if (p.training) {
    const partial = gpu.empty([r.c, total, 2]);
    const x0 = bindingRange(io.x, 0, r.c * r.hw);
    for (const s of ranges) {
      const x = samples(io.x, r, s);
      gpu.dispatch(statsPartialSpec(r.hw % 4 === 0, xd), {
        params: partialParams(r, s, total, [x]),
        bindings: [x.binding, x0.binding, partial],
        workgroups: [s.chunks, r.c, 1],
      });
    }
    const { weight, saveMean, saveInvStd, runningMean, runningVar } = cd;
    gpu.dispatch(statsFinalSpec({ x: xd, weight, saveMean, saveInvStd, runningMean, runningVar }), {
      params: new ParamsWriter().u32(r.n).u32(r.c).u32(r.hw).u32(total).f32(r.eps)
        .f32(r.momentum).bytes(),
      bindings: [
        partial,
        x0.binding,
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
    const { runningMean, runningVar, weight } = cd;
    gpu.dispatch(evalCoefSpec({ runningMean, runningVar, weight }), {
      params: new ParamsWriter().u32(r.c).f32(r.eps).bytes(),
      bindings: [io.runningMean, io.runningVar, io.weight, coef],
      workgroups: Math.ceil(r.c / WG),
    });
  }
  for (const s of ranges) {
    const x = samples(io.x, r, s), y = samples(io.y, r, s);
    const ew = elementwise(gpu, r, s, [x, y]);
    gpu.dispatch(normalizeSpec(ew.layout, kind, { x: xd, bias: cd.bias, y: yd }), {
      params: ew.params,
      bindings: [x.binding, coef, io.bias, y.binding],
      workgroups: ew.workgroups,
    });
  }
  coef.dispose();
}

/**
 * Batch normalization backward (training mode, with the `saveMean` / `saveInvStd` of the
 * forward): `dx` is overwritten; `dweight` and `dbias` are overwritten, or `+=` with
 * `accumulate: true`.
 *
 * With `activation` (an `ActivationKind`) this is the backward of the fused BN + activation
 * forward: `y` is that forward's output and `dy` the gradient of `y`; the gradient reaching the
 * batch norm, `dz = f'(BN(x)) * dy` computed from `y` as `activationBackward` does (ReLU:
 * `dy * (y > 0)`, relu'(0) = 0 as in PyTorch; ReLU6: `dy * (0 < y < 6)`; sigmoid:
 * `dy * y * (1 - y)`; tanh: `dy * (1 - y) * (1 + y)`), is computed on the fly in both passes over
 * the data, with no separate activation-backward pass or buffer.
 *
 * Tensors are f32 or f16, each its own (mixed precision: f16 `dy`, `x`, `y`, `dx`, f32 `weight`,
 * statistics, `dweight`, `dbias`); the sums are f32 and each output is rounded once.
 *
 * @throws {TypeError} when a tensor's shape does not match the parameters, a tensor is not f32
 *   or f16 (or is f16 on a device without `shader-f16`), or `activation` is given without `y`.
 * @throws {RangeError} for an unknown activation kind.
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
 * // Backward of BN + ReLU (any fused activation), with y the output of the fused forward:
 * const y = gpu.zeros(x.shape);
 * batchNormBackward(
 *   { dx, dweight, dbias, dy, x, y, weight, saveMean, saveInvStd },
 *   { n: 4, c: 64, hw: 24 * 24, activation: "relu" },
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
    /**
     * The output of the fused forward (same shape as `x`); required with `activation`, unused
     * without it.
     */
    y?: Tensor;
  },
  p: BatchNormParams & {
    /** Add into `dweight` / `dbias` instead of overwriting them; default false. */
    readonly accumulate?: boolean;
    /**
     * The activation fused into the forward: `dy` is then the gradient of its output `io.y`,
     * and `f'(BN(x)) * dy` (from `y`, e.g. `dy * (y > 0)` for `"relu"`) that of the batch
     * norm's output; default none.
     */
    readonly activation?: ActivationKind;
  },
): void {
  const op = "batchNormBackward";
  const r = resolve(op, p);
  const kind = checkActivationOption(op, p.activation);
  const dyd = checkData(op, "dy", io.dy, r);
  const xd = checkData(op, "x", io.x, r);
  const dxd = checkData(op, "dx", io.dx, r);
  if (kind !== undefined && io.y === undefined) {
    throw new TypeError(`${op}: activation "${p.activation}" needs y, the fused forward's output`);
  }
  const yd = io.y !== undefined ? checkData(op, "y", io.y, r) : undefined;
  const cd = {} as Record<"dweight" | "dbias" | "weight" | "saveMean" | "saveInvStd", FloatDType>;
  for (const k of ["dweight", "dbias", "weight", "saveMean", "saveInvStd"] as const) {
    cd[k] = checkChannel(op, k, io[k], r);
  }
  const gd = { dy: dyd, x: xd, y: yd };
  const gpu = io.x.gpu;
  const { ranges, total } = sampleRanges(op, gpu, r);
  const partial = gpu.empty([r.c, total, 2]);
  const coef = gpu.empty([r.c, 4]);
  for (const s of ranges) {
    const dy = samples(io.dy, r, s), x = samples(io.x, r, s);
    const data = [x, dy];
    const bindings = [dy.binding, x.binding, io.saveMean, partial];
    if (kind !== undefined) {
      const y = samples(io.y!, r, s);
      data.push(y);
      bindings.push(y.binding);
    }
    gpu.dispatch(gradPartialSpec(r.hw % 4 === 0, kind, { ...gd, saveMean: cd.saveMean }), {
      params: partialParams(r, s, total, data),
      bindings,
      workgroups: [s.chunks, r.c, 1],
    });
  }
  gpu.dispatch(gradFinalSpec(p.accumulate ?? false, cd), {
    params: new ParamsWriter().u32(r.n).u32(r.c).u32(r.hw).u32(total).bytes(),
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
  for (const s of ranges) {
    const dy = samples(io.dy, r, s), x = samples(io.x, r, s), dx = samples(io.dx, r, s);
    const data = [x, dy, dx];
    const bindings = [dy.binding, x.binding, coef, dx.binding];
    if (kind !== undefined) {
      const y = samples(io.y!, r, s);
      data.push(y);
      bindings.push(y.binding);
    }
    const ew = elementwise(gpu, r, s, data);
    gpu.dispatch(gradInputSpec(ew.layout, kind, { ...gd, dx: dxd }), {
      params: ew.params,
      bindings,
      workgroups: ew.workgroups,
    });
  }
  partial.dispose();
  coef.dispose();
}
