/**
 * The kernels of the batch-norm backward (`index.ts` records them): the partial sums of the
 * gradient, their finalize pass (parameter gradients and the coefficients of `dx`), and the
 * input-gradient pass; with a fused activation, its backward is applied to `dy` on the fly.
 *
 * @module
 */

import { assignAs } from "../../kernels/_dtype.ts";
import { defineKernel } from "../../kernels/_kernel.ts";
import type { ActivationKind } from "../../kernels/_activation_wgsl.ts";
import {
  activationFns,
  actOf,
  channelSumsMain,
  dataAt,
  ELEMENTWISE_PARAMS,
  ELEMENTWISE_VARIANTS,
  elementwiseMain,
  elementwiseVec4,
  layoutOf,
  PARTIAL_PARAMS,
  PARTIAL_VARIANTS,
  partialMain,
  partialVec4,
  WG,
} from "./passes.ts";

/** The bindings of a fused activation's variants (`y`, the fused forward's output). */
const withActivation = (variants: readonly string[]): string[] =>
  variants.filter((v) => actOf(v) !== undefined);

/**
 * `g`, the gradient reaching the batch norm: `dy`, or the fused activation's backward from the
 * forward's output `y`, each loaded with `load` at its index.
 */
function gradExpr(
  kind: ActivationKind | undefined,
  dtypes: { readonly [name: string]: "f32" | "f16" | undefined },
  load: (name: "dy" | "y", expr: string) => string,
): string {
  const dy = load("dy", dataAt(dtypes, "dy"));
  return kind ? `actBackward(${dy}, ${load("y", dataAt(dtypes, "y"))})` : dy;
}

/** Pass 1 of the backward: sums of g and g * (x - mean) per (chunk, channel). */
export const gradPartial = defineKernel({
  name: "legacy_batchnorm_grad_partial",
  doc: "Batch norm backward, pass 1: sums of g and g * (x - mean) per (chunk, channel), with " +
    "g = dy, or with a fused activation g = actBackward(dy, y) (y its output).",
  params: { ...PARTIAL_PARAMS, delta: "u32" },
  bindings: {
    dy: { type: "float", access: "read", vec4: partialVec4 },
    x: { type: "float", access: "read", vec4: partialVec4 },
    saveMean: { type: "float", access: "read" },
    partial: { type: "f32", access: "read_write" },
    y: {
      type: "float",
      access: "read",
      vec4: partialVec4,
      variants: withActivation(PARTIAL_VARIANTS),
    },
  },
  variants: PARTIAL_VARIANTS,
  workgroupSize: WG,
  body: ({ dtypes, variant, load }) => {
    const kind = actOf(variant);
    return partialMain(partialVec4(variant), dtypes, {
      data: ["x", "dy", "y"],
      helpers: activationFns(kind),
      prologue: `let mean = ${load("saveMean", "saveMean[ch]")};`,
      body: `let g = ${gradExpr(kind, dtypes, load)};
    s += vec2f(hsum(g), hdot(g, ${load("x", dataAt(dtypes, "x"))} - mean));`,
    });
  },
});

/** Pass 2 of the backward: parameter gradients and the coefficients of `dx`. */
export const gradFinal = defineKernel({
  name: "legacy_batchnorm_grad_final",
  doc: "Batch norm backward, pass 2: one thread per channel adds the chunk sums (sdy, sdyxm), " +
    "then overwrites (variant acc: accumulates into) dbias = sdy and dweight = sdyxm * invstd, " +
    "and writes coef[ch] = (mean, A, B, C) of dx = A * dy + B * (x - mean) + C for pass 3.",
  params: { n: "u32", c: "u32", hw: "u32", chunks: "u32" },
  bindings: {
    partial: { type: "f32", access: "read" },
    weight: { type: "float", access: "read" },
    saveMean: { type: "float", access: "read" },
    saveInvStd: { type: "float", access: "read" },
    dweight: { type: "float", access: "read_write" },
    dbias: { type: "float", access: "read_write" },
    coef: { type: "f32", access: "read_write" },
  },
  variants: ["", "acc"],
  workgroupSize: WG,
  body: ({ dtypes: d, variant, load }) => {
    const op = variant === "acc" ? "+=" : "=";
    return channelSumsMain(
      ["sdy", "sdyxm"],
      `  let invstd = ${load("saveInvStd", "saveInvStd[ch]")};
  ${assignAs(d.dbias, "dbias[ch]", op, "sdy")}
  ${assignAs(d.dweight, "dweight[ch]", op, "sdyxm * invstd")}
  let N = f32(p.n * p.hw);
  let a = ${load("weight", "weight[ch]")} * invstd;
  coef[ch * 4u] = ${load("saveMean", "saveMean[ch]")};
  coef[ch * 4u + 1u] = a;
  coef[ch * 4u + 2u] = -a * invstd * invstd * sdyxm / N;
  coef[ch * 4u + 3u] = -a * sdy / N;`,
    );
  },
});

/** Pass 3 of the backward: the input gradient. */
export const gradInput = defineKernel({
  name: "legacy_batchnorm_grad_input",
  doc: "Batch norm backward, pass 3: dx = A * g + B * (x - mean) + C with the per-channel " +
    "coefficients coef[ch] = (mean, A, B, C) of pass 2 and g = dy, or with a fused activation " +
    "g = actBackward(dy, y) (y its output).",
  params: ELEMENTWISE_PARAMS,
  bindings: {
    dy: { type: "float", access: "read", vec4: elementwiseVec4 },
    x: { type: "float", access: "read", vec4: elementwiseVec4 },
    coef: { type: "f32", access: "read" },
    dx: { type: "float", access: "read_write", vec4: elementwiseVec4 },
    y: {
      type: "float",
      access: "read",
      vec4: elementwiseVec4,
      variants: withActivation(ELEMENTWISE_VARIANTS),
    },
  },
  variants: ELEMENTWISE_VARIANTS,
  workgroupSize: WG,
  body: ({ dtypes, variant, load, store }) => {
    const kind = actOf(variant);
    return elementwiseMain(layoutOf(variant), dtypes, {
      data: ["x", "dy", "dx", "y"],
      helpers: activationFns(kind),
      prologue: `let mean = coef[ch * 4u];
  let A = coef[ch * 4u + 1u];
  let B = coef[ch * 4u + 2u];
  let C = coef[ch * 4u + 3u];`,
      body: `let g = ${gradExpr(kind, dtypes, load)};
    ${
        store(
          "dx",
          dataAt(dtypes, "dx"),
          `A * g + B * (${load("x", dataAt(dtypes, "x"))} - mean) + C`,
        )
      }`,
    });
  },
});
