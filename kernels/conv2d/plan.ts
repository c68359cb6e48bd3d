/**
 * Planning a convolution: {@linkcode planConv2d} turns a {@linkcode Conv2dProblem} (geometry,
 * storage types, fusions, options), an adapter's profile and a tuning table into a
 * {@linkcode ConvPlan}, a plain readonly value that says everything the runner (`index.ts`)
 * does: the path of each pass, the chunks of images, the scratch buffers to allocate, and the
 * steps to record, each naming the tensor or scratch range every operand binds (the GEMMs as
 * {@linkcode GemmStep}s: `StridedGemm` shapes). Pure: the same inputs give the same plan, on any
 * machine; tests plan for adapters they do not have. {@linkcode conv2dChoices} lists the
 * plans the autotuner may time for one pass, with the table entry that selects each.
 *
 * The decisions themselves (paths, chunking, col2im's splits) are `cost.ts`'s; the steps and
 * their GEMM builder, `steps.ts`'s. (Over 500 lines: the forward and backward planners and the
 * tuner's choices share the private helpers here; split them only together.)
 *
 * @module
 */

import type { AdapterProfile } from "../_adapter.ts";
import type { ActivationKind } from "../_activation_wgsl.ts";
import type { FloatDType } from "../_dtype.ts";
import { floatBytes } from "../_dtype.ts";
import type { Conv2dKernelOptions } from "../_types.ts";
import { convKey, type ConvPass, type TunedChoice } from "../autotune/table.ts";
import {
  chunkPlan,
  col2imForm,
  type Conv2dChunkPlan,
  directForward,
  directInputGrad,
  directWeightGrad,
  isPointwise,
  pointwiseBatched,
} from "./cost.ts";
import {
  type DirectConvPlan,
  type DirectConvTile,
  directWeightGradSplits,
  type DirectWeightGradTile,
  planDirectConv,
} from "./direct_plan.ts";
import {
  type Conv2dGeometry,
  type DirectConvShape,
  directShape,
  flippedShape,
} from "./geometry.ts";
import { batchedGemm, type ConvScratch, type ConvStep, type GemmStep, range } from "./steps.ts";

export type { ConvPass } from "../autotune/table.ts";
export type { ConvBuffer, ConvOperand, ConvScratch, ConvStep, GemmStep } from "./steps.ts";

/** Storage types of a call's tensors (an absent one is not bound). */
export interface Conv2dDTypes {
  /** The input's. */
  readonly x: FloatDType;
  /** The weight's. */
  readonly w: FloatDType;
  /** The bias's (forward, when there is one). */
  readonly b?: FloatDType | undefined;
  /** The output's (forward). */
  readonly y?: FloatDType | undefined;
  /** The output gradient's (backward). */
  readonly dy?: FloatDType | undefined;
  /** The input gradient's (backward, when computed). */
  readonly dx?: FloatDType | undefined;
  /** The weight gradient's (backward, when computed). */
  readonly dw?: FloatDType | undefined;
  /** The bias gradient's (backward, when computed). */
  readonly db?: FloatDType | undefined;
}

/** One call of a convolution, as the planner sees it. */
export interface Conv2dProblem {
  /** The convolution. */
  readonly geometry: Conv2dGeometry;
  /** The forward pass (`y`), or the backward passes whose outputs `dtypes` lists. */
  readonly call: "forward" | "backward";
  /** Storage types: `x`, `w`, `b?`, `y` (forward); `x`, `w`, `dy`, `dx?`, `dw?`, `db?`. */
  readonly dtypes: Conv2dDTypes;
  /** Forward: channels of y's images (default cOut) and the first one written (default 0). */
  readonly yChannels?: number;
  /** Forward: the first channel of y written. */
  readonly yChannelOffset?: number;
  /** Forward: activation fused into the store. */
  readonly activation?: ActivationKind | undefined;
  /** Backward: `dw` and `db` are accumulated (`+=`). */
  readonly accumulate?: boolean;
  /**
   * Backward: `dx` is accumulated (`+=`, the GEMM's beta 1), so that several convolutions of one
   * input sum their input gradients in place. Pointwise GEMM path only (a RangeError otherwise).
   */
  readonly accumulateDx?: boolean;
  /**
   * Backward: the call binds `xT`, x already permuted to `[cIn, n * oh * ow]` (shared by several
   * pointwise convolutions of one input); the weight gradient of the pointwise path then reads
   * it (when the images are one chunk; else x as without it: in place or permuted per chunk).
   */
  readonly permutedX?: boolean;
  /** Kernel options (chunk size, pointwise threshold, forced paths, GEMM tuning). */
  readonly options?: Conv2dKernelOptions;
}

