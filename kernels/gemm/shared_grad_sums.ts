/**
 * The shared-memory GEMM (`shared.ts`) gathering a batch norm's gradient sums as it stores C
 * (see `../batchnorm/grad_sums.ts`; GPUs run this kernel): thread (x, y) stores a 4x4 block of
 * C, adds per channel of its block (C's rows with `"row"`, columns with `"col"`) the stored
 * `g = C` (or `actBackward(C, gy)`, rounded as stored) and `g (gx - mean)`, and writes them as its
 * slot of `gPart[(ch * slots + slot) * 2 + {0, 1}]`: `slot` the thread's index along the other
 * dimension plus `z` times the threads along it (`ceil(n / 4)` or `ceil(m / 4)`), `slots` that
 * count times `batch`. No extra barrier or workgroup memory.
 *
 * @module
 */

import type { ActivationKind } from "../_activation_wgsl.ts";
import { gradSumsAddWgsl, gradSumsHelpers } from "../batchnorm/grad_sums.ts";

/**
 * The WGSL a gathering shared kernel adds (`gs`: `"gradsums_<axis>[_<kind>]"`): module-scope
 * helpers, statements after `r0`/`c0`, one per stored element (loop indices `i`, `j`), and the
 * partial sums' stores.
 *
 * @returns The pieces.
 * @example
 * ```ts
 * import { sharedGradSums } from "./shared_grad_sums.ts";
 * sharedGradSums("gradsums_row_relu", "f32", (_, e) => e).helpers.includes("actBackward"); // true
 * ```
 */
export function sharedGradSums(
  gs: string,
  cDtype: "f32" | "f16",
  load: (name: "gx" | "gy" | "gMean", expr: string) => string,
): { helpers: string; begin(): string; add(): string; end(): string } {
  const [, axis, act] = gs.split("_") as [string, "row" | "col", ActivationKind | undefined];
  const row = axis === "row";
  const k = row ? "i" : "j";
  const v = cDtype === "f16" ? "f32(f16(p.alpha * acc[i][j]))" : "p.alpha * acc[i][j]";
  const [ch0, lim, other, otherLim] = row
    ? ["r0", "p.m", "wg.x * WG_X + l.x", "p.n"]
    : ["c0", "p.n", "wg.y * WG_Y + l.y", "p.m"];
  return {
    helpers: act ? `\n${gradSumsHelpers(act)}` : "",
    begin: () => `
  var gsA = array<f32, 4>();
  var gsB = array<f32, 4>();
  var gsM = array<f32, 4>();
  for (var q = 0u; q < 4u; q++) { gsM[q] = ${
      load("gMean", `gMean[min(${ch0} + q, ${lim} - 1u)]`)
    }; }`,
    add: () =>
      ` let ge = p.cOff + wg.z * p.sC + (r0 + i) * p.ldc + colOffset(c0 + j); ${
        gradSumsAddWgsl({
          value: v,
          y: act ? load("gy", "gy[ge]") : undefined,
          x: load("gx", "gx[ge]"),
          mean: `gsM[${k}]`,
          a: `gsA[${k}]`,
          b: `gsB[${k}]`,
        })
      }`,
    end: () => `
  let gsThreads = (${otherLim} + 3u) / 4u;
  let gsSlot = ${other} + z * gsThreads;
  if (${row ? "c0 < p.n" : "r0 < p.m"}) {
    for (var q = 0u; q < 4u; q++) {
      if (${ch0} + q < ${lim}) {
        let o = ((${ch0} + q) * gsThreads * p.batch + gsSlot) * 2u;
        gPart[o] = gsA[q];
        gPart[o + 1u] = gsB[q];
      }
    }
  }`,
  };
}
