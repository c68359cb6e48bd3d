/**
 * The kernels of the batch-norm backward (`index.ts` records them): the sums of the gradient
 * (finished in the same pass with one workgroup per channel, else partial sums and their
 * finalize pass: the parameter gradients and the channel sums), and the input-gradient pass
 * (which derives its coefficients from the sums); with a fused activation, its backward is
 * applied to `dy` on the fly.
 *
 * @module
 */

import { assignAs, type FloatDType } from "../_dtype.ts";
import { defineKernel, variantProduct } from "../_kernel.ts";
import { ACTIVATION_KINDS, type ActivationKind } from "../_activation_wgsl.ts";
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
  partialFinal,
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

/** The variants of the gradient sums: activation, vec4, and whether (and how) they finish. */
const GRAD_VARIANTS = variantProduct(
  ["", ...ACTIVATION_KINDS],
  ["", "vec4"],
  ["", "final", "final_acc", "cols", "cols_acc"],
);
const gradFinalOnly = GRAD_VARIANTS.filter(partialFinal);
const isAcc = (v: string) => v.split("_").includes("acc");

/**
 * WGSL statements that finish the gradient sums `r = (Σg, Σg (x - mean))` of channel `ch`: the
 * parameter gradients (overwritten, or accumulated with `op` "+=") and `sums[ch]` for the
 * input-gradient pass. The same text in both kernels that finish: the same bits.
 */
function gradFinish(
  d: { readonly [name: string]: FloatDType | undefined },
  load: (name: "saveInvStd", expr: string) => string,
  op: "=" | "+=",
): string {
  return `  let invstd = ${load("saveInvStd", "saveInvStd[ch]")};
  ${assignAs(d.dbias, "dbias[ch]", op, "r.x")}
  ${assignAs(d.dweight, "dweight[ch]", op, "r.y * invstd")}
  sums[ch * 2u] = r.x;
  sums[ch * 2u + 1u] = r.y;`;
}

/** The per-channel outputs of the gradient sums (bindings of the kernels that finish). */
const gradOutputs = <V extends readonly string[] | undefined>(variants: V) => ({
  saveInvStd: { type: "float", access: "read", variants },
  dweight: { type: "float", access: "read_write", variants },
  dbias: { type: "float", access: "read_write", variants },
  sums: { type: "f32", access: "read_write", variants },
} as const);

/**
 * Pass 1 of the backward: sums of g and g * (x - mean) per (block, channel); variants `final`
 * (one block per channel, one range) and `cols` (one thread per channel) finish them, `_acc`
 * accumulating the parameter gradients.
 */
export const gradPartial = defineKernel({
  name: "batchnorm_grad_sums",
  doc: "Batch norm backward, pass 1: sums of g and g * (x - mean) per (block, channel), with " +
    "g = dy, or with a fused activation g = actBackward(dy, y) (y its output); variants final " +
    "(one block per channel: its lane 0) and cols (one thread per channel) overwrite (_acc: " +
    "accumulate into) dbias = Σg and dweight = Σg (x - mean) * invstd and write sums[ch] (no " +
    "finalize pass).",
  params: { ...PARTIAL_PARAMS, delta: "u32" },
  bindings: {
    dy: { type: "float", access: "read", vec4: partialVec4 },
    x: { type: "float", access: "read", vec4: partialVec4 },
    saveMean: { type: "float", access: "read" },
    partial: {
      type: "f32",
      access: "read_write",
      variants: GRAD_VARIANTS.filter((v) => !partialFinal(v)),
    },
    y: {
      type: "float",
      access: "read",
      vec4: partialVec4,
      variants: withActivation(GRAD_VARIANTS),
    },
    ...gradOutputs(gradFinalOnly),
  },
  variants: GRAD_VARIANTS,
  workgroupSize: WG,
  body: ({ dtypes, variant, load }) => {
    const kind = actOf(variant);
    return partialMain(variant, dtypes, {
      data: ["x", "dy", "y"],
      helpers: activationFns(kind),
      prologue: `let mean = ${load("saveMean", "saveMean[ch]")};`,
      body: `let g = ${gradExpr(kind, dtypes, load)};
      s += vec2f(hsum(g), hdot(g, ${load("x", dataAt(dtypes, "x"))} - mean));`,
      finish: partialFinal(variant)
        ? gradFinish(dtypes, (n, e) => load(n, e), isAcc(variant) ? "+=" : "=")
          .replaceAll("\n  ", "\n    ")
        : undefined,
    });
  },
});

/** Pass 2 of the backward (several blocks per channel): the parameter gradients and sums. */
export const gradFinal = defineKernel({
  name: "batchnorm_grad_merge",
  doc: "Batch norm backward, pass 2: one thread per channel adds the blocks' sums (Σg, " +
    "Σg (x - mean)), then overwrites (variant acc: accumulates into) dbias = Σg and " +
    "dweight = Σg (x - mean) * invstd, and writes them to sums[ch] for pass 3.",
  params: { c: "u32", blocks: "u32" },
  bindings: {
    partial: { type: "f32", access: "read" },
    ...gradOutputs(undefined),
  },
  variants: ["", "acc"],
  workgroupSize: WG,
  body: ({ dtypes: d, variant, load }) =>
    channelSumsMain(gradFinish(d, (n, e) => load(n, e), variant === "acc" ? "+=" : "=")),
});

/** Last pass of the backward: the input gradient. */
export const gradInput = defineKernel({
  name: "batchnorm_grad_input",
  doc: "Batch norm backward, last pass: dx = A * g + B * (x - mean) + C, with A = weight * " +
    "invstd, B = -A * invstd^2 * Σg (x - mean) / N, C = -A * Σg / N from sums[ch] and the saved " +
    "statistics, and g = dy, or with a fused activation g = actBackward(dy, y) (y its output).",
  params: { ...ELEMENTWISE_PARAMS, count: "u32" },
  bindings: {
    dy: { type: "float", access: "read", vec4: elementwiseVec4 },
    x: { type: "float", access: "read", vec4: elementwiseVec4 },
    sums: { type: "f32", access: "read" },
    weight: { type: "float", access: "read" },
    saveMean: { type: "float", access: "read" },
    saveInvStd: { type: "float", access: "read" },
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
      prologue: `let mean = ${load("saveMean", "saveMean[ch]")};
  let invstd = ${load("saveInvStd", "saveInvStd[ch]")};
  let N = f32(p.count);
  let A = ${load("weight", "weight[ch]")} * invstd;
  let B = -A * invstd * invstd * sums[ch * 2u + 1u] / N;
  let C = -A * sums[ch * 2u] / N;`,
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
