/**
 * The batch-norm backward's gradient sums gathered by the layer after it: when the layer after a
 * batch norm (and its fused activation) computes the batch norm's output gradient (a Linear's or
 * a pointwise convolution's input gradient through the register GEMM), its store adds, per
 * channel, `Σg` and `Σg (x - mean)` (with `g = dy`, or `actBackward(dy, y)` with a fused
 * activation: the sums of the batch norm's first backward pass) into per-thread partial sums,
 * and the batch norm merges them ({@linkcode GradSumsPartials}) instead of reading `dy`, `x` and
 * `y` again in its own gradient-sum pass.
 *
 * This module holds what both sides share: what the producer reads of the batch norm
 * ({@linkcode GradSumsSource}), what it hands over, and the pure decision whether a path fuses
 * ({@linkcode planGradSums}).
 *
 * @module
 */

import type { Tensor } from "../../gpu/mod.ts";
import type { ActivationKind } from "../_activation_wgsl.ts";
import type { AdapterProfile } from "../_adapter.ts";

/** What a producer reads of the batch norm before it (what its training forward saved). */
export interface GradSumsSource {
  /** The batch norm's input `[n, c, ...]`. */
  readonly x: Tensor;
  /** The batch mean per channel `[c]` (f32). */
  readonly mean: Tensor;
  /** 1/sqrt(batch variance + eps) per channel `[c]` (f32). */
  readonly invStd: Tensor;
  /** The activation fused into the batch norm, if any. */
  readonly act?: ActivationKind;
  /** The batch norm's (fused) output, with an activation. */
  readonly y?: Tensor;
}

/**
 * The partial gradient sums a producer gathered: `partial[(ch * slots + s) * 2 + {0, 1}]` holds
 * slot `s`'s `(Σg, Σg (x - mean))` of channel `ch`, every slot written (the batch norm adds the
 * slots in order, as its own finalize pass adds its blocks').
 */
export interface GradSumsPartials {
  /** `[c, slots, 2]`, f32 (owned by the batch norm, which disposes it). */
  readonly partial: Tensor;
  /** Slots per channel. */
  readonly slots: number;
}

/**
 * Where a producer hands its partial sums to the batch norm before it (the plan passes one to
 * both backwards, the producer's first): `source` is the batch norm's, `partials` the
 * producer's, left undefined where its kernels cannot gather them (the batch norm then runs its
 * own gradient-sum pass).
 */
export interface GradSumsSink {
  /** What the producer reads. */
  readonly source: GradSumsSource;
  /** What it gathered, if it could. */
  partials?: GradSumsPartials;
}

/** The producer paths that can gather the sums. */
export type GradSumsPath = "gemm-register" | "direct";

/** Whether the fusion is forced on, off, or decided per adapter (`auto`). */
export type GradSumsMode = "auto" | "on" | "off";

/**
 * The producer paths measured no slower fused on CPU adapters (llvmpipe, `deno task bench:train`
 * interleaved; see the commit that added each). Every supported path fuses elsewhere.
 */
const MEASURED_ON_CPU: readonly GradSumsPath[] = ["gemm-register", "direct"];

/** The most slots per channel (the batch norm's merge loops over them). */
export const MAX_GRAD_SUMS_SLOTS = 16384;

let forced: GradSumsMode | undefined;

/**
 * Forces the fusion on or off for tests and benches (`"auto"`: the adapter decides); the
 * environment variable `MODERN_CNN_GRAD_SUMS` (`on` / `off`) does the same for a whole process.
 *
 * @returns The previous setting.
 * @example
 * ```ts
 * import { forceGradSums } from "./grad_sums.ts";
 * const before = forceGradSums("off");
 * forceGradSums(before);
 * ```
 */
export function forceGradSums(mode: GradSumsMode): GradSumsMode {
  const before = gradSumsMode();
  forced = mode;
  return before;
}

/**
 * The current setting: forced by {@linkcode forceGradSums}, else `MODERN_CNN_GRAD_SUMS`, else
 * `"auto"`.
 *
 * @returns The mode.
 * @example
 * ```ts
 * import { gradSumsMode } from "./grad_sums.ts";
 * gradSumsMode(); // "auto"
 * ```
 */
export function gradSumsMode(): GradSumsMode {
  if (forced !== undefined) return forced;
  let env: string | undefined;
  try {
    env = (globalThis as { Deno?: { env: { get(k: string): string | undefined } } }).Deno?.env
      .get("MODERN_CNN_GRAD_SUMS");
  } catch {
    env = undefined; // no --allow-env: not forced
  }
  return env === "on" || env === "off" ? env : "auto";
}

/**
 * Whether a producer path gathers a batch norm's gradient sums: forced on or off, or (`auto`) on
 * every adapter for a supported path, but on CPU adapters only for the paths measured no slower;
 * never beyond {@linkcode MAX_GRAD_SUMS_SLOTS} slots per channel.
 *
 * @returns True to fuse.
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { planGradSums } from "./grad_sums.ts";
 * planGradSums(WEBGPU_DEFAULT_PROFILE, { path: "gemm-register", slots: 64 }, "auto"); // true
 * planGradSums(WEBGPU_DEFAULT_PROFILE, { path: "gemm-register", slots: 64 }, "off"); // false
 * ```
 */
export function planGradSums(
  profile: AdapterProfile,
  q: { readonly path: GradSumsPath | undefined; readonly slots: number },
  mode: GradSumsMode,
): boolean {
  if (q.path === undefined || mode === "off") return false;
  if (q.slots < 1 || q.slots > MAX_GRAD_SUMS_SLOTS) return false;
  if (mode === "on") return true;
  return !profile.isCpu || MEASURED_ON_CPU.includes(q.path);
}
