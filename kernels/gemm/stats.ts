/**
 * Batch statistics gathered in the GEMM's store (the forward half of a batch norm's fusion with
 * its producer): besides storing C, the kernel reduces the values it stored of each channel (a
 * row of C for axis `row`, a column for `col`) to `(count, mean, mean correction, M2)` and writes
 * them to an f32 scratch of partial statistics, `[channel, tile, 4]`: what a batch normalization
 * after the producer merges (Chan's parallel formula, in tile order; `batchnorm/partials.ts`)
 * instead of reading the whole output again. The tile's mean is the sum of two f32 values (which
 * keeps the low bits of a mean far from zero) and there is no `E[x²] - E[x]²` cancellation.
 *
 * Two gatherings, one per kernel family:
 * - the register kernel (CPU adapters), per thread, no barrier: a row (its `tn` values, as it is
 *   stored) by the corrected two-pass algorithm (the mean, then the deviations from it: their sum
 *   corrects the mean's rounding); a column, whose rows come one after the other, by sums of its
 *   values shifted by its first one (that value and the shifted mean are the two parts of the
 *   mean). A first version merged a workgroup's threads through workgroup memory; on llvmpipe the
 *   barrier alone doubled a MobileNet 1x1 convolution's GEMM (whatever is live at a barrier is
 *   saved per invocation). One tile per thread along the reduced axis.
 * - the shared-memory kernel (GPUs), per workgroup: its threads' sums through the (then free)
 *   staging memory, the workgroup tile's mean, then the deviations' sums (corrected two-pass over
 *   the whole 64-wide tile). One tile per workgroup along the reduced axis: the scratch is 1/16 of
 *   C (a per-thread tile of 4 values would write as much as C itself).
 *
 * The values are those stored (rounded to C's storage type first, after `beta`, the bias and the
 * activation): the statistics a batch norm computes from the stored tensor. Only the dispatch
 * that stores C's final values gathers: a plan's last pass, one product dispatch (not split-K,
 * whose epilogue stores C; not an f16 C's k-passes, whose epilogue does). {@linkcode
 * gemmStatsLayout} decides, purely, from the plan.
 *
 * Where a tile sits: `p.statsTiles` tiles per channel in all, this dispatch's first at
 * `p.statsBase`, and a dispatch's tiles are ordered by batch, workgroup along the reduced axis
 * (`p.statsTilesX` workgroups along it), then (register kernel) thread.
 *
 * @module
 */

import type { AdapterProfile } from "../_adapter.ts";
import { maxBindingElements } from "../_binding.ts";
import { MAX_PARTIAL_TILES } from "../batchnorm/partials.ts";
import type { FusionMode } from "../batchnorm/fusion_mode.ts";
import type { GemmPlan } from "./types.ts";
import { REGISTER_WG, SHARED_BM, SHARED_T } from "./types.ts";

/** Which axis of C holds the channels: rows (a convolution's `[cOut, pixels]`) or columns. */
export type StatsAxis = "row" | "col";

/** Where a statistics dispatch writes its tiles (see the module's comment). */
export interface StatsTiles {
  /** The channel axis of C. */
  readonly axis: StatsAxis;
  /** Tiles per channel in all. */
  readonly tiles: number;
  /** This dispatch's first tile. */
  readonly base: number;
  /** Workgroups along the reduced axis. */
  readonly tilesX: number;
}

/**
 * The variant and params of a statistics kernel's dispatch: the product's variant `v` with the
 * channel axis appended (`strow`, `biasrow_stcol`), the product's params with the tiles'.
 *
 * @returns The variant name and params.
 * @example
 * ```ts
 * import { statsDispatchOf } from "./stats.ts";
 * statsDispatchOf("beta", {}, { axis: "col", tiles: 4, base: 0, tilesX: 2 }).variant; // "beta_stcol"
 * ```
 */
export function statsDispatchOf<P extends object>(
  v: string,
  params: P,
  s: StatsTiles,
): { variant: string; params: P & Record<keyof typeof STATS_PARAMS, number> } {
  return {
    variant: v === "" ? `st${s.axis}` : `${v}_st${s.axis}`,
    params: { ...params, statsTiles: s.tiles, statsBase: s.base, statsTilesX: s.tilesX },
  };
}

/** The extra `Params` of the statistics variants (after the GEMM's). */
export const STATS_PARAMS = {
  statsTiles: "u32",
  statsBase: "u32",
  statsTilesX: "u32",
} as const;

