// Tests of the GEMM family (kernels/gemm/) against the Float64 CPU reference. Where a case is
// meant to take a path (a vec4 load, split-K, k-passes, the swapped product), its plan says so.
import assert from "node:assert/strict";
import type { Gpu, Tensor } from "../gpu/mod.ts";
import { activationForward, type ActivationKind } from "../kernels/activation.ts";
import { adapterProfile } from "../kernels/_adapter.ts";
import { bindingRange } from "../kernels/_binding.ts";
import {
  checkGemm,
  gemm,
  type GemmPlan,
  gemmStrided,
  type GemmTuning,
  planDispatches,
  planGemm,
  reduceStrided,
  sumRows,
} from "../kernels/gemm/index.ts";
import { type OperandDTypes, problemOf } from "./_gemm_problem.ts";
import { activationForwardRef } from "./cpu_ref/activation.ts";
import { gemmRef, sumRowsRef } from "./cpu_ref/gemm.ts";
import {
  assertClose,
  type CloseOptions,
  compareClose,
  F16_TEST,
  f16Tolerance,
  f32,
  GPU_TEST,
  maxAbs,
  Rng,
  stored,
  tensorOf,
  testGpu,
} from "./harness.ts";

const TOL = { rtol: 1e-4, atol: 1e-5 };

/** f32 rounding of a k-long dot product of O(1) terms grows with k (cancellation can leave a
 * small result with an absolute error of ~eps * sqrt(k) .. eps * k). */
function tolFor(k: number) {
  return { rtol: 1e-4, atol: 1e-5 + 2e-8 * k };
}

interface Case {
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
  batch?: number;
  alpha?: number;
  beta?: number;
  bias?: boolean;
}

/**
 * Random operands of a case (`seed`): the Float64 reference C, and GPU tensors of A, B and bias
 * with `newC()` making a fresh C (its initial values).
 */
function caseOperands(gpu: Gpu, c: Case, seed: number) {
  const rng = new Rng(seed);
  const batch = c.batch ?? 1;
  const a = rng.uniformArray(batch * c.m * c.k);
  const b = rng.uniformArray(batch * c.k * c.n);
  const c0 = rng.uniformArray(batch * c.m * c.n);
  const bias = c.bias ? rng.uniformArray(c.n) : undefined;
  const lead = c.batch === undefined ? [] : [batch];
  return {
    expected: gemmRef(a, b, c, c0, bias),
    ta: gpu.tensor(f32(a), { shape: [...lead, ...(c.transA ? [c.k, c.m] : [c.m, c.k])] }),
    tb: gpu.tensor(f32(b), { shape: [...lead, ...(c.transB ? [c.n, c.k] : [c.k, c.n])] }),
    tbias: bias ? gpu.tensor(f32(bias), { shape: [c.n] }) : undefined,
    newC: () => gpu.tensor(f32(c0), { shape: [...lead, c.m, c.n] }),
  };
}

/** Runs one GEMM on the GPU and compares with the reference; returns nothing, throws on error. */
async function runCase(c: Case, tuning: GemmTuning, seed: number): Promise<void> {
  const gpu = await testGpu();
  const { expected, ta, tb, tbias, newC } = caseOperands(gpu, c, seed);
  const tc = newC();
  gemm({ c: tc, a: ta, b: tb, bias: tbias }, { ...c, ...tuning });
  const what = `gemm ${JSON.stringify(c)} ${JSON.stringify(tuning)}`;
  assertClose(await tc.toArray(), expected, { ...tolFor(c.k), what });
  for (const t of [ta, tb, tc, tbias]) t?.dispose();
}

/** The plan `gemm` makes for a case on the test adapter. */
async function planOf(
  c: Case & { activation?: ActivationKind },
  tuning: GemmTuning,
  dt: OperandDTypes = {},
): Promise<GemmPlan> {
  return planGemm(problemOf(c, dt), adapterProfile(await testGpu()), tuning);
}

const SHAPES: [number, number, number][] = [[1, 1, 1], [7, 13, 5], [65, 33, 17], [128, 10, 84]];
const COMBOS: [boolean, boolean][] = [[false, false], [false, true], [true, false], [true, true]];

Deno.test(
  "gemm: all transpose combos at odd shapes, with bias (default kernels)",
  GPU_TEST,
  async () => {
    let seed = 1;
    for (const [m, n, k] of SHAPES) {
      for (const [transA, transB] of COMBOS) {
        await runCase({ m, n, k, transA, transB, bias: true }, {}, seed++);
      }
    }
  },
);

Deno.test("gemm: both kernel families, every transpose combo", GPU_TEST, async () => {
  let seed = 100;
  for (const variant of ["register", "shared"] as const) {
    for (const [m, n, k] of [[7, 13, 5], [65, 33, 17], [70, 66, 40]] as const) {
      for (const [transA, transB] of COMBOS) {
        await runCase({ m, n, k, transA, transB, bias: seed % 2 === 0 }, { variant }, seed++);
      }
    }
  }
});

