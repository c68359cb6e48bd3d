// The GEMM op for testOp (tests/_op.ts): gemm (transposes, batches, alpha and beta, a bias, a
// fused activation, every tuning) and gemmStrided's segmented NCHW store (conv2d's forward)
// against the Float64 reference of tests/cpu_ref/gemm.ts; where a case is meant to take a path (a
// vec4 load, split-K, k-passes, the swapped product), its plan says so. The suites of
// tests/gemm_test.ts in f32 (f16: tests/ops/gemm_f16.ts; the reductions: tests/ops/gemm_reduce.ts;
// C's row groups: tests/ops/gemm_rows.ts).
import assert, { AssertionError } from "../_assert.ts";
import type { DType } from "../../gpu/mod.ts";
import { activationForward, type ActivationKind } from "../../kernels/activation.ts";
import { type AdapterProfile, adapterProfile } from "../../kernels/_adapter.ts";
import { bindingRange } from "../../kernels/_binding.ts";
import {
  gemm,
  type GemmPlan,
  gemmStrided,
  type GemmTuning,
  planDispatches,
  planGemm,
} from "../../kernels/gemm/index.ts";
import { type Dims, type OperandDTypes, problemOf } from "../_gemm_problem.ts";
import { activationForwardRef } from "../cpu_ref/activation.ts";
import { gemmRef } from "../cpu_ref/gemm.ts";
import { assertClose, type CloseOptions, f16Tolerance, maxAbs, type Numeric } from "../harness.ts";
import { input, type Mix, type OpCase, opCase, type OpSuite, output, uniform } from "../_op.ts";

/** Starting values of every tensor here: uniform in [-1, 1). */
const U = uniform(-1, 1);

/**
 * f32 rounding of a k-long dot product of O(1) terms grows with k (cancellation can leave a
 * small result with an absolute error of ~eps * sqrt(k) .. eps * k).
 */
export function tolFor(k: number): CloseOptions {
  return { rtol: 1e-4, atol: 1e-5 + 2e-8 * k };
}

/**
 * Tolerance of a C computed from the stored (rounded) inputs: `tolFor(k)` for an f32 C (the
 * arithmetic is f32 either way). For an f16 C, the f16 rounding of the result (f16Tolerance)
 * with, as `extra`, the f32 accumulation error tolFor allows for a k-long reduction
 * (2e-8 * k absolute) relative to f16Tolerance's absolute term (2^-9 * scale): below 0.01 for
 * k <= 2048, ~0.03 at k = 250000 (where scale ~ 300).
 */
export function tolC(expected: Numeric, k: number, c: DType | undefined): CloseOptions {
  if (c !== "f16") return tolFor(k);
  const scale = maxAbs(expected);
  return f16Tolerance(scale, (2e-8 * k) / (2 ** -9 * Math.max(scale, 1e-3)));
}

/** Fused vs separate activation: the same f32 value through the same WGSL (1 ulp of slack). */
export const SAME = { rtol: 1.2e-7, atol: 0 };

/** A case of {@linkcode gemmOp}: a contiguous GEMM as `gemm` takes it, and how to run it. */
export interface GemmCase extends Dims {
  /** Knobs forced on the planner (default: its own choice). */
  readonly tuning?: GemmTuning;
  /**
   * With an activation: also the unfused GEMM then `activationForward` (into `plain`), which
   * must give C within {@linkcode SAME}.
   */
  readonly unfused?: boolean;
  /** Checks of the plan `gemm` makes for the case (its dtypes) on the test adapter. */
  readonly plan?: (plan: GemmPlan, dt: OperandDTypes) => void;
  /** The dtype mix of the case in {@linkcode suitesByMix} (default everything f32). */
  readonly mix?: Mix;
}

/** `c` in messages. */
export function gemmLabel(c: GemmCase): string {
  const t = c.tuning ?? {};
  return [
    `gemm ${c.m}x${c.n}x${c.k}`,
    c.transA && "transA",
    c.transB && "transB",
    c.batch !== undefined && `batch ${c.batch}`,
    c.alpha !== undefined && `alpha ${c.alpha}`,
    c.beta && `beta ${c.beta}`,
    c.bias && "bias",
    c.activation,
    Object.keys(t).length > 0 && JSON.stringify(t),
  ].filter(Boolean).join(" ");
}

