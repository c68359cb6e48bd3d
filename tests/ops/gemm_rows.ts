// gemmStrided's row groups (an Inception block's merged 1x1 convolutions: C's rows stored in
// groups, each from its own element with its own segment stride, in C or a second tensor c2) for
// testOp (tests/_op.ts), against the Float64 reference of tests/cpu_ref/gemm.ts: every kernel
// family, split-K, a batch (each product strideC further on), a row or a column bias, k longer
// than one dispatch (k-passes: C adds up, or an f16 C's f32 accumulator and its epilogue), f32
// and f16; each case's plan says it takes the rows store. A suite of tests/gemm_test.ts and of
// the browser runner.
import assert from "../_assert.ts";
import type { DType } from "../../gpu/mod.ts";
import type { ActivationKind } from "../../kernels/activation.ts";
import { adapterProfile } from "../../kernels/_adapter.ts";
import { bindingRange } from "../../kernels/_binding.ts";
import {
  type GemmPlan,
  gemmProblem,
  gemmStrided,
  type GemmTuning,
  planDispatches,
  planGemm,
} from "../../kernels/gemm/index.ts";
import { activationForwardRef } from "../cpu_ref/activation.ts";
import { gemmRef } from "../cpu_ref/gemm.ts";
import { input, type OpCase, opCase, type OpSuite, uniform } from "../_op.ts";
import { tolC } from "./gemm.ts";

/** Starting values of every tensor here: uniform in [-1, 1). */
const U = uniform(-1, 1);

/** A case of {@linkcode rowGroupsOp}: C's rows in groups of `groups` rows each. */
export interface RowGroupsCase {
  /** Rows of each group (m is their sum). */
  readonly groups: readonly number[];
  readonly k: number;
  readonly pixels: number;
  readonly tuning: GemmTuning;
  /** B read in segments (NCHW x as `[k, images * pixels]`), else plain rows. */
  readonly segmentB?: boolean;
  readonly activation?: ActivationKind;
  /** C's prior values scale (default 0: C not read). */
  readonly beta?: number;
  /** Groups after the first go into a second tensor `c2` (else every region is in `c`). */
  readonly split?: boolean;
  /**
   * Products (default 1): each with its own B, bias and copy of every region (`strideC` apart,
   * in `c` and in `c2`), W shared.
   */
  readonly batch?: number;
  /** The bias along C's rows (a channel's, default) or along its columns (images x pixels). */
  readonly biasMode?: "row" | "col";
  /** Checks of the plan (C's dtype) on the test adapter. */
  readonly plan?: (plan: GemmPlan, c: DType) => void;
}

/**
 * gemmStrided's row groups (an Inception block's merged 1x1 convolutions): `W[m, k] . B + bias`
 * over 2 images, whose group 0 is stored into channels `[1, 1 + g0)` of an NCHW concatenation
 * of `g0 + 2` channels and each other group g into an NCHW tensor `[2, g, pixels]` of its own,
 * all of them regions of one tensor `c` (each region from an element that is a multiple of 4,
 * 4 elements of gap between them). Every other element keeps its value. With a batch, product z
 * (its own B and bias) stores into the same regions moved by `z * strideC` (past the last
 * region of `c` and `c2`). Mix keys: a (W), b, c, bias.
 */
