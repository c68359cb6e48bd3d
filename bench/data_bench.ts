// Benchmarks of the data kernels at the seed models' input sizes: prepareBatch for batch 256
// at 28->96 (GoogLeNet, ResNet, DenseNet, MobileNet) and batch 128 at 28->224 (AlexNet, VGG,
// NiN), from a Fashion-MNIST-sized dataset resident on the GPU. Several dispatches are recorded
// per `await gpu.sync()`; GB/s counts the f32 batch written, images/s the examples prepared.
//
//   deno bench -A bench/data_bench.ts
import { getGpu } from "../gpu/mod.ts";
import { prepareBatch, type PrepareBatchParams } from "../kernels/data/index.ts";

const gpu = await getGpu();
const COUNT = 10000;
const DISPATCHES = 4;

const bytes = new Uint8Array(COUNT * 28 * 28);
let s = 1;
for (let i = 0; i < bytes.length; i++) {
  s = (Math.imul(s, 1103515245) + 12345) >>> 0;
  bytes[i] = s >>> 24;
}
const images = gpu.tensor(bytes, { shape: [COUNT, 1, 28, 28] });
const srcLabels = gpu.tensor(new Uint8Array(COUNT).map((_, i) => i % 10), { shape: [COUNT] });

interface Case {
  name: string;
  p: PrepareBatchParams;
}

const CASES: Case[] = [
  { name: "b256 28->96", p: { batch: 256, channels: 1, srcH: 28, srcW: 28, dstH: 96, dstW: 96 } },
  {
    name: "b256 28->96 flip+crop4+normalize",
    p: {
      batch: 256,
      channels: 1,
      srcH: 28,
      srcW: 28,
      dstH: 96,
      dstW: 96,
      augment: { flip: true, cropPadding: 4 },
      mean: [0.286],
      std: [0.353],
    },
  },
  {
    name: "b256 28->96 resizedCrop+flip",
    p: {
      batch: 256,
      channels: 1,
      srcH: 28,
      srcW: 28,
      dstH: 96,
      dstW: 96,
      augment: { flip: true, resizedCrop: { scale: [0.08, 1], ratio: [3 / 4, 4 / 3] } },
    },
  },
  {
    name: "b256 28->96 flip+crop4+rotate15+translate0.1+scale0.9-1.1",
    p: {
      batch: 256,
      channels: 1,
      srcH: 28,
      srcW: 28,
      dstH: 96,
      dstW: 96,
      augment: { flip: true, cropPadding: 4, rotate: 15, translate: [0.1, 0.1], scale: [0.9, 1.1] },
    },
  },
  {
    name: "b128 28->224",
    p: { batch: 128, channels: 1, srcH: 28, srcW: 28, dstH: 224, dstW: 224 },
  },
  { name: "b256 28->28", p: { batch: 256, channels: 1, srcH: 28, srcW: 28, dstH: 28, dstW: 28 } },
];

function setup(p: PrepareBatchParams) {
  const idx = new Uint32Array(p.batch).map((_, i) => (i * 7919) % COUNT);
  const indices = gpu.tensor(idx, { shape: [p.batch] });
  const x = gpu.empty([p.batch, p.channels, p.dstH, p.dstW]);
  const labels = gpu.empty([p.batch], { dtype: "i32" });
  return async () => {
    for (let i = 0; i < DISPATCHES; i++) {
      prepareBatch({ x, labels, images, srcLabels, indices }, { ...p, seed: i });
    }
    await gpu.sync();
  };
}

// A timed run per case, printed as GB/s and images/s (Deno.bench below reports the times).
for (const c of CASES) {
  const run = setup(c.p);
  await run(); // compile + warm up
  const reps = 3;
  const t0 = performance.now();
  for (let r = 0; r < reps; r++) await run();
  const sec = (performance.now() - t0) / 1000 / (reps * DISPATCHES);
  const written = c.p.batch * c.p.channels * c.p.dstH * c.p.dstW * 4;
  console.log(
    `prepareBatch ${c.name}: ${(sec * 1e3).toFixed(2)} ms/batch, ` +
      `${(written / sec / 1e9).toFixed(2)} GB/s written, ` +
      `${Math.round(c.p.batch / sec)} images/s (${gpu.description})`,
  );
  Deno.bench(`prepareBatch ${c.name} (x${DISPATCHES} per sync)`, { n: 3, warmup: 1 }, run);
}
