/**
 * The records of GEMM planning, as plain values: the problem (`GemmProblem`, a `StridedGemm`
 * without its tensors), the plan `planGemm` returns (`GemmPlan`: its passes and their dispatches,
 * each with its kernel configuration, `Params` values, bindings and grid) and the fixed facts
 * plans are made of: the kernels' `Params` fields and workgroup geometry. Types and constants
 * only: the planner (`plan.ts`), the kernels and the runner (`index.ts`) all import it.
 *
 * @module
 */

import type { ActivationKind } from "../_activation_wgsl.ts";
import type { FloatDType } from "../_dtype.ts";
import type { TensorRange } from "../_binding.ts";
import type { GemmVariant, StridedGemm } from "../_types.ts";

/** A GEMM operand as the planner sees it: where it starts in its binding, and its storage type. */
export interface GemmOperandShape {
  /** Element offset of the operand's first element inside its binding. */
  readonly base: number;
  /** Storage type of the operand's tensor. */
  readonly dtype: FloatDType;
}

/**
 * A {@linkcode StridedGemm} without its tensors: its dimensions, transposes, strides, store
 * mapping, bias mode, activation, and for each operand its offset (the alignment facts) and
 * storage type. Everything planning depends on.
 */
export type GemmProblem = Omit<StridedGemm, "a" | "b" | "c" | "c2" | "bias"> & {
  /** A's offset and type. */
  readonly a: GemmOperandShape;
  /** B's offset and type. */
  readonly b: GemmOperandShape;
  /** C's offset and type. */
  readonly c: GemmOperandShape;
  /** The offset and type of C's second tensor (row groups; absent without one). */
  readonly c2?: GemmOperandShape | undefined;
  /** The bias's offset and type (absent without one). */
  readonly bias?: GemmOperandShape | undefined;
};

/**
 * What a binding of a planned dispatch binds: an operand of the problem, or one of the plan's
 * f32 scratch buffers (bound from element 0): `accumulator` (`[batch, m, n]`, the k-passes' sums
 * of an f16 C) or `partials` (`[splits, batch, m, n]`, split-K's partial products).
 */
export type GemmOperand = "a" | "b" | "c" | "c2" | "bias" | "accumulator" | "partials";

/** How a kernel stores C: what the shared kernel and the split-K epilogue specialize on. */
export interface GemmStoreConfig {
  /** C is read (`beta != 0`). */
  readonly beta: boolean;
  /** How the bias broadcasts. */
  readonly bias: "none" | "row" | "col";
  /** C's columns are stored in segments (`segment` set: conv2d's NCHW output). */
  readonly segmented: boolean;
  /** Activation of the store. */
  readonly activation: ActivationKind | undefined;
  /** C's rows are stored in groups (`rowGroups` set; needs `segmented`). */
  readonly rowGroups?: boolean;
}

/** The specialization of a register or shared kernel that a dispatch compiles. */
export interface GemmConfig extends GemmStoreConfig {
  /** The kernel family. */
  readonly variant: GemmVariant;
  /** A stored k-major. */
  readonly transA: boolean;
  /** B stored n-major. */
  readonly transB: boolean;
  /** A loaded as vec4s along its contiguous dimension (register family). */
  readonly vecA: boolean;
  /** B loaded as vec4s along its contiguous dimension (register family). */
  readonly vecB: boolean;
  /** B's columns are read in segments (`segmentB` set: NCHW activations as one matrix). */
  readonly segmentedB: boolean;
  /** A's k dimension is read in segments (`segmentKA` set; a kernel of its own, `_ska`). */
  readonly segmentedKA?: boolean;
  /** B's k dimension is read in segments (`segmentKB` set; a kernel of its own, `_skb`). */
  readonly segmentedKB?: boolean;
  /** C stored (and read) as vec4s of 4 consecutive columns (register family). */
  readonly vecC: boolean;
  /** Rows of C per thread. */
  readonly tm: number;
  /** Columns of C per thread. */
  readonly tn: number;
  /** Rows of C per workgroup. */
  readonly rowsPerGroup: number;
  /** Columns of C per workgroup. */
  readonly colsPerGroup: number;
  /** Multiple that k-chunk boundaries keep (4 when an operand is vectorized along k). */
  readonly kAlign: number;
}

/** Most row groups of C (`StridedGemm.rowGroups`). */
export const MAX_ROW_GROUPS = 4;

/**
 * The `Params` of C's row groups (the `rows` store; see `StridedGemm.rowGroups`), at the end of
 * both kernels' `Params`: group g's first row (group 0 starts at row 0; an unused group's first
 * row is m or more), its first element in its binding and its segment stride; bit g of
 * `rgSecond`: group g is stored into binding `c2`.
 */
export const ROW_GROUP_PARAMS = {
  rgRow1: "u32",
  rgRow2: "u32",
  rgRow3: "u32",
  rgBase0: "u32",
  rgBase1: "u32",
  rgBase2: "u32",
  rgBase3: "u32",
  rgStride0: "u32",
  rgStride1: "u32",
  rgStride2: "u32",
  rgStride3: "u32",
  rgSecond: "u32",
} as const;

/**
 * The `Params` of the register and shared kernels (WGSL struct order). `kOff` is the first k of
 * the dispatch's pass (k-passes): operands read in k segments index from it, the others start
 * their range there.
 */
