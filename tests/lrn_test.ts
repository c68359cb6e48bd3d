// Tests of kernels/lrn.ts: GPU vs the Float64 CPU reference, the CPU backward vs finite
// differences, and a PyTorch fixture (nn.LocalResponseNorm, odd and even sizes).
import assert from "node:assert/strict";
import { checkLrn, lrnBackward, lrnForward, type LrnParams } from "../kernels/lrn.ts";
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
  testGpu,
  upload,
} from "./harness.ts";
import { lrnBackwardRef, lrnForwardRef, type LrnGeom } from "./cpu_ref/lrn.ts";
import type { Gpu } from "../gpu/mod.ts";
import type { FloatDType } from "../kernels/_dtype.ts";
import {
  atDeviceLimit,
  deviceLimit,
  fastFill,
  readSlices,
  sampleUnits,
  withBindingLimit,
} from "./big.ts";

function geom(p: LrnParams): LrnGeom {
  return {
    n: p.n,
    c: p.c,
    hw: p.h * p.w,
    size: p.size,
    alpha: p.alpha ?? 1e-4,
    beta: p.beta ?? 0.75,
    k: p.k ?? 1,
  };
}

function label(p: LrnParams): string {
  return `n${p.n} c${p.c} ${p.h}x${p.w} size${p.size}`;
}

async function run(gpu: Gpu, p: LrnParams, x: ArrayLike<number>, dy: ArrayLike<number>) {
  const shape = checkLrn(p);
  const xt = gpu.tensor(f32(x), { shape });
  const dyt = gpu.tensor(f32(dy), { shape });
  const y = gpu.empty(shape), scale = gpu.empty(shape), dx = gpu.empty(shape);
  lrnForward({ y, scale, x: xt }, p);
  lrnBackward({ dx, dy: dyt, x: xt, scale }, p);
  const out = { y: await y.toArray(), scale: await scale.toArray(), dx: await dx.toArray() };
  for (const t of [xt, dyt, y, scale, dx]) t.dispose();
  return out;
}

Deno.test("LRN CPU backward matches finite differences", () => {
  const rng = new Rng(4);
  for (
    const p of [
      { n: 2, c: 7, h: 2, w: 1, size: 5, alpha: 0.5, beta: 0.75, k: 2 },
      { n: 1, c: 6, h: 1, w: 3, size: 4, alpha: 1, beta: 0.6, k: 1 },
      { n: 1, c: 3, h: 2, w: 2, size: 2, alpha: 0.9, beta: 1.3, k: 0.5 },
    ] as LrnParams[]
  ) {
    const g = geom(p);
    const x = rng.normalArray(g.n * g.c * g.hw);
    const r = rng.normalArray(x.length);
    checkGradient(
      (v) => lrnForwardRef(g, v).y.reduce((s, a, i) => s + a * r[i], 0),
      x,
      lrnBackwardRef(g, r, x),
      { what: `dx ${label(p)}` },
    );
  }
});

const CASES: LrnParams[] = [
  { n: 2, c: 7, h: 3, w: 5, size: 5, alpha: 0.5, beta: 0.75, k: 2 }, // odd sizes
  { n: 1, c: 1, h: 4, w: 3, size: 5, alpha: 1, beta: 0.75, k: 1 }, // channel 1, batch 1
  { n: 3, c: 3, h: 1, w: 1, size: 3, alpha: 0.7, beta: 0.5, k: 1.5 }, // 1x1 spatial, channels 3
  { n: 2, c: 6, h: 2, w: 3, size: 4, alpha: 1, beta: 0.6, k: 1 }, // even size
  { n: 1, c: 9, h: 5, w: 5, size: 12, alpha: 2, beta: 0.9, k: 1 }, // window wider than channels
  { n: 2, c: 16, h: 7, w: 7, size: 5, alpha: 1e-4, beta: 0.75, k: 2 }, // AlexNet hyper-parameters
  // h * w a multiple of 4: the vec4 kernels (the cases above with 12 pixels too)
  { n: 2, c: 6, h: 2, w: 4, size: 4, alpha: 1, beta: 0.6, k: 1 },
  { n: 1, c: 5, h: 4, w: 4, size: 2, alpha: 0.8, beta: 0.9, k: 1.5 },
  { n: 2, c: 11, h: 6, w: 6, size: 5, alpha: 0.5, beta: 0.75, k: 2 },
];

