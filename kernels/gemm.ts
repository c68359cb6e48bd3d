/**
 * GEMM: `C = alpha * op(A) op(B) + beta * C (+ bias)` with transposes and batches,
 * optionally through an activation fused into the store: the engine behind linear and conv2d. Also `sumRows`, the column sums that give linear's bias
 * gradient.
 *
 * Every operand (A, B, C, bias; x and y of the reductions) is stored as f32 or f16, each on its
 * own (see `_dtype.ts`): the kernels convert f16 on load, multiply and accumulate in f32 and
 * round once when storing an f16 C. Intermediate results (split-K partial sums, k-pass sums for
 * an f16 C, partial reductions) stay f32.
 *
 * Two kernel families, chosen per adapter:
 * - **register** (CPU adapters such as llvmpipe): no shared memory and no barriers. Each thread
 *   computes a `TM x TN` block of C in registers straight from global memory, loading vec4s along
 *   whichever dimension of each operand is contiguous (when it is a multiple of 4), 4 k-steps at a
 *   time. llvmpipe runs invocations as SIMD lanes and loads per lane, so what counts is the
 *   number of loads per FMA: big register blocks (8x8 to 16x16) win.
 * - **shared** (real GPUs): 64x64 workgroup tiles staged through workgroup memory in 16-deep
 *   k-slices, 256 threads each owning a 4x4 block.
 *
 * Long reductions over few output tiles are split over k (`split-K`): partial products go to a
 * scratch buffer and an epilogue kernel sums them. Skinny products (few columns) are computed
 * transposed, `C^T = op(B)^T op(A)^T`, so that SIMD lanes run along the long side; C is stored
 * as vec4s when 4 consecutive columns are contiguous.
 *
 * llvmpipe caveat: gallivm stops the loops of one invocation after 65535 iterations in total,
 * silently. Every kernel here bounds its loop trip counts (k is cut into passes, reductions
 * into splits).
 *
 * @module
 */

import {
  type Binding,
  formatShape,
  type Gpu,
  grid1d,
  type Shape,
  type Tensor,
} from "../gpu/mod.ts";
import { activationWgsl, checkActivationKind } from "./_activation_wgsl.ts";
import { tunedGemm } from "./_autotune_table.ts";
import {
  dtypeTag,
  type FloatDType,
  floatDTypes,
  loadF32,
  storageType,
  storeAs,
  wgslEnable,
} from "./_dtype.ts";
import { ParamsWriter } from "./_params.ts";
import type { ActivationKind } from "./_activation_wgsl.ts";
import { bindingRange, maxBindingElements, type TensorRange } from "./_binding.ts";
import type { GemmTuning, GemmVariant, StridedGemm } from "./_types.ts";

export type { GemmTuning, GemmVariant, StridedGemm } from "./_types.ts";

// ------------------------------------------------------------------------ public API ----

/** Dimensions and options of {@linkcode gemm}. */
export interface GemmParams {
  /** Rows of op(A) and C. */
  readonly m: number;
  /** Columns of op(B) and C. */
  readonly n: number;
  /** Columns of op(A) = rows of op(B): the reduced dimension. */
  readonly k: number;
  /** A is stored `[k, m]` when true, else `[m, k]`. */
  readonly transA?: boolean;
  /** B is stored `[n, k]` when true, else `[k, n]`. */
  readonly transB?: boolean;
  /** Number of independent products; default 1. Batched operands are contiguous `[batch, ...]`. */
  readonly batch?: number;
  /** Scale of the product; default 1. */
  readonly alpha?: number;
  /** Scale of the prior C; default 0 (C is then never read, so it may hold garbage or NaN). */
  readonly beta?: number;
  /**
   * Activation applied to every element of C as it is stored, after alpha, beta and bias:
   * `C = f(alpha * op(A) op(B) + beta * C + bias)`, bit for bit what `activationForward` computes
   * on the unfused result. Default: none.
   */
  readonly activation?: ActivationKind;
}

/**
 * Validates GEMM dimensions (and operand shapes, when given) and returns C's shape:
 * `[m, n]`, or `[batch, m, n]` when `batch` is given.
 *
 * Operand shapes are accepted when their element counts match (`[batch * m, k]` for a batched
 * A is fine) and, for 2-D and 3-D shapes, when their trailing dimensions match.
 *
 * @throws {RangeError} for non-integer or negative dimensions, a non-finite alpha/beta, or an
 * unknown activation.
 * @throws {TypeError} when an operand's shape does not fit, naming both shapes.
 * @example
 * ```ts
 * import { checkGemm } from "@modern-cnn/webgpu/kernels";
 * checkGemm({ m: 128, n: 10, k: 84 }, { a: [128, 84], b: [84, 10] }); // [128, 10]
 * checkGemm({ m: 4, n: 5, k: 6, batch: 3, transB: true }); // [3, 4, 5]
 * ```
 */
export function checkGemm(
  p: GemmParams,
  shapes: { a?: Shape; b?: Shape; c?: Shape; bias?: Shape } = {},
): Shape {
  for (const key of ["m", "n", "k"] as const) {
    const v = p[key];
    if (!Number.isInteger(v) || v < 0) {
      throw new RangeError(`gemm: ${key} must be an integer >= 0, got ${v}`);
    }
  }
  const batch = p.batch ?? 1;
  if (!Number.isInteger(batch) || batch < 1) {
    throw new RangeError(`gemm: batch must be an integer >= 1, got ${p.batch}`);
  }
  for (const key of ["alpha", "beta"] as const) {
    const v = p[key];
    if (v !== undefined && !Number.isFinite(v)) {
      throw new RangeError(`gemm: ${key} must be finite, got ${v}`);
    }
  }
  checkActivationKind("gemm", p.activation);
  const { m, n, k } = p;
  const aShape = p.transA ? [k, m] : [m, k];
  const bShape = p.transB ? [n, k] : [k, n];
  const out = p.batch === undefined ? [m, n] : [batch, m, n];
  const fits = (name: string, actual: Shape | undefined, expected: number[]) => {
    if (!actual) return;
    const want = batch === 1 ? expected : [batch, ...expected];
    const count = want.reduce((s, d) => s * d, 1);
    const got = actual.reduce((s, d) => s * d, 1);
    const trailing = actual.length >= 2 && actual.length <= 3 &&
      actual[actual.length - 1] === want[want.length - 1] &&
      (actual.length === 2 || actual[1] === want[want.length - 2]);
    if (got !== count || (actual.length >= 2 && actual.length <= 3 && !trailing)) {
      throw new TypeError(
        `gemm: ${name} has shape ${formatShape(actual)}, expected ${formatShape(want)} ` +
          `(m=${m}, n=${n}, k=${k}, batch=${batch}, transA=${!!p.transA}, transB=${!!p.transB})`,
      );
    }
  };
  fits("a", shapes.a, aShape);
  fits("b", shapes.b, bShape);
  fits("c", shapes.c, [m, n]);
  if (shapes.bias) {
    if (shapes.bias.length !== 1 || shapes.bias[0] !== n) {
      throw new TypeError(
        `gemm: bias has shape ${formatShape(shapes.bias)}, expected [${n}] (one per column of C)`,
      );
    }
  }
  return out;
}

