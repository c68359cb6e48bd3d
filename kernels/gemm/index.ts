/**
 * GEMM: `C = alpha * op(A) op(B) + beta * C (+ bias)` with transposes and batches, optionally
 * through an activation fused into the store: the engine behind linear and conv2d. Also
 * `sumRows`, the column sums that give linear's bias gradient.
 *
 * Every operand (A, B, C, bias; x and y of the reductions) is stored as f32 or f16, each on its
 * own (see `_dtype.ts`): the kernels convert f16 on load, multiply and accumulate in f32 and
 * round once when storing an f16 C. Intermediate results (split-K partial sums, k-pass sums for
 * an f16 C, partial reductions) stay f32.
 *
 * The family, one file per part:
 * - `index.ts` (this module): the entry points (`checkGemm`, `gemm`, `gemmStrided`) and the
 *   runner of a plan (`runGemmPlan`), which allocates the plan's scratch and records its
 *   dispatches;
 * - `types.ts`: the problem and the plan, as plain values; `plan.ts`: `planGemm`, the pure
 *   planner (family, k-passes, orientation, register tile, vec4 loads, split-K); `cost.ts`: its
 *   cost model;
 * - the kernels, each described once with `defineKernel`: `register.ts` (CPU adapters such as
 *   llvmpipe: register blocks, no shared memory), `shared.ts` (GPUs: workgroup-memory tiles),
 *   `epilogue.ts` (split-K's and the f16 k-passes' final sums), and `store.ts`, what they share
 *   (their variants and the store of C);
 * - `reduce.ts`: `reduceStrided` and `sumRows`.
 *
 * llvmpipe caveat: gallivm stops the loops of one invocation after 65535 iterations in total,
 * silently. Every kernel here bounds its loop trip counts (k is cut into passes, reductions
 * into splits).
 *
 * @module
 */

import { formatShape, type Gpu, type KernelSpec, type Shape, type Tensor } from "../../gpu/mod.ts";
import { type ActivationKind, checkActivationKind } from "../_activation_wgsl.ts";
import { adapterProfile } from "../_adapter.ts";
import { tunedGemm } from "../autotune/table.ts";
import { bindingRange, maxBindingElements, type TensorRange } from "../_binding.ts";
import { floatDTypes } from "../_dtype.ts";
import type { GemmTuning, StridedGemm } from "../_types.ts";
import { dispatchEpilogue, epilogueKernel } from "./epilogue.ts";
import { gemmProblem, planDispatches, planGemm } from "./plan.ts";
import { dispatchRegister, dispatchRegisterStats, registerKernel } from "./register.ts";
import { dispatchShared, dispatchSharedStats, sharedKernel } from "./shared.ts";
import { type GemmStatsLayout, gemmStatsLayout, type StatsAxis } from "./stats.ts";
import type { ChannelPartials } from "../batchnorm/partials.ts";
import { bnFusionMode } from "../batchnorm/fusion_mode.ts";
import { gemmVariant, type SharedVariant, type StoreVariant } from "./store.ts";
import type { GemmDispatch, GemmOperand, GemmPlan } from "./types.ts";

export type { GemmTuning, GemmVariant, StridedGemm } from "../_types.ts";
export { gemmProblem, planDispatches, planGemm } from "./plan.ts";
export { reduceStrided, type StridedReduce, sumRows } from "./reduce.ts";
export { type GemmStatsLayout, gemmStatsLayout, type StatsAxis, statsOnAdapter } from "./stats.ts";
export type {
  GemmConfig,
  GemmDispatch,
  GemmEpilogueDispatch,
  GemmOperand,
  GemmOperandShape,
  GemmPass,
  GemmPlan,
  GemmProblem,
  GemmProductDispatch,
  GemmStoreConfig,
} from "./types.ts";

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
  p: GemmParams & GemmTuning & {
    /**
     * Also gather per-channel partial statistics of the stored C (channels: its rows or
     * columns) for a batch normalization: returned where the plan can and the adapter's decision
     * allows (`gemmStatsLayout`; one batch chunk), else `undefined`. Default: none.
     */
    readonly stats?: StatsAxis;
  },
): ChannelPartials | undefined {
  checkGemm(p, { a: io.a.shape, b: io.b.shape, c: io.c.shape, bias: io.bias?.shape });
  floatDTypes("gemm", io);
  const { m, n, k } = p;
  const batch = p.batch ?? 1;
  const gpu = io.c.gpu;
  if (m === 0 || n === 0) return undefined;
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
  let partials: ChannelPartials | undefined;
  for (let b0 = 0; b0 < batch; b0 += chunk) {
    const nb = Math.min(chunk, batch - b0);
    const g: StridedGemm = {
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
    };
    // Statistics: one chunk whose plan can gather them (gemmStatsLayout), else none.
    if (p.stats && chunk >= batch) {
      checkActivationKind("gemm", g.activation);
      const plan = planGemm(gemmProblem(g), adapterProfile(gpu), tunedGemm(gpu, g, p));
      const layout = gemmStatsLayout(
        plan,
        p.stats,
        adapterProfile(gpu),
        bnFusionMode(gpu, "batchStats"),
      );
      if (layout) {
        const channels = p.stats === "row" ? m : n;
        const out = gpu.empty([channels * layout.tiles * 4]);
        runGemmPlan(gpu, g, plan, { layout, out: bindingRange(out, 0, out.size), base: 0 });
        partials = { partials: out, tiles: layout.tiles };
        continue;
      }
    }
    gemmStrided(gpu, g, p);
  }
  return partials;
}

