// Tests of the GEMM family (kernels/gemm/): the suites of tests/ops/gemm*.ts (gemm in every
// transpose combo, family, register tile, orientation, split-K and k-pass path, with fused
// activations, and with f16 operands; gemmStrided's segmented store; sumRows and reduceStrided)
// against the Float64 CPU reference, each case's plan checked where it is meant to take a path;
// then hand-computed values, k = 0, and validation.
import assert from "node:assert/strict";
import type { Tensor } from "../gpu/mod.ts";
import type { ActivationKind } from "../kernels/activation.ts";
import { bindingRange } from "../kernels/_binding.ts";
import { checkGemm, gemm, gemmStrided, reduceStrided, sumRows } from "../kernels/gemm/index.ts";
import { gemmRef } from "./cpu_ref/gemm.ts";
import { F16_TEST, GPU_TEST, testGpu } from "./harness.ts";
import { testOp } from "./_op.ts";
import { ACTIVATION_SUITES, GEMM_SUITES } from "./ops/gemm.ts";
import { ROW_GROUP_SUITES } from "./ops/gemm_rows.ts";
import { KSEG_SUITES } from "./ops/gemm_kseg.ts";
import { HALF_SUITES, STRIDED_SUITES } from "./ops/gemm_f16.ts";
import { REDUCE_SUITES, SUM_ROWS_SUITES } from "./ops/gemm_reduce.ts";

for (const suite of [...GEMM_SUITES, ...ACTIVATION_SUITES, ...HALF_SUITES]) testOp(suite);
for (const suite of STRIDED_SUITES) testOp(suite);
for (const suite of ROW_GROUP_SUITES) testOp(suite);
for (const suite of KSEG_SUITES) testOp(suite);
for (const suite of SUM_ROWS_SUITES) testOp(suite);
for (const suite of REDUCE_SUITES) testOp(suite);

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

Deno.test("gemm activation: k = 0, and unknown kinds", GPU_TEST, async () => {
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

Deno.test("sumRows rejects a y that does not fit", GPU_TEST, async () => {
  const gpu = await testGpu();
  assert.throws(
    () => sumRows({ y: gpu.zeros([3]), x: gpu.zeros([4, 4]) }, { rows: 4, cols: 4 }),
    (e: Error) =>
      e instanceof TypeError && /sumRows: y has shape \[3\], expected \[4\]/.test(e.message),
  );
});

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
