// Tests of kernels/pool.ts: GPU vs the Float64 CPU references, the CPU backward vs finite
// differences, tie handling, and PyTorch fixtures (AvgPool2d with padding, MaxPool2d with ties).
import assert from "node:assert/strict";
import {
  avgPool2dBackward,
  avgPool2dForward,
  checkPool2d,
  globalAvgPoolBackward,
  globalAvgPoolForward,
  maxPool2dBackward,
  maxPool2dForward,
  type Pool2dParams,
} from "../kernels/pool.ts";
import {
  assertClose,
  checkGradient,
  type CloseOptions,
  dtLabel,
  F16_TEST,
  f32,
  GPU_TEST,
  outTol,
  Rng,
  roundF16,
  testGpu,
  upload,
} from "./harness.ts";
import type { FloatDType } from "../kernels/_dtype.ts";
import {
  avgPoolBackwardRef,
  avgPoolForwardRef,
  globalAvgPoolBackwardRef,
  globalAvgPoolForwardRef,
  maxPoolBackwardRef,
  maxPoolForwardRef,
  type PoolGeom,
} from "./cpu_ref/pool.ts";
import type { Gpu } from "../gpu/mod.ts";
import {
  atDeviceLimit,
  deviceLimit,
  fastFill,
  readSlices,
  sampleUnits,
  withBindingLimit,
} from "./big.ts";

function geom(p: Pool2dParams): PoolGeom {
  const two = (v: number | readonly [number, number] | undefined, d: readonly number[]) =>
    v === undefined ? [d[0], d[1]] : typeof v === "number" ? [v, v] : [v[0], v[1]];
  const [kh, kw] = two(p.kernel, [1, 1]);
  const [sh, sw] = two(p.stride, [kh, kw]);
  const [ph, pw] = two(p.padding, [0, 0]);
  return { n: p.n, c: p.c, h: p.h, w: p.w, kh, kw, sh, sw, ph, pw };
}

function label(p: Pool2dParams): string {
  return `n${p.n} c${p.c} ${p.h}x${p.w} k${p.kernel} s${p.stride ?? "k"} p${p.padding ?? 0}`;
}

const CASES: Pool2dParams[] = [
  { n: 2, c: 3, h: 7, w: 9, kernel: 3, stride: 2 }, // AlexNet 3/2, overlapping windows
  { n: 1, c: 1, h: 5, w: 5, kernel: 3, stride: 2, padding: 1 }, // ResNet 3/2/1: over the edges
  { n: 3, c: 2, h: 1, w: 1, kernel: 1 }, // 1x1 spatial
  { n: 2, c: 3, h: 8, w: 7, kernel: 2, stride: 3, padding: 1 }, // stride > kernel, padding
  { n: 1, c: 4, h: 6, w: 9, kernel: [3, 2], stride: [1, 2], padding: [1, 1] },
  { n: 2, c: 5, h: 13, w: 13, kernel: 3, stride: 2 }, // AlexNet-like
  { n: 2, c: 3, h: 6, w: 5, kernel: 3, stride: 1, padding: 1 }, // GoogLeNet branch pool 3/1/1
  { n: 2, c: 6, h: 8, w: 8, kernel: 2, stride: 2 }, // LeNet / DenseNet transition 2/2
];

async function run(gpu: Gpu, p: Pool2dParams, x: ArrayLike<number>, dy: ArrayLike<number>) {
  const g = geom(p);
  const outShape = checkPool2d(p);
  const xt = gpu.tensor(f32(x), { shape: [g.n, g.c, g.h, g.w] });
  const dyt = gpu.tensor(f32(dy), { shape: outShape });
  const y = gpu.empty(outShape), argmax = gpu.empty(outShape, { dtype: "i32" });
  maxPool2dForward({ y, argmax, x: xt }, p);
  const dx = gpu.empty(xt.shape);
  maxPool2dBackward({ dx, dy: dyt, argmax }, p);
  const ya = gpu.empty(outShape), dxa = gpu.empty(xt.shape);
  avgPool2dForward({ y: ya, x: xt }, p);
  avgPool2dBackward({ dx: dxa, dy: dyt }, p);
  const out = {
    maxY: await y.toArray(),
    argmax: await argmax.toArray(),
    maxDx: await dx.toArray(),
    avgY: await ya.toArray(),
    avgDx: await dxa.toArray(),
  };
  for (const t of [xt, dyt, y, argmax, dx, ya, dxa]) t.dispose();
  return out;
}

