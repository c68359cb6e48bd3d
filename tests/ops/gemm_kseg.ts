// gemmStrided with operands read along k in segments (segmentKA, segmentKB) for testOp
// (tests/_op.ts): conv2d's weight gradient reading NCHW dy as A [m, images * pixels] and NCHW x as
// B^T [n, images * pixels] in place, against the Float64 reference of tests/cpu_ref/gemm.ts;
// segment lengths multiple of 4 (vec4 loads) and not, one operand or both, batches, beta, split-K,
// k-passes (the kernels' kOff), both families, f16 operands; the plans checked where a case is
// meant to take a path. Suites of tests/gemm_test.ts.
import assert from "../_assert.ts";
import { bindingRange } from "../../kernels/_binding.ts";
import { adapterProfile } from "../../kernels/_adapter.ts";
import {
  type GemmPlan,
  gemmProblem,
  gemmStrided,
  type GemmTuning,
  planDispatches,
  planGemm,
} from "../../kernels/gemm/index.ts";
import { gemmRef } from "../cpu_ref/gemm.ts";
import { input, type OpCase, opCase, type OpSuite, output, uniform } from "../_op.ts";
import { tolC } from "./gemm.ts";
import { TRAIN_DW } from "./gemm_f16.ts";

const U = uniform(-1, 1);

/** A case of {@linkcode kSegmentedOp}: `C[z] (+)= A[z] [m, k] . B[z]^T` with B^T `[n, k]`. */
export interface KSegmentedCase {
  readonly m: number;
  readonly n: number;
  readonly k: number;
  /** A's k segment length (A NCHW `[k / segA, channels, segA]`), or plain rows `[m, k]`. */
  readonly segA?: number;
  /** B's k segment length (B NCHW `[k / segB, channels, segB]`), or plain rows `[n, k]`. */
  readonly segB?: number;
  /** Products (groups of channels of the NCHW operands), default 1. */
  readonly batch?: number;
  /** Scale of the prior C (default 0). */
  readonly beta?: number;
  readonly tuning: GemmTuning;
  /** Checks of the plan (the test adapter's). */
  readonly plan?: (plan: GemmPlan) => void;
}

/** `c` in messages. */
function label(c: KSegmentedCase): string {
  return `gemmStrided kseg ${c.m}x${c.n}x${c.k}${c.segA ? ` segA ${c.segA}` : ""}` +
    `${c.segB ? ` segB ${c.segB}` : ""}${c.batch ? ` batch ${c.batch}` : ""}` +
    `${c.beta ? ` beta ${c.beta}` : ""} ${JSON.stringify(c.tuning)}`;
}

/**
 * An operand `[batch, rows, k]` stored NCHW in k segments of `seg` (images of `batch * rows + 1`
 * channels, from channel 1: strides not trivially the product's), or plain: its element count,
 * the element of (z, row, kk), and its range's first element.
 */
function layout(batch: number, rows: number, k: number, seg: number | undefined) {
  if (seg === undefined) {
    return {
      size: batch * rows * k,
      at: (z: number, r: number, kk: number) => (z * rows + r) * k + kk,
      base: 0,
    };
  }
  const channels = batch * rows + 1;
  return {
    size: (k / seg) * channels * seg,
    at: (z: number, r: number, kk: number) =>
      Math.floor(kk / seg) * channels * seg + (1 + z * rows + r) * seg + kk % seg,
    base: seg,
    stride: channels * seg,
  };
}

/**
 * `C[z] = A[z] . B[z]^T + beta * C[z]` by `gemmStrided`, A not transposed and B transposed, each
 * read in k segments or as plain rows. Mix keys: a, b, c.
 */
