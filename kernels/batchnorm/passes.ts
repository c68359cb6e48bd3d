/**
 * The two kinds of data passes every batch-norm kernel is built from, WGSL and host maths
 * together (see `index.ts` for the algorithm; a little over 500 lines: the two kinds share their
 * thread mapping, ranges and params, better read in one place):
 *
 * - the partial-sum pass ({@linkcode partialMain}, {@linkcode reducePlan}): workgroup
 *   `(block, ch)` reduces its share of channel `ch`'s runs to two sums (added in workgroup
 *   memory), or with one block per channel finishes the reduction itself;
 * - the elementwise pass ({@linkcode elementwiseMain}, {@linkcode elementwisePlan}): each thread
 *   loads its channel's coefficients once and walks a strided run of that channel's elements.
 *
 * Both run once per range of whole samples ({@linkcode reducePlan}) that fits one binding.
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
} from "../_activation_wgsl.ts";
import { bindingRange, type TensorRange, unitRanges } from "../_binding.ts";
import type { FloatDType } from "../_dtype.ts";
import { flatMain, variantProduct } from "../_kernel.ts";

/** Threads per workgroup of every batch-norm kernel. */
export const WG = 64;
/** Elements (of `T`) walked by one thread of an elementwise pass, or per run of a partial sum, at most. */
const RUN = 64;

