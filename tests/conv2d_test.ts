// Tests of conv2d (kernels/conv2d/): the CPU reference against PyTorch values and finite
// differences, the GPU kernels against the CPU reference, accumulation, chunking, errors.
import assert from "node:assert/strict";
import {
  checkConv2d,
  conv2dBackward,
  conv2dForward,
  conv2dGeometry,
  type Conv2dKernelOptions,
  type Conv2dParams,
} from "../kernels/conv2d/index.ts";
import { conv2dChunkPlan } from "../kernels/conv2d/cost.ts";
import { adapterProfile } from "../kernels/_adapter.ts";
import type { Tensor } from "../gpu/mod.ts";
import { activationForward, type ActivationKind } from "../kernels/activation.ts";
import { activationForwardRef } from "./cpu_ref/activation.ts";
import { conv2dBackwardRef, conv2dRef } from "./cpu_ref/conv2d.ts";
import {
  assertClose,
  channelSlice,
  checkGradient,
  f16,
  F16_TEST,
  f16Tolerance,
  f32,
  GPU_TEST,
  maxAbs,
  outTol,
  Rng,
  roundF16,
  stored,
  tensorOf,
  testGpu,
} from "./harness.ts";
import { conv2dPlansOf, kernelsOf } from "./kernels_of.ts";
import type { ConvPassPlan, ConvPlan } from "../kernels/conv2d/plan.ts";

function sizes(p: Conv2dParams) {
  const g = conv2dGeometry(p);
  return {
    x: [g.n, g.cIn, g.h, g.w],
    w: [g.cOut, g.cIn / g.groups, g.kh, g.kw],
    y: [g.n, g.cOut, g.oh, g.ow],
    /** Longest reduction of any output (forward: taps; dw: pixels over the batch). */
    len: Math.max((g.cIn / g.groups) * g.kh * g.kw, g.n * g.oh * g.ow, g.cOut * g.kh * g.kw),
  };
}
const count = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** f32 tolerance for sums of `len` O(1) terms. */
const tol = (len: number) => ({ rtol: 1e-4, atol: 1e-5 + 2e-8 * len });

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
    const s = sizes(t.p);
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

Deno.test("conv2d reference: backward matches finite differences", () => {
  const configs: Conv2dParams[] = [
    { n: 2, cIn: 3, h: 5, w: 4, cOut: 2, kernel: 3, padding: 1 },
    {
      n: 1,
      cIn: 4,
      h: 7,
      w: 6,
      cOut: 4,
      kernel: [2, 3],
      stride: [2, 3],
      padding: [2, 0],
      dilation: 2,
      groups: 2,
    },
    { n: 2, cIn: 1, h: 6, w: 6, cOut: 3, kernel: 2, stride: 3 },
  ];
  const rng = new Rng(11);
  for (const p of configs) {
    const s = sizes(p);
    const x = rng.uniformArray(count(s.x));
    const w = rng.uniformArray(count(s.w));
    const b = rng.uniformArray(p.cOut);
    const dy = rng.uniformArray(count(s.y));
    const loss = (xx: Float64Array, ww: Float64Array, bb: Float64Array) =>
      conv2dRef(p, xx, ww, bb).reduce((acc, v, i) => acc + v * dy[i], 0);
    const g = conv2dBackwardRef(p, x, w, dy);
    checkGradient((v) => loss(v, w, b), x, g.dx, { what: `dx ${JSON.stringify(p)}` });
    checkGradient((v) => loss(x, v, b), w, g.dw, { what: `dw ${JSON.stringify(p)}` });
    checkGradient((v) => loss(x, w, v), b, g.db, { what: `db ${JSON.stringify(p)}` });
  }
});

// ------------------------------------------------------------------- GPU vs CPU ----

