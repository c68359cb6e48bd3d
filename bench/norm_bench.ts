// Benchmarks of batch normalization (training forward, eval forward and backward, fused with
// ReLU as in every BN of ResNet and MobileNet) at MobileNet v1's BatchNorm2d shapes at batch 32,
// 96x96 input (32@48x48, 64@48x48, 64@24x24, 128@24x24, 128@12x12, 256@12x12, 256@6x6, 512@6x6,
// 512@3x3, 1024@3x3: the 27 BNs of a step), ResNet-18's at batch 8, 96x96 (64@48x48 after the
// stem, then 64@24x24, 128@12x12, 256@6x6, 512@3x3), LeNet-BN's BatchNorm1d 120 at batch 256
// (sigmoid), and LRN at AlexNet-LRN's conv1 and conv2 outputs (96@54x54, 256@26x26, batch 16).
//
// Batch norm is reported as wall ms, GB/s of compulsory traffic (training forward: x twice + y =
// 3 tensors; eval: x + y = 2; backward: dy, x, y twice each + dx = 7) and, as the 2-core machine
// is shared, the process CPU ms per call (llvmpipe's threads run in it: the work done, whatever
// the contention); then, per model, the sum over a step's training BNs (each shape times its
// count). IMPLS lists the implementations timed alternately in one process (best of 5 rounds).
//
// The previous kernels (reductions over a flat per-channel index with a carry per step, a
// finalize pass after each reduction, an eval coefficient pass; commit 99bcdfd, kept as
// bench/_bn_legacy until commit 6eb6d40 to be timed here against the new ones), llvmpipe, 2
// cores, loaded machine, process CPU ms per step's BNs (training forward + backward):
// MobileNet b32@96 553 -> 259 (x2.14), ResNet b8@96 62 -> 30 (x2.09), LeNet-BN b256 1.3 -> 0.8.
//
//   deno bench -A bench/norm_bench.ts
import process from "node:process";
import { getGpu } from "../gpu/mod.ts";
import { benchBytes, dispatchesFor, fill, repeated } from "./_timing.ts";
import type { ActivationKind } from "../kernels/activation.ts";
import { batchNormBackward, batchNormForward } from "../kernels/batchnorm/index.ts";
import { lrnBackward, lrnForward, type LrnParams } from "../kernels/lrn.ts";

const gpu = await getGpu();
const LRN_BATCH = 16;

function bench(name: string, bytes: number, record: () => void): Promise<void> {
  return benchBytes(gpu, name, bytes, record);
}

/** Wall and process-CPU milliseconds per call of each variant (best of 5 alternating rounds). */
async function benchPair(
  name: string,
  bytes: number,
  variants: [string, () => void][],
): Promise<{ wall: number; cpu: number }[]> {
  const dispatches = dispatchesFor(bytes);
  const runs = variants.map(([, record]) => repeated(gpu, record, dispatches));
  for (const run of runs) await run(); // compile + warm up
  const best = runs.map(() => ({ wall: Infinity, cpu: Infinity }));
  for (let r = 0; r < 5; r++) {
    for (const [k, run] of runs.entries()) {
      const t0 = performance.now(), c0 = process.cpuUsage();
      await run();
      const c = process.cpuUsage(c0);
      best[k].wall = Math.min(best[k].wall, (performance.now() - t0) / dispatches);
      best[k].cpu = Math.min(best[k].cpu, (c.user + c.system) / 1000 / dispatches);
    }
  }
  variants.forEach(([variant], k) => {
    const { wall, cpu } = best[k];
    const label = `${name} ${variant}: ${wall.toFixed(2)} ms, ` +
      `${(bytes / wall / 1e6).toFixed(2)} GB/s, CPU ${cpu.toFixed(2)} ms`;
    console.log(
      `${label}${
        k > 0
          ? ` (x${(wall / best[0].wall).toFixed(2)} wall, ` +
            `x${(cpu / best[0].cpu).toFixed(2)} CPU of ${variants[0][0]})`
          : ""
      }`,
    );
    Deno.bench(`${label} (x${dispatches} per sync)`, { n: 2, warmup: 0 }, runs[k]);
  });
  return best;
}

/** Name, batch, channels, spatial dims, BNs of that shape in a step, fused activation. */
type BnShape = [string, number, number, number[], number, ActivationKind];
const MOBILENET: BnShape[] = (
  [
    [32, 48, 2],
    [64, 48, 1],
    [64, 24, 1],
    [128, 24, 3],
    [128, 12, 1],
    [256, 12, 3],
    [256, 6, 1],
    [
      512,
      6,
      11,
    ],
    [512, 3, 1],
    [1024, 3, 3],
  ] as const
).map(([c, s, k]) => [`MobileNet BN2d+ReLU ${c}@${s}x${s}`, 32, c, [s, s], k, "relu"]);
const RESNET: BnShape[] = (
  [[64, 48, 1], [64, 24, 4], [128, 12, 4], [256, 6, 4], [512, 3, 4]] as const
).map(([c, s, k]) => [`ResNet BN2d+ReLU ${c}@${s}x${s}`, 8, c, [s, s], k, "relu"]);
const LENET: BnShape[] = [["LeNet-BN BN1d+sigmoid 120", 256, 120, [], 1, "sigmoid"]];

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

/** The implementations compared (add a copy of other kernels here to time them alongside). */
const IMPLS = [["new", { batchNormForward, batchNormBackward }]] as const;

for (
  const [model, shapes] of [["MobileNet b32@96", MOBILENET], ["ResNet b8@96", RESNET], [
    "LeNet-BN b256",
    LENET,
  ]] as const
) {
  const total = IMPLS.map(() => ({ wall: 0, cpu: 0 }));
  for (const [name, n, c, spatial, count, kind] of shapes) {
    const hw = spatial.reduce((a, d) => a * d, 1);
    const shape = [n, c, ...spatial];
    const x = gpu.tensor(fill(n * c * hw), { shape });
    const dy = gpu.tensor(fill(n * c * hw).reverse(), { shape });
    const y = gpu.empty(shape), dx = gpu.empty(shape);
    const { st, dweight, dbias } = bnState(c);
    const size = x.byteLength;
    const p = { n, c, hw, activation: kind };
    const add = (r: { wall: number; cpu: number }[]) =>
      r.forEach((t, k) => {
        total[k].wall += count * t.wall;
        total[k].cpu += count * t.cpu;
      });
    for (const training of [true, false]) {
      add(
        await benchPair(
          `${name} b${n} ${training ? "training" : "eval"} forward`,
          (training ? 3 : 2) * size,
          IMPLS.map(([impl, f]) => [
            impl,
            () => f.batchNormForward({ ...st, y, x }, { ...p, training }),
          ]),
        ).then((r) => training ? r : r.map(() => ({ wall: 0, cpu: 0 }))),
      );
    }
    // y: a fused BN + activation output (for ReLU about half zeros) for the backward
    batchNormForward({ ...st, y, x }, { ...p, training: true });
    add(
      await benchPair(
        `${name} b${n} backward`,
        7 * size,
        IMPLS.map(([impl, f]) => [
          impl,
          () => f.batchNormBackward({ dx, dweight, dbias, dy, x, y, ...st }, p),
        ]),
      ),
    );
    for (const t of [x, dy, y, dx, dweight, dbias, ...Object.values(st)]) t.dispose();
  }
  console.log(
    `${model}: training BN forward + backward per step, ` +
      IMPLS.map(([impl], k) =>
        `${impl} ${total[k].wall.toFixed(1)} ms (CPU ${total[k].cpu.toFixed(1)} ms)`
      ).join(", "),
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
