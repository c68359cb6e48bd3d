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
  conv2dGeometry,
  type Conv2dKernelOptions,
  type Conv2dParams,
} from "../kernels/conv2d/index.ts";
import type { Tensor } from "../gpu/mod.ts";
import { bindingRange } from "../kernels/_binding.ts";
import { directConvForward } from "../kernels/conv2d/direct.ts";
import { planDirectConv } from "../kernels/conv2d/direct_plan.ts";
import { directShape, flippedShape } from "../kernels/conv2d/geometry.ts";
import * as shapes from "./_shapes.ts";

const gpu = await getGpu();
const results: [string, number][] = [];

function randomTensor(shape: number[]) {
  const size = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(size);
  for (let i = 0; i < size; i++) data[i] = Math.random() - 0.5;
  return gpu.tensor(data, { shape });
}

/** Random x, w and b of a convolution, its output shape, FLOPs per pass and reps per sync. */
function convSetup(p: Conv2dParams) {
  const ys = [...checkConv2d(p)];
  const [kh, kw] = typeof p.kernel === "number" ? [p.kernel, p.kernel] : p.kernel;
  const cInG = p.cIn / (p.groups ?? 1);
  const x = randomTensor([p.n, p.cIn, p.h, p.w]);
  const w = randomTensor([p.cOut, cInG, kh, kw]);
  const b = randomTensor([p.cOut]);
  const flops = 2 * ys.reduce((s, d) => s * d, 1) * cInG * kh * kw;
  const reps = Math.max(1, Math.min(200, Math.round(3e9 / flops)));
  return { ys, x, w, b, flops, reps };
}

type Pass = "fwd" | "bwd-data" | "bwd-weight";