export function rowGroupsOp(s: RowGroupsCase): OpCase {
  const { groups, k, pixels, tuning, segmentB = false, activation, split = false, beta = 0 } = s;
  const { batch = 1, biasMode = "row" } = s;
  const images = 2, n = images * pixels, m = groups.reduce((a, b) => a + b, 0);
  const yC = groups[0] + 2;
  // Each region: its tensor, first element (a multiple of 4), segment stride and first channel.
  const regions: { second: boolean; base: number; stride: number; channel: number }[] = [];
  const ends = [0, 0];
  groups.forEach((g, i) => {
    const second = split && i > 0;
    const base = Math.ceil((ends[+second] + 4) / 4) * 4;
    const channels = i === 0 ? yC : g;
    regions.push({ second, base, stride: channels * pixels, channel: i === 0 ? 1 : 0 });
    ends[+second] = base + images * channels * pixels;
  });
  // Product z's regions start z * strideC further on (a multiple of 4 past both tensors' last).
  const strideC = batch > 1 ? Math.ceil((Math.max(...ends) + 4) / 4) * 4 : 0;
  const total = (batch - 1) * strideC + ends[0] + 3;
  const total2 = (split ? (batch - 1) * strideC : 0) + ends[1] + 3;
  const biasLen = biasMode === "row" ? m : n;
  const lead = batch > 1 ? [batch] : [];
  const bAt = (kk: number, j: number) =>
    segmentB ? (Math.floor(j / pixels) * k + kk) * pixels + (j % pixels) : kk * n + j;
  const starts = groups.map((_, i) => groups.slice(0, i).reduce((a, b) => a + b, 0));
  return opCase({
    label: `gemmStrided rows [${groups}]x${n}x${k}${segmentB ? " segB" : ""}` +
      `${split ? " c2" : ""}${beta ? ` beta ${beta}` : ""}` +
      `${batch > 1 ? ` batch ${batch}` : ""}${biasMode === "col" ? " biascol" : ""}` +
      `${activation ? ` ${activation}` : ""} ${JSON.stringify(tuning)}`,
    tensors: {
      w: input([m, k], U, { as: "a" }),
      x: input([...lead, k, n], U, { as: "b" }),
      bias: input([...lead, biasLen], U),
      c: input([total], U),
      c2: input([total2], U, { as: "c" }),
    },
    phases: [{
      gpu: ({ w, x, bias, c, c2 }) => {
        const g = {
          m,
          n,
          k,
          batch,
          transA: false,
          transB: false,
          alpha: 1,
          beta,
          a: bindingRange(w, 0, m * k),
          b: bindingRange(x, 0, batch * k * n),
          c: bindingRange(c, 0, total),
          lda: k,
          ldb: segmentB ? pixels : n,
          ldc: pixels,
          strideA: 0,
          strideB: k * n,
          strideC,
          segment: pixels,
          segmentStride: regions[0].stride,
          rowGroups: regions.map((r, i) => ({
            row: starts[i],
            base: r.base + r.channel * pixels,
            segmentStride: r.stride,
            ...(r.second ? { second: true } : {}),
          })),
          ...(split ? { c2: bindingRange(c2, 0, total2) } : {}),
          ...(segmentB ? { segmentB: pixels, segmentStrideB: k * pixels } : {}),
          bias: bindingRange(bias, 0, batch * biasLen),
          biasMode,
          strideBias: batch > 1 ? biasLen : 0,
          activation,
        };
        s.plan?.(planGemm(gemmProblem(g), adapterProfile(c.gpu), tuning), c.dtype);
        gemmStrided(c.gpu, g, tuning);
      },
      cpu: ({ w, x, bias, c, c2 }) => {
        const outs = [Float64Array.from(c), Float64Array.from(c2)];
        for (let z = 0; z < batch; z++) {
          const plain = new Float64Array(k * n);
          for (let kk = 0; kk < k; kk++) {
            for (let j = 0; j < n; j++) plain[kk * n + j] = x[z * k * n + bAt(kk, j)];
          }
          const prod = gemmRef(w, plain, { m, n, k });
          groups.forEach((rows, gi) => {
            const r = regions[gi], out = outs[+r.second];
            for (let i = 0; i < rows; i++) {
              const row = starts[gi] + i;
              for (let j = 0; j < n; j++) {
                const img = Math.floor(j / pixels), px = j % pixels;
                const at = z * strideC + r.base + img * r.stride + (r.channel + i) * pixels + px;
                const b = bias[z * biasLen + (biasMode === "row" ? row : j)];
                const v = prod[row * n + j] + beta * out[at] + b;
                out[at] = activation ? activationForwardRef([v], activation)[0] : v;
              }
            }
          });
        }
        return { c: outs[0], c2: outs[1] };
      },
      tol: { c: (dtype, want) => tolC(want, k, dtype), c2: (dtype, want) => tolC(want, k, dtype) },
    }],
  });
}

/**
 * The rows store: every dispatch that stores C has it (split-K's partial products do not), and
 * vec4 C where every region allows it.
 */
const rowsPlan = (vecC: boolean) => (plan: GemmPlan) => {
  for (const d of planDispatches(plan)) {
    assert.equal(d.config.rowGroups ?? false, d.bindings.c === "c", `${d.kernel}: rows store`);
  }
  const product = plan.passes[0].dispatches[0];
  if (product.kernel === "register") assert.equal(product.config.vecC, vecC);
};

/**
 * Two sequential k-passes with row groups: an f32 C is their accumulator (both passes store the
 * rows, the second adding to C), an f16 C has them sum into the f32 accumulator (plain rows) and
 * the epilogue store the rows, reading C and c2 for beta.
 */
const rowsPasses = (plan: GemmPlan, c: DType) => {
  rowsPlan(false)(plan);
  assert.equal(plan.passes.length, 2, "k-passes");
  const stores = plan.passes.map(({ dispatches: [d] }) => [d.bindings.c, d.config.beta]);
  if (c === "f16") {
    assert.deepEqual(stores, [["accumulator", false], ["accumulator", true]], "f16 C's passes");
    assert.deepEqual(plan.epilogue?.bindings, {
      part: "accumulator",
      c: "c",
      bias: "bias",
      c2: "c2",
    });
    assert.equal(plan.epilogue?.config.beta, true);
  } else {
    assert.deepEqual(stores, [["c", true], ["c", true]], "f32 C's passes");
    assert.equal(plan.epilogue, undefined);
  }
};