/** Validated dimensions and hyper-parameters of a batch normalization. */
export interface Resolved {
  n: number;
  c: number;
  hw: number;
  eps: number;
  momentum: number;
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

/** Whether a partial-sum variant works on vec4s (`vec4`, `relu_vec4_final`). */
export const partialVec4 = (variant: string): boolean => variant.split("_").includes("vec4");

/**
 * Whether a partial-sum variant finishes the reduction itself: `final` (one workgroup per
 * channel) or `cols` (one thread per channel).
 */
export const partialFinal = (variant: string): boolean => {
  const parts = variant.split("_");
  return parts.includes("final") || parts.includes("cols");
};

/** Whether a partial-sum variant runs one thread per channel (`cols`, `relu_vec4_cols_acc`). */
const partialCols = (variant: string): boolean => variant.split("_").includes("cols");

/**
 * The params of a partial-sum pass over one range of samples (see {@linkcode partialMain}); the
 * backward's add `delta` (see {@linkcode dataAt}), the forward's `eps` and `momentum`.
 */
export const PARTIAL_PARAMS = {
  n: "u32",
  c: "u32",
  hw: "u32",
  segs: "u32",
  units: "u32",
  blocks: "u32",
  xBase: "u32",
  totalBlocks: "u32",
  blockOff: "u32",
  count: "u32",
} as const;

/**
 * WGSL `helpers` and `main` of a partial-sum pass over one range of samples. The range's
 * `(sample, channel)` planes of `hw` elements (of `T`) are cut into `segs` interleaved runs of
 * at most {@linkcode RUN} elements (as in the elementwise passes); a channel's `units = n * segs`
 * runs are shared by the `blocks` workgroups `(block, ch)` of that channel, thread `lid` taking
 * runs `block * WG + lid + k * blocks * WG` (variant `cols`: thread `ch` takes all of channel
 * `ch`'s planes). `body` (which sees the element index `e` and `ch`; `prologue` runs once, with
 * `ch`) adds `(v1, v2)` to a run's (a plane's) sums `s`, which are added to the thread's; after
 * one barrier lane 0 adds the WG threads' sums in lane order into `r` (a run's, then the
 * runs', then the threads' sums: the PyTorch parity of MobileNet's ill-conditioned backward
 * needs this; one sum over a whole channel fails it) and runs `finish`
 * (default: writes `r` to `partial[(ch * totalBlocks + blockOff + block) * 2 + {0, 1}]`). `data`
 * names the data bindings (for the `delta` note).
 */
export function partialMain(
  variant: string,
  dtypes: DTypes,
  parts: {
    data: readonly string[];
    helpers?: string;
    prologue: string;
    body: string;
    finish?: string;
  },
): string {
  const { prologue, body } = parts;
  const vec4 = partialVec4(variant);
  const T = vec4 ? "vec4f" : "f32";
  const finish = parts.finish ?? `let o = (ch * p.totalBlocks + p.blockOff + block) * 2u;
    partial[o] = r.x;
    partial[o + 1u] = r.y;`;
  const helpers = `alias T = ${T};
${
    vec4
      ? `fn hsum(v: vec4f) -> f32 { return v.x + v.y + v.z + v.w; }
fn hdot(a: vec4f, b: vec4f) -> f32 { return dot(a, b); }
fn first(v: vec4f) -> f32 { return v.x; }`
      : `fn hsum(v: f32) -> f32 { return v; }
fn hdot(a: f32, b: f32) -> f32 { return a * b; }
fn first(v: f32) -> f32 { return v; }`
  }
${parts.helpers ?? ""}`;
  const note = mixed(dtypes, parts.data) ? MIXED_NOTE : "";
  if (partialCols(variant)) {
    return `// One thread per channel (one range of n samples, starting at element xBase of its
// bindings): thread ch < c walks the planes (b, ch) in order, elements
// e = xBase + (b * c + ch) * hw + j, in units of ${T} (hw, xBase counted in ${T}; the host bounds
// n * hw), accumulates the sums in registers and finishes them (no workgroup memory).${note}
${helpers}
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let ch = gid.x;
  if (ch >= p.c) { return; }
  ${prologue}
  var r = vec2f(0.0);
  for (var b = 0u; b < p.n; b++) {
    let off = p.xBase + (b * p.c + ch) * p.hw;
    var s = vec2f(0.0); // the plane's sums, then added to r (rounding: hw + n terms, not hw * n)
    for (var j = 0u; j < p.hw; j++) {
      let e = off + j;
      ${body}
    }
    r += s;
  }
  ${finish.replaceAll("\n    ", "\n  ").trimStart()}
}
`;
  }
  return `// One dispatch per range of n samples (starting at element xBase of its bindings). Plane
// (b, ch) of hw elements is cut into segs interleaved runs (j = seg + k * segs < hw, at most
// ${RUN} elements); channel ch's units = n * segs runs (u = b * segs + seg) are shared by its
// blocks workgroups (block, ch): thread lid takes runs u = block * WG + lid + k * blocks * WG
// (the host bounds k), element e = xBase + (b * c + ch) * hw + j, in units of ${T} (hw, xBase
// counted in ${T}). Each run's sums are added to the thread's, and lane 0 adds the WG threads'
// sums in lane order after one barrier.${note}
${helpers}var<workgroup> red: array<vec2f, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3u) {
  let block = wid.x;
  let ch = wid.y;
  ${prologue}
  var t = vec2f(0.0);
  for (var u = block * WG + lid; u < p.units; u += p.blocks * WG) {
    let b = u / p.segs;
    let seg = u - b * p.segs;
    let off = p.xBase + (b * p.c + ch) * p.hw;
    var s = vec2f(0.0); // the run's sums, then added to t
    for (var j = seg; j < p.hw; j += p.segs) {
      let e = off + j;
      ${body}
    }
    t += s;
  }
  red[lid] = t;
  workgroupBarrier();
  if (lid == 0u) {
    var r = red[0];
    for (var k = 1u; k < WG; k++) {
      r += red[k];
    }
    ${finish.trimStart()}
  }
}
`;
}

/**
 * WGSL `main` of the pass after partial-sum passes of several blocks per channel
 * ({@linkcode partialMain}): thread `ch < c` (a 1-D launch over the channels) adds its channel's
 * `blocks` pairs of sums `partial[(ch * blocks + k) * 2 + {0, 1}]` in order into `r` (a
 * `vec2f`), then runs `body` (statements indented by two spaces).
 *
 * @returns The entry point.
 * @example
 * ```ts
 * import { channelSumsMain } from "./passes.ts";
 * channelSumsMain("  coef[ch] = r.x / r.y;");
 * ```
 */
export function channelSumsMain(body: string): string {
  return `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let ch = gid.x;
  if (ch >= p.c) { return; }
  var r = vec2f(0.0);
  for (var k = 0u; k < p.blocks; k++) {
    let o = (ch * p.blocks + k) * 2u;
    r += vec2f(partial[o], partial[o + 1u]);
  }
${body}
}
`;
}

/** One range of whole samples `[b0, b1)` and its workgroups per channel in the partial sums. */
export interface SampleRange {
  b0: number;
  b1: number;
  /** Its first block among all ranges' blocks of a channel. */
  blockOff: number;
  /** Workgroups per channel of its partial-sum pass. */
  blocks: number;
}

/** How the partial-sum passes are launched: the ranges, and whether one pass finishes. */
export interface ReducePlan {
  /** Ranges of whole samples that fit one binding, with their blocks. */
  ranges: SampleRange[];
  /** Blocks per channel over all ranges (the pairs of sums a channel's finalize adds). */
  total: number;
  /** Runs (of at most {@linkcode RUN} elements of `T`) per plane. */
  segs: number;
  /** The partial-sum pass finishes the reduction (no finalize pass): `mode` is not `""`. */
  final: boolean;
  /**
   * The partial-sum variant part: `""` (blocks' sums, then the finalize pass), `"final"` (one
   * block per channel finishes), `"cols"` (one thread per channel finishes; `total` 1).
   */
  mode: "" | "final" | "cols";
}

/**
 * Workgroups the partial-sum passes aim for over all channels: on a CPU a few per core (one per
 * channel when there are enough channels: the single-pass reduction), on a GPU enough to fill a
 * large one (a guess, not measured on a GPU).
 */
function targetWorkgroups(gpu: Gpu): number {
  if (!gpu.isCpu) return 2048;
  return 4 * Math.max(1, globalThis.navigator?.hardwareConcurrency ?? 4);
}

/** Runs per thread of a partial-sum pass, at most (bounds its loop: 64 * 512 iterations). */
const MAX_RUNS_PER_THREAD = 512;
/** Elements (of `T`) per channel, at most, for one thread per channel (`cols`; planes of 256). */
const MAX_COLS = 4096;

/**
 * The launch of the partial-sum passes (see {@linkcode partialMain}): the ranges of whole samples
 * that fit one binding and, per range, the workgroups per channel: enough that all channels give
 * {@linkcode targetWorkgroups} (a small channel count spreads over several blocks), at least
 * enough that no thread takes more than {@linkcode MAX_RUNS_PER_THREAD} runs, at most one per
 * thread's run. With one range of one block, the pass finishes the reduction itself. On a CPU
 * adapter, small channels (at most {@linkcode MAX_COLS} elements of `T`) of many channels (a
 * workgroup of channels per core, up to 4) take one thread per channel instead: no workgroup
 * memory, no barrier (on llvmpipe 1.5 to 8 times less CPU time than one workgroup per channel at
 * MobileNet's 12x12 to 3x3 planes, where a workgroup's fixed cost dominates).
 */
export function reducePlan(op: string, gpu: Gpu, r: Resolved): ReducePlan {
  const h = r.hw % 4 === 0 ? r.hw / 4 : r.hw;
  const segs = Math.ceil(h / RUN);
  const want = Math.ceil(targetWorkgroups(gpu) / r.c);
  const ranges: SampleRange[] = [];
  let total = 0;
  for (const [b0, b1] of unitRanges(op, gpu, r.n, r.c * r.hw)) {
    const units = (b1 - b0) * segs;
    const most = Math.ceil(units / WG);
    const least = Math.ceil(units / (WG * MAX_RUNS_PER_THREAD));
    const blocks = Math.max(least, Math.min(want, most));
    ranges.push({ b0, b1, blockOff: total, blocks });
    total += blocks;
  }
  const cores = Math.max(1, globalThis.navigator?.hardwareConcurrency ?? 4);
  if (
    gpu.isCpu && ranges.length === 1 && r.n * h <= MAX_COLS && h <= RUN * 4 &&
    Math.ceil(r.c / WG) >= Math.min(cores, 4)
  ) {
    return {
      ranges: [{ ...ranges[0], blockOff: 0, blocks: 1 }],
      total: 1,
      segs,
      final: true,
      mode: "cols",
    };
  }
  const final = ranges.length === 1 && total === 1;
  return { ranges, total, segs, final, mode: final ? "final" : "" };
}

/** The binding of samples `[b0, b1)` of a data tensor. */
export function samples(t: Tensor, r: Resolved, s: { b0: number; b1: number }): TensorRange {
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
  plan: ReducePlan,
  s: SampleRange,
  data: readonly TensorRange[],
): { [K in keyof typeof PARTIAL_PARAMS | "delta"]: number } {
  const v = r.hw % 4 === 0 ? 4 : 1;
  const n = s.b1 - s.b0;
  return {
    n,
    c: r.c,
    hw: r.hw / v,
    segs: plan.segs,
    units: n * plan.segs,
    blocks: s.blocks,
    xBase: data[0].base / v,
    totalBlocks: plan.total,
    blockOff: s.blockOff,
    count: r.n * r.hw,
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
  s: { b0: number; b1: number },
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