export const GEMM_PARAMS = {
  m: "u32",
  n: "u32",
  k: "u32",
  batch: "u32",
  lda: "u32",
  ldb: "u32",
  ldc: "u32",
  seg: "u32",
  segStride: "u32",
  sA: "u32",
  sB: "u32",
  sC: "u32",
  aOff: "u32",
  bOff: "u32",
  cOff: "u32",
  biasOff: "u32",
  sBias: "u32",
  kChunk: "u32",
  alpha: "f32",
  beta: "f32",
  ldcCol: "u32",
  segB: "u32",
  segStrideB: "u32",
  kOff: "u32",
  segKA: "u32",
  segStrideKA: "u32",
  segKB: "u32",
  segStrideKB: "u32",
  ...ROW_GROUP_PARAMS,
} as const;

/** The `Params` of the split-K epilogue (WGSL struct order). */
export const EPILOGUE_PARAMS = {
  m: "u32",
  n: "u32",
  splits: "u32",
  batch: "u32",
  ldc: "u32",
  seg: "u32",
  segStride: "u32",
  sC: "u32",
  cOff: "u32",
  biasOff: "u32",
  sBias: "u32",
  alpha: "f32",
  beta: "f32",
  ldcCol: "u32",
  ...ROW_GROUP_PARAMS,
} as const;

/** Values of {@linkcode GEMM_PARAMS}. */
export type GemmParamValues = { readonly [K in keyof typeof GEMM_PARAMS]: number };
/** Values of {@linkcode EPILOGUE_PARAMS}. */
export type EpilogueParamValues = { readonly [K in keyof typeof EPILOGUE_PARAMS]: number };

/** What a product dispatch binds: its operands' ranges (`bias` and `c2` when its variant has them). */
export interface GemmProductBindings {
  /** A's range. */
  readonly a: TensorRange;
  /** B's range. */
  readonly b: TensorRange;
  /** C's range. */
  readonly c: TensorRange;
  /** The bias's range. */
  readonly bias?: TensorRange;
  /** The second tensor of C's row groups. */
  readonly c2?: TensorRange;
}

/** A dispatch of a register or shared kernel: products of a k-range into C or a scratch. */
export interface GemmProductDispatch {
  /** The kernel family. */
  readonly kernel: GemmVariant;
  /** Its specialization. */
  readonly config: GemmConfig;
  /** Its `Params`. */
  readonly params: GemmParamValues;
  /** What each binding binds (`bias` only when the configuration has one). */
  readonly bindings: {
    readonly a: GemmOperand;
    readonly b: GemmOperand;
    readonly c: GemmOperand;
    readonly bias?: GemmOperand;
    readonly c2?: GemmOperand;
  };
  /** Workgroups: tiles along n, tiles along m, batch times k-splits. */
  readonly workgroups: readonly [number, number, number];
}

/**
 * A dispatch of the epilogue: sums `splits` f32 partial results per element of C, then applies
 * alpha, beta, bias, the activation and C's mapping.
 */
export interface GemmEpilogueDispatch {
  /** The epilogue kernel. */
  readonly kernel: "epilogue";
  /** Its specialization. */
  readonly config: GemmStoreConfig;
  /** Its `Params`. */
  readonly params: EpilogueParamValues;
  /** What each binding binds (`bias` only when the configuration has one). */
  readonly bindings: {
    readonly part: GemmOperand;
    readonly c: GemmOperand;
    readonly bias?: GemmOperand;
    readonly c2?: GemmOperand;
  };
  /** Workgroups: one thread per element of C (a `grid1d` launch). */
  readonly workgroups: readonly [number, number, number];
}

/** One dispatch of a plan. */
export type GemmDispatch = GemmProductDispatch | GemmEpilogueDispatch;

/** One sequential pass over a k-range. */
export interface GemmPass {
  /** First k of the range. */
  readonly k0: number;
  /** Length of the range. */
  readonly k: number;
  /** Whether it runs swapped, `C^T = op(B)^T op(A)^T` (its dispatches are the swapped ones). */
  readonly swap: boolean;
  /** The configuration of its product kernel (the partial products' under split-K). */
  readonly config: GemmConfig;
  /** Workgroups of its product kernel. */
  readonly grid: readonly [number, number, number];
  /** k-splits (1: one dispatch over the whole range). */
  readonly splits: number;
  /** k per split (a multiple of `config.kAlign`; the whole range without split-K). */
  readonly kChunk: number;
  /** Elements of the `partials` scratch it uses (0 without split-K). */
  readonly partials: number;
  /** Its dispatches: the products, then (split-K) the epilogue. */
  readonly dispatches: readonly GemmDispatch[];
}

/** Everything `gemmStrided` records for a problem: a plain value. */
export interface GemmPlan {
  /** The kernel family. */
  readonly variant: GemmVariant;
  /** Whether the first pass runs swapped (false when nothing runs). */
  readonly swap: boolean;
  /** The register tile of the first pass (`[4, 4]` for the shared family and when nothing runs). */
  readonly tile: readonly [number, number];
  /** The k-splits of the first pass (1 when nothing runs). */
  readonly splitK: number;
  /** The k-passes in order (none for an empty C). */
  readonly passes: readonly GemmPass[];
  /** The epilogue after the passes, when they sum into the `accumulator` (f16 C). */
  readonly epilogue: GemmEpilogueDispatch | undefined;
  /** Elements of the f32 scratch buffers (0: not used); the runner allocates and frees them. */
  readonly scratch: { readonly accumulator: number; readonly partials: number };
}

/** Threads per side of the register kernel's workgroup. */
export const REGISTER_WG = 8;
/** Threads per side of the shared-memory kernel's workgroup. */
export const SHARED_T = 16;
/** Rows of C per workgroup of the shared-memory kernel. */
export const SHARED_BM = 64;
/** Columns of C per workgroup of the shared-memory kernel. */
export const SHARED_BN = 64;
/** Threads per workgroup of the split-K epilogue. */
export const EPILOGUE_WG = 64;