/** What a pass runs: the direct kernel (with its blocking), im2col + GEMM, or batched GEMMs. */
export type ConvPassPlan =
  | { readonly path: "im2col" | "pointwise" }
  | { readonly path: "direct"; readonly tile: DirectConvTile | DirectWeightGradTile };

/**
 * A planned call: the passes' paths, chunks, scratch buffers and steps (plain data: no tensor,
 * no function, no `undefined` entry; it survives a JSON round trip).
 */
export interface ConvPlan {
  /** The convolution. */
  readonly geometry: Conv2dGeometry;
  /** The forward pass (forward calls). */
  readonly forward?: ConvPassPlan;
  /** The input gradient (backward calls with `dx`). */
  readonly inputGrad?: ConvPassPlan;
  /** The weight (and bias) gradient (backward calls with `dw`; `db` alone is a reduction). */
  readonly weightGrad?: ConvPassPlan;
  /** How the images are split. */
  readonly chunks: Conv2dChunkPlan;
  /** Scratch buffers to allocate: elements and storage type. */
  readonly scratch: { readonly [K in ConvScratch]?: readonly [number, FloatDType] };
  /** The steps, chunk by chunk. */
  readonly steps: readonly ConvStep[];
}

/** A tuning table as the planner reads it. */
export interface TuningLookup {
  /** The tuned choice of a problem key, if any. */
  get(key: string): TunedChoice | undefined;
}

/**
 * A pass's forced choice: the option, else the table's entry, else the cost model's; and whether
 * the direct kernel's blocking search may use output-channel groups (the table's entry, else
 * yes).
 */
function forced(
  problem: Conv2dProblem,
  pass: ConvPass,
  table: TuningLookup | undefined,
): { readonly options: Conv2dKernelOptions; readonly groups: boolean } {
  const o = problem.options ?? {};
  if (o.direct !== undefined || table === undefined) return { options: o, groups: true };
  const e = table.get(convKey(problem.geometry, pass));
  if (e?.op !== "conv2d") return { options: o, groups: true };
  return { options: { ...o, direct: e.direct }, groups: e.groups ?? true };
}

/**
 * The direct kernel's plan with the blocking the choice asks for: the plain search's
 * (`groups: false`: no output-channel groups) instead of the default one.
 */
function blocking(
  plan: DirectConvPlan | undefined,
  shape: DirectConvShape,
  groups: boolean,
): DirectConvPlan | undefined {
  return plan && !groups ? planDirectConv(shape, false) ?? plan : plan;
}

/** The chunks `[n0, nb, index]` of a chunk plan. */
function chunksOf(g: Conv2dGeometry, c: Conv2dChunkPlan): [number, number, number][] {
  const out: [number, number, number][] = [];
  for (let n0 = 0, i = 0; n0 < g.n; n0 += c.imagesPerChunk, i++) {
    out.push([n0, Math.min(c.imagesPerChunk, g.n - n0), i]);
  }
  return out;
}

/**
 * Plans one call of a convolution (see the module documentation): the forward pass, or the
 * backward passes whose outputs the problem's `dtypes` list. `table` (the adapter's tuning
 * table, or `undefined` for the cost model alone) decides the paths that neither the options nor
 * the geometry force.
 *
 * @returns The plan: paths, chunks, scratch buffers and steps.
 * @throws {RangeError} when one image does not fit a binding, or col2im or a direct kernel
 * exceeds its budgets.
 * @example
 * ```ts
 * import { adapterProfile } from "../_adapter.ts";
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { conv2dGeometry } from "./geometry.ts";
 * import { planConv2d } from "./plan.ts";
 * const profile = adapterProfile(await getGpu());
 * const geometry = conv2dGeometry({ n: 256, cIn: 6, h: 14, w: 14, cOut: 16, kernel: 5 });
 * const plan = planConv2d({ geometry, call: "forward", dtypes: { x: "f32", w: "f32", y: "f32" } }, profile, undefined);
 * console.log(plan.forward?.path); // "direct" on llvmpipe
 * ```
 */
export function planConv2d(
  problem: Conv2dProblem,
  profile: AdapterProfile,
  table: TuningLookup | undefined,
): ConvPlan {
  return problem.call === "forward"
    ? planForward(problem, profile, table)
    : planBackward(problem, profile, table);
}

