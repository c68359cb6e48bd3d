// Tests of conv2d (kernels/conv2d/): the suites of tests/ops/conv2d_suites.ts (the GPU against the
// Float64 CPU reference in f32 and f16 mixes on every path, with both GEMM kernel families,
// accumulation, chunks of images, fused activations and channel slices; the CPU backward vs
// finite differences), the CPU reference against PyTorch values, AlexNet conv1 past one binding,
// the chunk plans, errors. Past ~500 lines only for the PyTorch values (one a line, as formatted).
import assert from "node:assert/strict";
import {
  checkConv2d,
  conv2dBackward,
  conv2dForward,
  type Conv2dParams,
} from "../kernels/conv2d/index.ts";
import { conv2dChunkPlan } from "../kernels/conv2d/cost.ts";
import { adapterProfile } from "../kernels/_adapter.ts";
import type { ActivationKind } from "../kernels/activation.ts";
import { conv2dBackwardRef, conv2dRef } from "./cpu_ref/conv2d.ts";
import { assertClose, f32, GPU_TEST, Rng, testGpu } from "./harness.ts";
import { testOp } from "./_op.ts";
import { conv2dShapes, conv2dTol } from "./ops/conv2d.ts";
import { CONV2D_SUITES } from "./ops/conv2d_suites.ts";

for (const suite of CONV2D_SUITES) testOp(suite);

const count = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

// --------------------------------------------------------- the CPU reference itself ----

// Inputs defined by formulas; outputs computed by PyTorch 1.13 (float64) with
// torch.nn.functional.conv2d and autograd of sum(dy * y).
const gen = (n: number, f: (i: number) => number) =>
  Float64Array.from({ length: n }, (_, i) => f(i));
