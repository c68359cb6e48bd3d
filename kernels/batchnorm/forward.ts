/**
 * The kernels of the batch-norm forward (`index.ts` records them): training, the statistics'
 * sums (finished in the same pass with one workgroup per channel, else partial sums and their
 * finalize pass); in both modes, the normalize pass (with a fused activation; in eval it computes
 * the coefficients from the running statistics itself).
 *
 * @module
 */

import { assignAs, type FloatDType } from "../_dtype.ts";
import { defineKernel, variantProduct } from "../_kernel.ts";
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

/**
 * The variants of the statistics pass: on vec4s or not; partial sums, or finishing the
 * reduction with one workgroup (`final`) or one thread (`cols`) per channel.
 */
const STATS_VARIANTS = variantProduct(["", "vec4"], ["", "final", "cols"]);
const statsFinalOnly = STATS_VARIANTS.filter(partialFinal);
const statsPartialOnly = STATS_VARIANTS.filter((v) => !partialFinal(v));

/**
 * WGSL statements (indented by two spaces) that turn the shifted sums `r = (Σ(x - K),
 * Σ(x - K)^2)` of channel `ch` over `p.count` values into its statistics: `saveMean`,
 * `saveInvStd = 1 / sqrt(var + eps)` (biased variance), the running statistics (unbiased
 * variance, momentum), and `coef[ch] = (mean, weight * invstd)` for the normalize pass; `K` is
 * the expression of the shift. The same text in both kernels that finish: the same bits.
 */
export function statsFinish(
  d: { readonly [name: string]: FloatDType | undefined },
  load: (name: "weight" | "runningMean" | "runningVar", expr: string) => string,
  K: string,
): string {
  return `  let N = f32(p.count);
  let d = r.x / N;
  let mean = ${K} + d;
  let variance = max(r.y / N - d * d, 0.0);
  let invstd = 1.0 / sqrt(variance + p.eps);
  ${assignAs(d.saveMean, "saveMean[ch]", "=", "mean")}
  ${assignAs(d.saveInvStd, "saveInvStd[ch]", "=", "invstd")}
  let unbiased = variance * N / max(N - 1.0, 1.0);
  ${
    assignAs(
      d.runningMean,
      "runningMean[ch]",
      "=",
      `(1.0 - p.momentum) * ${load("runningMean", "runningMean[ch]")} + p.momentum * mean`,
    )
  }
  ${
    assignAs(
      d.runningVar,
      "runningVar[ch]",
      "=",
      `(1.0 - p.momentum) * ${load("runningVar", "runningVar[ch]")} + p.momentum * unbiased`,
    )
  }
  coef[ch * 2u] = mean;
  coef[ch * 2u + 1u] = ${load("weight", "weight[ch]")} * invstd;`;
}

/** The per-channel outputs of the statistics (bindings of the kernels that finish; `partials.ts`). */
export const statsOutputs = <V extends readonly string[] | undefined>(variants: V) => ({
  weight: { type: "float", access: "read", variants },
  saveMean: { type: "float", access: "read_write", variants },
  saveInvStd: { type: "float", access: "read_write", variants },
  runningMean: { type: "float", access: "read_write", variants },
  runningVar: { type: "float", access: "read_write", variants },
  coef: { type: "f32", access: "read_write", variants },
} as const);

/**
 * Pass 1 of the training forward: shifted sums per (block, channel); variants `final` (one
 * block per channel, one range) and `cols` (one thread per channel) finish them into the
 * statistics.
 */
export const statsPartial = defineKernel({
  name: "batchnorm_stats",
  doc: "Batch norm training forward, pass 1: shifted sums of x - K and (x - K)^2 per " +
    "(block, channel), K = x[0, ch, 0] (read from x0, the binding of the first sample); " +
    "variants final (one block per channel: its lane 0) and cols (one thread per channel) write " +
    "the statistics, the running statistics and coef[ch] = (mean, weight * invstd) instead " +
    "(no finalize pass).",
  params: { ...PARTIAL_PARAMS, eps: "f32", momentum: "f32" },
  bindings: {
    x: { type: "float", access: "read", vec4: partialVec4 },
    x0: { type: "float", access: "read", vec4: partialVec4 },
    partial: { type: "f32", access: "read_write", variants: statsPartialOnly },
    ...statsOutputs(statsFinalOnly),
  },
  variants: STATS_VARIANTS,
  workgroupSize: WG,
  body: ({ dtypes, variant, load }) =>
    partialMain(variant, dtypes, {
      data: ["x"],
      prologue: `let K = first(${load("x0", "x0[ch * p.hw]")});`,
      body: `let v = ${load("x", dataAt(dtypes, "x"))} - K;
      s += vec2f(hsum(v), hdot(v, v));`,
      finish: partialFinal(variant)
        ? statsFinish(dtypes, (n, e) => load(n, e), "K").replaceAll("\n  ", "\n    ")
        : undefined,
    }),
});