const CONFIGS: [string, Conv2dParams, boolean][] = [
  [
    "odd sizes, cIn 3, padding 1",
    { n: 2, cIn: 3, h: 9, w: 7, cOut: 5, kernel: 3, padding: 1 },
    true,
  ],
  ["stride > kernel, batch 1, cIn 1, no bias", {
    n: 1,
    cIn: 1,
    h: 11,
    w: 10,
    cOut: 4,
    kernel: 2,
    stride: 3,
  }, false],
  [
    "dilation 2, groups 2, padding > kernel/2",
    { n: 3, cIn: 4, h: 8, w: 9, cOut: 6, kernel: 3, padding: 2, dilation: 2, groups: 2 },
    true,
  ],
  ["1x1 spatial output", { n: 2, cIn: 3, h: 5, w: 5, cOut: 7, kernel: 5 }, true],
  [
    "rectangular kernel/stride/padding/dilation",
    {
      n: 2,
      cIn: 3,
      h: 13,
      w: 14,
      cOut: 8,
      kernel: [3, 5],
      stride: [2, 1],
      padding: [4, 0],
      dilation: [1, 3],
    },
    true,
  ],
  ["pointwise 1x1 (no im2col)", { n: 3, cIn: 5, h: 8, w: 9, cOut: 9, kernel: 1 }, true],
  ["depthwise (groups = channels)", {
    n: 2,
    cIn: 6,
    h: 7,
    w: 5,
    cOut: 6,
    kernel: 3,
    padding: 1,
    groups: 6,
  }, false],
  ["strided 1x1", { n: 2, cIn: 8, h: 6, w: 6, cOut: 12, kernel: 1, stride: 2 }, true],
  [
    "multiples of 4 (vec4 loads)",
    { n: 2, cIn: 16, h: 8, w: 8, cOut: 16, kernel: 3, padding: 1 },
    true,
  ],
];

function upload(p: Conv2dParams, seed: number, bias: boolean) {
  const s = sizes(p);
  const rng = new Rng(seed);
  return {
    s,
    x: rng.uniformArray(count(s.x)),
    w: rng.uniformArray(count(s.w)),
    b: bias ? rng.uniformArray(p.cOut) : undefined,
    dy: rng.uniformArray(count(s.y)),
  };
}

type Store = "f32" | "f16";

/** Storage types of every operand of a forward and backward run. */
interface Mix {
  x: Store;
  w: Store;
  b: Store;
  y: Store;
  dy: Store;
  dx: Store;
  dw: Store;
  db: Store;
}

/** Every operand f32. */
const F32: Mix = {
  x: "f32",
  w: "f32",
  b: "f32",
  y: "f32",
  dy: "f32",
  dx: "f32",
  dw: "f32",
  db: "f32",
};

/**
 * A forward and backward run with `mix`'s storage types ({@linkcode F32}, `TRAIN`, `OTHER`);
 * returns the outputs, the plans the runner ran (`plans.forward`, `plans.backward`) and the
 * kernels dispatched.
 */
async function runMix(
  p: Conv2dParams,
  data: ReturnType<typeof upload>,
  mix: Mix,
  options: Conv2dKernelOptions = {},
) {
  const gpu = await testGpu();
  const { s } = data;
  const up = (a: ArrayLike<number>, dtype: Store, shape: number[]) =>
    tensorOf(gpu, a, { dtype, shape });
  // Outputs start as NaN: every one must be overwritten.
  const nan = (d: Store, shape: number[]) => up(new Float64Array(count(shape)).fill(NaN), d, shape);
  const x = up(data.x, mix.x, s.x), w = up(data.w, mix.w, s.w);
  const b = data.b ? up(data.b, mix.b, [p.cOut]) : undefined;
  const dy = up(data.dy, mix.dy, s.y);
  const y = nan(mix.y, s.y), dx = nan(mix.dx, s.x), dw = nan(mix.dw, s.w);
  const db = nan(mix.db, [p.cOut]);
  let ran: ConvPlan[] = [];
  const kernels = kernelsOf(gpu, () => {
    ran = conv2dPlansOf(gpu, () => {
      conv2dForward({ y, x, w, b }, { ...p, ...options });
      conv2dBackward({ dx, dw, db, dy, x, w }, { ...p, ...options });
    });
  });
  assert.equal(ran.length, 2);
  const out = {
    y: await y.toArray(),
    dx: await dx.toArray(),
    dw: await dw.toArray(),
    db: await db.toArray(),
    plans: { forward: ran[0], backward: ran[1] },
    kernels,
  };
  for (const t of [x, w, b, dy, y, dx, dw, db] as (Tensor | undefined)[]) t?.dispose();
  return out;
}

