/**
 * The shared-memory GEMM kernel (real GPUs): 64x64 workgroup tiles of C staged through workgroup
 * memory in 16-deep k-slices, 256 threads each owning a 4x4 block. It uses 8 KiB of workgroup
 * storage and 256 invocations: within WebGPU's default limits.
 *
 * One kernel description per transpose pair (`gemm_smem_nt_4x4`); its variants are the store of
 * C (`store.ts`).
 *
 * @module
 */

import type { TensorRange } from "../_binding.ts";
import { gradSumsBindings } from "../batchnorm/grad_sums.ts";
import { sharedGradSums } from "./shared_grad_sums.ts";
import { defineKernel, type KernelContext, perSizes } from "../_kernel.ts";
import {
  sharedStatsWgsl,
  STATS_PARAMS,
  type StatsAxis,
  statsDispatchOf,
  type StatsTiles,
} from "./stats.ts";
import {
  biasVariants,
  gemmVariant,
  kSegName,
  rowsVariants,
  SHARED_VARIANTS,
  type SharedVariant,
  storeWgsl,
  variantConfig,
} from "./store.ts";
import {
  GEMM_PARAMS,
  type GemmProductBindings,
  type GemmProductDispatch,
  SHARED_BM,
  SHARED_BN,
  SHARED_T,
} from "./types.ts";

/** Depth of the k-slices staged in workgroup memory. */
export const SHARED_BK = 16;

/**
 * The shared-memory kernel of a transpose pair (built once per pair).
 *
 * A workgroup of 16x16 threads computes a 64x64 tile of C: per 16-deep k-slice, all threads stage
 * the A tile (as [k][m]) and the B tile (as [k][n]) in workgroup memory with coalesced,
 * bounds-checked loads (zero outside), then thread (x, y) accumulates rows y*4.., columns x*4..
 * from vec4 reads of the staged tiles.
 *
 * @example
 * ```ts
 * import { sharedKernel } from "./shared.ts";
 * const spec = sharedKernel(true, false, false, false).spec({ a: "f32", b: "f32", c: "f32" }, "beta");
 * console.log(spec.name); // gemm_smem_tn_4x4_beta
 * ```
 */
export const sharedKernel = (
  transA: boolean,
  transB: boolean,
  segKA: boolean,
  segKB: boolean,
): ReturnType<typeof sharedKernelGradSums> =>
  sharedKernelGradSums(transA, transB, segKA, segKB, "");

/**
 * {@linkcode sharedKernel}, and with `gs` (`"gradsums_row"`, `"gradsums_col_relu"`, ...) the one
 * that gathers a batch norm's gradient sums as it stores C (`shared_grad_sums.ts`).
 *
 * @example
 * ```ts
 * import { sharedKernelGradSums } from "./shared.ts";
 * const k = sharedKernelGradSums(false, false, false, false, "gradsums_row");
 * console.log(k.spec({ a: "f32", b: "f32", c: "f32", gx: "f32", gMean: "f32" }, "").name);
 * ```
 */