Deno.test("pool CPU backward matches finite differences", () => {
  const rng = new Rng(3);
  for (
    const p of [
      { n: 1, c: 2, h: 5, w: 5, kernel: 3, stride: 2, padding: 1 },
      { n: 2, c: 1, h: 7, w: 6, kernel: 3, stride: 2 },
      { n: 1, c: 1, h: 4, w: 5, kernel: [2, 3], stride: [3, 1], padding: [1, 1] },
    ] as Pool2dParams[]
  ) {
    const g = geom(p);
    const [, , oh, ow] = checkPool2d(p);
    const x = rng.normalArray(g.n * g.c * g.h * g.w); // distinct values: no ties
    const r = rng.normalArray(g.n * g.c * oh * ow);
    const dot = (a: Float64Array) => a.reduce((s, v, i) => s + v * r[i], 0);
    const { argmax } = maxPoolForwardRef(g, x);
    checkGradient((v) => dot(maxPoolForwardRef(g, v).y), x, maxPoolBackwardRef(g, r, argmax), {
      what: `max dx ${label(p)}`,
    });
    checkGradient((v) => dot(avgPoolForwardRef(g, v)), x, avgPoolBackwardRef(g, r), {
      what: `avg dx ${label(p)}`,
    });
  }
  const x = rng.normalArray(2 * 3 * 4 * 5);
  const r = rng.normalArray(6);
  checkGradient(
    (v) => globalAvgPoolForwardRef(6, 20, v).reduce((s, a, i) => s + a * r[i], 0),
    x,
    globalAvgPoolBackwardRef(6, 20, r),
    { what: "global avg dx" },
  );
});

Deno.test("max and avg pool GPU match the CPU reference", GPU_TEST, async () => {
  const gpu = await testGpu();
  const rng = new Rng(17);
  for (const p of CASES) {
    const g = geom(p);
    const [, , oh, ow] = checkPool2d(p);
    const x = rng.normalArray(g.n * g.c * g.h * g.w);
    const dy = rng.normalArray(g.n * g.c * oh * ow);
    const out = await run(gpu, p, x, dy);
    const ref = maxPoolForwardRef(g, f32(x));
    assert.deepEqual(out.argmax, ref.argmax, `argmax ${label(p)}`);
    assertClose(out.maxY, ref.y, { rtol: 0, atol: 0, what: `max y ${label(p)}` });
    const tol = { rtol: 1e-5, atol: 1e-6 };
    assertClose(out.maxDx, maxPoolBackwardRef(g, dy, ref.argmax), {
      ...tol,
      what: `max dx ${label(p)}`,
    });
    assertClose(out.avgY, avgPoolForwardRef(g, x), { ...tol, what: `avg y ${label(p)}` });
    assertClose(out.avgDx, avgPoolBackwardRef(g, dy), { ...tol, what: `avg dx ${label(p)}` });
  }
});

Deno.test(
  "max pool ties keep the first index; -inf windows; overlapping backward sums",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    // All-equal input: every argmax is the first in-bounds element of its window.
    const p: Pool2dParams = { n: 1, c: 2, h: 5, w: 5, kernel: 3, stride: 2, padding: 1 };
    const g = geom(p);
    const ones = new Float64Array(50).fill(1);
    const dy = new Float64Array(18).map((_, i) => i + 1);
    const out = await run(gpu, p, ones, dy);
    // windows start at rows/cols -1, 1, 3 -> first in-bounds rows/cols 0, 1, 3
    const first = [0, 1, 3].flatMap((r) => [0, 1, 3].map((c) => r * 5 + c));
    assert.deepEqual([...out.argmax], [...first, ...first]);
    assertClose(out.maxDx, maxPoolBackwardRef(g, dy, Int32Array.from([...first, ...first])), {
      what: "tie dx",
    });
    // -inf everywhere: y = -inf, argmax = first in-bounds element.
    const neg = await run(gpu, p, new Float64Array(50).fill(-Infinity), dy);
    assert.ok(neg.maxY.every((v) => v === -Infinity));
    assert.deepEqual([...neg.argmax], [...first, ...first]);
    // NaN propagates and the last NaN of the window wins (PyTorch: val > max || isnan(val)):
    // torch.nn.functional.max_pool2d([[1, nan, 5, 2], [3, nan, 1, 1]], 2) -> [nan, 5], [5, 2]
    const nan = await run(
      gpu,
      { n: 1, c: 1, h: 2, w: 4, kernel: 2 },
      [1, NaN, 5, 2, 3, NaN, 1, 1],
      [1, 1],
    );
    assert.ok(Number.isNaN(nan.maxY[0]));
    assert.equal(nan.maxY[1], 5);
    assert.deepEqual([...nan.argmax], [5, 2]);
    // AlexNet 3/2 overlap: a single peak shared by 4 windows receives the sum of their dy.
    const q: Pool2dParams = { n: 1, c: 1, h: 5, w: 5, kernel: 3, stride: 2 };
    const x = new Float64Array(25);
    x[2 * 5 + 2] = 5; // the centre is in all four 3x3 windows
    const o = await run(gpu, q, x, new Float64Array([1, 2, 3, 4]));
    assert.deepEqual([...o.argmax], [12, 12, 12, 12]);
    assert.equal(o.maxDx[12], 10);
    assert.equal(o.maxDx.reduce((s, v) => s + Math.abs(v), 0), 10);
  },
);