function planForward(
  problem: Conv2dProblem,
  profile: AdapterProfile,
  table: TuningLookup | undefined,
): ConvPlan {
  const g = problem.geometry, dt = problem.dtypes, o = problem.options ?? {};
  const yC = problem.yChannels ?? g.cOut, off = problem.yChannelOffset ?? 0;
  const P = g.oh * g.ow, X = g.cIn * g.h * g.w;
  const xb = floatBytes(dt.x), yb = floatBytes(dt.y ?? "f32");
  // The y range of images [n0, n0 + nb): from channel `off` of image n0 to channel off + cOut of
  // image n0 + nb - 1 (image stride yC * P).
  const y = (n0: number, nb: number) =>
    range("y", (n0 * yC + off) * P, ((nb - 1) * yC + g.cOut) * P);
  const x = (n0: number, nb: number) => range("x", n0 * X, nb * X);
  const f = forced(problem, "forward", table);
  const direct = blocking(directForward(profile, g, f.options), directShape(g, g.n), f.groups);
  if (direct) {
    // An f16 y over several input-channel dispatches sums into an f32 scratch of cOut channels.
    const scratch = dt.y === "f16" && direct.tile.ci < g.cIn;
    const chunks = chunkPlan(profile, g, {
      kernel: o,
      im2col: false,
      yChannels: yC,
      bytes: { col: 0, x: xb, y: scratch ? 4 : yb },
    });
    const steps = chunksOf(g, chunks).map(([n0, nb]): ConvStep => ({
      kind: "direct",
      shape: directShape(g, nb),
      tile: direct.tile,
      flip: false,
      x: x(n0, nb),
      y: y(n0, nb),
      bias: dt.b !== undefined,
      ...(problem.activation ? { activation: problem.activation } : {}),
      yChannels: yC,
    }));
    return {
      geometry: g,
      forward: { path: "direct", tile: direct.tile },
      chunks,
      scratch: {},
      steps,
    };
  }
  const pointwise = isPointwise(g, o);
  // The im2col buffer takes x's storage type.
  const chunks = chunkPlan(profile, g, {
    kernel: o,
    im2col: !pointwise,
    yChannels: yC,
    bytes: { col: xb, x: xb, y: yb },
  });
  const G = g.groups, cOutG = g.cOut / G, K = (g.cIn / G) * g.kh * g.kw;
  const w = range("w", 0, g.cOut * K);
  const b = dt.b ? range("b", 0, g.cOut) : undefined;
  const steps: ConvStep[] = [];
  for (const [n0, nb] of chunksOf(g, chunks)) {
    const gemm = (s: GemmStep): ConvStep => ({ kind: "gemm", gemm: s, tuning: o.gemm ?? {} });
    if (pointwise) {
      // y = W . x: batched over images, or for small images one GEMM over the chunk, x read as
      // [cIn, nb * P] and y written as [cOut, nb * P] (column j = image * P + pixel, NCHW).
      const batched = pointwiseBatched(g);
      steps.push(gemm(batchedGemm({
        m: g.cOut,
        n: batched ? P : nb * P,
        k: g.cIn,
        batch: batched ? nb : 1,
        a: [w, 0],
        b: [x(n0, nb), batched ? g.cIn * P : 0],
        c: [y(n0, nb), batched ? yC * P : 0],
        ...(batched ? {} : { segmentB: [P, g.cIn * P], segment: [P, yC * P] }),
        bias: b && [b, 0],
        activation: problem.activation,
      })));
      continue;
    }
    const cols = nb * P;
    const col = range("col", 0, g.cIn * g.kh * g.kw * cols);
    steps.push({ kind: "im2col", nb, x: x(n0, nb), col });
    // y (NCHW) = W_g . col_g per group; GEMM column j = image * P + pixel.
    steps.push(gemm(batchedGemm({
      m: cOutG,
      n: cols,
      k: K,
      batch: G,
      a: [w, cOutG * K],
      b: [col, K * cols],
      c: [y(n0, nb), cOutG * P],
      segment: [P, yC * P],
      bias: b && [b, cOutG],
      activation: problem.activation,
    })));
  }
  const scratch = pointwise ? {} : { col: [chunks.colElements, dt.x] as const };
  return {
    geometry: g,
    forward: { path: pointwise ? "pointwise" : "im2col" },
    chunks,
    scratch,
    steps,
  };
}