/**
 * Records `C = alpha * op(A) op(B) + beta * C (+ bias)`, batched over contiguous `[batch, ...]`
 * operands. `op(A)` is `[m, k]` (A stored `[k, m]` when `transA`), `op(B)` is `[k, n]` (B
 * stored `[n, k]` when `transB`). `bias` (`[n]`) is broadcast over rows (and batches). With
 * `activation`, `C = f(alpha * op(A) op(B) + beta * C + bias)` (a fused epilogue).
 *
 * C is overwritten when `beta` is 0 (the default), else accumulated as `beta * C + ...`.
 *
 * Each of A, B, C and bias may be f32 or f16 (independently); the products are accumulated in
 * f32 and an f16 C is rounded once, as it is stored.
 *
 * @throws {RangeError} for bad dimensions. @throws {TypeError} when an operand does not fit
 * them, or is not an f32/f16 tensor.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { gemm } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * // A linear layer: y[128, 10] = x[128, 84] . w[10, 84]^T + b[10]
 * const x = gpu.zeros([128, 84]), w = gpu.zeros([10, 84]), b = gpu.zeros([10]);
 * const y = gpu.empty([128, 10]);
 * gemm({ c: y, a: x, b: w, bias: b }, { m: 128, n: 10, k: 84, transB: true });
 * ```
 */
export function gemm(
  io: { c: Tensor; a: Tensor; b: Tensor; bias?: Tensor },
  p: GemmParams & GemmTuning,
): void {
  checkGemm(p, { a: io.a.shape, b: io.b.shape, c: io.c.shape, bias: io.bias?.shape });
  floatDTypes("gemm", io);
  const { m, n, k } = p;
  const batch = p.batch ?? 1;
  const gpu = io.c.gpu;
  if (m === 0 || n === 0) return;
  const limit = maxBindingElements(gpu);
  // Chunk over the batch when an operand is larger than one binding may be.
  const per = Math.max(m * k, k * n, m * n);
  if (per > limit) {
    throw new RangeError(
      `gemm: one ${m}x${k} by ${k}x${n} product needs ${per * 4} bytes in one binding, more than ` +
        `the device's maxStorageBufferBindingSize (${gpu.limits.maxStorageBufferBindingSize})`,
    );
  }
  const chunk = Math.max(1, Math.min(batch, Math.floor(limit / per), 65535));
  for (let b0 = 0; b0 < batch; b0 += chunk) {
    const nb = Math.min(chunk, batch - b0);
    gemmStrided(gpu, {
      m,
      n,
      k,
      batch: nb,
      transA: !!p.transA,
      transB: !!p.transB,
      alpha: p.alpha ?? 1,
      beta: p.beta ?? 0,
      a: bindingRange(io.a, b0 * m * k, nb * m * k),
      b: bindingRange(io.b, b0 * k * n, nb * k * n),
      c: bindingRange(io.c, b0 * m * n, nb * m * n),
      lda: p.transA ? m : k,
      ldb: p.transB ? k : n,
      ldc: n,
      strideA: m * k,
      strideB: k * n,
      strideC: m * n,
      bias: io.bias ? bindingRange(io.bias, 0, n) : undefined,
      biasMode: io.bias ? "col" : "none",
      activation: p.activation,
    }, p);
  }
}

/**
 * Records column sums `y[cols] = sum over rows of x[rows, cols]` (or `+=` when `accumulate`):
 * linear's bias gradient from `dy[batch, out]`. `x` and `y` are f32 or f16 each (sums in f32).
 *
 * @throws {RangeError} for bad dimensions. @throws {TypeError} when `x` or `y` do not fit them,
 * or are not f32/f16 tensors.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { sumRows } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const dy = gpu.zeros([128, 10]), db = gpu.empty([10]);
 * sumRows({ y: db, x: dy }, { rows: 128, cols: 10 });
 * ```
 */
export function sumRows(
  io: { y: Tensor; x: Tensor },
  p: { rows: number; cols: number; accumulate?: boolean },
): void {
  for (const key of ["rows", "cols"] as const) {
    if (!Number.isInteger(p[key]) || p[key] < 0) {
      throw new RangeError(`sumRows: ${key} must be an integer >= 0, got ${p[key]}`);
    }
  }
  if (io.x.size !== p.rows * p.cols) {
    throw new TypeError(
      `sumRows: x has shape ${formatShape(io.x.shape)}, expected [${p.rows}, ${p.cols}]`,
    );
  }
  if (io.y.size !== p.cols) {
    throw new TypeError(`sumRows: y has shape ${formatShape(io.y.shape)}, expected [${p.cols}]`);
  }
  floatDTypes("sumRows", io);
  if (p.cols === 0) return;
  const limit = maxBindingElements(io.x.gpu);
  if (p.rows * p.cols > limit) {
    // Sum row blocks that fit one binding, accumulating after the first.
    const rowsPer = Math.max(1, Math.floor(limit / p.cols));
    for (let r0 = 0; r0 < p.rows; r0 += rowsPer) {
      const nr = Math.min(rowsPer, p.rows - r0);
      reduceStrided(io.x.gpu, {
        y: bindingRange(io.y, 0, p.cols),
        x: bindingRange(io.x, r0 * p.cols, nr * p.cols),
        outer: nr,
        mid: p.cols,
        inner: 1,
        accumulate: (p.accumulate ?? false) || r0 > 0,
      });
    }
    return;
  }
  reduceStrided(io.x.gpu, {
    y: bindingRange(io.y, 0, p.cols),
    x: bindingRange(io.x, 0, p.rows * p.cols),
    outer: p.rows,
    mid: p.cols,
    inner: 1,
    accumulate: p.accumulate ?? false,
  });
}

// ------------------------------------------------------------------- strided GEMM ----

/**
 * Records a {@linkcode StridedGemm} (the common engine of `gemm` and `conv2d`). The tensors of
 * `a`, `b`, `c` and `bias` are f32 or f16 each; arithmetic is f32, an f16 C is rounded once.
 *
 * @throws {TypeError} when an operand's tensor is not f32/f16 (or f16 without `shader-f16`).
 * @throws {RangeError} for an unknown activation or a grid beyond the device's limits.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { bindingRange } from "./_binding.ts";
 * import { gemmStrided } from "./gemm.ts";
 * const gpu = await getGpu();
 * const a = gpu.zeros([4, 3]), b = gpu.zeros([3, 5]), c = gpu.empty([4, 5]);
 * gemmStrided(gpu, {
 *   m: 4, n: 5, k: 3, batch: 1, transA: false, transB: false, alpha: 1, beta: 0,
 *   a: bindingRange(a, 0, 12), b: bindingRange(b, 0, 15), c: bindingRange(c, 0, 20),
 *   lda: 3, ldb: 5, ldc: 5, strideA: 0, strideB: 0, strideC: 0, biasMode: "none",
 * });
 * ```
 */
export function gemmStrided(gpu: Gpu, g: StridedGemm, tuning: GemmTuning = {}): void {
  checkActivationKind("gemm", g.activation);
  floatDTypes("gemm", { a: g.a.tensor, b: g.b.tensor, c: g.c.tensor, bias: g.bias?.tensor });
  if (g.m === 0 || g.n === 0 || g.batch === 0) return;
  // Nothing forced: the autotuner's choice for this problem on this adapter, if any.
  tuning = tunedGemm(gpu, g, tuning);
  const variant = variantOf(gpu, tuning);
  const maxWg = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (g.batch > maxWg) throw new RangeError(`gemm: batch ${g.batch} exceeds ${maxWg}`);
  // Bound the k-loop of one dispatch (see MAX_K_REGISTER): longer reductions run as sequential
  // passes over k-ranges, each after the first adding to C (beta = 1, no bias); only the last
  // one applies the activation. An f16 C is not used as the accumulator: the passes sum into an
  // f32 scratch (passesViaScratch).
  const kPass = passK(g.k, variant);
  if (
    kPass < g.k && g.c.tensor.dtype === "f16" && passesViaScratch(gpu, g, variant, tuning, kPass)
  ) {
    return;
  }
  if (kPass < g.k) {
    for (let k0 = 0, pass = 0; k0 < g.k; k0 += kPass, pass++) {
      const kLen = Math.min(kPass, g.k - k0);
      gemmPass(
        gpu,
        {
          ...g,
          ..._kSlice(g, k0, kLen),
          beta: pass === 0 ? g.beta : 1,
          bias: pass === 0 ? g.bias : undefined,
          biasMode: pass === 0 ? g.biasMode : "none",
          activation: k0 + kLen >= g.k ? g.activation : undefined,
        },
        variant,
        tuning,
      );
    }
    return;
  }
  gemmPass(gpu, g, variant, tuning);
}

