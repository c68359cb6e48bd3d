/**
 * The batch-norm backward's gradient sums gathered by the layer after it: when the layer after a
 * batch norm (and its fused activation) computes the batch norm's output gradient (a Linear's or
 * a pointwise convolution's input gradient through the register or the shared-memory GEMM, a 3x3
 * one's through the flipped direct kernel), its store adds, per channel, `Σg` and `Σg (x - mean)` (with `g = dy`, or
 * `actBackward(dy, y)` with a fused activation: the sums of the batch norm's first backward pass)
 * into per-thread partial sums, and the batch norm merges them ({@linkcode GradSumsPartials}) instead of reading `dy`, `x` and
 * `y` again in its own gradient-sum pass.
 *
 * This module holds what both sides share: what the producer reads of the batch norm
 * ({@linkcode GradSumsSource}), what it hands over, and the pure decision whether a path fuses
 * ({@linkcode planGradSums}).
 *
 * @module
 */

import type { Tensor } from "../../gpu/mod.ts";
import { actBackwardFn, ACTIVATION_KINDS, type ActivationKind } from "../_activation_wgsl.ts";
import type { AdapterProfile } from "../_adapter.ts";
import { maxBindingElements } from "../_binding.ts";
import type { FusionMode } from "./fusion_mode.ts";

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
  /**
   * `[c, tiles, 2]` f32 (owned by the batch norm, which disposes it): tile t's two sums of
   * channel ch at `(ch * tiles + t) * 2` (the tiles: the producer's threads' slots).
   */
  readonly partials: Tensor;
  /** Tiles per channel. */
  readonly tiles: number;
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
export type GradSumsPath = "gemm-register" | "gemm-shared" | "direct";

/**
 * The least inner dimension `k` (multiply-adds per stored element) at which the register GEMM
 * gathering the sums was measured no slower than the plain GEMM plus the batch norm's sum pass
 * on llvmpipe (MobileNet's pointwise input gradients at batch 32, interleaved, median of 9:
 * k = 64 to 256 were 7% to 25% slower, 512 and 1024 2% to 8% faster: the gather's loads and
 * registers are amortized over k). The direct kernel's was 6% faster to 27% slower (ResNet's and
 * DenseNet's 3x3 convs): not fused on CPU adapters. Every supported path fuses elsewhere.
 */
const MIN_K_ON_CPU: Readonly<Record<GradSumsPath, number>> = {
  "gemm-register": 512,
  "gemm-shared": Infinity, // the GPUs' kernel: not measured on a CPU adapter
  direct: Infinity,
};

/** The most slots per channel (the batch norm's merge loops over them). */
export const MAX_GRAD_SUMS_SLOTS = 16384;

/**
 * Whether a producer path gathers a batch norm's gradient sums: forced on or off, or (`auto`) on
 * every adapter for a supported path, but on CPU adapters only where measured no slower (the
 * register GEMM from an inner dimension `k` of 512, the direct kernel never); never beyond
 * {@linkcode MAX_GRAD_SUMS_SLOTS} slots per channel.
 *
 * @returns True to fuse.
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { planGradSums } from "./grad_sums.ts";
 * const q = { path: "gemm-register", slots: 64, k: 128 } as const;
 * planGradSums(WEBGPU_DEFAULT_PROFILE, q, "auto"); // true
 * planGradSums({ ...WEBGPU_DEFAULT_PROFILE, isCpu: true }, q, "auto"); // false: k < 512
 * planGradSums(WEBGPU_DEFAULT_PROFILE, q, "off"); // false
 * ```
 */
export function planGradSums(
  profile: AdapterProfile,
  q: {
    readonly path: GradSumsPath | undefined;
    readonly slots: number;
    /** Multiply-adds per stored element (the GEMM's k, the conv's input channels x taps). */
    readonly k: number;
    /** The batch norm's channels (default 1): the partials, `[channels, slots, 2]` f32, must fit one binding. */
    readonly channels?: number;
  },
  mode: FusionMode,
): boolean {
  if (q.path === undefined || mode === "off") return false;
  if (q.slots < 1 || q.slots > MAX_GRAD_SUMS_SLOTS) return false;
  if ((q.channels ?? 1) * q.slots * 2 > maxBindingElements(profile)) return false;
  if (mode === "on") return true;
  return !profile.isCpu || q.k >= MIN_K_ON_CPU[q.path];
}

/**
 * The WGSL statements with which every gathering producer adds one stored gradient value to a
 * channel's two sums: `g` is `value` (f32, rounded as stored), through the derivative of the batch
 * norm's activation at its output `y` when given; then `a += g` and `b += g * (x - mean)`.
 *
 * @returns WGSL statements.
 * @example
 * ```ts
 * import { gradSumsAddWgsl } from "./grad_sums.ts";
 * gradSumsAddWgsl({ value: "v", x: "gx[e]", mean: "m", a: "sA", b: "sB" });
 * // "let g = v; sA += g; sB += g * (gx[e] - m);"
 * ```
 */
export function gradSumsAddWgsl(
  o: { value: string; y?: string; x: string; mean: string; a: string; b: string },
): string {
  const g = o.y === undefined ? o.value : `actBackward(${o.value}, ${o.y})`;
  return `let g = ${g}; ${o.a} += g; ${o.b} += g * (${o.x} - ${o.mean});`;
}

/**
 * The WGSL helpers a gathering kernel adds with the batch norm's activation `act`: its
 * derivative `actBackward` (on f32); nothing without one.
 *
 * @returns WGSL declarations, or "".
 * @example
 * ```ts
 * import { gradSumsHelpers } from "./grad_sums.ts";
 * gradSumsHelpers("relu").includes("fn actBackward"); // true
 * ```
 */
export function gradSumsHelpers(act: ActivationKind | undefined): string {
  return act ? `alias T = f32;\n${actBackwardFn(act)}\n` : "";
}

/** The declaration of a gradient-sum binding of a kernel, in `variants`. */
export interface GradSumsDecl<T extends "float" | "f32", A extends "read" | "read_write", V> {
  /** Its type. */
  readonly type: T;
  /** Its access. */
  readonly access: A;
  /** The variants that declare it. */
  readonly variants: readonly V[];
}

/**
 * The bindings a kernel that gathers the gradient sums adds (`gs` its gathering argument, `""`
 * for none: then declared in no variant): the batch norm's input `gx`, its output `gy` (with an
 * activation, `gs` then has an `_<kind>` part), the mean `gMean` and the partials `gPart`.
 *
 * @returns The binding declarations.
 * @example
 * ```ts
 * import { gradSumsBindings } from "./grad_sums.ts";
 * gradSumsBindings("gradsums_row", ["", "beta"]).gy.variants; // [] (no activation: no y)
 * ```
 */
export function gradSumsBindings<V extends string>(gs: string, variants: readonly V[]): {
  readonly gx: GradSumsDecl<"float", "read", V>;
  readonly gMean: GradSumsDecl<"float", "read", V>;
  readonly gPart: GradSumsDecl<"f32", "read_write", V>;
  readonly gy: GradSumsDecl<"float", "read", V>;
} {
  const on = gs ? variants : [];
  const act = gs.split("_").some((part) => ACTIVATION_KINDS.includes(part as ActivationKind));
  return {
    gx: { type: "float", access: "read", variants: on },
    gMean: { type: "float", access: "read", variants: on },
    gPart: { type: "f32", access: "read_write", variants: on },
    gy: { type: "float", access: "read", variants: act ? on : [] },
  };
}