Deno.test("global average pool GPU matches the CPU reference", GPU_TEST, async () => {
  const gpu = await testGpu();
  const rng = new Rng(23);
  for (const [n, c, h, w] of [[2, 3, 5, 7], [1, 1, 1, 1], [3, 4, 3, 3], [2, 130, 2, 2]]) {
    const planes = n * c, hw = h * w;
    const x = rng.normalArray(planes * hw), dy = rng.normalArray(planes);
    const xt = gpu.tensor(f32(x), { shape: [n, c, h, w] });
    const dyt = gpu.tensor(f32(dy), { shape: [n, c, 1, 1] });
    const y = gpu.empty([n, c, 1, 1]), dx = gpu.empty([n, c, h, w]);
    globalAvgPoolForward({ y, x: xt }, { n, c, h, w });
    globalAvgPoolBackward({ dx, dy: dyt }, { n, c, h, w });
    assertClose(await y.toArray(), globalAvgPoolForwardRef(planes, hw, x), {
      rtol: 1e-5,
      atol: 1e-6,
    });
    assertClose(await dx.toArray(), globalAvgPoolBackwardRef(planes, hw, dy), {
      rtol: 1e-5,
      atol: 1e-7,
    });
  }
});

/** The cases of a PyTorch pooling fixture, each run on the GPU (output shape checked). */
async function fixtureCases(gpu: Gpu, file: string) {
  const fx = JSON.parse(await Deno.readTextFile(new URL(`./fixtures/${file}`, import.meta.url)));
  const cases = [];
  for (const c of fx.cases) {
    const [n, ch, h, w] = c.shape;
    const p: Pool2dParams = {
      n,
      c: ch,
      h,
      w,
      kernel: c.kernel,
      stride: c.stride,
      padding: c.padding,
    };
    assert.deepEqual(checkPool2d(p), c.y_shape);
    cases.push({ c, p, out: await run(gpu, p, c.x, c.dy) });
  }
  return cases;
}

Deno.test("avg pool matches PyTorch fixture (count_include_pad)", GPU_TEST, async () => {
  const gpu = await testGpu();
  for (const { c, out } of await fixtureCases(gpu, "norm_pool_avgpool.json")) {
    assertClose(out.avgY, c.y, { rtol: 1e-5, atol: 1e-6, what: "torch avg y" });
    assertClose(out.avgDx, c.dx, { rtol: 1e-5, atol: 1e-6, what: "torch avg dx" });
  }
});

Deno.test("max pool matches PyTorch fixture (ties, indices, dx)", GPU_TEST, async () => {
  const gpu = await testGpu();
  for (const { c, p, out } of await fixtureCases(gpu, "norm_pool_maxpool.json")) {
    assert.deepEqual([...out.argmax], c.indices, `torch indices ${label(p)}`);
    assertClose(out.maxY, c.y, { rtol: 0, atol: 0, what: "torch max y" });
    assertClose(out.maxDx, c.dx, { rtol: 1e-6, atol: 1e-6, what: "torch max dx" });
  }
});