/** The part of `g`'s reduction over `k` in `[k0, k0 + kLen)`: shorter k, A and B moved along k. */
function _kSlice(
  g: StridedGemm,
  k0: number,
  kLen: number,
): Pick<StridedGemm, "k" | "a" | "b"> {
  return {
    k: kLen,
    a: { ...g.a, base: g.a.base + k0 * (g.transA ? g.lda : 1) },
    b: { ...g.b, base: g.b.base + k0 * (g.transB ? 1 : g.ldb) },
  };
}

/**
 * The k-passes of a long reduction with an f16 C: the passes sum raw products into an f32
 * scratch `[batch, m, n]` (so that the partial sums are not rounded to f16 between passes),
 * then the split-K epilogue applies alpha, beta, bias, the activation and C's mapping, rounding
 * once. Returns false (nothing recorded) when the scratch does not fit one binding; the caller
 * then accumulates in C itself.
 */
function passesViaScratch(
  gpu: Gpu,
  g: StridedGemm,
  variant: GemmVariant,
  tuning: GemmTuning,
  kPass: number,
): boolean {
  const total = g.batch * g.m * g.n;
  if (total > maxBindingElements(gpu)) return false;
  const scratch = gpu.empty([total]);
  for (let k0 = 0, pass = 0; k0 < g.k; k0 += kPass, pass++) {
    const kLen = Math.min(kPass, g.k - k0);
    gemmPass(
      gpu,
      {
        ...g,
        ..._kSlice(g, k0, kLen),
        alpha: 1,
        beta: pass === 0 ? 0 : 1,
        c: bindingRange(scratch, 0, total),
        ldc: g.n,
        ldcCol: 1,
        strideC: g.m * g.n,
        segment: undefined,
        segmentStride: undefined,
        bias: undefined,
        biasMode: "none",
        activation: undefined,
      },
      variant,
      tuning,
    );
  }
  dispatchEpilogue(gpu, g, scratch, 1);
  scratch.dispose();
  return true;
}

/**
 * Most k per register-kernel dispatch. llvmpipe (gallivm) caps the loop iterations of one
 * invocation at 65535 in total and silently skips the rest, so a k-loop (4 k per iteration)
 * must stay well below that. Harmless elsewhere.
 */
const MAX_K_REGISTER = 4 * 60000;
/** Most k per shared-memory-kernel dispatch (about 25 loop iterations per 16 k). */
const MAX_K_SHARED = 32768;

/** The kernel family of `tuning`, or the adapter's default. */
function variantOf(gpu: Gpu, tuning: GemmTuning): GemmVariant {
  return tuning.variant ?? (gpu.isCpu ? "register" : "shared");
}

/** k of each sequential pass (all of k when it fits one dispatch; see MAX_K_REGISTER). */
function passK(k: number, variant: GemmVariant): number {
  const maxK = variant === "shared" ? MAX_K_SHARED : MAX_K_REGISTER;
  return k > maxK ? Math.ceil(k / Math.ceil(k / maxK) / 4) * 4 : k;
}

/** How one pass runs: orientation, kernel configuration, grid and k-splits. */
interface PassPlan {
  /** Whether the product runs swapped (`g` is then the swapped one). */
  readonly swap: boolean;
  readonly g: StridedGemm;
  readonly cfg: GemmConfig;
  readonly tilesX: number;
  readonly tilesY: number;
  /** k-splits (1: one dispatch over all of k, also when the scratch would not fit a binding). */
  readonly splits: number;
  /** k per split (a multiple of cfg.kAlign). */
  readonly kChunk: number;
}

/** Decides swap, configuration and split-K of one pass (gemmPass runs it, _gemmPlan reports it). */
function planPass(gpu: Gpu, g0: StridedGemm, variant: GemmVariant, tuning: GemmTuning): PassPlan {
  const swap = shouldSwap(g0, variant, tuning);
  const g = swap ? swapped(g0) : g0;
  const cfg = chooseConfig(gpu, g, variant, tuning);
  const tilesX = Math.ceil(g.n / cfg.colsPerGroup);
  const tilesY = Math.ceil(g.m / cfg.rowsPerGroup);
  const maxWg = gpu.limits.maxComputeWorkgroupsPerDimension;
  let splits = tuning.splitK ?? chooseSplitK(gpu, g, tilesX * tilesY * g.batch, cfg.kAlign);
  splits = Math.max(1, Math.min(splits, Math.ceil(g.k / cfg.kAlign), Math.floor(maxWg / g.batch)));
  const kChunk = Math.ceil(Math.ceil(g.k / splits) / cfg.kAlign) * cfg.kAlign;
  splits = g.k === 0 ? 1 : Math.ceil(g.k / kChunk);
  // The scratch of split-K ([splits, batch, m, n]) must fit one binding.
  if (splits * g.batch * g.m * g.n > maxBindingElements(gpu)) splits = 1;
  return { swap, g, cfg, tilesX, tilesY, splits, kChunk };
}

function gemmPass(gpu: Gpu, g0: StridedGemm, variant: GemmVariant, tuning: GemmTuning): void {
  const { g, cfg, tilesX, tilesY, splits, kChunk } = planPass(gpu, g0, variant, tuning);
  const maxWg = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (tilesX > maxWg || tilesY > maxWg) {
    throw new RangeError(
      `gemm: ${g.m}x${g.n} needs ${tilesX}x${tilesY} workgroups, more than ${maxWg} per dimension`,
    );
  }
  if (splits === 1) {
    dispatchGemm(gpu, cfg, g, g.k, [tilesX, tilesY, g.batch]);
    return;
  }
  // Split-K: partial products into scratch [splits, batch, m, n], then an epilogue sums them.
  const total = splits * g.batch * g.m * g.n;
  const scratch = gpu.empty([total]);
  const partial: StridedGemm = {
    ...g,
    alpha: 1,
    beta: 0,
    c: bindingRange(scratch, 0, total),
    ldc: g.n,
    ldcCol: 1,
    strideC: g.m * g.n,
    segment: undefined,
    segmentStride: undefined,
    bias: undefined,
    biasMode: "none",
    activation: undefined,
  };
  const pcfg = chooseConfig(gpu, partial, variant, tuning);
  dispatchGemm(gpu, pcfg, partial, kChunk, [tilesX, tilesY, g.batch * splits]);
  dispatchEpilogue(gpu, g, scratch, splits);
  scratch.dispose();
}

// ------------------------------------------------------------------ configuration ----

interface GemmConfig {
  readonly variant: GemmVariant;
  readonly transA: boolean;
  readonly transB: boolean;
  /** A loaded as vec4 along its contiguous dimension. */
  readonly vecA: boolean;
  /** B loaded as vec4 along its contiguous dimension. */
  readonly vecB: boolean;
  readonly tm: number;
  readonly tn: number;
  readonly wx: number;
  readonly wy: number;
  readonly beta: boolean;
  readonly bias: "none" | "row" | "col";
  readonly segmented: boolean;
  readonly rowsPerGroup: number;
  readonly colsPerGroup: number;
  /** Multiple that k-chunk boundaries must keep (4 when an operand is vectorized along k). */
  readonly kAlign: number;
  /** C stored as vec4s of 4 consecutive columns (register family). */
  readonly vecC?: boolean;
  /** Activation of the C store. */
  readonly activation?: ActivationKind | undefined;
  /** Storage types of the bindings (bias: f32 when there is none). */
  readonly dt: GemmDTypes;
}