Deno.test("gemm: vec4 paths (dims multiple of 4) and every register tile", GPU_TEST, async () => {
  let seed = 200;
  // 16x32x64 lets every operand be loaded as vec4; 20x12x36 too, with partial tiles.
  for (const [m, n, k] of [[16, 32, 64], [20, 12, 36]] as const) {
    for (const [transA, transB] of COMBOS) {
      for (const tile of [[16, 16], [8, 4], [1, 4], [2, 8], [4, 16]] as [number, number][]) {
        const c = { m, n, k, transA, transB }, tuning = { variant: "register", tile } as const;
        const { config } = (await planOf(c, tuning)).passes[0];
        // Every operand vectorized; A along m takes whole vec4s of rows (tm >= 4).
        assert.deepEqual([config.vecA, config.vecB, config.vecC], [true, true, true]);
        assert.deepEqual([config.tm, config.tn], [
          transA ? Math.max(tile[0], 4) : tile[0],
          tile[1],
        ]);
        await runCase(c, tuning, seed++);
      }
    }
  }
});

Deno.test("gemm: swapped orientation (C^T = B^T A^T) for every combo", GPU_TEST, async () => {
  let seed = 250;
  for (const [m, n, k] of [[65, 7, 17], [16, 32, 64], [9, 6, 11]] as const) {
    for (const [transA, transB] of COMBOS) {
      for (const swap of [true, false]) {
        const c = { m, n, k, transA, transB, bias: true, batch: 2, beta: 0.5 };
        assert.equal((await planOf(c, { variant: "register", swap })).swap, swap);
        const split = await planOf({ ...c, batch: undefined }, {
          variant: "register",
          swap,
          splitK: 2,
        });
        assert.deepEqual([split.swap, split.splitK], [swap, 2]);
        await runCase(c, { variant: "register", swap }, seed);
        await runCase({ ...c, batch: undefined }, { variant: "register", swap, splitK: 2 }, seed);
      }
      seed++;
    }
  }
});

Deno.test("gemm: batch, alpha and beta accumulation", GPU_TEST, async () => {
  let seed = 300;
  for (const variant of ["register", "shared"] as const) {
    for (const [transA, transB] of COMBOS) {
      await runCase(
        { m: 9, n: 6, k: 11, transA, transB, batch: 3, alpha: 0.5, beta: 1, bias: true },
        { variant },
        seed++,
      );
      await runCase({ m: 8, n: 12, k: 4, transA, transB, batch: 2, beta: -2 }, { variant }, seed++);
    }
  }
});

Deno.test("gemm: split-K gives the same result as one pass", GPU_TEST, async () => {
  let seed = 400;
  for (const variant of ["register", "shared"] as const) {
    for (const [transA, transB] of COMBOS) {
      const c = { m: 5, n: 7, k: 1001, transA, transB, bias: true, beta: 0.5, batch: 2 };
      const kernels = async (t: GemmTuning) =>
        planDispatches(await planOf(c, t)).map((d) => d.kernel);
      assert.deepEqual(await kernels({ variant, splitK: 3 }), [variant, "epilogue"]);
      assert.deepEqual(await kernels({ variant, splitK: 1 }), [variant]);
      await runCase(c, { variant, splitK: 3 }, seed);
      await runCase(c, { variant, splitK: 1 }, seed++);
    }
  }
  // Split-K chosen automatically (few output tiles, long k).
  const auto = { m: 6, n: 25, k: 4096, transB: true };
  assert.ok((await planOf(auto, {})).splitK > 1);
  await runCase(auto, {}, seed++);
});

Deno.test(
  "gemm: k longer than one dispatch's loop budget (sequential k passes)",
  GPU_TEST,
  async () => {
    // llvmpipe silently stops loops after 65535 iterations per invocation: long reductions must
    // be split. 40000 exceeds the shared kernel's pass, 250000 the register kernel's.
    const cases: [Case, GemmTuning][] = [
      [{ m: 3, n: 5, k: 40000, transA: true, bias: true, beta: 0.5 }, { variant: "shared" }],
      [{ m: 2, n: 4, k: 250000, transB: true, bias: true }, { variant: "register", splitK: 1 }],
      [{ m: 4, n: 8, k: 250000 }, { variant: "register", splitK: 1 }], // vec4 A and B
    ];
    let seed = 450;
    for (const [c, tuning] of cases) {
      const plan = await planOf(c, tuning);
      assert.equal(plan.passes.length, 2, JSON.stringify(c));
      assert.equal(plan.epilogue, undefined); // an f32 C accumulates the passes itself
      await runCase(c, tuning, seed++);
    }
  },
);