export const sharedKernelGradSums = perSizes((
  transA: boolean,
  transB: boolean,
  segKA: boolean,
  segKB: boolean,
  gs: string,
) =>
  defineKernel({
    name: `gemm_smem_${transA ? "t" : "n"}${transB ? "t" : "n"}${kSegName(segKA, segKB)}_4x4${
      gs ? `_${gs}` : ""
    }`,
    doc: `Workgroup (X, Y, z) of ${SHARED_T}x${SHARED_T} threads: the ${SHARED_BM}x${SHARED_BN} ` +
      `tile of C at rows Y*${SHARED_BM}, columns X*${SHARED_BN}, batch z % batch, k-split ` +
      `z / batch; thread (x, y) owns rows Y*${SHARED_BM}+y*4.., columns X*${SHARED_BN}+x*4.., ` +
      `accumulated over ${SHARED_BK}-deep k-slices staged in workgroup memory.`,
    params: GEMM_PARAMS,
    bindings: {
      a: { type: "float", access: "read" },
      b: { type: "float", access: "read" },
      c: { type: "float", access: "read_write" },
      bias: { type: "float", access: "read", variants: biasVariants(SHARED_VARIANTS) },
      c2: { type: "float", access: "read_write", variants: rowsVariants(SHARED_VARIANTS) },
      ...gradSumsBindings(gs, SHARED_VARIANTS),
    },
    variants: SHARED_VARIANTS,
    workgroupSize: [SHARED_T, SHARED_T, 1],
    body: ({ variant, load, store, dtypes }) => {
      const sums = gs ? sharedGradSums(gs, dtypes.c!, load) : undefined;
      if ((segKA && transA) || (segKB && !transB)) {
        throw new TypeError("gemm: k segments need A [m, k] (segKA) and B [n, k] (segKB)");
      }
      const BM = SHARED_BM, BN = SHARED_BN, BK = SHARED_BK;
      const NT = SHARED_T * SHARED_T;
      // Loads: consecutive threads read consecutive addresses of the contiguous dimension.
      const loadA = transA
        ? `let r = e % ${BM}u; let kq = e / ${BM}u;` // A stored [k][m]: m fastest
        : `let kq = e % ${BK}u; let r = e / ${BK}u;`; // A stored [m][k]: k fastest
      const loadB = transB
        ? `let kq = e % ${BK}u; let q = e / ${BK}u;` // B stored [n][k]: k fastest
        : `let q = e % ${BN}u; let kq = e / ${BN}u;`;
      const cfg = variantConfig(variant);
      // B's column j: plain, or in segments (segmentB: NCHW activations as one matrix).
      const bCol = cfg.segmentedB ? "(gc / p.segB) * p.segStrideB + gc % p.segB" : "gc";
      // k in segments (from the pass's kOff): one division per staged element, none in the
      // FMA loop.
      const kSeg = (x: "A" | "B") =>
        `((gk + p.kOff) / p.segK${x}) * p.segStrideK${x} + (gk + p.kOff) % p.segK${x}`;
      const aK = segKA ? kSeg("A") : "gk", bK = segKB ? kSeg("B") : "gk";
      return `${storeWgsl(cfg, { load, store })}${sums ? sums.helpers : ""}
var<workgroup> saS: array<f32, ${BK * BM}>; // [BK][BM]
var<workgroup> sbS: array<f32, ${BK * BN}>; // [BK][BN]
@compute @workgroup_size(WG_X, WG_Y)
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
        v = ${load("a", `a[aBase + ${transA ? "gk * p.lda + gr" : `gr * p.lda + ${aK}`}]`)};
      }
      saS[kq * ${BM}u + r] = v;
    }
    for (var e = li; e < ${BN * BK}u; e += ${NT}u) {
      ${loadB}
      let gc = colT + q; let gk = k0 + kq;
      var v = 0.0;
      if (gc < p.n && gk < kEnd) {
        v = ${load("b", `b[bBase + ${transB ? `gc * p.ldb + ${bK}` : `gk * p.ldb + ${bCol}`}]`)};
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
  let c0 = colT + l.x * 4u;${sums ? sums.begin() : ""}
  for (var i = 0u; i < 4u; i++) {
    if (r0 + i >= p.m) { break; }
    for (var j = 0u; j < 4u; j++) {
      if (c0 + j < p.n) { store(wg.z, z, r0 + i, c0 + j, acc[i][j]);${sums ? sums.add() : ""} }
    }
  }${sums ? sums.end() : ""}
}`;
    },
  })
);

/**
 * Records a planned dispatch of the shared-memory kernel.
 *
 * @example
 * ```ts ignore
 * dispatchShared(plan.passes[0].dispatches[0], { a, b, c });
 * ```
 */
export function dispatchShared(
  d: GemmProductDispatch,
  bindings: GemmProductBindings,
): void {
  const c = d.config;
  sharedKernel(c.transA, c.transB, !!c.segmentedKA, !!c.segmentedKB).dispatch({
    op: "gemm",
    variant: gemmVariant(d.config) as SharedVariant,
    params: d.params,
    bindings,
    workgroups: d.workgroups,
  });
}

/**
 * The variants of the shared-memory kernel that gathers batch statistics: those without an
 * activation, each with its channel axis (`strow`, `stcol`).
 */
export const SHARED_STATS_VARIANTS = SHARED_VARIANTS.filter((v) => !variantConfig(v).activation)
  .flatMap((v) => [v === "" ? "strow" : `${v}_strow`, v === "" ? "stcol" : `${v}_stcol`]);

