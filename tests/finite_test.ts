// The Inf/NaN watch (kernels/finite.ts): finiteCheck lowers a watch word to the smallest mark of
// a check that saw a non-finite element, for f32 and f16 tensors of odd sizes, and never for
// finite ones (the largest finite values and subnormals included).
import assert from "node:assert/strict";
import { createFiniteWatch, finiteCheck, readFiniteWatch } from "../kernels/mod.ts";
import { F16_TEST, GPU_TEST, Rng, testGpu } from "./harness.ts";

for (const dtype of ["f32", "f16"] as const) {
  Deno.test(`finiteCheck (${dtype}): first bad mark per slot, odd sizes`, {
    ...(dtype === "f16" ? F16_TEST : GPU_TEST),
  }, async () => {
    const gpu = await testGpu();
    const rng = new Rng(5);
    const big = dtype === "f32" ? 3.4028234663852886e38 : 65504;
    for (const n of [1, 3, 7, 1023, 4099]) {
      for (const bad of [null, Infinity, -Infinity, NaN] as const) {
        const data = Array.from({ length: n }, () => rng.uniform(-1, 1));
        data[0] = big;
        data[n - 1] = -big;
        if (n > 2) data[1] = dtype === "f32" ? 1e-45 : 6e-8; // subnormal
        const at = bad === null ? -1 : rng.int(n);
        if (at >= 0) data[at] = bad!;
        const arr = dtype === "f32" ? new Float32Array(data) : new Float16Array(data);
        const x = gpu.tensor(arr, { shape: [n] });
        const watch = createFiniteWatch(gpu, 2);
        finiteCheck({ watch, x }, { mark: 9, slot: 1 });
        finiteCheck({ watch, x }, { mark: 4, slot: 1 });
        finiteCheck({ watch, x }, { mark: 6, slot: 1 });
        const got = await readFiniteWatch(watch);
        assert.deepEqual(got, [null, at >= 0 ? 4 : null], `${dtype} n=${n} bad=${bad} at ${at}`);
        x.dispose();
        watch.dispose();
      }
    }
  });
}

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
