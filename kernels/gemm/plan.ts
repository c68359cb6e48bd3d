/**
 * GEMM planning: which kernels compute a strided GEMM, and how. {@linkcode planGemm} is a pure
 * function of the problem (a `StridedGemm` without its tensors, {@linkcode GemmProblem}), the
 * adapter's profile and a tuning. Its {@linkcode GemmPlan} is a plain value listing every
 * dispatch (kernel configuration, `Params` values, what each binding binds, grid) and the sizes
 * of the scratch buffers, so that the runner (`index.ts`) only allocates scratch and records the
 * dispatches, the autotuner compares plans, and tests assert on plans.
 *
 * The decisions, in order:
 * - **family**: `register` on CPU adapters, `shared` on GPUs (or as tuned);
 * - **k-passes**: a reduction longer than one dispatch's loop budget runs as sequential passes
 *   over k-ranges (llvmpipe stops an invocation's loops after 65535 iterations, silently), each
 *   after the first adding to C; with an f16 C they sum into an f32 accumulator instead, and an
 *   epilogue rounds once;
 * - per pass, the **orientation** (skinny products computed as `C^T = op(B)^T op(A)^T`, so that
 *   SIMD lanes run along the long side), the **register tile** (a cost model of llvmpipe's loads
 *   and stores), vec4 loads and stores (from the operands' alignment facts) and **split-K**
 *   (long reductions over few output tiles: partial products into scratch, summed by an
 *   epilogue).
 *
 * The records (problem, plan, dispatches) are in `types.ts`, a pass's orientation and kernel
 * configuration in `config.ts`, the cost model in `cost.ts`.
 *
 * @module
 */

import { grid1d } from "../../gpu/mod.ts";
import { checkActivationKind } from "../_activation_wgsl.ts";
import { type AdapterProfile, bindingElements } from "../_adapter.ts";
import type { GemmTuning, GemmVariant, StridedGemm } from "../_types.ts";
import { type Bound, chooseConfig, type Operand, shouldSwap, swapped } from "./config.ts";
import { chooseSplitK } from "./cost.ts";
import {
  EPILOGUE_WG,
  type GemmConfig,
  type GemmDispatch,
  type GemmEpilogueDispatch,
  type GemmOperandShape,
  type GemmPass,
  type GemmPlan,
  type GemmProblem,
  type GemmProductDispatch,
  type GemmStoreConfig,
  MAX_ROW_GROUPS,
  type ROW_GROUP_PARAMS,
} from "./types.ts";

/**
 * The problem of a strided GEMM: `g` without its tensors (each operand's offset and dtype).
 *
 * @returns The problem, for {@linkcode planGemm}.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { bindingRange } from "../_binding.ts";
 * import { gemmProblem } from "./plan.ts";
 * const gpu = await getGpu();
 * const a = gpu.zeros([4, 3]), b = gpu.zeros([3, 5]), c = gpu.empty([4, 5]);
 * gemmProblem({
 *   m: 4, n: 5, k: 3, batch: 1, transA: false, transB: false, alpha: 1, beta: 0,
 *   a: bindingRange(a, 0, 12), b: bindingRange(b, 0, 15), c: bindingRange(c, 0, 20),
 *   lda: 3, ldb: 5, ldc: 5, strideA: 0, strideB: 0, strideC: 0, biasMode: "none",
 * }).a; // { base: 0, dtype: "f32" }
 * ```
 */
export function gemmProblem(g: StridedGemm): GemmProblem {
  const shape = (r: { base: number; tensor: { dtype: string } }): GemmOperandShape => ({
    base: r.base,
    dtype: r.tensor.dtype === "f16" ? "f16" : "f32",
  });
  return {
    ...g,
    a: shape(g.a),
    b: shape(g.b),
    c: shape(g.c),
    c2: g.c2 ? shape(g.c2) : undefined,
    bias: g.bias ? shape(g.bias) : undefined,
  };
}