/** Storage types of a GEMM's float bindings. */
type GemmDTypes = {
  readonly a: FloatDType;
  readonly b: FloatDType;
  readonly c: FloatDType;
  readonly bias: FloatDType;
};

/** The binding types of `g` (its tensors were checked by gemmStrided). */
function dtypesOf(g: StridedGemm): GemmDTypes {
  const d = (r: TensorRange | undefined) => (r?.tensor.dtype === "f16" ? "f16" : "f32");
  return { a: d(g.a), b: d(g.b), c: d(g.c), bias: d(g.bias) };
}

/**
 * WGSL element type of an A, B or C binding: {@linkcode storageType}, except that f32 vectors
 * keep the `vec4f` spelling of the f32 kernels.
 */
function elemType(d: FloatDType, vec: boolean): string {
  return vec && d === "f32" ? "vec4f" : storageType(d, vec);
}

function isVecOk(r: TensorRange, ld: number, stride: number, inner: number): boolean {
  return ld % 4 === 0 && stride % 4 === 0 && r.base % 4 === 0 && inner % 4 === 0;
}

function chooseConfig(
  gpu: Gpu,
  g: StridedGemm,
  variant: GemmVariant,
  tuning: GemmTuning,
): GemmConfig {
  void gpu;
  const beta = g.beta !== 0;
  const segmented = g.segment !== undefined;
  const dt = dtypesOf(g);
  if (variant === "shared") {
    return {
      variant,
      transA: g.transA,
      transB: g.transB,
      vecA: false,
      vecB: false,
      tm: 4,
      tn: 4,
      wx: SHARED_T,
      wy: SHARED_T,
      beta,
      bias: g.biasMode,
      segmented,
      activation: g.activation,
      rowsPerGroup: SHARED_BM,
      colsPerGroup: SHARED_BN,
      kAlign: 1,
      dt,
    };
  }
  // Vectorize A along k (!transA: needs k, lda % 4 == 0) or m (transA: needs m, lda % 4 == 0).
  // f16 operands vectorize under the same conditions: a binding starts 256-byte aligned, so an
  // element offset that is a multiple of 4 is 8-byte aligned, as a vec4<f16> needs.
  const vecA = g.transA ? isVecOk(g.a, g.lda, g.strideA, g.m) : isVecOk(g.a, g.lda, g.strideA, g.k);
  const vecB = g.transB ? isVecOk(g.b, g.ldb, g.strideB, g.k) : isVecOk(g.b, g.ldb, g.strideB, g.n);
  let [tm, tn] = tuning.tile ?? pickTile(g.m, g.n, g.k, g.batch).tile;
  if (![1, 2, 4, 8, 16].includes(tm) || ![4, 8, 16].includes(tn)) {
    throw new RangeError(`gemm: unsupported register tile [${tm}, ${tn}]`);
  }
  // A vectorized along m needs whole vec4s of rows.
  if (vecA && g.transA && tm < 4) tm = 4;
  const wx = 8;
  const wy = 8;
  return {
    variant,
    transA: g.transA,
    transB: g.transB,
    vecA,
    vecB,
    tm,
    tn,
    wx,
    wy,
    beta,
    bias: g.biasMode,
    segmented,
    activation: g.activation,
    rowsPerGroup: tm * wy,
    colsPerGroup: tn * wx,
    kAlign: (vecA && !g.transA) || (vecB && g.transB) ? 4 : 1,
    vecC: isVecC(g),
    dt,
  };
}

/**
 * Whether 4 consecutive columns of C (from a multiple of 4) are always 4 consecutive, aligned
 * elements: then the register kernel stores (and reads, for beta) C as vec4s.
 */
function isVecC(g: StridedGemm): boolean {
  const aligned = g.n % 4 === 0 && g.ldc % 4 === 0 && g.strideC % 4 === 0 && g.c.base % 4 === 0;
  if (g.segment !== undefined) {
    return aligned && g.segment % 4 === 0 && (g.segmentStride ?? 0) % 4 === 0;
  }
  return aligned && (g.ldcCol ?? 1) === 1;
}

/**
 * The register block of the CPU kernel: as big as the problem fills (fewer loads per FMA), but
 * small enough not to waste most of a block on odd edges and to leave work for every core.
 */
function pickTile(
  m: number,
  n: number,
  k: number,
  batch: number,
): { tile: [number, number]; cost: number } {
  const cores = Math.max(1, globalThis.navigator?.hardwareConcurrency ?? 4);
  const options: [number, number][] = [
    [16, 16],
    [8, 16],
    [16, 8],
    [8, 8],
    [4, 16],
    [4, 8],
    [8, 4],
    [4, 4],
    [2, 8],
    [2, 4],
    [1, 8],
    [1, 4],
  ];
  let best: [number, number] = [4, 4];
  let bestCost = Infinity;
  for (const [tm, tn] of options) {
    // The grid has at most 65535 workgroups per dimension.
    if (Math.ceil(m / (8 * tm)) > 65535 || Math.ceil(n / (8 * tn)) > 65535) continue;
    // llvmpipe runs the 8 threads of a workgroup row as one SIMD group: a group costs as much
    // as if all lanes were busy. Per k-step a thread does tm*tn FMAs and tm+tn loads (each
    // load costs about LOAD_COST FMAs), and each C element costs about STORE_COST FMAs.
    const simdGroups = Math.ceil(m / tm) * Math.ceil(n / (8 * tn)) * batch;
    const perLane = tm * tn * (k * (1 + LOAD_COST * (tm + tn) / (tm * tn)) + STORE_COST);
    const workgroups = Math.ceil(m / (8 * tm)) * Math.ceil(n / (8 * tn)) * batch;
    // Too few workgroups leave cores idle, unless k is long enough for split-K to fill them.
    const balance = k >= 2 * SPLIT_MIN_K_CPU
      ? 1
      : Math.ceil(workgroups / cores) * cores / workgroups;
    const cost = simdGroups * perLane * balance;
    if (cost < bestCost * 0.98) {
      bestCost = cost;
      best = [tm, tn];
    }
  }
  return { tile: best, cost: bestCost };
}

/**
 * The same product with the roles of A and B exchanged: `C^T = op(B)^T op(A)^T`, storing
 * element (j, i) of the swapped problem at C's (i, j).
 */
function swapped(g: StridedGemm): StridedGemm {
  return {
    ...g,
    m: g.n,
    n: g.m,
    transA: !g.transB,
    transB: !g.transA,
    a: g.b,
    b: g.a,
    lda: g.ldb,
    ldb: g.lda,
    strideA: g.strideB,
    strideB: g.strideA,
    ldc: g.ldcCol ?? 1,
    ldcCol: g.ldc,
    biasMode: g.biasMode === "row" ? "col" : g.biasMode === "col" ? "row" : "none",
  };
}

/** Whether the swapped problem is clearly cheaper for the register kernel. */
function shouldSwap(g: StridedGemm, variant: GemmVariant, tuning: GemmTuning): boolean {
  if (variant !== "register" || g.segment !== undefined) return false;
  if (tuning.swap !== undefined) return tuning.swap;
  if (tuning.tile) return false;
  const normal = pickTile(g.m, g.n, g.k, g.batch).cost;
  const other = pickTile(g.n, g.m, g.k, g.batch).cost;
  return other < 0.85 * normal;
}

/** Shortest k-range per split on CPU adapters. */
const SPLIT_MIN_K_CPU = 1024;

/** Cost of one operand load in FMAs (fit to llvmpipe timings of square GEMMs). */
const LOAD_COST = 5;
/** Cost of one C store in FMAs. */
const STORE_COST = 12;