Deno.test("pool rejects bad shapes and values", GPU_TEST, async () => {
  const gpu = await testGpu();
  const p: Pool2dParams = { n: 1, c: 2, h: 6, w: 6, kernel: 3, stride: 2, padding: 1 };
  assert.deepEqual(checkPool2d(p), [1, 2, 3, 3]);
  assert.deepEqual(checkPool2d({ n: 1, c: 2, h: 6, w: 6, kernel: 2 }), [1, 2, 3, 3]); // stride = kernel
  assert.throws(() => checkPool2d({ ...p, padding: 2 }), /at most half/);
  assert.throws(() => checkPool2d({ ...p, kernel: [2, 3], padding: [1, 2] }), RangeError);
  assert.throws(() => checkPool2d({ ...p, h: 1, padding: 0 }), /too small/);
  assert.throws(() => checkPool2d({ ...p, stride: 0 }), RangeError);
  const x = gpu.zeros([1, 2, 6, 6]);
  const y = gpu.empty([1, 2, 3, 3]);
  assert.throws(
    () => maxPool2dForward({ y, argmax: gpu.empty([1, 2, 3, 3]), x }, p),
    (e: Error) => e instanceof TypeError && /maxPool2dForward: argmax must be i32/.test(e.message),
  );
  assert.throws(
    () => avgPool2dForward({ y: gpu.empty([1, 2, 4, 4]), x }, p),
    (e: Error) =>
      e instanceof TypeError &&
      /avgPool2dForward: y has shape \[1, 2, 4, 4\], expected \[1, 2, 3, 3\]/.test(e.message),
  );
  assert.throws(
    () => globalAvgPoolForward({ y: gpu.empty([1, 2]), x }, { n: 1, c: 2, h: 6, w: 6 }),
    /globalAvgPoolForward: y has shape \[1, 2\], expected \[1, 2, 1, 1\]/,
  );
});

// ------------------------------------------------------------------------------ f16 ----

/** Per-tensor storage types of one pooling run (argmax stays i32). */
interface PoolDTypes {
  x: FloatDType;
  y: FloatDType;
  dy: FloatDType;
  dx: FloatDType;
}

/** The configuration training uses: f16 activations and gradients. */
const F16_TRAIN: PoolDTypes = { x: "f16", y: "f16", dy: "f16", dx: "f16" };
/** Mixes: f32 input with an f16 output, and the other way round. */
const F16_MIXES: PoolDTypes[] = [
  F16_TRAIN,
  { x: "f32", y: "f16", dy: "f16", dx: "f32" },
  { x: "f16", y: "f32", dy: "f32", dx: "f16" },
];

/** Tolerance of the f32 outputs of the f16 tests: as the f32 tests. */
const F32_OUT: CloseOptions = { rtol: 1e-5, atol: 1e-6 };

async function checkPoolF16(gpu: Gpu, p: Pool2dParams, dt: PoolDTypes, rng: Rng): Promise<void> {
  const g = geom(p);
  const outShape = checkPool2d(p);
  const inShape = [g.n, g.c, g.h, g.w];
  const what = `${label(p)} (${dtLabel(dt)})`;
  const x = upload(gpu, rng.normalArray(g.n * g.c * g.h * g.w), { dtype: dt.x, shape: inShape });
  const dy = upload(gpu, rng.normalArray(outShape.reduce((a, b) => a * b)), {
    dtype: dt.dy,
    shape: outShape,
  });
  const y = gpu.empty(outShape, { dtype: dt.y }), argmax = gpu.empty(outShape, { dtype: "i32" });
  const dx = gpu.empty(inShape, { dtype: dt.dx });
  const ya = gpu.empty(outShape, { dtype: dt.y }), dxa = gpu.empty(inShape, { dtype: dt.dx });
  maxPool2dForward({ y, argmax, x: x.t }, p);
  maxPool2dBackward({ dx, dy: dy.t, argmax }, p);
  avgPool2dForward({ y: ya, x: x.t }, p);
  avgPool2dBackward({ dx: dxa, dy: dy.t }, p);
  const ref = maxPoolForwardRef(g, x.held);
  assert.deepEqual(await argmax.toArray(), ref.argmax, `argmax ${what}`);
  // The maximum of the values x holds is one of them: exact when y can hold it (f16 x, or f32 y).
  const maxY = dt.x === "f32" && dt.y === "f16" ? roundF16(ref.y) : ref.y;
  assertClose(await y.toArray(), maxY, { rtol: 0, atol: 0, what: `max y ${what}` });
  // Backward sums: at most 4 dy per input here (3/2 windows overlap in 2 rows x 2 columns), and
  // avg windows of at most 9 inputs: f32 sums of <= 9 terms err by ~2^-21 relative, negligible
  // next to the f16 output's rounding (2^-11): extra 0.
  const maxDx = maxPoolBackwardRef(g, dy.held, ref.argmax);
  assertClose(
    await dx.toArray(),
    maxDx,
    outTol(dt.dx, maxDx, { f32: F32_OUT, what: `max dx ${what}` }),
  );
  const avgY = avgPoolForwardRef(g, x.held);
  assertClose(
    await ya.toArray(),
    avgY,
    outTol(dt.y, avgY, { f32: F32_OUT, what: `avg y ${what}` }),
  );
  const avgDx = avgPoolBackwardRef(g, dy.held);
  assertClose(
    await dxa.toArray(),
    avgDx,
    outTol(dt.dx, avgDx, { f32: F32_OUT, what: `avg dx ${what}` }),
  );
  for (const t of [x.t, dy.t, y, argmax, dx, ya, dxa]) t.dispose();
}