function planBackward(
  problem: Conv2dProblem,
  profile: AdapterProfile,
  table: TuningLookup | undefined,
): ConvPlan {
  const g = problem.geometry, dt = problem.dtypes, o = problem.options ?? {};
  const pointwise = isPointwise(g, o);
  // The direct kernels take what they can; the rest goes through im2col + GEMM.
  // (db alone is a plain reduction of dy.)
  // (The weight-gradient kernel's blocking has no output-channel groups: `groups` is moot.)
  const directW = dt.dw
    ? directWeightGrad(profile, g, forced(problem, "weightGrad", table).options)
    : undefined;
  const fx = forced(problem, "inputGrad", table);
  const directX = dt.dx
    ? blocking(directInputGrad(profile, g, fx.options), flippedShape(g, g.n), fx.groups)
    : undefined;
  const gemmW = !directW && dt.dw !== undefined;
  const gemmX = !directX && dt.dx !== undefined;
  const im2col = (gemmW || gemmX) && !pointwise;
  // The im2col buffer holds x's columns (for dW) and dcol (for dx). dcol stays f32 even for an
  // f16 dx: col2im sums each element's taps in f32 and rounds once (an f16 dcol would round every
  // tap first, ~2x the error, and break "f16 = the f32 path rounded once per layer"). Only x's
  // columns alone (no dx through the buffer) are stored f16, which is exact.
  const colDType: FloatDType = !gemmX && dt.x === "f16" ? "f16" : "f32";
  const xb = Math.max(floatBytes(dt.x), dt.dx ? floatBytes(dt.dx) : 0);
  // An f16 dx from several input-channel dispatches of the direct kernel sums into an f32
  // scratch of dx's size.
  const dxScratch = directX !== undefined && dt.dx === "f16" && directX.tile.ci < g.cOut;
  const chunks = chunkPlan(profile, g, {
    kernel: o,
    im2col,
    bytes: { col: floatBytes(colDType), x: dxScratch ? 4 : xb, y: floatBytes(dt.dy ?? "f32") },
  });
  const P = g.oh * g.ow, X = g.cIn * g.h * g.w, Y = g.cOut * P;
  const G = g.groups, cOutG = g.cOut / G, K = (g.cIn / G) * g.kh * g.kw;
  const accumulate = problem.accumulate ?? false;
  const accumulateDx = problem.accumulateDx ?? false;
  if (accumulateDx && dt.dx && (!gemmX || !pointwise)) {
    throw new RangeError(
      "conv2d: accumulateDx needs the pointwise GEMM path (a 1x1, stride-1, unpadded, ungrouped " +
        "convolution, not forced direct)",
    );
  }
  // x permuted by the caller: one chunk of images only (its xT holds every image).
  const sharedXT = (problem.permutedX ?? false) && gemmW && pointwise &&
    chunks.imagesPerChunk >= g.n;
  const w = range("w", 0, g.cOut * K);
  // dy (and a pointwise x) read in place, in segments, or permuted first (see readsInPlace).
  const inPlace = readsInPlace(P, profile, o);
  const needT = !inPlace && (gemmW || (gemmX && !pointwise));
  const form = gemmX && !pointwise ? col2imForm(g, dt.dx!) : undefined;
  const steps: ConvStep[] = [];
  const gemm = (s: GemmStep): ConvStep => ({ kind: "gemm", gemm: s, tuning: o.gemm ?? {} });
  for (const [n0, nb, chunk] of chunksOf(g, chunks)) {
    const cols = nb * P;
    const acc = accumulate || chunk > 0;
    const dy = range("dy", n0 * Y, nb * Y);
    const x = range("x", n0 * X, nb * X);
    const dx = range("dx", n0 * X, nb * X);
    if (directW) {
      const shape = directShape(g, nb);
      const tile = directW.tile;
      steps.push({
        kind: "directWeightGrad",
        shape,
        tile,
        split: directWeightGradSplits(shape, tile, profile),
        x,
        dy,
        dw: true,
        db: dt.db !== undefined,
        accumulate: acc,
      });
    }
    if (directX) {
      steps.push({
        kind: "direct",
        shape: flippedShape(g, nb),
        tile: directX.tile,
        flip: true,
        x: dy,
        y: dx,
        bias: false,
        yChannels: g.cIn,
      });
    }
    if (dt.db && !directW) {
      const db = range("db", 0, g.cOut);
      steps.push({
        kind: "reduce",
        y: db,
        x: dy,
        outer: nb,
        mid: g.cOut,
        inner: P,
        accumulate: acc,
      });
    }
    if (!gemmW && !gemmX) continue;
    // dy [nb, cOut, P] is read as [cOut, cols] (column j = image * P + pixel): in place, along k
    // in segments by the weight gradient (segmentKA), along n by dcol (segmentB); or from its
    // copy dyT permuted to [cOut, cols].
    const dySegments = [P, g.cOut * P] as const;
    const dyT = range("dyT", 0, g.cOut * cols);
    if (needT) steps.push({ kind: "permute", src: dy, dst: dyT, shape: { nb, c: g.cOut, len: P } });
    const dyK = inPlace
      ? { a: dy, group: cOutG * P, seg: { segmentKA: dySegments } }
      : { a: dyT, group: cOutG * cols, seg: {} };
    const col = range("col", 0, g.cIn * g.kh * g.kw * cols);
    if (gemmW) {
      const dw = range("dw", 0, g.cOut * K);
      // dW_g (+)= dy_g [cOutG, cols] . col_g^T (col_g stored [K, cols]).
      if (pointwise) {
        // x [nb, cIn, P] read as [cIn, cols] is pointwise im2col: in place, in k segments, or
        // permuted to xT (the caller's, or this plan's).
        const xT = range("xT", 0, g.cIn * cols);
        const xInPlace = inPlace && !sharedXT;
        if (!inPlace && !sharedXT) {
          steps.push({ kind: "permute", src: x, dst: xT, shape: { nb, c: g.cIn, len: P } });
        }
        steps.push(gemm(batchedGemm({
          m: g.cOut,
          n: g.cIn,
          k: cols,
          batch: 1,
          transB: true,
          beta: acc ? 1 : 0,
          a: [dyK.a, 0],
          b: xInPlace ? [x, 0] : [xT, 0],
          c: [dw, 0],
          ...dyK.seg,
          ...(xInPlace ? { segmentKB: [P, g.cIn * P] as const } : {}),
        })));
      } else {
        steps.push({ kind: "im2col", nb, x, col });
        steps.push(gemm(batchedGemm({
          m: cOutG,
          n: K,
          k: cols,
          batch: G,
          transB: true,
          beta: acc ? 1 : 0,
          a: [dyK.a, dyK.group],
          b: [col, K * cols],
          c: [dw, cOutG * K],
          ...dyK.seg,
        })));
      }
    }
    if (gemmX) {
      if (pointwise) {
        // dx = W^T . dy (W stored [cOut, cIn] = [k, m]): batched over images, or for small
        // images one GEMM over the chunk, dy read as [cOut, nb * P], dx written as [cIn, nb * P].
        const batched = pointwiseBatched(g);
        steps.push(gemm(batchedGemm({
          m: g.cIn,
          n: batched ? P : cols,
          k: g.cOut,
          batch: batched ? nb : 1,
          transA: true,
          beta: accumulateDx ? 1 : 0,
          a: [w, 0],
          b: [dy, batched ? g.cOut * P : 0],
          c: [dx, batched ? g.cIn * P : 0],
          ...(batched ? {} : { segmentB: [P, g.cOut * P], segment: [P, g.cIn * P] }),
        })));
      } else {
        // dcol_g [K, cols] = W_g^T . dy_g (W_g stored [cOutG, K] = [k, m]), then col2im.
        steps.push(gemm(batchedGemm({
          m: K,
          n: cols,
          k: cOutG,
          batch: G,
          transA: true,
          a: [w, cOutG * K],
          b: inPlace ? [dy, cOutG * P] : [dyT, cOutG * cols],
          c: [col, K * cols],
          ...(inPlace ? { segmentB: dySegments } : {}),
        })));
        steps.push({ kind: "col2im", nb, col, dx, form: form! });
      }
    }
  }
  const scratch: { [K in ConvScratch]?: readonly [number, FloatDType] } = {};
  if (needT) scratch.dyT = [chunks.imagesPerChunk * g.cOut * P, dt.dy ?? "f32"];
  if (im2col) scratch.col = [chunks.colElements, colDType];
  if (gemmW && pointwise && !sharedXT && !inPlace) {
    scratch.xT = [chunks.imagesPerChunk * g.cIn * P, dt.x];
  }
  const path = (direct: { tile: DirectConvTile | DirectWeightGradTile } | undefined) =>
    direct
      ? { path: "direct" as const, tile: direct.tile }
      : { path: pointwise ? "pointwise" as const : "im2col" as const };
  return {
    geometry: g,
    ...(dt.dx ? { inputGrad: path(directX) } : {}),
    ...(dt.dw ? { weightGrad: path(directW) } : {}),
    chunks,
    scratch,
    steps,
  };
}

