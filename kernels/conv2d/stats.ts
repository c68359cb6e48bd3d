/**
 * Batch statistics gathered by a forward convolution as it stores its output (for the batch
 * normalization after it; see `gemm/stats.ts` and `batchnorm/partials.ts`): the pure decision
 * ({@linkcode conv2dStatsLayout}) of whether a forward plan can, and where each of its GEMMs
 * writes its tiles.
 *
 * Which paths gather: the im2col and pointwise paths (every GEMM step stores `y`'s rows, one per
 * output channel, in the register or shared-memory kernel). Not the direct kernel: it measured
 * slower with a workgroup reduction on llvmpipe (ResNet b8@96 steps 1.2-1.4 s -> 1.6-2.0 s) and
 * is not ported to its current kernels; not grouped or depthwise convolutions, an output into a
 * channel slice (a concatenation: no batch norm reads it alone), or a fused activation.
 *
 * @module
 */

import type { Tensor } from "../../gpu/mod.ts";
import { type AdapterProfile, adapterProfile } from "../_adapter.ts";
import { maxBindingElements } from "../_binding.ts";
import { tunedGemm } from "../autotune/table.ts";
import type { GemmPlan, GemmStatsLayout, StridedGemm } from "../gemm/index.ts";
import { bnFusionMode, type FusionMode } from "../batchnorm/fusion_mode.ts";
import { gemmProblem, gemmStatsLayout, planGemm } from "../gemm/index.ts";
import { MAX_PARTIAL_TILES } from "../batchnorm/partials.ts";
import type { ConvPlan } from "./plan.ts";
import type { GemmStep } from "./steps.ts";

/** Where each GEMM step of a forward plan writes its partial statistics. */
export interface Conv2dStatsLayout {
  /** Tiles per channel in all. */
  readonly tiles: number;
  /** Per GEMM step of the plan, in order: its layout and its first tile. */
  readonly gemms: readonly { readonly layout: GemmStatsLayout; readonly base: number }[];
}

/**
 * Whether a forward plan can gather per-channel partial statistics of its output as it stores it,
 * and where (a pure decision: the plan, its GEMM steps' plans in order, the adapter and the mode
 * in): an ungrouped convolution writing all of `y` (no channel slice), without an activation, by
 * the im2col or pointwise path, each GEMM's plan gathering (`gemmStatsLayout`), within
 * {@linkcode MAX_PARTIAL_TILES} tiles per channel and one binding; `undefined` otherwise (the batch norm then
 * reduces `y` itself).
 *
 * @returns The layout, or `undefined`.
 * @example
 * ```ts ignore
 * conv2dStatsLayout(plan, gemmPlans, { yChannels: 64 }, profile, "auto")?.tiles;
 * ```
 */
export function conv2dStatsLayout(
  plan: ConvPlan,
  gemmPlans: readonly GemmPlan[],
  call: { readonly yChannels: number; readonly activation?: string },
  profile: AdapterProfile,
  mode: FusionMode = "auto",
): Conv2dStatsLayout | undefined {
  const g = plan.geometry, path = plan.forward?.path;
  if (mode === "off" || g.groups !== 1 || call.yChannels !== g.cOut || call.activation) {
    return undefined;
  }
  if (path !== "im2col" && path !== "pointwise") return undefined;
  const gemms: { layout: GemmStatsLayout; base: number }[] = [];
  let tiles = 0;
  for (const p of gemmPlans) {
    const layout = gemmStatsLayout(p, "row", profile, mode);
    if (!layout) return undefined;
    gemms.push({ layout, base: tiles });
    tiles += layout.tiles;
  }
  const fits = tiles <= MAX_PARTIAL_TILES && g.cOut * tiles * 4 <= maxBindingElements(profile);
  return gemms.length > 0 && fits ? { tiles, gemms } : undefined;
}

/**
 * A forward plan's statistics: every GEMM step's plan (as `gemmStrided` would run it), then the
 * pure decision ({@linkcode conv2dStatsLayout}) and the scratch it needs (`runConv2dPlan`);
 * `undefined` where it does not gather.
 *
 * @returns The layout, the GEMM plans in step order and the `[cOut, tiles, 4]` scratch.
 * @example
 * ```ts ignore
 * const stats = conv2dStatsPlans(plan, y, strided, {});
 * ```
 */
export function conv2dStatsPlans(
  plan: ConvPlan,
  y: Tensor,
  strided: (m: GemmStep) => StridedGemm,
  options: { readonly activation?: string },
): { layout: Conv2dStatsLayout; plans: GemmPlan[]; out: Tensor } | undefined {
  if (!plan.forward) return undefined;
  const gpu = y.gpu, profile = adapterProfile(gpu);
  const plans = plan.steps.flatMap((s) =>
    s.kind === "gemm"
      ? [planGemm(gemmProblem(strided(s.gemm)), profile, tunedGemm(gpu, strided(s.gemm), s.tuning))]
      : []
  );
  const layout = conv2dStatsLayout(
    plan,
    plans,
    {
      yChannels: y.shape[1],
      activation: options.activation,
    },
    profile,
    bnFusionMode(gpu, "batchStats"),
  );
  if (!layout) return undefined;
  return { layout, plans, out: gpu.empty([plan.geometry.cOut * layout.tiles * 4]) };
}