const F16_CASES: Pool2dParams[] = [
  { n: 2, c: 3, h: 7, w: 9, kernel: 3, stride: 2 }, // AlexNet 3/2, overlapping, odd sizes
  { n: 1, c: 4, h: 6, w: 9, kernel: [3, 2], stride: [1, 2], padding: [1, 1] },
  { n: 2, c: 3, h: 8, w: 7, kernel: 2, stride: 3, padding: 1 }, // stride > kernel
];

Deno.test("max and avg pool with f16 tensors match the CPU reference", F16_TEST, async () => {
  const gpu = await testGpu();
  const rng = new Rng(41);
  for (const dt of F16_MIXES) {
    for (const p of F16_CASES) await checkPoolF16(gpu, p, dt, rng);
  }
});

Deno.test(
  "f16 pooling split into ranges of planes: f16 and i32 bindings start at different bases",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(42);
    // 200-element ranges start past the first 64 elements of a binding, where an f16 range's
    // base (offset mod 128) differs from the i32 argmax's (offset mod 64).
    await withBindingLimit(200, async () => {
      for (const p of [CASES[0], CASES[5]]) await checkPoolF16(gpu, p, F16_TRAIN, rng);
    });
  },
);

Deno.test("global average pool with f16 tensors matches the CPU reference", F16_TEST, async () => {
  const gpu = await testGpu();
  const rng = new Rng(43);
  const mixes: { x: FloatDType; y: FloatDType; dy: FloatDType; dx: FloatDType }[] = [
    F16_TRAIN,
    { x: "f32", y: "f16", dy: "f16", dx: "f32" },
  ];
  // [1, 2, 130, 130]: planes of 16900 > 16384 elements, summed in two f32 segments then a final
  // f32 pass (the partial sums stay f32 whatever y's type).
  for (const [n, c, h, w] of [[2, 3, 5, 7], [3, 4, 3, 3], [1, 2, 130, 130]]) {
    for (const dt of mixes) {
      const planes = n * c, hw = h * w;
      const what = `${n}x${c}x${h}x${w} (${dtLabel(dt)})`;
      const x = upload(gpu, rng.uniformArray(planes * hw, -1, 3), {
        dtype: dt.x,
        shape: [n, c, h, w],
      });
      const dy = upload(gpu, rng.normalArray(planes), { dtype: dt.dy, shape: [n, c, 1, 1] });
      const y = gpu.empty([n, c, 1, 1], { dtype: dt.y });
      const dx = gpu.empty([n, c, h, w], { dtype: dt.dx });
      globalAvgPoolForward({ y, x: x.t }, { n, c, h, w });
      globalAvgPoolBackward({ dx, dy: dy.t }, { n, c, h, w });
      // An f32 sum of hw terms errs by at most hw * 2^-24 of the sum of magnitudes: 16900 terms
      // of |x| < 3 with mean 1: about 3 * 16900 * 2^-24 = 3e-3 of the mean, 6 f16 half-ulps
      // (2^-11): extra 6 (random rounding errors make the actual error far smaller).
      const ref = globalAvgPoolForwardRef(planes, hw, x.held);
      assertClose(
        await y.toArray(),
        ref,
        outTol(dt.y, ref, { extra: 6, f32: F32_OUT, what: `y ${what}` }),
      );
      const dref = globalAvgPoolBackwardRef(planes, hw, dy.held);
      assertClose(
        await dx.toArray(),
        dref,
        outTol(dt.dx, dref, { f32: F32_OUT, what: `dx ${what}` }),
      );
      for (const t of [x.t, dy.t, y, dx]) t.dispose();
    }
  }
});

