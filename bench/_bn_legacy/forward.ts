/**
 * The kernels of the batch-norm forward (`index.ts` records them): training, the statistics'
 * partial sums and their finalize pass; eval, the coefficients from the running statistics; in
 * both, the normalize pass (with a fused activation).
 *
 * @module
 */

import { assignAs } from "../../kernels/_dtype.ts";
import { defineKernel } from "../../kernels/_kernel.ts";
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
  partialMain,
  partialVec4,
  WG,
} from "./passes.ts";

/** Pass 1 of the training forward: shifted sums per (chunk, channel). */
export const statsPartial = defineKernel({
  name: "legacy_batchnorm_stats_partial",
  doc: "Batch norm training forward, pass 1: shifted sums of x - K and (x - K)^2 per " +
    "(chunk, channel), K = x[0, ch, 0] (read from x0, the binding of the first sample)",
  params: PARTIAL_PARAMS,
  bindings: {
    x: { type: "float", access: "read", vec4: partialVec4 },
    x0: { type: "float", access: "read", vec4: partialVec4 },
    partial: { type: "f32", access: "read_write" },
  },
  variants: ["", "vec4"],
  workgroupSize: WG,
  body: ({ dtypes, variant, load }) =>
    partialMain(partialVec4(variant), dtypes, {
      data: ["x"],
      prologue: `let K = first(${load("x0", "x0[ch * p.hw]")});`,
      body: `let v = ${load("x", dataAt(dtypes, "x"))} - K;
    s += vec2f(hsum(v), hdot(v, v));`,
    }),
});

/** Pass 2 of the training forward: statistics, running statistics and coefficients. */
export const statsFinal = defineKernel({
  name: "legacy_batchnorm_stats_final",
  doc: "Batch norm training forward, pass 2: one thread per channel adds the chunk sums, then " +
    "writes saveMean, saveInvStd = 1 / sqrt(var + eps) (biased variance), updates the running " +
    "statistics (unbiased variance), and writes coef[ch] = (mean, weight * invstd) for pass 3. " +
    "x0 is the binding of the first sample (for the shift K = x[0, ch, 0]).",
  params: { n: "u32", c: "u32", hw: "u32", chunks: "u32", eps: "f32", momentum: "f32" },
  bindings: {
    partial: { type: "f32", access: "read" },
    x0: { type: "float", access: "read" },
    weight: { type: "float", access: "read" },
    saveMean: { type: "float", access: "read_write" },
    saveInvStd: { type: "float", access: "read_write" },
    runningMean: { type: "float", access: "read_write" },
    runningVar: { type: "float", access: "read_write" },
    coef: { type: "f32", access: "read_write" },
  },
  workgroupSize: WG,
  body: ({ dtypes: d, load }) =>
    channelSumsMain(
      ["s1", "s2"],
      `  let N = f32(p.n * p.hw);
  let d = s1 / N;
  let mean = ${load("x0", "x0[ch * p.hw]")} + d;
  let variance = max(s2 / N - d * d, 0.0);
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
  coef[ch * 2u + 1u] = ${load("weight", "weight[ch]")} * invstd;`,
    ),
});

/** Pass 1 of the eval forward: the coefficients from the running statistics. */
export const evalCoef = defineKernel({
  name: "legacy_batchnorm_eval_coef",
  doc: "Batch norm eval forward, pass 1: one thread per channel writes " +
    "coef[ch] = (runningMean, weight / sqrt(runningVar + eps)).",
  params: { c: "u32", eps: "f32" },
  bindings: {
    runningMean: { type: "float", access: "read" },
    runningVar: { type: "float", access: "read" },
    weight: { type: "float", access: "read" },
    coef: { type: "f32", access: "read_write" },
  },
  workgroupSize: WG,
  body: ({ load }) => `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let ch = gid.x;
  if (ch >= p.c) { return; }
  coef[ch * 2u] = ${load("runningMean", "runningMean[ch]")};
  coef[ch * 2u + 1u] = ${load("weight", "weight[ch]")} / sqrt(${
    load("runningVar", "runningVar[ch]")
  } + p.eps);
}
`,
});

/** The last pass of both forwards: `y = (x - mean) * scale + bias`, through a fused activation. */
export const normalize = defineKernel({
  name: "legacy_batchnorm_normalize",
  doc: "Batch norm forward, last pass: y = act((x - coef.mean) * coef.scale + bias), act the " +
    "variant's fused activation (none without one).",
  params: ELEMENTWISE_PARAMS,
  bindings: {
    x: { type: "float", access: "read", vec4: elementwiseVec4 },
    coef: { type: "f32", access: "read" },
    bias: { type: "float", access: "read" },
    y: { type: "float", access: "read_write", vec4: elementwiseVec4 },
  },
  variants: ELEMENTWISE_VARIANTS,
  workgroupSize: WG,
  body: ({ dtypes, variant, load, store }) => {
    const kind = actOf(variant);
    return elementwiseMain(layoutOf(variant), dtypes, {
      data: ["x", "y"],
      helpers: activationFns(kind),
      prologue: `let mean = coef[ch * 2u];
  let scale = coef[ch * 2u + 1u];
  let shift = ${load("bias", "bias[ch]")};`,
      body: `let v = (${load("x", dataAt(dtypes, "x"))} - mean) * scale + shift;
    ${store("y", dataAt(dtypes, "y"), kind ? "act(v)" : "v")}`,
    });
  },
});
