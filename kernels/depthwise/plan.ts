/**
 * Planning a depthwise convolution: {@linkcode planDepthwise} turns a call (its window, and which
 * passes it computes) and an adapter's profile into a {@linkcode DepthwisePlan}, a plain value
 * that says what the runner (`index.ts`) records: the path of each pass, the ranges of planes or
 * samples dispatched one at a time (tensors larger than one storage binding, e.g. MobileNet's
 * `[256, 64, 48, 48]` at its first strided depthwise layer, 151 MB), and how the weight
 * gradient's reduction is cut to keep every invocation's loops under llvmpipe's silent cap of
 * 65535 iterations. Pure: the same inputs give the same plan.
 *
 * Which kernel runs, by preference: whole small planes per thread (`plane.ts`, up to 144
 * elements), then rows of vec4s (`row_tile.ts`, `weight_tile.ts`: widths multiples of 4), then
 * the scalar kernels. llvmpipe (Mesa 22) loads storage per SIMD lane in a loop whatever the
 * addresses, so a vec4 load costs about a scalar one: the vec4 paths load 4 to 10 times less per
 * output. The file runs past 500 lines so that every pass's record and its choice read together.
 *
 * Also the constants of the work decomposition the kernels share: {@linkcode WG} threads per
 * workgroup and {@linkcode V} outputs of a row per unit of work.
 *
 * @module
 */

import type { AdapterProfile } from "../_adapter.ts";
import { LOOP_BUDGET, splitUnits } from "../_binding.ts";
import type { PlaneWindow, Window2d } from "../_geometry.ts";

/** Threads per workgroup of every depthwise kernel. */
export const WG = 64;

/** Outputs along a row computed by one thread of the row kernels (a unit of work). */
export const V = 4;

/**
 * Most units of work (an output row segment of up to 4 outputs) of one channel reduced by one
 * workgroup of the chunked weight-gradient pass (about 4096 outputs); fewer for large kernels.
 */
const CHUNK_UNITS = 1024;

/**
 * Most units per channel whose weight gradient is reduced serially by one thread per channel
 * (no workgroup barriers); longer reductions use the two-pass chunked one. Fewer for large
 * kernels.
 */
const SERIAL_UNITS = 512;

/**
 * Inputs along a row that the {@linkcode V} outputs of a unit read, with kernel width `kw`,
 * stride `sw` and dilation `dw`.
 *
 * @returns The span.
 * @example
 * ```ts
 * import { rowSpan } from "./plan.ts";
 * rowSpan(3, 2, 1); // 9
 * ```
 */
export function rowSpan(kw: number, sw: number, dw: number): number {
  return (V - 1) * sw + (kw - 1) * dw + 1;
}

/**
 * Loop iterations of one call of the weight-gradient kernels' `unit` (`weight_grad.ts`), its own
 * loop step included: {@linkcode V} loads of dy, then per kernel row the span and the taps.
 *
 * @returns The count.
 * @example
 * ```ts
 * import { unitIterations } from "./plan.ts";
 * unitIterations({ kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1, dh: 1, dw: 1 }); // 35
 * ```
 */
export function unitIterations(r: Window2d): number {
  return V + r.kh * (rowSpan(r.kw, r.sw, r.dw) + r.kw + 1) + 1;
}

/** A range `[first, end)` of planes or samples, dispatched at once. */
export type UnitRange = readonly [number, number];

/** One call of a depthwise convolution, as the planner sees it. */
export interface DepthwiseProblem {
  /** The calling function (named in errors). */
  readonly op: string;
  /** The window and sizes (`depthwiseWindow`). */
  readonly window: PlaneWindow;
  /** The forward pass, or the backward passes that `dx`, `dw`, `db` name. */
  readonly call: "forward" | "backward";
  /** Backward: the input gradient is computed. */
  readonly dx?: boolean;
  /** Backward: the weight gradient is computed. */
  readonly dw?: boolean;
  /** Backward: the bias gradient is computed. */
  readonly db?: boolean;
  /** Backward: `dw` and `db` are accumulated (`+=`) rather than overwritten. */
  readonly accumulate?: boolean;
}