/** The suite of gemmStrided's row groups, f32 and an f16 forward. */
export const ROW_GROUP_SUITES: OpSuite<RowGroupsCase>[] = [{
  name: "gemmStrided: C's rows in groups (in C or a second tensor), each with its segment stride",
  op: rowGroupsOp,
  seed: 1300,
  cases: [
    // Odd everything (scalar stores), every family and split-K; B plain and in segments.
    ...([{}, { variant: "shared" }, { variant: "register", splitK: 2 }, {
      variant: "register",
      tile: [4, 4],
    }] as GemmTuning[]).flatMap((tuning) =>
      [false, true].map((segmentB) => ({
        groups: [3, 5, 2],
        k: 7,
        pixels: 9,
        tuning,
        segmentB,
        split: segmentB,
        activation: "relu" as const,
        plan: rowsPlan(false),
      }))
    ),
    // Multiples of 4 (vec4 C stores), four groups, a tile taller than a group.
    {
      groups: [4, 8, 4, 12],
      k: 12,
      pixels: 16,
      tuning: { variant: "register", tile: [8, 8] },
      segmentB: true,
      plan: rowsPlan(true),
    },
    // The same into C and c2, with beta (C read back from both), in every family.
    ...([{ variant: "register", tile: [4, 8] }, { variant: "shared" }, {
      variant: "register",
      splitK: 2,
    }] as GemmTuning[]).map((tuning) => ({
      groups: [4, 8, 4, 12],
      k: 12,
      pixels: 16,
      tuning,
      segmentB: true,
      split: true,
      beta: 0.5,
      activation: "tanh" as const,
      plan: rowsPlan(true),
    })),
    // A single group, single pixels, one row per group; a long k split automatically.
    { groups: [5], k: 3, pixels: 1, tuning: {}, plan: rowsPlan(false) },
    {
      groups: [1, 1],
      k: 4096,
      pixels: 1,
      tuning: {},
      segmentB: true,
      split: true,
      plan: rowsPlan(false),
    },
    // A batch (each product's regions strideC further on, in C and c2; its own B and bias) in
    // every family and split-K's epilogue, with and without c2; scalar, then vec4 stores.
    ...([{ variant: "register", tile: [4, 4] }, { variant: "shared" }, {
      variant: "register",
      splitK: 2,
    }] as GemmTuning[]).flatMap((tuning) =>
      [false, true].map((split) => ({
        groups: [3, 5, 2],
        k: 7,
        pixels: 9,
        batch: 3,
        tuning,
        segmentB: true,
        split,
        beta: 0.5,
        activation: "relu" as const,
        plan: rowsPlan(false),
      }))
    ),
    ...[false, true].map((split) => ({
      groups: [4, 8, 4, 12],
      k: 12,
      pixels: 16,
      batch: 2,
      tuning: { variant: "register", tile: [8, 8] } as GemmTuning,
      segmentB: true,
      split,
      beta: 0.5,
      plan: rowsPlan(true),
    })),
    // A column bias (per image and pixel, and per product of a batch), every family, split-K,
    // scalar and vec4 stores.
    ...([{ variant: "register", tile: [4, 4] }, { variant: "shared" }, {
      variant: "register",
      splitK: 2,
    }] as GemmTuning[]).map((tuning) => ({
      groups: [3, 5, 2],
      k: 7,
      pixels: 9,
      batch: 2,
      biasMode: "col" as const,
      tuning,
      split: true,
      beta: 0.5,
      activation: "tanh" as const,
      plan: rowsPlan(false),
    })),
    ...[1, 2].map((batch) => ({
      groups: [4, 8, 4, 12],
      k: 12,
      pixels: 16,
      batch,
      biasMode: "col" as const,
      tuning: { variant: "register", tile: [8, 8] } as GemmTuning,
      segmentB: true,
      split: true,
      plan: rowsPlan(true),
    })),
    // k longer than one dispatch (shared: 32768 k per pass; register: 240000), batched: pass 2
    // adds to C and c2 (f32), or the f16 accumulator's epilogue stores the rows.
    ...([
      [{ variant: "shared", splitK: 1 }, 40000, "row"],
      [{ variant: "shared", splitK: 1 }, 40000, "col"],
      [{ variant: "register", splitK: 1 }, 250000, "row"],
    ] as [GemmTuning, number, "row" | "col"][]).map(([tuning, k, biasMode]) => ({
      groups: [2, 1],
      k,
      pixels: 1,
      batch: 2,
      biasMode,
      tuning,
      segmentB: true,
      split: true,
      beta: 0.5,
      activation: "tanh" as const,
      plan: rowsPasses,
    })),
  ],
  mixes: [{}, { a: "f16", b: "f16", c: "f16", bias: "f32" }],
}];
