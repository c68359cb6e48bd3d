/**
 * The two kinds of data passes every batch-norm kernel is built from, WGSL and host maths
 * together (see `index.ts` for the algorithm):
 *
 * - the partial-sum pass ({@linkcode partialMain}, {@linkcode partialParams}): workgroup
 *   `(chunk, ch)` reduces a chunk of channel `ch` to two sums, tree-reduced in workgroup memory;
 * - the elementwise pass ({@linkcode elementwiseMain}, {@linkcode elementwisePlan}): each thread
 *   loads its channel's coefficients once and walks a strided run of that channel's elements.
 *
 * Both run once per range of whole samples ({@linkcode sampleRanges}) that fits one binding.
 * Data bindings of another dtype than `x`'s have another binding base: they are indexed
 * `e + p.delta` ({@linkcode dataAt}).
 *
 * @module
 */

import { type Gpu, grid1d, type Tensor } from "../../gpu/mod.ts";
import {
  actBackwardFn,
  actForwardFn,
  ACTIVATION_KINDS,
  type ActivationKind,
} from "../../kernels/_activation_wgsl.ts";
import { bindingRange, type TensorRange, unitRanges } from "../../kernels/_binding.ts";
import type { FloatDType } from "../../kernels/_dtype.ts";
import { flatMain, variantProduct } from "../../kernels/_kernel.ts";

/** Threads per workgroup of every batch-norm kernel. */
export const WG = 64;
/** Elements of one channel reduced by one workgroup of the partial-sum passes (at least). */
export const CHUNK = 4096;
/** Chunks per channel beyond which chunks grow (bounds the loop of the finalize pass). */
export const MAX_CHUNKS = 8192;
/** Loop steps per pass of the partial-sum passes' first loop (fewer loop passes on llvmpipe). */
const PARTIAL_UNROLL = 4;
/**
 * Lanes of the first stage of the partial-sum passes' two-stage tree reduction (two barriers
 * instead of one per level: each costs a suspension of every SIMD group on llvmpipe).
 */
const TREE_LANES = 8;
/** Elements (of `T`) walked by one thread of an elementwise pass, at most. */
const RUN = 64;

/** Validated dimensions and hyper-parameters of a batch normalization. */
export interface Resolved {
  n: number;
  c: number;
  hw: number;
  eps: number;
  momentum: number;
  /** Elements of a channel per chunk of the partial-sum passes (a multiple of 4096). */
  chunk: number;
}

/** The variant part naming the fused activation (`relu_vec4` → `relu`), if any. */
export function actOf(variant: string): ActivationKind | undefined {
  const parts = variant.split("_");
  return ACTIVATION_KINDS.find((k) => parts.includes(k));
}

/** WGSL `act` and `actBackward` of a fused activation (`_activation_wgsl.ts`), or nothing. */
export function activationFns(kind: ActivationKind | undefined): string {
  return kind ? `${actForwardFn(kind)}\n${actBackwardFn(kind)}\n` : "";
}

/** Storage dtypes of a kernel's float bindings (undefined: not bound in its variant). */
type DTypes = { readonly [name: string]: FloatDType | undefined };

/** `name[e]`, or `name[e + p.delta]` for a data binding whose dtype is not `x`'s. */
export function dataAt(dtypes: DTypes, name: string): string {
  return `${name}[${dtypes[name] === dtypes.x ? "e" : "e + p.delta"}]`;
}

/** Whether some of the data bindings `names` has another dtype than `x`. */
function mixed(dtypes: DTypes, names: readonly string[]): boolean {
  return names.some((n) => dtypes[n] !== undefined && dtypes[n] !== dtypes.x);
}

const MIXED_NOTE =
  "\n// Bindings of another dtype than x's are indexed e + delta (their base differs).";

// ------------------------------------------------------------------ partial sums ----

/** Whether a partial-sum variant works on vec4s (`vec4`, `relu_vec4`). */
export const partialVec4 = (variant: string): boolean => variant.split("_").includes("vec4");

/** The variants of a partial-sum pass with a fused activation (or none), on vec4s or not. */
export const PARTIAL_VARIANTS = variantProduct(["", ...ACTIVATION_KINDS], ["", "vec4"]);
/** A variant of a partial-sum pass (`relu_vec4`). */
export type PartialVariant = typeof PARTIAL_VARIANTS[number];

/** The partial-sum variant with the fused activation `kind`, on vec4s or not. */
export function partialVariant(kind: ActivationKind | undefined, vec4: boolean): PartialVariant {
  return [kind ?? "", vec4 ? "vec4" : ""].filter((v) => v !== "").join("_") as PartialVariant;
}

