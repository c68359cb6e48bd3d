/**
 * The GEMM epilogue: sums f32 partial results per element of C and stores the result as the
 * problem asks (alpha, beta, bias, the activation, C's column mapping; C and bias f32 or f16).
 * It finishes split-K (the partial products of `splits` k-ranges) and the k-passes of an f16 C
 * (one f32 accumulator, `splits` = 1).
 *
 * @module
 */

import type { TensorRange } from "../_binding.ts";
import { defineKernel, flatMain } from "../_kernel.ts";
import {
  biasVariants,
  gemmVariant,
  rowsVariants,
  STORE_VARIANTS,
  type StoreVariant,
  storeWgsl,
  variantConfig,
} from "./store.ts";
import { EPILOGUE_PARAMS, EPILOGUE_WG, type GemmEpilogueDispatch } from "./types.ts";

/**
 * The epilogue kernel: one thread per element (z, i, j) of C sums the partial results
 * `part[s][z][i][j]` (always f32) over the splits s, then stores it.
 *
 * @example
 * ```ts
 * import { epilogueKernel } from "./epilogue.ts";
 * const spec = epilogueKernel.spec({ c: "f16", bias: "f32" }, "beta_biascol");
 * console.log(spec.name); // gemm_splitk_epilogue_beta_biascol_h-c
 * ```
 */
export const epilogueKernel = defineKernel({
  name: "gemm_splitk_epilogue",
  doc: "One thread per element t = (z * m + i) * n + j of C (a grid1d launch) sums the f32 " +
    "partial results part[s * batch * m * n + t] over the splits s, then stores it.",
  params: EPILOGUE_PARAMS,
  bindings: {
    part: { type: "f32", access: "read" },
    c: { type: "float", access: "read_write" },
    bias: { type: "float", access: "read", variants: biasVariants(STORE_VARIANTS) },
    c2: { type: "float", access: "read_write", variants: rowsVariants(STORE_VARIANTS) },
  },
  variants: STORE_VARIANTS,
  workgroupSize: EPILOGUE_WG,
  body: ({ variant, load, store }) => {
    const main = flatMain(
      "t",
      null,
      `  let total = p.batch * p.m * p.n;
  if (t >= total) { return; }
  var s = 0.0;
  for (var q = 0u; q < p.splits; q++) { s += part[q * total + t]; }
  let j = t % p.n;
  let i = (t / p.n) % p.m;
  let z = t / (p.n * p.m);
  store(z, z, i, j, s);`,
    );
    return `${storeWgsl(variantConfig(variant), { load, store })}\n${main}`;
  },
});

/**
 * Records a planned dispatch of the epilogue.
 *
 * @example
 * ```ts ignore
 * dispatchEpilogue(plan.epilogue, { part, c });
 * ```
 */
export function dispatchEpilogue(
  d: GemmEpilogueDispatch,
  bindings: { part: TensorRange; c: TensorRange; bias?: TensorRange; c2?: TensorRange },
): void {
  epilogueKernel.dispatch({
    op: "gemm",
    variant: gemmVariant(d.config) as StoreVariant,
    params: d.params,
    bindings,
    workgroups: d.workgroups,
  });
}
