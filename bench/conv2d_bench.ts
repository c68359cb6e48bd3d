// conv2d throughput (forward, backward-data, backward-weight) at the seed models' shapes
// (deno bench -A bench/conv2d_bench.ts).
//
// Each iteration records `reps` convolutions and waits once (a GPU wait costs ~11 ms on
// llvmpipe); the best GFLOP/s (2 * MACs of the direct convolution per pass) of each bench is
// printed at the end. Batches: LeNet at d2l's 256; AlexNet conv1 at d2l's 128 for forward and
// backward-weight (its backward-data is never needed: it is the input layer) and 32 for the
// backward-data comparison; ResNet-18 at 96x96 with batch 32 instead of d2l's 256 (a full-batch
// 3x3 layer is ~5 GFLOP per pass, ~0.4 s on llvmpipe; per-image shapes are unchanged).
import { getGpu } from "../gpu/mod.ts";
import { activationForward } from "../kernels/activation.ts";
import {
  checkConv2d,
  conv2dBackward,
  conv2dForward,
  type Conv2dKernelOptions,
  type Conv2dParams,
} from "../kernels/conv2d.ts";

const gpu = await getGpu();
const results: [string, number][] = [];

function randomTensor(shape: number[]) {
  const size = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(size);
  for (let i = 0; i < size; i++) data[i] = Math.random() - 0.5;
  return gpu.tensor(data, { shape });
}

type Pass = "fwd" | "bwd-data" | "bwd-weight";

function benchConv(
  label: string,
  params: Conv2dParams,
  passes: Pass[],
  options: Conv2dKernelOptions = {},
): void {
  const p = { ...params, ...options };
  const ys = [...checkConv2d(p)];
  const [kh, kw] = typeof p.kernel === "number" ? [p.kernel, p.kernel] : p.kernel;
  const groups = p.groups ?? 1;
  const x = randomTensor([p.n, p.cIn, p.h, p.w]);
  const w = randomTensor([p.cOut, p.cIn / groups, kh, kw]);
  const b = randomTensor([p.cOut]);
  const dy = randomTensor(ys);
  const y = gpu.empty(ys);
  const dx = gpu.empty(x.shape), dw = gpu.empty(w.shape), db = gpu.empty(b.shape);
  const flops = 2 * ys.reduce((s, d) => s * d, 1) * (p.cIn / groups) * kh * kw;
  const reps = Math.max(1, Math.min(200, Math.round(3e9 / flops)));
  for (const pass of passes) {
    const run = pass === "fwd"
      ? () => conv2dForward({ y, x, w, b }, p)
      : pass === "bwd-data"
      ? () => conv2dBackward({ dx, dy, x, w }, p)
      : () => conv2dBackward({ dw, db, dy, x, w }, p);
    const name = `${label} ${pass}`;
    let best = Infinity;
    Deno.bench({
      name: `${name} (${(flops / 1e9).toFixed(2)} GFLOP, ${reps}/sync)`,
      n: 3,
      warmup: 1,
      async fn() {
        const t0 = performance.now();
        for (let r = 0; r < reps; r++) run();
        await gpu.sync();
        best = Math.min(best, (performance.now() - t0) / reps);
        results.push([name, flops / best / 1e6]);
      },
    });
  }
}

const ALL: Pass[] = ["fwd", "bwd-data", "bwd-weight"];

// LeNet (28x28, batch 256).
benchConv("lenet conv1 1->6 k5 p2 28x28 b256", {
  n: 256,
  cIn: 1,
  h: 28,
  w: 28,
  cOut: 6,
  kernel: 5,
  padding: 2,
}, ["fwd", "bwd-weight"]);
benchConv("lenet conv2 6->16 k5 14x14 b256", {
  n: 256,
  cIn: 6,
  h: 14,
  w: 14,
  cOut: 16,
  kernel: 5,
}, ALL);
// AlexNet conv1 (224x224).
benchConv("alexnet conv1 1->96 k11 s4 p1 224x224 b128", {
  n: 128,
  cIn: 1,
  h: 224,
  w: 224,
  cOut: 96,
  kernel: 11,
  stride: 4,
  padding: 1,
}, ["fwd", "bwd-weight"]);
benchConv("alexnet conv1 1->96 k11 s4 p1 224x224 b32", {
  n: 32,
  cIn: 1,
  h: 224,
  w: 224,
  cOut: 96,
  kernel: 11,
  stride: 4,
  padding: 1,
}, ["bwd-data"]);
// ResNet-18 at 96x96 (batch 32).
benchConv("resnet18 stem 1->64 k7 s2 p3 96x96 b32", {
  n: 32,
  cIn: 1,
  h: 96,
  w: 96,
  cOut: 64,
  kernel: 7,
  stride: 2,
  padding: 3,
}, ["fwd", "bwd-weight"]);
benchConv("resnet18 b2 64->64 k3 p1 24x24 b32", {
  n: 32,
  cIn: 64,
  h: 24,
  w: 24,
  cOut: 64,
  kernel: 3,
  padding: 1,
}, ALL);
benchConv("resnet18 b3 64->128 k3 s2 p1 24x24 b32", {
  n: 32,
  cIn: 64,
  h: 24,
  w: 24,
  cOut: 128,
  kernel: 3,
  stride: 2,
  padding: 1,
}, ALL);
benchConv("resnet18 b3 shortcut 64->128 k1 s2 24x24 b32", {
  n: 32,
  cIn: 64,
  h: 24,
  w: 24,
  cOut: 128,
  kernel: 1,
  stride: 2,
}, ALL);
benchConv("resnet18 b3 128->128 k3 p1 12x12 b32", {
  n: 32,
  cIn: 128,
  h: 12,
  w: 12,
  cOut: 128,
  kernel: 3,
  padding: 1,
}, ALL);
benchConv("resnet18 b4 256->256 k3 p1 6x6 b32", {
  n: 32,
  cIn: 256,
  h: 6,
  w: 6,
  cOut: 256,
  kernel: 3,
  padding: 1,
}, ALL);
benchConv("resnet18 b5 512->512 k3 p1 3x3 b32", {
  n: 32,
  cIn: 512,
  h: 3,
  w: 3,
  cOut: 512,
  kernel: 3,
  padding: 1,
}, ALL);