const TORCH = [
  {
    p: {
      n: 1,
      cIn: 4,
      h: 6,
      w: 5,
      cOut: 4,
      kernel: [3, 2],
      stride: [2, 1],
      padding: [2, 1],
      dilation: [2, 1],
      groups: 2,
    } as Conv2dParams,
    y: [
      0.36550866,
      0.94689776,
      0.88355276,
      0.67355398,
      0.34532377,
      0.066133696,
      -0.24212361,
      -0.10531891,
      0.29543321,
      0.62913077,
      0.85060936,
      0.32785247,
      -0.7846814,
      -1.1359676,
      -1.0720214,
      -0.89005121,
      -0.61468583,
      -0.41981943,
      0.44572863,
      1.0229316,
      0.94605015,
      0.72759071,
      0.39712074,
      0.14346613,
      -0.13413446,
      0.0064411108,
      0.41198561,
      0.74823526,
      0.96968025,
      0.44943499,
      -0.70160323,
      -1.0803602,
      -0.99517207,
      -0.78882656,
      -0.4892516,
      -0.30228247,
      -0.50696229,
      -1.0594076,
      -0.89012098,
      -0.60036065,
      -0.22934432,
      -0.091181266,
      -0.099960359,
      -0.35348054,
      -0.72760836,
      -1.0032578,
      -1.143121,
      -0.58215591,
      0.59654534,
      0.97563069,
      0.79704086,
      0.51057529,
      0.15500575,
      0.088415001,
      -0.37570627,
      -0.91454742,
      -0.7363418,
      -0.44494124,
      -0.079785443,
      0.03358109,
      -0.0060051603,
      -0.2640946,
      -0.63740741,
      -0.9109156,
      -1.0476011,
      -0.49578415,
      0.70093297,
      1.0972555,
      0.8972385,
      0.58931896,
      0.21517239,
      0.16189447,
    ],
    dx: [
      1.6340046,
      1.6190456,
      1.4688765,
      1.1960381,
      0.82331597,
      0,
      0,
      0,
      0,
      0,
      0.082811365,
      -0.74175146,
      -1.504369,
      -2.1413532,
      -2.5995082,
      0,
      0,
      0,
      0,
      0,
      -1.4227314,
      -1.4400198,
      -1.337049,
      -1.1224181,
      -0.81405166,
      0,
      0,
      0,
      0,
      0,
      -1.6198213,
      -1.5871859,
      -1.422001,
      -1.1380615,
      -0.75908006,
      0,
      0,
      0,
      0,
      0,
      -0.022745771,
      0.80390095,
      1.5634121,
      2.1923592,
      2.6382174,
      0,
      0,
      0,
      0,
      0,
      1.4482682,
      1.4454164,
      1.3218547,
      1.087902,
      0.76309605,
      0,
      0,
      0,
      0,
      0,
      -0.76495588,
      -0.34273151,
      0.10811514,
      0.54993285,
      0.94582443,
      0,
      0,
      0,
      0,
      0,
      2.5553725,
      2.8493562,
      2.9053837,
      2.7187761,
      2.3051174,
      0,
      0,
      0,
      0,
      0,
      0.79744939,
      0.39683896,
      -0.036912382,
      -0.46758109,
      -0.85920105,
      0,
      0,
      0,
      0,
      0,
      0.69810948,
      0.27474601,
      -0.17156212,
      -0.60354272,
      -0.9851201,
      0,
      0,
      0,
      0,
      0,
      -2.585946,
      -2.8639976,
      -2.9028704,
      -2.6993179,
      -2.2703393,
      0,
      0,
      0,
      0,
      0,
      -0.74913315,
      -0.33630934,
      0.10460042,
      0.53677476,
      0.92412183,
      0,
      0,
      0,
      0,
      0,
    ],
    dw: [
      4.0379727,
      4.7200471,
      -1.4443224,
      -2.4973751,
      -2.5099642,
      -0.99209091,
      -1.500815,
      -1.7698902,
      -2.8336961,
      -2.4408225,
      -0.49391756,
      -0.17018582,
      4.5626275,
      3.7765466,
      -4.1046553,
      -4.1135255,
      3.0984508,
      4.2831805,
      -1.7433848,
      -1.4567976,
      -0.53837402,
      0.32569171,
      0.68624875,
      0.92835956,
      -0.4381892,
      1.1222768,
      3.0277814,
      2.0765715,
      -5.2801696,
      -4.9324887,
      0.10272175,
      -0.11965476,
      -1.6790909,
      -2.3245469,
      -2.2618439,
      -2.1010061,
      4.5000749,
      5.1713053,
      -1.0488655,
      -2.1626181,
      -2.1778976,
      -0.7056322,
      -0.61657172,
      -0.72250605,
      -3.0030634,
      -2.8059003,
      -0.89655904,
      -0.26162392,
    ],
    db: [1.2901509, 3.4781223, 2.0912161, -1.4450801],
  },
  {
    p: { n: 2, cIn: 1, h: 9, w: 8, cOut: 2, kernel: 2, stride: 3 } as Conv2dParams,
    y: [
      0.067946358,
      0.49929811,
      0.15395556,
      -0.093497671,
      -0.77318803,
      -0.81625164,
      -0.65011697,
      0.081131269,
      0.50013348,
      -0.24655498,
      0.058085039,
      0.18714365,
      0.15450812,
      -0.10973759,
      -0.36316799,
      -0.38877728,
      -0.24142903,
      0.063001185,
      0.46341588,
      -0.10768272,
      -0.781316,
      -0.88464579,
      -0.63903856,
      0.094198682,
      0.3076603,
      0.45865149,
      -0.12190636,
      0.13944102,
      0.1516498,
      -0.11564305,
      -0.22078293,
      -0.38901411,
      -0.23624398,
      -0.13284366,
      0.14270444,
      0.1486863,
    ],
    dx: [
      0.087852371,
      0.026314586,
      0,
      0.2934164,
      0.26574691,
      0,
      0.47447657,
      0.48298612,
      -0.042443549,
      -0.099555775,
      0,
      0.16516023,
      0.019255918,
      0,
      0.35897111,
      0.13645951,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0.61591213,
      0.65989007,
      0,
      0.70591148,
      0.78168512,
      0,
      0.73695858,
      0.83819988,
      0.52280351,
      0.24226705,
      0,
      0.6429754,
      0.32784233,
      0,
      0.70945098,
      0.38603877,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0.70646061,
      0.82471469,
      0,
      0.61696453,
      0.74235571,
      0,
      0.47594435,
      0.59800095,
      0.71667871,
      0.41199623,
      0,
      0.66405499,
      0.40354696,
      0,
      0.55597454,
      0.36139658,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      -0.59673799,
      -0.72230402,
      0,
      -0.4481606,
      -0.5686475,
      0,
      -0.26215631,
      -0.36750196,
      -0.64968004,
      -0.39879304,
      0,
      -0.53310557,
      -0.35128701,
      0,
      -0.37201026,
      -0.27444421,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      -0.054258762,
      -0.1356655,
      0,
      0.15817006,
      0.10750069,
      0,
      0.35738975,
      0.34168926,
      -0.17984754,
      -0.17468196,
      0,
      0.027334657,
      -0.060331623,
      0,
      0.23223408,
      0.059057143,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0.52676301,
      0.54734259,
      0,
      0.65214511,
      0.70728611,
      0,
      0.7230651,
      0.80816257,
      0.4177391,
      0.17351391,
      0,
      0.5683578,
      0.27348015,
      0,
      0.67151166,
      0.35060744,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
    ],
    dw: [
      0.41492783,
      0.76687658,
      -0.2183135,
      -0.60441643,
      -0.044174137,
      -0.59329339,
      -0.23228369,
      0.32935091,
    ],
    db: [9.2176314, -4.4493582],
  },
];