/**
 * Records a {@linkcode StridedGemm} (the common engine of `gemm` and `conv2d`): the autotuner's
 * choice for it on this adapter, if any (unless `tuning` forces knobs), then
 * {@linkcode planGemm}'s plan, run by {@linkcode runGemmPlan}. The tensors of `a`, `b`, `c` and
 * `bias` are f32 or f16 each; arithmetic is f32, an f16 C is rounded once.
 *
 * @throws {TypeError} when an operand's tensor is not f32/f16 (or f16 without `shader-f16`).
 * @throws {RangeError} for an unknown activation or a grid beyond the device's limits.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { bindingRange } from "../_binding.ts";
 * import { gemmStrided } from "./index.ts";
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
  floatDTypes("gemm", {
    a: g.a.tensor,
    b: g.b.tensor,
    c: g.c.tensor,
    c2: g.c2?.tensor,
    bias: g.bias?.tensor,
  });
  if (g.m === 0 || g.n === 0 || g.batch === 0) return;
  // Nothing forced: the autotuner's choice for this problem on this adapter, if any.
  tuning = tunedGemm(gpu, g, tuning);
  runGemmPlan(gpu, g, planGemm(gemmProblem(g), adapterProfile(gpu), tuning));
}

/**
 * Where a GEMM plan's statistics dispatch writes its partial statistics (`runGemmPlan`).
 */
export interface GemmStatsTarget {
  /** The plan's layout ({@linkcode gemmStatsLayout}). */
  readonly layout: GemmStatsLayout;
  /** The `[channels, tiles, 4]` f32 scratch. */
  readonly out: TensorRange;
  /** This dispatch's first tile. */
  readonly base: number;
  /** Tiles per channel in all (default the layout's: one producer). */
  readonly tiles?: number;
}

/**
 * Runs a plan of `g` (from {@linkcode planGemm} for `g`'s problem): allocates its scratch
 * buffers, records its dispatches in order, binding each operand the plan names to `g`'s tensor
 * ranges or to a scratch buffer, then frees the scratch. With `stats` (a layout of
 * {@linkcode gemmStatsLayout} for the plan), the plan's last dispatch also gathers C's partial
 * batch statistics.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { bindingRange } from "../_binding.ts";
 * import { gemmProblem, planGemm, runGemmPlan } from "./index.ts";
 * const gpu = await getGpu();
 * const a = gpu.zeros([4, 3]), b = gpu.zeros([3, 5]), c = gpu.empty([4, 5]);
 * const g = {
 *   m: 4, n: 5, k: 3, batch: 1, transA: false, transB: false, alpha: 1, beta: 0,
 *   a: bindingRange(a, 0, 12), b: bindingRange(b, 0, 15), c: bindingRange(c, 0, 20),
 *   lda: 3, ldb: 5, ldc: 5, strideA: 0, strideB: 0, strideC: 0, biasMode: "none",
 * } as const;
 * // The shared-memory kernel, as a GPU with WebGPU's default limits would run it.
 * runGemmPlan(gpu, g, planGemm(gemmProblem(g), WEBGPU_DEFAULT_PROFILE));
 * ```
 */
