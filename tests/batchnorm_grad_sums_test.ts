// Tests of the batch-norm gradient sums gathered by the producer after it
// (kernels/batchnorm/grad_sums.ts, kernels/gemm/grad_sums.ts): the suites of
// tests/ops/batchnorm_grad_sums.ts (GPU vs the Float64 CPU reference, fused and unfused), and the
// pure decision whether a path fuses.
import assert from "node:assert/strict";
import { WEBGPU_DEFAULT_PROFILE } from "../kernels/_adapter.ts";
import {
  type GradSumsSink,
  MAX_GRAD_SUMS_SLOTS,
  planGradSums,
} from "../kernels/batchnorm/grad_sums.ts";
import { conv2dBackward } from "../kernels/conv2d/index.ts";
import { batchNormBackward } from "../kernels/batchnorm/index.ts";
import type { Gpu, Shape, Tensor } from "../gpu/mod.ts";
import { bnFusionMode, setBnFusionMode } from "../kernels/batchnorm/fusion_mode.ts";
import { adapterProfile } from "../kernels/_adapter.ts";
import {
  activation,
  batchNorm,
  conv2d,
  type Layer,
  linear,
  maxPool2d,
  namedParams,
  release,
  sequential,
  stateEntries,
} from "../layers/mod.ts";
import { planSteps } from "../layers/plan.ts";
import { assertClose, f64, GPU_TEST, Rng, testGpu } from "./harness.ts";
import { kernelsOf } from "./kernels_of.ts";
import { testOp } from "./_op.ts";
import { dryGpu } from "./_dry_gpu.ts";
import { GRAD_SUMS_SUITES } from "./ops/batchnorm_grad_sums.ts";

for (const suite of GRAD_SUMS_SUITES) testOp(suite);

Deno.test("gradient sums: the decision per adapter, path and mode", () => {
  const gpu = WEBGPU_DEFAULT_PROFILE;
  const cpu = { ...gpu, isCpu: true, mesaCpu: true, description: "llvmpipe" };
  const q = { path: "gemm-register", slots: 16, k: 512 } as const;
  const direct = { path: "direct", slots: 16, k: 4096 } as const;
  // a GPU: every supported path
  assert.equal(planGradSums(gpu, q, "auto"), true);
  assert.equal(planGradSums(gpu, { ...q, k: 8 }, "auto"), true);
  assert.equal(planGradSums(gpu, direct, "auto"), true);
  // llvmpipe: only where measured no slower (the register GEMM from k = 512; not the direct one)
  assert.equal(planGradSums(cpu, q, "auto"), true);
  assert.equal(planGradSums(cpu, { ...q, k: 1024 }, "auto"), true);
  assert.equal(planGradSums(cpu, { ...q, k: 256 }, "auto"), false);
  assert.equal(planGradSums(cpu, direct, "auto"), false);
  // the shared-memory GEMM (the GPUs' kernel): every GPU; not measured on CPU adapters
  const shared = { path: "gemm-shared", slots: 16, k: 64 } as const;
  assert.equal(planGradSums(gpu, shared, "auto"), true);
  assert.equal(planGradSums(cpu, { ...shared, k: 4096 }, "auto"), false);
  // forced
  assert.equal(planGradSums(gpu, q, "off"), false);
  assert.equal(planGradSums(cpu, { ...q, k: 8 }, "on"), true);
  assert.equal(planGradSums(cpu, direct, "on"), true);
  assert.equal(planGradSums(gpu, { path: undefined, slots: 16, k: 512 }, "on"), false);
  assert.equal(planGradSums(gpu, { ...q, slots: MAX_GRAD_SUMS_SLOTS + 1 }, "on"), false);
  assert.equal(planGradSums(gpu, { ...q, slots: 0 }, "on"), false);
  // The partials [channels, slots, 2] f32 must fit one binding (128 MiB by default).
  const big = { ...q, slots: MAX_GRAD_SUMS_SLOTS };
  assert.equal(planGradSums(gpu, { ...big, channels: 1000 }, "on"), true);
  assert.equal(planGradSums(gpu, { ...big, channels: 1024 }, "on"), false);
});