/**
 * The row-convolution path (the forward pass, and the input gradient at stride 1): one thread
 * per {@linkcode V} consecutive outputs of a row.
 */
export interface RowConvPass {
  /** The path. */
  readonly path: "rowConv";
  /**
   * The correlation computed: the call's window (forward), or, flipped, `dy` (`oh x ow` planes)
   * to `dx` (`h x w`) with the kernel flipped, stride 1 and padding `(k - 1) * d - p`.
   */
  readonly window: PlaneWindow;
  /** Whether the kernel is flipped (the input gradient). */
  readonly flip: boolean;
  /** Units of {@linkcode V} outputs per output row. */
  readonly owb: number;
  /** Ranges of planes, one dispatch each. */
  readonly ranges: readonly UnitRange[];
  /**
   * The tile of the vec4 kernel (`row_tile.ts`) where the widths allow it (input and output
   * widths multiples of 4); absent: the scalar kernel (`row_conv.ts`).
   */
  readonly tile?: RowTile;
}

/** A thread's tile of outputs in the vec4 row convolution, and its workgroup size. */
export interface RowTile {
  /** vec4s of outputs along a row. */
  readonly cx: number;
  /** Output rows. */
  readonly ry: number;
  /** Threads per workgroup (a workgroup row covers part of one plane). */
  readonly wg: number;
}

/**
 * The vec4s of an input row that the tiled row convolution's `cx` vec4s of outputs read, relative
 * to vec4 `q0 * sw` (`q0` the first output vec4): `[first, last]`, with kernel width `kw`,
 * stride `sw`, dilation `dw` and padding `pw`.
 *
 * @returns The range.
 * @example
 * ```ts
 * import { tileBlocks } from "./plan.ts";
 * tileBlocks(3, 1, 1, 1, 2); // [-1, 2]
 * ```
 */
export function tileBlocks(
  kw: number,
  sw: number,
  dw: number,
  pw: number,
  cx: number,
): [number, number] {
  return [Math.floor(-pw / 4), Math.floor(((4 * cx - 1) * sw - pw + (kw - 1) * dw) / 4)];
}

/**
 * The tile of the vec4 row convolution for window `r` (a forward window, or a flipped one), or
 * undefined where the scalar kernel runs: widths not multiples of 4, or
 * binding offsets that may split a vec4 (an alignment under 16 bytes).
 *
 * @returns The tile.
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { depthwiseWindow } from "./geometry.ts";
 * import { rowTile } from "./plan.ts";
 * const r = depthwiseWindow("op", { n: 1, c: 1, h: 48, w: 48, kernel: 3, padding: 1 });
 * rowTile(r, WEBGPU_DEFAULT_PROFILE); // { cx: 12, ry: 6, wg: 8 }
 * ```
 */
export function rowTile(r: PlaneWindow, profile: AdapterProfile): RowTile | undefined {
  if (r.w % 4 !== 0 || r.ow % 4 !== 0) return undefined;
  if (profile.limits.minStorageBufferOffsetAlignment % 16 !== 0) return undefined;
  const ow4 = r.ow / 4;
  const cx = ow4 <= TILE_CX ? ow4 : [TILE_CX, 4, 3, 2, 1].find((d) => ow4 % d === 0)!;
  const ry = Math.min(bestRows(r.oh, ow4 / cx, TILE_RY), r.oh);
  const units = Math.ceil(r.oh / ry) * (ow4 / cx);
  return { cx, ry, wg: Math.min(WG, Math.ceil(units / 8) * 8) };
}

/**
 * The small-plane path (`plane.ts`): one thread per `pp` consecutive whole planes, the forward
 * pass (mode `y`) or the input gradient at any stride (mode `dx`).
 */
