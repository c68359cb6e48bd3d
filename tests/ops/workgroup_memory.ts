// Workgroup-memory kernels (issue #17, section 2): the cases of tests/workgroup_memory_test.ts
// (which says why and keeps the list of kernels whole), shared with `deno task test:browser`
// (tests/browser/suites.ts): every kernel that stages data in `var<workgroup>` memory, forced on
// the test adapter with sizes on each side of every tile and workgroup edge, against the Float64
// CPU references. No Deno API.
import assert from "../_assert.ts";
import { SHARED_BK } from "../../kernels/gemm/shared.ts";
import { SHARED_BM, SHARED_BN } from "../../kernels/gemm/types.ts";
import { planDispatches } from "../../kernels/gemm/index.ts";
import { batchNorm, type BnCase } from "./batchnorm.ts";
import { conv2d, type Conv2dCase } from "./conv2d.ts";
import { depthwise, type DwCase } from "./depthwise.ts";
import { type GemmCase, suitesByMix } from "./gemm.ts";
import { type CeCase, softmaxCe } from "./softmax_ce.ts";
import type { OpSuite } from "../_op.ts";

/** 1, edge - 1, edge, edge + 1 and an odd size past two tiles. */
const around = (edge: number): number[] => [1, edge - 1, edge, edge + 1, 2 * edge + 1];

const M = around(SHARED_BM), N = around(SHARED_BN), K = around(SHARED_BK);
const TRANSPOSES = [[false, false], [false, true], [true, false], [true, true]] as const;

/** The plan ran the shared-memory kernel for every product. */
const sharedOnly = (plan: Parameters<NonNullable<GemmCase["plan"]>>[0]) => {
  const kinds = planDispatches(plan).map((d) => d.kernel);
  assert.ok(!kinds.includes("register"), `planned ${kinds}`);
};

/**
 * Every m and n edge against a k edge (a Latin square over the 5 sizes of each, so each size of
 * each dimension meets every other dimension's), in every transpose combination.
 */
function sharedCases(): GemmCase[] {
  const out: GemmCase[] = [];
  for (const [transA, transB] of TRANSPOSES) {
    for (let i = 0; i < M.length; i++) {
      for (const j of [0, 2]) {
        out.push({
          m: M[i],
          n: N[(i + j) % N.length],
          k: K[(i + 2 * j + 1) % K.length],
          transA,
          transB,
          tuning: { variant: "shared" },
          plan: sharedOnly,
        });
      }
    }
    // A batch with tile remainders everywhere; the store's bias, beta and activation.
    out.push({
      m: SHARED_BM + 1,
      n: SHARED_BN - 1,
      k: SHARED_BK + 1,
      batch: 3,
      transA,
      transB,
      bias: true,
      beta: 0.5,
      alpha: 2,
      activation: "relu",
      tuning: { variant: "shared" },
      plan: sharedOnly,
    });
    // Split-K: the k-split in z, each split's chunk a multiple of the staging depth or not.
    out.push({
      m: SHARED_BM - 1,
      n: 2 * SHARED_BN + 1,
      k: 5 * SHARED_BK + 3,
      batch: 2,
      transA,
      transB,
      tuning: { variant: "shared", splitK: 3 },
      plan: sharedOnly,
    });
  }
  return out;
}

const F16 = { a: "f16", b: "f16", c: "f16", bias: "f32" } as const;

/** The shared-memory GEMM tile at every edge, f32 then f16 operands. */
const GEMM_SUITES: OpSuite<GemmCase>[] = [
  ...suitesByMix("workgroup memory: shared GEMM tile edges", 1700, sharedCases()),
  ...suitesByMix(
    "workgroup memory: shared GEMM tile edges, f16 operands",
    1750,
    TRANSPOSES.map(([transA, transB], i) => ({
      m: M[i + 1],
      n: N[(i + 2) % N.length],
      k: K[(i + 3) % K.length],
      batch: 2,
      transA,
      transB,
      bias: true,
      tuning: { variant: "shared" },
      plan: sharedOnly,
      mix: F16,
    })),
  ),
];