Deno.test("gemm: beta = 0 ignores C (NaN garbage is overwritten)", GPU_TEST, async () => {
  const gpu = await testGpu();
  const a = gpu.tensor(new Float32Array([1, 2, 3, 4]), { shape: [2, 2] });
  const b = gpu.tensor(new Float32Array([1, 0, 0, 1]), { shape: [2, 2] });
  const c = gpu.tensor(new Float32Array([NaN, NaN, NaN, NaN]), { shape: [2, 2] });
  gemm({ c, a, b }, { m: 2, n: 2, k: 2 });
  assert.deepEqual(await c.toArray(), new Float32Array([1, 2, 3, 4]));
  gemm({ c, a, b }, { m: 2, n: 2, k: 2, beta: 1 }); // now C accumulates
  assert.deepEqual(await c.toArray(), new Float32Array([2, 4, 6, 8]));
});

Deno.test("gemm: k = 0 gives beta * C + bias", GPU_TEST, async () => {
  const gpu = await testGpu();
  const a = gpu.empty([3, 0]);
  const b = gpu.empty([0, 2]);
  const c = gpu.tensor(new Float32Array([1, 2, 3, 4, 5, 6]), { shape: [3, 2] });
  const bias = gpu.tensor(new Float32Array([10, 20]), { shape: [2] });
  gemm({ c, a, b, bias }, { m: 3, n: 2, k: 0, beta: 2 });
  assert.deepEqual(await c.toArray(), new Float32Array([12, 24, 16, 28, 20, 32]));
});

Deno.test("checkGemm: shapes, errors naming the op and both shapes", () => {
  assert.deepEqual(checkGemm({ m: 128, n: 10, k: 84 }), [128, 10]);
  assert.deepEqual(checkGemm({ m: 4, n: 5, k: 6, batch: 3 }), [3, 4, 5]);
  assert.deepEqual(
    checkGemm({ m: 4, n: 5, k: 6, transA: true, transB: true }, { a: [6, 4], b: [5, 6] }),
    [4, 5],
  );
  assert.throws(
    () => checkGemm({ m: 128, n: 10, k: 84 }, { a: [128, 80] }),
    (e: Error) =>
      e instanceof TypeError &&
      /gemm: a has shape \[128, 80\], expected \[128, 84\]/.test(e.message),
  );
  assert.throws(
    () => checkGemm({ m: 4, n: 5, k: 6, transB: true }, { b: [6, 5] }),
    (e: Error) =>
      e instanceof TypeError && /gemm: b has shape \[6, 5\], expected \[5, 6\]/.test(e.message),
  );
  assert.throws(
    () => checkGemm({ m: 4, n: 5, k: 6 }, { bias: [4] }),
    (e: Error) =>
      e instanceof TypeError && /gemm: bias has shape \[4\], expected \[5\]/.test(e.message),
  );
  assert.throws(() => checkGemm({ m: -1, n: 5, k: 6 }), RangeError);
  assert.throws(() => checkGemm({ m: 1.5, n: 5, k: 6 }), RangeError);
  assert.throws(() => checkGemm({ m: 1, n: 5, k: 6, batch: 0 }), RangeError);
  assert.throws(() => checkGemm({ m: 1, n: 5, k: 6, alpha: NaN }), RangeError);
});

Deno.test("gemm: rejects tensors that do not fit", GPU_TEST, async () => {
  const gpu = await testGpu();
  const a = gpu.zeros([3, 4]), b = gpu.zeros([4, 5]), c = gpu.zeros([3, 6]);
  assert.throws(
    () => gemm({ c, a, b }, { m: 3, n: 5, k: 4 }),
    (e: Error) =>
      e instanceof TypeError && /gemm: c has shape \[3, 6\], expected \[3, 5\]/.test(e.message),
  );
});

Deno.test("sumRows: column sums, overwrite and accumulate, long reductions", GPU_TEST, async () => {
  const gpu = await testGpu();
  const rng = new Rng(500);
  for (const [rows, cols] of [[1, 1], [128, 10], [3000, 3], [7, 333], [100000, 2]] as const) {
    const x = rng.uniformArray(rows * cols);
    const prior = rng.uniformArray(cols);
    const tx = gpu.tensor(f32(x), { shape: [rows, cols] });
    const ty = gpu.tensor(f32(prior), { shape: [cols] });
    const expected = sumRowsRef(x, rows, cols);
    sumRows({ y: ty, x: tx }, { rows, cols, accumulate: true });
    const acc = await ty.toArray();
    assertClose(acc, expected.map((v, i) => v + prior[i]), {
      ...TOL,
      what: `sumRows acc ${rows}x${cols}`,
    });
    sumRows({ y: ty, x: tx }, { rows, cols });
    assertClose(await ty.toArray(), expected, { ...TOL, what: `sumRows ${rows}x${cols}` });
    tx.dispose();
    ty.dispose();
  }
  assert.throws(
    () => sumRows({ y: gpu.zeros([3]), x: gpu.zeros([4, 4]) }, { rows: 4, cols: 4 }),
    (e: Error) =>
      e instanceof TypeError && /sumRows: y has shape \[3\], expected \[4\]/.test(e.message),
  );
});

