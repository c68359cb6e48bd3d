// Tests of the data kernels (kernels/data/): the suites of tests/ops/data.ts (prepareBatch and
// resizeBilinear against the Float64 CPU reference of tests/cpu_ref/data.ts, in f32, f16 and
// ranges), the checks of tests/ops/data_checks.ts shared with `deno task test:browser` (PyTorch
// fixtures, the exact u8/255 gather, the augmentations: crop, flip, resized crop,
// reproducibility; labels; odd batch sizes), and validation here. Tensors past one binding:
// data_kernels_big_test.ts; f16 bit for bit against the f32 kernels rounded once:
// data_kernels_f16_test.ts.
import assert from "node:assert/strict";
import type { Tensor } from "../gpu/mod.ts";
import {
  checkPrepareBatch,
  checkResize,
  prepareBatch,
  resizeBilinear,
} from "../kernels/data/index.ts";
import { GPU_TEST, testGpu } from "./harness.ts";
import { testCheck } from "./_check.ts";
import { testOp } from "./_op.ts";
import { PREPARE_SUITES, RESIZE_SUITES } from "./ops/data.ts";
import { DATA_CHECKS } from "./ops/data_checks.ts";

for (const suite of PREPARE_SUITES) testOp(suite);
for (const suite of RESIZE_SUITES) testOp(suite);
for (const check of DATA_CHECKS) testCheck(check);

Deno.test("shape, dtype and value errors name the op and shapes", GPU_TEST, async () => {
  const gpu = await testGpu();
  const base = { batch: 2, channels: 1, srcH: 28, srcW: 28, dstH: 96, dstW: 96 };
  assert.deepEqual(checkPrepareBatch(base), [2, 1, 96, 96]);
  assert.throws(
    () => checkPrepareBatch(base, { x: [2, 1, 28, 28] }),
    (e: Error) =>
      e instanceof TypeError &&
      /prepareBatch: x has shape \[2, 1, 28, 28\], expected \[2, 1, 96, 96\]/
        .test(e.message),
  );
  assert.throws(
    () => checkPrepareBatch(base, { images: [10, 3, 28, 28] }),
    /prepareBatch: images has shape \[10, 3, 28, 28\], expected \[count, 1, 28, 28\]/,
  );
  assert.throws(
    () => checkPrepareBatch(base, { images: [10, 1, 28, 28], srcLabels: [9] }),
    /srcLabels has shape \[9\], expected \[10\]/,
  );
  assert.throws(() => checkPrepareBatch({ ...base, batch: 0 }), RangeError);
  assert.throws(() => checkPrepareBatch({ ...base, augment: { cropPadding: -1 } }), RangeError);
  assert.throws(() => checkPrepareBatch({ ...base, seed: 2 ** 32 }), RangeError);
  assert.throws(() => checkPrepareBatch({ ...base, mean: [0.5] }), /mean and std/);
  assert.throws(() => checkPrepareBatch({ ...base, mean: [0.5, 0.5], std: [1, 1] }), RangeError);
  assert.throws(() => checkPrepareBatch({ ...base, mean: [0.5], std: [0] }), RangeError);
  assert.throws(
    () =>
      checkPrepareBatch({
        ...base,
        augment: { resizedCrop: { scale: [0.5, 0.1], ratio: [1, 1] } },
      }),
    RangeError,
  );
  assert.deepEqual(checkResize({ outH: 5, outW: 6 }, [1, 2, 3, 4]), [1, 2, 5, 6]);
  assert.throws(() => checkResize({ outH: 5, outW: 6 }, [2, 3, 4]), TypeError);
  const t: Tensor[] = [];
  try {
    const images = gpu.empty([4, 1, 28, 28]); // f32: wrong dtype
    const srcLabels = gpu.empty([4], { dtype: "u8" });
    const indices = gpu.empty([2], { dtype: "u32" });
    const x = gpu.empty([2, 1, 96, 96]);
    const labels = gpu.empty([2], { dtype: "i32" });
    t.push(images, srcLabels, indices, x, labels);
    assert.throws(
      () => prepareBatch({ x, labels, images, srcLabels, indices }, base),
      (e: Error) => e instanceof TypeError && /prepareBatch: images must be u8/.test(e.message),
    );
    const y = gpu.empty([1, 1, 3, 3]);
    t.push(y);
    assert.throws(
      () => resizeBilinear({ y, x: gpu.empty([1, 1, 2, 2]) }, { outH: 4, outW: 4 }),
      /resizeBilinear: y has shape \[1, 1, 3, 3\], expected \[1, 1, 4, 4\]/,
    );
  } finally {
    for (const x of t) x.dispose();
  }
});