/**
 * `C = act(alpha * op(A) op(B) + beta * C + bias)` by `gemm` with the case's tuning, operands
 * uniform in [-1, 1). C starts as the prior values where beta is not 0, else as NaN (which beta
 * 0 must ignore). The reference is fed the stored inputs; C's tolerance grows with k
 * ({@linkcode tolC}).
 */
export function gemmOp(c: GemmCase): OpCase {
  const { tuning = {}, unfused = false, plan, mix: _, bias, ...p } = c;
  const { m, n, k, activation } = p;
  const lead = p.batch === undefined ? [] : [p.batch];
  const prior = (p.beta ?? 0) !== 0;
  if (unfused && !activation) throw new TypeError(`${gemmLabel(c)}: unfused needs an activation`);
  let profile: AdapterProfile | undefined; // the test adapter's, for the plan
  return opCase({
    label: gemmLabel(c),
    tensors: {
      a: input([...lead, ...(p.transA ? [k, m] : [m, k])], U),
      b: input([...lead, ...(p.transB ? [n, k] : [k, n])], U),
      c: prior ? input([...lead, m, n], U) : output([...lead, m, n]),
      ...(bias ? { bias: input([n], U) } : {}),
      // The same prior C (or NaN) in the same dtype.
      ...(unfused
        ? {
          plain: prior
            ? input([...lead, m, n], (_r, _n, d) => d.c, { as: "c" })
            : output([...lead, m, n], { as: "c" }),
        }
        : {}),
    },
    phases: [{
      gpu: ({ a, b, c, bias, plain }) => {
        profile = adapterProfile(c.gpu);
        gemm({ c, a, b, bias }, { ...p, ...tuning });
        if (unfused) {
          gemm({ c: plain, a, b, bias }, { ...p, activation: undefined, ...tuning });
          activationForward({ y: plain, x: plain }, { kind: activation! });
        }
      },
      cpu: ({ a, b, c, bias }) => {
        const y = gemmRef(a, b, p, c, bias);
        return { c: activation ? activationForwardRef(y, activation) : y };
      },
      tol: { c: (dtype, want) => tolC(want, k, dtype) },
      reads: unfused ? ["plain"] : [],
      check: (got, _want, { dtypes }) => {
        if (unfused) {
          assertClose(got.c, got.plain, { ...SAME, what: `${gemmLabel(c)} fused vs separate` });
        }
        if (plan) {
          const dt = { a: dtypes.a, b: dtypes.b, c: dtypes.c, bias: dtypes.bias } as OperandDTypes;
          try {
            plan(planGemm(problemOf({ ...p, bias }, dt), profile!, tuning), dt);
          } catch (e) {
            if (!(e instanceof AssertionError)) throw e;
            throw new AssertionError({
              message: `${gemmLabel(c)} plan ${JSON.stringify(dt)}: ${e.message}`,
            });
          }
        }
      },
    }],
  });
}

/**
 * The suites of `cases` in their own mixes: one suite a mix (`name` and the mix, seed `seed` +
 * its index), the cases of that mix in their order.
 */
export function suitesByMix(name: string, seed: number, cases: GemmCase[]): OpSuite<GemmCase>[] {
  const groups = new Map<Mix | undefined, GemmCase[]>();
  for (const c of cases) groups.set(c.mix, [...groups.get(c.mix) ?? [], c]);
  return [...groups].map(([mix, cs], i) => ({
    name: `${name} (${Object.entries(mix ?? {}).map(([t, d]) => `${t} ${d}`).join(", ") || "f32"})`,
    op: gemmOp,
    seed: seed + i,
    cases: cs,
    mixes: mix ? [mix] : undefined,
  }));
}

/** A case of {@linkcode segmentedOp}: `C[cout, images * pixels] = W[cout, k] . col[k, ...]`. */
export interface SegmentedCase {
  readonly cout: number;
  readonly k: number;
  readonly pixels: number;
  readonly tuning: GemmTuning;
  /**
   * B read in segments (`segmentB`): `col` is then an NCHW `x[images, k, pixels]` read as
   * `[k, images * pixels]` (a 1x1 convolution's input, no im2col).
   */
  readonly segmentB?: boolean;
}