Deno.test("conv2d reference: matches PyTorch forward and backward", () => {
  for (const t of TORCH) {
    const s = conv2dShapes(t.p);
    assert.deepEqual(checkConv2d(t.p), s.y);
    const x = gen(count(s.x), (i) => Math.sin(0.37 * i + 0.1));
    const w = gen(count(s.w), (i) => 0.5 * Math.cos(0.53 * i));
    const b = gen(t.p.cOut, (i) => 0.1 * i - 0.2);
    const dy = gen(count(s.y), (i) => Math.sin(0.29 * i + 0.3));
    const close = { rtol: 1e-6, atol: 1e-7 };
    assertClose(conv2dRef(t.p, x, w, b), t.y, { ...close, what: "ref y vs torch" });
    const g = conv2dBackwardRef(t.p, x, w, dy);
    assertClose(g.dx, t.dx, { ...close, what: "ref dx vs torch" });
    assertClose(g.dw, t.dw, { ...close, what: "ref dw vs torch" });
    assertClose(g.db, t.db, { ...close, what: "ref db vs torch" });
  }
});

// ------------------------------------------------ AlexNet conv1: chunks past one binding ----

const ALEX1: Conv2dParams = {
  n: 128,
  cIn: 1,
  h: 224,
  w: 224,
  cOut: 96,
  kernel: 11,
  stride: 4,
  padding: 1,
};

Deno.test(
  "conv2d chunk plan: AlexNet conv1 at batch 128 stays under the binding limit",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const limit = gpu.limits.maxStorageBufferBindingSize;
    const plan = conv2dChunkPlan(adapterProfile(gpu), ALEX1);
    const P = 54 * 54;
    assert.equal(plan.colElements, plan.imagesPerChunk * 121 * P);
    assert.ok(plan.colElements * 4 <= limit);
    assert.ok(plan.imagesPerChunk * 96 * P * 4 <= limit, "y range of a chunk fits a binding");
    assert.equal(plan.chunks, Math.ceil(128 / plan.imagesPerChunk));
    assert.ok(plan.chunks >= 2, "im2col of the whole batch (181 MB) would not fit");
    // A small artificial limit gives more, smaller chunks.
    const small = conv2dChunkPlan(adapterProfile(gpu), ALEX1, { maxChunkBytes: 8 << 20 });
    assert.ok(small.colElements * 4 <= 8 << 20 && small.chunks > plan.chunks);
  },
);

Deno.test(
  "conv2d: AlexNet conv1 (1->96, k11, s4, p1) at batch 128, 224x224",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const p = ALEX1;
    const s = conv2dShapes(p);
    const rng = new Rng(80);
    const imgSize = 224 * 224;
    const xData = new Float32Array(count(s.x));
    for (let i = 0; i < xData.length; i++) xData[i] = rng.uniform(-1, 1);
    const wData = f32(rng.uniformArray(count(s.w), -0.1, 0.1));
    const bData = f32(rng.uniformArray(96));
    const x = gpu.tensor(xData, { shape: s.x });
    const w = gpu.tensor(wData, { shape: s.w });
    const b = gpu.tensor(bData, { shape: [96] });
    const y = gpu.empty(s.y); // 143 MB: larger than one binding may be
    assert.ok(y.byteLength > gpu.limits.maxStorageBufferBindingSize);
    conv2dForward({ y, x, w, b }, p);
    const yData = await y.toArray();
    y.dispose();
    const one = { ...p, n: 1 };
    const outPer = 96 * 54 * 54;
    const t = conv2dTol(121);
    for (const img of [0, 61, 127]) {
      const xi = xData.subarray(img * imgSize, (img + 1) * imgSize);
      const ref = conv2dRef(one, xi, wData, bData);
      assertClose(yData.subarray(img * outPer, (img + 1) * outPer), ref, {
        ...t,
        what: `y image ${img}`,
      });
    }
    // dw and db with dy non-zero on the first and the last image only (different chunks).
    const dyData = new Float32Array(count(s.y));
    for (const img of [0, 127]) {
      for (let i = img * outPer; i < (img + 1) * outPer; i++) dyData[i] = rng.uniform(-1, 1);
    }
    const dy = gpu.tensor(dyData, { shape: s.y });
    const dw = gpu.empty(s.w), db = gpu.empty([96]);
    conv2dBackward({ dw, db, dy, x, w }, p);
    const refW = new Float64Array(count(s.w)), refB = new Float64Array(96);
    for (const img of [0, 127]) {
      const g = conv2dBackwardRef(
        one,
        xData.subarray(img * imgSize, (img + 1) * imgSize),
        wData,
        dyData.subarray(img * outPer, (img + 1) * outPer),
      );
      g.dw.forEach((v, i) => refW[i] += v);
      g.db.forEach((v, i) => refB[i] += v);
    }
    const tw = conv2dTol(2 * 54 * 54);
    assertClose(await dw.toArray(), refW, { ...tw, what: "alexnet conv1 dw" });
    assertClose(await db.toArray(), refB, { ...tw, what: "alexnet conv1 db" });
    for (const tt of [x, w, b, dy, dw, db]) tt.dispose();
  },
);