function compare(
  p: Conv2dParams,
  data: ReturnType<typeof upload>,
  got: Awaited<ReturnType<typeof runMix>>,
  label: string,
): void {
  const t = tol(data.s.len);
  assertClose(got.y, conv2dRef(p, data.x, data.w, data.b), { ...t, what: `${label} y` });
  const g = conv2dBackwardRef(p, data.x, data.w, data.dy);
  assertClose(got.dx, g.dx, { ...t, what: `${label} dx` });
  assertClose(got.dw, g.dw, { ...t, what: `${label} dw` });
  assertClose(got.db, g.db, { ...t, what: `${label} db` });
}

Deno.test("conv2d GPU forward and backward vs CPU reference", GPU_TEST, async () => {
  let seed = 20;
  for (const [label, p, bias] of CONFIGS) {
    const data = upload(p, seed++, bias);
    compare(p, data, await runMix(p, data, F32), label);
  }
});

Deno.test("conv2d GPU: both GEMM kernel families", GPU_TEST, async () => {
  let seed = 40;
  for (const variant of ["register", "shared"] as const) {
    for (const [label, p, bias] of CONFIGS.filter((_, i) => i % 2 === 0)) {
      const data = upload(p, seed++, bias);
      compare(p, data, await runMix(p, data, F32, { gemm: { variant } }), `${label} (${variant})`);
    }
  }
});

Deno.test(
  "conv2d backward: accumulate adds to prior dw and db; dx is overwritten",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const p: Conv2dParams = { n: 2, cIn: 3, h: 6, w: 5, cOut: 4, kernel: 3, padding: 1, stride: 2 };
    const data = upload(p, 60, false);
    const { s } = data;
    const rng = new Rng(61);
    const priorW = rng.uniformArray(count(s.w));
    const priorB = rng.uniformArray(p.cOut);
    const x = gpu.tensor(f32(data.x), { shape: s.x });
    const w = gpu.tensor(f32(data.w), { shape: s.w });
    const dy = gpu.tensor(f32(data.dy), { shape: s.y });
    const dx = gpu.tensor(new Float32Array(count(s.x)).fill(7), { shape: s.x });
    const dw = gpu.tensor(f32(priorW), { shape: s.w });
    const db = gpu.tensor(f32(priorB), { shape: [p.cOut] });
    conv2dBackward({ dx, dw, db, dy, x, w }, { ...p, accumulate: true });
    const g = conv2dBackwardRef(p, data.x, data.w, data.dy);
    const t = tol(s.len);
    assertClose(await dw.toArray(), g.dw.map((v, i) => v + priorW[i]), { ...t, what: "dw += " });
    assertClose(await db.toArray(), g.db.map((v, i) => v + priorB[i]), { ...t, what: "db += " });
    assertClose(await dx.toArray(), g.dx, { ...t, what: "dx (overwritten)" });
    // Only dw requested, accumulated twice: twice the gradient on top of the prior.
    conv2dBackward({ dw, dy, x, w }, { ...p, accumulate: true });
    assertClose(await dw.toArray(), g.dw.map((v, i) => 2 * v + priorW[i]), {
      ...t,
      what: "dw += twice",
    });
    for (const tt of [x, w, dy, dx, dw, db]) tt.dispose();
  },
);

// --------------------------------------------------------------------- chunking ----