// Variants: 1x1 convolutions as GEMMs batched over images vs the im2col path (GoogLeNet
// inception 1x1 branches at 12x12 and 3x3; the default picks batched GEMMs from 64 pixels on).
for (const [hw, cIn, cOut] of [[12, 256, 128], [3, 832, 256]]) {
  for (const [name, pointwiseMinPixels] of [["batched", 0], ["im2col", Infinity]] as const) {
    benchConv(
      `googlenet 1x1 ${cIn}->${cOut} ${hw}x${hw} b32 [${name}]`,
      { n: 32, cIn, h: hw, w: hw, cOut, kernel: 1 },
      ["fwd", "bwd-data"],
      { pointwiseMinPixels },
    );
  }
}

// Fused epilogue: conv + bias + ReLU in one pass vs conv then a separate activationForward (in
// place) over y, at LeNet conv2 and a ResNet-18 3x3 layer (both run the direct kernel by default
// on llvmpipe; the ResNet layer also forced onto im2col + GEMM).
// The two variants alternate inside each timed iteration (other work on the machine then hits
// both alike); the best time of each is kept, and the summary prints their ratio.
const fusedPairs: [string, string][] = [];

function benchFusedRelu(
  label: string,
  convParams: Conv2dParams,
  options: Conv2dKernelOptions = {},
): void {
  const params = { ...convParams, ...options };
  const ys = [...checkConv2d(params)];
  const [kh, kw] = typeof params.kernel === "number"
    ? [params.kernel, params.kernel]
    : params.kernel;
  const cInG = params.cIn / (params.groups ?? 1);
  const x = randomTensor([params.n, params.cIn, params.h, params.w]);
  const w = randomTensor([params.cOut, cInG, kh, kw]);
  const b = randomTensor([params.cOut]);
  const y = gpu.empty(ys);
  const flops = 2 * ys.reduce((s, d) => s * d, 1) * cInG * kh * kw;
  const reps = Math.max(1, Math.min(200, Math.round(3e9 / flops)));
  const separate = `${label} fwd [conv then relu activationForward]`;
  const fused = `${label} fwd [conv+relu fused]`;
  fusedPairs.push([separate, fused]);
  const variants: [string, () => void][] = [
    [separate, () => {
      conv2dForward({ y, x, w, b }, params);
      activationForward({ y, x: y }, { kind: "relu" });
    }],
    [fused, () => conv2dForward({ y, x, w, b }, { ...params, activation: "relu" })],
  ];
  const best = new Map<string, number>();
  let iteration = 0;
  Deno.bench({
    name: `${label} fwd+relu: fused vs separate, interleaved (${
      (flops / 1e9).toFixed(2)
    } GFLOP, ${reps}/sync each)`,
    n: 10,
    warmup: 1,
    async fn() {
      const order = iteration++ % 2 === 0 ? variants : [...variants].reverse();
      for (const [name, run] of order) {
        const t0 = performance.now();
        for (let r = 0; r < reps; r++) run();
        await gpu.sync();
        const ms = (performance.now() - t0) / reps;
        best.set(name, Math.min(best.get(name) ?? Infinity, ms));
        results.push([name, flops / best.get(name)! / 1e6]);
      }
    },
  });
}

benchFusedRelu("lenet conv2 6->16 k5 14x14 b256", {
  n: 256,
  cIn: 6,
  h: 14,
  w: 14,
  cOut: 16,
  kernel: 5,
});
const resnetB2: Conv2dParams = {
  n: 32,
  cIn: 64,
  h: 24,
  w: 24,
  cOut: 64,
  kernel: 3,
  padding: 1,
};
benchFusedRelu("resnet18 b2 64->64 k3 p1 24x24 b32", resnetB2);
benchFusedRelu("resnet18 b2 64->64 k3 p1 24x24 b32 im2col", resnetB2, { direct: false });

globalThis.addEventListener("unload", () => {
  const best = new Map<string, number>();
  for (const [name, g] of results) best.set(name, Math.max(best.get(name) ?? 0, g));
  console.log(`\nconv2d on ${gpu.description} (best of the timed iterations):`);
  for (const [name, g] of best) {
    console.log(`  ${name.padEnd(58)} ${g.toFixed(2).padStart(7)} GFLOP/s`);
  }
  for (const [separate, fused] of fusedPairs) {
    const gain = (best.get(fused) ?? NaN) / (best.get(separate) ?? NaN);
    if (Number.isFinite(gain)) console.log(`  ${fused}: ${gain.toFixed(3)}x the separate pair`);
  }
});