/**
 * The statements after the store of row `r0 + i` of a thread's block (`values`: its stored values,
 * f32 expressions, column `c0 + j`): for `row` (the row is a channel) the row's statistics,
 * written at once (the corrected two-pass algorithm on values still in registers); for `col` (the
 * columns are channels) the running sums of each column's values shifted by its first row's
 * (that value, kept: the tile's mean is it plus the shifted sum's mean, two f32 values), which
 * {@linkcode statsEndWgsl} writes. Values outside C are masked; `stats` holds `vec4<f32>`s.
 *
 * @returns WGSL statements.
 * @example
 * ```ts
 * import { statsRowWgsl } from "./stats.ts";
 * statsRowWgsl("row", { tm: 1, tn: 1, wg: 8 }, 0, ["v"]).includes("vec4f(stN, m0"); // true
 * ```
 */
export function statsRowWgsl(
  axis: StatsAxis,
  t: { tm: number; tn: number; wg: number },
  i: number,
  values: readonly string[],
): string {
  const { tn, wg } = t;
  const L: string[] = [];
  if (i === 0) {
    // The thread's tile (along the reduced axis: by batch, workgroup, then thread).
    const tile = axis === "row"
      ? `(wg.z * p.statsTilesX + wg.x) * ${wg}u + l.x`
      : `(wg.z * p.statsTilesX + wg.y) * ${wg}u + l.y`;
    L.push(`  let stT = p.statsBase + ${tile};`);
  }
  if (axis === "row") {
    const valid = (j: number) => `c0 + ${j}u < p.n`;
    if (i === 0) {
      const ones = Array.from({ length: tn }, (_, j) => `select(0.0, 1.0, ${valid(j)})`);
      L.push(`  let stN = ${ones.join(" + ")};`);
      L.push(`  let stR = 1.0 / max(stN, 1.0);`);
    }
    const sum = values.map((v, j) => `select(0.0, ${v}, ${valid(j)})`);
    L.push(`  if (r0 + ${i}u < p.m) {`);
    L.push(`    let m0 = (${sum.join(" + ")}) * stR;`);
    const ds = values.map((v, j) => {
      L.push(`    let dv${j} = select(0.0, ${v} - m0, ${valid(j)});`);
      return `dv${j}`;
    });
    L.push(`    let d1 = ${ds.join(" + ")};`);
    const m2 = `max(${ds.map((d) => `${d} * ${d}`).join(" + ")} - d1 * d1 * stR, 0.0)`;
    L.push(`    stats[(r0 + ${i}u) * p.statsTiles + stT] = vec4f(stN, m0, d1 * stR, ${m2});`);
    L.push(`  }`);
    return L.join("\n");
  }
  values.forEach((v, j) => {
    if (i === 0) {
      L.push(`  let sK${j} = ${v};`);
      L.push(`  var s1_${j} = 0.0;`);
      L.push(`  var s2_${j} = 0.0;`);
    } else {
      L.push(`  let sd${i}_${j} = select(0.0, ${v} - sK${j}, r0 + ${i}u < p.m);`);
      L.push(`  s1_${j} += sd${i}_${j};`);
      L.push(`  s2_${j} = fma(sd${i}_${j}, sd${i}_${j}, s2_${j});`);
    }
  });
  return L.join("\n");
}

/**
 * The statements after the thread's last row for `col` (see {@linkcode statsRowWgsl}): each
 * column's `(count, first value, mean of the shifted values, M2)`; nothing for `row`.
 *
 * @returns WGSL statements.
 * @example
 * ```ts
 * import { statsEndWgsl } from "./stats.ts";
 * statsEndWgsl("row", { tm: 1, tn: 1, wg: 8 }); // ""
 * ```
 */
export function statsEndWgsl(axis: StatsAxis, t: { tm: number; tn: number; wg: number }): string {
  if (axis === "row") return "";
  const L: string[] = [];
  const ones = Array.from({ length: t.tm }, (_, i) => `select(0.0, 1.0, r0 + ${i}u < p.m)`);
  L.push(`  let stN = ${ones.join(" + ")};`);
  L.push(`  let stR = 1.0 / max(stN, 1.0);`);
  for (let j = 0; j < t.tn; j++) {
    L.push(`  if (c0 + ${j}u < p.n) {`);
    L.push(
      `    stats[(c0 + ${j}u) * p.statsTiles + stT] = vec4f(stN, sK${j}, s1_${j} * stR, ` +
        `max(s2_${j} - s1_${j} * s1_${j} * stR, 0.0));`,
    );
    L.push(`  }`);
  }
  return L.join("\n");
}

