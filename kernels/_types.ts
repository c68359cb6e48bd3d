/**
 * The records that the GEMM engine (`gemm/`), conv2d (`conv2d/`) and the tuning table
 * (`autotune/table.ts`) share: the tuning knobs, a strided GEMM problem and conv2d's kernel
 * options. They are declared here, types only and importing no kernel, so that the table can
 * name them while gemm/ and conv2d/ consult the table, with no import cycle (type-only ones
 * included). gemm/index.ts and conv2d/index.ts re-export them; `GemmTuning`, `GemmVariant` and
 * `Conv2dKernelOptions` are public through `kernels/mod.ts`.
 *
 * @module
 */

import type { TensorRange } from "./_binding.ts";
import type { ActivationKind } from "./_activation_wgsl.ts";

/**
 * Tuning knobs of `gemm` for tests and benchmarks (the defaults pick per adapter).
 */
export interface GemmTuning {
  /** Force a kernel family: `register` (CPU adapters) or `shared` (GPUs). */
  readonly variant?: GemmVariant;
  /** Force the register block `[TM, TN]` of the register family (TM in 1|2|4|8|16, TN in 4|8|16). */
  readonly tile?: readonly [number, number];
  /** Force the number of k-splits (1 = no split-K). */
  readonly splitK?: number;
  /**
   * Compute `C^T = op(B)^T op(A)^T` instead (register family, C not segmented): SIMD lanes then
   * run along m instead of n. Default: chosen by the cost model (for skinny C).
   */
  readonly swap?: boolean;
}

/** A group of C's rows stored at its own place (`StridedGemm.rowGroups`). */
export interface GemmRowGroup {
  /** First row of the group (rows up to the next group's first, or m). */
  readonly row: number;
  /**
   * Element where the group's row 0, column 0 goes, from the start of C's range (or of `c2`'s,
   * with `second`).
   */
  readonly base: number;
  /** The group is stored into `c2` instead of `c` (default false). */
  readonly second?: boolean;
  /** Stride between column segments of the group's rows. */
  readonly segmentStride: number;
}

/** The GEMM kernel families. */
export type GemmVariant = "register" | "shared";

/**
 * A GEMM over ranges of tensors with explicit strides, as conv2d needs it:
 * `A(i, kk)` is `a[i * lda + kk]` (or `a[kk * lda + i]` when `transA`), `B(kk, j)` is
 * `b[kk * ldb + j]` (or `b[j * ldb + kk]` when `transB`), batch `z` adds `z * strideX`.
 * C element `(i, j)` is stored at `i * ldc + j`, or, with `segment` set, at
 * `floor(j / segment) * segmentStride + i * ldc + j % segment` (NCHW output from a GEMM whose
 * columns run over images and pixels). With `rowGroups` (and `segment`), the rows of C are split
 * into groups, each stored from its own element with its own segment stride, in C or in a second
 * tensor `c2` (see {@linkcode GemmRowGroup}): one product whose rows land in several tensors,
 * e.g. an Inception block's merged 1x1 convolutions. Bias is per row (`biasMode: "row"`, index
 * `z * strideBias + i`) or per column (`"col"`, index `j`). With `activation`, every stored
 * element is `f(alpha * op(A) op(B) + beta * C + bias)`.
 */