Deno.test("gemm reference: a hand-computed product", () => {
  // [[1, 2], [3, 4]] . [[5, 6], [7, 8]] = [[19, 22], [43, 50]]
  assert.deepEqual([...gemmRef([1, 2, 3, 4], [5, 6, 7, 8], { m: 2, n: 2, k: 2 })], [
    19,
    22,
    43,
    50,
  ]);
  // transposes: A^T with A = [[1, 3], [2, 4]], B^T with B = [[5, 7], [6, 8]]
  assert.deepEqual(
    [...gemmRef([1, 3, 2, 4], [5, 7, 6, 8], { m: 2, n: 2, k: 2, transA: true, transB: true })],
    [19, 22, 43, 50],
  );
});

// ------------------------------------------------------------ fused activations ----

const KINDS: ActivationKind[] = ["relu", "relu6", "sigmoid", "tanh"];

/** Fused vs separate activation: the same f32 value through the same WGSL (1 ulp of slack). */
const SAME = { rtol: 1.2e-7, atol: 0 };

/**
 * Runs one GEMM with a fused activation and compares it with the Float64 reference followed
 * by the activation, and with the unfused GEMM followed by `activationForward`. Returns the
 * largest |fused - unfused|.
 */
async function runActCase(
  c: Case & { activation: ActivationKind },
  tuning: GemmTuning,
  seed: number,
): Promise<number> {
  const gpu = await testGpu();
  const { expected: linear, ta, tb, tbias, newC } = caseOperands(gpu, c, seed);
  const expected = activationForwardRef(linear, c.activation);
  const fused = newC(), plain = newC();
  gemm({ c: fused, a: ta, b: tb, bias: tbias }, { ...c, ...tuning });
  const { activation, ...unfused } = c;
  gemm({ c: plain, a: ta, b: tb, bias: tbias }, { ...unfused, ...tuning });
  activationForward({ y: plain, x: plain }, { kind: activation });
  const what = `gemm ${JSON.stringify(c)} ${JSON.stringify(tuning)}`;
  const got = await fused.toArray();
  const separate = await plain.toArray();
  assertClose(got, expected, { ...tolFor(c.k), what });
  assertClose(got, separate, { ...SAME, what: `${what} fused vs separate` });
  for (const t of [ta, tb, fused, plain, tbias]) t?.dispose();
  return compareClose(got, separate).maxAbs;
}

Deno.test(
  "gemm activation: every kind in register tiles (vec4 C, odd sizes), shared, swapped",
  GPU_TEST,
  async () => {
    let seed = 600;
    for (const activation of KINDS) {
      // alpha 3 spreads C over [-8, 8]: relu6 clamps at 6 and tanh/sigmoid saturate somewhere.
      const base = { activation, bias: true, beta: 0.5, alpha: 3 };
      // Register blocks (each compiles in ~1 s on llvmpipe: the 16x16 one for relu only).
      const big: [number, number] = activation === "relu" ? [16, 16] : [4, 8];
      // vec4 C stores (n, ldc multiples of 4), partial tiles, odd m/n/k, transposes.
      await runActCase(
        { ...base, m: 16, n: 32, k: 64 },
        { variant: "register", tile: [8, 4] },
        seed++,
      );
      await runActCase({ ...base, m: 20, n: 12, k: 36, transA: true }, {
        variant: "register",
        tile: big,
      }, seed++);
      await runActCase({ ...base, m: 7, n: 13, k: 5, transB: true }, {
        variant: "register",
        tile: [2, 8],
      }, seed++);
      await runActCase({ ...base, m: 9, n: 6, k: 11, batch: 3 }, {
        variant: "register",
        tile: [1, 4],
      }, seed++);
      await runActCase({ ...base, m: 65, n: 33, k: 17, transA: true, transB: true }, {
        variant: "shared",
      }, seed++);
      // Skinny C computed transposed (row bias after the swap), batched; then vec4 C swapped.
      await runActCase({ ...base, m: 65, n: 7, k: 17, batch: 2 }, {
        variant: "register",
        swap: true,
        tile: [4, 8],
      }, seed++);
      await runActCase({ ...base, m: 16, n: 32, k: 64, transB: true }, {
        variant: "register",
        swap: true,
        tile: [4, 4],
      }, seed++);
    }
  },
);

Deno.test(
  "gemm activation: split-K applies it in the epilogue, k-passes in the last pass only",
  GPU_TEST,
  async () => {
    let seed = 700;
    for (const activation of KINDS) {
      const base = { activation, bias: true, beta: 0.5 };
      for (const variant of ["register", "shared"] as const) {
        // Partial sums must stay raw: an activation on them would change the sum.
        await runActCase({ ...base, m: 5, n: 7, k: 1001, transB: true, batch: 2 }, {
          variant,
          splitK: 3,
        }, seed++);
      }
      await runActCase({ ...base, m: 8, n: 12, k: 2048, alpha: 0.1 }, {
        variant: "register",
        splitK: 4,
      }, seed++); // vec4 C in the epilogue's mapping
      // Sequential k-passes (shared: 32768 k per pass; register: 240000).
      await runActCase({ ...base, m: 3, n: 5, k: 40000, transA: true, alpha: 0.05 }, {
        variant: "shared",
      }, seed++);
      await runActCase({ ...base, m: 2, n: 4, k: 250000, transB: true, alpha: 0.01 }, {
        variant: "register",
        splitK: 1,
      }, seed++);
    }
  },
);