function chooseSplitK(gpu: Gpu, g: StridedGemm, groups: number, kAlign: number): number {
  const target = gpu.isCpu ? 2 * Math.max(1, globalThis.navigator?.hardwareConcurrency ?? 4) : 256;
  const minK = gpu.isCpu ? SPLIT_MIN_K_CPU : 256;
  if (groups >= target || g.k < 2 * minK) return 1;
  return Math.max(1, Math.min(Math.ceil(target / groups), Math.floor(g.k / minK), 64 * kAlign));
}

/**
 * What {@linkcode gemmStrided} runs for `g` under `tuning` (the autotuner reports it and searches
 * around it): the kernel family, whether the product is swapped, the register tile (after
 * chooseConfig's adjustments; `[4, 4]` for the shared family) and the k-splits of its first
 * k-pass. Shares gemmPass's decisions (planPass).
 *
 * @throws {RangeError} for a tile the register family does not have.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { bindingRange } from "./_binding.ts";
 * import { _gemmPlan } from "./gemm.ts";
 * const gpu = await getGpu();
 * const a = gpu.zeros([4, 3]), b = gpu.zeros([3, 5]), c = gpu.empty([4, 5]);
 * _gemmPlan(gpu, {
 *   m: 4, n: 5, k: 3, batch: 1, transA: false, transB: false, alpha: 1, beta: 0,
 *   a: bindingRange(a, 0, 12), b: bindingRange(b, 0, 15), c: bindingRange(c, 0, 20),
 *   lda: 3, ldb: 5, ldc: 5, strideA: 0, strideB: 0, strideC: 0, biasMode: "none",
 * }); // e.g. { variant: "register", swap: false, tile: [4, 4], splitK: 1 }
 * ```
 */
export function _gemmPlan(
  gpu: Gpu,
  g: StridedGemm,
  tuning: GemmTuning = {},
): { variant: GemmVariant; swap: boolean; tile: [number, number]; splitK: number } {
  const variant = variantOf(gpu, tuning);
  const p = planPass(gpu, { ...g, k: passK(g.k, variant) }, variant, tuning);
  return { variant, swap: p.swap, tile: [p.cfg.tm, p.cfg.tn], splitK: p.splits };
}

// ------------------------------------------------------------------------- kernels ----

/** k-steps per iteration of the register kernel's main loop (4 or 8). */
const K_UNROLL = 4;

const SHARED_T = 16; // threads per side of the shared-memory kernel's workgroup
const SHARED_BM = 64;
const SHARED_BN = 64;
const SHARED_BK = 16;

const PARAMS_WGSL = `struct Params {
  m: u32, n: u32, k: u32, batch: u32,
  lda: u32, ldb: u32, ldc: u32, seg: u32,
  segStride: u32, sA: u32, sB: u32, sC: u32,
  aOff: u32, bOff: u32, cOff: u32, biasOff: u32,
  sBias: u32, kChunk: u32, alpha: f32, beta: f32,
  ldcCol: u32,
}`;

function writeParams(g: StridedGemm, kChunk: number): Uint8Array {
  return new ParamsWriter()
    .u32(g.m).u32(g.n).u32(g.k).u32(g.batch)
    .u32(g.lda).u32(g.ldb).u32(g.ldc).u32(g.segment ?? 1)
    .u32(g.segmentStride ?? 0).u32(g.strideA).u32(g.strideB).u32(g.strideC)
    .u32(g.a.base).u32(g.b.base).u32(g.c.base).u32(g.bias?.base ?? 0)
    .u32(g.strideBias ?? 0).u32(kChunk).f32(g.alpha).f32(g.beta)
    .u32(g.ldcCol ?? 1)
    .bytes();
}

function dispatchGemm(
  gpu: Gpu,
  cfg: GemmConfig,
  g: StridedGemm,
  kChunk: number,
  workgroups: [number, number, number],
): void {
  const spec = cfg.variant === "shared" ? sharedKernel(cfg) : registerKernel(cfg);
  const bindings: Binding[] = [g.a.binding, g.b.binding, g.c.binding];
  if (cfg.bias !== "none") bindings.push(g.bias!.binding);
  gpu.dispatch(spec, { params: writeParams(g, kChunk), bindings, workgroups });
}

const kernelCache = new Map<string, { name: string; code: string }>();

function memo(name: string, build: () => string): { name: string; code: string } {
  let spec = kernelCache.get(name);
  if (!spec) kernelCache.set(name, spec = { name, code: build() });
  return spec;
}

function specName(prefix: string, c: GemmConfig): string {
  return `${prefix}_${c.transA ? "t" : "n"}${c.transB ? "t" : "n"}_${c.tm}x${c.tn}` +
    `${c.vecA ? "_va" : ""}${c.vecB ? "_vb" : ""}${c.beta ? "_beta" : ""}` +
    `${c.bias === "none" ? "" : `_bias${c.bias}`}${c.segmented ? "_seg" : ""}` +
    `${c.vecC ? "_vc" : ""}${c.activation ? `_${c.activation}` : ""}${dtypeTag(c.dt)}`;
}

/**
 * The C store shared by the shared-memory kernel and the split-K epilogue: alpha, beta, bias,
 * the activation and the column mapping.
 */
function storeWgsl(c: GemmConfig): string {
  const { dt } = c;
  return `${activationWgsl(c.activation, "f32")}
fn colOffset(j: u32) -> u32 {
  ${c.segmented ? "return (j / p.seg) * p.segStride + j % p.seg;" : "return j * p.ldcCol;"}
}
fn store(zc: u32, z: u32, i: u32, j: u32, acc: f32) {
  let idx = p.cOff + zc * p.sC + i * p.ldc + colOffset(j);
  var v = p.alpha * acc;
  ${c.beta ? `v += p.beta * ${loadF32(dt.c, "c[idx]")};` : ""}
  ${c.bias === "row" ? `v += ${loadF32(dt.bias, "bias[p.biasOff + z * p.sBias + i]")};` : ""}
  ${c.bias === "col" ? `v += ${loadF32(dt.bias, "bias[p.biasOff + z * p.sBias + j]")};` : ""}
  c[idx] = ${storeAs(dt.c, c.activation ? "act(v)" : "v")};
}`;
}

function bindingsWgsl(c: GemmConfig): string {
  const { dt } = c;
  const bias = `@group(0) @binding(4) var<storage, read> bias: array<${dt.bias}>;`;
  return `@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<${elemType(dt.a, c.vecA)}>;
@group(0) @binding(2) var<storage, read> b: array<${elemType(dt.b, c.vecB)}>;
@group(0) @binding(3) var<storage, read_write> c: array<${elemType(dt.c, !!c.vecC)}>;
${c.bias !== "none" ? bias : ""}`;
}

/**
 * The register-blocked kernel (CPU adapters). Thread (x, y) of workgroup (X, Y, z) computes the
 * TM x TN block of C at rows `(Y * WY + y) * TM`, columns `(X * WX + x) * TN` of batch
 * `z % batch`, over the k-range `[s * kChunk, (s + 1) * kChunk)` with `s = z / batch`. Edge
 * rows/columns are clamped for loads and masked for stores. Fully unrolled: every operand value
 * and accumulator is a named register (llvmpipe keeps those in SIMD registers, arrays it spills).
 */