/**
 * The dispatches of a plan in the order they run.
 *
 * @returns Each pass's dispatches, then the plan's epilogue.
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { planDispatches, planGemm } from "./plan.ts";
 * const plan = planGemm({
 *   m: 4, n: 5, k: 3, batch: 1, transA: false, transB: false, alpha: 1, beta: 0,
 *   a: { base: 0, dtype: "f32" }, b: { base: 0, dtype: "f32" }, c: { base: 0, dtype: "f32" },
 *   lda: 3, ldb: 5, ldc: 5, strideA: 0, strideB: 0, strideC: 0, biasMode: "none",
 * }, WEBGPU_DEFAULT_PROFILE);
 * planDispatches(plan).map((d) => d.kernel); // ["shared"]
 * ```
 */
export function planDispatches(plan: GemmPlan): GemmDispatch[] {
  const out = plan.passes.flatMap((p) => p.dispatches);
  if (plan.epilogue) out.push(plan.epilogue);
  return out;
}

// ------------------------------------------------------------------------ planning ----

/**
 * Most k per register-kernel dispatch. llvmpipe (gallivm) caps the loop iterations of one
 * invocation at 65535 in total and silently skips the rest, so a k-loop (4 k per iteration)
 * must stay well below that. Harmless elsewhere.
 */
const MAX_K_REGISTER = 4 * 60000;
/** Most k per shared-memory-kernel dispatch (about 25 loop iterations per 16 k). */
const MAX_K_SHARED = 32768;

/** What every pass of one plan shares. */
interface Context {
  readonly variant: GemmVariant;
  readonly tuning: GemmTuning;
  readonly profile: AdapterProfile;
  /** Elements one binding may span. */
  readonly elements: number;
  /** CPU cores (the register cost model keeps every core busy). */
  readonly cores: number;
}

/**
 * Plans a strided GEMM (see the module documentation): pure, it needs no `Gpu` and reads nothing
 * but its arguments (the profile holds the CPU core count the register family's cost model
 * uses). `tuning` forces knobs (the family, the register tile, the orientation, the k-splits);
 * the rest follows the profile and the cost model.
 *
 * @returns The plan: every dispatch and the scratch sizes.
 * @throws {RangeError} for an unknown activation, a register tile the family does not have, or a
 * batch or grid beyond the profile's workgroup limits.
 * @throws {TypeError} for a bias mode without a bias.
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { planGemm } from "./plan.ts";
 * const plan = planGemm({
 *   m: 4, n: 5, k: 3, batch: 1, transA: false, transB: false, alpha: 1, beta: 0,
 *   a: { base: 0, dtype: "f32" }, b: { base: 0, dtype: "f32" }, c: { base: 0, dtype: "f32" },
 *   lda: 3, ldb: 5, ldc: 5, strideA: 0, strideB: 0, strideC: 0, biasMode: "none",
 * }, WEBGPU_DEFAULT_PROFILE);
 * console.log(plan.variant, plan.passes.length); // shared 1
 * ```
 */