Deno.test("LRN GPU forward and backward match the CPU reference", GPU_TEST, async () => {
  const gpu = await testGpu();
  const rng = new Rng(31);
  for (const p of CASES) {
    const g = geom(p);
    const x = rng.normalArray(g.n * g.c * g.hw).map((v) => 2 * v);
    const dy = rng.normalArray(x.length);
    const out = await run(gpu, p, x, dy);
    const ref = lrnForwardRef(g, f32(x));
    const tol = { rtol: 1e-4, atol: 1e-5 };
    assertClose(out.y, ref.y, { ...tol, what: `y ${label(p)}` });
    assertClose(out.scale, ref.scale, { ...tol, what: `scale ${label(p)}` });
    assertClose(out.dx, lrnBackwardRef(g, dy, f32(x)), { ...tol, what: `dx ${label(p)}` });
  }
});

Deno.test(
  "LRN matches PyTorch fixture (size 5, even sizes 4 and 2, AlexNet)",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const fx = JSON.parse(
      await Deno.readTextFile(new URL("./fixtures/norm_pool_lrn.json", import.meta.url)),
    );
    for (const c of fx.cases) {
      const [n, ch, h, w] = c.shape;
      const p: LrnParams = { n, c: ch, h, w, size: c.size, alpha: c.alpha, beta: c.beta, k: c.k };
      const out = await run(gpu, p, c.x, c.dy);
      assertClose(out.y, c.y, { rtol: 1e-4, atol: 1e-5, what: `torch y ${label(p)}` });
      assertClose(out.dx, c.dx, { rtol: 1e-4, atol: 1e-5, what: `torch dx ${label(p)}` });
    }
  },
);

Deno.test("LRN rejects bad shapes and values", GPU_TEST, async () => {
  const gpu = await testGpu();
  const p: LrnParams = { n: 1, c: 4, h: 3, w: 3, size: 5 };
  assert.deepEqual(checkLrn(p), [1, 4, 3, 3]);
  assert.throws(() => checkLrn({ ...p, size: 0 }), RangeError);
  assert.throws(() => checkLrn({ ...p, k: 0 }), RangeError);
  assert.throws(() => checkLrn({ ...p, beta: NaN }), RangeError);
  const x = gpu.zeros([1, 4, 3, 3]);
  assert.throws(
    () => lrnForward({ y: gpu.empty([1, 4, 3, 3]), scale: gpu.empty([1, 4, 9]), x }, p),
    (e: Error) =>
      e instanceof TypeError &&
      /lrnForward: scale has shape \[1, 4, 9\], expected \[1, 4, 3, 3\]/.test(e.message),
  );
});

// ------------------------------------------------------------------------------ f16 ----

/** Per-tensor storage types of one LRN forward and backward. */
interface LrnDTypes {
  x: FloatDType;
  y: FloatDType;
  scale: FloatDType;
  dy: FloatDType;
  dx: FloatDType;
}

const F16_MIXES: LrnDTypes[] = [
  // Training: f16 activations and gradients; the saved scale f16 too, or f32.
  { x: "f16", y: "f16", scale: "f16", dy: "f16", dx: "f16" },
  { x: "f16", y: "f16", scale: "f32", dy: "f16", dx: "f16" },
  // f32 input with f16 output (and back).
  { x: "f32", y: "f16", scale: "f32", dy: "f16", dx: "f32" },
];

/**
 * Tolerance of the f32 outputs of the f16 tests: the f32 tests' own (the f32 pow of llvmpipe errs
 * by up to ~1e-5 relative, hence their rtol 1e-4).
 */
const F32_OUT: CloseOptions = { rtol: 1e-4, atol: 1e-5 };