function benchConv(
  shape: shapes.ConvShape,
  passes: Pass[],
  options: Conv2dKernelOptions = {},
): void {
  const p = { ...shape.params, ...options };
  const { ys, x, w, b, flops, reps } = convSetup(p);
  const dy = randomTensor(ys);
  const y = gpu.empty(ys);
  const dx = gpu.empty(x.shape), dw = gpu.empty(w.shape), db = gpu.empty(b.shape);
  for (const pass of passes) {
    const run = pass === "fwd"
      ? () => conv2dForward({ y, x, w, b }, p)
      : pass === "bwd-data"
      ? () => conv2dBackward({ dx, dy, x, w }, p)
      : () => conv2dBackward({ dw, db, dy, x, w }, p);
    const name = `${shape.label} ${pass}`;
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
benchConv(shapes.LENET_CONV1, ["fwd", "bwd-weight"]);
benchConv(shapes.LENET_CONV2, ALL);
// AlexNet conv1 (224x224).
benchConv(shapes.alexnetConv1(128), ["fwd", "bwd-weight"]);
benchConv(shapes.alexnetConv1(32), ["bwd-data"]);
// ResNet-18 at 96x96 (batch 32).
benchConv(shapes.RESNET18_STEM, ["fwd", "bwd-weight"]);
for (const shape of shapes.RESNET18_LAYERS) benchConv(shape, ALL);

// Variants: 1x1 convolutions as GEMMs on NCHW tensors vs the im2col path (GoogLeNet inception
// 1x1 branches at 12x12 and 3x3; the default is the former at every size).
for (const shape of shapes.GOOGLENET_1X1) {
  for (const [name, pointwiseMinPixels] of [["pointwise", 1], ["im2col", Infinity]] as const) {
    benchConv(
      { ...shape, label: `${shape.label} [${name}]` },
      ["fwd", "bwd-data"],
      { pointwiseMinPixels, direct: false },
    );
  }
}

// ------------------------------------------------------------- before / after, interleaved ----
// Each pass of a layer timed by several variants alternating inside each iteration (other work
// on the machine then hits them alike; the order alternates too), best time of each kept.

/** Pairs (or more) of variants compared, by bench name. */
const versus: string[][] = [];

type Variant = readonly [string, Conv2dKernelOptions | ((io: ConvIO) => void)];
type ConvIO = ReturnType<typeof convSetup> & {
  y: Tensor;
  dy: Tensor;
  dx: Tensor;
  dw: Tensor;
  db: Tensor;
};

function benchVs(shape: shapes.ConvShape, pass: Pass, variants: readonly Variant[]): void {
  const p = shape.params;
  const setup = convSetup(p);
  const io: ConvIO = {
    ...setup,
    y: gpu.empty(setup.ys),
    dy: randomTensor(setup.ys),
    dx: gpu.empty(setup.x.shape),
    dw: gpu.empty(setup.w.shape),
    db: gpu.empty(setup.b.shape),
  };
  const { x, w, b, y, dy, dx, dw, db, flops } = io;
  const reps = Math.max(1, Math.round(setup.reps / 4));
  const runs = variants.map(([name, v]): [string, () => void] => {
    const full = `${shape.label} ${pass} [${name}]`;
    if (typeof v === "function") return [full, () => v(io)];
    const q = { ...p, ...v };
    return [
      full,
      pass === "fwd"
        ? () => conv2dForward({ y, x, w, b }, q)
        : pass === "bwd-data"
        ? () => conv2dBackward({ dx, dy, x, w }, q)
        : () => conv2dBackward({ dw, db, dy, x, w }, q),
    ];
  });
  versus.push(runs.map(([name]) => name));
  const best = new Map<string, number>();
  let iteration = 0;
  Deno.bench({
    name: `${shape.label} ${pass}: ${variants.map(([n]) => n).join(" vs ")}, interleaved (${
      (flops / 1e9).toFixed(3)
    } GFLOP, ${reps}/sync each)`,
    n: 4,
    warmup: 1,
    async fn() {
      const order = iteration++ % 2 === 0 ? runs : [...runs].reverse();
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

/** The 1x1 layers of MobileNet v1 at 96x96 (batch 32): input size, channels in and out. */
const MOBILENET_1X1: readonly ConvShapeOf[] = (
  [
    [48, 32, 64],
    [24, 64, 128],
    [24, 128, 128],
    [12, 128, 256],
    [12, 256, 256],
    [6, 256, 512],
    [
      6,
      512,
      512,
    ],
    [3, 512, 1024],
    [3, 1024, 1024],
  ] as const
).map(([hw, cIn, cOut]) => ({
  label: `mobilenet 1x1 ${cIn}->${cOut} ${hw}x${hw} b32`,
  params: { n: 32, cIn, h: hw, w: hw, cOut, kernel: 1 },
}));
type ConvShapeOf = shapes.ConvShape;

/** The 3x3 layers (stride 1, padding 1) of GoogLeNet and ResNet-18 at 96x96, batch 8. */
const THREE_BY_THREE: readonly ConvShapeOf[] = (
  [
    ["googlenet b2", 24, 64, 192],
    ["googlenet b3", 12, 96, 128],
    ["googlenet b3", 12, 128, 192],
    ["googlenet b4", 6, 96, 208],
    ["googlenet b4", 6, 160, 320],
    ["googlenet b5", 3, 192, 384],
    ["resnet18 b2", 24, 64, 64],
    ["resnet18 b3", 12, 128, 128],
    ["resnet18 b4", 6, 256, 256],
    ["resnet18 b5", 3, 512, 512],
  ] as const
).map(([layer, hw, cIn, cOut]) => ({
  label: `${layer} ${cIn}->${cOut} k3 p1 ${hw}x${hw} b8`,
  params: { n: 8, cIn, h: hw, w: hw, cOut, kernel: 3, padding: 1 },
}));

/**
 * The direct kernel of a pass (forward, or the input gradient as the flipped convolution of dy)
 * with the blocking `planDirectConv` picks, with or without output-channel groups (`before`:
 * every accumulator live at once, as before groups existed).
 */
function directPass(p: Conv2dParams, pass: "fwd" | "bwd-data", groups: boolean) {
  const g = conv2dGeometry(p);
  const s = pass === "fwd" ? directShape(g, g.n) : flippedShape(g, g.n);
  const tile = planDirectConv(s, groups)!.tile;
  const label = `${groups ? "after" : "before"} ${JSON.stringify(tile).replaceAll('"', "")}`;
  const run = (io: ConvIO) =>
    pass === "fwd"
      ? directConvForward(gpu, s, { y: range(io.y), x: range(io.x), w: io.w, b: io.b }, { tile })
      : directConvForward(gpu, s, { y: range(io.dx), x: range(io.dy), w: io.w }, {
        tile,
        flip: true,
      });
  return [label, run] as const;
}
const range = (t: Tensor) => bindingRange(t, 0, t.size);

// (Layers whose blocking the groups leave unchanged only against im2col.)
for (const shape of THREE_BY_THREE) {
  for (const pass of ["fwd", "bwd-data"] as const) {
    const before = directPass(shape.params, pass, false);
    const after = directPass(shape.params, pass, true);
    const same = before[0].replace("before", "") === after[0].replace("after", "");
    benchVs(shape, pass, [before, ["im2col", { direct: false }], ...(same ? [] : [after])]);
  }
}

// Before: 1x1 convolutions under 64 pixels per image went to the direct kernel or im2col (the
// cost model's choice); after: one GEMM over the chunk's pixels. (From 64 pixels on both run
// GEMMs batched over images.)
for (const shape of MOBILENET_1X1) {
  if (shape.params.h * shape.params.w >= 64) continue;
  for (const pass of ALL) {
    benchVs(shape, pass, [["before", { pointwiseMinPixels: 64 }], ["after", {}]]);
  }
}

// Fused epilogue: conv + bias + ReLU in one pass vs conv then a separate activationForward (in
// place) over y, at LeNet conv2 and a ResNet-18 3x3 layer (both run the direct kernel by default
// on llvmpipe; the ResNet layer also forced onto im2col + GEMM).
// The two variants alternate inside each timed iteration (other work on the machine then hits
// both alike); the best time of each is kept, and the summary prints their ratio.
const fusedPairs: [string, string][] = [];

function benchFusedRelu(shape: shapes.ConvShape, options: Conv2dKernelOptions = {}): void {
  const params = { ...shape.params, ...options };
  const { ys, x, w, b, flops, reps } = convSetup(params);
  const y = gpu.empty(ys);
  const separate = `${shape.label} fwd [conv then relu activationForward]`;
  const fused = `${shape.label} fwd [conv+relu fused]`;
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
    name: `${shape.label} fwd+relu: fused vs separate, interleaved (${
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

benchFusedRelu(shapes.LENET_CONV2);
const resnetB2 = shapes.RESNET18_B2;
benchFusedRelu(resnetB2);
benchFusedRelu({ ...resnetB2, label: `${resnetB2.label} im2col` }, { direct: false });

globalThis.addEventListener("unload", () => {
  const best = new Map<string, number>();
  for (const [name, g] of results) best.set(name, Math.max(best.get(name) ?? 0, g));
  console.log(`\nconv2d on ${gpu.description} (best of the timed iterations):`);
  for (const [name, g] of best) {
    console.log(`  ${name.padEnd(58)} ${g.toFixed(2).padStart(7)} GFLOP/s`);
  }
  for (const names of versus) {
    const g = names.map((n) => best.get(n) ?? NaN);
    if (g.every(Number.isFinite)) {
      console.log(`  ${names.at(-1)}: ${(g.at(-1)! / g[0]).toFixed(2)}x ${names[0]}`);
    }
  }
  for (const [separate, fused] of fusedPairs) {
    const gain = (best.get(fused) ?? NaN) / (best.get(separate) ?? NaN);
    if (Number.isFinite(gain)) console.log(`  ${fused}: ${gain.toFixed(3)}x the separate pair`);
  }
});
