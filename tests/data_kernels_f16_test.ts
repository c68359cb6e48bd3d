// Tests of the data kernels (kernels/data/) in f16: prepareBatch into an f16 x against the CPU
// reference, the exact gather rounded to f16, dtype errors, and f16 outputs and inputs equal to
// the f32 kernels rounded once.
import assert from "node:assert/strict";
import { prepareBatch, type PrepareBatchParams, resizeBilinear } from "../kernels/data/index.ts";
import { F16_TEST, Rng, roundF16, tensorOf, testGpu } from "./harness.ts";
import { assertExact, withBindingLimit } from "./big.ts";
import { checkAgainstRef, makeData, runPrepare, shuffled } from "./ops/data.ts";

// ------------------------------------------------------------------ f16 ----

Deno.test("f16: prepareBatch into an f16 x matches the CPU reference", F16_TEST, async () => {
  const gpu = await testGpu();
  const rng = new Rng(60);
  const f16x = { dtype: "f16" } as const;
  const odd = makeData(rng, 13, 2, 5, 7);
  const oddP = { batch: 3, channels: 2, srcH: 5, srcW: 7, dstH: 11, dstW: 3 };
  await checkAgainstRef(gpu, odd, shuffled(rng, 13, 3), oddP, "odd 5x7->11x3", f16x);
  const rgb = makeData(rng, 9, 3, 32, 32);
  const augmented: PrepareBatchParams = {
    batch: 4,
    channels: 3,
    srcH: 32,
    srcW: 32,
    dstH: 13,
    dstW: 17,
    mean: [0.4914, 0.4822, 0.4465],
    std: [0.247, 0.243, 0.261],
    augment: { cropPadding: 2, flip: true },
    seed: 3,
  };
  const augmentedWhat = "normalize + pad-crop + flip + resize, one index out of range";
  await checkAgainstRef(gpu, rgb, [8, 1, 4, 100], augmented, augmentedWhat, f16x);
  const resizedCrop: PrepareBatchParams = {
    batch: 3,
    channels: 3,
    srcH: 32,
    srcW: 32,
    dstH: 24,
    dstW: 24,
    augment: { resizedCrop: { scale: [0.08, 1], ratio: [3 / 4, 4 / 3] } },
    seed: 77,
  };
  await checkAgainstRef(gpu, rgb, [0, 5, 7], resizedCrop, "resized crop", f16x);
  // Ranges of 2 images (binding limit lowered): f16 bases of x.
  await withBindingLimit(200, async () => {
    const indices = shuffled(rng, 13, 9);
    const ranges = {
      batch: 9,
      channels: 2,
      srcH: 5,
      srcW: 7,
      dstH: 6,
      dstW: 5,
      augment: { cropPadding: 1 },
      seed: 5,
    };
    await checkAgainstRef(gpu, odd, indices, ranges, "ranges of images", f16x);
  });
});

Deno.test(
  "f16: 28->28 without augmentation is the u8/255 gather rounded to f16",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const d = makeData(new Rng(61), 6, 1, 28, 28);
    const indices = [5, 0, 5, 2, 3];
    const got = await runPrepare(gpu, d, indices, {
      batch: 5,
      channels: 1,
      srcH: 28,
      srcW: 28,
      dstH: 28,
      dstW: 28,
    }, { dtype: "f16" });
    const plane = 28 * 28;
    for (let b = 0; b < indices.length; b++) {
      for (let i = 0; i < plane; i++) {
        // The f32 quotient (exact to f32, see the f32 test), rounded once to f16.
        const want = Math.f16round(Math.fround(d.images[indices[b] * plane + i] / 255));
        if (got.x[b * plane + i] !== want) {
          assert.fail(`b ${b} pixel ${i}: ${got.x[b * plane + i]} != ${want}`);
        }
      }
      assert.equal(got.labels[b], d.labels[indices[b]]);
    }
  },
);