/** The `Params` of a partial-sum pass (the backward's adds `delta`, see {@linkcode dataAt}). */
export const PARTIAL_PARAMS = {
  n: "u32",
  c: "u32",
  hw: "u32",
  chunk: "u32",
  totalChunks: "u32",
  stepB: "u32",
  stepI: "u32",
  xBase: "u32",
  chunkOff: "u32",
} as const;

/**
 * WGSL `helpers` and `main` of a partial-sum pass over one range of samples: workgroup
 * (chunk, ch) accumulates `(v1, v2)` given by `body` (which sees the element index `e` and `ch`;
 * `prologue` runs once, with `ch`) over its chunk and writes the two sums to
 * `partial[(ch * totalChunks + chunkOff + chunk) * 2 + {0, 1}]`. `data` names the data bindings
 * (for the `delta` note).
 */
export function partialMain(
  vec4: boolean,
  dtypes: DTypes,
  parts: { data: readonly string[]; helpers?: string; prologue: string; body: string },
): string {
  const { prologue, body } = parts;
  const T = vec4 ? "vec4f" : "f32";
  const step = `
    {
      let e = p.xBase + (b * p.c + ch) * p.hw + i;
      ${body}
      i += p.stepI;
      b += p.stepB;
      if (i >= p.hw) { i -= p.hw; b += 1u; }
    }`;
  return `// One dispatch per range of n samples (starting at element xBase of its bindings). Thread lid of
// workgroup (chunk, ch) walks the flat per-channel index j = b * hw + i over
// [chunk * CHUNK, min((chunk + 1) * CHUNK, n * hw)) in steps of WG (b, i advanced without
// divisions; at most CHUNK / WG iterations); element e = xBase + (b * c + ch) * hw + i, in units
// of ${T} (hw, chunk, xBase counted in ${T}). The two register sums are tree-reduced in workgroup
// memory and written to partial[(ch * totalChunks + chunkOff + chunk) * 2 + {0, 1}].${
    mixed(dtypes, parts.data) ? MIXED_NOTE : ""
  }
const UNROLL = ${PARTIAL_UNROLL}u;
const LANES = ${TREE_LANES}u;
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
${parts.helpers ?? ""}var<workgroup> red: array<vec2f, WG>;

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

/**
 * WGSL `main` of the pass after a partial-sum pass ({@linkcode partialMain}): thread `ch < c` (a
 * 1-D launch over the channels) adds its channel's `chunks` pairs of sums
 * `partial[(ch * chunks + k) * 2 + {0, 1}]` in order into the f32 variables named `sums`, then
 * runs `body` (statements indented by two spaces).
 *
 * @returns The entry point.
 * @example
 * ```ts
 * import { channelSumsMain } from "./passes.ts";
 * channelSumsMain(["s1", "s2"], "  coef[ch] = s1 / s2;");
 * ```
 */
export function channelSumsMain(sums: readonly [string, string], body: string): string {
  const [a, b] = sums;
  return `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let ch = gid.x;
  if (ch >= p.c) { return; }
  var ${a} = 0.0;
  var ${b} = 0.0;
  for (var k = 0u; k < p.chunks; k++) {
    let o = (ch * p.chunks + k) * 2u;
    ${a} += partial[o];
    ${b} += partial[o + 1u];
  }
${body}
}
`;
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

/** One range of whole samples `[b0, b1)` and its first chunk among all ranges' chunks. */
export interface SampleRange {
  b0: number;
  b1: number;
  chunkOff: number;
  chunks: number;
}

/**
 * Ranges of whole samples that fit one binding, with their chunks of the partial-sum passes;
 * returns them and the total chunk count.
 */
export function sampleRanges(
  op: string,
  gpu: Gpu,
  r: Resolved,
): { ranges: SampleRange[]; total: number } {
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
export function samples(t: Tensor, r: Resolved, s: SampleRange): TensorRange {
  const per = r.c * r.hw;
  return bindingRange(t, s.b0 * per, (s.b1 - s.b0) * per);
}

/**
 * The `delta` param of a pass (see {@linkcode dataAt}): the base of the data bindings whose
 * dtype is not that of `data[0]` (x) less x's base, in units of `v` elements, modulo 2^32 (the
 * WGSL index `e + delta` wraps); 0 when all have x's dtype.
 */
function deltaOf(data: readonly TensorRange[], v: number): number {
  const x = data[0];
  const other = data.find((d) => d.tensor.dtype !== x.tensor.dtype);
  return other === undefined ? 0 : ((other.base - x.base) / v) >>> 0;
}

/**
 * Params of a partial-sum pass over one range (`data`: the ranges of its data bindings, x's
 * first), in vec4 units when hw is a multiple of 4.
 */
export function partialParams(
  r: Resolved,
  s: SampleRange,
  total: number,
  data: readonly TensorRange[],
): { [K in keyof typeof PARTIAL_PARAMS | "delta"]: number } {
  const v = r.hw % 4 === 0 ? 4 : 1;
  const hw = r.hw / v;
  return {
    n: s.b1 - s.b0,
    c: r.c,
    hw,
    chunk: r.chunk / v,
    totalChunks: total,
    stepB: Math.floor(WG / hw),
    stepI: WG % hw,
    xBase: data[0].base / v,
    chunkOff: s.chunkOff,
    delta: deltaOf(data, v),
  };
}

// ------------------------------------------------------------------ elementwise passes ----

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
 * `segs` is chosen by {@linkcode elementwisePlan}: each thread walks at most {@linkcode RUN}
 * elements, fewer where that leaves too few threads for the device.
 */
export type Layout = "planes" | "planes_vec4" | "columns";

/** The variants of an elementwise pass: a layout, with or without a fused activation. */
export const ELEMENTWISE_VARIANTS = variantProduct(
  ["planes", "planes_vec4", "columns"],
  ["", ...ACTIVATION_KINDS],
);
/** A variant of an elementwise pass (`planes_vec4_relu`). */
export type ElementwiseVariant = typeof ELEMENTWISE_VARIANTS[number];

/** The elementwise variant of `layout` with the fused activation `kind`. */
export function elementwiseVariant(
  layout: Layout,
  kind: ActivationKind | undefined,
): ElementwiseVariant {
  return (kind ? `${layout}_${kind}` : layout) as ElementwiseVariant;
}

/** The layout of an elementwise variant. */
export function layoutOf(variant: string): Layout {
  const parts = variant.split("_");
  return parts[0] === "columns" ? "columns" : parts[1] === "vec4" ? "planes_vec4" : "planes";
}

/** Whether an elementwise variant works on vec4s. */
export const elementwiseVec4 = (variant: string): boolean => layoutOf(variant) === "planes_vec4";

/** The `Params` of an elementwise pass (`delta`: see {@linkcode dataAt}). */
export const ELEMENTWISE_PARAMS = {
  threads: "u32",
  n: "u32",
  c: "u32",
  hw: "u32",
  base: "u32",
  segs: "u32",
  delta: "u32",
} as const;

/**
 * WGSL `helpers` and `main` of an elementwise pass over one range of whole samples (starting at
 * element `base` of its bindings, in units of `T`): the thread mapping of `layout`, then
 * `prologue` (which sees `ch` and loads the channel's coefficients) once, and `body` (which sees
 * the element index `e`) per element. `data` names the data bindings (for the `delta` note).
 */
export function elementwiseMain(
  layout: Layout,
  dtypes: DTypes,
  parts: { data: readonly string[]; helpers?: string; prologue: string; body: string },
): string {
  const { prologue, body } = parts;
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
  return `// Thread mapping (${layout}): ${
    layout === "columns"
      ? `thread t < p.threads = segs * c takes channel ch = t % c and samples
// b = t / c + k * segs < n: elements e = base + b * c + ch`
      : `thread t < p.threads = n * c * segs takes plane t / segs (= b * c + ch),
// ch = plane % c, and j = t % segs + k * segs < hw: elements e = base + plane * hw + j`
  } (at most
// ${RUN} per thread, set by the host's segs); t = gid.x + gid.y * nwg.x * WG (grid1d). n counts
// the range's samples; hw and base are in units of ${T}.${
    mixed(dtypes, parts.data) ? MIXED_NOTE : ""
  }
alias T = ${T};
${parts.helpers ?? ""}
${flatMain("t", "p.threads", `  ${walk}`)}`;
}

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
 * Layout, params and workgroups of an elementwise pass over one range (see {@linkcode Layout};
 * `data`: the ranges of its data bindings, x's first): runs of at most {@linkcode RUN} elements
 * per thread, shorter where that leaves fewer than `minThreads` threads.
 */
export function elementwisePlan(
  gpu: Gpu,
  r: Resolved,
  s: SampleRange,
  data: readonly TensorRange[],
): {
  layout: Layout;
  params: { [K in keyof typeof ELEMENTWISE_PARAMS]: number };
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
    params: { threads, n, c: r.c, hw, base: data[0].base / v, segs, delta: deltaOf(data, v) },
    workgroups: grid1d(threads, WG),
  };
}