Deno.test("gradient sums: the switch is per runtime and restorable", GPU_TEST, async () => {
  const rt = await testGpu();
  const before = setBnFusionMode(rt, "gradSums", "off");
  assert.equal(bnFusionMode(rt, "gradSums"), "off");
  assert.equal(
    bnFusionMode(rt, "batchStats"),
    before === "off" ? "auto" : bnFusionMode(rt, "batchStats"),
  );
  setBnFusionMode(rt, "gradSums", before);
  assert.equal(bnFusionMode(rt, "gradSums"), before);
  assert.throws(() => setBnFusionMode(rt, "gradSums", "yes" as "on"), RangeError);
});

Deno.test("gradient sums: the plan pairs a batch norm with the producer after it", () => {
  const kinds = (layers: Layer[]) =>
    planSteps(layers).map((s) => `${s.layer.kind}${s.gradSums ? "+sums" : ""}`);
  // lenet-bn's tail: Linear, BatchNorm1d + sigmoid, Linear (gathers), ...
  assert.deepEqual(
    kinds([
      linear({ inFeatures: 8, outFeatures: 6 }),
      batchNorm({ channels: 6, dims: 1 }),
      activation("sigmoid"),
      linear({ inFeatures: 6, outFeatures: 4 }),
      batchNorm({ channels: 4, dims: 1 }),
      linear({ inFeatures: 4, outFeatures: 2 }),
    ]),
    ["Linear", "BatchNorm1d", "Linear+sums", "BatchNorm1d", "Linear+sums"],
  );
  // MobileNet's separable block: the pointwise and the 3x3 conv gather (a depthwise one cannot).
  const dw = conv2d({ inChannels: 4, outChannels: 4, kernel: 3, padding: 1, groups: 4 });
  assert.deepEqual(
    kinds([
      dw,
      batchNorm({ channels: 4 }),
      activation("relu"),
      conv2d({ inChannels: 4, outChannels: 8, kernel: 1 }),
      batchNorm({ channels: 8 }),
      activation("relu"),
      conv2d({ inChannels: 8, outChannels: 8, kernel: 3, padding: 1 }),
    ]),
    ["Conv2d", "BatchNorm2d", "Conv2d+sums", "BatchNorm2d", "Conv2d+sums"],
  );
  // Something between them (a pool) or no batch norm before: nothing to gather.
  assert.deepEqual(
    kinds([
      batchNorm({ channels: 4 }),
      maxPool2d({ kernel: 2 }),
      conv2d({ inChannels: 4, outChannels: 8, kernel: 1 }),
      conv2d({ inChannels: 8, outChannels: 8, kernel: 1 }),
    ]),
    ["BatchNorm2d", "MaxPool2d", "Conv2d", "Conv2d"],
  );
});

/** Draws every parameter of `net` from `seed`, with zeroed gradients. */
function init(gpu: Gpu, net: Layer, seed: number): void {
  const rng = new Rng(seed);
  for (const [, p] of namedParams(net)) {
    p.value = gpu.tensor(Float32Array.from(rng.normalArray(p.shape.reduce((a, b) => a * b, 1))), {
      shape: p.shape,
    });
    p.grad = gpu.zeros(p.shape);
  }
  for (const e of stateEntries(net)) {
    if (e.kind === "buffer") {
      const size = e.buffer.shape.reduce((a, b) => a * b, 1);
      e.buffer.value = gpu.tensor(new Float32Array(size).fill(e.buffer.init === "ones" ? 1 : 0), {
        shape: e.buffer.shape,
      });
    }
  }
}

