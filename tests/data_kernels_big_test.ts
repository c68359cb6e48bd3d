// Tests of the data kernels (kernels/data/) on tensors past one storage binding: a data set of
// CIFAR-10's train size, an x and a y larger than one binding, and ranges with the binding limit
// lowered, against the Float64 CPU reference of tests/cpu_ref/data.ts.
import assert from "node:assert/strict";
import { prepareBatch, type PrepareBatchParams, resizeBilinear } from "../kernels/data/index.ts";
import { assertClose, GPU_TEST, Rng, testGpu } from "./harness.ts";
import { prepareBatchRef, resizeBilinearRef } from "./cpu_ref/data.ts";
import { atDeviceLimit, deviceLimit, readSlices, sampleUnits, withBindingLimit } from "./big.ts";
import { checkAgainstRef, makeData, prepareTol, randomBytes, shuffled } from "./ops/data.ts";
Deno.test("a dataset larger than one storage binding (CIFAR-10 train size)", GPU_TEST, async () => {
  const gpu = await testGpu();
  const count = 50000, c = 3, h = 32, w = 32;
  const bytes = count * c * h * w; // 153.6 MB > 128 MiB
  const images = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i += 4099) images[i] = (i >>> 12) & 255; // sparse pattern, cheap
  const rng = new Rng(47);
  for (let i = 0; i < 20000; i++) images[rng.int(bytes)] = rng.int(256);
  const labels = new Uint8Array(count).map((_, i) => i % 10);
  const maxBind = gpu.limits.maxStorageBufferBindingSize;
  const straddle = Math.floor(Math.floor(maxBind / 256) * 256 / (c * h * w)); // spans the split
  const indices = [0, straddle - 1, straddle, straddle + 1, count - 1, 12345];
  const img = c * h * w;
  for (const n of indices) images.set(randomBytes(rng, img), n * img); // dense where it is read
  const p = { batch: indices.length, channels: c, srcH: h, srcW: w, dstH: 20, dstW: 36 };
  const d = { images, labels, count };
  if (bytes > maxBind) {
    await checkAgainstRef(gpu, d, indices, p, "split binding");
  } else {
    // A device with bigger bindings binds it whole; the result must be the same.
    await checkAgainstRef(gpu, d, indices, p, "single binding");
  }
  gpu.trimPool();
});

Deno.test(
  "prepareBatch into an x of 240 x 3 x 224 x 224 (144 MB, past one binding) matches the reference",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    await atDeviceLimit(gpu, async () => {
      const rng = new Rng(48);
      const d = makeData(rng, 50, 3, 32, 32);
      const p: PrepareBatchParams = {
        batch: 240,
        channels: 3,
        srcH: 32,
        srcW: 32,
        dstH: 224,
        dstW: 224,
        mean: [0.5, 0.4, 0.3],
        std: [0.2, 0.25, 0.3],
        augment: { cropPadding: 4, flip: true },
        seed: 99,
      };
      const per = 3 * 224 * 224;
      assert.ok(p.batch * per > deviceLimit(gpu));
      const check = sampleUnits(gpu, p.batch, per, 4, rng);
      const indices = shuffled(rng, d.count, p.batch);
      indices[check[2]] = d.count + 3; // out of range, in the second range: zeros and label -1
      await gpu.scope(async () => {
        const images = gpu.tensor(d.images, { shape: [d.count, 3, 32, 32] });
        const srcLabels = gpu.tensor(d.labels, { shape: [d.count] });
        const idx = gpu.tensor(new Uint32Array(indices), { shape: [p.batch] });
        const x = gpu.empty([p.batch, 3, 224, 224]);
        const labels = gpu.empty([p.batch], { dtype: "i32" });
        prepareBatch({ x, labels, images, srcLabels, indices: idx }, p);
        const wantLabels = indices.map((n) => (n < d.count ? d.labels[n] : -1));
        assert.deepEqual([...await labels.toArray()], wantLabels, "labels");
        const xs = await readSlices(gpu, x, check.map((b) => b * per), per);
        check.forEach((b, i) => {
          // The reference of the one image (the augmentation depends only on seed and index).
          const ref = prepareBatchRef(d.images, d.labels, [indices[b]], { ...p, batch: 1 });
          assertClose(xs.slices[i], ref.x, {
            ...prepareTol(p),
            what: `x[${b}] (index ${indices[b]})`,
          });
        });
      });
      gpu.trimPool();
    });
  },
);

Deno.test(
  "resizeBilinear to a y of 200 x 3 x 240 x 240 (138 MB, past one binding) matches the reference",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    await atDeviceLimit(gpu, async () => {
      const rng = new Rng(49);
      const [n, c, h, w, oh, ow] = [200, 3, 32, 31, 240, 240];
      const planes = n * c;
      assert.ok(planes * oh * ow > deviceLimit(gpu));
      const x = Float32Array.from(rng.uniformArray(planes * h * w, 0, 1));
      await gpu.scope(async () => {
        const xt = gpu.tensor(x, { shape: [n, c, h, w] });
        const yt = gpu.empty([n, c, oh, ow]);
        resizeBilinear({ y: yt, x: xt }, { outH: oh, outW: ow });
        const check = sampleUnits(gpu, planes, oh * ow, 10, rng);
        const ys = await readSlices(gpu, yt, check.map((q) => q * oh * ow), oh * ow);
        check.forEach((q, i) => {
          const ref = resizeBilinearRef(x.subarray(q * h * w, (q + 1) * h * w), 1, h, w, oh, ow);
          assertClose(ys.slices[i], ref, { rtol: 1e-5, atol: 1e-5, what: `plane ${q}` });
        });
      });
      gpu.trimPool();
    });
  },
);

Deno.test(
  "prepareBatch split into ranges (binding limit lowered) matches the reference",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(50);
    const d = makeData(rng, 13, 3, 5, 7);
    const p: PrepareBatchParams = {
      batch: 9,
      channels: 3,
      srcH: 5,
      srcW: 7,
      dstH: 6,
      dstW: 5,
      augment: { cropPadding: 1, flip: true },
      seed: 5,
    };
    // 90 elements per image: ranges of 2 images (labels and indices ranges start off-alignment).
    await withBindingLimit(200, async () => {
      const indices = shuffled(rng, d.count, p.batch);
      indices[4] = 100;
      await checkAgainstRef(gpu, d, indices, p, "ranges of 2 images");
    });
  },
);
