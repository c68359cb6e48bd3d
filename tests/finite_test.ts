// The Inf/NaN watch (kernels/finite.ts): finiteCheck lowers a watch word to the smallest mark of
// a check that saw a non-finite element, for f32 and f16 tensors of odd sizes, and never for
// finite ones (the largest finite values and subnormals included): tests/ops/finite.ts, shared
// with `deno task test:browser`; the validation here.
import assert from "node:assert/strict";
import { createFiniteWatch, finiteCheck } from "../kernels/mod.ts";
import { testCheck } from "./_check.ts";
import { GPU_TEST, testGpu } from "./harness.ts";
import { FINITE_CHECKS } from "./ops/finite.ts";

for (const check of FINITE_CHECKS) testCheck(check);

Deno.test("finiteCheck rejects bad operands", GPU_TEST, async () => {
  const gpu = await testGpu();
  const watch = createFiniteWatch(gpu);
  const x = gpu.tensor(new Float32Array([1]), { shape: [1] });
  assert.throws(() => finiteCheck({ watch, x }, { mark: 0, slot: 1 }), RangeError);
  assert.throws(() => finiteCheck({ watch, x }, { mark: 0xffffffff }), RangeError);
  assert.throws(() => finiteCheck({ watch, x }, { mark: 1.5 }), RangeError);
  assert.throws(() => finiteCheck({ watch: x, x: watch }, { mark: 0 }), TypeError);
  assert.throws(() => createFiniteWatch(gpu, 0), RangeError);
});