export interface PlanePass {
  /** The path. */
  readonly path: "plane";
  /** The call's window. */
  readonly window: PlaneWindow;
  /** What it computes: the forward's `y`, or the input gradient `dx`. */
  readonly mode: "y" | "dx";
  /** Planes per thread (so that a thread's inputs and outputs are whole vec4s). */
  readonly pp: number;
  /** Ranges of planes (lengths multiples of `pp`), one dispatch each. */
  readonly ranges: readonly UnitRange[];
}

/** Most elements of a thread's planes (input or output) in the small-plane path. */
const PLANE_MAX = 144;

/**
 * Planes per thread of the small-plane path for window `r`, or undefined where it does not run:
 * planes of more than {@linkcode PLANE_MAX} elements per thread, a plane count that `pp` does not
 * divide, or binding offsets that may split a vec4 (an alignment under 16 bytes).
 *
 * @returns `pp`, 1, 2 or 4.
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { depthwiseWindow } from "./geometry.ts";
 * import { planePlanes } from "./plan.ts";
 * const r = depthwiseWindow("op", { n: 2, c: 8, h: 3, w: 3, kernel: 3, padding: 1 });
 * planePlanes(r, WEBGPU_DEFAULT_PROFILE); // 4
 * ```
 */
export function planePlanes(r: PlaneWindow, profile: AdapterProfile): number | undefined {
  if (profile.limits.minStorageBufferOffsetAlignment % 16 !== 0) return undefined;
  const hw = r.h * r.w, ohw = r.oh * r.ow;
  const pp = [1, 2, 4].find((q) => (q * hw) % 4 === 0 && (q * ohw) % 4 === 0)!;
  if (pp * Math.max(hw, ohw) > PLANE_MAX || (r.n * r.c) % pp !== 0) return undefined;
  return pp;
}

/** Output vec4s along a row of a thread's tile, where the row's vec4s divide by it. */
const TILE_CX = 12;
/** Output rows of a thread's tile, by preference. */
const TILE_RY = [4, 6, 3, 8, 2, 1];

/**
 * The strided input gradient as whole rows of vec4s per thread (`row_tile.ts`, mode `dx`): each
 * input's sum gathered from the outputs and taps that reach it, fixed at compile time for rows
 * that start at a multiple of the stride.
 */
export interface RowTileDxPass {
  /** The path. */
  readonly path: "rowTileDx";
  /** The call's window. */
  readonly window: PlaneWindow;
  /** The tile: `cx` the row's vec4s, `ry` a multiple of the vertical stride. */
  readonly tile: RowTile;
  /** Ranges of planes, one dispatch each. */
  readonly ranges: readonly UnitRange[];
}

/**
 * The tile of the strided input gradient's whole-row kernel for window `r`, or undefined where
 * the block gather runs: widths not multiples of 4, more than 12 vec4s a row, or an alignment
 * under 16 bytes.
 *
 * @returns The tile.
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { depthwiseWindow } from "./geometry.ts";
 * import { rowTileDx } from "./plan.ts";
 * const r = depthwiseWindow("op", { n: 1, c: 1, h: 48, w: 48, kernel: 3, stride: 2, padding: 1 });
 * rowTileDx(r, WEBGPU_DEFAULT_PROFILE); // { cx: 12, ry: 6, wg: 8 }
 * ```
 */
export function rowTileDx(r: PlaneWindow, profile: AdapterProfile): RowTile | undefined {
  if (r.w % 4 !== 0 || r.ow % 4 !== 0 || r.w / 4 > TILE_CX) return undefined;
  if (profile.limits.minStorageBufferOffsetAlignment % 16 !== 0) return undefined;
  const ry = bestRows(r.h, 1, TILE_RY.filter((q) => q % r.sh === 0).concat([r.sh]));
  const units = Math.ceil(r.h / ry);
  return { cx: r.w / 4, ry, wg: Math.min(WG, Math.ceil(units / 8) * 8) };
}

