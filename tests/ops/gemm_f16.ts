// The GEMM family's suites with f16 operands for testOp (tests/_op.ts): the training
// configuration, every mix of f16 and f32 operands, register tiles and swapped products, split-K
// and long-k passes, and gemmStrided's segmented store, each case of gemm in its own mix (the op:
// tests/ops/gemm.ts). Suites of tests/gemm_test.ts.
import type { GemmTuning } from "../../kernels/gemm/index.ts";
import type { Dims } from "../_gemm_problem.ts";
import type { Mix, OpSuite } from "../_op.ts";
import {
  COMBOS,
  combos,
  type GemmCase,
  kPasses,
  type SegmentedCase,
  segmentedOp,
  suitesByMix,
  VARIANTS,
} from "./gemm.ts";

/** What training runs: f16 activations and weights, f32 bias; C f16 (forward, dx) or f32 (dw). */
export const TRAIN_FWD: Mix = { a: "f16", b: "f16", c: "f16", bias: "f32" };
/** The weight gradient's GEMM of training: f16 operands, an f32 C accumulated into. */
export const TRAIN_DW: Mix = { a: "f16", b: "f16", c: "f32" };
/** Every operand f16. */
export const ALL_F16: Mix = { a: "f16", b: "f16", c: "f16", bias: "f16" };
/** Other mixes: each binding's type follows its own tensor. */
export const MIXES: Mix[] = [
  ALL_F16,
  { a: "f32", b: "f16", c: "f16", bias: "f32" },
  { a: "f16", b: "f32", c: "f32", bias: "f16" },
  { a: "f32", b: "f32", c: "f16", bias: "f16" },
];

/** The training configuration's GEMMs of a linear layer, odd and vec4 shapes, both families. */
function trainingCases(): GemmCase[] {
  const cases: GemmCase[] = [];
  let i = 0;
  for (const [m, n, k] of [[7, 13, 5], [65, 33, 17], [16, 32, 64], [20, 12, 36]] as const) {
    for (const variant of [undefined, "shared"] as const) {
      const tuning = variant ? { variant } : {};
      const activation = i++ % 2 === 0 ? "relu" : undefined;
      cases.push(
        // y[m, n] = act(x[m, k] . w[n, k]^T + b)
        { m, n, k, transB: true, bias: true, activation, tuning, mix: TRAIN_FWD },
        { m, n: k, k: n, tuning, mix: TRAIN_FWD }, // dx[m, k] = dy[m, n] . w[n, k]
        // dw[n, k] += dy[m, n]^T . x[m, k]
        { m: n, n: k, k: m, transA: true, beta: 1, tuning, mix: TRAIN_DW },
      );
    }
  }
  return cases;
}

/** Register tiles (f16 A, B, C as vec4) and swapped products, over rotating mixes. */
function tileCases(): GemmCase[] {
  const cases: GemmCase[] = [];
  let seed = 1000; // picks the mixes as the loops of the test before testOp did
  for (const [m, n, k] of [[16, 32, 64], [20, 12, 36]] as const) {
    for (const [transA, transB] of COMBOS) {
      for (const tile of [[8, 4], [1, 4], [2, 8]] as [number, number][]) {
        const tuning: GemmTuning = { variant: "register", tile };
        const mix = seed++ % 2 === 0 ? ALL_F16 : TRAIN_FWD;
        cases.push({ m, n, k, transA, transB, bias: true, tuning, mix });
      }
    }
  }
  // The 16x16 block compiles slowly on llvmpipe (~1.7 s with f16 operands): two combos only.
  for (const [transA, transB] of [COMBOS[0], COMBOS[3]]) {
    seed++;
    const tuning: GemmTuning = { variant: "register", tile: [16, 16] };
    cases.push({ m: 20, n: 32, k: 36, transA, transB, bias: true, tuning, mix: TRAIN_FWD });
  }
  // C^T = B^T A^T: A and B exchange bindings (and dtypes), the bias turns into a row bias.
  for (const [m, n, k] of [[65, 7, 17], [16, 32, 64]] as const) {
    for (const [transA, transB] of COMBOS) {
      const c = { m, n, k, transA, transB, bias: true, batch: 2, beta: 0.5 };
      for (const mix of [TRAIN_FWD, MIXES[seed % MIXES.length]]) {
        seed++;
        cases.push({ ...c, tuning: { variant: "register", swap: true }, mix });
      }
    }
  }
  return cases;
}