export function runGemmPlan(
  gpu: Gpu,
  g: StridedGemm,
  plan: GemmPlan,
  stats?: GemmStatsTarget,
): void {
  const scratch = new Map<GemmOperand, TensorRange>();
  for (const ref of ["accumulator", "partials"] as const) {
    const size = plan.scratch[ref];
    if (size > 0) scratch.set(ref, bindingRange(gpu.empty([size]), 0, size));
  }
  // Row groups all stored into C still bind a `c2`: a one-vec4 stand-in, never written (C
  // itself cannot be bound twice: WebGPU forbids overlapping writable bindings).
  let standIn: TensorRange | undefined;
  const _standIn = (): TensorRange => {
    if (!standIn) {
      standIn = bindingRange(gpu.empty([4], { dtype: g.c.tensor.dtype }), 0, 4);
      scratch.set("c2", standIn);
    }
    return standIn;
  };
  const bind = (ref: GemmOperand): TensorRange => {
    const r = ref === "a"
      ? g.a
      : ref === "b"
      ? g.b
      : ref === "c"
      ? g.c
      : ref === "bias"
      ? g.bias
      : ref === "c2"
      ? g.c2 ?? _standIn()
      : scratch.get(ref);
    if (r === undefined) {
      throw new TypeError(`gemm: the plan binds '${ref}', which the problem lacks`);
    }
    return r;
  };
  try {
    const dispatches = planDispatches(plan);
    for (const [i, d] of dispatches.entries()) {
      const bias = {
        ...(d.bindings.bias === undefined ? {} : { bias: bind(d.bindings.bias) }),
        ...(d.bindings.c2 === undefined ? {} : { c2: bind(d.bindings.c2) }),
      };
      if (d.kernel === "epilogue") {
        dispatchEpilogue(d, { part: bind(d.bindings.part), c: bind(d.bindings.c), ...bias });
      } else {
        const bound = {
          a: bind(d.bindings.a),
          b: bind(d.bindings.b),
          c: bind(d.bindings.c),
          ...bias,
        };
        // Statistics: in the last dispatch, the product of the last pass (gemmStatsLayout).
        const st = stats && i === dispatches.length - 1 ? stats : undefined;
        const where = st && {
          axis: st.layout.axis,
          tiles: st.tiles ?? st.layout.tiles,
          base: st.base,
          tilesX: st.layout.tilesX,
        };
        if (st && where && d.kernel === "shared") {
          dispatchSharedStats(d, { ...bound, stats: st.out }, where);
        } else if (st && where) dispatchRegisterStats(d, { ...bound, stats: st.out }, where);
        else if (d.kernel === "shared") dispatchShared(d, bound);
        else dispatchRegister(d, bound);
      }
    }
  } finally {
    for (const r of scratch.values()) r.tensor.dispose();
  }
}

/**
 * The kernel a planned dispatch compiles, for f32 operands (its f16 specializations differ only
 * in their loads and stores): its WGSL, and threads per workgroup. Tests check plans against an
 * adapter's limits with it.
 *
 * @returns The kernel's spec and its workgroup size.
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { dispatchKernel, planDispatches, planGemm } from "./index.ts";
 * const plan = planGemm({
 *   m: 4, n: 5, k: 3, batch: 1, transA: false, transB: false, alpha: 1, beta: 0,
 *   a: { base: 0, dtype: "f32" }, b: { base: 0, dtype: "f32" }, c: { base: 0, dtype: "f32" },
 *   lda: 3, ldb: 5, ldc: 5, strideA: 0, strideB: 0, strideC: 0, biasMode: "none",
 * }, WEBGPU_DEFAULT_PROFILE);
 * dispatchKernel(planDispatches(plan)[0]).spec.name; // "gemm_smem_nn_4x4"
 * ```
 */
export function dispatchKernel(
  d: GemmDispatch,
): { spec: KernelSpec; workgroupSize: number | readonly [number, number, number] } {
  const f32 = { a: "f32", b: "f32", c: "f32", bias: "f32" } as const;
  if (d.kernel === "epilogue") {
    const variant = gemmVariant(d.config) as StoreVariant;
    return {
      spec: epilogueKernel.spec(f32, variant),
      workgroupSize: epilogueKernel.descriptor.workgroupSize,
    };
  }
  const c = d.config;
  if (d.kernel === "shared") {
    const k = sharedKernel(c.transA, c.transB, !!c.segmentedKA, !!c.segmentedKB);
    return {
      spec: k.spec(f32, gemmVariant(c) as SharedVariant),
      workgroupSize: k.descriptor.workgroupSize,
    };
  }
  const k = registerKernel(c.transA, c.transB, c.tm, c.tn, !!c.segmentedKA, !!c.segmentedKB);
  return { spec: k.spec(f32, gemmVariant(c)), workgroupSize: k.descriptor.workgroupSize };
}
