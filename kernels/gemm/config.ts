/**
 * The configuration of one GEMM pass, as the planner (`plan.ts`) decides it: the orientation
 * (skinny products computed as `C^T = op(B)^T op(A)^T`, so that SIMD lanes run along the long
 * side; {@linkcode shouldSwap}, {@linkcode swapped}) and the kernel configuration
 * ({@linkcode chooseConfig}: the register tile from the cost model in `cost.ts`, vec4 loads and
 * stores from the operands' alignment facts). Pure functions of the problem.
 *
 * @module
 */

import type { GemmTuning, GemmVariant } from "../_types.ts";
import { pickTile } from "./cost.ts";
import {
  type GemmConfig,
  type GemmOperand,
  type GemmOperandShape,
  type GemmProblem,
  type GemmStoreConfig,
  REGISTER_WG,
  SHARED_BM,
  SHARED_BN,
} from "./types.ts";

/** An operand of a pass: what it binds, where it starts, its storage type. */
export interface Operand extends GemmOperandShape {
  readonly ref: GemmOperand;
}

/** A problem being planned: its operands name what they bind. */
export type Bound = Omit<GemmProblem, "a" | "b" | "c" | "c2" | "bias"> & {
  /** The first k of the pass (k-passes; 0 otherwise): where k-segmented operands start. */
  readonly k0?: number;
  readonly a: Operand;
  readonly b: Operand;
  readonly c: Operand;
  readonly c2?: Operand | undefined;
  readonly bias?: Operand | undefined;
};

function isVecOk(r: Operand, ld: number, stride: number, inner: number): boolean {
  return ld % 4 === 0 && stride % 4 === 0 && r.base % 4 === 0 && inner % 4 === 0;
}

/**
 * The kernel configuration of a pass: for `shared`, its fixed tile; for `register`, the register
 * tile (tuned or from the cost model), vec4 loads of A and B and vec4 stores of C where the
 * operands' alignment allows, and the k alignment that follows.
 *
 * @returns The configuration.
 * @throws {RangeError} for a register tile the family does not have.
 * @example
 * ```ts
 * import { chooseConfig } from "./config.ts";
 * const operand = (ref: "a" | "b" | "c") => ({ ref, base: 0, dtype: "f32" as const });
 * const g = { // LeNet's fc1 forward: x[256, 400] w[120, 400]^T
 *   m: 256, n: 120, k: 400, batch: 1, transA: false, transB: true, alpha: 1, beta: 0,
 *   a: operand("a"), b: operand("b"), c: operand("c"), lda: 400, ldb: 400, ldc: 120,
 *   strideA: 0, strideB: 0, strideC: 0, biasMode: "none" as const,
 * };
 * const cfg = chooseConfig(g, "register", {}, 4);
 * [cfg.tm, cfg.tn, cfg.vecA, cfg.vecB]; // [8, 16, true, true]
 * ```
 */
export function chooseConfig(
  g: Bound,
  variant: GemmVariant,
  tuning: GemmTuning,
  cores: number,
): GemmConfig {
  const store: GemmStoreConfig = {
    beta: g.beta !== 0,
    bias: g.biasMode,
    segmented: g.segment !== undefined,
    activation: g.activation,
    ...(g.rowGroups ? { rowGroups: true } : {}),
  };
  const segmentedB = g.segmentB !== undefined;
  const segmentedKA = g.segmentKA !== undefined, segmentedKB = g.segmentKB !== undefined;
  const segK = {
    ...(segmentedKA ? { segmentedKA } : {}),
    ...(segmentedKB ? { segmentedKB } : {}),
  };
  if (variant === "shared") {
    return {
      ...store,
      variant,
      transA: g.transA,
      transB: g.transB,
      vecA: false,
      vecB: false,
      segmentedB,
      ...segK,
      vecC: false,
      tm: 4,
      tn: 4,
      rowsPerGroup: SHARED_BM,
      colsPerGroup: SHARED_BN,
      kAlign: 1,
    };
  }
  // Vectorize A along k (!transA: needs k, lda % 4 == 0) or m (transA: needs m, lda % 4 == 0).
  // f16 operands vectorize under the same conditions: a binding starts 256-byte aligned, so an
  // element offset that is a multiple of 4 is 8-byte aligned, as a vec4<f16> needs.
  // An operand in k segments likewise when its segments are whole vec4s: 4 k-steps from a
  // multiple of 4 then stay in one segment.
  const kSegOk = (seg: number | undefined, stride: number | undefined) =>
    seg === undefined || (seg % 4 === 0 && (stride ?? 0) % 4 === 0);
  const vecA = g.transA
    ? isVecOk(g.a, g.lda, g.strideA, g.m)
    : isVecOk(g.a, g.lda, g.strideA, g.k) && kSegOk(g.segmentKA, g.segmentStrideKA);
  // B in segments: 4 columns from a multiple of 4 stay in one segment, contiguous and aligned.
  const vecB = g.transB
    ? isVecOk(g.b, g.ldb, g.strideB, g.k) && kSegOk(g.segmentKB, g.segmentStrideKB)
    : isVecOk(g.b, g.ldb, g.strideB, g.n) &&
      (!segmentedB || (g.segmentB! % 4 === 0 && (g.segmentStrideB ?? 0) % 4 === 0));
  let [tm, tn] = tuning.tile ?? pickTile(g.m, g.n, g.k, g.batch, cores).tile;
  if (![1, 2, 4, 8, 16].includes(tm) || ![4, 8, 16].includes(tn)) {
    throw new RangeError(`gemm: unsupported register tile [${tm}, ${tn}]`);
  }
  // A vectorized along m needs whole vec4s of rows.
  if (vecA && g.transA && tm < 4) tm = 4;
  return {
    ...store,
    variant,
    transA: g.transA,
    transB: g.transB,
    vecA,
    vecB,
    segmentedB,
    ...segK,
    vecC: isVecC(g),
    tm,
    tn,
    rowsPerGroup: tm * REGISTER_WG,
    colsPerGroup: tn * REGISTER_WG,
    // An operand in k segments keeps k-chunks aligned to 4 whenever k is (harmless for its
    // scalar loads): then it splits k as the same operand stored contiguously would (a
    // permuted copy, ld = k), and sums in the same order.
    kAlign: (vecA && !g.transA) || (vecB && g.transB) ||
        ((segmentedKA || segmentedKB) && g.k % 4 === 0)
      ? 4
      : 1,
  };
}