async function checkLrnF16(gpu: Gpu, p: LrnParams, dt: LrnDTypes, rng: Rng): Promise<void> {
  const g = geom(p);
  const shape = checkLrn(p);
  const what = `${label(p)} (${dtLabel(dt)})`;
  const x = upload(gpu, rng.normalArray(g.n * g.c * g.hw).map((v) => 2 * v), {
    dtype: dt.x,
    shape,
  });
  const dy = upload(gpu, rng.normalArray(x.held.length), { dtype: dt.dy, shape });
  const y = gpu.empty(shape, { dtype: dt.y }), scale = gpu.empty(shape, { dtype: dt.scale });
  const dx = gpu.empty(shape, { dtype: dt.dx });
  lrnForward({ y, scale, x: x.t }, p);
  lrnBackward({ dx, dy: dy.t, x: x.t, scale }, p);
  // Forward: a sum of at most `size` (<= 9 here) squares in f32 (~2^-21 relative) and one f32
  // pow (<= ~1e-5 relative on llvmpipe, 0.02 f16 half-ulps): extra 0.25 covers both.
  const ref = lrnForwardRef(g, x.held);
  assertClose(
    await y.toArray(),
    ref.y,
    outTol(dt.y, ref.y, { extra: 0.25, f32: F32_OUT, what: `y ${what}` }),
  );
  const savedScale = await scale.toArray();
  assertClose(
    savedScale,
    ref.scale,
    outTol(dt.scale, ref.scale, { extra: 0.25, f32: F32_OUT, what: `scale ${what}` }),
  );
  // Backward, from the scale as saved (f16-rounded or not): a sum of at most `size` (<= 9)
  // products, each with an f32 pow, minus dy * scale^-beta: the f32 errors (~1e-5 relative per
  // term, up to ~10 terms) can reach ~1e-4 of the largest term, 0.2 half-ulps: extra 0.5.
  const dref = lrnBackwardRef(g, dy.held, x.held, Float64Array.from(savedScale));
  assertClose(
    await dx.toArray(),
    dref,
    outTol(dt.dx, dref, { extra: 0.5, f32: F32_OUT, what: `dx ${what}` }),
  );
  for (const t of [x.t, dy.t, y, scale, dx]) t.dispose();
}

Deno.test("LRN with f16 tensors matches the CPU reference", F16_TEST, async () => {
  const gpu = await testGpu();
  const rng = new Rng(34);
  const cases: LrnParams[] = [
    { n: 2, c: 7, h: 3, w: 5, size: 5, alpha: 0.5, beta: 0.75, k: 2 }, // scalar, odd sizes
    { n: 2, c: 6, h: 2, w: 4, size: 4, alpha: 1, beta: 0.6, k: 1 }, // vec4, even size
    { n: 1, c: 9, h: 5, w: 5, size: 12, alpha: 2, beta: 0.9, k: 1 }, // window wider than c
  ];
  for (const dt of F16_MIXES) {
    for (const p of cases) await checkLrnF16(gpu, p, dt, rng);
  }
});

Deno.test(
  "f16 LRN split into ranges of samples: f16 and f32 bindings start at different bases",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(35);
    for (const p of RANGE_CASES) {
      const g = geom(p);
      // Two samples per range: past the first 64 elements of a binding, an f16 range's base
      // (offset mod 128) differs from an f32 one's (offset mod 64).
      await withBindingLimit(Math.max(64, 2 * g.c * g.hw), async () => {
        await checkLrnF16(gpu, p, F16_MIXES[1], rng);
        await checkLrnF16(gpu, p, F16_MIXES[2], rng);
      });
    }
  },
);