/**
 * conv2d's forward GEMM by `gemmStrided`: `W[cout, k] . col[k, images * pixels] + bias[cout]`
 * stored as `y[image][yC][pixel]` at channel offset 1 of `yC = cout + 2` channels (a
 * concatenation); channels 0 and yC - 1 keep their values. Mix keys: a (W), b (col), c (y), bias.
 */
export function segmentedOp(s: SegmentedCase): OpCase {
  const { cout, k, pixels, tuning, segmentB = false } = s;
  const images = 2, yC = cout + 2, n = images * pixels;
  // B(kk, j) of the stored col: plain rows, or x[j / pixels][kk][j % pixels].
  const bAt = (kk: number, j: number) =>
    segmentB ? (Math.floor(j / pixels) * k + kk) * pixels + (j % pixels) : kk * n + j;
  return opCase({
    label: `gemmStrided seg ${cout}x${n}x${k}${segmentB ? " segB" : ""} ${JSON.stringify(tuning)}`,
    tensors: {
      w: input([cout, k], U, { as: "a" }),
      col: input([k, n], U, { as: "b" }),
      bias: input([cout], U),
      y: input([images, yC, pixels], U, { as: "c" }),
    },
    phases: [{
      gpu: ({ w, col, bias, y }) =>
        gemmStrided(y.gpu, {
          m: cout,
          n,
          k,
          batch: 1,
          transA: false,
          transB: false,
          alpha: 1,
          beta: 0,
          a: bindingRange(w, 0, cout * k),
          b: bindingRange(col, 0, k * n),
          c: bindingRange(y, pixels, images * yC * pixels - pixels),
          lda: k,
          ldb: segmentB ? pixels : n,
          ldc: pixels,
          strideA: 0,
          strideB: 0,
          strideC: 0,
          segment: pixels,
          segmentStride: yC * pixels,
          ...(segmentB ? { segmentB: pixels, segmentStrideB: k * pixels } : {}),
          bias: bindingRange(bias, 0, cout),
          biasMode: "row",
          strideBias: 0,
        }, tuning),
      cpu: ({ w, col, bias, y }) => {
        const plain = new Float64Array(k * n);
        for (let kk = 0; kk < k; kk++) {
          for (let j = 0; j < n; j++) plain[kk * n + j] = col[bAt(kk, j)];
        }
        const prod = gemmRef(w, plain, { m: cout, n, k });
        const out = Float64Array.from(y);
        for (let i = 0; i < cout; i++) {
          for (let j = 0; j < n; j++) {
            const img = Math.floor(j / pixels), px = j % pixels;
            out[(img * yC + 1 + i) * pixels + px] = prod[i * n + j] + bias[i];
          }
        }
        return { y: out };
      },
      tol: { y: (dtype, want) => tolC(want, k, dtype) },
    }],
  });
}

// ------------------------------------------------------------------------------ suites ----

/** The shapes of the default-kernel test: odd sizes, 1x1x1, LeNet's last layer. */
const SHAPES: [number, number, number][] = [[1, 1, 1], [7, 13, 5], [65, 33, 17], [128, 10, 84]];
/** Every [transA, transB]. */
export const COMBOS: [boolean, boolean][] = [false, true].flatMap((transA) =>
  [false, true].map((transB): [boolean, boolean] => [transA, transB])
);
/** The kernel families. */
export const VARIANTS = ["register", "shared"] as const;

/** Every case of `shapes` in every transpose combo, as `more` makes it (i: its index). */
export function combos(
  shapes: readonly (readonly [number, number, number])[],
  more: (c: GemmCase, i: number) => GemmCase | GemmCase[],
): GemmCase[] {
  const cs = shapes.flatMap(([m, n, k]) =>
    COMBOS.map(([transA, transB]) => ({ m, n, k, transA, transB }))
  );
  return cs.flatMap((c, i) => more(c, i));
}

/** Split-K's plan: the product then the epilogue (split) or the product alone. */
const splitKernels = (variant: string, splitK: number) => (plan: GemmPlan) =>
  assert.deepEqual(
    planDispatches(plan).map((d) => d.kernel),
    splitK > 1 ? [variant, "epilogue"] : [variant],
  );

/**
 * Two sequential k-passes: an f32 C accumulates them itself; an f16 C has them sum into the
 * f32 accumulator, which the epilogue rounds once.
 */