export interface StridedGemm {
  /** Rows of C. */
  readonly m: number;
  /** Columns of C. */
  readonly n: number;
  /** Reduced dimension. */
  readonly k: number;
  /** Independent products (z of the grid). */
  readonly batch: number;
  /** A stored k-major. */
  readonly transA: boolean;
  /** B stored n-major. */
  readonly transB: boolean;
  /** Product scale. */
  readonly alpha: number;
  /** Prior C scale (0: C not read). */
  readonly beta: number;
  /** A's elements (an f32 or f16 tensor). */
  readonly a: TensorRange;
  /** B's elements (an f32 or f16 tensor). */
  readonly b: TensorRange;
  /** C's elements (an f32 or f16 tensor). */
  readonly c: TensorRange;
  /** Row stride of A as stored. */
  readonly lda: number;
  /** Row stride of B as stored. */
  readonly ldb: number;
  /** Row stride of C. */
  readonly ldc: number;
  /** Column stride of C (default 1; ignored with `segment`). */
  readonly ldcCol?: number;
  /** Batch stride of A (0: shared by every batch). */
  readonly strideA: number;
  /** Batch stride of B. */
  readonly strideB: number;
  /** Batch stride of C. */
  readonly strideC: number;
  /** Column segment length of C's store mapping (see above); omit for plain rows. */
  readonly segment?: number;
  /** Stride between column segments of C. */
  readonly segmentStride?: number;
  /**
   * Column segment length of B (B stored `[k, n]`, not `transB`): `B(kk, j)` is then
   * `b[kk * ldb + floor(j / segmentB) * segmentStrideB + j % segmentB]` (NCHW activations read
   * as one matrix `[channels, images * pixels]`); omit for plain rows.
   */
  readonly segmentB?: number;
  /** Stride between column segments of B. */
  readonly segmentStrideB?: number;
  /**
   * k segment length of A (A stored `[m, k]`, not `transA`): `A(i, kk)` is then
   * `a[i * lda + floor(kk / segmentKA) * segmentStrideKA + kk % segmentKA]` (an NCHW gradient
   * `dy[images, m, pixels]` read as `[m, images * pixels]`: lda = pixels, segmentKA = pixels,
   * segmentStrideKA = m * pixels); omit for plain rows.
   */
  readonly segmentKA?: number;
  /** Stride between k segments of A. */
  readonly segmentStrideKA?: number;
  /**
   * k segment length of B (B stored `[n, k]`, `transB`): `B(kk, j)` is then
   * `b[j * ldb + floor(kk / segmentKB) * segmentStrideKB + kk % segmentKB]` (NCHW activations
   * `x[images, n, pixels]` read as `[n, images * pixels]`); omit for plain rows.
   */
  readonly segmentKB?: number;
  /** Stride between k segments of B. */
  readonly segmentStrideKB?: number;
  /**
   * Groups of C's rows, at most 4 (`MAX_ROW_GROUPS` of `gemm/types.ts`), in row order, the
   * first from row 0; needs `segment`. Row `i` of group `g` (`row_g <= i < row_{g+1}`) is stored at element
   * `base_g + (i - row_g) * ldc + floor(j / segment) * segmentStride_g + j % segment` of C (plus
   * `z * strideC`), instead of C's own mapping, of `c` or, with the group's `second`, of `c2`.
   * Omit for the plain mapping.
   */
  readonly rowGroups?: readonly GemmRowGroup[] | undefined;
  /**
   * The second tensor of C's row groups (groups with `second`): two tensors that one dispatch
   * writes, e.g. a concatenation and the outputs later kernels read while writing into it (a
   * buffer bound read-only and read-write in one dispatch is invalid in WebGPU). Same dtype as C;
   * its range must not overlap C's (WebGPU also forbids overlapping writable bindings). Without
   * it, row groups all stored into C bind a small stand-in as `c2`.
   */
  readonly c2?: TensorRange | undefined;
  /** Bias elements (an f32 or f16 tensor). */
  readonly bias?: TensorRange | undefined;
  /** How bias broadcasts. */
  readonly biasMode: "none" | "row" | "col";
  /** Batch stride of a row bias. */
  readonly strideBias?: number;
  /**
   * Activation applied to each C element as it is stored (after alpha, beta and bias); with
   * split-K in the final epilogue, with k-passes in the last pass only. Default: none.
   */
  readonly activation?: ActivationKind | undefined;
}

/** Options of the conv2d host functions for tests and benchmarks. */
export interface Conv2dKernelOptions {
  /**
   * Most bytes one im2col buffer (and one bound range of x, y, dx, dy) should take: chunks of
   * images are sized by it (at least one image per chunk). Default: 64 MiB, capped by the
   * device's `maxStorageBufferBindingSize`.
   */
  readonly maxChunkBytes?: number;
  /** GEMM tuning passed through (tests force kernel variants with it). */
  readonly gemm?: GemmTuning;
  /**
   * 1x1 convolutions (stride 1, no padding, one group) with at least this many output pixels
   * per image run as GEMMs straight on x and y (no im2col, no direct kernel); default 1 (all of
   * them). `Infinity` sends them to the other paths.
   */
  readonly pointwiseMinPixels?: number;
  /**
   * Direct convolution kernels (no im2col; see `conv2d/direct.ts`) for the forward pass, the
   * input gradient (stride 1, one group) and the weight and bias gradients: `true` uses them
   * wherever they can run (one group, kernel rows of at most 16 taps, within their unrolling
   * budgets), `false` never. Default: on CPU adapters, for convolutions of at least 2^23
   * multiply-adds (their compile time must pay off), in each pass where they are estimated to
   * be faster (LeNet's convolutions and every model's first layer, for instance).
   */
  readonly direct?: boolean;
}