Deno.test(
  "pooling rejects a non-float tensor in a float slot, naming the op",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const p: Pool2dParams = { n: 1, c: 2, h: 6, w: 6, kernel: 2 };
    const g = { n: 1, c: 2, h: 6, w: 6 };
    const x = gpu.zeros([1, 2, 6, 6], { dtype: "f16" }), y = gpu.empty([1, 2, 3, 3]);
    const argmax = gpu.empty([1, 2, 3, 3], { dtype: "i32" }), y1 = gpu.empty([1, 2, 1, 1]);
    const u = (shape: number[]) => gpu.empty(shape, { dtype: "u32" });
    const cases: [string, () => void][] = [
      ["maxPool2dForward: x", () => maxPool2dForward({ y, argmax, x: u([1, 2, 6, 6]) }, p)],
      ["maxPool2dForward: y", () => maxPool2dForward({ y: argmax, argmax, x }, p)],
      ["maxPool2dBackward: dy", () => maxPool2dBackward({ dx: x, dy: u([1, 2, 3, 3]), argmax }, p)],
      ["maxPool2dBackward: dx", () => maxPool2dBackward({ dx: u([1, 2, 6, 6]), dy: y, argmax }, p)],
      ["avgPool2dForward: y", () => avgPool2dForward({ y: u([1, 2, 3, 3]), x }, p)],
      ["avgPool2dBackward: dy", () => avgPool2dBackward({ dx: x, dy: u([1, 2, 3, 3]) }, p)],
      ["globalAvgPoolForward: x", () => globalAvgPoolForward({ y: y1, x: u([1, 2, 6, 6]) }, g)],
      [
        "globalAvgPoolBackward: dx",
        () => globalAvgPoolBackward({ dx: u([1, 2, 6, 6]), dy: y1 }, g),
      ],
    ];
    for (const [msg, fn] of cases) {
      assert.throws(
        fn,
        (e: Error) => e instanceof TypeError && e.message.startsWith(`${msg} must be f32 or f16`),
        msg,
      );
    }
    // argmax must stay i32: an f16 tensor is rejected.
    assert.throws(
      () => maxPool2dForward({ y, argmax: gpu.empty([1, 2, 3, 3], { dtype: "f16" }), x }, p),
      /maxPool2dForward: argmax must be i32/,
    );
  },
);

// ------------------------------------------------------------ beyond the device limits ----

Deno.test(
  "max pool 3/2 forward and backward on AlexNet's [128, 96, 54, 54] (143 MB, past one binding)",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    await atDeviceLimit(gpu, async () => {
      const p: Pool2dParams = { n: 128, c: 96, h: 54, w: 54, kernel: 3, stride: 2 };
      const g = geom(p);
      const outShape = checkPool2d(p);
      const [, , oh, ow] = outShape;
      const hw = g.h * g.w, ohw = oh * ow, planes = g.n * g.c;
      assert.ok(planes * hw > deviceLimit(gpu));
      const xs = fastFill(planes * hw, 11), dys = fastFill(planes * ohw, 12);
      const x = gpu.tensor(xs, { shape: [g.n, g.c, g.h, g.w] });
      const dy = gpu.tensor(dys, { shape: outShape });
      const y = gpu.empty(outShape), argmax = gpu.empty(outShape, { dtype: "i32" });
      const dx = gpu.empty(x.shape);
      maxPool2dForward({ y, argmax, x }, p);
      maxPool2dBackward({ dx, dy, argmax }, p);
      const check = sampleUnits(gpu, planes, hw, 30, new Rng(24));
      const ys = await readSlices(gpu, y, check.map((q) => q * ohw), ohw);
      const ams = await readSlices(gpu, argmax, check.map((q) => q * ohw), ohw);
      const dxs = await readSlices(gpu, dx, check.map((q) => q * hw), hw);
      const one = { ...g, n: 1, c: 1 };
      check.forEach((q, k) => {
        const ref = maxPoolForwardRef(one, xs.subarray(q * hw, (q + 1) * hw));
        assert.deepEqual(ams.slices[k], ref.argmax, `argmax plane ${q}`);
        assertClose(ys.slices[k], ref.y, { rtol: 0, atol: 0, what: `y plane ${q}` });
        const dref = maxPoolBackwardRef(one, dys.subarray(q * ohw, (q + 1) * ohw), ref.argmax);
        assertClose(dxs.slices[k], dref, { rtol: 1e-6, atol: 1e-7, what: `dx plane ${q}` });
      });
      for (const t of [x, dy, y, argmax, dx]) t.dispose();
      gpu.trimPool();
    });
  },
);