Deno.test("conv2d chunking: forced small chunks give the same results", GPU_TEST, async () => {
  let seed = 70;
  const configs: Conv2dParams[] = [
    { n: 5, cIn: 3, h: 9, w: 7, cOut: 5, kernel: 3, padding: 1, stride: 2 },
    { n: 4, cIn: 5, h: 8, w: 9, cOut: 9, kernel: 1 }, // pointwise path
    { n: 3, cIn: 4, h: 8, w: 9, cOut: 6, kernel: 3, padding: 2, dilation: 2, groups: 2 },
  ];
  const gpu = await testGpu();
  for (const p of configs) {
    const data = upload(p, seed++, true);
    const whole = await runMix(p, data, F32);
    // 1 byte: one image per chunk; 3000 bytes: a few images per chunk, ranges not 256-aligned.
    for (const maxChunkBytes of [1, 3000]) {
      const plan = conv2dChunkPlan(adapterProfile(gpu), p, { maxChunkBytes });
      assert.ok(plan.chunks > 1, `expected several chunks for ${JSON.stringify(p)}`);
      const chunked = await runMix(p, data, F32, { maxChunkBytes });
      // Per-element work is the same: y and dx are bit-identical; dw/db sum chunks in order.
      assert.deepEqual(chunked.y, whole.y);
      assert.deepEqual(chunked.dx, whole.dx);
      assertClose(chunked.dw, whole.dw, { ...tol(data.s.len), what: "chunked dw" });
      assertClose(chunked.db, whole.db, { ...tol(data.s.len), what: "chunked db" });
    }
    compare(p, data, whole, JSON.stringify(p));
  }
});

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
    const s = sizes(p);
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
    const t = tol(121);
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
    const tw = tol(2 * 54 * 54);
    assertClose(await dw.toArray(), refW, { ...tw, what: "alexnet conv1 dw" });
    assertClose(await db.toArray(), refB, { ...tw, what: "alexnet conv1 db" });
    for (const tt of [x, w, b, dy, dw, db]) tt.dispose();
  },
);

// ---------------------------------------- fused activation, output into a channel slice ----

const KINDS: ActivationKind[] = ["relu", "relu6", "sigmoid", "tanh"];

/** A value no convolution writes: channels outside the slice must keep it. */
const SENTINEL = -12345.5;

interface Fused {
  activation?: ActivationKind;
  /** Channel offset into a y of `channels` channels (prefilled with SENTINEL). */
  offset?: number;
  channels?: number;
}

/**
 * Runs conv2dForward with the fusions of `f` (y prefilled with SENTINEL), checks it against
 * the Float64 reference followed by the activation, that channels outside the slice are
 * untouched, and that the slice equals the unfused conv2dForward + activationForward (1 ulp).
 * Returns the whole y, the kernel names dispatched and the plan of the fused call.
 */
async function runFused(
  p: Conv2dParams,
  data: ReturnType<typeof upload>,
  f: Fused,
  options: Conv2dKernelOptions,
  label: string,
): Promise<{ y: Float32Array; kernels: string[]; plan: ConvPlan }> {
  const gpu = await testGpu();
  const { s } = data;
  const [n, cOut, oh, ow] = s.y;
  const C = f.channels ?? cOut, off = f.offset ?? 0, P = oh * ow;
  const x = gpu.tensor(f32(data.x), { shape: s.x });
  const w = gpu.tensor(f32(data.w), { shape: s.w });
  const b = data.b ? gpu.tensor(f32(data.b), { shape: [p.cOut] }) : undefined;
  const y = gpu.tensor(new Float32Array(n * C * P).fill(SENTINEL), { shape: [n, C, oh, ow] });
  const plain = gpu.tensor(new Float32Array(count(s.y)).fill(NaN), { shape: s.y });
  const fused = { activation: f.activation, yChannelOffset: f.offset };
  let plans: ConvPlan[] = [];
  const kernels = kernelsOf(gpu, () => {
    plans = conv2dPlansOf(gpu, () => conv2dForward({ y, x, w, b }, { ...p, ...options, ...fused }));
  });
  conv2dForward({ y: plain, x, w, b }, { ...p, ...options });
  if (f.activation) activationForward({ y: plain, x: plain }, { kind: f.activation });
  const got = await y.toArray();
  const separate = await plain.toArray();
  for (const t of [x, w, b, y, plain] as (Tensor | undefined)[]) t?.dispose();
  let ref = conv2dRef(p, data.x, data.w, data.b);
  if (f.activation) ref = activationForwardRef(ref, f.activation);
  // The slice, gathered image by image; everything else must still be the sentinel.
  const slice = channelSlice(got, {
    n,
    channels: C,
    offset: off,
    cOut,
    pixels: P,
    sentinel: SENTINEL,
    what: label,
  });
  assertClose(slice, ref, { ...tol(data.s.len), what: `${label} y` });
  assertClose(slice, separate, { rtol: 1.2e-7, atol: 0, what: `${label} fused vs separate` });
  return { y: got, kernels, plan: plans[0] };
}