Deno.test("f16: a non-float x or y throws TypeError naming the op", F16_TEST, async () => {
  const gpu = await testGpu();
  await gpu.scope(() => {
    const base = { batch: 2, channels: 1, srcH: 4, srcW: 4, dstH: 3, dstW: 3 };
    const images = gpu.empty([4, 1, 4, 4], { dtype: "u8" });
    const srcLabels = gpu.empty([4], { dtype: "u8" });
    const indices = gpu.empty([2], { dtype: "u32" });
    const labels = gpu.empty([2], { dtype: "i32" });
    const x = gpu.empty([2, 1, 3, 3], { dtype: "u32" });
    assert.throws(
      () => prepareBatch({ x, labels, images, srcLabels, indices }, base),
      (e: Error) => e instanceof TypeError && /^prepareBatch: x must be f32 or f16/.test(e.message),
    );
    const h = gpu.empty([1, 1, 2, 2], { dtype: "f16" });
    assert.throws(
      () =>
        resizeBilinear({ y: gpu.empty([1, 1, 4, 4], { dtype: "i32" }), x: h }, {
          outH: 4,
          outW: 4,
        }),
      (e: Error) =>
        e instanceof TypeError && /^resizeBilinear: y must be f32 or f16/.test(e.message),
    );
    assert.throws(
      () =>
        resizeBilinear({ y: h, x: gpu.empty([1, 1, 2, 2], { dtype: "u32" }) }, {
          outH: 2,
          outW: 2,
        }),
      (e: Error) =>
        e instanceof TypeError && /^resizeBilinear: x must be f32 or f16/.test(e.message),
    );
    // Shapes are still checked across dtypes.
    assert.throws(
      () => resizeBilinear({ y: h, x: gpu.empty([1, 1, 2, 2]) }, { outH: 4, outW: 4 }),
      /resizeBilinear: y has shape \[1, 1, 2, 2\], expected \[1, 1, 4, 4\]/,
    );
  });
  await gpu.sync();
});

Deno.test(
  "f16: prepareBatch and resizeBilinear with f16 outputs/inputs equal the f32 kernels, rounded once",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(63);
    const d = makeData(rng, 9, 3, 32, 32);
    const p: PrepareBatchParams = {
      batch: 4,
      channels: 3,
      srcH: 32,
      srcW: 32,
      dstH: 24,
      dstW: 20,
      mean: [0.5, 0.4, 0.3],
      std: [0.2, 0.25, 0.3],
      augment: { flip: true, resizedCrop: { scale: [0.2, 1], ratio: [3 / 4, 4 / 3] } },
      seed: 9,
    };
    const indices = [3, 8, 0, 12];
    const a = await runPrepare(gpu, d, indices, p);
    const h = await runPrepare(gpu, d, indices, p, { dtype: "f16" });
    assertExact(h.x, Float64Array.from(a.x, (v) => Math.f16round(v)), "prepareBatch f16 x");
    const xs = roundF16(rng.normalArray(2 * 3 * 7 * 5)); // f16-representable
    const shape = [2, 3, 7, 5];
    const out = await gpu.scope(async () => {
      const res: ArrayLike<number>[] = [];
      const mixes = [["f32", "f32"], ["f16", "f16"], ["f16", "f32"], ["f32", "f16"]] as const;
      for (const [yd, xd] of mixes) {
        const x = tensorOf(gpu, xs, { dtype: xd, shape });
        const y = gpu.empty([2, 3, 13, 4], { dtype: yd });
        resizeBilinear({ y, x }, { outH: 13, outW: 4 });
        res.push(await y.toArray());
      }
      return res;
    });
    const rounded = Float64Array.from(out[0], (v) => Math.f16round(v));
    assertExact(out[1], rounded, "resize f16 <- f16");
    assertExact(out[2], rounded, "resize f16 <- f32");
    assertExact(out[3], out[0], "resize f32 <- f16");
  },
);
