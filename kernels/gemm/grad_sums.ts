/**
 * The register GEMM that also gathers a batch norm's gradient sums as it stores C (see
 * `../batchnorm/grad_sums.ts`): C is the gradient of a batch norm's (fused) output (a Linear's or
 * a pointwise convolution's input gradient), its channels along C's rows (`"row"`: NCHW, a
 * channel's pixels in a row) or columns (`"col"`: `[n, c]`). Each thread adds the `g` of the
 * elements it stores (`g = C`, or `actBackward(C, y)` with the batch norm's activation, C as
 * stored: rounded to its dtype) and `g (x - mean)`, per channel of its register block, and writes
 * those two sums as one slot of its channels' partials: no workgroup memory, no barrier (a barrier
 * in the register GEMM doubled a 1x1 convolution's time on llvmpipe).
 *
 * The shared-memory GEMM (GPUs) gathers likewise (`shared_grad_sums.ts`). Only a plan of one
 * register or shared dispatch without split-K, bias, beta, activation or row groups gathers; any other plan runs unchanged and gathers nothing (the batch norm then runs its own
 * gradient-sum pass).
 *
 * @module
 */

import type { Gpu, Tensor } from "../../gpu/mod.ts";
import type { ActivationKind } from "../_activation_wgsl.ts";
import { adapterProfile } from "../_adapter.ts";
import { bindingRange, type TensorRange } from "../_binding.ts";
import { defineKernel, type KernelContext, perSizes } from "../_kernel.ts";
import type { GemmTuning, StridedGemm } from "../_types.ts";
import { tunedGemm } from "../autotune/table.ts";
import { bnFusionMode } from "../batchnorm/fusion_mode.ts";
import {
  gradSumsAddWgsl,
  gradSumsHelpers,
  type GradSumsPartials,
  type GradSumsSource,
  planGradSums,
} from "../batchnorm/grad_sums.ts";
import { gemmProblem, planDispatches, planGemm } from "./plan.ts";
import { BINDINGS, type GradSumsHooks, registerBody } from "./register.ts";
import {
  gemmVariant,
  kSegName,
  REGISTER_VARIANTS,
  type RegisterVariant,
  type SharedVariant,
} from "./store.ts";
import { sharedKernelGradSums } from "./shared.ts";
import { GEMM_PARAMS, type GemmPlan, type GemmProductDispatch, REGISTER_WG } from "./types.ts";
import { runGemmPlan } from "./index.ts";

/** Whether a variant stores C as vec4s (then x and y are loaded as vec4s too). */
const vecC = (v: string) => v.split("_").includes("vc");

/** The register kernel's bindings and the gradient sums' (`gy` only with an activation). */
const gsBindings = (act: boolean) => ({
  ...BINDINGS,
  gx: { type: "float", access: "read", vec4: vecC },
  gMean: { type: "float", access: "read" },
  gPart: { type: "f32", access: "read_write" },
  ...(act ? { gy: { type: "float", access: "read", vec4: vecC } } : {}),
} as const);

type GsBindings = ReturnType<typeof gsBindings> & {
  gy: { type: "float"; access: "read"; vec4: typeof vecC };
};

/**
 * The WGSL the gradient sums add to the register kernel of a `tm x tn` block (`axis`: which of
 * the kernel's C dimensions the channels run along; `vecC`: C stored as vec4s of 4 columns).
 */
