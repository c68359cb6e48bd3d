/**
 * The blockings ("tiles") of the direct convolution kernels (`direct.ts`) and their search: pure
 * functions of a {@linkcode DirectConvShape}, each with a cost estimate (per-lane memory
 * operations, which set the speed on llvmpipe) that `plan.ts` compares with im2col + GEMM.
 *
 * - forward ({@linkcode planDirectConv}): input channels per dispatch (`ci`, dividing `cIn`),
 *   output channels per thread (`co`) and output pixels per thread (`tx`), within the budgets of
 *   the fully unrolled kernel (multiply-adds, per-lane loads, staged weights);
 * - weight gradient ({@linkcode planDirectWeightGrad}): output pixels per step, output channels
 *   and kernel rows per thread, and ({@linkcode directWeightGradSplits}) the split of the images
 *   over threads whose partial sums a reduction adds up.
 *
 * Imports no kernel.
 *
 * @module
 */

import { type BindingLimitsOf, LOOP_CAP, maxBindingElements } from "../_binding.ts";
import { perSizes } from "../_kernel.ts";
import type { DirectConvShape } from "./geometry.ts";

/** Threads per workgroup of the direct kernels. */
export const DIRECT_WG = 64;
/** Widest unrolled tap row. */
const MAX_KW = 16;

/** Balanced blocks of at most `max`: the block size that splits `n` into the fewest blocks. */
export function balanced(n: number, max: number): number {
  const blocks = Math.ceil(n / max);
  return Math.ceil(n / blocks);
}

/**
 * Input offsets (relative to the block's first input column) that `tx` output pixels read with
 * a kernel row of `kw` taps at stride `sw` and dilation `dw`, ascending.
 *
 * @example
 * ```ts
 * import { offsets } from "./direct_plan.ts";
 * offsets({ tx: 2, kw: 3, sw: 1, dw: 1 }); // [0, 1, 2, 3]
 * ```
 */
export function offsets(c: { tx: number; kw: number; sw: number; dw: number }): number[] {
  const set = new Set<number>();
  for (let px = 0; px < c.tx; px++) {
    for (let kx = 0; kx < c.kw; kx++) set.add(px * c.sw + kx * c.dw);
  }
  return [...set].sort((a, b) => a - b);
}

// ------------------------------------------------------------------------- forward ----

/** Blocking of the direct forward kernel. */
export interface DirectConvTile {
  /** Output pixels per thread along a row. */
  readonly tx: number;
  /** Output channels per thread (one workgroup's channel block). */
  readonly co: number;
  /** Input channels per dispatch (later dispatches add to the output). */
  readonly ci: number;
  /**
   * Output channels whose multiply-adds run together (default `co`: all of them per input row,
   * every accumulator live at once): a smaller group keeps its `cg x tx` accumulators in
   * registers over all taps.
   */
  readonly cg?: number;
}

/**
 * Most multiply-adds one unrolled forward thread may hold: bounds the code llvmpipe compiles.
 */
const MAX_UNROLLED_FMAS = 4800;
/**
 * Most per-lane input loads one unrolled forward thread may hold: each becomes a loop over the
 * SIMD lanes in llvmpipe's code, which dominates its compile time (superlinear: about 0.2 s for
 * 100 loads, 1.6 s for 400).
 */
const MAX_UNROLLED_LOADS = 256;

/**
 * Most weights one workgroup stages (`CO x CI x kh x kw` f32s): 16 KiB, WebGPU's default
 * `maxComputeWorkgroupStorageSize`.
 */
export const MAX_STAGED_WEIGHTS = 4096;

/*
 * Output-channel groups (`cg`). A thread's `co x tx` accumulators are SIMD registers in
 * llvmpipe's code; past a few dozen they spill, and each multiply-add then loads and stores its
 * accumulator. Blockings of at least MAX_LIVE_ACC accumulators (the big 3x3 layers of GoogLeNet
 * and ResNet: 2 pixels x 32 channels) are searched again with their multiply-adds in groups of
 * at most GROUP_ACC accumulators, whose objective also counts each weight's broadcast from
 * workgroup memory (one per tx multiply-adds: wider pixel blocks pay) and the rereads of the
 * input values; a grouped blocking replaces the plain one only when at least twice as wide.
 * Measured on llvmpipe (2 busy cores, interleaved, bench/conv2d_bench.ts), b8: tx 2 co 32 ->
 * tx 4 co 16 in groups of 4 ran 1.0-1.8x as fast at 24x24 and 0.9-1.35x at 12x12; tx 3
 * blockings in groups of 5 at 6x6 and 3x3 ran 0.5-1.0x (hence the width rule).
 */