/**
 * Of `options` (by preference), the rows per thread that best fill SIMD batches of 8 threads per
 * plane of `rows` rows and `rowUnits` tiles a row.
 */
function bestRows(rows: number, rowUnits: number, options: readonly number[]): number {
  const use = (ry: number) => {
    const units = Math.ceil(rows / ry) * rowUnits;
    return units / (Math.ceil(units / 8) * 8);
  };
  return options.reduce((best, q) => (use(q) > use(best) ? q : best));
}

/**
 * The strided input gradient's path: a gather, one thread per block of `sh x sw` inputs aligned
 * to the stride.
 */
export interface BlockGatherPass {
  /** The path. */
  readonly path: "blockGather";
  /** The call's window. */
  readonly window: PlaneWindow;
  /** Blocks per plane column (`ceil(h / sh)`). */
  readonly hb: number;
  /** Blocks per plane row (`ceil(w / sw)`). */
  readonly wb: number;
  /** Ranges of planes, one dispatch each. */
  readonly ranges: readonly UnitRange[];
}

/** The weight gradient of short reductions: one thread per channel walks all its units. */
export interface SerialWeightGradPass {
  /** The path. */
  readonly path: "serial";
  /** The call's window. */
  readonly window: PlaneWindow;
  /** Whether `dw` and `db` are accumulated (`+=`). */
  readonly accumulate: boolean;
  /** Units of work per channel (`n * oh * ceil(ow / V)`). */
  readonly units: number;
}

/**
 * The weight gradient of small planes (`weight_grad.ts`): one thread per `pp` consecutive
 * channels walks the samples, loading whole planes of `x` and `dy` as vec4s.
 */
export interface PlaneWeightGradPass {
  /** The path. */
  readonly path: "plane";
  /** The call's window. */
  readonly window: PlaneWindow;
  /** Whether `dw` and `db` are accumulated (`+=`). */
  readonly accumulate: boolean;
  /** Channels per thread. */
  readonly pp: number;
}

/**
 * The weight gradient of planes whose widths are multiples of 4 (`weight_tile.ts`): one thread per
 * (channel, band of `tile.ry` output rows) walks the samples with whole rows of vec4s, then
 * pass 2 of the chunked reduction adds the bands' partial sums in order.
 */
export interface TileWeightGradPass {
  /** The path. */
  readonly path: "tile";
  /** The call's window. */
  readonly window: PlaneWindow;
  /** Whether `dw` and `db` are accumulated (`+=`). */
  readonly accumulate: boolean;
  /** The tile: `cx` the output row's vec4s, `ry` rows; `wg` threads per workgroup. */
  readonly tile: RowTile;
  /** Bands of rows per plane (the chunks of pass 2). */
  readonly bands: number;
}

/** One range of samples of the chunked weight gradient, and its chunks. */
export interface ChunkRange {
  /** The samples `[first, end)`. */
  readonly samples: UnitRange;
  /** Chunks (workgroups per channel) of this range. */
  readonly chunks: number;
  /** Index of its first chunk among all ranges' chunks. */
  readonly chunkOff: number;
}

/**
 * The weight gradient of long reductions, in two passes: workgroups of `(chunk, channel)` reduce
 * chunks of units into partial sums of every tap and of `dy` (one dispatch per range of samples),
 * then one thread per `(channel, tap)` adds the chunks in order.
 */
export interface ChunkedWeightGradPass {
  /** The path. */
  readonly path: "chunked";
  /** The call's window. */
  readonly window: PlaneWindow;
  /** Whether `dw` and `db` are accumulated (`+=`). */
  readonly accumulate: boolean;
  /** Units per chunk (a multiple of {@linkcode WG}). */
  readonly chunkUnits: number;
  /** Chunks of all ranges. */
  readonly chunks: number;
  /** Ranges of samples, one dispatch of the first pass each. */
  readonly ranges: readonly ChunkRange[];
}

