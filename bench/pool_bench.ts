// Benchmarks of the pooling kernels at the seed models' shapes, forward and backward:
// AlexNet / NiN max pool 3/2 after conv1..conv3 (224x224 input), ResNet / DenseNet / GoogLeNet
// max pool 3/2/1 after the stem (96x96 input), GoogLeNet's 3/1/1 branch pool, LeNet / DenseNet
// average pool 2/2, and the global average pool before the classifier. Batches are reduced from
// the seed's 128 / 256 to 32 (a full-batch iteration of the largest shapes takes seconds on
// llvmpipe; the kernels scale linearly with the batch). Several dispatches are recorded per
// `await gpu.sync()`. GB/s counts compulsory traffic: x read + y written (+ argmax written) forward,
// dy (+ argmax) read + dx written backward.
//
//   deno bench -A bench/pool_bench.ts
import { getGpu, type Tensor } from "../gpu/mod.ts";
import { benchBytes, fill } from "./_timing.ts";
import {
  avgPool2dBackward,
  avgPool2dForward,
  checkPool2d,
  globalAvgPoolBackward,
  globalAvgPoolForward,
  maxPool2dBackward,
  maxPool2dForward,
  type Pool2dParams,
} from "../kernels/pool/index.ts";

const gpu = await getGpu();
const BATCH = 32;

function bench(name: string, bytes: number, record: () => void): Promise<void> {
  return benchBytes(gpu, `${name} b${BATCH}`, bytes, record);
}

const POOLS: [string, "max" | "avg", Pool2dParams][] = [
  ["AlexNet pool1 max 3/2", "max", { n: BATCH, c: 96, h: 54, w: 54, kernel: 3, stride: 2 }],
  ["AlexNet pool2 max 3/2", "max", { n: BATCH, c: 256, h: 26, w: 26, kernel: 3, stride: 2 }],
  ["AlexNet pool3 max 3/2", "max", { n: BATCH, c: 256, h: 12, w: 12, kernel: 3, stride: 2 }],
  ["ResNet stem max 3/2/1", "max", {
    n: BATCH,
    c: 64,
    h: 48,
    w: 48,
    kernel: 3,
    stride: 2,
    padding: 1,
  }],
  ["GoogLeNet b3 branch max 3/1/1", "max", {
    n: BATCH,
    c: 192,
    h: 12,
    w: 12,
    kernel: 3,
    stride: 1,
    padding: 1,
  }],
  ["LeNet avg 2/2", "avg", { n: BATCH, c: 6, h: 28, w: 28, kernel: 2, stride: 2 }],
  ["DenseNet transition avg 2/2", "avg", { n: BATCH, c: 96, h: 24, w: 24, kernel: 2, stride: 2 }],
];

for (const [name, kind, p] of POOLS) {
  const yShape = checkPool2d(p);
  const x = gpu.tensor(fill(p.n * p.c * p.h * p.w), { shape: [p.n, p.c, p.h, p.w] });
  const y = gpu.empty(yShape);
  const dx = gpu.empty(x.shape);
  const xb = x.byteLength, yb = y.byteLength;
  if (kind === "max") {
    const argmax: Tensor = gpu.empty(yShape, { dtype: "i32" });
    await bench(`${name} forward`, xb + 2 * yb, () => maxPool2dForward({ y, argmax, x }, p));
    await bench(`${name} backward`, xb + 2 * yb, () => maxPool2dBackward({ dx, dy: y, argmax }, p));
  } else {
    await bench(`${name} forward`, xb + yb, () => avgPool2dForward({ y, x }, p));
    await bench(`${name} backward`, xb + yb, () => avgPool2dBackward({ dx, dy: y }, p));
  }
}

{
  const g = { n: BATCH, c: 512, h: 3, w: 3 }; // ResNet-18 before the classifier
  const x = gpu.tensor(fill(g.n * g.c * 9), { shape: [g.n, g.c, 3, 3] });
  const y = gpu.empty([g.n, g.c, 1, 1]);
  const dx = gpu.empty(x.shape);
  const bytes = x.byteLength + y.byteLength;
  await bench("ResNet global avg 3x3 forward", bytes, () => globalAvgPoolForward({ y, x }, g));
  await bench(
    "ResNet global avg 3x3 backward",
    bytes,
    () => globalAvgPoolBackward({ dx, dy: y }, g),
  );
}