export function planGemm(
  problem: GemmProblem,
  profile: AdapterProfile,
  tuning: GemmTuning = {},
): GemmPlan {
  checkActivationKind("gemm", problem.activation);
  if (problem.biasMode !== "none" && problem.bias === undefined) {
    throw new TypeError(`gemm: bias mode '${problem.biasMode}' without a bias`);
  }
  if (problem.segmentB !== undefined && (problem.transB || !(problem.segmentB > 0))) {
    throw new RangeError(
      `gemm: segmentB ${problem.segmentB} needs B stored [k, n] (transB false) and a length > 0`,
    );
  }
  checkKSegments(problem);
  checkRowGroups(problem);
  const variant = tuning.variant ?? (profile.isCpu ? "register" : "shared");
  const { m, n, k, batch } = problem;
  const none = { accumulator: 0, partials: 0 };
  if (m === 0 || n === 0 || batch === 0) {
    return {
      variant,
      swap: false,
      tile: [4, 4],
      splitK: 1,
      passes: [],
      epilogue: undefined,
      scratch: none,
    };
  }
  const maxWg = profile.limits.maxComputeWorkgroupsPerDimension;
  if (batch > maxWg) throw new RangeError(`gemm: batch ${batch} exceeds ${maxWg}`);
  const ctx: Context = {
    variant,
    tuning,
    profile,
    elements: bindingElements(profile.limits),
    cores: profile.cores,
  };
  const g: Bound = {
    ...problem,
    a: { ...problem.a, ref: "a" },
    b: { ...problem.b, ref: "b" },
    c: { ...problem.c, ref: "c" },
    c2: problem.c2 ? { ...problem.c2, ref: "c2" } : undefined,
    bias: problem.bias ? { ...problem.bias, ref: "bias" } : undefined,
  };
  // A reduction longer than one dispatch runs as passes over k-ranges: each pass after the first
  // adds to the target (beta = 1, no bias), only the last applies the activation. The target is
  // C, except that an f16 C is no accumulator: then the passes sum raw products into an f32
  // scratch (no rounding to f16 between passes), and an epilogue applies alpha, beta, bias, the
  // activation and C's mapping, rounding once.
  const kPass = passK(k, variant);
  const acc: Operand | undefined = kPass < k && problem.c.dtype === "f16" &&
      batch * m * n <= ctx.elements
    ? { ref: "accumulator", base: 0, dtype: "f32" }
    : undefined;
  const target: Bound = acc
    ? {
      ...g,
      ...into(acc, g),
      alpha: 1,
      beta: 0,
      bias: undefined,
      biasMode: "none",
      activation: undefined,
    }
    : g;
  const passes: GemmPass[] = [];
  // (k = 0 is one pass.)
  for (let k0 = 0, pass = 0; pass === 0 || k0 < k; k0 += kPass, pass++) {
    const kLen = Math.min(kPass, k - k0);
    const slice: Bound = {
      ...kSlice(target, k0, kLen),
      beta: pass === 0 ? target.beta : 1,
      bias: pass === 0 ? target.bias : undefined,
      biasMode: pass === 0 ? target.biasMode : "none",
      activation: k0 + kLen >= k ? target.activation : undefined,
    };
    passes.push(planPass(slice, k0, ctx));
  }
  const epilogue = acc ? epilogueDispatch(g, acc, 1) : undefined;
  const accumulator = acc ? batch * m * n : 0;
  const first = passes[0];
  return {
    variant,
    swap: first.swap,
    tile: [first.config.tm, first.config.tn],
    splitK: first.splits,
    passes,
    epilogue,
    scratch: { accumulator, partials: Math.max(...passes.map((p) => p.partials)) },
  };
}

/** k segments: A's with A not transposed, B's with B transposed, each a length > 0. */
function checkKSegments(problem: GemmProblem): void {
  const check = (
    name: string,
    seg: number | undefined,
    stride: number | undefined,
    ok: boolean,
  ) => {
    if (seg === undefined) return;
    if (
      !ok || !Number.isInteger(seg) || seg < 1 || !Number.isInteger(stride ?? 0) ||
      (stride ?? 0) < 0
    ) {
      throw new RangeError(
        `gemm: ${name} ${seg} needs ${
          name === "segmentKA" ? "A stored [m, k] (transA false)" : "B stored [n, k] (transB true)"
        }, ` +
          `an integer length >= 1 and an integer stride >= 0 (got stride ${stride})`,
      );
    }
  };
  check("segmentKA", problem.segmentKA, problem.segmentStrideKA, !problem.transA);
  check("segmentKB", problem.segmentKB, problem.segmentStrideKB, problem.transB);
}

/** Row groups: 1 to MAX_ROW_GROUPS, in row order from row 0, with a segmented C. */
function checkRowGroups(problem: GemmProblem): void {
  const r = problem.rowGroups;
  if (r === undefined) return;
  const rows = r.map((g) => g.row).join(", ");
  if (problem.segment === undefined) {
    throw new RangeError("gemm: rowGroups need a segmented C (segment set)");
  }
  if (
    r.length < 1 || r.length > MAX_ROW_GROUPS || r[0].row !== 0 ||
    r.some((g, i) => i > 0 && !(g.row > r[i - 1].row && g.row < problem.m))
  ) {
    throw new RangeError(
      `gemm: rowGroups must be 1 to ${MAX_ROW_GROUPS} groups in increasing row order from row 0, ` +
        `each starting below m = ${problem.m}; got rows [${rows}]`,
    );
  }
  if (r.some((g) => g.second) && problem.c2 === undefined) {
    throw new TypeError("gemm: a row group stored into c2 without a c2");
  }
  for (const g of r) {
    for (const v of [g.base, g.segmentStride]) {
      if (!Number.isInteger(v) || v < 0) {
        throw new RangeError(`gemm: a row group's base and segmentStride must be integers >= 0`);
      }
    }
  }
}