/** Pass 2 of the training forward (several blocks per channel): the statistics. */
export const statsFinal = defineKernel({
  name: "batchnorm_stats_merge",
  doc: "Batch norm training forward, pass 2: one thread per channel adds the blocks' sums, then " +
    "writes saveMean, saveInvStd = 1 / sqrt(var + eps) (biased variance), updates the running " +
    "statistics (unbiased variance), and writes coef[ch] = (mean, weight * invstd) for pass 3. " +
    "x0 is the binding of the first sample (for the shift K = x[0, ch, 0]).",
  params: { c: "u32", hw: "u32", blocks: "u32", count: "u32", eps: "f32", momentum: "f32" },
  bindings: {
    partial: { type: "f32", access: "read" },
    x0: { type: "float", access: "read" },
    ...statsOutputs(undefined),
  },
  workgroupSize: WG,
  body: ({ dtypes: d, load }) =>
    channelSumsMain(statsFinish(d, (n, e) => load(n, e), load("x0", "x0[ch * p.hw]"))),
});

/** The variants of the normalize pass: an elementwise variant, training or eval. */
const NORMALIZE_VARIANTS = variantProduct(ELEMENTWISE_VARIANTS, ["", "eval"]);
const isEval = (v: string) => v.split("_").includes("eval");

/**
 * The last pass of both forwards: `y = (x - mean) * scale + bias`, through a fused activation;
 * in training `(mean, scale)` come from the statistics' `coef`, in eval (variant `eval`) from the
 * running statistics (no separate pass).
 */
export const normalize = defineKernel({
  name: "batchnorm_normalize",
  doc: "Batch norm forward, last pass: y = act((x - mean) * scale + bias), act the variant's " +
    "fused activation (none without one); (mean, scale) = coef[ch] in training, " +
    "(runningMean, weight / sqrt(runningVar + eps)) in eval.",
  params: { ...ELEMENTWISE_PARAMS, eps: "f32" },
  bindings: {
    x: { type: "float", access: "read", vec4: elementwiseVec4 },
    coef: { type: "f32", access: "read", variants: NORMALIZE_VARIANTS.filter((v) => !isEval(v)) },
    runningMean: { type: "float", access: "read", variants: NORMALIZE_VARIANTS.filter(isEval) },
    runningVar: { type: "float", access: "read", variants: NORMALIZE_VARIANTS.filter(isEval) },
    weight: { type: "float", access: "read", variants: NORMALIZE_VARIANTS.filter(isEval) },
    bias: { type: "float", access: "read" },
    y: { type: "float", access: "read_write", vec4: elementwiseVec4 },
  },
  variants: NORMALIZE_VARIANTS,
  workgroupSize: WG,
  body: ({ dtypes, variant, load, store }) => {
    const kind = actOf(variant);
    const coefs = isEval(variant)
      ? `let mean = ${load("runningMean", "runningMean[ch]")};
  let scale = ${load("weight", "weight[ch]")} / sqrt(${
        load("runningVar", "runningVar[ch]")
      } + p.eps);`
      : `let mean = coef[ch * 2u];
  let scale = coef[ch * 2u + 1u];`;
    return elementwiseMain(layoutOf(variant), dtypes, {
      data: ["x", "y"],
      helpers: activationFns(kind),
      prologue: `${coefs}
  let shift = ${load("bias", "bias[ch]")};`,
      body: `let v = (${load("x", dataAt(dtypes, "x"))} - mean) * scale + shift;
    ${store("y", dataAt(dtypes, "y"), kind ? "act(v)" : "v")}`,
    });
  },
});