/**
 * The statements of the shared-memory kernel's statistics variant, after its store loop: thread
 * `(l.x, l.y)` holds the values it stored in `sv[i][j]` (rows `r0 + i`, columns `c0 + j`, valid
 * inside C); the workgroup reduces them per channel through `saS` and `sbS` (free after the
 * k-loop's last barrier: 1,024 f32 each, 64 channels by 16 threads) in three barriers: the
 * threads' sums, each channel's mean over the tile, the deviations' squares and sums; then the
 * first thread along the reduced axis writes each of its channels' `(count, mean, correction,
 * M2)` (the corrected two-pass algorithm over the tile). Every thread reaches every barrier (the
 * kernel has no early return).
 *
 * @returns WGSL statements.
 * @example
 * ```ts
 * import { sharedStatsWgsl } from "./stats.ts";
 * sharedStatsWgsl("row").includes("workgroupBarrier()"); // true
 * ```
 */
export function sharedStatsWgsl(axis: StatsAxis): string {
  const T = SHARED_T, B = SHARED_BM;
  // Row axis: a thread's channels are its rows i (ch r0 + i), its values along columns j; the
  // lane along the reduced axis is l.x. Column axis: transposed.
  const row = axis === "row";
  const lane = row ? "l.x" : "l.y";
  const own = row ? "l.y" : "l.x";
  const v = (q: string, e: string) => (row ? `sv[${q}][${e}]` : `sv[${e}][${q}]`);
  const ok = (q: string, e: string) =>
    row ? `r0 + ${q} < p.m && c0 + ${e} < p.n` : `r0 + ${e} < p.m && c0 + ${q} < p.n`;
  const cnt = row ? `min(${B}u, p.n - colT)` : `min(${B}u, p.m - rowT)`;
  const chanBase = row ? "rowT" : "colT";
  const tile = row ? "wg.z * p.statsTilesX + wg.x" : "wg.z * p.statsTilesX + wg.y";
  const limit = row ? "p.m" : "p.n";
  return `  let stN = f32(${cnt});
  for (var q = 0u; q < 4u; q++) {
    var s = 0.0;
    for (var e = 0u; e < 4u; e++) { if (${ok("q", "e")}) { s += ${v("q", "e")}; } }
    saS[(${own} * 4u + q) * ${T}u + ${lane}] = s;
  }
  workgroupBarrier();
  var stM: vec4f;
  for (var q = 0u; q < 4u; q++) {
    var s = 0.0;
    for (var t = 0u; t < ${T}u; t++) { s += saS[(${own} * 4u + q) * ${T}u + t]; }
    stM[q] = s / stN;
  }
  workgroupBarrier();
  for (var q = 0u; q < 4u; q++) {
    var s1 = 0.0;
    var s2 = 0.0;
    for (var e = 0u; e < 4u; e++) {
      if (${ok("q", "e")}) { let d = ${v("q", "e")} - stM[q]; s1 += d; s2 = fma(d, d, s2); }
    }
    saS[(${own} * 4u + q) * ${T}u + ${lane}] = s2;
    sbS[(${own} * 4u + q) * ${T}u + ${lane}] = s1;
  }
  workgroupBarrier();
  if (${lane} == 0u) {
    for (var q = 0u; q < 4u; q++) {
      let ch = ${chanBase} + ${own} * 4u + q;
      if (ch >= ${limit}) { break; }
      var m2 = 0.0;
      var d1 = 0.0;
      for (var t = 0u; t < ${T}u; t++) {
        m2 += saS[(${own} * 4u + q) * ${T}u + t];
        d1 += sbS[(${own} * 4u + q) * ${T}u + t];
      }
      stats[ch * p.statsTiles + p.statsBase + ${tile}] =
        vec4f(stN, stM[q], d1 / stN, max(m2 - d1 * d1 / stN, 0.0));
    }
  }`;
}

/** Where a GEMM's statistics dispatch writes its tiles (see {@linkcode gemmStatsLayout}). */
export interface GemmStatsLayout {
  /** The kernel family that gathers. */
  readonly kernel: "register" | "shared";
  /** The channel axis in the dispatch's C (flipped when the plan swaps). */
  readonly axis: StatsAxis;
  /** Tiles per channel the dispatch writes. */
  readonly tiles: number;
  /** Workgroups along the reduced axis (tiles per batch of the shared kernel). */
  readonly tilesX: number;
  /** The index of the pass whose product dispatch gathers (the last). */
  readonly pass: number;
}

