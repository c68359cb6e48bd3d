/**
 * The steps of a conv2d plan (`plan.ts`), the vocabulary the runner (`index.ts`) executes: each
 * step names the kernel to record and, for every operand, the range of a call tensor or of a
 * plan's scratch buffer it binds ({@linkcode ConvOperand}); GEMMs are `StridedGemm` shapes
 * ({@linkcode GemmStep}), built by {@linkcode batchedGemm} from their matrix shapes.
 *
 * Types and pure builders only.
 *
 * @module
 */

import type { ActivationKind } from "../_activation_wgsl.ts";
import type { GemmTuning, StridedGemm } from "../_types.ts";
import type { DirectConvTile, DirectWeightGradSplit, DirectWeightGradTile } from "./direct_plan.ts";
import type { DirectConvShape } from "./geometry.ts";
import type { Col2imForm } from "./im2col.ts";

/** A scratch buffer of a plan. */
export type ConvScratch = "col" | "dyT" | "xT";

/**
 * What an operand binds: one of the call's tensors (`xT` also: x permuted by the caller) or a
 * scratch buffer of the plan.
 */
export type ConvBuffer = "x" | "w" | "b" | "y" | "dy" | "dx" | "dw" | "db" | ConvScratch;

/** Elements `[offset, offset + count)` of a buffer. */
export interface ConvOperand {
  /** The tensor or scratch buffer. */
  readonly buffer: ConvBuffer;
  /** First element. */
  readonly offset: number;
  /** Elements. */
  readonly count: number;
}

/** A GEMM of a plan: a `StridedGemm` whose operands name buffer ranges. */
export type GemmStep = Omit<StridedGemm, "a" | "b" | "c" | "bias"> & {
  readonly a: ConvOperand;
  readonly b: ConvOperand;
  readonly c: ConvOperand;
  readonly bias?: ConvOperand | undefined;
};

/** One thing the runner records, in order. */
export type ConvStep =
  | {
    readonly kind: "im2col";
    readonly nb: number;
    readonly x: ConvOperand;
    readonly col: ConvOperand;
  }
  | {
    readonly kind: "col2im";
    readonly nb: number;
    readonly col: ConvOperand;
    readonly dx: ConvOperand;
    readonly form: Col2imForm;
  }
  | {
    /** `[nb, c, len] -> [c, nb * len]` (where the GEMMs do not read in place). */
    readonly kind: "permute";
    readonly src: ConvOperand;
    readonly dst: ConvOperand;
    readonly shape: { readonly nb: number; readonly c: number; readonly len: number };
  }
  | { readonly kind: "gemm"; readonly gemm: GemmStep; readonly tuning: GemmTuning }
  | {
    /** `y (+)= sum over outer and inner of x[outer, mid, inner]` (`reduceStrided`). */
    readonly kind: "reduce";
    readonly y: ConvOperand;
    readonly x: ConvOperand;
    readonly outer: number;
    readonly mid: number;
    readonly inner: number;
    readonly accumulate: boolean;
  }
  | {
    /** The direct forward kernel (`flip`: the input gradient, `x` dy and `y` dx). */
    readonly kind: "direct";
    readonly shape: DirectConvShape;
    readonly tile: DirectConvTile;
    readonly flip: boolean;
    readonly x: ConvOperand;
    readonly y: ConvOperand;
    readonly bias: boolean;
    readonly activation?: ActivationKind | undefined;
    readonly yChannels: number;
  }
  | {
    /** The direct weight-gradient kernel (into the call's `dw` and `db` where given). */
    readonly kind: "directWeightGrad";
    readonly shape: DirectConvShape;
    readonly tile: DirectWeightGradTile;
    readonly split: DirectWeightGradSplit;
    readonly x: ConvOperand;
    readonly dy: ConvOperand;
    readonly dw: boolean;
    readonly db: boolean;
    readonly accumulate: boolean;
  };

/**
 * The operand of elements `[offset, offset + count)` of `buffer`.
 *
 * @example
 * ```ts
 * import { range } from "./steps.ts";
 * range("col", 0, 1024); // { buffer: "col", offset: 0, count: 1024 }
 * ```
 */
export const range = (buffer: ConvBuffer, offset: number, count: number): ConvOperand => ({
  buffer,
  offset,
  count,
});

/** An operand with its batch stride. */
export type Strided = readonly [ConvOperand, number];

/**
 * A batched product of row-major matrices, `C_z = op(A_z) op(B_z) (+ bias)` for z < batch: the
 * leading dimensions follow from the shapes (A is `m x k`, or `k x m` with `transA`; B `k x n`,
 * or `n x k`; C `m x n`, or with `segment` NCHW: column j of row i at
 * `floor(j / length) * stride + i * length + j % length`; B likewise with `segmentB`; A's and B's
 * k likewise with `segmentKA` (A `m x k`) and `segmentKB` (B `n x k`): NCHW tensors read as
 * `[channels, images * pixels]` along k).
 */
export function batchedGemm(o: {
  readonly m: number;
  readonly n: number;
  readonly k: number;
  readonly batch: number;
  readonly transA?: boolean;
  readonly transB?: boolean;
  readonly beta?: number;
  readonly a: Strided;
  readonly b: Strided;
  readonly c: Strided;
  readonly segment?: readonly [number, number];
  readonly segmentB?: readonly [number, number];
  readonly segmentKA?: readonly [number, number];
  readonly segmentKB?: readonly [number, number];
  readonly bias?: Strided | undefined;
  readonly activation?: ActivationKind | undefined;
}): GemmStep {
  const transA = o.transA ?? false, transB = o.transB ?? false;
  return {
    m: o.m,
    n: o.n,
    k: o.k,
    batch: o.batch,
    transA,
    transB,
    alpha: 1,
    beta: o.beta ?? 0,
    a: o.a[0],
    b: o.b[0],
    c: o.c[0],
    lda: transA ? o.m : o.segmentKA ? o.segmentKA[0] : o.k,
    ldb: transB ? (o.segmentKB ? o.segmentKB[0] : o.k) : o.segmentB ? o.segmentB[0] : o.n,
    ldc: o.segment ? o.segment[0] : o.n,
    strideA: o.a[1],
    strideB: o.b[1],
    strideC: o.c[1],
    ...(o.segment ? { segment: o.segment[0], segmentStride: o.segment[1] } : {}),
    ...(o.segmentB ? { segmentB: o.segmentB[0], segmentStrideB: o.segmentB[1] } : {}),
    ...(o.segmentKA ? { segmentKA: o.segmentKA[0], segmentStrideKA: o.segmentKA[1] } : {}),
    ...(o.segmentKB ? { segmentKB: o.segmentKB[0], segmentStrideKB: o.segmentKB[1] } : {}),
    ...(o.bias ? { bias: o.bias[0], strideBias: o.bias[1] } : {}),
    biasMode: o.bias ? "row" : "none",
    ...(o.activation ? { activation: o.activation } : {}),
  };
}