/**
 * Whether conv2d's backward GEMMs read dy (and a pointwise convolution's x) in place, as
 * `[channels, images * pixels]` in segments of an output plane's `pixels`, rather than from
 * copies permuted to that layout: always in the shared-memory family (GPUs); in the register
 * family (CPU adapters, or forced by `options.gemm`) when `pixels` is a multiple of 4, so that
 * the segments are whole vec4s (scalar loads of odd segments cost more than the permutation:
 * MobileNet's 3x3-pixel weight gradient, 78 ms in place vs 53 ms permuted on llvmpipe). A
 * tuning table's family for one GEMM does not enter: both families read either layout.
 *
 * @returns True to read in place.
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { readsInPlace } from "./plan.ts";
 * readsInPlace(9, WEBGPU_DEFAULT_PROFILE); // true: a GPU's shared-memory kernels
 * readsInPlace(9, { ...WEBGPU_DEFAULT_PROFILE, isCpu: true }); // false: 9 pixels, scalar loads
 * ```
 */
export function readsInPlace(
  pixels: number,
  profile: AdapterProfile,
  options: Conv2dKernelOptions = {},
): boolean {
  const variant = options.gemm?.variant ?? (profile.isCpu ? "register" : "shared");
  return variant === "shared" || pixels % 4 === 0;
}