/** What the runner records for one call. */
export interface DepthwisePlan {
  /** The call's window and sizes. */
  readonly window: PlaneWindow;
  /** The forward pass (call `forward`). */
  readonly forward?: RowConvPass | PlanePass;
  /** The input gradient (call `backward` with `dx`). */
  readonly inputGrad?: RowConvPass | BlockGatherPass | PlanePass | RowTileDxPass;
  /** The weight and bias gradients (call `backward` with `dw` or `db`). */
  readonly weightGrad?:
    | SerialWeightGradPass
    | ChunkedWeightGradPass
    | PlaneWeightGradPass
    | TileWeightGradPass;
}

/**
 * Plans a depthwise convolution's forward pass, or its backward passes.
 *
 * @param limit The most elements one binding may span (default: the profile's limit; runners
 * pass `bindingLimit(gpu)`, which tests may lower).
 * @returns The plan.
 * @throws {RangeError} when one plane (or sample) does not fit a binding, or the kernel or the
 * reduction is too large for the loop budget.
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { depthwiseWindow } from "./geometry.ts";
 * import { planDepthwise } from "./plan.ts";
 * const op = "depthwiseConv2dBackward";
 * const window = depthwiseWindow(op, { n: 8, c: 32, h: 48, w: 48, kernel: 3, stride: 2, padding: 1 });
 * const plan = planDepthwise({ op, window, call: "backward", dx: true, dw: true }, WEBGPU_DEFAULT_PROFILE);
 * console.log(plan.inputGrad?.path, plan.weightGrad?.path); // blockGather chunked
 * ```
 */
export function planDepthwise(
  problem: DepthwiseProblem,
  profile: AdapterProfile,
  limit?: number,
): DepthwisePlan {
  const { op, window: r } = problem;
  const planes = () =>
    splitUnits(op, profile, { units: r.n * r.c, perUnit: Math.max(r.h * r.w, r.oh * r.ow), limit });
  const pp = planePlanes(r, profile);
  const planePass = (mode: "y" | "dx"): PlanePass => ({
    path: "plane",
    window: r,
    mode,
    pp: pp!,
    ranges: splitUnits(op, profile, {
      units: (r.n * r.c) / pp!,
      perUnit: pp! * Math.max(r.h * r.w, r.oh * r.ow),
      limit,
    }).map(([a, b]) => [a * pp!, b * pp!]),
  });
  if (problem.call === "forward" && pp !== undefined) {
    return { window: r, forward: planePass("y") };
  }
  if (problem.call === "forward") {
    return {
      window: r,
      forward: {
        path: "rowConv",
        window: r,
        flip: false,
        owb: Math.ceil(r.ow / V),
        ranges: planes(),
        ...tileOf(r, profile),
      },
    };
  }
  let inputGrad: RowConvPass | BlockGatherPass | PlanePass | RowTileDxPass | undefined;
  const tileDx = rowTileDx(r, profile);
  if (problem.dx && pp !== undefined) {
    inputGrad = planePass("dx");
  } else if (problem.dx && r.sh === 1 && r.sw === 1) {
    const flipped = {
      ...r,
      h: r.oh,
      w: r.ow,
      oh: r.h,
      ow: r.w,
      ph: (r.kh - 1) * r.dh - r.ph,
      pw: (r.kw - 1) * r.dw - r.pw,
    };
    inputGrad = {
      path: "rowConv",
      window: flipped,
      flip: true,
      owb: Math.ceil(r.w / V),
      ranges: planes(),
      ...tileOf(flipped, profile),
    };
  } else if (problem.dx && tileDx) {
    inputGrad = { path: "rowTileDx", window: r, tile: tileDx, ranges: planes() };
  } else if (problem.dx) {
    inputGrad = {
      path: "blockGather",
      window: r,
      hb: Math.ceil(r.h / r.sh),
      wb: Math.ceil(r.w / r.sw),
      ranges: planes(),
    };
  }
  const weightGrad = problem.dw || problem.db
    ? planWeightGrad(op, r, problem.accumulate ?? false, profile, limit)
    : undefined;
  return { window: r, inputGrad, weightGrad };
}