function hooks(
  axis: "row" | "col",
  tm: number,
  tn: number,
  vecC: boolean,
  act: ActivationKind | "",
  { load, dtypes }: KernelContext<GsBindings, RegisterVariant>,
): GradSumsHooks {
  const chans = axis === "row" ? tm : tn;
  const round = (v: string) => (dtypes.c === "f16" ? `f32(f16(${v}))` : v);
  // Element e (its value v, f32) into channel k's sums.
  const one = (k: number, e: string, v: string) =>
    `{ let ge = ${e}; ${
      gradSumsAddWgsl({
        value: round(v),
        y: act ? load("gy", "gy[ge]") : undefined,
        x: load("gx", "gx[ge]"),
        mean: `gsM${k}`,
        a: `gsA${k}`,
        b: `gsB${k}`,
      })
    } }`;
  return {
    begin: () => {
      const out: string[] = [];
      for (let k = 0; k < chans; k++) {
        const ch = axis === "row" ? `min(r0 + ${k}u, p.m - 1u)` : `min(c0 + ${k}u, p.n - 1u)`;
        out.push(
          `  let gsM${k} = ${load("gMean", `gMean[${ch}]`)}; var gsA${k} = 0.0; var gsB${k} = 0.0;`,
        );
      }
      return out;
    },
    add: (i, j, e, v) => {
      if (!vecC) return one(axis === "row" ? i : j, e, v);
      // Four elements of one row: x and y as one vec4 load each (4 channels along columns).
      const y4 = act ? `let gy4 = ${load("gy", `gy[(${e}) / 4u]`)}; ` : "";
      const parts = [0, 1, 2, 3].map((q) => {
        const k = axis === "row" ? i : j * 4 + q;
        return `{ ${
          gradSumsAddWgsl({
            value: round(`${v}[${q}]`),
            y: act ? `gy4[${q}]` : undefined,
            x: `gx4[${q}]`,
            mean: `gsM${k}`,
            a: `gsA${k}`,
            b: `gsB${k}`,
          })
        } }`;
      });
      return `{ let gx4 = ${load("gx", `gx[(${e}) / 4u]`)}; ${y4}${parts.join(" ")} }`;
    },
    end: () => {
      const slot = axis === "row" ? "wg.x * WG_X + l.x" : "wg.y * WG_Y + l.y";
      const out = [`  let gsSlot = ${slot} + z * p.gsThreads;`];
      for (let k = 0; k < chans; k++) {
        const [ch, lim] = axis === "row" ? [`r0 + ${k}u`, "p.m"] : [`c0 + ${k}u`, "p.n"];
        out.push(
          `  if (${ch} < ${lim}) { let o = ((${ch}) * p.gsSlots + gsSlot) * 2u; ` +
            `gPart[o] = gsA${k}; gPart[o + 1u] = gsB${k}; }`,
        );
      }
      return out;
    },
  };
}

/**
 * The register kernel of a transpose pair and a `tm x tn` block that gathers the gradient sums
 * along `axis` of its C, with the batch norm's activation `act` (`""`: none).
 */
const _gradSumsKernel = perSizes((
  transA: boolean,
  transB: boolean,
  tm: number,
  tn: number,
  segKA: boolean,
  segKB: boolean,
  axis: string,
  act: string,
) =>
  defineKernel({
    name: `gemm_reg_${transA ? "t" : "n"}${transB ? "t" : "n"}${
      kSegName(segKA, segKB)
    }_${tm}x${tn}_gradsums_${axis}${act ? `_${act}` : ""}`,
    doc: `The register GEMM (gemm_reg_*_${tm}x${tn}) whose store also adds, per channel along ` +
      `C's ${axis === "row" ? "rows" : "columns"} of its block, the stored gradient g ` +
      `(${act ? `actBackward(C, gy)` : "C"}) and g * (gx - gMean[ch]), and writes them to ` +
      "gPart[(ch * gsSlots + slot) * 2 + {0, 1}] (slot: the thread's index along the other " +
      "dimension, plus z * gsThreads).",
    params: { ...GEMM_PARAMS, gsSlots: "u32", gsThreads: "u32" },
    bindings: gsBindings(act !== "") as GsBindings,
    variants: REGISTER_VARIANTS,
    workgroupSize: [REGISTER_WG, REGISTER_WG, 1],
    body: (ctx) => {
      const c = { vecC: ctx.variant.split("_").includes("vc") };
      const helpers = gradSumsHelpers((act || undefined) as ActivationKind | undefined);
      return helpers + registerBody(
        transA,
        transB,
        tm,
        tn,
        segKA,
        segKB,
        ctx as unknown as Parameters<typeof registerBody>[6],
        { gs: hooks(axis as "row" | "col", tm, tn, c.vecC, act as ActivationKind | "", ctx) },
      );
    },
  })
);