// ------------------------------------------------------------------------- fusions ----

Deno.test(
  "conv2d fusions: bad offsets, outputs that do not fit, unknown activations",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const p: Conv2dParams = { n: 2, cIn: 3, h: 8, w: 8, cOut: 4, kernel: 3, padding: 1 };
    const x = gpu.zeros([2, 3, 8, 8]), w = gpu.zeros([4, 3, 3, 3]);
    const y = gpu.zeros([2, 10, 8, 8]);
    for (const yChannelOffset of [-1, 1.5, NaN]) {
      assert.throws(
        () => conv2dForward({ y, x, w }, { ...p, yChannelOffset }),
        (e: Error) => e instanceof RangeError && /conv2d: yChannelOffset/.test(e.message),
      );
    }
    assert.throws(
      () => conv2dForward({ y, x, w }, { ...p, yChannelOffset: 7 }),
      (e: Error) =>
        e instanceof TypeError &&
        /conv2d: y has shape \[2, 10, 8, 8\], expected \[2, 11, 8, 8\] or more/.test(e.message),
    );
    for (const shape of [[2, 10, 8, 7], [1, 10, 8, 8], [2, 80, 8]]) {
      assert.throws(
        () => conv2dForward({ y: gpu.zeros(shape), x, w }, { ...p, yChannelOffset: 0 }),
        (e: Error) => e instanceof TypeError && /conv2d: y has shape/.test(e.message),
      );
    }
    // Without an offset y must be exactly [n, cOut, oh, ow].
    assert.throws(
      () => conv2dForward({ y, x, w }, p),
      (e: Error) =>
        e instanceof TypeError &&
        /conv2d: y has shape \[2, 10, 8, 8\], expected \[2, 4, 8, 8\]/.test(e.message),
    );
    assert.throws(
      () =>
        conv2dForward({ y: gpu.zeros([2, 4, 8, 8]), x, w }, {
          ...p,
          activation: "swish" as unknown as ActivationKind,
        }),
      (e: Error) => e instanceof RangeError && /conv2d: unknown activation "swish"/.test(e.message),
    );
    // The last slice that fits is accepted.
    conv2dForward({ y, x, w }, { ...p, yChannelOffset: 6 });
  },
);

// ----------------------------------------------------------------------- errors ----

