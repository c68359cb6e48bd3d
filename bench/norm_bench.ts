// Benchmarks of batch normalization at ResNet-18's BatchNorm2d shapes (96x96 input: 64 channels
// at 48x48 after the stem, then 64@24x24, 128@12x12, 256@6x6, 512@3x3), LeNet-BN's BatchNorm1d,
// and LRN at AlexNet-LRN's conv1 and conv2 outputs (96@54x54, 256@26x26). Batches are reduced
// from the seed's 256 (ResNet) / 128 (AlexNet) to 64 and 16 (a full-batch iteration of the
// largest shapes takes seconds on llvmpipe; the kernels scale linearly with the batch).
// Several dispatches are recorded per `await gpu.sync()`. GB/s counts compulsory traffic:
// BN training forward reads x twice and writes y; eval reads x, writes y; backward reads dy and
// x twice and writes dx; LRN forward reads x, writes y and scale; LRN backward reads dy, x,
// scale and writes dx.
//
//   deno bench -A bench/norm_bench.ts
import { getGpu } from "../gpu/mod.ts";
import { batchNormBackward, batchNormForward } from "../kernels/batchnorm.ts";
import { lrnBackward, lrnForward, type LrnParams } from "../kernels/lrn.ts";

const gpu = await getGpu();
const BN_BATCH = 64;
const LRN_BATCH = 16;

/** Dispatches recorded per sync: enough that the ~11 ms GPU wait is amortized. */
function dispatchesFor(bytes: number): number {
  return Math.min(64, Math.max(4, Math.round(2e8 / bytes)));
}

async function bench(name: string, bytes: number, record: () => void): Promise<void> {
  const dispatches = dispatchesFor(bytes);
  const run = async () => {
    for (let i = 0; i < dispatches; i++) record();
    await gpu.sync();
  };
  await run(); // compile + warm up
  let sec = Infinity;
  for (let r = 0; r < 3; r++) {
    const t0 = performance.now();
    await run();
    sec = Math.min(sec, (performance.now() - t0) / 1000 / dispatches);
  }
  const label = `${name}: ${(sec * 1e3).toFixed(2)} ms, ${(bytes / sec / 1e9).toFixed(2)} GB/s`;
  console.log(`${label} (${gpu.description})`);
  Deno.bench(`${label} (x${dispatches} per sync)`, { n: 2, warmup: 0 }, run);
}

function fill(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = ((i * 7919) % 1000) / 500 - 1;
  return a;
}

const BN: [string, number, number, number[]][] = [
  ["ResNet BN2d 64@48x48", 64, 48 * 48, [48, 48]],
  ["ResNet BN2d 64@24x24", 64, 24 * 24, [24, 24]],
  ["ResNet BN2d 128@12x12", 128, 12 * 12, [12, 12]],
  ["ResNet BN2d 256@6x6", 256, 6 * 6, [6, 6]],
  ["ResNet BN2d 512@3x3", 512, 3 * 3, [3, 3]],
  ["LeNet-BN BN1d 120", 120, 1, []],
];

for (const [name, c, hw, spatial] of BN) {
  const n = name.includes("BN1d") ? 256 : BN_BATCH;
  const shape = [n, c, ...spatial];
  const x = gpu.tensor(fill(n * c * hw), { shape });
  const y = gpu.empty(shape), dx = gpu.empty(shape);
  const ch = (v: number) => gpu.tensor(new Float32Array(c).fill(v), { shape: [c] });
  const st = {
    saveMean: ch(0),
    saveInvStd: ch(1),
    runningMean: ch(0),
    runningVar: ch(1),
    weight: ch(1),
    bias: ch(0),
  };
  const dweight = ch(0), dbias = ch(0);
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
