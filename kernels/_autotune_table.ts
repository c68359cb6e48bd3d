/**
 * A forwarding stub: the tuning table moved to `autotune/table.ts`. `gemm.ts` (being moved to
 * `kernels/gemm/` on another branch) still imports its hook from here; once it imports
 * `./autotune/table.ts` (or `../autotune/table.ts`) this file goes.
 *
 * @module
 */

export { tunedGemm } from "./autotune/table.ts";