/** One training step of `net` on `x` (dy drawn from `seed`): the kernels and the gradients. */
async function trainStep(gpu: Gpu, net: Layer, x: Tensor, mode: "on" | "off") {
  const before = setBnFusionMode(gpu, "gradSums", mode);
  try {
    for (const [, p] of namedParams(net)) gpu.clear(p.grad!);
    const ctx = { gpu, training: true, seed: 1 };
    const f = net.forward(x, ctx);
    const dy = gpu.tensor(Float32Array.from(new Rng(5).normalArray(f.y.size)), {
      shape: f.y.shape,
    });
    let dx: Tensor | null = null;
    const kernels = kernelsOf(
      gpu,
      () => (dx = net.backward(dy, { cache: f.cache, ctx, needDx: true })),
    );
    const grads = new Map<string, Float64Array>();
    grads.set("dx", f64(await dx!.toArray()));
    for (const [k, p] of namedParams(net)) grads.set(k, f64(await p.grad!.toArray()));
    release(f.y, dy, dx);
    return { kernels, grads };
  } finally {
    setBnFusionMode(gpu, "gradSums", before);
  }
}

const NETS: [string, Shape, () => Layer][] = [
  ["Linear, BatchNorm1d + sigmoid, Linear (n 37)", [37, 9], () =>
    sequential([
      linear({ inFeatures: 9, outFeatures: 19 }),
      batchNorm({ channels: 19, dims: 1 }),
      activation("sigmoid"),
      linear({ inFeatures: 19, outFeatures: 7 }),
    ])],
  ["Conv2d 3x3, BatchNorm2d + ReLU, pointwise Conv2d (n 3, 7x7)", [3, 3, 7, 7], () =>
    sequential([
      conv2d({ inChannels: 3, outChannels: 12, kernel: 3, padding: 1 }),
      batchNorm({ channels: 12 }),
      activation("relu"),
      conv2d({ inChannels: 12, outChannels: 5, kernel: 1, bias: false }),
    ])],
  [
    "pointwise Conv2d, BatchNorm2d + ReLU6, pointwise Conv2d (n 4, 6x6)",
    [4, 8, 6, 6],
    () =>
      sequential([
        conv2d({ inChannels: 8, outChannels: 16, kernel: 1 }),
        batchNorm({ channels: 16 }),
        activation("relu6"),
        conv2d({ inChannels: 16, outChannels: 8, kernel: 1 }),
      ]),
  ],
  // ResNet's conv1, bn1 + ReLU, conv2 (its input gradient by the direct kernel where the planner
  // picks it, which gathers; im2col does not)
  [
    "Conv2d 3x3, BatchNorm2d + ReLU, Conv2d 3x3 (n 4, 16x16, 32 channels)",
    [4, 3, 16, 16],
    () =>
      sequential([
        conv2d({ inChannels: 3, outChannels: 32, kernel: 3, padding: 1 }),
        batchNorm({ channels: 32 }),
        activation("relu"),
        conv2d({ inChannels: 32, outChannels: 32, kernel: 3, padding: 1 }),
      ]),
  ],
];