Deno.test("conv2d: errors name the op and both shapes", GPU_TEST, async () => {
  const gpu = await testGpu();
  const p: Conv2dParams = { n: 2, cIn: 3, h: 8, w: 8, cOut: 4, kernel: 3, padding: 1 };
  const x = gpu.zeros([2, 3, 8, 8]), w = gpu.zeros([4, 3, 3, 3]), y = gpu.zeros([2, 4, 8, 8]);
  assert.throws(
    () => conv2dForward({ y, x, w: gpu.zeros([4, 3, 5, 5]) }, p),
    (e: Error) =>
      e instanceof TypeError &&
      /conv2d: w has shape \[4, 3, 5, 5\], expected \[4, 3, 3, 3\]/.test(e.message),
  );
  assert.throws(
    () => conv2dForward({ y: gpu.zeros([2, 4, 6, 6]), x, w }, p),
    (e: Error) =>
      e instanceof TypeError &&
      /conv2d: y has shape \[2, 4, 6, 6\], expected \[2, 4, 8, 8\]/.test(e.message),
  );
  assert.throws(
    () => conv2dBackward({ dx: gpu.zeros([2, 3, 8]), dy: y, x, w }, p),
    (e: Error) =>
      e instanceof TypeError &&
      /conv2d: dx has shape \[2, 3, 8\], expected \[2, 3, 8, 8\]/.test(e.message),
  );
  assert.throws(
    () => checkConv2d({ ...p, groups: 2 }),
    (e: Error) => e instanceof RangeError && /conv2d: groups 2/.test(e.message),
  );
  assert.throws(
    () => checkConv2d({ ...p, h: 2, padding: 0 }),
    (e: Error) => e instanceof RangeError && /conv2d/.test(e.message),
  );
  assert.throws(() => checkConv2d({ ...p, kernel: 0 }), RangeError);
  assert.throws(() => checkConv2d({ ...p, stride: [1, 0] }), RangeError);
  assert.throws(() => checkConv2d({ ...p, padding: -1 }), RangeError);
  assert.throws(() => checkConv2d({ ...p, n: 0 }), RangeError);
  assert.deepEqual(checkConv2d({ n: 256, cIn: 1, h: 28, w: 28, cOut: 6, kernel: 5, padding: 2 }), [
    256,
    6,
    28,
    28,
  ]);
  assert.deepEqual(checkConv2d(ALEX1), [128, 96, 54, 54]);
});

Deno.test("conv2d f16 chunk plan: f16 chunks hold more images", GPU_TEST, async () => {
  const gpu = await testGpu();
  // Half the bytes per element: twice the images per chunk where the bytes bound them.
  const f32Plan = conv2dChunkPlan(adapterProfile(gpu), ALEX1);
  const f16Plan = conv2dChunkPlan(adapterProfile(gpu), ALEX1, { dtype: "f16" });
  assert.ok(f16Plan.imagesPerChunk >= 2 * f32Plan.imagesPerChunk - 1, JSON.stringify(f16Plan));
  assert.ok(f16Plan.colElements * 2 <= gpu.limits.maxStorageBufferBindingSize);
  // 10 images' im2col in f32 (121 * 54 * 54 * 4 bytes each): 20 images' in f16.
  const small = { maxChunkBytes: 10 * 121 * 54 * 54 * 4 };
  assert.equal(
    conv2dChunkPlan(adapterProfile(gpu), ALEX1, { ...small, dtype: "f16" }).imagesPerChunk,
    2 * conv2dChunkPlan(adapterProfile(gpu), ALEX1, small).imagesPerChunk,
  );
});

Deno.test("conv2d: a non-float tensor in a float slot is a TypeError", GPU_TEST, async () => {
  const gpu = await testGpu();
  const p: Conv2dParams = { n: 2, cIn: 3, h: 8, w: 8, cOut: 4, kernel: 3, padding: 1 };
  const x = gpu.zeros([2, 3, 8, 8]), w = gpu.zeros([4, 3, 3, 3]), y = gpu.zeros([2, 4, 8, 8]);
  const u32 = (shape: number[]) => gpu.empty(shape, { dtype: "u32" });
  const isType = (name: string) => (e: Error) =>
    e instanceof TypeError && new RegExp(`conv2d: ${name} must be f32 or f16`).test(e.message);
  assert.throws(() => conv2dForward({ y, x: u32([2, 3, 8, 8]), w }, p), isType("x"));
  assert.throws(() => conv2dForward({ y, x, w: u32([4, 3, 3, 3]) }, p), isType("w"));
  assert.throws(() => conv2dForward({ y, x, w, b: u32([4]) }, p), isType("b"));
  assert.throws(() => conv2dForward({ y: u32([2, 4, 8, 8]), x, w }, p), isType("y"));
  const wide = gpu.empty([2, 6, 8, 8], { dtype: "i32" });
  assert.throws(() => conv2dForward({ y: wide, x, w }, { ...p, yChannelOffset: 1 }), isType("y"));
  assert.throws(() => conv2dBackward({ dw: u32([4, 3, 3, 3]), dy: y, x, w }, p), isType("dw"));
  assert.throws(() => conv2dBackward({ db: u32([4]), dy: y, x, w }, p), isType("db"));
  assert.throws(() => conv2dBackward({ dx: u32([2, 3, 8, 8]), dy: y, x, w }, p), isType("dx"));
  assert.throws(() => conv2dBackward({ dx: x, dy: u32([2, 4, 8, 8]), x, w }, p), isType("dy"));
});
