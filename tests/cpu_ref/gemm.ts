/**
 * Float64 CPU references of the GEMM family (`kernels/gemm/`): plain loops.
 *
 * @module
 */

import type { Numeric } from "../harness.ts";

/** Dimensions of {@linkcode gemmRef} (as `GemmParams`). */
export interface GemmRefParams {
  /** Rows of op(A) and C. */
  readonly m: number;
  /** Columns of op(B) and C. */
  readonly n: number;
  /** Reduced dimension. */
  readonly k: number;
  /** A stored `[k, m]`. */
  readonly transA?: boolean;
  /** B stored `[n, k]`. */
  readonly transB?: boolean;
  /** Batch count; default 1. */
  readonly batch?: number;
  /** Product scale; default 1. */
  readonly alpha?: number;
  /** Prior C scale; default 0. */
  readonly beta?: number;
}

/**
 * `alpha * op(A) op(B) + beta * C + bias` in Float64, batched over contiguous operands.
 *
 * @example
 * ```ts
 * import { gemmRef } from "./gemm.ts";
 * gemmRef([1, 2], [3, 4], { m: 1, n: 1, k: 2 }); // Float64Array [11]
 * ```
 */
export function gemmRef(
  a: Numeric,
  b: Numeric,
  p: GemmRefParams,
  c?: Numeric,
  bias?: Numeric,
): Float64Array {
  const { m, n, k } = p;
  const batch = p.batch ?? 1;
  const alpha = p.alpha ?? 1;
  const beta = p.beta ?? 0;
  const out = new Float64Array(batch * m * n);
  for (let z = 0; z < batch; z++) {
    const ao = z * m * k, bo = z * k * n, co = z * m * n;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let q = 0; q < k; q++) {
          const av = p.transA ? a[ao + q * m + i] : a[ao + i * k + q];
          const bv = p.transB ? b[bo + j * k + q] : b[bo + q * n + j];
          s += av * bv;
        }
        let v = alpha * s;
        if (beta !== 0 && c) v += beta * c[co + i * n + j];
        if (bias) v += bias[j];
        out[co + i * n + j] = v;
      }
    }
  }
  return out;
}

/**
 * Column sums of `x[rows, cols]` in Float64.
 *
 * @example
 * ```ts
 * import { sumRowsRef } from "./gemm.ts";
 * sumRowsRef([1, 2, 3, 4], 2, 2); // Float64Array [4, 6]
 * ```
 */
export function sumRowsRef(x: Numeric, rows: number, cols: number): Float64Array {
  const y = new Float64Array(cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) y[c] += x[r * cols + c];
  return y;
}

/**
 * Sums of `x[outer, mid, inner]` over outer and inner in Float64 (`reduceStrided`).
 *
 * @example
 * ```ts
 * import { reduceStridedRef } from "./gemm.ts";
 * reduceStridedRef([1, 2, 3, 4, 5, 6, 7, 8], 2, 2, 2); // Float64Array [14, 22]
 * ```
 */
export function reduceStridedRef(
  x: Numeric,
  outer: number,
  mid: number,
  inner: number,
): Float64Array {
  const y = new Float64Array(mid);
  for (let o = 0; o < outer; o++) {
    for (let c = 0; c < mid; c++) {
      for (let q = 0; q < inner; q++) y[c] += x[(o * mid + c) * inner + q];
    }
  }
  return y;
}