Deno.test("LRN rejects a non-float tensor in a float slot, naming the op", F16_TEST, async () => {
  const gpu = await testGpu();
  const p: LrnParams = { n: 1, c: 4, h: 3, w: 3, size: 5 };
  const shape = [1, 4, 3, 3];
  const h = gpu.zeros(shape, { dtype: "f16" }), u = gpu.empty(shape, { dtype: "u32" });
  const cases: [string, () => void][] = [
    ["lrnForward: x", () => lrnForward({ y: h, scale: gpu.empty(shape), x: u }, p)],
    ["lrnForward: scale", () => lrnForward({ y: gpu.empty(shape), scale: u, x: h }, p)],
    ["lrnBackward: dy", () => lrnBackward({ dx: gpu.empty(shape), dy: u, x: h, scale: h }, p)],
    [
      "lrnBackward: dx",
      () => lrnBackward({ dx: gpu.empty(shape, { dtype: "i32" }), dy: h, x: h, scale: h }, p),
    ],
  ];
  for (const [msg, fn] of cases) {
    assert.throws(
      fn,
      (e: Error) => e instanceof TypeError && e.message.startsWith(`${msg} must be f32 or f16`),
      msg,
    );
  }
});

Deno.test(
  "LRN forward and backward on AlexNet's [128, 96, 54, 54] (143 MB, past one binding)",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    await atDeviceLimit(gpu, async () => {
      const p: LrnParams = { n: 128, c: 96, h: 54, w: 54, size: 5, alpha: 1e-4, beta: 0.75, k: 2 };
      const shape = checkLrn(p);
      const per = p.c * p.h * p.w, total = p.n * per;
      assert.ok(total > deviceLimit(gpu));
      const xs = fastFill(total, 13, -30, 30), dys = fastFill(total, 14);
      const x = gpu.tensor(xs, { shape }), dy = gpu.tensor(dys, { shape });
      const y = gpu.empty(shape), scale = gpu.empty(shape), dx = gpu.empty(shape);
      lrnForward({ y, scale, x }, p);
      lrnBackward({ dx, dy, x, scale }, p);
      const check = sampleUnits(gpu, p.n, per, 3, new Rng(32));
      const at = check.map((s) => s * per);
      const [ys, scales, dxs] = [
        await readSlices(gpu, y, at, per),
        await readSlices(gpu, scale, at, per),
        await readSlices(gpu, dx, at, per),
      ];
      const one = { ...geom(p), n: 1 };
      const tol = { rtol: 1e-4, atol: 1e-5 };
      check.forEach((s, i) => {
        const xi = xs.subarray(s * per, (s + 1) * per);
        const ref = lrnForwardRef(one, xi);
        assertClose(ys.slices[i], ref.y, { ...tol, what: `y sample ${s}` });
        assertClose(scales.slices[i], ref.scale, { ...tol, what: `scale sample ${s}` });
        const dref = lrnBackwardRef(one, dys.subarray(s * per, (s + 1) * per), xi);
        assertClose(dxs.slices[i], dref, { ...tol, what: `dx sample ${s}` });
      });
      for (const t of [x, dy, y, scale, dx]) t.dispose();
      gpu.trimPool();
    });
  },
);

/** Shapes of the tests in ranges of samples (f32 and f16): the scalar path, then vec4. */
const RANGE_CASES: LrnParams[] = [
  { n: 9, c: 7, h: 3, w: 5, size: 5, alpha: 0.5, beta: 0.75, k: 2 }, // scalar path
  { n: 7, c: 6, h: 2, w: 4, size: 4, alpha: 1, beta: 0.6, k: 1 }, // vec4 path
];

Deno.test(
  "LRN split into ranges of samples (binding limit lowered) matches the CPU",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(33);
    for (const p of RANGE_CASES) {
      const g = geom(p);
      // Two samples per range.
      await withBindingLimit(Math.max(64, 2 * g.c * g.hw), async () => {
        const x = rng.normalArray(g.n * g.c * g.hw).map((v) => 2 * v);
        const dy = rng.normalArray(x.length);
        const out = await run(gpu, p, x, dy);
        const ref = lrnForwardRef(g, f32(x));
        const tol = { rtol: 1e-4, atol: 1e-5 };
        assertClose(out.y, ref.y, { ...tol, what: `y ${label(p)}` });
        assertClose(out.scale, ref.scale, { ...tol, what: `scale ${label(p)}` });
        assertClose(out.dx, lrnBackwardRef(g, dy, f32(x)), { ...tol, what: `dx ${label(p)}` });
      });
    }
  },
);