function registerKernel(c: GemmConfig): { name: string; code: string } {
  const name = specName("gemm_reg", c);
  return memo(name, () => {
    const { tm, tn } = c;
    const tn4 = tn / 4;
    const L: string[] = [];
    const kvecA = c.vecA && !c.transA; // A vectorized along k
    const kvecB = c.vecB && c.transB; // B vectorized along k
    const kvec = kvecA || kvecB;
    const { dt } = c;
    const vecC = !!c.vecC;
    // Row index expressions (clamped) and column ones.
    L.push(`${wgslEnable(Object.values(dt))}${PARAMS_WGSL}
${bindingsWgsl(c)}
${activationWgsl(c.activation, c.vecC ? "vec4<f32>" : "f32")}
// Thread (x, y) of workgroup (X, Y, z): the ${tm}x${tn} block of C at rows (Y*${c.wy}+y)*${tm},
// columns (X*${c.wx}+x)*${tn}, batch z % batch, k-split z / batch. No shared memory.
@compute @workgroup_size(${c.wx}, ${c.wy})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) l: vec3u) {
  let r0 = (wg.y * ${c.wy}u + l.y) * ${tm}u;
  let c0 = (wg.x * ${c.wx}u + l.x) * ${tn}u;
  if (r0 >= p.m || c0 >= p.n) { return; }
  let z = wg.z % p.batch;
  let kBeg = (wg.z / p.batch) * p.kChunk;
  let kEnd = min(kBeg + p.kChunk, p.k);
  let aBase = p.aOff + z * p.sA;
  let bBase = p.bOff + z * p.sB;`);
    // A addressing.
    if (c.vecA) {
      L.push(`  let aB4 = aBase / 4u; let lda4 = p.lda / 4u;`);
      if (c.transA) {
        for (let i4 = 0; i4 < tm / 4; i4++) {
          L.push(`  let ar${i4} = min(r0 / 4u + ${i4}u, p.m / 4u - 1u);`);
        }
      } else {
        for (let i = 0; i < tm; i++) {
          L.push(`  let ar${i} = aB4 + min(r0 + ${i}u, p.m - 1u) * lda4;`);
        }
      }
    } else {
      for (let i = 0; i < tm; i++) {
        L.push(
          c.transA
            ? `  let ar${i} = aBase + min(r0 + ${i}u, p.m - 1u);`
            : `  let ar${i} = aBase + min(r0 + ${i}u, p.m - 1u) * p.lda;`,
        );
      }
    }
    // B addressing.
    if (c.vecB) {
      L.push(`  let bB4 = bBase / 4u; let ldb4 = p.ldb / 4u;`);
      if (c.transB) {
        for (let j = 0; j < tn; j++) {
          L.push(`  let bc${j} = bB4 + min(c0 + ${j}u, p.n - 1u) * ldb4;`);
        }
      } else {
        for (let j4 = 0; j4 < tn4; j4++) {
          L.push(`  let bc${j4} = min(c0 / 4u + ${j4}u, p.n / 4u - 1u);`);
        }
      }
    } else {
      for (let j = 0; j < tn; j++) {
        L.push(
          c.transB
            ? `  let bc${j} = bBase + min(c0 + ${j}u, p.n - 1u) * p.ldb;`
            : `  let bc${j} = bBase + min(c0 + ${j}u, p.n - 1u);`,
        );
      }
    }
    for (let i = 0; i < tm; i++) {
      for (let j4 = 0; j4 < tn4; j4++) L.push(`  var acc${i}_${j4} = vec4f(0.0);`);
    }
    // Loads of KS k-steps starting at kk; returns names of a(i, s) and b(s, j) values.
    const body = (ks: number, kExpr: string): string[] => {
      const out: string[] = [];
      const aval: string[][] = Array.from({ length: tm }, () => []);
      const bval: string[][] = Array.from({ length: ks }, () => []);
      // A values.
      if (c.vecA && !c.transA) {
        for (let i = 0; i < tm; i++) {
          for (let q = 0; q < ks / 4; q++) {
            out.push(
              `    let av${i}_${q} = ${loadF32(dt.a, `a[ar${i} + ${kExpr} / 4u + ${q}u]`, true)};`,
            );
          }
          for (let s = 0; s < ks; s++) aval[i][s] = `av${i}_${s >> 2}[${s & 3}]`;
        }
      } else if (c.vecA && c.transA) {
        for (let s = 0; s < ks; s++) {
          out.push(`    let ak${s} = aB4 + (${kExpr} + ${s}u) * lda4;`);
          for (let i4 = 0; i4 < tm / 4; i4++) {
            out.push(`    let av${s}_${i4} = ${loadF32(dt.a, `a[ak${s} + ar${i4}]`, true)};`);
            for (let q = 0; q < 4; q++) aval[i4 * 4 + q][s] = `av${s}_${i4}[${q}]`;
          }
        }
      } else {
        for (let s = 0; s < ks; s++) {
          const kk = s === 0 ? kExpr : `${kExpr} + ${s}u`;
          const koff = c.transA ? `(${kk}) * p.lda` : `${kk}`;
          if (c.transA) out.push(`    let ak${s} = ${koff};`);
          for (let i = 0; i < tm; i++) {
            const ai = `a[ar${i} + ${c.transA ? `ak${s}` : `${kk}`}]`;
            out.push(`    let av${s}_${i} = ${loadF32(dt.a, ai)};`);
            aval[i][s] = `av${s}_${i}`;
          }
        }
      }
      // B values, as vec4 groups of columns: bval[s][j4] is a vec4 expression.
      if (c.vecB && !c.transB) {
        for (let s = 0; s < ks; s++) {
          out.push(`    let bk${s} = (${kExpr} + ${s}u) * ldb4 + bB4;`);
          for (let j4 = 0; j4 < tn4; j4++) {
            out.push(`    let bv${s}_${j4} = ${loadF32(dt.b, `b[bk${s} + bc${j4}]`, true)};`);
            bval[s][j4] = `bv${s}_${j4}`;
          }
        }
      } else if (c.vecB && c.transB) {
        for (let j = 0; j < tn; j++) {
          for (let q = 0; q < ks / 4; q++) {
            out.push(
              `    let bw${j}_${q} = ${loadF32(dt.b, `b[bc${j} + ${kExpr} / 4u + ${q}u]`, true)};`,
            );
          }
        }
        for (let s = 0; s < ks; s++) {
          for (let j4 = 0; j4 < tn4; j4++) {
            const q = [0, 1, 2, 3].map((x) => `bw${j4 * 4 + x}_${s >> 2}[${s & 3}]`).join(", ");
            bval[s][j4] = `vec4f(${q})`;
          }
        }
      } else {
        for (let s = 0; s < ks; s++) {
          const kk = s === 0 ? kExpr : `${kExpr} + ${s}u`;
          if (!c.transB) out.push(`    let bk${s} = (${kk}) * p.ldb;`);
          for (let j = 0; j < tn; j++) {
            const bj = `b[bc${j} + ${c.transB ? `${kk}` : `bk${s}`}]`;
            out.push(`    let bs${s}_${j} = ${loadF32(dt.b, bj)};`);
          }
          for (let j4 = 0; j4 < tn4; j4++) {
            const q = [0, 1, 2, 3].map((x) => `bs${s}_${j4 * 4 + x}`).join(", ");
            bval[s][j4] = `vec4f(${q})`;
          }
        }
      }
      // All k-steps of one accumulator in a row: a spilled accumulator is loaded and stored
      // once per iteration instead of once per k-step.
      for (let i = 0; i < tm; i++) {
        for (let j4 = 0; j4 < tn4; j4++) {
          const terms = [];
          for (let s = 0; s < ks; s++) terms.push([aval[i][s], bval[s][j4]]);
          let expr = `acc${i}_${j4}`;
          for (const [av, bv] of terms) expr = `fma(vec4f(${av}), ${bv}, ${expr})`;
          out.push(`    acc${i}_${j4} = ${expr};`);
        }
      }
      return out;
    };
    L.push(`  var kk = kBeg;`);
    L.push(`  for (; kk + ${K_UNROLL}u <= kEnd; kk += ${K_UNROLL}u) {`);
    L.push(...body(K_UNROLL, "kk"));
    L.push(`  }`);
    if (K_UNROLL > 4) {
      L.push(`  for (; kk + 4u <= kEnd; kk += 4u) {`);
      L.push(...body(4, "kk"));
      L.push(`  }`);
    }
    if (!kvec) {
      L.push(`  for (; kk < kEnd; kk++) {`);
      L.push(...body(1, "kk"));
      L.push(`  }`);
    }
    // Stores: column offsets once per column (one division per thread when segmented).
    L.push(`  let cz = p.cOff + wg.z * p.sC;`);
    const step = c.vecC ? 4 : 1; // columns per store
    const nOff = tn / step;
    if (c.segmented) {
      L.push(`  var sq = c0 / p.seg; var sr = c0 % p.seg;`);
      for (let j = 0; j < nOff; j++) {
        L.push(`  let co${j} = sq * p.segStride + sr;`);
        if (j < nOff - 1) L.push(`  sr += ${step}u; if (sr == p.seg) { sr = 0u; sq += 1u; }`);
      }
    } else {
      for (let j = 0; j < nOff; j++) L.push(`  let co${j} = (c0 + ${j * step}u) * p.ldcCol;`);
    }
    if (c.bias === "col") {
      for (let j = 0; j < tn; j++) {
        const bj = `bias[p.biasOff + z * p.sBias + min(c0 + ${j}u, p.n - 1u)]`;
        L.push(`  let bj${j} = ${loadF32(dt.bias, bj)};`);
      }
    }
    for (let i = 0; i < tm; i++) {
      L.push(`  if (r0 + ${i}u < p.m) {`);
      L.push(`    let ri = cz + (r0 + ${i}u) * p.ldc;`);
      if (c.bias === "row") {
        const bi = `bias[p.biasOff + z * p.sBias + r0 + ${i}u]`;
        L.push(`    let bi = ${loadF32(dt.bias, bi)};`);
      }
      for (let j = 0; j < nOff; j++) {
        const guard = j === 0 ? "" : `if (c0 + ${j * step}u < p.n) `;
        const idx = c.vecC ? `(ri + co${j}) / 4u` : `ri + co${j}`;
        const terms = c.vecC
          ? [`p.alpha * acc${i}_${j}`]
          : [`p.alpha * acc${i}_${j >> 2}[${j & 3}]`];
        if (c.beta) terms.push(`p.beta * ${loadF32(dt.c, `c[${idx}]`, vecC)}`);
        if (c.bias === "row") terms.push(c.vecC ? "vec4f(bi)" : "bi");
        if (c.bias === "col") {
          terms.push(
            c.vecC ? `vec4f(${[0, 1, 2, 3].map((q) => `bj${j * 4 + q}`).join(", ")})` : `bj${j}`,
          );
        }
        const v = terms.join(" + ");
        L.push(
          `    ${guard}{ c[${idx}] = ${storeAs(dt.c, c.activation ? `act(${v})` : v, vecC)}; }`,
        );
      }
      L.push(`  }`);
    }
    L.push(`}`);
    return L.join("\n");
  });
}