for (const [label, shape, make] of NETS) {
  Deno.test(
    `gradient sums: ${label}: the fused step equals the unfused one`,
    GPU_TEST,
    async () => {
      const gpu = await testGpu();
      const net = make();
      init(gpu, net, 3);
      const x = gpu.tensor(
        Float32Array.from(new Rng(4).normalArray(shape.reduce((a, b) => a * b))),
        {
          shape,
        },
      );
      const on = await trainStep(gpu, net, x, "on");
      const off = await trainStep(gpu, net, x, "off");
      const gathers = (k: string[]) => k.filter((n) => n.includes("gradsums")).length;
      const sumPasses = (k: string[]) =>
        k.filter((n) => n.startsWith("batchnorm_grad_sums")).length;
      // Either the producer gathered or the batch norm ran its own pass (the GEMM paths always
      // gather on Mesa's CPU adapters).
      assert.equal(gathers(on.kernels) + sumPasses(on.kernels), 1, on.kernels.join(", "));
      if (adapterProfile(gpu).mesaCpu && !label.includes("Conv2d 3x3 (")) {
        assert.equal(gathers(on.kernels), 1, `${label}: ${on.kernels.join(", ")}`);
      }
      console.log(`${label}: gathered ${gathers(on.kernels)}`);
      assert.equal(gathers(off.kernels), 0);
      assert.equal(sumPasses(off.kernels), 1);
      assert.ok(on.kernels.length <= off.kernels.length);
      for (const [k, g] of off.grads) {
        const tol = k.endsWith("weight") || k.endsWith("bias") ? { rtol: 1e-4, atol: 1e-3 } : {
          rtol: 1e-4,
          atol: 1e-4,
        };
        assertClose(on.grads.get(k)!, g, { ...tol, what: `${label}: ${k}` });
      }
      x.dispose();
      for (const [, p] of namedParams(net)) release(p.value, p.grad);
      for (const e of stateEntries(net)) if (e.kind === "buffer") release(e.buffer.value);
    },
  );
}

Deno.test("gradient sums: the direct kernel never binds more than WebGPU's 8 storage buffers", () => {
  // An f16 dx whose input channels run in several dispatches binds an f32 scratch (prev) in the
  // last one; with the batch norm's activation (gy) as well, gathering would bind 9: it must not
  // gather there, and gather where the kernel stays within 8.
  const gpu = dryGpu({ ...WEBGPU_DEFAULT_PROFILE, f16: true });
  setBnFusionMode(gpu, "gradSums", "on");
  const f16 = { dtype: "f16" } as const;
  const p = { n: 2, cIn: 64, h: 28, w: 28, cOut: 128, kernel: 3, padding: 1, direct: true };
  for (const act of [undefined, "relu"] as const) {
    const x = gpu.empty([2, 64, 28, 28], f16);
    const sink: GradSumsSink = {
      source: {
        x: gpu.empty(x.shape, f16),
        mean: gpu.empty([64]),
        invStd: gpu.empty([64]),
        ...(act ? { act, y: gpu.empty(x.shape, f16) } : {}),
      },
    };
    gpu.dispatches.length = 0;
    conv2dBackward({
      x,
      w: gpu.empty([128, 64, 3, 3], f16),
      dy: gpu.empty([2, 128, 28, 28], f16),
      dx: gpu.empty(x.shape, f16),
      gradSums: sink,
    }, p);
    const flipped = gpu.dispatches.filter((d) => d.kernel.name.includes("flip"));
    assert.ok(flipped.length > 1, "dx's input channels run in several dispatches");
    for (const d of gpu.dispatches) {
      const storage = d.kernel.code.match(/var<storage/g)?.length ?? 0;
      assert.ok(storage <= 8, `${d.kernel.name} binds ${storage} storage buffers`);
    }
    assert.equal(sink.partials !== undefined, act === undefined, `gathered with act ${act}`);
  }
});

Deno.test(
  "batchNormBackward refuses gradient sums of another shape (TypeError)",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const shape = [2, 3, 2, 2], c = 3;
    const t = () => gpu.zeros(shape);
    const ch = () => gpu.zeros([c]);
    const io = { dx: t(), dweight: ch(), dbias: ch(), dy: t(), x: t(), weight: ch() };
    const saved = { saveMean: ch(), saveInvStd: ch() };
    for (
      const gradSums of [{ partials: gpu.zeros([c * 4 * 2 - 1]), tiles: 4 }, {
        partials: gpu.zeros([0]),
        tiles: 0,
      }]
    ) {
      assert.throws(
        () =>
          batchNormBackward({ ...io, ...saved, gradSums }, { n: 2, c, hw: 4, accumulate: true }),
        (e: Error) =>
          e instanceof TypeError && /batchNormBackward: gradSums holds \d+ values, expected 3/.test(
            e.message,
          ),
      );
    }
  },
);