/** Convolution data with weights in [-2, 2]: outputs spread past relu6's 6 and tanh's knee. */
function uploadWide(p: Conv2dParams, seed: number) {
  const data = upload(p, seed, true);
  return { ...data, w: data.w.map((v) => 2 * v) };
}

/**
 * `[label, params, options, the forward's path, a GEMM kernel that must run (optional)]`: the
 * paths of the forward pass, with the GEMM kernels that implement an epilogue of their own
 * (vec4 stores of C, split-K's epilogue pass).
 */
const FUSED_PATHS: [string, Conv2dParams, Conv2dKernelOptions, ConvPassPlan["path"], RegExp?][] = [
  [
    "im2col, odd sizes, stride 2",
    { n: 2, cIn: 3, h: 7, w: 9, cOut: 5, kernel: 3, padding: 1, stride: 2 },
    { direct: false },
    "im2col",
  ],
  [
    "im2col, vec4 C stores",
    { n: 2, cIn: 8, h: 8, w: 8, cOut: 8, kernel: 3, padding: 1 },
    { direct: false },
    "im2col",
    /gemm_reg.*_vc/,
  ],
  [
    "grouped, dilated",
    { n: 3, cIn: 4, h: 8, w: 9, cOut: 6, kernel: 3, padding: 2, dilation: 2, groups: 2 },
    {},
    "im2col",
  ],
  ["pointwise 1x1", { n: 3, cIn: 5, h: 8, w: 9, cOut: 9, kernel: 1 }, {}, "pointwise"],
  [
    "direct (forced)",
    { n: 2, cIn: 3, h: 9, w: 11, cOut: 5, kernel: 3, padding: 1 },
    { direct: true },
    "direct",
  ],
  [
    "im2col, split-K epilogue",
    { n: 1, cIn: 6, h: 5, w: 5, cOut: 3, kernel: 3, padding: 1 },
    { direct: false, gemm: { splitK: 2 } },
    "im2col",
    /gemm_splitk_epilogue/,
  ],
];

Deno.test(
  "conv2d activation: every kind in every path (im2col, grouped, pointwise, direct, split-K)",
  GPU_TEST,
  async () => {
    let seed = 900;
    for (const [label, p, options, path, gemmKernel] of FUSED_PATHS) {
      for (const activation of KINDS) {
        const data = uploadWide(p, seed++);
        const what = `${label} ${activation}`;
        const { kernels, plan } = await runFused(p, data, { activation }, options, what);
        assert.equal(plan.forward?.path, path, what);
        if (gemmKernel) {
          assert.ok(kernels.some((k) => gemmKernel.test(k)), `${what}: ran ${kernels.join(", ")}`);
        }
        assert.ok(
          kernels.some((k) => k.endsWith(`_${activation}`)),
          `${what}: no fused ${activation} kernel among ${kernels.join(", ")}`,
        );
      }
    }
  },
);

Deno.test(
  "conv2d yChannelOffset: writes only its channel slice in every path, with activations",
  GPU_TEST,
  async () => {
    let seed = 950;
    for (const [label, p, options, path, gemmKernel] of FUSED_PATHS) {
      // Slices at the start, in the middle and at the end of the concatenated channels.
      const cases: Fused[] = [
        { offset: 0, channels: p.cOut + 3 },
        { offset: 3, channels: p.cOut + 5, activation: "relu" },
        { offset: 2, channels: p.cOut + 2, activation: KINDS[seed % 4] },
      ];
      for (const f of cases) {
        const data = uploadWide(p, seed++);
        const what = `${label} ${JSON.stringify(f)}`;
        const { kernels, plan } = await runFused(p, data, f, options, what);
        assert.equal(plan.forward?.path, path, what);
        if (gemmKernel) {
          assert.ok(kernels.some((k) => gemmKernel.test(k)), `${what}: ran ${kernels.join(", ")}`);
        }
      }
    }
  },
);