/**
 * Whether gathering in kernel family `kernel` pays on an adapter (the `auto` decision, pure). On
 * other than CPU adapters every family gathers: it saves the batch norm a full read of its input,
 * a bandwidth-bound pass, for a few more operations in a store. On CPU adapters only where
 * measured no slower (bench:train --profile, llvmpipe): so far none.
 *
 * @returns Whether to gather.
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { statsOnAdapter } from "./stats.ts";
 * statsOnAdapter(WEBGPU_DEFAULT_PROFILE, "shared"); // true
 * ```
 */
export function statsOnAdapter(
  profile: AdapterProfile,
  kernel: "register" | "shared",
): boolean {
  return !profile.isCpu || CPU_STATS_KERNELS.includes(kernel);
}

/**
 * The kernel families that gather on CPU adapters: none. Measured on llvmpipe (2 cores,
 * `bench:train --profile`, fusion forced on against the unfused baseline, interleaved): the
 * register kernel's per-thread tiles hold 4 / tn of C (1/4 at best), which the merge reads, so
 * MobileNet b32@96's batch-norm reduction passes (24-30 ms/step) became 8-13 ms of reductions
 * left (after depthwise convolutions) plus 12-22 ms of merges, and its GEMMs did not get measurably
 * faster or slower within the machine's noise (±30%): no gain to show. Forced on, they gather.
 */
const CPU_STATS_KERNELS: readonly string[] = [];

/**
 * Whether a GEMM plan can gather per-channel statistics of C in its store, and where (a pure
 * decision): the plan's last pass must store C itself with one product dispatch (no split-K, no
 * epilogue, no activation), its partials must fit (`MAX_PARTIAL_TILES` tiles per channel, one
 * binding), and `mode`/`profile` must allow it ({@linkcode statsOnAdapter}). `axis`: the
 * channel axis of the problem's C (flipped for a swapped pass).
 *
 * @returns The layout, or `undefined` (the batch norm then reduces its input itself).
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { gemmStatsLayout } from "./stats.ts";
 * import { planGemm } from "./plan.ts";
 * const plan = planGemm({
 *   m: 8, n: 100, k: 3, batch: 1, transA: false, transB: false, alpha: 1, beta: 0,
 *   a: { base: 0, dtype: "f32" }, b: { base: 0, dtype: "f32" }, c: { base: 0, dtype: "f32" },
 *   lda: 3, ldb: 100, ldc: 100, strideA: 0, strideB: 0, strideC: 0, biasMode: "none",
 * }, WEBGPU_DEFAULT_PROFILE);
 * gemmStatsLayout(plan, "row", WEBGPU_DEFAULT_PROFILE)?.tiles; // 2
 * ```
 */
export function gemmStatsLayout(
  plan: GemmPlan,
  axis: StatsAxis,
  profile: AdapterProfile,
  mode: FusionMode = "auto",
): GemmStatsLayout | undefined {
  if (mode === "off" || plan.epilogue || plan.passes.length === 0) return undefined;
  const last = plan.passes.length - 1;
  const pass = plan.passes[last];
  if (pass.splits !== 1 || pass.dispatches.length !== 1) return undefined;
  const d = pass.dispatches[0];
  // (The statistics variants store no activation: a batch norm's producer has none.)
  if (d.kernel === "epilogue" || d.bindings.c !== "c" || d.config.activation) return undefined;
  if (mode === "auto" && !statsOnAdapter(profile, d.kernel)) return undefined;
  const a: StatsAxis = pass.swap ? (axis === "row" ? "col" : "row") : axis;
  const [gx, gy, gz] = d.workgroups;
  const tilesX = a === "row" ? gx : gy;
  const perGroup = d.kernel === "register" ? REGISTER_WG : 1;
  const tiles = tilesX * gz * perGroup;
  // The merge's bound, and the `[channels, tiles, 4]` scratch in one binding.
  const channels = a === "row" ? d.params.m : d.params.n;
  if (tiles > MAX_PARTIAL_TILES || channels * tiles * 4 > maxBindingElements(profile)) {
    return undefined;
  }
  return { kernel: d.kernel, axis: a, tiles, tilesX, pass: last };
}