/** The `Params` of C's row groups (unused groups start at row 2^32 - 1: never reached). */
function rowGroupParams(g: Bound): { readonly [K in keyof typeof ROW_GROUP_PARAMS]: number } {
  const r = g.rowGroups ?? [];
  const row = (i: number) => r[i]?.row ?? 0xffffffff;
  const base = (i: number) => (r[i] ? (r[i].second ? g.c2!.base : g.c.base) + r[i].base : 0);
  const stride = (i: number) => r[i]?.segmentStride ?? 0;
  return {
    rgRow1: row(1),
    rgRow2: row(2),
    rgRow3: row(3),
    rgBase0: base(0),
    rgBase1: base(1),
    rgBase2: base(2),
    rgBase3: base(3),
    rgStride0: stride(0),
    rgStride1: stride(1),
    rgStride2: stride(2),
    rgStride3: stride(3),
    rgSecond: r.reduce((bits, group, i) => bits | (group.second ? 1 << i : 0), 0),
  };
}

/** k of each sequential pass (all of k when it fits one dispatch; see MAX_K_REGISTER). */
function passK(k: number, variant: GemmVariant): number {
  const maxK = variant === "shared" ? MAX_K_SHARED : MAX_K_REGISTER;
  return k > maxK ? Math.ceil(k / Math.ceil(k / maxK) / 4) * 4 : k;
}

/**
 * The part of `g`'s reduction over `k` in `[k0, k0 + kLen)`: shorter k, A and B moved along k
 * (an operand in k segments stays: it indexes from `k0`, the kernels' `kOff`).
 */
function kSlice(g: Bound, k0: number, kLen: number): Bound {
  const a = g.segmentKA === undefined ? g.a.base + k0 * (g.transA ? g.lda : 1) : g.a.base;
  const b = g.segmentKB === undefined ? g.b.base + k0 * (g.transB ? 1 : g.ldb) : g.b.base;
  return { ...g, k: kLen, k0, a: { ...g.a, base: a }, b: { ...g.b, base: b } };
}

/** C retargeted to a scratch `[batch, m, n]` (plain rows, from element 0). */
function into(
  scratch: Operand,
  g: Bound,
): Pick<
  Bound,
  "c" | "ldc" | "ldcCol" | "strideC" | "segment" | "segmentStride" | "rowGroups" | "c2"
> {
  return {
    c: scratch,
    ldc: g.n,
    ldcCol: 1,
    strideC: g.m * g.n,
    segment: undefined,
    segmentStride: undefined,
    rowGroups: undefined,
    c2: undefined,
  };
}

/** Decides the orientation, configuration and split-K of one pass, and lists its dispatches. */
function planPass(g0: Bound, k0: number, ctx: Context): GemmPass {
  const { variant, tuning } = ctx;
  const swap = shouldSwap(g0, variant, tuning, ctx.cores);
  const g = swap ? swapped(g0) : g0;
  const cfg = chooseConfig(g, variant, tuning, ctx.cores);
  const tilesX = Math.ceil(g.n / cfg.colsPerGroup);
  const tilesY = Math.ceil(g.m / cfg.rowsPerGroup);
  const maxWg = ctx.profile.limits.maxComputeWorkgroupsPerDimension;
  let splits = tuning.splitK ??
    chooseSplitK(g.k, tilesX * tilesY * g.batch, cfg.kAlign, ctx.profile.isCpu, ctx.cores);
  splits = Math.max(1, Math.min(splits, Math.ceil(g.k / cfg.kAlign), Math.floor(maxWg / g.batch)));
  const kChunk = Math.ceil(Math.ceil(g.k / splits) / cfg.kAlign) * cfg.kAlign;
  splits = g.k === 0 ? 1 : Math.ceil(g.k / kChunk);
  // The scratch of split-K ([splits, batch, m, n]) must fit one binding.
  if (splits * g.batch * g.m * g.n > ctx.elements) splits = 1;
  if (tilesX > maxWg || tilesY > maxWg) {
    throw new RangeError(
      `gemm: ${g.m}x${g.n} needs ${tilesX}x${tilesY} workgroups, more than ${maxWg} per dimension`,
    );
  }
  if (splits === 1) {
    const grid = [tilesX, tilesY, g.batch] as const;
    return {
      k0,
      k: g.k,
      swap,
      config: cfg,
      grid,
      splits,
      kChunk: g.k,
      partials: 0,
      dispatches: [productDispatch(cfg, g, g.k, grid)],
    };
  }
  // Split-K: partial products into scratch [splits, batch, m, n], then an epilogue sums them.
  const part: Operand = { ref: "partials", base: 0, dtype: "f32" };
  const partial: Bound = {
    ...g,
    ...into(part, g),
    alpha: 1,
    beta: 0,
    bias: undefined,
    biasMode: "none",
    activation: undefined,
  };
  const pcfg = chooseConfig(partial, variant, tuning, ctx.cores);
  const grid = [tilesX, tilesY, g.batch * splits] as const;
  return {
    k0,
    k: g.k,
    swap,
    config: pcfg,
    grid,
    splits,
    kChunk,
    partials: splits * g.batch * g.m * g.n,
    dispatches: [productDispatch(pcfg, partial, kChunk, grid), epilogueDispatch(g, part, splits)],
  };
}