export function kSegmentedOp(s: KSegmentedCase): OpCase {
  const { m, n, k, segA, segB, batch = 1, beta = 0, tuning, plan } = s;
  const la = layout(batch, m, k, segA), lb = layout(batch, n, k, segB);
  let seen: GemmPlan | undefined;
  return opCase({
    label: label(s),
    tensors: {
      a: input([la.size], U),
      b: input([lb.size], U),
      c: beta !== 0 ? input([batch, m, n], U) : output([batch, m, n]),
    },
    phases: [{
      gpu: ({ a, b, c }) => {
        const g = {
          m,
          n,
          k,
          batch,
          transA: false,
          transB: true,
          alpha: 1,
          beta,
          a: bindingRange(a, la.base, la.size - la.base),
          b: bindingRange(b, lb.base, lb.size - lb.base),
          c: bindingRange(c, 0, batch * m * n),
          lda: segA ?? k,
          ldb: segB ?? k,
          ldc: n,
          strideA: segA ? m * segA : m * k,
          strideB: segB ? n * segB : n * k,
          strideC: m * n,
          ...(segA ? { segmentKA: segA, segmentStrideKA: la.stride } : {}),
          ...(segB ? { segmentKB: segB, segmentStrideKB: lb.stride } : {}),
          biasMode: "none",
        } as const;
        gemmStrided(c.gpu, g, tuning);
        // What gemmStrided planned (the same pure call).
        seen = planGemm(gemmProblem(g), adapterProfile(c.gpu), tuning);
      },
      cpu: ({ a, b, c }) => {
        const out = new Float64Array(batch * m * n);
        for (let z = 0; z < batch; z++) {
          const A = new Float64Array(m * k), B = new Float64Array(n * k);
          for (let i = 0; i < m; i++) {
            for (let kk = 0; kk < k; kk++) A[i * k + kk] = a[la.at(z, i, kk)];
          }
          for (let j = 0; j < n; j++) {
            for (let kk = 0; kk < k; kk++) B[j * k + kk] = b[lb.at(z, j, kk)];
          }
          const prior = beta !== 0 ? c.slice(z * m * n, (z + 1) * m * n) : undefined;
          out.set(gemmRef(A, B, { m, n, k, transB: true, beta }, prior), z * m * n);
        }
        return { c: out };
      },
      tol: { c: (dtype, want) => tolC(want, k, dtype) },
      check: () => {
        const p = seen!;
        // Every product dispatch reads the segmented operands as such.
        for (const d of planDispatches(p)) {
          if (d.kernel === "epilogue") continue;
          assert.deepEqual(
            [!!d.config.segmentedKA, !!d.config.segmentedKB],
            p.swap
              ? [segB !== undefined, segA !== undefined]
              : [segA !== undefined, segB !== undefined],
            label(s),
          );
        }
        plan?.(p);
      },
    }],
  });
}

/** The tunings every shape runs with: the default, shared memory, split-K, a small tile, swapped. */
const TUNINGS: GemmTuning[] = [
  {},
  { variant: "shared" },
  { variant: "register", splitK: 3 },
  { variant: "register", tile: [4, 4] },
  { variant: "register", swap: true },
];

/** The shapes: [m, n, k, segA, segB, batch, beta]. */
const SHAPES: [number, number, number, number | undefined, number | undefined, number, number][] = [
  [7, 5, 27, 9, 9, 1, 0], // scalar segments on both sides
  [8, 12, 72, 36, 36, 1, 0], // vec4 segments on both sides
  [13, 11, 20, 5, undefined, 1, 0.5], // A alone, scalar; B plain (vec4 along k)
  [6, 9, 13, undefined, 1, 1, 0], // B alone, segments of 1
  [9, 7, 24, 6, 4, 2, 1], // different segments, batch, beta
  [16, 8, 48, 16, 12, 3, 0], // vec4 A, vec4 B, batch
  [65, 33, 36, 9, 9, 1, -1], // partial tiles
];

/** The cases: every shape with every tuning. */
function cases(): KSegmentedCase[] {
  return SHAPES.flatMap(([m, n, k, segA, segB, batch, beta]) =>
    TUNINGS.map((tuning) => ({ m, n, k, segA, segB, batch, beta, tuning }))
  );
}

/** Vectorized along k exactly where the segments are whole vec4s. */
const vec4 = (vecA: boolean, vecB: boolean) => (plan: GemmPlan) =>
  assert.deepEqual([plan.passes[0].config.vecA, plan.passes[0].config.vecB], [vecA, vecB]);

/** The suites of operands read along k in segments. */
export const KSEG_SUITES: OpSuite<KSegmentedCase>[] = [{
  name: "gemmStrided: A and B read along k in segments (NCHW dy and x), every family and tuning",
  op: kSegmentedOp,
  seed: 1700,
  cases: [
    ...cases(),
    {
      m: 8,
      n: 12,
      k: 72,
      segA: 36,
      segB: 36,
      tuning: { variant: "register" },
      plan: vec4(true, true),
    },
    {
      m: 8,
      n: 12,
      k: 72,
      segA: 9,
      segB: 36,
      tuning: { variant: "register" },
      plan: vec4(false, true),
    },
  ],
  mixes: [{}, TRAIN_DW],
}, {
  // Split-K chosen by the planner (long k, few tiles), and k longer than one dispatch: the
  // passes after the first index the segments from their kOff.
  name: "gemmStrided: k in segments with split-K and sequential k-passes",
  op: kSegmentedOp,
  seed: 1750,
  cases: [
    {
      m: 6,
      n: 10,
      k: 4096,
      segA: 64,
      segB: 64,
      tuning: {},
      plan: (p) => assert.ok(p.splitK > 1 || p.variant === "shared"),
    },
    {
      m: 3,
      n: 5,
      k: 40000,
      segA: 40,
      segB: 40,
      beta: 0.5,
      tuning: { variant: "shared" },
      plan: (p) => assert.equal(p.passes.length, 2),
    },
    {
      m: 2,
      n: 4,
      k: 250000,
      segA: 100,
      segB: 250,
      tuning: { variant: "register", splitK: 1 },
      plan: (p) => assert.equal(p.passes.length, 2),
    },
    {
      m: 2,
      n: 4,
      k: 250002,
      segA: 9,
      tuning: { variant: "register", splitK: 1 },
      plan: (p) => assert.equal(p.passes.length, 2),
    },
  ],
  mixes: [{}, TRAIN_DW],
}];