Deno.test("gemm activation: default kernels, k = 0, and unknown kinds", GPU_TEST, async () => {
  let seed = 800;
  for (const activation of ["relu", "tanh"] as const) {
    await runActCase({ activation, m: 128, n: 10, k: 84, transB: true, bias: true }, {}, seed++);
  }
  const gpu = await testGpu();
  // k = 0: C = f(beta * C + bias).
  const a = gpu.empty([3, 0]), b = gpu.empty([0, 2]);
  const c = gpu.tensor(new Float32Array([1, -2, 3, -4, 5, -6]), { shape: [3, 2] });
  const bias = gpu.tensor(new Float32Array([1, -1]), { shape: [2] });
  gemm({ c, a, b, bias }, { m: 3, n: 2, k: 0, beta: 2, activation: "relu6" });
  assert.deepEqual(await c.toArray(), new Float32Array([3, 0, 6, 0, 6, 0]));
  assert.throws(
    () =>
      gemm({ c, a, b }, {
        m: 3,
        n: 2,
        k: 0,
        activation: "gelu" as unknown as ActivationKind,
      }),
    (e: Error) => e instanceof RangeError && /gemm: unknown activation "gelu"/.test(e.message),
  );
});

// ---------------------------------------------------------------------- f16 operands ----

/** Storage types of a case's operands (f32 where left out). */
interface DTypes {
  a?: "f32" | "f16";
  b?: "f32" | "f16";
  c?: "f32" | "f16";
  bias?: "f32" | "f16";
}

/** What training runs: f16 activations and weights, f32 bias; C f16 (forward, dx) or f32 (dw). */
const TRAIN_FWD: DTypes = { a: "f16", b: "f16", c: "f16", bias: "f32" };
const TRAIN_DW: DTypes = { a: "f16", b: "f16", c: "f32" };
const ALL_F16: DTypes = { a: "f16", b: "f16", c: "f16", bias: "f16" };
/** Other mixes: each binding's type follows its own tensor. */
const MIXES: DTypes[] = [
  ALL_F16,
  { a: "f32", b: "f16", c: "f16", bias: "f32" },
  { a: "f16", b: "f32", c: "f32", bias: "f16" },
  { a: "f32", b: "f32", c: "f16", bias: "f16" },
];

/**
 * Tolerance of a C computed from the stored (rounded) inputs: `tolFor(k)` for an f32 C (the
 * arithmetic is f32 either way). For an f16 C, the f16 rounding of the result (f16Tolerance)
 * with, as `extra`, the f32 accumulation error tolFor allows for a k-long reduction
 * (2e-8 * k absolute) relative to f16Tolerance's absolute term (2^-9 * scale): below 0.01 for
 * k <= 2048, ~0.03 at k = 250000 (where scale ~ 300).
 */
function tolC(expected: ArrayLike<number>, k: number, c: "f32" | "f16" | undefined) {
  if (c !== "f16") return tolFor(k);
  const scale = maxAbs(expected);
  return f16Tolerance(scale, (2e-8 * k) / (2 ** -9 * Math.max(scale, 1e-3)));
}

/**
 * Runs one GEMM with operands stored as `dt` says and compares with the Float64 reference fed
 * the stored inputs (f16 ones rounded with roundF16, the prior C included), then the optional
 * activation.
 */
async function runCaseDt(
  c: Case & { activation?: ActivationKind },
  dt: DTypes,
  tuning: GemmTuning,
  seed: number,
): Promise<void> {
  const gpu = await testGpu();
  const rng = new Rng(seed);
  const batch = c.batch ?? 1;
  const lead = c.batch === undefined ? [] : [batch];
  const a = rng.uniformArray(batch * c.m * c.k);
  const b = rng.uniformArray(batch * c.k * c.n);
  const c0 = rng.uniformArray(batch * c.m * c.n);
  const bias = c.bias ? rng.uniformArray(c.n) : undefined;
  const ta = tensorOf(gpu, a, {
    dtype: dt.a,
    shape: [...lead, ...(c.transA ? [c.k, c.m] : [c.m, c.k])],
  });
  const tb = tensorOf(gpu, b, {
    dtype: dt.b,
    shape: [...lead, ...(c.transB ? [c.n, c.k] : [c.k, c.n])],
  });
  const tc = tensorOf(gpu, c0, { dtype: dt.c, shape: [...lead, c.m, c.n] });
  const tbias = bias ? tensorOf(gpu, bias, { dtype: dt.bias, shape: [c.n] }) : undefined;
  const bs = bias ? stored(bias, dt.bias) : undefined;
  let expected = gemmRef(stored(a, dt.a), stored(b, dt.b), c, stored(c0, dt.c), bs);
  if (c.activation) expected = activationForwardRef(expected, c.activation);
  gemm({ c: tc, a: ta, b: tb, bias: tbias }, { ...c, ...tuning });
  const got = await tc.toArray();
  assert.equal(got instanceof Float16Array, dt.c === "f16");
  const what = `gemm ${JSON.stringify(c)} ${JSON.stringify(dt)} ${JSON.stringify(tuning)}`;
  assertClose(got, expected, { ...tolC(expected, c.k, dt.c), what });
  for (const t of [ta, tb, tc, tbias]) t?.dispose();
}