/** Split-K (f32 partial sums, an f16 or f32 C in the epilogue) and long-k passes. */
function splitCases(): GemmCase[] {
  const cases: GemmCase[] = VARIANTS.flatMap((variant) =>
    COMBOS.flatMap(([transA, transB]) => {
      const c = { m: 5, n: 7, k: 1001, transA, transB, bias: true, beta: 0.5, batch: 2 };
      return [
        { ...c, tuning: { variant, splitK: 3 }, mix: ALL_F16 },
        { ...c, bias: false, beta: 1, tuning: { variant, splitK: 3 }, mix: TRAIN_DW },
      ];
    })
  );
  // vec4 C in the epilogue's mapping, with an activation; split-K chosen automatically.
  const sigmoid = { m: 8, n: 12, k: 2048, bias: true, activation: "sigmoid", alpha: 0.1 } as const;
  cases.push({ ...sigmoid, tuning: { variant: "register", splitK: 4 }, mix: ALL_F16 });
  cases.push({ m: 6, n: 25, k: 4096, transB: true, mix: TRAIN_FWD });
  // Sequential k-passes (shared: 32768 k per pass; register: 240000): with an f16 C they sum
  // into an f32 scratch and round once; with an f32 C they accumulate in C.
  const long = { m: 3, n: 5, k: 40000, transA: true, bias: true, beta: 0.5 };
  const register: GemmTuning = { variant: "register", splitK: 1 };
  const passes: [Dims, Mix, GemmTuning][] = [
    [{ ...long, activation: "tanh", alpha: 0.05 }, ALL_F16, { variant: "shared" }],
    [long, TRAIN_DW, { variant: "shared" }],
    [{ m: 2, n: 4, k: 250000, transB: true, bias: true }, TRAIN_FWD, register],
    [{ m: 4, n: 8, k: 250000, beta: 1 }, ALL_F16, register], // vec4 A, B, C
  ];
  for (const [c, mix, tuning] of passes) {
    cases.push({ ...c, tuning, mix, plan: (plan, dt) => kPasses(plan, dt, c) });
  }
  return cases;
}

/** The suites of gemm with f16 operands (each case in its own mix). */
export const HALF_SUITES: OpSuite<GemmCase>[] = [
  ...suitesByMix(
    "gemm f16: training configuration (forward, dx with f16 C; dw += with f32 C), odd and vec4 shapes",
    900,
    trainingCases(),
  ),
  ...suitesByMix(
    "gemm f16: all-f16 and mixed dtypes, every transpose combo, both families, batch and beta",
    950,
    VARIANTS.flatMap((variant) =>
      combos([[9, 6, 11], [16, 32, 64]], (c) => {
        return { ...c, bias: true, beta: 0.5, alpha: 2, batch: 2, tuning: { variant } };
      })
    ).map((c, i) => ({ ...c, mix: MIXES[(950 + i) % MIXES.length] })),
  ),
  ...suitesByMix(
    "gemm f16: register tiles (vec4 A, B and C loads and stores) and swapped products",
    1000,
    tileCases(),
  ),
  ...suitesByMix(
    "gemm f16: split-K (f32 partial sums, f16 or f32 C in the epilogue) and long-k passes",
    1100,
    splitCases(),
  ),
];

/** The tunings of the segmented store: the default, shared memory, split-K. */
const SEGMENTED_TUNINGS: GemmTuning[] = [{}, { variant: "shared" }, {
  variant: "register",
  splitK: 2,
}];

/** The suite of gemmStrided's segmented store. */
export const STRIDED_SUITES: OpSuite<SegmentedCase>[] = [{
  name:
    "gemmStrided f16: segmented NCHW store with a row bias (conv2d's forward), other channels untouched",
  op: segmentedOp,
  seed: 1200,
  cases: ([[5, 7, 9], [8, 12, 16]] as const).flatMap(([cout, k, pixels]) =>
    SEGMENTED_TUNINGS.map((tuning) => ({ cout, k, pixels, tuning }))
  ),
  mixes: [TRAIN_FWD, { a: "f16", b: "f16", c: "f32", bias: "f16" }],
}, {
  // A 1x1 convolution's forward on NCHW x and y as they are: 1, 9 (scalar B loads), 4 and 16
  // pixels (vec4 B loads within a segment); odd and multiple-of-4 channels; tile edges.
  name: "gemmStrided: B read in segments (NCHW x as [k, images * pixels]), segmented store",
  op: segmentedOp,
  seed: 1250,
  cases: ([[13, 7, 1], [7, 13, 9], [8, 12, 16], [70, 5, 9], [5, 8, 4]] as const).flatMap((
    [cout, k, pixels],
  ) =>
    [...SEGMENTED_TUNINGS, { variant: "register", tile: [4, 4] } as const].map((tuning) => ({
      cout,
      k,
      pixels,
      tuning,
      segmentB: true,
    }))
  ),
  mixes: [{}, TRAIN_FWD],
}];