Deno.test(
  "conv2d yChannelOffset: chunks of images give the same results and touch only the slice",
  GPU_TEST,
  async () => {
    let seed = 990;
    const configs: [Conv2dParams, Conv2dKernelOptions][] = [
      [{ n: 5, cIn: 3, h: 9, w: 7, cOut: 5, kernel: 3, padding: 1, stride: 2 }, {}],
      [{ n: 4, cIn: 5, h: 8, w: 9, cOut: 9, kernel: 1 }, {}], // pointwise
      [{ n: 3, cIn: 4, h: 8, w: 9, cOut: 6, kernel: 3, padding: 2, dilation: 2, groups: 2 }, {}],
      [{ n: 5, cIn: 2, h: 9, w: 11, cOut: 4, kernel: 3, padding: 1 }, { direct: true }],
    ];
    const gpu = await testGpu();
    for (const [p, options] of configs) {
      const data = uploadWide(p, seed++);
      const f: Fused = { offset: 3, channels: p.cOut + 4, activation: "relu6" };
      const what = JSON.stringify(p);
      const whole = await runFused(p, data, f, options, what);
      // 1 byte: one image per chunk; 3000 bytes: a few images per chunk (ranges not aligned).
      for (const maxChunkBytes of [1, 3000]) {
        const plan = conv2dChunkPlan(adapterProfile(gpu), p, { maxChunkBytes });
        assert.ok(plan.chunks > 1, `expected several chunks for ${what}`);
        const chunked = await runFused(p, data, f, { ...options, maxChunkBytes }, what);
        assert.deepEqual(chunked.y, whole.y);
      }
    }
  },
);

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

// ------------------------------------------------------------------------- f16 ----

/**
 * Training's configuration: activations and their gradients f16, weights f16 (copies of f32
 * master weights), the bias and every parameter gradient f32.
 */
const TRAIN: Mix = {
  x: "f16",
  w: "f16",
  b: "f32",
  y: "f16",
  dy: "f16",
  dx: "f16",
  dw: "f32",
  db: "f32",
};

/** Another mix: f32 activations and input gradient, f16 parameters, dy and parameter gradients. */
const OTHER: Mix = {
  x: "f32",
  w: "f16",
  b: "f16",
  y: "f32",
  dy: "f16",
  dx: "f32",
  dw: "f16",
  db: "f16",
};

/**
 * Tolerance of an output stored as `d`: f16's (its rounding, with `extra` relative headroom) or
 * the f32 one for sums of `len` terms.
 */
const tolFor = (d: Store, ref: ArrayLike<number>, len: number, extra = 0) =>
  outTol(d, ref, { extra, f32: tol(len) });

/**
 * Checks a run of `mix` against the Float64 reference fed what the tensors hold. Every f16
 * output is rounded once (an f16 dx through im2col sums its taps from an f32 dcol).
 */
function checkMix(
  p: Conv2dParams,
  data: ReturnType<typeof upload>,
  mix: Mix,
  got: Awaited<ReturnType<typeof runMix>>,
  label: string,
): void {
  const x = stored(data.x, mix.x), w = stored(data.w, mix.w), dy = stored(data.dy, mix.dy);
  const b = data.b ? stored(data.b, mix.b) : undefined;
  const refY = conv2dRef(p, x, w, b);
  const g = conv2dBackwardRef(p, x, w, dy);
  const len = data.s.len;
  // y, dw and db: f32 sums of f16 values rounded once on store.
  assertClose(got.y, refY, { ...tolFor(mix.y, refY, len), what: `${label} y` });
  assertClose(got.dx, g.dx, { ...tolFor(mix.dx, g.dx, len), what: `${label} dx` });
  assertClose(got.dw, g.dw, { ...tolFor(mix.dw, g.dw, len), what: `${label} dw` });
  assertClose(got.db, g.db, { ...tolFor(mix.db, g.db, len), what: `${label} db` });
}