Deno.test(
  "gemm f16: training configuration (forward, dx with f16 C; dw += with f32 C), odd and vec4 shapes",
  F16_TEST,
  async () => {
    let seed = 900;
    for (const [m, n, k] of [[7, 13, 5], [65, 33, 17], [16, 32, 64], [20, 12, 36]] as const) {
      for (const variant of [undefined, "shared"] as const) {
        const tuning = variant ? { variant } : {};
        // y[m, n] = act(x[m, k] . w[n, k]^T + b)
        const activation = seed % 2 === 0 ? "relu" : undefined;
        await runCaseDt(
          { m, n, k, transB: true, bias: true, activation },
          TRAIN_FWD,
          tuning,
          seed++,
        );
        // dx[m, k] = dy[m, n] . w[n, k]
        await runCaseDt({ m, n: k, k: n }, TRAIN_FWD, tuning, seed++);
        // dw[n, k] += dy[m, n]^T . x[m, k]
        await runCaseDt({ m: n, n: k, k: m, transA: true, beta: 1 }, TRAIN_DW, tuning, seed++);
      }
    }
  },
);

Deno.test(
  "gemm f16: all-f16 and mixed dtypes, every transpose combo, both families, batch and beta",
  F16_TEST,
  async () => {
    let seed = 950;
    for (const variant of ["register", "shared"] as const) {
      for (const [m, n, k] of [[9, 6, 11], [16, 32, 64]] as const) {
        for (const [transA, transB] of COMBOS) {
          const dt = MIXES[seed % MIXES.length];
          const c = { m, n, k, transA, transB, bias: true, beta: 0.5, alpha: 2, batch: 2 };
          await runCaseDt(c, dt, { variant }, seed++);
        }
      }
    }
  },
);

Deno.test(
  "gemm f16: register tiles (vec4 A, B and C loads and stores) and swapped products",
  F16_TEST,
  async () => {
    let seed = 1000;
    for (const [m, n, k] of [[16, 32, 64], [20, 12, 36]] as const) {
      for (const [transA, transB] of COMBOS) {
        for (const tile of [[8, 4], [1, 4], [2, 8]] as [number, number][]) {
          const dt = seed % 2 === 0 ? ALL_F16 : TRAIN_FWD;
          await runCaseDt({ m, n, k, transA, transB, bias: true }, dt, {
            variant: "register",
            tile,
          }, seed++);
        }
      }
    }
    // The 16x16 block compiles slowly on llvmpipe (~1.7 s with f16 operands): two combos only.
    for (const [transA, transB] of [COMBOS[0], COMBOS[3]]) {
      await runCaseDt({ m: 20, n: 32, k: 36, transA, transB, bias: true }, TRAIN_FWD, {
        variant: "register",
        tile: [16, 16],
      }, seed++);
    }
    // C^T = B^T A^T: A and B exchange bindings (and dtypes), the bias turns into a row bias.
    for (const [m, n, k] of [[65, 7, 17], [16, 32, 64]] as const) {
      for (const [transA, transB] of COMBOS) {
        const c = { m, n, k, transA, transB, bias: true, batch: 2, beta: 0.5 };
        for (const dt of [TRAIN_FWD, MIXES[seed % MIXES.length]]) {
          await runCaseDt(c, dt, { variant: "register", swap: true }, seed++);
        }
      }
    }
  },
);