/** `{ tile }` where the vec4 row convolution runs, else nothing. */
function tileOf(r: PlaneWindow, profile: AdapterProfile): { tile?: RowTile } {
  const tile = rowTile(r, profile);
  return tile ? { tile } : {};
}

/** The weight gradient's path, chunks and ranges of samples. */
function planWeightGrad(
  op: string,
  r: PlaneWindow,
  accumulate: boolean,
  profile: AdapterProfile,
  limit: number | undefined,
): SerialWeightGradPass | ChunkedWeightGradPass | PlaneWeightGradPass | TileWeightGradPass {
  const kk1 = r.kh * r.kw + 1;
  const owb = Math.ceil(r.ow / V);
  // Loop budget: a serial thread runs units * (unit + 1) iterations, its (b, oy) loops (at most
  // 2 * units) and its tap loops; a chunked thread chunkUnits / WG units plus the tree reduction
  // (about 8 * (kk1 + 32) iterations).
  const perUnit = unitIterations(r) + 1;
  const serialUnits = Math.min(
    SERIAL_UNITS,
    Math.floor((LOOP_BUDGET - 2 * kk1) / (perUnit + 2)),
  );
  const perThread = Math.min(
    CHUNK_UNITS / WG,
    Math.floor((LOOP_BUDGET - 8 * (kk1 + 32)) / perUnit),
  );
  if (perThread < 1) {
    throw new RangeError(
      `${op}: kernel [${r.kh}, ${r.kw}] with stride ${r.sw} and dilation ${r.dw} is too large`,
    );
  }
  const chunkUnits = WG * perThread;
  const samples = splitUnits(op, profile, {
    units: r.n,
    perUnit: r.c * Math.max(r.h * r.w, r.oh * r.ow),
    limit,
  });
  const units = r.n * r.oh * owb;
  const pp = planePlanes(r, profile);
  if (samples.length === 1 && pp !== undefined && r.c % pp === 0 && r.n <= LOOP_BUDGET) {
    return { path: "plane", window: r, accumulate, pp };
  }
  const ow4 = r.ow / 4;
  // In place of the chunked reduction only (two dispatches either way; the serial one is one),
  // and on Mesa's CPU adapters only, where it was measured: in Chromium's SwiftShader a row of 8
  // or more vec4s loses the device (~2 minutes, then "device lost").
  const serial = samples.length === 1 && units <= serialUnits;
  if (
    profile.mesaCpu && samples.length === 1 && !serial && r.w % 4 === 0 && r.ow % 4 === 0 &&
    ow4 <= TILE_CX &&
    profile.limits.minStorageBufferOffsetAlignment % 16 === 0 && r.c <= 65535 &&
    r.n <= LOOP_BUDGET
  ) {
    const ry = Math.min(bestRows(r.oh, 1, TILE_RY), r.oh);
    const bands = Math.ceil(r.oh / ry);
    const tile = { cx: ow4, ry, wg: Math.min(WG, Math.ceil(bands / 8) * 8) };
    return { path: "tile", window: r, accumulate, tile, bands };
  }
  if (serial) {
    return { path: "serial", window: r, accumulate, units };
  }
  const ranges: ChunkRange[] = [];
  let chunkOff = 0;
  for (const [b0, b1] of samples) {
    const chunks = Math.ceil(((b1 - b0) * r.oh * owb) / chunkUnits);
    ranges.push({ samples: [b0, b1], chunks, chunkOff });
    chunkOff += chunks;
  }
  if (chunkOff > LOOP_BUDGET) {
    throw new RangeError(`${op}: n * oh * ceil(ow / 4) = ${units} is too large`);
  }
  return { path: "chunked", window: r, accumulate, chunkUnits, chunks: chunkOff, ranges };
}