/** The im2col paths in f16 (direct kernels off): window and general im2col, col2im, pointwise. */
const F16_CONFIGS: [string, Conv2dParams, boolean][] = [
  ["odd sizes, stride 2 (general im2col)", {
    n: 2,
    cIn: 3,
    h: 9,
    w: 7,
    cOut: 5,
    kernel: 3,
    padding: 1,
    stride: 2,
  }, true],
  ["window im2col, odd sizes", { n: 2, cIn: 3, h: 7, w: 9, cOut: 4, kernel: 3, padding: 1 }, true],
  ["dilation 2, groups 2, no bias", CONFIGS[2][1], false],
  CONFIGS[4], // rectangular kernel/stride/padding/dilation
  CONFIGS[5], // pointwise 1x1 (no im2col)
];

Deno.test(
  "conv2d f16 (training mix): every im2col path vs the CPU reference",
  F16_TEST,
  async () => {
    let seed = 1100;
    for (const [label, p, bias] of F16_CONFIGS) {
      const data = upload(p, seed++, bias);
      const got = await runMix(p, data, TRAIN, { direct: false });
      checkMix(p, data, TRAIN, got, `f16 ${label}`);
      assert.ok(got.y instanceof Float16Array && got.dx instanceof Float16Array);
      assert.ok(got.dw instanceof Float32Array && got.db instanceof Float32Array);
      // Every conv2d kernel touches an f16 binding here: each ran an f16 specialization.
      const own = got.kernels.filter((k) => k.startsWith("conv2d"));
      assert.ok(own.every((k) => k.includes("_h-")), `${label}: ${own.join(", ")}`);
    }
  },
);

Deno.test(
  "conv2d f16: integer data is reproduced exactly by every im2col path",
  F16_TEST,
  async () => {
    // Small integers: every product and sum is an integer well below 2048, so f16 storage with
    // f32 arithmetic must match the reference exactly (no tolerance hides a lost, misplaced or
    // wrongly converted element).
    const rng = new Rng(1190);
    const ints = (n: number, m: number) =>
      Float64Array.from({ length: n }, () => Math.round(rng.uniform(-m, m)));
    for (const [label, p, bias] of F16_CONFIGS) {
      const s = sizes(p);
      const data = {
        s,
        x: ints(count(s.x), 2),
        w: ints(count(s.w), 2),
        b: bias ? ints(p.cOut, 3) : undefined,
        dy: ints(count(s.y), 2),
      };
      const got = await runMix(p, data, TRAIN, { direct: false });
      const g = conv2dBackwardRef(p, data.x, data.w, data.dy);
      const exact = (what: string) => ({ rtol: 0, atol: 0, what: `exact ${label} ${what}` });
      assertClose(got.y, conv2dRef(p, data.x, data.w, data.b), exact("y"));
      assertClose(got.dx, g.dx, exact("dx"));
      assertClose(got.dw, g.dw, exact("dw"));
      assertClose(got.db, g.db, exact("db"));
    }
  },
);

Deno.test("conv2d f16 (another mix): f32 activations, f16 parameters", F16_TEST, async () => {
  let seed = 1120;
  for (const [label, p, bias] of F16_CONFIGS.filter((_, i) => i % 2 === 0)) {
    const data = upload(p, seed++, bias);
    const got = await runMix(p, data, OTHER, { direct: false });
    checkMix(p, data, OTHER, got, `mixed ${label}`);
    assert.ok(got.y instanceof Float32Array && got.dw instanceof Float16Array);
  }
});

