// The GEMM problem (planGemm's input) of a contiguous gemm call, for tests that assert on plans.
import type { ActivationKind } from "../kernels/activation.ts";
import type { GemmProblem } from "../kernels/gemm/index.ts";

/** Dimensions and options of a contiguous GEMM, as `gemm` takes them. */
export interface Dims {
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
  batch?: number;
  alpha?: number;
  beta?: number;
  bias?: boolean;
  activation?: ActivationKind;
}

/** Storage types of the operands (f32 where left out). */
export interface OperandDTypes {
  a?: "f32" | "f16";
  b?: "f32" | "f16";
  c?: "f32" | "f16";
  bias?: "f32" | "f16";
}

/**
 * The problem `gemm` plans for a case: contiguous operands bound from element 0, stored as `dt`
 * says.
 *
 * @example
 * ```ts
 * const plan = planGemm(problemOf({ m: 4, n: 5, k: 3 }), WEBGPU_DEFAULT_PROFILE);
 * ```
 */
export function problemOf(d: Dims, dt: OperandDTypes = {}): GemmProblem {
  const { m, n, k } = d;
  return {
    m,
    n,
    k,
    batch: d.batch ?? 1,
    transA: !!d.transA,
    transB: !!d.transB,
    alpha: d.alpha ?? 1,
    beta: d.beta ?? 0,
    a: { base: 0, dtype: dt.a ?? "f32" },
    b: { base: 0, dtype: dt.b ?? "f32" },
    c: { base: 0, dtype: dt.c ?? "f32" },
    bias: d.bias ? { base: 0, dtype: dt.bias ?? "f32" } : undefined,
    lda: d.transA ? m : k,
    ldb: d.transB ? k : n,
    ldc: n,
    strideA: m * k,
    strideB: k * n,
    strideC: m * n,
    biasMode: d.bias ? "col" : "none",
    activation: d.activation,
  };
}