export function kPasses(plan: GemmPlan, dt: OperandDTypes, c: Dims): void {
  assert.equal(plan.passes.length, 2, gemmLabel(c));
  if (dt.c === "f16") {
    assert.equal(plan.scratch.accumulator, c.m * c.n);
    assert.equal(plan.epilogue?.bindings.part, "accumulator");
  } else {
    assert.equal(plan.scratch.accumulator, 0);
    assert.equal(plan.epilogue, undefined);
  }
}

/** Register tiles of the vec4 test. */
const TILES: [number, number][] = [[16, 16], [8, 4], [1, 4], [2, 8], [4, 16]];

/** The f32 suites of gemm (fused activations apart). */
export const GEMM_SUITES: OpSuite<GemmCase>[] = [{
  name: "gemm: all transpose combos at odd shapes, with bias (default kernels)",
  op: gemmOp,
  seed: 1,
  cases: combos(SHAPES, (c) => ({ ...c, bias: true })),
}, {
  name: "gemm: both kernel families, every transpose combo",
  op: gemmOp,
  seed: 100,
  cases: VARIANTS.flatMap((variant) =>
    combos([[7, 13, 5], [65, 33, 17], [70, 66, 40]], (c, i) => ({
      ...c,
      bias: i % 2 === 0,
      tuning: { variant },
    }))
  ),
}, {
  // 16x32x64 lets every operand be loaded as vec4; 20x12x36 too, with partial tiles.
  name: "gemm: vec4 paths (dims multiple of 4) and every register tile",
  op: gemmOp,
  seed: 200,
  cases: combos([[16, 32, 64], [20, 12, 36]], (c) =>
    TILES.map((tile) => ({
      ...c,
      tuning: { variant: "register", tile },
      plan: ({ passes: [{ config }] }) => {
        // Every operand vectorized; A along m takes whole vec4s of rows (tm >= 4).
        assert.deepEqual([config.vecA, config.vecB, config.vecC], [true, true, true]);
        assert.deepEqual([config.tm, config.tn], [
          c.transA ? Math.max(tile[0], 4) : tile[0],
          tile[1],
        ]);
      },
    }))),
}, {
  name: "gemm: swapped orientation (C^T = B^T A^T) for every combo",
  op: gemmOp,
  seed: 250,
  cases: combos([[65, 7, 17], [16, 32, 64], [9, 6, 11]], (c0) =>
    [true, false].flatMap((swap) => {
      const c = { ...c0, bias: true, beta: 0.5 };
      return [{
        ...c,
        batch: 2,
        tuning: { variant: "register", swap },
        plan: (plan: GemmPlan) => assert.equal(plan.swap, swap),
      }, {
        ...c,
        tuning: { variant: "register", swap, splitK: 2 },
        plan: (plan: GemmPlan) => assert.deepEqual([plan.swap, plan.splitK], [swap, 2]),
      }];
    })),
}, {
  name: "gemm: batch, alpha and beta accumulation",
  op: gemmOp,
  seed: 300,
  cases: VARIANTS.flatMap((variant) =>
    COMBOS.flatMap(([transA, transB]) =>
      [
        { m: 9, n: 6, k: 11, transA, transB, batch: 3, alpha: 0.5, beta: 1, bias: true },
        { m: 8, n: 12, k: 4, transA, transB, batch: 2, beta: -2 },
      ].map((c) => ({ ...c, tuning: { variant } }))
    )
  ),
}, {
  name: "gemm: split-K gives the same result as one pass",
  op: gemmOp,
  seed: 400,
  cases: [
    ...VARIANTS.flatMap((variant) =>
      COMBOS.flatMap(([transA, transB]) =>
        [3, 1].map((splitK) => ({
          ...{ m: 5, n: 7, k: 1001, transA, transB, bias: true, beta: 0.5, batch: 2 },
          tuning: { variant, splitK },
          plan: splitKernels(variant, splitK),
        }))
      )
    ),
    // Split-K chosen automatically (few output tiles, long k).
    { m: 6, n: 25, k: 4096, transB: true, plan: (plan) => assert.ok(plan.splitK > 1) },
  ],
}, {
  // llvmpipe silently stops loops after 65535 iterations per invocation: long reductions must
  // be split. 40000 exceeds the shared kernel's pass, 250000 the register kernel's.
  name: "gemm: k longer than one dispatch's loop budget (sequential k passes)",
  op: gemmOp,
  seed: 450,
  cases: ([
    [{ m: 3, n: 5, k: 40000, transA: true, bias: true, beta: 0.5 }, { variant: "shared" }],
    [{ m: 2, n: 4, k: 250000, transB: true, bias: true }, { variant: "register", splitK: 1 }],
    [{ m: 4, n: 8, k: 250000 }, { variant: "register", splitK: 1 }], // vec4 A and B
  ] as [Dims, GemmTuning][]).map(([c, tuning]) => ({
    ...c,
    tuning,
    plan: (plan: GemmPlan, dt: OperandDTypes) => kPasses(plan, dt, c),
  })),
}];