/** Fewest accumulators of the plain search's best blocking for which groups are searched. */
const MAX_LIVE_ACC = 48;
/** Most accumulators of one group. */
const GROUP_ACC = 16;
/** Cost of a weight's broadcast from workgroup memory, per multiply-add row of tx. */
const WEIGHT_READ = 0.1;
/** Cost of rereading a spilled input value. */
const REREAD = 0.25;

/** A forward direct convolution that fits the kernel, with its estimated cost. */
export interface DirectConvPlan {
  /** The blocking. */
  readonly tile: DirectConvTile;
  /**
   * Estimated memory operations (per-lane loads and stores) per output element, with the extras
   * of accumulators that do not all fit registers (what compares the paths).
   */
  readonly cost: number;
}

function divisorsLike(n: number, max: number): number[] {
  const out: number[] = [];
  for (let v = 1; v <= Math.min(n, max); v++) if (balanced(n, v) === v) out.push(v);
  return out;
}

/**
 * Plans a direct forward convolution: the blocking (input channels per dispatch, output
 * channels and pixels per thread, and the groups of output channels whose multiply-adds run
 * together) with the fewest estimated memory operations per output within the unrolling
 * budgets, or `undefined` when none fits (kernel rows wider than 16 taps, or even one input
 * channel and one output per thread over budget). `groups: false`: the best blocking without
 * groups (every accumulator live at once), as before they existed.
 *
 * @example
 * ```ts
 * import { planDirectConv } from "./direct_plan.ts";
 * planDirectConv({ n: 256, cIn: 6, h: 14, w: 14, cOut: 16, oh: 10, ow: 10, kh: 5, kw: 5,
 *   sh: 1, sw: 1, ph: 0, pw: 0, dh: 1, dw: 1 }); // { tile: { tx: 2, co: 16, ci: 6 }, cost: ... }
 * ```
 */
export function planDirectConv(
  s: DirectConvShape,
  groups = true,
): DirectConvPlan | undefined {
  // The search depends on these only, and layers plan every step: one search per set of sizes.
  return searchPlan(s.cIn, s.cOut, s.ow, s.kh, s.kw, s.sw, s.dw, groups);
}