/**
 * Whether a GEMM plan can gather the sums: one register or shared dispatch, no split-K, scratch, bias,
 * beta, activation or row groups.
 */
function _gathers(plan: GemmPlan): GemmProductDispatch | undefined {
  const ds = planDispatches(plan);
  const d = ds[0];
  if (ds.length !== 1 || d.kernel === "epilogue" || plan.splitK !== 1) return undefined;
  if (plan.scratch.accumulator > 0 || plan.scratch.partials > 0) return undefined;
  const c = d.config;
  if (c.beta || c.bias !== "none" || c.activation || c.rowGroups) return undefined;
  return d;
}

/**
 * Records `g` (as {@linkcode gemmStrided} does) and, where its plan is one product dispatch (the
 * register or the shared-memory kernel) and {@linkcode planGradSums} says so, gathers the gradient sums of the batch norm `source` whose
 * output gradient C is (its channels along C's `axis`; C's first element is element `cOffset` of
 * `source.x`). Returns the partial sums, or undefined when nothing was gathered.
 *
 * @returns The partials (owned by the caller), or undefined.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { bindingRange } from "../_binding.ts";
 * import { gemmStridedGradSums } from "./grad_sums.ts";
 * const gpu = await getGpu();
 * const a = gpu.zeros([8, 3]), b = gpu.zeros([3, 5]), c = gpu.empty([8, 5]);
 * const source = { x: gpu.zeros([8, 5]), mean: gpu.zeros([5]), invStd: gpu.zeros([5]) };
 * const sums = gemmStridedGradSums(gpu, {
 *   m: 8, n: 5, k: 3, batch: 1, transA: false, transB: false, alpha: 1, beta: 0,
 *   a: bindingRange(a, 0, 24), b: bindingRange(b, 0, 15), c: bindingRange(c, 0, 40),
 *   lda: 3, ldb: 5, ldc: 5, strideA: 0, strideB: 0, strideC: 0, biasMode: "none",
 * }, { source, axis: "col", cOffset: 0 });
 * sums?.partials.dispose();
 * ```
 */
export function gemmStridedGradSums(
  gpu: Gpu,
  g: StridedGemm,
  o: { readonly source: GradSumsSource; readonly axis: "row" | "col"; readonly cOffset: number },
  tuning: GemmTuning = {},
): GradSumsPartials | undefined {
  const profile = adapterProfile(gpu);
  const plan = planGemm(gemmProblem(g), profile, tunedGemm(gpu, g, tuning));
  const d = _gathers(plan);
  const src = o.source;
  const axis = plan.swap ? (o.axis === "row" ? "col" : "row") : o.axis;
  // Threads along the dimension that is not the channels' (the shared kernel's blocks are 4x4).
  const shared = d?.kernel === "shared";
  const threads = d === undefined
    ? 0
    : axis === "row"
    ? Math.ceil(d.params.n / (shared ? 4 : d.config.tn))
    : Math.ceil(d.params.m / (shared ? 4 : d.config.tm));
  const channels = d === undefined ? 0 : axis === "row" ? d.params.m : d.params.n;
  const slots = threads * (d?.params.batch ?? 0);
  const gx = bindingRange(src.x, o.cOffset, g.c.count);
  const gy = src.y && bindingRange(src.y, o.cOffset, g.c.count);
  const fuse = d !== undefined && g.c2 === undefined && channels === src.mean.shape[0] &&
    gx.base === g.c.base && (gy === undefined || gy.base === g.c.base) &&
    (src.act === undefined) === (src.y === undefined) &&
    planGradSums(
      profile,
      { path: shared ? "gemm-shared" : "gemm-register", slots, k: g.k, channels },
      bnFusionMode(gpu, "gradSums"),
    );
  if (!fuse) {
    runGemmPlan(gpu, g, plan);
    return undefined;
  }
  const partial: Tensor = gpu.empty([channels, slots, 2]);
  const c = d.config;
  const bind = (ref: string): TensorRange => (ref === "a" ? g.a : ref === "b" ? g.b : g.c);
  const gsBound = { gx, gMean: src.mean, gPart: partial, ...(gy ? { gy } : {}) };
  if (shared) {
    const gs = `gradsums_${axis}${src.act ? `_${src.act}` : ""}`;
    sharedKernelGradSums(c.transA, c.transB, !!c.segmentedKA, !!c.segmentedKB, gs).dispatch({
      op: "gemm",
      variant: gemmVariant(c) as SharedVariant,
      params: d.params,
      bindings: { a: bind(d.bindings.a), b: bind(d.bindings.b), c: bind(d.bindings.c), ...gsBound },
      workgroups: d.workgroups,
    });
    return { partials: partial, tiles: slots };
  }
  _gradSumsKernel(
    c.transA,
    c.transB,
    c.tm,
    c.tn,
    !!c.segmentedKA,
    !!c.segmentedKB,
    axis,
    src.act ?? "",
  ).dispatch({
    op: "gemm",
    variant: gemmVariant(c),
    params: { ...d.params, gsSlots: slots, gsThreads: threads },
    bindings: {
      a: bind(d.bindings.a),
      b: bind(d.bindings.b),
      c: bind(d.bindings.c),
      gx,
      gMean: src.mean,
      gPart: partial,
      ...(gy ? { gy } : {}),
    } as Parameters<ReturnType<typeof _gradSumsKernel>["dispatch"]>[0]["bindings"],
    workgroups: d.workgroups,
  });
  return { partials: partial, tiles: slots };
}