/**
 * The shared-memory kernel (GPUs). A workgroup of 16x16 threads computes a 64x64 tile of C:
 * per 16-deep k-slice, all threads stage the A tile (as [k][m]) and the B tile (as [k][n]) in
 * workgroup memory with coalesced, bounds-checked loads (zero outside), then thread (x, y)
 * accumulates rows y*4.., columns x*4.. from vec4 reads of the staged tiles.
 */
function sharedKernel(c: GemmConfig): { name: string; code: string } {
  const name = specName("gemm_smem", c);
  return memo(name, () => {
    const T = SHARED_T, BM = SHARED_BM, BN = SHARED_BN, BK = SHARED_BK;
    const NT = T * T;
    // Loads: consecutive threads read consecutive addresses of the contiguous dimension.
    const loadA = c.transA
      ? `let r = e % ${BM}u; let kq = e / ${BM}u;` // A stored [k][m]: m fastest
      : `let kq = e % ${BK}u; let r = e / ${BK}u;`; // A stored [m][k]: k fastest
    const loadB = c.transB
      ? `let kq = e % ${BK}u; let q = e / ${BK}u;` // B stored [n][k]: k fastest
      : `let q = e % ${BN}u; let kq = e / ${BN}u;`;
    return `${wgslEnable(Object.values(c.dt))}${PARAMS_WGSL}
${bindingsWgsl(c)}
${storeWgsl(c)}
var<workgroup> saS: array<f32, ${BK * BM}>; // [BK][BM]
var<workgroup> sbS: array<f32, ${BK * BN}>; // [BK][BN]
// Workgroup (X, Y, z) of ${T}x${T} threads: the ${BM}x${BN} tile of C at rows Y*${BM},
// columns X*${BN}; thread (x, y) owns rows Y*${BM}+y*4.., columns X*${BN}+x*4...
@compute @workgroup_size(${T}, ${T})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) l: vec3u,
        @builtin(local_invocation_index) li: u32) {
  let z = wg.z % p.batch;
  let kBeg = (wg.z / p.batch) * p.kChunk;
  let kEnd = min(kBeg + p.kChunk, p.k);
  let rowT = wg.y * ${BM}u;
  let colT = wg.x * ${BN}u;
  let aBase = p.aOff + z * p.sA;
  let bBase = p.bOff + z * p.sB;
  var acc: array<vec4f, 4>;
  for (var k0 = kBeg; k0 < kEnd; k0 += ${BK}u) {
    for (var e = li; e < ${BM * BK}u; e += ${NT}u) {
      ${loadA}
      let gr = rowT + r; let gk = k0 + kq;
      var v = 0.0;
      if (gr < p.m && gk < kEnd) {
        v = ${loadF32(c.dt.a, `a[aBase + ${c.transA ? "gk * p.lda + gr" : "gr * p.lda + gk"}]`)};
      }
      saS[kq * ${BM}u + r] = v;
    }
    for (var e = li; e < ${BN * BK}u; e += ${NT}u) {
      ${loadB}
      let gc = colT + q; let gk = k0 + kq;
      var v = 0.0;
      if (gc < p.n && gk < kEnd) {
        v = ${loadF32(c.dt.b, `b[bBase + ${c.transB ? "gc * p.ldb + gk" : "gk * p.ldb + gc"}]`)};
      }
      sbS[kq * ${BN}u + q] = v;
    }
    workgroupBarrier();
    for (var kq = 0u; kq < ${BK}u; kq++) {
      let ao = kq * ${BM}u + l.y * 4u;
      let bo = kq * ${BN}u + l.x * 4u;
      let av = vec4f(saS[ao], saS[ao + 1u], saS[ao + 2u], saS[ao + 3u]);
      let bv = vec4f(sbS[bo], sbS[bo + 1u], sbS[bo + 2u], sbS[bo + 3u]);
      acc[0] = fma(vec4f(av.x), bv, acc[0]);
      acc[1] = fma(vec4f(av.y), bv, acc[1]);
      acc[2] = fma(vec4f(av.z), bv, acc[2]);
      acc[3] = fma(vec4f(av.w), bv, acc[3]);
    }
    workgroupBarrier();
  }
  let r0 = rowT + l.y * 4u;
  let c0 = colT + l.x * 4u;
  for (var i = 0u; i < 4u; i++) {
    if (r0 + i >= p.m) { break; }
    for (var j = 0u; j < 4u; j++) {
      if (c0 + j < p.n) { store(wg.z, z, r0 + i, c0 + j, acc[i][j]); }
    }
  }
}`;
  });
}

const EPI_WG = 64;

/**
 * Split-K epilogue: one thread per element (z, i, j) of C sums the partial products
 * `scratch[s][z][i][j]` (always f32) over splits s, then applies alpha, beta, bias, the
 * activation and C's mapping (C and bias f32 or f16 as `dt` says).
 */
