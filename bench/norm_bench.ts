// Benchmarks of batch normalization at ResNet-18's BatchNorm2d shapes (96x96 input: 64 channels
// at 48x48 after the stem, then 64@24x24, 128@12x12, 256@6x6, 512@3x3), MobileNet v1's (96x96:
// 32@48x48, 64@48x48, 128@24x24, 256@12x12, 512@6x6, 1024@3x3), LeNet-BN's BatchNorm1d, and LRN
// at AlexNet-LRN's conv1 and conv2 outputs (96@54x54, 256@26x26). Batches are reduced from the
// seed's 256 (ResNet, MobileNet) / 128 (AlexNet) to 64 and 16 (a full-batch iteration of the
// largest shapes takes seconds on llvmpipe; the kernels scale linearly with the batch).
// Several dispatches are recorded per `await gpu.sync()`. GB/s counts compulsory traffic:
// BN training forward reads x twice and writes y; eval reads x, writes y; backward reads dy and
// x twice and writes dx; LRN forward reads x, writes y and scale; LRN backward reads dy, x,
// scale and writes dx.
//
// BN + activation, fused (`activation: "relu"`, or LeNet-BN's "sigmoid") vs BN then the separate
// activation kernel (forward: activationForward; backward: activationBackward then
// batchNormBackward), at the ResNet-18 and MobileNet shapes (vec4 path; scalar path at 3x3) and
// LeNet-BN's (BatchNorm2d 6@24x24 and BatchNorm1d 120, batch 256), the two variants timed
// alternately in the same process. Both are reported as GB/s of the same traffic, the fused
// op's compulsory one (training forward: x twice + y = 3 tensors; eval: x + y = 2; backward: dy,
// x, y twice each + dx = 7), so the GB/s ratio is the speed ratio. The unfused chain moves 5, 4
// and 8 tensors respectively and runs one more dispatch.
//
//   deno bench -A bench/norm_bench.ts
import { getGpu } from "../gpu/mod.ts";
import { benchBytes, dispatchesFor, fill, repeated } from "./_timing.ts";
import {
  activationBackward,
  activationForward,
  type ActivationKind,
} from "../kernels/activation.ts";
import { batchNormBackward, batchNormForward } from "../kernels/batchnorm/index.ts";
import { lrnBackward, lrnForward, type LrnParams } from "../kernels/lrn.ts";

const gpu = await getGpu();
const BN_BATCH = 64;
const LRN_BATCH = 16;

function bench(name: string, bytes: number, record: () => void): Promise<void> {
  return benchBytes(gpu, name, bytes, record);
}

/**
 * Times two ways of doing the same work, alternating between them (best of 5 rounds each), and
 * reports both as GB/s of `bytes` per call and their speed ratio.
 */
async function benchPair(
  name: string,
  bytes: number,
  variants: [string, () => void][],
): Promise<void> {
  const dispatches = dispatchesFor(bytes);
  const runs = variants.map(([, record]) => repeated(gpu, record, dispatches));
  for (const run of runs) await run(); // compile + warm up
  const sec = runs.map(() => Infinity);
  for (let r = 0; r < 5; r++) {
    for (const [k, run] of runs.entries()) {
      const t0 = performance.now();
      await run();
      sec[k] = Math.min(sec[k], (performance.now() - t0) / 1000 / dispatches);
    }
  }
  variants.forEach(([variant], k) => {
    const label = `${name} ${variant}: ${(sec[k] * 1e3).toFixed(2)} ms, ` +
      `${(bytes / sec[k] / 1e9).toFixed(2)} GB/s`;
    console.log(
      `${label}${k > 0 ? ` (x${(sec[k] / sec[0]).toFixed(2)} time of ${variants[0][0]})` : ""}`,
    );
    Deno.bench(`${label} (x${dispatches} per sync)`, { n: 2, warmup: 0 }, runs[k]);
  });
}

const RESNET: [string, number, number, number[]][] = [
  ["ResNet BN2d 64@48x48", 64, 48 * 48, [48, 48]],
  ["ResNet BN2d 64@24x24", 64, 24 * 24, [24, 24]],
  ["ResNet BN2d 128@12x12", 128, 12 * 12, [12, 12]],
  ["ResNet BN2d 256@6x6", 256, 6 * 6, [6, 6]],
  ["ResNet BN2d 512@3x3", 512, 3 * 3, [3, 3]],
];
/** MobileNet's shapes other than 64@48x48 (ResNet's first). */
const MOBILENET: [string, number, number, number[]][] = [
  ["MobileNet BN2d 32@48x48", 32, 48 * 48, [48, 48]],
  ["MobileNet BN2d 128@24x24", 128, 24 * 24, [24, 24]],
  ["MobileNet BN2d 256@12x12", 256, 12 * 12, [12, 12]],
  ["MobileNet BN2d 512@6x6", 512, 6 * 6, [6, 6]],
  ["MobileNet BN2d 1024@3x3", 1024, 3 * 3, [3, 3]],
];
const BN: [string, number, number, number[]][] = [
  ...RESNET,
  ...MOBILENET,
  ["LeNet-BN BN1d 120", 120, 1, []],
];