/**
 * `c = a·b` (`a` `[m, k]`, `b` `[k, n]`, row-major, f32 or f16 each) where `c` is the output
 * gradient `[m, n]` of the batch norm `source` (BatchNorm1d: its channels are c's columns), as
 * {@linkcode gemmStridedGradSums} records it: a Linear's input gradient gathering that batch
 * norm's gradient sums. Returns them, or undefined where the plan could not gather.
 *
 * @returns The partials (owned by the caller), or undefined.
 * @throws {TypeError} when the shapes do not fit.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { gemmGradSums } from "./grad_sums.ts";
 * const gpu = await getGpu();
 * const dz = gpu.zeros([8, 3]), w = gpu.zeros([3, 5]), dx = gpu.empty([8, 5]);
 * const source = { x: gpu.zeros([8, 5]), mean: gpu.zeros([5]), invStd: gpu.zeros([5]) };
 * gemmGradSums({ c: dx, a: dz, b: w }, source)?.partials.dispose();
 * ```
 */
export function gemmGradSums(
  io: { readonly c: Tensor; readonly a: Tensor; readonly b: Tensor },
  source: GradSumsSource,
): GradSumsPartials | undefined {
  const [m, k] = io.a.shape, n = io.b.shape[1];
  if (
    io.a.shape.length !== 2 || io.b.shape.length !== 2 || io.b.shape[0] !== k ||
    io.c.size !== m * n || source.x.size !== m * n || source.mean.shape[0] !== n
  ) {
    throw new TypeError(
      `gemmGradSums: a ${io.a}, b ${io.b}, c ${io.c} and the batch norm's x ${source.x} do not ` +
        "fit c[m, n] = a[m, k]·b[k, n] with n channels",
    );
  }
  return gemmStridedGradSums(io.c.gpu, {
    m,
    n,
    k,
    batch: 1,
    transA: false,
    transB: false,
    alpha: 1,
    beta: 0,
    a: bindingRange(io.a, 0, m * k),
    b: bindingRange(io.b, 0, k * n),
    c: bindingRange(io.c, 0, m * n),
    lda: k,
    ldb: n,
    ldc: n,
    strideA: m * k,
    strideB: k * n,
    strideC: m * n,
    biasMode: "none",
  }, { source, axis: "col", cOffset: 0 });
}