function epilogueKernel(
  beta: boolean,
  bias: "none" | "row" | "col",
  segmented: boolean,
  activation: ActivationKind | undefined,
  dt: GemmDTypes,
) {
  // Only C and bias are bound here (the partial sums are f32).
  const cbDt: GemmDTypes = { a: "f32", b: "f32", c: dt.c, bias: dt.bias };
  const cfg = { beta, bias, segmented, activation, dt: cbDt } as GemmConfig;
  const name =
    `gemm_splitk_epilogue${beta ? "_beta" : ""}${bias === "none" ? "" : `_bias${bias}`}` +
    `${segmented ? "_seg" : ""}${activation ? `_${activation}` : ""}` +
    dtypeTag({ c: dt.c, bias: dt.bias });
  return memo(name, () =>
    `${wgslEnable(Object.values(cbDt))}${PARAMS_WGSL}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<${dt.c}>;
${bias !== "none" ? `@group(0) @binding(3) var<storage, read> bias: array<${dt.bias}>;` : ""}
${storeWgsl(cfg)}
// One thread per element t = (z * m + i) * n + j of C; p.k holds the split count here.
@compute @workgroup_size(${EPI_WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * ${EPI_WG}u;
  let total = p.batch * p.m * p.n;
  if (t >= total) { return; }
  var s = 0.0;
  for (var q = 0u; q < p.k; q++) { s += part[q * total + t]; }
  let j = t % p.n;
  let i = (t / p.n) % p.m;
  let z = t / (p.n * p.m);
  store(z, z, i, j, s);
}`);
}

function dispatchEpilogue(gpu: Gpu, g: StridedGemm, scratch: Tensor, splits: number): void {
  const spec = epilogueKernel(
    g.beta !== 0,
    g.biasMode,
    g.segment !== undefined,
    g.activation,
    dtypesOf(g),
  );
  const params = writeParams({ ...g, k: splits }, 0);
  const bindings: Binding[] = [scratch, g.c.binding];
  if (g.biasMode !== "none") bindings.push(g.bias!.binding);
  const total = g.batch * g.m * g.n;
  const [x, y] = grid1d(total, EPI_WG);
  gpu.dispatch(spec, { params, bindings, workgroups: [x, y, 1] });
}

// -------------------------------------------------------------- strided reduction ----

const RED_WG = 64;
const RED_SPLIT_MIN = 256;
const RED_MAX_LEN = 16384;

/**
 * A reduction over the outer and inner dimensions of `x[outer, mid, inner]` into `y[mid]`
 * (`+=` when `accumulate`): column sums (inner = 1) and conv2d's bias gradient (outer = images,
 * inner = pixels). `x` and `y` are f32 or f16 each; sums are f32.
 */
export interface StridedReduce {
  /** Output `[mid]`. */
  readonly y: TensorRange;
  /** Input `[outer, mid, inner]`. */
  readonly x: TensorRange;
  /** Outer (reduced) size. */
  readonly outer: number;
  /** Kept size. */
  readonly mid: number;
  /** Inner (reduced) size. */
  readonly inner: number;
  /** Add to y instead of overwriting it. */
  readonly accumulate: boolean;
}

/**
 * Records a {@linkcode StridedReduce}. When `mid` is small and the reduction long, the reduced
 * range is split over more threads and the partial sums (f32) are reduced by a second pass.
 *
 * @throws {TypeError} when `x` or `y` is not an f32/f16 tensor.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { bindingRange } from "./_binding.ts";
 * import { reduceStrided } from "./gemm.ts";
 * const gpu = await getGpu();
 * const x = gpu.zeros([2, 3, 5]), y = gpu.empty([3]);
 * reduceStrided(gpu, {
 *   y: bindingRange(y, 0, 3), x: bindingRange(x, 0, 30), outer: 2, mid: 3, inner: 5, accumulate: false,
 * });
 * ```
 */
export function reduceStrided(gpu: Gpu, r: StridedReduce): void {
  floatDTypes("reduceStrided", { x: r.x.tensor, y: r.y.tensor });
  if (r.mid === 0) return;
  const len = r.outer * r.inner;
  const want = gpu.isCpu
    ? 4 * Math.max(1, globalThis.navigator?.hardwareConcurrency ?? 4) * 8
    : 16384;
  let splits = 1;
  if (r.mid < want && len >= 2 * RED_SPLIT_MIN) {
    splits = Math.min(Math.ceil(want / r.mid), Math.floor(len / RED_SPLIT_MIN), 1024);
  }
  // At most RED_MAX_LEN elements per thread: llvmpipe caps one invocation's loop iterations at
  // 65535 (silently), and long serial sums lose precision.
  splits = Math.max(splits, Math.ceil(len / RED_MAX_LEN));
  if (splits <= 1) {
    dispatchReduce(gpu, r.y, r.x, r.outer, r.mid, r.inner, 1, r.accumulate);
    return;
  }
  const partial = gpu.empty([splits, r.mid]);
  dispatchReduce(
    gpu,
    bindingRange(partial, 0, splits * r.mid),
    r.x,
    r.outer,
    r.mid,
    r.inner,
    splits,
    false,
  );
  const pr = bindingRange(partial, 0, splits * r.mid);
  dispatchReduce(gpu, r.y, pr, splits, r.mid, 1, 1, r.accumulate);
  partial.dispose();
}

function reduceKernel(
  accumulate: boolean,
  dt: { x: FloatDType; y: FloatDType },
): { name: string; code: string } {
  const name = `reduce_outer_inner${accumulate ? "_acc" : ""}${dtypeTag(dt)}`;
  const sum = accumulate ? `${loadF32(dt.y, "y[yi]")} + acc` : "acc";
  return memo(
    name,
    () =>
      `${
        wgslEnable([dt.x, dt.y])
      }struct Params { outer: u32, mid: u32, inner: u32, splits: u32, xOff: u32, yOff: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<${dt.x}>;
@group(0) @binding(2) var<storage, read_write> y: array<${dt.y}>;
// One thread per (split s, kept index c): sums x[o, c, q] over its share of the flattened
// (o, q) range; the result goes to y[s * mid + c] (splits > 1) or y[c].
@compute @workgroup_size(${RED_WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * ${RED_WG}u;
  if (t >= p.mid * p.splits) { return; }
  let c = t % p.mid;
  let s = t / p.mid;
  let len = p.outer * p.inner;
  let per = (len + p.splits - 1u) / p.splits;
  let beg = min(s * per, len);
  let end = min(beg + per, len);
  var acc = 0.0;
  var o = beg / p.inner;
  var q = beg % p.inner;
  var e = beg;
  while (e < end) {
    let run = min(p.inner - q, end - e);
    let base = p.xOff + (o * p.mid + c) * p.inner + q;
    for (var u = 0u; u < run; u++) { acc += ${loadF32(dt.x, "x[base + u]")}; }
    e += run;
    o += 1u;
    q = 0u;
  }
  let yi = p.yOff + s * p.mid + c;
  y[yi] = ${storeAs(dt.y, sum)};
}`,
  );
}

function dispatchReduce(
  gpu: Gpu,
  y: TensorRange,
  x: TensorRange,
  outer: number,
  mid: number,
  inner: number,
  splits: number,
  accumulate: boolean,
): void {
  const params = new ParamsWriter().u32(outer).u32(mid).u32(inner).u32(splits).u32(x.base)
    .u32(y.base).bytes();
  const [gx, gy] = grid1d(mid * splits, RED_WG);
  const dt = {
    x: x.tensor.dtype === "f16" ? "f16" : "f32",
    y: y.tensor.dtype === "f16" ? "f16" : "f32",
  } as const;
  gpu.dispatch(reduceKernel(accumulate, dt), {
    params,
    bindings: [x.binding, y.binding],
    workgroups: [gx, gy, 1],
  });
}
