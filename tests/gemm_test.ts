// Tests of the GEMM family (kernels/gemm.ts) against the Float64 CPU reference.
import assert from "node:assert/strict";
import type { Gpu } from "../gpu/mod.ts";
import { activationForward, type ActivationKind } from "../kernels/activation.ts";
import { checkGemm, gemm, type GemmTuning, sumRows } from "../kernels/gemm.ts";
import { activationForwardRef } from "./cpu_ref/activation.ts";
import { gemmRef, sumRowsRef } from "./cpu_ref/gemm.ts";
import { assertClose, compareClose, f32, GPU_TEST, Rng, testGpu } from "./harness.ts";

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
        await runCase({ m, n, k, transA, transB }, { variant: "register", tile }, seed++);
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
      await runCase(c, { variant, splitK: 3 }, seed);
      await runCase(c, { variant, splitK: 1 }, seed++);
    }
  }
  // Split-K chosen automatically (few output tiles, long k).
  await runCase({ m: 6, n: 25, k: 4096, transB: true }, {}, seed++);
});

Deno.test(
  "gemm: k longer than one dispatch's loop budget (sequential k passes)",
  GPU_TEST,
  async () => {
    // llvmpipe silently stops loops after 65535 iterations per invocation: long reductions must
    // be split. 40000 exceeds the shared kernel's pass, 250000 the register kernel's.
    await runCase({ m: 3, n: 5, k: 40000, transA: true, bias: true, beta: 0.5 }, {
      variant: "shared",
    }, 450);
    await runCase({ m: 2, n: 4, k: 250000, transB: true, bias: true }, {
      variant: "register",
      splitK: 1,
    }, 451);
    await runCase({ m: 4, n: 8, k: 250000 }, { variant: "register", splitK: 1 }, 452); // vec4 A and B
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