const searchPlan = perSizes((
  cIn: number,
  cOut: number,
  ow: number,
  kh: number,
  kw: number,
  sw: number,
  dw: number,
  groups: boolean,
): DirectConvPlan | undefined => {
  if (kw > MAX_KW) return undefined;
  let best: (DirectConvPlan & { search: number }) | undefined;
  // The best blocking whose multiply-adds run in groups of output channels, by its own
  // objective, with the estimate that compares paths.
  let bestGrouped: { plan: DirectConvPlan; objective: number } | undefined;
  // Input channels per dispatch divide cIn: every dispatch then runs the same kernel.
  const chunkSizes = [];
  for (let v = 1; v <= Math.min(cIn, 64); v++) if (cIn % v === 0) chunkSizes.push(v);
  for (const ci of chunkSizes) {
    const chunks = Math.ceil(cIn / ci);
    const taps = ci * kh * kw;
    const budget = Math.floor(MAX_UNROLLED_FMAS / taps);
    const staged = Math.floor(MAX_STAGED_WEIGHTS / taps);
    for (const co of divisorsLike(cOut, Math.min(32, budget, staged))) {
      for (const tx of divisorsLike(ow, Math.min(32, Math.floor(budget / co)))) {
        const loads = ci * kh * offsets({ tx, kw, sw, dw }).length;
        if (loads > MAX_UNROLLED_LOADS) continue;
        // Per useful output: input loads, stores (and reloads of y after the first chunk), a
        // fixed cost per thread and its share of staging the weights; plus a little per
        // multiply-add held (register pressure).
        const blocks = Math.ceil(ow / tx) * Math.ceil(cOut / co);
        const perThread = loads + tx * co * (chunks > 1 ? 2 : 1) + 20 + (taps * co) / DIRECT_WG;
        const search = (chunks * blocks * perThread) / (ow * cOut) + 0.0003 * taps * co * tx;
        // Grouped: the register pressure of a group's accumulators only, plus each weight's
        // broadcast (one per tx multiply-adds) and the rereads of the spilled input values by
        // every group after the first.
        const cg = co * tx <= GROUP_ACC
          ? co
          : balanced(co, Math.max(1, Math.floor(GROUP_ACC / tx)));
        const extra = WEIGHT_READ * taps * co + REREAD * (Math.ceil(co / cg) - 1) * loads;
        const objective = (chunks * blocks * (perThread + extra)) / (ow * cOut) +
          0.0003 * taps * cg * tx;
        // The estimate compared with im2col + GEMM: a blocking whose accumulators do not all fit
        // registers (run in groups, or spilling) also pays the grouped extras. Without them the
        // big 3x3 layers were estimated at half im2col's cost and measured at 0.94-1.5x its time
        // (llvmpipe, ResNet b8@96: 64@24 tx 4 co 16 in groups of 4 estimated 40 against 85,
        // timed 39 ms against 40; 256@6 tx 2 co 32 estimated 141 against 301, timed 53 against
        // 35); with them (and the idle threads, `_occupied` in cost.ts) 0.8-2.6x, as timed.
        const cost = search +
          (co * tx >= MAX_LIVE_ACC ? (chunks * blocks * extra) / (ow * cOut) : 0);
        if (!best || search < best.search) best = { tile: { tx, co, ci }, cost, search };
        if (!bestGrouped || objective < bestGrouped.objective) {
          const tile = cg < co ? { tx, co, ci, cg } : { tx, co, ci };
          bestGrouped = { plan: { tile, cost }, objective };
        }
      }
    }
  }
  // Blockings whose accumulators all fit registers stay as they are; the others are replaced
  // by the best grouped one when it is at least twice as wide (measured: groups of blockings
  // 3 pixels wide, on 6x6 and 3x3 images, were slower than the plain ones).
  if (
    groups && best && bestGrouped && best.tile.co * best.tile.tx >= MAX_LIVE_ACC &&
    bestGrouped.plan.tile.tx >= 2 * best.tile.tx
  ) {
    return bestGrouped.plan;
  }
  return best && { tile: best.tile, cost: best.cost };
});

// ----------------------------------------------------------------- weight gradient ----

/** Register blocking of the weight-gradient kernel. */
export interface DirectWeightGradTile {
  /** Output pixels per step along a row. */
  readonly tx: number;
  /** Output channels per thread. */
  readonly co: number;
  /** Kernel rows per thread. */
  readonly ky: number;
}

/** Most accumulators per thread of the weight-gradient kernel. */
const DW_MAX_ACC = 200;

/**
 * The default blocking of the weight-gradient kernel: 4 to 6 output pixels per step (the least
 * waste at the row's end), and the most output channels and kernel rows per thread whose
 * accumulators fit the budget (each loaded value then feeds more multiply-adds).
 *
 * @example
 * ```ts
 * import { directWeightGradTile } from "./direct_plan.ts";
 * directWeightGradTile({ cOut: 16, kh: 5, kw: 5, ow: 10 }); // { tx: 5, co: 8, ky: 5 }
 * ```
 */
export function directWeightGradTile(
  s: { readonly cOut: number; readonly kh: number; readonly kw: number; readonly ow: number },
): DirectWeightGradTile {
  let tx = Math.min(4, s.ow);
  for (const t of [5, 6]) {
    if (t <= s.ow && Math.ceil(s.ow / t) * t < Math.ceil(s.ow / tx) * tx) tx = t;
  }
  const perCo = s.kw * s.kh;
  if (perCo * Math.min(s.cOut, 4) <= DW_MAX_ACC) {
    return { tx, co: balanced(s.cOut, Math.floor(DW_MAX_ACC / perCo)), ky: s.kh };
  }
  const co = balanced(s.cOut, Math.max(1, Math.min(8, Math.floor(DW_MAX_ACC / s.kw))));
  return { tx, co, ky: balanced(s.kh, Math.max(1, Math.floor(DW_MAX_ACC / (co * s.kw)))) };
}

/** A weight-gradient direct convolution that fits the kernel, with its estimated cost. */
export interface DirectWeightGradPlan {
  /** The blocking. */
  readonly tile: DirectWeightGradTile;
  /** Estimated per-lane loads per multiply-add. */
  readonly cost: number;
}

