/**
 * What the GEMM kernels share: their variants and the store of C.
 *
 * Every GEMM kernel is specialized on how it stores C (C read for `beta`, a row or column bias,
 * segmented columns, a fused activation) and the register kernel also on its vec4 operands:
 * those specializations are the kernels' variants, named by their parts in a fixed order
 * (`va_vb_sb_beta_biascol_seg_rows_vc_relu`; parts left out when off; `rows`, C's row groups,
 * only with `seg`), so that a kernel's cache key
 * reads as its configuration. {@linkcode gemmVariant} names a configuration's variant,
 * {@linkcode variantConfig} reads one back in a kernel body, and {@linkcode storeWgsl} is the
 * WGSL `store` function of the shared-memory kernel and the split-K epilogue.
 *
 * @module
 */

import { type ActivationKind, activationWgsl } from "../_activation_wgsl.ts";
import { variantProduct } from "../_kernel.ts";
import type { GemmStoreConfig } from "./types.ts";

/** The fused activations as a variant axis (none first). */
const ACTIVATIONS = ["", "relu", "relu6", "sigmoid", "tanh"] as const satisfies readonly (
  | ""
  | ActivationKind
)[];

/** How C's columns map: plain, in segments, in segments with row groups. */
const SEGMENTS = ["", "seg", "seg_rows"] as const;

/** The variants of the shared-memory kernel and the split-K epilogue (the store only). */
export const STORE_VARIANTS = variantProduct(
  ["", "beta"],
  ["", "biasrow", "biascol"],
  SEGMENTS,
  ACTIVATIONS,
);

/** The variants of the shared-memory kernel (B read in segments or not, and the store). */
export const SHARED_VARIANTS = variantProduct(
  ["", "sb"],
  ["", "beta"],
  ["", "biasrow", "biascol"],
  SEGMENTS,
  ACTIVATIONS,
);

/** The variants of the register kernel (vec4 A, B and C loads, B in segments, and the store). */
export const REGISTER_VARIANTS = variantProduct(
  ["", "va"],
  ["", "vb"],
  ["", "sb"],
  ["", "beta"],
  ["", "biasrow", "biascol"],
  SEGMENTS,
  ["", "vc"],
  ACTIVATIONS,
);

/** A variant of {@linkcode STORE_VARIANTS}. */
export type StoreVariant = (typeof STORE_VARIANTS)[number];
/** A variant of {@linkcode SHARED_VARIANTS}. */
export type SharedVariant = (typeof SHARED_VARIANTS)[number];
/** A variant of {@linkcode REGISTER_VARIANTS}. */
export type RegisterVariant = (typeof REGISTER_VARIANTS)[number];

/** A kernel configuration as its variant says it: the store, and the vec4 operands. */
export interface VariantConfig extends GemmStoreConfig {
  /** A loaded as vec4s. */
  readonly vecA: boolean;
  /** B loaded as vec4s. */
  readonly vecB: boolean;
  /** B's columns read in segments. */
  readonly segmentedB: boolean;
  /** C stored as vec4s. */
  readonly vecC: boolean;
}

/**
 * The variant of a configuration (the vec4 flags default to off: the shared kernel and the
 * epilogue have none).
 *
 * @returns The parts that are on, in their fixed order, joined with `_` (`""` for none).
 * @example
 * ```ts
 * import { gemmVariant } from "./store.ts";
 * gemmVariant({ beta: true, bias: "col", segmented: false, activation: "relu" }); // "beta_biascol_relu"
 * ```
 */
export function gemmVariant(c: GemmStoreConfig & Partial<VariantConfig>): RegisterVariant {
  let v = "";
  const add = (part: string) => (v = v === "" ? part : `${v}_${part}`);
  if (c.vecA) add("va");
  if (c.vecB) add("vb");
  if (c.segmentedB) add("sb");
  if (c.beta) add("beta");
  if (c.bias !== "none") add(`bias${c.bias}`);
  if (c.segmented) add("seg");
  if (c.rowGroups) add("rows");
  if (c.vecC) add("vc");
  if (c.activation) add(c.activation);
  return v as RegisterVariant;
}

/**
 * The configuration a variant names (the inverse of {@linkcode gemmVariant}).
 *
 * @returns The store and the vec4 flags.
 * @example
 * ```ts
 * import { variantConfig } from "./store.ts";
 * variantConfig("va_biasrow_seg").bias; // "row"
 * ```
 */
export function variantConfig(variant: string): VariantConfig {
  const parts = variant.split("_");
  const has = (p: string) => parts.includes(p);
  const act = parts.find((p) => (ACTIVATIONS as readonly string[]).includes(p) && p !== "");
  return {
    vecA: has("va"),
    vecB: has("vb"),
    segmentedB: has("sb"),
    vecC: has("vc"),
    beta: has("beta"),
    bias: has("biasrow") ? "row" : has("biascol") ? "col" : "none",
    segmented: has("seg"),
    rowGroups: has("rows"),
    activation: act as ActivationKind | undefined,
  };
}

/**
 * The variants of a list that bind a bias.
 *
 * @returns Those of `variants` with a `biasrow` or `biascol` part.
 * @example
 * ```ts
 * import { biasVariants, STORE_VARIANTS } from "./store.ts";
 * biasVariants(STORE_VARIANTS).length; // 60 of 90
 * ```
 */
export function biasVariants<V extends string>(variants: readonly V[]): V[] {
  return variants.filter((v) => variantConfig(v).bias !== "none");
}