/** One plan the autotuner may time, and the table entry that selects it. */
export interface Conv2dChoice {
  /** The table entry (`conv2d`) that makes the planner choose this plan for the pass. */
  readonly choice: Extract<TunedChoice, { op: "conv2d" }>;
  /** The plan. */
  readonly plan: ConvPlan;
}

/** The choices the tuner tries, in order: im2col, the direct kernel, its plain blocking. */
const CHOICES: readonly Extract<TunedChoice, { op: "conv2d" }>[] = [
  { op: "conv2d", direct: false },
  { op: "conv2d", direct: true, groups: true },
  { op: "conv2d", direct: true, groups: false },
];

/**
 * The plans the autotuner may time for one pass of a problem, each with the table entry that
 * selects it: im2col + GEMM (or batched GEMMs), the direct kernel where it can run, and the
 * direct kernel with the plain blocking (no output-channel groups) where that differs from the
 * default one. Each plan forces its choice on every pass, regardless of the cost model, of the
 * problem's `direct` option and of any table. `groups` is stored only where both direct
 * blockings are listed.
 *
 * @returns The choices, distinct in the pass's plan (the cost model's among them).
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { conv2dGeometry } from "./geometry.ts";
 * import { conv2dChoices } from "./plan.ts";
 * const geometry = conv2dGeometry({ n: 1, cIn: 32, h: 8, w: 8, cOut: 32, kernel: 3, padding: 1 });
 * const problem = { geometry, call: "forward", dtypes: { x: "f32", w: "f32", y: "f32" } } as const;
 * conv2dChoices(problem, "forward", WEBGPU_DEFAULT_PROFILE).map((c) => c.choice.groups); // [undefined, true, false]
 * ```
 */
export function conv2dChoices(
  problem: Conv2dProblem,
  pass: ConvPass,
  profile: AdapterProfile,
): Conv2dChoice[] {
  const { direct: _, ...options } = problem.options ?? {};
  const out: { choice: Extract<TunedChoice, { op: "conv2d" }>; plan: ConvPlan; at: string }[] = [];
  for (const choice of CHOICES) {
    let plan: ConvPlan;
    try {
      plan = planConv2d({ ...problem, options }, profile, { get: () => choice });
    } catch (err) {
      if (choice.direct && err instanceof RangeError) continue; // the direct kernel's budgets
      throw err;
    }
    const at = JSON.stringify(plan[pass] ?? null);
    if (plan[pass] !== undefined && !out.some((c) => c.at === at)) out.push({ choice, plan, at });
  }
  const both = out.filter((c) => c.choice.direct).length > 1;
  return out.map(({ choice, plan }) => ({
    choice: choice.direct && !both ? { op: "conv2d", direct: true } : choice,
    plan,
  }));
}