Deno.test(
  "global average pool over planes longer than llvmpipe's loop cap (300x300, 257x257)",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(25);
    for (const [n, c, h, w] of [[1, 3, 300, 300], [2, 1, 257, 257]]) {
      const planes = n * c, hw = h * w;
      const x = rng.uniformArray(planes * hw, 0, 2), dy = rng.normalArray(planes);
      const xt = gpu.tensor(f32(x), { shape: [n, c, h, w] });
      const dyt = gpu.tensor(f32(dy), { shape: [n, c, 1, 1] });
      const y = gpu.empty([n, c, 1, 1]), dx = gpu.empty([n, c, h, w]);
      globalAvgPoolForward({ y, x: xt }, { n, c, h, w });
      globalAvgPoolBackward({ dx, dy: dyt }, { n, c, h, w });
      // Means of 9e4 f32 values in [0, 2): the sum's rounding error stays below 1e-5 relative.
      assertClose(await y.toArray(), globalAvgPoolForwardRef(planes, hw, f32(x)), {
        rtol: 1e-5,
        what: `y ${h}x${w}`,
      });
      assertClose(await dx.toArray(), globalAvgPoolBackwardRef(planes, hw, f32(dy)), {
        rtol: 1e-6,
        atol: 1e-12,
        what: `dx ${h}x${w}`,
      });
      for (const t of [xt, dyt, y, dx]) t.dispose();
    }
  },
);

Deno.test(
  "pooling split into ranges of planes (binding limit lowered) matches the CPU",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(26);
    await withBindingLimit(200, async () => {
      for (const p of CASES) {
        const g = geom(p);
        const [, , oh, ow] = checkPool2d(p);
        const x = rng.normalArray(g.n * g.c * g.h * g.w);
        const dy = rng.normalArray(g.n * g.c * oh * ow);
        const out = await run(gpu, p, x, dy);
        const ref = maxPoolForwardRef(g, f32(x));
        assert.deepEqual(out.argmax, ref.argmax, `argmax ${label(p)}`);
        assertClose(out.maxY, ref.y, { rtol: 0, atol: 0, what: `max y ${label(p)}` });
        const tol = { rtol: 1e-5, atol: 1e-6 };
        assertClose(out.maxDx, maxPoolBackwardRef(g, dy, ref.argmax), { ...tol, what: "max dx" });
        assertClose(out.avgY, avgPoolForwardRef(g, x), { ...tol, what: `avg y ${label(p)}` });
        assertClose(out.avgDx, avgPoolBackwardRef(g, dy), { ...tol, what: `avg dx ${label(p)}` });
      }
      for (const [n, c, h, w] of [[3, 5, 7, 9], [2, 130, 2, 2]]) {
        const planes = n * c, hw = h * w;
        const x = rng.normalArray(planes * hw), dy = rng.normalArray(planes);
        const y = gpu.empty([n, c, 1, 1]), dx = gpu.empty([n, c, h, w]);
        globalAvgPoolForward({ y, x: gpu.tensor(f32(x), { shape: [n, c, h, w] }) }, { n, c, h, w });
        globalAvgPoolBackward({ dx, dy: gpu.tensor(f32(dy), { shape: [n, c, 1, 1] }) }, {
          n,
          c,
          h,
          w,
        });
        assertClose(await y.toArray(), globalAvgPoolForwardRef(planes, hw, x), {
          rtol: 1e-5,
          atol: 1e-6,
        });
        assertClose(await dx.toArray(), globalAvgPoolBackwardRef(planes, hw, dy), {
          rtol: 1e-5,
          atol: 1e-7,
        });
      }
    });
  },
);