Deno.test(
  "gemm f16: split-K (f32 partial sums, f16 or f32 C in the epilogue) and long-k passes",
  F16_TEST,
  async () => {
    let seed = 1100;
    for (const variant of ["register", "shared"] as const) {
      for (const [transA, transB] of COMBOS) {
        const c = { m: 5, n: 7, k: 1001, transA, transB, bias: true, beta: 0.5, batch: 2 };
        await runCaseDt(c, ALL_F16, { variant, splitK: 3 }, seed++);
        await runCaseDt({ ...c, bias: false, beta: 1 }, TRAIN_DW, { variant, splitK: 3 }, seed++);
      }
    }
    // vec4 C in the epilogue's mapping, with an activation; split-K chosen automatically.
    await runCaseDt(
      { m: 8, n: 12, k: 2048, bias: true, activation: "sigmoid", alpha: 0.1 },
      ALL_F16,
      {
        variant: "register",
        splitK: 4,
      },
      seed++,
    );
    await runCaseDt({ m: 6, n: 25, k: 4096, transB: true }, TRAIN_FWD, {}, seed++);
    // Sequential k-passes (shared: 32768 k per pass; register: 240000): with an f16 C they sum
    // into an f32 scratch and round once; with an f32 C they accumulate in C.
    const long = { m: 3, n: 5, k: 40000, transA: true, bias: true, beta: 0.5 };
    const cases: [Case & { activation?: ActivationKind }, DTypes, GemmTuning][] = [
      [{ ...long, activation: "tanh", alpha: 0.05 }, ALL_F16, { variant: "shared" }],
      [long, TRAIN_DW, { variant: "shared" }],
      [{ m: 2, n: 4, k: 250000, transB: true, bias: true }, TRAIN_FWD, {
        variant: "register",
        splitK: 1,
      }],
      [{ m: 4, n: 8, k: 250000, beta: 1 }, ALL_F16, { variant: "register", splitK: 1 }], // vec4 A, B, C
    ];
    for (const [c, dt, tuning] of cases) {
      const plan = await planOf(c, tuning, dt);
      assert.equal(plan.passes.length, 2);
      // An f16 C: the passes sum into the f32 accumulator and the epilogue rounds once.
      const f16 = dt.c === "f16";
      assert.equal(plan.scratch.accumulator, f16 ? c.m * c.n : 0);
      assert.equal(plan.epilogue?.bindings.part, f16 ? "accumulator" : undefined);
      await runCaseDt(c, dt, tuning, seed++);
    }
  },
);

Deno.test(
  "gemmStrided f16: segmented NCHW store with a row bias (conv2d's forward), other channels untouched",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    let seed = 1200;
    // C[cout, images * pixels] = W[cout, k] . col[k, images * pixels] stored as y[image][yC][pixel]
    // at channel offset 1 of yC = cout + 2 channels (a concatenation), + bias[cout].
    for (const [cout, k, pixels] of [[5, 7, 9], [8, 12, 16]] as const) {
      for (const dt of [TRAIN_FWD, { a: "f16", b: "f16", c: "f32", bias: "f16" } as DTypes]) {
        for (
          const tuning of [{}, { variant: "shared" }, { variant: "register", splitK: 2 }] as const
        ) {
          const rng = new Rng(seed++);
          const images = 2, yC = cout + 2, n = images * pixels;
          const w = rng.uniformArray(cout * k), col = rng.uniformArray(k * n);
          const bias = rng.uniformArray(cout), y0 = rng.uniformArray(images * yC * pixels);
          const tw = tensorOf(gpu, w, { dtype: dt.a, shape: [cout, k] }),
            tcol = tensorOf(gpu, col, { dtype: dt.b, shape: [k, n] });
          const tb = tensorOf(gpu, bias, { dtype: dt.bias, shape: [cout] });
          const ty = tensorOf(gpu, y0, { dtype: dt.c, shape: [images, yC, pixels] });
          const prod = gemmRef(stored(w, dt.a), stored(col, dt.b), { m: cout, n, k });
          const expected = stored(y0, dt.c); // channels 0 and yC - 1 keep their values
          const bs = stored(bias, dt.bias);
          for (let i = 0; i < cout; i++) {
            for (let j = 0; j < n; j++) {
              const img = Math.floor(j / pixels), px = j % pixels;
              expected[(img * yC + 1 + i) * pixels + px] = prod[i * n + j] + bs[i];
            }
          }
          gemmStrided(gpu, {
            m: cout,
            n,
            k,
            batch: 1,
            transA: false,
            transB: false,
            alpha: 1,
            beta: 0,
            a: bindingRange(tw, 0, cout * k),
            b: bindingRange(tcol, 0, k * n),
            c: bindingRange(ty, pixels, images * yC * pixels - pixels),
            lda: k,
            ldb: n,
            ldc: pixels,
            strideA: 0,
            strideB: 0,
            strideC: 0,
            segment: pixels,
            segmentStride: yC * pixels,
            bias: bindingRange(tb, 0, cout),
            biasMode: "row",
            strideBias: 0,
          }, tuning);
          const what = `gemmStrided seg ${cout}x${n}x${k} ${JSON.stringify(dt)} ${
            JSON.stringify(tuning)
          }`;
          assertClose(await ty.toArray(), expected, { ...tolC(expected, k, dt.c), what });
          for (const t of [tw, tcol, tb, ty]) t.dispose();
        }
      }
    }
  },
);

/** Sums of `x[outer, mid, inner]` over outer and inner (Float64). */
function reduceRef(x: Float64Array, outer: number, mid: number, inner: number): Float64Array {
  const y = new Float64Array(mid);
  for (let o = 0; o < outer; o++) {
    for (let c = 0; c < mid; c++) {
      for (let q = 0; q < inner; q++) y[c] += x[(o * mid + c) * inner + q];
    }
  }
  return y;
}

/**
 * Tolerance of a sum of `len` stored values: TOL for an f32 y (as the f32 sumRows test), for an
 * f16 y its own rounding plus, as `extra`, TOL's absolute 1e-5 relative to f16Tolerance's
 * 2^-9 * scale (the f32 sums are far more accurate than one f16 rounding; extra < 0.01 here).
 */
