/**
 * The direct convolution's input gradient (`direct.ts`, `flip`) gathering a batch norm's
 * gradient sums as it stores (see `../batchnorm/grad_sums.ts`): when `dx` is the gradient of a
 * batch norm's (fused) output (ResNet's conv2 after bn1 + ReLU, DenseNet's 3x3 conv after its
 * BN + ReLU), the last input-channel dispatch's store adds, per output channel of the thread's
 * block, `g = dx` (or `actBackward(dx, y)`: the batch norm's activation; dx as stored, rounded to
 * its dtype) and `g (x - mean)` over the thread's `tx` pixels, and writes them as the thread's
 * slot of `gPart[(ch * slots + t) * 2 + {0, 1}]` (`t` the thread, `slots` the threads: no
 * workgroup memory, no barrier).
 *
 * The forward kernel takes it as its last size argument `gs` (`"gradsums"`, or
 * `"gradsums_relu"` with the batch norm's activation): a kernel of its own, with the bindings of
 * `gradSumsBindings` (`../batchnorm/grad_sums.ts`).
 *
 * @module
 */

import type { ActivationKind } from "../_activation_wgsl.ts";
import { gradSumsAddWgsl, gradSumsHelpers } from "../batchnorm/grad_sums.ts";

/** A kernel's `load` of the gradient sums' bindings. */
export type GradSumsLoad = (name: "gx" | "gy" | "gMean", expr: string) => string;

/**
 * The `gs` argument of the forward kernel for a batch norm's activation.
 *
 * @returns `"gradsums"`, or `"gradsums_<kind>"`.
 * @example
 * ```ts
 * import { gradSumsArg } from "./direct_grad_sums.ts";
 * gradSumsArg("relu"); // "gradsums_relu"
 * ```
 */
export function gradSumsArg(act: ActivationKind | undefined): string {
  return act ? `gradsums_${act}` : "gradsums";
}

/**
 * The WGSL a `gs` kernel adds: module-scope helpers, declarations before the store, a statement
 * per stored value `v` (output channel `j` of the block, element index `e`), and the stores of
 * the thread's sums.
 *
 * @returns The pieces.
 * @example
 * ```ts
 * import { directGradSums } from "./direct_grad_sums.ts";
 * const s = directGradSums("gradsums_relu", 4, "f32", (_, e) => e);
 * s.end().length; // 4 channels' stores, in one block
 * ```
 */
export function directGradSums(
  gs: string,
  co: number,
  yDtype: "f32" | "f16",
  load: GradSumsLoad,
): {
  helpers: string;
  begin(): string[];
  add(j: number, e: string, v: string): string;
  end(): string[];
} {
  const act = gs.split("_")[1] as ActivationKind | undefined;
  const round = (v: string) => (yDtype === "f16" ? `f32(f16(${v}))` : v);
  return {
    helpers: gradSumsHelpers(act),
    begin: () => {
      const out: string[] = [];
      for (let j = 0; j < co; j++) {
        out.push(
          `  let gsM${j} = ${load("gMean", `gMean[min(co0 + ${j}u, p.cOut - 1u)]`)}; ` +
            `var gsA${j} = 0.0; var gsB${j} = 0.0;`,
        );
      }
      return out;
    },
    add: (j, e, v) =>
      `{ let ge = ${e}; ${
        gradSumsAddWgsl({
          value: round(v),
          y: act ? load("gy", "gy[ge]") : undefined,
          x: load("gx", "gx[ge]"),
          mean: `gsM${j}`,
          a: `gsA${j}`,
          b: `gsB${j}`,
        })
      } }`,
    end: () => {
      const out = [`  if (live) {`];
      for (let j = 0; j < co; j++) {
        out.push(
          `    if (co0 + ${j}u < p.cOut) { let o = ((co0 + ${j}u) * total + tRaw) * 2u; ` +
            `gPart[o] = gsA${j}; gPart[o + 1u] = gsB${j}; }`,
        );
      }
      out.push(`  }`);
      return out;
    },
  };
}