/** Per-channel BatchNorm tensors of `c` channels: saved and running stats, affine, gradients. */
function bnState(c: number) {
  const ch = (v: number) => gpu.tensor(new Float32Array(c).fill(v), { shape: [c] });
  const st = {
    saveMean: ch(0),
    saveInvStd: ch(1),
    runningMean: ch(0),
    runningVar: ch(1),
    weight: ch(1),
    bias: ch(0),
  };
  return { st, dweight: ch(0), dbias: ch(0) };
}

for (const [name, c, hw, spatial] of BN) {
  const n = name.includes("BN1d") ? 256 : BN_BATCH;
  const shape = [n, c, ...spatial];
  const x = gpu.tensor(fill(n * c * hw), { shape });
  const y = gpu.empty(shape), dx = gpu.empty(shape);
  const { st, dweight, dbias } = bnState(c);
  const size = x.byteLength;
  const p = { n, c, hw };
  await bench(
    `${name} b${n} training forward`,
    3 * size,
    () => batchNormForward({ ...st, y, x }, { ...p, training: true }),
  );
  await bench(
    `${name} b${n} eval forward`,
    2 * size,
    () => batchNormForward({ ...st, y, x }, { ...p, training: false }),
  );
  await bench(
    `${name} b${n} backward`,
    5 * size,
    () => batchNormBackward({ dx, dweight, dbias, dy: y, x, ...st }, p),
  );
}

const LRN: [string, LrnParams][] = [
  ["AlexNet-LRN conv1 96@54x54", {
    n: LRN_BATCH,
    c: 96,
    h: 54,
    w: 54,
    size: 5,
    alpha: 1e-4,
    beta: 0.75,
    k: 2,
  }],
  ["AlexNet-LRN conv2 256@26x26", {
    n: LRN_BATCH,
    c: 256,
    h: 26,
    w: 26,
    size: 5,
    alpha: 1e-4,
    beta: 0.75,
    k: 2,
  }],
];

for (const [name, p] of LRN) {
  const shape = [p.n, p.c, p.h, p.w];
  const x = gpu.tensor(fill(p.n * p.c * p.h * p.w), { shape });
  const y = gpu.empty(shape), scale = gpu.empty(shape), dx = gpu.empty(shape);
  const size = x.byteLength;
  await bench(`LRN ${name} b${p.n} forward`, 3 * size, () => lrnForward({ y, scale, x }, p));
  await bench(
    `LRN ${name} b${p.n} backward`,
    4 * size,
    () => lrnBackward({ dx, dy: y, x, scale }, p),
  );
}

/** Name, fused activation, batch, channels, hw, spatial dims. */
type ActCase = [string, ActivationKind, number, number, number, number[]];
const BN_ACT: ActCase[] = [
  ...[...RESNET, ...MOBILENET].map(([name, c, hw, spatial]): ActCase => [
    name.replace("BN2d", "BN2d+ReLU"),
    "relu",
    BN_BATCH,
    c,
    hw,
    spatial,
  ]),
  ["LeNet-BN BN2d+sigmoid 6@24x24", "sigmoid", 256, 6, 24 * 24, [24, 24]],
  ["LeNet-BN BN1d+sigmoid 120", "sigmoid", 256, 120, 1, []],
];

for (const [name, kind, n, c, hw, spatial] of BN_ACT) {
  const shape = [n, c, ...spatial];
  const x = gpu.tensor(fill(n * c * hw), { shape });
  const dy = gpu.tensor(fill(n * c * hw).reverse(), { shape });
  const y = gpu.empty(shape), z = gpu.empty(shape), dz = gpu.empty(shape), dx = gpu.empty(shape);
  const { st, dweight, dbias } = bnState(c);
  const size = x.byteLength;
  const p = { n, c, hw };
  for (const training of [true, false]) {
    await benchPair(
      `${name} b${n} ${training ? "training" : "eval"} forward`,
      (training ? 3 : 2) * size,
      [
        ["fused", () => batchNormForward({ ...st, y, x }, { ...p, training, activation: kind })],
        [`BN then ${kind}`, () => {
          batchNormForward({ ...st, y: z, x }, { ...p, training });
          activationForward({ y, x: z }, { kind });
        }],
      ],
    );
  }
  // y: a fused BN + activation output (for ReLU about half zeros) for the backward
  batchNormForward({ ...st, y, x }, { ...p, training: true, activation: kind });
  await benchPair(`${name} b${n} backward`, 7 * size, [
    [
      "fused",
      () => batchNormBackward({ dx, dweight, dbias, dy, x, y, ...st }, { ...p, activation: kind }),
    ],
    [`${kind} then BN backward`, () => {
      activationBackward({ dx: dz, dy, y }, { kind });
      batchNormBackward({ dx, dweight, dbias, dy: dz, x, ...st }, p);
    }],
  ]);
}