/**
 * The shared-memory kernel that also gathers per-channel partial statistics of what it stores,
 * one tile per workgroup along the reduced axis (see `stats.ts`): the same kernel text, its store
 * also reading back each value it stored (rounded to C's type), then a workgroup reduction.
 *
 * @example
 * ```ts
 * import { sharedStatsKernel } from "./shared.ts";
 * const dtypes = { a: "f32", b: "f32", c: "f32", stats: "f32" } as const;
 * sharedStatsKernel(false, false, false, false).spec(dtypes, "biasrow_strow").name;
 * // "gemm_smem_stats_nn_4x4_biasrow_strow"
 * ```
 */
export const sharedStatsKernel = perSizes((
  transA: boolean,
  transB: boolean,
  segKA: boolean,
  segKB: boolean,
) => {
  const plain = sharedKernel(transA, transB, segKA, segKB);
  const d = plain.descriptor;
  return defineKernel({
    name: `gemm_smem_stats_${transA ? "t" : "n"}${transB ? "t" : "n"}${kSegName(segKA, segKB)}_4x4`,
    doc: `${d.doc} The store also keeps each stored value; the workgroup then writes the ` +
      "(count, mean, mean correction, M2) of its tile of each channel (rows of C: strow, " +
      "columns: stcol) to stats[channel * statsTiles + statsBase + z * statsTilesX + workgroup].",
    params: { ...GEMM_PARAMS, ...STATS_PARAMS },
    bindings: {
      ...d.bindings,
      bias: { type: "float", access: "read", variants: biasVariants(SHARED_STATS_VARIANTS) },
      c2: { type: "float", access: "read_write", variants: rowsVariants(SHARED_STATS_VARIANTS) },
      stats: { type: "float", access: "read_write", vec4: true },
    },
    variants: SHARED_STATS_VARIANTS,
    workgroupSize: [SHARED_T, SHARED_T, 1],
    body: (ctx) => {
      const axis: StatsAxis = ctx.variant.endsWith("strow") ? "row" : "col";
      const variant = ctx.variant.replace(/_?st(row|col)$/, "") as SharedVariant;
      // The store reads back what it stored (rounded to C's type) into stV.
      const inner = d.body({
        ...ctx,
        variant,
        store: (name: "c" | "c2", target: string, value: string) =>
          `${ctx.store(name, target, value)} stV = ${ctx.load(name, target)};`,
      } as unknown as KernelContext<typeof d.bindings, SharedVariant>);
      // The store loop, without its early break (the reduction's barriers follow it: uniform
      // control flow), each stored value kept in sv.
      const call = "if (c0 + j < p.n) { store(wg.z, z, r0 + i, c0 + j, acc[i][j]); }";
      const brk = "    if (r0 + i >= p.m) { break; }\n";
      const decl = "var acc: array<vec4f, 4>;";
      if (![call, brk, decl].every((t) => inner.includes(t)) || !inner.endsWith("}\n}")) {
        throw new Error("gemm: the shared kernel's store loop changed; update sharedStatsKernel");
      }
      const keep = "if (r0 + i < p.m && c0 + j < p.n) { " +
        "store(wg.z, z, r0 + i, c0 + j, acc[i][j]); sv[i][j] = stV; }";
      return `var<private> stV: f32;\n${
        inner.slice(0, -1)
          .replace(decl, `${decl}\n  var sv: array<vec4f, 4>;`)
          .replace(brk, "")
          .replace(call, keep)
      }${sharedStatsWgsl(axis)}\n}`;
    },
  });
});

/**
 * Records a planned dispatch of the shared-memory kernel that gathers partial statistics.
 *
 * @example
 * ```ts ignore
 * dispatchSharedStats(d, { a, b, c, stats }, { axis: "row", tiles, base, tilesX });
 * ```
 */
export function dispatchSharedStats(
  d: GemmProductDispatch,
  bindings: GemmProductBindings & { readonly stats: TensorRange },
  s: StatsTiles,
): void {
  const c = d.config;
  const { variant, params } = statsDispatchOf(gemmVariant(c), d.params, s);
  sharedStatsKernel(c.transA, c.transB, !!c.segmentedKA, !!c.segmentedKB).dispatch({
    op: "gemm",
    variant: variant as (typeof SHARED_STATS_VARIANTS)[number],
    params,
    bindings,
    workgroups: d.workgroups,
  });
}