/** The direct convolution forced, with channel counts around its weight blocks. */
const DIRECT_SUITE: OpSuite<Conv2dCase> = {
  name: "workgroup memory: direct convolution weight blocks",
  op: conv2d,
  seed: 1800,
  cases: [
    { p: { n: 2, cIn: 7, h: 9, w: 11, cOut: 17, kernel: 3, padding: 1 }, bias: true },
    { p: { n: 1, cIn: 1, h: 13, w: 13, cOut: 33, kernel: 5 }, bias: true },
    { p: { n: 2, cIn: 17, h: 5, w: 7, cOut: 9, kernel: 3, padding: 1, stride: 2 } },
  ].map((c) => ({ ...c, label: "direct", options: { direct: true } })),
};

/** Batch norm's per-channel reductions over planes around its 64-thread workgroup. */
const BN_SUITE: OpSuite<BnCase> = {
  name: "workgroup memory: batch norm reductions around the workgroup size",
  op: batchNorm,
  seed: 1810,
  cases: [
    { n: 1, c: 2, hw: 63, shape: [1, 2, 7, 9], offset: 0 },
    { n: 1, c: 2, hw: 64, shape: [1, 2, 8, 8], offset: 1 },
    { n: 1, c: 2, hw: 65, shape: [1, 2, 5, 13], offset: 0 },
    { n: 3, c: 3, hw: 43, shape: [3, 3, 1, 43], offset: -1 },
    { n: 2, c: 1, hw: 129, shape: [2, 1, 3, 43], offset: 0 },
    { n: 65, c: 3, hw: 1, shape: [65, 3], offset: 0 },
    // runs of a channel around the workgroup: 65 and 129 (two and three blocks), a plane of 65
    // vec4s (two runs), a plane of 1024 vec4s (16 runs)
    { n: 65, c: 1, hw: 3, shape: [65, 1, 3], offset: 0 },
    { n: 129, c: 2, hw: 1, shape: [129, 2], offset: 1 },
    { n: 2, c: 1, hw: 260, shape: [2, 1, 13, 20], offset: 0 },
    { n: 1, c: 3, hw: 4096, shape: [1, 3, 64, 64], offset: -2 },
  ],
};

/** Depthwise weight-gradient partials: row units per channel around the workgroup's reach. */
const DW_SUITE: OpSuite<DwCase> = {
  name: "workgroup memory: depthwise weight-gradient partials",
  op: depthwise,
  seed: 1820,
  cases: [
    { n: 1, c: 2, h: 16, w: 16, kernel: 3, padding: 1 },
    { n: 2, c: 3, h: 31, w: 33, kernel: 3, padding: 1, bias: true },
    { n: 3, c: 2, h: 33, w: 29, kernel: 3, stride: 2, padding: 1 },
    { n: 5, c: 1, h: 27, w: 27, kernel: 3, padding: 1, bias: true },
  ],
};

/** Softmax cross-entropy's batch sums around its 256-thread workgroup. */
const CE_SUITE: OpSuite<CeCase> = {
  name: "workgroup memory: softmax cross-entropy sums around the workgroup size",
  op: softmaxCe,
  seed: 1830,
  cases: [255, 256, 257, 513].map((n) => ({ n, c: 3 })),
};

/**
 * Every workgroup-memory kernel forced at its tile and workgroup edges: what
 * tests/workgroup_memory_test.ts registers and `deno task test:browser` runs.
 */
// deno-lint-ignore no-explicit-any
export const WORKGROUP_SUITES: readonly OpSuite<any>[] = [
  ...GEMM_SUITES,
  DIRECT_SUITE,
  BN_SUITE,
  DW_SUITE,
  CE_SUITE,
];