function tolSum(expected: ArrayLike<number>, y: "f32" | "f16"): CloseOptions {
  if (y === "f32") return TOL;
  const scale = maxAbs(expected);
  return f16Tolerance(scale, 1e-5 / (2 ** -9 * Math.max(scale, 1e-3)));
}

Deno.test(
  "sumRows, reduceStrided f16: x f16 with y f32 (bias gradients) or f16, split reductions",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(1300);
    const mixes = [["f16", "f32"], ["f16", "f16"], ["f32", "f16"]] as const;
    for (const [rows, cols] of [[1, 1], [128, 10], [3000, 3], [7, 333]] as const) {
      for (const [xd, yd] of mixes) {
        const x = rng.uniformArray(rows * cols);
        const prior = rng.uniformArray(cols);
        const tx = tensorOf(gpu, x, { dtype: xd, shape: [rows, cols] });
        const ty = tensorOf(gpu, prior, { dtype: yd, shape: [cols] });
        const sums = sumRowsRef(stored(x, xd), rows, cols);
        const before = stored(prior, yd);
        const acc = sums.map((v, i) => v + before[i]);
        sumRows({ y: ty, x: tx }, { rows, cols, accumulate: true });
        const what = `sumRows ${rows}x${cols} x ${xd} y ${yd}`;
        assertClose(await ty.toArray(), acc, { ...tolSum(acc, yd), what: `${what} acc` });
        sumRows({ y: ty, x: tx }, { rows, cols });
        assertClose(await ty.toArray(), sums, { ...tolSum(sums, yd), what });
        tx.dispose();
        ty.dispose();
      }
    }
    // conv2d's bias gradient: x[images, channels, pixels]; [2, 3, 1000] runs two passes.
    for (const [outer, mid, inner] of [[3, 5, 7], [2, 3, 1000]] as const) {
      for (const [xd, yd] of mixes) {
        const x = rng.uniformArray(outer * mid * inner);
        const tx = tensorOf(gpu, x, { dtype: xd, shape: [outer, mid, inner] });
        const ty = tensorOf(gpu, rng.uniformArray(mid + 3), { dtype: yd, shape: [mid + 3] });
        const expected = reduceRef(stored(x, xd), outer, mid, inner);
        reduceStrided(gpu, {
          y: bindingRange(ty, 3, mid), // an offset inside the binding
          x: bindingRange(tx, 0, outer * mid * inner),
          outer,
          mid,
          inner,
          accumulate: false,
        });
        const got = (await ty.toArray()).slice(3);
        const what = `reduceStrided ${outer}x${mid}x${inner} x ${xd} y ${yd}`;
        assertClose(got, expected, { ...tolSum(expected, yd), what });
        tx.dispose();
        ty.dispose();
      }
    }
  },
);

Deno.test(
  "gemm, sumRows, reduceStrided: non-float tensors in float slots throw TypeError",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const u = (shape: number[]): Tensor => gpu.zeros(shape, { dtype: "u32" });
    const a = gpu.zeros([3, 4], { dtype: "f16" }), b = gpu.zeros([4, 5]), c = gpu.zeros([3, 5]);
    const p = { m: 3, n: 5, k: 4 };
    const rejects = (f: () => void, re: RegExp) =>
      assert.throws(f, (e: Error) => e instanceof TypeError && re.test(e.message));
    rejects(() => gemm({ c, a: u([3, 4]), b }, p), /^gemm: a must be f32 or f16, got Tensor\(u32/);
    rejects(() => gemm({ c, a, b: u([4, 5]) }, p), /^gemm: b must be f32 or f16/);
    rejects(() => gemm({ c: u([3, 5]), a, b }, p), /^gemm: c must be f32 or f16/);
    rejects(() => gemm({ c, a, b, bias: u([5]) }, p), /^gemm: bias must be f32 or f16/);
    rejects(
      () => sumRows({ y: gpu.zeros([5]), x: u([3, 5]) }, { rows: 3, cols: 5 }),
      /^sumRows: x must be f32 or f16/,
    );
    const g = {
      ...p,
      batch: 1,
      transA: false,
      transB: false,
      alpha: 1,
      beta: 0,
      a: bindingRange(a, 0, 12),
      b: bindingRange(u([4, 5]), 0, 20),
      c: bindingRange(c, 0, 15),
      lda: 4,
      ldb: 5,
      ldc: 5,
      strideA: 0,
      strideB: 0,
      strideC: 0,
      biasMode: "none",
    } as const;
    rejects(() => gemmStrided(gpu, g), /^gemm: b must be f32 or f16/);
    rejects(
      () =>
        reduceStrided(gpu, {
          y: bindingRange(u([5]), 0, 5),
          x: bindingRange(c, 0, 15),
          outer: 3,
          mid: 5,
          inner: 1,
          accumulate: false,
        }),
      /^reduceStrided: y must be f32 or f16/,
    );
  },
);