/**
 * The variants of a list that bind `c2` (C's row groups).
 *
 * @returns Those of `variants` with a `rows` part.
 * @example
 * ```ts
 * import { rowsVariants, STORE_VARIANTS } from "./store.ts";
 * rowsVariants(STORE_VARIANTS).length; // 30 of 90
 * ```
 */
export function rowsVariants<V extends string>(variants: readonly V[]): V[] {
  return variants.filter((v) => variantConfig(v).rowGroups);
}

/**
 * Converts an element of binding `c`, `c2` or `bias` to f32, or stores into `c` or `c2` (a
 * kernel's helpers).
 */
export interface StoreHelpers {
  /** `expr`, an element of `c`, `c2` or `bias`, as an f32 value. */
  load(name: "c" | "c2" | "bias", expr: string): string;
  /** The statement `target = value;` for binding `c` or `c2`. */
  store(name: "c" | "c2", target: string, value: string): string;
}

/**
 * The C store of the shared-memory kernel and the split-K epilogue: `fn store(zc, z, i, j, acc)`
 * writes `alpha * acc (+ beta * C) (+ bias)`, through the activation, to element (i, j) of batch
 * `zc` of C (its column mapping: `ldcCol`, or segments), the bias indexed by batch `z`.
 *
 * @returns WGSL: the activation function, `colOffset` and `store`.
 * @example
 * ```ts
 * import { storeWgsl } from "./store.ts";
 * const wgsl = storeWgsl(
 *   { beta: false, bias: "none", segmented: false, activation: undefined },
 *   { load: (_, e) => e, store: (_, t, v) => `${t} = ${v};` },
 * );
 * ```
 */
export function storeWgsl(c: GemmStoreConfig, h: StoreHelpers): string {
  const value = c.activation ? "act(v)" : "v";
  if (c.rowGroups) {
    return `${activationWgsl(c.activation, "f32")}
${rowBaseWgsl()}
fn store(zc: u32, z: u32, i: u32, j: u32, acc: f32) {
  let rb = rowBase(i);
  let idx = rb.x + zc * p.sC + (j / p.seg) * rb.y + j % p.seg;
  var v = p.alpha * acc;
  ${
      c.beta
        ? `if (rb.z == 0u) { v += p.beta * ${h.load("c", "c[idx]")}; } ` +
          `else { v += p.beta * ${h.load("c2", "c2[idx]")}; }`
        : ""
    }
  ${c.bias === "row" ? `v += ${h.load("bias", "bias[p.biasOff + z * p.sBias + i]")};` : ""}
  ${c.bias === "col" ? `v += ${h.load("bias", "bias[p.biasOff + z * p.sBias + j]")};` : ""}
  if (rb.z == 0u) { ${h.store("c", "c[idx]", value)} } else { ${h.store("c2", "c2[idx]", value)} }
}`;
  }
  return `${activationWgsl(c.activation, "f32")}
fn colOffset(j: u32) -> u32 {
  ${c.segmented ? "return (j / p.seg) * p.segStride + j % p.seg;" : "return j * p.ldcCol;"}
}
fn store(zc: u32, z: u32, i: u32, j: u32, acc: f32) {
  let idx = p.cOff + zc * p.sC + i * p.ldc + colOffset(j);
  var v = p.alpha * acc;
  ${c.beta ? `v += p.beta * ${h.load("c", "c[idx]")};` : ""}
  ${c.bias === "row" ? `v += ${h.load("bias", "bias[p.biasOff + z * p.sBias + i]")};` : ""}
  ${c.bias === "col" ? `v += ${h.load("bias", "bias[p.biasOff + z * p.sBias + j]")};` : ""}
  ${h.store("c", "c[idx]", value)}
}`;
}

/**
 * WGSL `fn rowBase(i) -> vec3u` of the `rows` store (C's row groups, `ROW_GROUP_PARAMS`): the
 * element of row i's column 0 (without the batch's `z * sC`), its group's segment stride, and 1
 * when the group is stored into binding `c2` (else 0).
 *
 * @returns The WGSL function.
 * @example
 * ```ts
 * import { rowBaseWgsl } from "./store.ts";
 * rowBaseWgsl().startsWith("fn rowBase"); // true
 * ```
 */
export function rowBaseWgsl(): string {
  const group = (g: number) => {
    const row = g === 0 ? "i" : `(i - p.rgRow${g})`;
    return `vec3u(p.rgBase${g} + ${row} * p.ldc, p.rgStride${g}, (p.rgSecond >> ${g}u) & 1u)`;
  };
  return `fn rowBase(i: u32) -> vec3u {
  if (i < p.rgRow1) { return ${group(0)}; }
  if (i < p.rgRow2) { return ${group(1)}; }
  if (i < p.rgRow3) { return ${group(2)}; }
  return ${group(3)};
}`;
}

/**
 * The name part of a GEMM kernel whose operands are read along k in segments (`_ska`, `_skb`,
 * `_ska_skb`; `""` for none): a compile-time argument of the kernel, not a variant (a variant
 * axis would multiply the register kernel's 1,440 variants).
 *
 * @returns The part, with its leading `_`.
 * @example
 * ```ts
 * import { kSegName } from "./store.ts";
 * kSegName(true, false); // "_ska"
 * ```
 */
export function kSegName(segKA: boolean, segKB: boolean): string {
  return `${segKA ? "_ska" : ""}${segKB ? "_skb" : ""}`;
}