/** LeNet's last layer: y[128, 10] = x[128, 84] . w[10, 84]^T + b. */
const LINEAR = { m: 128, n: 10, k: 84, transB: true, bias: true };

const KINDS: ActivationKind[] = ["relu", "relu6", "sigmoid", "tanh"];

/** The suites of gemm with a fused activation, each against the unfused kernels too. */
export const ACTIVATION_SUITES: OpSuite<GemmCase>[] = [{
  name: "gemm activation: every kind in register tiles (vec4 C, odd sizes), shared, swapped",
  op: gemmOp,
  seed: 600,
  cases: KINDS.flatMap((activation) => {
    // alpha 3 spreads C over [-8, 8]: relu6 clamps at 6 and tanh/sigmoid saturate somewhere.
    const base = { activation, bias: true, beta: 0.5, alpha: 3, unfused: true };
    // Register blocks (each compiles in ~1 s on llvmpipe: the 16x16 one for relu only).
    const big: [number, number] = activation === "relu" ? [16, 16] : [4, 8];
    const runs: [Dims, GemmTuning][] = [
      // vec4 C stores (n, ldc multiples of 4), partial tiles, odd m/n/k, transposes.
      [{ m: 16, n: 32, k: 64 }, { variant: "register", tile: [8, 4] }],
      [{ m: 20, n: 12, k: 36, transA: true }, { variant: "register", tile: big }],
      [{ m: 7, n: 13, k: 5, transB: true }, { variant: "register", tile: [2, 8] }],
      [{ m: 9, n: 6, k: 11, batch: 3 }, { variant: "register", tile: [1, 4] }],
      [{ m: 65, n: 33, k: 17, transA: true, transB: true }, { variant: "shared" }],
      // Skinny C computed transposed (row bias after the swap), batched; then vec4 C swapped.
      [{ m: 65, n: 7, k: 17, batch: 2 }, { variant: "register", swap: true, tile: [4, 8] }],
      [{ m: 16, n: 32, k: 64, transB: true }, { variant: "register", swap: true, tile: [4, 4] }],
    ];
    return runs.map(([c, tuning]) => ({ ...base, ...c, tuning }));
  }),
}, {
  name: "gemm activation: split-K applies it in the epilogue, k-passes in the last pass only",
  op: gemmOp,
  seed: 700,
  cases: KINDS.flatMap((activation) => {
    const base = { activation, bias: true, beta: 0.5, unfused: true };
    const split = { m: 5, n: 7, k: 1001, transB: true, batch: 2 };
    const runs: [Dims, GemmTuning][] = [
      // Partial sums must stay raw: an activation on them would change the sum.
      ...VARIANTS.map((variant): [Dims, GemmTuning] => [split, { variant, splitK: 3 }]),
      // vec4 C in the epilogue's mapping.
      [{ m: 8, n: 12, k: 2048, alpha: 0.1 }, { variant: "register", splitK: 4 }],
      // Sequential k-passes (shared: 32768 k per pass; register: 240000).
      [{ m: 3, n: 5, k: 40000, transA: true, alpha: 0.05 }, { variant: "shared" }],
      [{ m: 2, n: 4, k: 250000, transB: true, alpha: 0.01 }, { variant: "register", splitK: 1 }],
    ];
    return runs.map(([c, tuning]) => ({ ...base, ...c, tuning }));
  }),
}, {
  name: "gemm activation: default kernels",
  op: gemmOp,
  seed: 800,
  cases: (["relu", "tanh"] as const).map((activation) => ({
    ...LINEAR,
    activation,
    unfused: true,
  })),
}];