/** The dispatch of a register or shared kernel for `g`, over k-chunks of `kChunk`. */
function productDispatch(
  cfg: GemmConfig,
  g: Bound,
  kChunk: number,
  workgroups: readonly [number, number, number],
): GemmProductDispatch {
  return {
    kernel: cfg.variant,
    config: cfg,
    params: {
      m: g.m,
      n: g.n,
      k: g.k,
      batch: g.batch,
      lda: g.lda,
      ldb: g.ldb,
      ldc: g.ldc,
      seg: g.segment ?? 1,
      segStride: g.segmentStride ?? 0,
      sA: g.strideA,
      sB: g.strideB,
      sC: g.strideC,
      aOff: g.a.base,
      bOff: g.b.base,
      cOff: g.c.base,
      biasOff: g.bias?.base ?? 0,
      sBias: g.strideBias ?? 0,
      kChunk,
      alpha: g.alpha,
      beta: g.beta,
      ldcCol: g.ldcCol ?? 1,
      segB: g.segmentB ?? 1,
      segStrideB: g.segmentStrideB ?? 0,
      kOff: g.k0 ?? 0,
      segKA: g.segmentKA ?? 1,
      segStrideKA: g.segmentStrideKA ?? 0,
      segKB: g.segmentKB ?? 1,
      segStrideKB: g.segmentStrideKB ?? 0,
      ...rowGroupParams(g),
    },
    bindings: {
      a: g.a.ref,
      b: g.b.ref,
      c: g.c.ref,
      ...(cfg.bias !== "none" ? { bias: g.bias!.ref } : {}),
      ...(cfg.rowGroups ? { c2: "c2" as const } : {}),
    },
    workgroups,
  };
}

/** The epilogue that sums `splits` partial results of `g` from `part` into `g`'s C. */
function epilogueDispatch(g: Bound, part: Operand, splits: number): GemmEpilogueDispatch {
  const config: GemmStoreConfig = {
    beta: g.beta !== 0,
    bias: g.biasMode,
    segmented: g.segment !== undefined,
    activation: g.activation,
    ...(g.rowGroups ? { rowGroups: true } : {}),
  };
  return {
    kernel: "epilogue",
    config,
    params: {
      m: g.m,
      n: g.n,
      splits,
      batch: g.batch,
      ldc: g.ldc,
      seg: g.segment ?? 1,
      segStride: g.segmentStride ?? 0,
      sC: g.strideC,
      cOff: g.c.base,
      biasOff: g.bias?.base ?? 0,
      sBias: g.strideBias ?? 0,
      alpha: g.alpha,
      beta: g.beta,
      ldcCol: g.ldcCol ?? 1,
      ...rowGroupParams(g),
    },
    bindings: {
      part: part.ref,
      c: g.c.ref,
      ...(config.bias !== "none" ? { bias: g.bias!.ref } : {}),
      ...(config.rowGroups ? { c2: "c2" as const } : {}),
    },
    workgroups: grid1d(g.batch * g.m * g.n, EPILOGUE_WG),
  };
}