/**
 * Whether 4 consecutive columns of C (from a multiple of 4) are always 4 consecutive, aligned
 * elements: then the register kernel stores (and reads, for beta) C as vec4s.
 */
function isVecC(g: Bound): boolean {
  const aligned = g.n % 4 === 0 && g.ldc % 4 === 0 && g.strideC % 4 === 0 && g.c.base % 4 === 0;
  if (g.rowGroups) {
    return aligned && g.segment! % 4 === 0 &&
      (g.c2?.base ?? 0) % 4 === 0 &&
      g.rowGroups.every((r) => r.base % 4 === 0 && r.segmentStride % 4 === 0);
  }
  if (g.segment !== undefined) {
    return aligned && g.segment % 4 === 0 && (g.segmentStride ?? 0) % 4 === 0;
  }
  return aligned && (g.ldcCol ?? 1) === 1;
}

/**
 * The same product with the roles of A and B exchanged: `C^T = op(B)^T op(A)^T`, storing
 * element (j, i) of the swapped problem at C's (i, j). A's k segments become B's and back (A not
 * transposed is B transposed once swapped).
 *
 * @example
 * ```ts
 * import { swapped } from "./config.ts";
 * const operand = (ref: "a" | "b" | "c") => ({ ref, base: 0, dtype: "f32" as const });
 * const g = { // LeNet's fc1 forward: x[256, 400] w[120, 400]^T
 *   m: 256, n: 120, k: 400, batch: 1, transA: false, transB: true, alpha: 1, beta: 0,
 *   a: operand("a"), b: operand("b"), c: operand("c"), lda: 400, ldb: 400, ldc: 120,
 *   strideA: 0, strideB: 0, strideC: 0, biasMode: "none" as const,
 * };
 * const s = swapped(g);
 * [s.m, s.n, s.transA, s.transB, s.a.ref]; // [120, 256, false, true, "b"]
 * ```
 */
export function swapped(g: Bound): Bound {
  const { segmentKA, segmentStrideKA, segmentKB, segmentStrideKB, ...rest } = g;
  return {
    ...rest,
    ...(segmentKB !== undefined ? { segmentKA: segmentKB, segmentStrideKA: segmentStrideKB } : {}),
    ...(segmentKA !== undefined ? { segmentKB: segmentKA, segmentStrideKB: segmentStrideKA } : {}),
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

/**
 * Whether the swapped problem is clearly cheaper for the register kernel (never for `shared`, a
 * segmented C or a segmented B; `tuning` may force it otherwise).
 *
 * @example
 * ```ts
 * import { shouldSwap } from "./config.ts";
 * const operand = (ref: "a" | "b" | "c") => ({ ref, base: 0, dtype: "f32" as const });
 * const g = { // a classifier's forward: x[256, 84] w[84, 10]
 *   m: 256, n: 10, k: 84, batch: 1, transA: false, transB: false, alpha: 1, beta: 0,
 *   a: operand("a"), b: operand("b"), c: operand("c"), lda: 84, ldb: 10, ldc: 10,
 *   strideA: 0, strideB: 0, strideC: 0, biasMode: "none" as const,
 * };
 * shouldSwap(g, "register", {}, 4); // true: 10 columns would leave most SIMD lanes idle
 * ```
 */
export function shouldSwap(
  g: Bound,
  variant: GemmVariant,
  tuning: GemmTuning,
  cores: number,
): boolean {
  if (variant !== "register" || g.segment !== undefined || g.segmentB !== undefined) return false;
  if (tuning.swap !== undefined) return tuning.swap;
  if (tuning.tile) return false;
  const normal = pickTile(g.m, g.n, g.k, g.batch, cores).cost;
  const other = pickTile(g.n, g.m, g.k, g.batch, cores).cost;
  return other < 0.85 * normal;
}