/** Whether the weight-gradient kernel slides a window of input rows (needs `sh == dh`). */
export function slides(s: DirectConvShape, tile: DirectWeightGradTile): boolean {
  return s.sh === s.dh && tile.ky > 1;
}

/** Loop iterations of one image in one weight-gradient thread. */
function loopsPerImage(s: DirectConvShape, tile: DirectWeightGradTile): number {
  const nbx = Math.ceil(s.ow / tile.tx);
  return slides(s, tile) ? nbx * (s.oh + 1) + 1 : s.oh * (nbx + 1) + 1;
}

/**
 * Plans the direct weight gradient: `undefined` when the kernel cannot run it (a kernel row wider
 * than 16 taps, or one image's output rows exceeding the loop budget), else the blocking and its
 * estimated loads per multiply-add (to compare with im2col + GEMM).
 *
 * @example
 * ```ts
 * import { planDirectWeightGrad } from "./direct_plan.ts";
 * planDirectWeightGrad({ n: 256, cIn: 1, h: 28, w: 28, cOut: 6, oh: 28, ow: 28, kh: 5, kw: 5,
 *   sh: 1, sw: 1, ph: 2, pw: 2, dh: 1, dw: 1 }); // { tile: { tx: 4, co: 6, ky: 5 }, cost: ... }
 * ```
 */
export function planDirectWeightGrad(s: DirectConvShape): DirectWeightGradPlan | undefined {
  if (s.kw > MAX_KW) return undefined;
  const tile = directWeightGradTile(s);
  if (loopsPerImage(s, tile) > LOOP_CAP) return undefined;
  // Per step: dy loads, and one new input row (sliding) or every kernel row's.
  const loads = tile.co * tile.tx +
    (slides(s, tile) ? 1 : tile.ky) * offsets({ tx: tile.tx, kw: s.kw, sw: s.sw, dw: s.dw }).length;
  return { tile, cost: loads / (tile.co * tile.ky * s.kw * tile.tx) };
}

/** Threads the weight-gradient kernel aims for (enough SIMD groups for every core). */
const DW_TARGET_THREADS = 2048;

/** How the weight-gradient kernel splits the images: partial sums, each over `ips` images. */
export interface DirectWeightGradSplit {
  /** Partial sums (each over a split of the images). */
  readonly splits: number;
  /** Images per split (the last one may have fewer). */
  readonly ips: number;
}

/**
 * The split of the images of the weight-gradient kernel: enough splits for about 2048 threads
 * (or `splits` when given), each within the loop budget of one invocation, their partial sums
 * within one binding.
 *
 * @throws {RangeError} when the partial sums exceed one binding.
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { directWeightGradSplits } from "./direct_plan.ts";
 * const s = { n: 256, cIn: 1, h: 28, w: 28, cOut: 6, oh: 28, ow: 28, kh: 5, kw: 5, sh: 1, sw: 1,
 *   ph: 2, pw: 2, dh: 1, dw: 1 };
 * directWeightGradSplits(s, { tx: 4, co: 6, ky: 5 }, WEBGPU_DEFAULT_PROFILE); // { splits: 256, ips: 1 }
 * ```
 */
export function directWeightGradSplits(
  s: DirectConvShape,
  tile: DirectWeightGradTile,
  limits: BindingLimitsOf,
  splits?: number,
): DirectWeightGradSplit {
  const maxIps = Math.max(1, Math.floor(LOOP_CAP / loopsPerImage(s, tile)));
  const rowThreads = s.cIn * Math.ceil(s.kh / tile.ky) * Math.ceil(s.cOut / tile.co);
  const kk = s.cOut * s.cIn * s.kh * s.kw;
  const limit = maxBindingElements(limits);
  let sp = splits ?? Math.ceil(DW_TARGET_THREADS / rowThreads);
  sp = Math.max(1, Math.min(sp, s.n, Math.floor(limit / (kk + s.cOut))));
  let ips = Math.ceil(s.n / sp);
  if (ips > maxIps) ips = maxIps;
  sp = Math.ceil(s.n / ips);
  if (sp * (kk + s.cOut) > limit) {
    throw new RangeError(
      `conv2d: weight gradient of ${kk} weights over ${s.n} images needs ${sp} partial ` +
        "sums, more than one binding holds",
    );
  }
  return { splits: sp, ips };
}