Deno.test(
  "conv2d f16: fused activation and a channel slice of an f16 output, in every path",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    let seed = 1140;
    const sentinel = -1234; // exact in f16
    for (const [label, p, options, path, gemmKernel] of FUSED_PATHS) {
      if (options.gemm?.splitK) continue; // the split-K epilogue is gemm.ts's
      const activation = KINDS[seed % 4];
      const data = uploadWide(p, seed++);
      const { s } = data;
      const [n, cOut, oh, ow] = s.y;
      const off = 2, C = cOut + 3, P = oh * ow;
      const x = gpu.tensor(f16(data.x), { shape: s.x });
      const w = gpu.tensor(f16(data.w), { shape: s.w });
      const b = gpu.tensor(f32(data.b!), { shape: [cOut] });
      const y = gpu.tensor(new Float16Array(n * C * P).fill(sentinel), { shape: [n, C, oh, ow] });
      let plans: ConvPlan[] = [];
      const kernels = kernelsOf(gpu, () => {
        plans = conv2dPlansOf(
          gpu,
          () =>
            conv2dForward({ y, x, w, b }, { ...p, ...options, activation, yChannelOffset: off }),
        );
      });
      const got = await y.toArray();
      for (const t of [x, w, b, y]) t.dispose();
      const what = `f16 ${label} ${activation}`;
      assert.equal(plans[0].forward?.path, path, what);
      if (gemmKernel) {
        assert.ok(kernels.some((k) => gemmKernel.test(k)), `${what}: ran ${kernels.join(", ")}`);
      }
      const ref = activationForwardRef(
        conv2dRef(p, roundF16(data.x), roundF16(data.w), data.b),
        activation,
      );
      const slice = channelSlice(got, {
        n,
        channels: C,
        offset: off,
        cOut,
        pixels: P,
        sentinel,
        what,
      });
      assertClose(slice, ref, { ...f16Tolerance(maxAbs(ref)), what });
    }
  },
);

Deno.test(
  "conv2d f16 chunking: chunks give the same results; f16 chunks hold more images",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    let seed = 1160;
    const configs: Conv2dParams[] = [
      { n: 5, cIn: 3, h: 9, w: 7, cOut: 5, kernel: 3, padding: 1, stride: 2 },
      { n: 4, cIn: 5, h: 8, w: 9, cOut: 9, kernel: 1 }, // pointwise path
    ];
    for (const p of configs) {
      const data = upload(p, seed++, true);
      const whole = await runMix(p, data, TRAIN, { direct: false });
      // 1 byte: one image per chunk; 1500 bytes: a few images per chunk, ranges not aligned.
      for (const maxChunkBytes of [1, 1500]) {
        const plan = conv2dChunkPlan(adapterProfile(gpu), p, { maxChunkBytes, dtype: "f16" });
        assert.ok(plan.chunks > 1, `expected several chunks for ${JSON.stringify(p)}`);
        const chunked = await runMix(p, data, TRAIN, { direct: false, maxChunkBytes });
        // Per-element work is the same: y and dx are bit-identical; dw/db sum chunks in order.
        assert.deepEqual(chunked.y, whole.y);
        assert.deepEqual(chunked.dx, whole.dx);
        assertClose(chunked.dw, whole.dw, { ...tol(data.s.len), what: "chunked dw" });
        assertClose(chunked.db, whole.db, { ...tol(data.s.len), what: "chunked db" });
      }
      checkMix(p, data, TRAIN, whole, JSON.stringify(p));
    }
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
  },
);

Deno.test(
  "conv2d f16: col2im of a large kernel splits the columns over dispatches",
  F16_TEST,
  async () => {
    // 2 + kh * (kw + 2) = 3722 loop trips per column of dx: 16 columns per dispatch of 60.
    const p: Conv2dParams = { n: 1, cIn: 1, h: 60, w: 62, cOut: 2, kernel: 60, padding: [0, 1] };
    const data = upload(p, 1200, true);
    const got = await runMix(p, data, TRAIN, { direct: false });
    const col2im = got.plans.backward.steps.filter((t) => t.kind === "col2im");
    assert.equal(col2im.length, 1);
    assert.deepEqual(col2im[0].kind === "col2im" && col2im[0].form, {
      form: "pixel",
      ranges: [[0, 16], [16, 32], [32, 48], [48, 62]],
    });
    checkMix(p, data, TRAIN, got, "k60");
  },
);

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
