// Tests of kernels/depthwise.ts: GPU vs the Float64 CPU reference, the CPU backward vs finite
// differences, and a PyTorch fixture (nn.Conv2d with groups = channels). f16 storage (the
// training configuration of --precision f16, and a mix of f32 and f16 tensors over ranges)
// against the reference fed the f16-rounded inputs.
import assert from "node:assert/strict";
import {
  checkDepthwise,
  depthwiseConv2dBackward,
  depthwiseConv2dForward,
  type DepthwiseParams,
} from "../kernels/depthwise.ts";
import {
  assertClose,
  checkGradient,
  type CloseOptions,
  F16_TEST,
  f32,
  GPU_TEST,
  type Numeric,
  outTol,
  Rng,
  stored,
  tensorOf,
  testGpu,
} from "./harness.ts";
import { depthwiseBackwardRef, depthwiseForwardRef, type DwGeom } from "./cpu_ref/depthwise.ts";
import { atDeviceLimit, deviceLimit, readSlices, sampleUnits, withBindingLimit } from "./big.ts";
import type { Gpu, Shape } from "../gpu/mod.ts";

function geom(p: DepthwiseParams): DwGeom {
  const two = (v: number | readonly [number, number] | undefined, d: number) =>
    v === undefined ? [d, d] : typeof v === "number" ? [v, v] : [v[0], v[1]];
  const [kh, kw] = two(p.kernel, 1);
  const [sh, sw] = two(p.stride, 1);
  const [ph, pw] = two(p.padding, 0);
  const [dh, dw] = two(p.dilation, 1);
  return { n: p.n, c: p.c, h: p.h, w: p.w, kh, kw, sh, sw, ph, pw, dh, dw };
}

const CASES: (DepthwiseParams & { bias?: boolean })[] = [
  { n: 2, c: 3, h: 7, w: 9, kernel: 3, padding: 1, bias: true }, // odd sizes, channels 3
  { n: 1, c: 1, h: 5, w: 5, kernel: 3, stride: 2, padding: 1 }, // batch 1, channel 1
  { n: 3, c: 5, h: 1, w: 1, kernel: 3, padding: 1, bias: true }, // 1x1 spatial
  { n: 2, c: 4, h: 8, w: 7, kernel: [3, 2], stride: [2, 3], padding: [1, 0], dilation: [2, 1] },
  { n: 2, c: 6, h: 12, w: 12, kernel: 3, stride: 2, padding: 1 }, // MobileNet stride-2 block
  { n: 1, c: 2, h: 5, w: 4, kernel: 5, stride: 3, padding: 2 }, // stride 3, large kernel
  { n: 1, c: 2, h: 7, w: 6, kernel: 3, dilation: 2, padding: 1 }, // stride 1, dilated
  { n: 2, c: 1, h: 4, w: 5, kernel: 2, padding: 2 }, // padding > (k - 1) * d
  { n: 1, c: 3, h: 9, w: 8, kernel: 3, stride: 2 }, // stride 2, no padding
  { n: 1, c: 2, h: 7, w: 7, kernel: 1, stride: 2 }, // stride > kernel: some inputs get nothing
  // weight gradient: up to ~430 units (row segments of 4 outputs) per channel are reduced
  // serially at 3x3 (the cases above; fewer for larger kernels); 2 * 33 * 9 = 594 units take the
  // workgroup reduction with one chunk, 3 * 40 * 10 = 1200 with two chunks (1024 units each)
  { n: 2, c: 3, h: 33, w: 35, kernel: 3, padding: 1 },
  { n: 3, c: 2, h: 40, w: 40, kernel: 3, padding: 1, bias: true },
];

function label(p: DepthwiseParams): string {
  return `n${p.n} c${p.c} ${p.h}x${p.w} k${p.kernel} s${p.stride ?? 1} p${p.padding ?? 0} ` +
    `d${p.dilation ?? 1}`;
}

Deno.test("depthwise CPU backward matches finite differences", () => {
  const rng = new Rng(11);
  for (
    const p of [
      { n: 2, c: 2, h: 5, w: 4, kernel: 3, stride: 2, padding: 1 },
      { n: 1, c: 3, h: 4, w: 5, kernel: [2, 3], padding: [1, 1], dilation: [2, 1] },
    ] as DepthwiseParams[]
  ) {
    const g = geom(p);
    const [, , oh, ow] = checkDepthwise(p);
    const x = rng.normalArray(g.n * g.c * g.h * g.w);
    const w = rng.normalArray(g.c * g.kh * g.kw);
    const b = rng.normalArray(g.c);
    const r = rng.normalArray(g.n * g.c * oh * ow); // loss = sum(y * r), so dy = r
    const loss = (xx: Float64Array, ww: Float64Array, bb: Float64Array) =>
      depthwiseForwardRef(g, xx, ww, bb).reduce((s, v, i) => s + v * r[i], 0);
    const { dx, dw, db } = depthwiseBackwardRef(g, r, x, w);
    checkGradient((v) => loss(v, w, b), x, dx, { what: `dx ${label(p)}` });
    checkGradient((v) => loss(x, v, b), w, dw, { what: `dw ${label(p)}` });
    checkGradient((v) => loss(x, w, v), b, db, { what: `db ${label(p)}` });
  }
});

Deno.test("depthwise GPU forward and backward match the CPU reference", GPU_TEST, async () => {
  const gpu = await testGpu();
  const rng = new Rng(5);
  for (const p of CASES) {
    const g = geom(p);
    const outShape = checkDepthwise(p);
    const x = rng.normalArray(g.n * g.c * g.h * g.w);
    const w = rng.normalArray(g.c * g.kh * g.kw);
    const b = p.bias ? rng.normalArray(g.c) : undefined;
    const dy = rng.normalArray(outShape.reduce((a, d) => a * d, 1));
    const xt = gpu.tensor(f32(x), { shape: [g.n, g.c, g.h, g.w] });
    const wt = gpu.tensor(f32(w), { shape: [g.c, 1, g.kh, g.kw] });
    const bt = b ? gpu.tensor(f32(b), { shape: [g.c] }) : undefined;
    const dyt = gpu.tensor(f32(dy), { shape: outShape });
    const y = gpu.empty(outShape);
    depthwiseConv2dForward({ y, x: xt, w: wt, b: bt }, p);
    const dx = gpu.empty(xt.shape);
    const dw = gpu.empty(wt.shape);
    const db = gpu.empty([g.c]);
    depthwiseConv2dBackward({ dx, dw, db, dy: dyt, x: xt, w: wt }, p);
    const ref = depthwiseBackwardRef(g, dy, x, w);
    const tol = { rtol: 1e-4, atol: 1e-4 };
    assertClose(await y.toArray(), depthwiseForwardRef(g, x, w, b), {
      ...tol,
      what: `y ${label(p)}`,
    });
    assertClose(await dx.toArray(), ref.dx, { ...tol, what: `dx ${label(p)}` });
    assertClose(await dw.toArray(), ref.dw, { ...tol, atol: 1e-3, what: `dw ${label(p)}` });
    assertClose(await db.toArray(), ref.db, { ...tol, atol: 1e-3, what: `db ${label(p)}` });
    for (const t of [xt, wt, bt, dyt, y, dx, dw, db]) t?.dispose();
  }
});

Deno.test("depthwise backward: accumulate, and dw / db / dx alone", GPU_TEST, async () => {
  const gpu = await testGpu();
  const rng = new Rng(9);
  for (
    const p of [
      { n: 2, c: 3, h: 6, w: 5, kernel: 3, stride: 2, padding: 1 }, // serial reduction
      { n: 3, c: 2, h: 41, w: 40, kernel: 3, stride: 1, padding: 1 }, // chunked: 1230 units
    ] as DepthwiseParams[]
  ) {
    const g = geom(p);
    const outShape = checkDepthwise(p);
    const x = rng.normalArray(g.n * g.c * g.h * g.w);
    const w = rng.normalArray(g.c * 9);
    const dy = rng.normalArray(outShape.reduce((a, d) => a * d, 1));
    const prevW = rng.normalArray(g.c * 9);
    const prevB = rng.normalArray(g.c);
    const ref = depthwiseBackwardRef(g, dy, x, w);
    const xt = gpu.tensor(f32(x), { shape: [g.n, g.c, g.h, g.w] });
    const wt = gpu.tensor(f32(w), { shape: [g.c, 1, 3, 3] });
    const dyt = gpu.tensor(f32(dy), { shape: outShape });
    const dw = gpu.tensor(f32(prevW), { shape: [g.c, 1, 3, 3] });
    const db = gpu.tensor(f32(prevB), { shape: [g.c] });
    const tol = { rtol: 1e-4, atol: 1e-3 };
    depthwiseConv2dBackward({ dw, db, dy: dyt, x: xt, w: wt }, { ...p, accumulate: true });
    assertClose(await dw.toArray(), ref.dw.map((v, i) => v + prevW[i]), { ...tol, what: "dw +=" });
    assertClose(await db.toArray(), ref.db.map((v, i) => v + prevB[i]), { ...tol, what: "db +=" });
    const dwOnly = gpu.tensor(f32(prevW), { shape: [g.c, 1, 3, 3] });
    depthwiseConv2dBackward({ dw: dwOnly, dy: dyt, x: xt, w: wt }, p); // overwrite
    assertClose(await dwOnly.toArray(), ref.dw, { ...tol, what: "dw alone" });
    const dbOnly = gpu.tensor(f32(prevB), { shape: [g.c] });
    depthwiseConv2dBackward({ db: dbOnly, dy: dyt, x: xt, w: wt }, p);
    assertClose(await dbOnly.toArray(), ref.db, { ...tol, what: "db alone" });
    const dx = gpu.empty(xt.shape);
    depthwiseConv2dBackward({ dx, dy: dyt, x: xt, w: wt }, p);
    assertClose(await dx.toArray(), ref.dx, { rtol: 1e-4, atol: 1e-4, what: "dx alone" });
    for (const t of [xt, wt, dyt, dw, db, dwOnly, dbOnly, dx]) t.dispose();
  }
});

Deno.test(
  "depthwise: inputs no output reads (even Inf) do not leak into y, dx, dw",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(13);
    // stride 2, no padding, w = 8: ow = 3, so column 7 is never read; the 4-output row blocks of
    // the kernels must not let it in (0 * Inf = NaN). 8 rows: serial weight reduction; 522 rows:
    // chunked.
    for (const h of [8, 522]) {
      const p: DepthwiseParams = { n: 2, c: 2, h, w: 8, kernel: 3, stride: 2 };
      const g = geom(p);
      const outShape = checkDepthwise(p);
      const x = rng.normalArray(g.n * g.c * g.h * g.w).map((v, i) => (i % 8 === 7 ? Infinity : v));
      const w = rng.normalArray(g.c * 9);
      const dy = rng.normalArray(outShape.reduce((a, d) => a * d, 1));
      const xt = gpu.tensor(f32(x), { shape: [g.n, g.c, g.h, g.w] });
      const wt = gpu.tensor(f32(w), { shape: [g.c, 1, 3, 3] });
      const dyt = gpu.tensor(f32(dy), { shape: outShape });
      const y = gpu.empty(outShape), dx = gpu.empty(xt.shape), dw = gpu.empty(wt.shape);
      depthwiseConv2dForward({ y, x: xt, w: wt }, p);
      depthwiseConv2dBackward({ dx, dw, dy: dyt, x: xt, w: wt }, p);
      const ref = depthwiseBackwardRef(g, dy, x, w);
      const tol = { rtol: 1e-4, atol: 1e-3 };
      assertClose(await y.toArray(), depthwiseForwardRef(g, x, w), { ...tol, what: `y h${h}` });
      assertClose(await dx.toArray(), ref.dx, { ...tol, what: `dx h${h}` });
      assertClose(await dw.toArray(), ref.dw, { ...tol, what: `dw h${h}` });
      for (const t of [xt, wt, dyt, y, dx, dw]) t.dispose();
    }
  },
);

Deno.test("depthwise matches PyTorch (nn.Conv2d groups=c) fixture", GPU_TEST, async () => {
  const gpu = await testGpu();
  const fx = JSON.parse(
    await Deno.readTextFile(new URL("./fixtures/norm_pool_depthwise.json", import.meta.url)),
  );
  for (const c of fx.cases) {
    const p: DepthwiseParams = {
      n: c.n,
      c: c.c,
      h: c.h,
      w: c.w,
      kernel: c.kernel,
      stride: c.stride,
      padding: c.padding,
      dilation: c.dilation,
    };
    const shape = checkDepthwise(p);
    assert.deepEqual(shape, c.y_shape);
    const x = gpu.tensor(f32(c.x), { shape: [c.n, c.c, c.h, c.w] });
    const w = gpu.tensor(f32(c.weight), { shape: [c.c, 1, c.kernel[0], c.kernel[1]] });
    const b = gpu.tensor(f32(c.bias), { shape: [c.c] });
    const dy = gpu.tensor(f32(c.dy), { shape });
    const y = gpu.empty(shape);
    depthwiseConv2dForward({ y, x, w, b }, p);
    const dx = gpu.empty(x.shape), dw = gpu.empty(w.shape), db = gpu.empty([c.c]);
    depthwiseConv2dBackward({ dx, dw, db, dy, x, w }, p);
    const tol = { rtol: 1e-4, atol: 1e-5 };
    assertClose(await y.toArray(), c.y, { ...tol, what: "torch y" });
    assertClose(await dx.toArray(), c.dx, { ...tol, what: "torch dx" });
    assertClose(await dw.toArray(), c.dweight, { ...tol, what: "torch dw" });
    assertClose(await db.toArray(), c.dbias, { ...tol, what: "torch db" });
  }
});

Deno.test("depthwise rejects bad shapes and values", GPU_TEST, async () => {
  const gpu = await testGpu();
  const p: DepthwiseParams = { n: 1, c: 4, h: 6, w: 6, kernel: 3, padding: 1 };
  assert.deepEqual(checkDepthwise(p), [1, 4, 6, 6]);
  assert.throws(() => checkDepthwise({ ...p, kernel: 0 }), RangeError);
  assert.throws(() => checkDepthwise({ ...p, stride: [1, 0] }), RangeError);
  assert.throws(() => checkDepthwise({ ...p, padding: -1 }), RangeError);
  assert.throws(() => checkDepthwise({ ...p, h: 2, padding: 0 }), /too small/);
  assert.throws(() => checkDepthwise({ ...p, n: 1.5 }), RangeError);
  const x = gpu.zeros([1, 4, 6, 6]);
  const y = gpu.empty([1, 4, 6, 6]);
  assert.throws(
    () => depthwiseConv2dForward({ y, x, w: gpu.zeros([4, 4, 3, 3]) }, p),
    (e: Error) =>
      e instanceof TypeError &&
      /depthwiseConv2dForward: w has shape \[4, 4, 3, 3\], expected \[4, 1, 3, 3\]/.test(
        e.message,
      ),
  );
  assert.throws(
    () => depthwiseConv2dForward({ y: gpu.empty([1, 4, 5, 5]), x, w: gpu.zeros([4, 1, 3, 3]) }, p),
    TypeError,
  );
  assert.throws(
    () =>
      depthwiseConv2dForward({
        y,
        x: gpu.zeros([1, 4, 6, 6], { dtype: "i32" }),
        w: gpu.zeros([4, 1, 3, 3]),
      }, p),
    /must be f32/,
  );
});

// ------------------------------------------------------------ beyond the device limits ----

/** Runs forward and the full backward; returns the GPU tensors (caller disposes). */
function runAll(
  gpu: Gpu,
  p: DepthwiseParams,
  x: Float32Array,
  w: Float32Array,
  dy: Float32Array,
  b?: Float32Array,
) {
  const g = geom(p);
  const outShape = checkDepthwise(p);
  const xt = gpu.tensor(x, { shape: [g.n, g.c, g.h, g.w] });
  const wt = gpu.tensor(w, { shape: [g.c, 1, g.kh, g.kw] });
  const bt = b ? gpu.tensor(b, { shape: [g.c] }) : undefined;
  const dyt = gpu.tensor(dy, { shape: outShape });
  const y = gpu.empty(outShape), dx = gpu.empty(xt.shape);
  const dw = gpu.empty(wt.shape), db = gpu.empty([g.c]);
  depthwiseConv2dForward({ y, x: xt, w: wt, b: bt }, p);
  depthwiseConv2dBackward({ dx, dw, db, dy: dyt, x: xt, w: wt }, p);
  return { xt, wt, bt, dyt, y, dx, dw, db };
}

Deno.test(
  "depthwise 3x3/2 on MobileNet's [256, 64, 48, 48] (151 MB, past one binding) matches the CPU",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    await atDeviceLimit(gpu, async () => {
      const p: DepthwiseParams = { n: 256, c: 64, h: 48, w: 48, kernel: 3, stride: 2, padding: 1 };
      const g = geom(p);
      const [, , oh, ow] = checkDepthwise(p);
      const hw = g.h * g.w, ohw = oh * ow;
      assert.ok(g.n * g.c * hw > deviceLimit(gpu));
      // Samples repeat with period 8 (x and dy): the Float64 reference of 8 samples gives y and dx
      // of every sample and dw, db of all 256 (32 times larger). The binding ranges end inside
      // sample 227 (planes) and after it (samples): not multiples of 8.
      const P = 8, per = g.c * hw, operOut = g.c * ohw;
      const rng = new Rng(14);
      const bx = f32(rng.normalArray(P * per)), bdy = f32(rng.normalArray(P * operOut));
      const w = f32(rng.normalArray(g.c * 9)), b = f32(rng.normalArray(g.c));
      const x = new Float32Array(g.n * per), dy = new Float32Array(g.n * operOut);
      for (let s = 0; s < g.n; s += P) {
        x.set(bx, s * per);
        dy.set(bdy, s * operOut);
      }
      const one = { ...g, n: P };
      const yRef = depthwiseForwardRef(one, bx, w, b);
      const ref = depthwiseBackwardRef(one, bdy, bx, w);
      const r = runAll(gpu, p, x, w, dy, b);
      const k = g.n / P;
      // dw, db: sums of 147,456 products of O(1) values.
      assertClose(await r.dw.toArray(), ref.dw.map((v) => k * v), { rtol: 1e-4, atol: 1e-2 });
      assertClose(await r.db.toArray(), ref.db.map((v) => k * v), { rtol: 1e-4, atol: 1e-2 });
      const planes = sampleUnits(gpu, g.n * g.c, hw, 30, rng);
      const ys = await readSlices(gpu, r.y, planes.map((q) => q * ohw), ohw);
      const dxs = await readSlices(gpu, r.dx, planes.map((q) => q * hw), hw);
      const tol = { rtol: 1e-4, atol: 1e-4 };
      planes.forEach((q, i) => {
        const o = q % (P * g.c);
        assertClose(ys.slices[i], yRef.subarray(o * ohw, (o + 1) * ohw), {
          ...tol,
          what: `y ${q}`,
        });
        assertClose(dxs.slices[i], ref.dx.subarray(o * hw, (o + 1) * hw), {
          ...tol,
          what: `dx ${q}`,
        });
      });
      for (const t of Object.values(r)) t?.dispose();
      gpu.trimPool();
    });
  },
);

Deno.test(
  "depthwise 7x7/2: the weight reduction sized by its loop count matches the CPU",
  GPU_TEST,
  async () => {
    // 2 x 32 rows x 8 blocks of 4 outputs = 512 units per channel of up to ~150 loop iterations
    // each (counting every loop, unrolled or not): too many for one serial thread within the
    // loop budget, so the chunked reduction runs.
    const gpu = await testGpu();
    const rng = new Rng(15);
    const p: DepthwiseParams = { n: 2, c: 3, h: 64, w: 64, kernel: 7, stride: 2, padding: 3 };
    const g = geom(p);
    const outShape = checkDepthwise(p);
    const x = rng.normalArray(g.n * g.c * g.h * g.w);
    const w = rng.normalArray(g.c * g.kh * g.kw);
    const dy = rng.normalArray(outShape.reduce((a, d) => a * d, 1));
    const r = runAll(gpu, p, f32(x), f32(w), f32(dy));
    const ref = depthwiseBackwardRef(g, dy, x, w);
    const tol = { rtol: 1e-4, atol: 1e-3 };
    assertClose(await r.y.toArray(), depthwiseForwardRef(g, x, w), { ...tol, what: "y" });
    assertClose(await r.dx.toArray(), ref.dx, { ...tol, what: "dx" });
    assertClose(await r.dw.toArray(), ref.dw, { ...tol, what: "dw" });
    assertClose(await r.db.toArray(), ref.db, { ...tol, what: "db" });
    for (const t of Object.values(r)) t?.dispose();
  },
);

Deno.test(
  "depthwise split into ranges of planes and samples (binding limit lowered) matches the CPU",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(16);
    for (const p of CASES.filter((q) => q.n * q.c > 1)) {
      const g = geom(p);
      const outShape = checkDepthwise(p);
      const plane = Math.max(g.h * g.w, outShape[2] * outShape[3]);
      // 1.5 samples of planes per range (boundaries inside samples), one sample per range for
      // the weight gradient.
      await withBindingLimit(Math.max(64, Math.floor(1.5 * g.c * plane)), async () => {
        const x = rng.normalArray(g.n * g.c * g.h * g.w);
        const w = rng.normalArray(g.c * g.kh * g.kw);
        const b = p.bias ? rng.normalArray(g.c) : undefined;
        const dy = rng.normalArray(outShape.reduce((a, d) => a * d, 1));
        const r = runAll(gpu, p, f32(x), f32(w), f32(dy), b ? f32(b) : undefined);
        const ref = depthwiseBackwardRef(g, dy, x, w);
        const tol = { rtol: 1e-4, atol: 1e-4 };
        assertClose(await r.y.toArray(), depthwiseForwardRef(g, x, w, b), {
          ...tol,
          what: `y ${label(p)}`,
        });
        assertClose(await r.dx.toArray(), ref.dx, { ...tol, what: `dx ${label(p)}` });
        assertClose(await r.dw.toArray(), ref.dw, { ...tol, atol: 1e-3, what: `dw ${label(p)}` });
        assertClose(await r.db.toArray(), ref.db, { ...tol, atol: 1e-3, what: `db ${label(p)}` });
        for (const t of Object.values(r)) t?.dispose();
      });
    }
  },
);

// ------------------------------------------------------------------------ f16 storage ----

type Float = "f32" | "f16";
/** Storage types of every tensor of a forward + backward. */
type DwDTypes = Record<"x" | "w" | "b" | "y" | "dy" | "dx" | "dw" | "db", Float>;

/** The training configuration of --precision f16: activations, gradients and weights f16. */
const TRAIN_F16: DwDTypes = {
  x: "f16",
  w: "f16",
  b: "f32",
  y: "f16",
  dy: "f16",
  dx: "f16",
  dw: "f32",
  db: "f32",
};

/** Another mix: f32 x, w and y with f16 bias, dy, dx and f16 parameter gradients. */
const MIXED: DwDTypes = {
  x: "f32",
  w: "f32",
  b: "f16",
  y: "f32",
  dy: "f16",
  dx: "f16",
  dw: "f16",
  db: "f16",
};

/**
 * One f16 case: forward (with a bias), then the backward to dx, and to dw and db accumulating
 * into previous values, each tensor stored as `dt` says; checked against the Float64 reference
 * fed what the tensors hold. f16 outputs get `f16Tolerance(max |ref|, extra)`, with `extra`
 * from the length of the f32 sum behind each output (up to about length * 2^-24 of the sum of
 * magnitudes: length * 2^-13 in units of the f16 rounding, 2^-11); f32 outputs the tolerances
 * of the f32 tests.
 */
async function halfCase(gpu: Gpu, p: DepthwiseParams, rng: Rng, dt: DwDTypes): Promise<void> {
  const g = geom(p);
  const outShape = checkDepthwise(p);
  const [, , oh, ow] = outShape;
  const what = `${dt === TRAIN_F16 ? "train-f16" : "mixed"} ${label(p)}`;
  const xShape = [g.n, g.c, g.h, g.w], wShape = [g.c, 1, g.kh, g.kw];
  const x = stored(rng.normalArray(g.n * g.c * g.h * g.w), dt.x);
  const w = stored(rng.normalArray(g.c * g.kh * g.kw), dt.w);
  const b = stored(rng.normalArray(g.c), dt.b);
  const dy = stored(rng.normalArray(g.n * g.c * oh * ow), dt.dy);
  const prevW = stored(rng.normalArray(g.c * g.kh * g.kw), dt.dw);
  const prevB = stored(rng.normalArray(g.c), dt.db);
  const xt = tensorOf(gpu, x, { dtype: dt.x, shape: xShape });
  const wt = tensorOf(gpu, w, { dtype: dt.w, shape: wShape });
  const bt = tensorOf(gpu, b, { dtype: dt.b, shape: [g.c] });
  const dyt = tensorOf(gpu, dy, { dtype: dt.dy, shape: outShape });
  const y = gpu.empty(outShape, { dtype: dt.y }), dx = gpu.empty(xShape, { dtype: dt.dx });
  const dw = tensorOf(gpu, prevW, { dtype: dt.dw, shape: wShape });
  const db = tensorOf(gpu, prevB, { dtype: dt.db, shape: [g.c] });
  depthwiseConv2dForward({ y, x: xt, w: wt, b: bt }, p);
  depthwiseConv2dBackward({ dx, dw, db, dy: dyt, x: xt, w: wt }, { ...p, accumulate: true });
  const [ys, dxs, dws, dbs] = await Promise.all([y, dx, dw, db].map((t) => t.toArray()));
  for (const [t, d] of [[y, dt.y], [dx, dt.dx], [dw, dt.dw], [db, dt.db]] as const) {
    assert.equal(t.dtype, d);
  }
  const tolFor = (d: Float, ref: Numeric, length: number, f32: CloseOptions, name: string) =>
    outTol(d, ref, { extra: length * 2 ** -13, f32, what: `${name} ${what}` });
  const yRef = depthwiseForwardRef(g, x, w, b);
  const ref = depthwiseBackwardRef(g, dy, x, w);
  const expW = ref.dw.map((v, i) => v + prevW[i]), expB = ref.db.map((v, i) => v + prevB[i]);
  const taps = g.kh * g.kw, outputs = g.n * oh * ow;
  const tol = { rtol: 1e-4, atol: 1e-4 }, gtol = { rtol: 1e-4, atol: 1e-3 };
  // y: kh * kw taps and the bias; dx: at most kh * kw taps; dw, db: n * oh * ow outputs
  assertClose(ys, yRef, tolFor(dt.y, yRef, taps + 1, tol, "y"));
  assertClose(dxs, ref.dx, tolFor(dt.dx, ref.dx, taps, tol, "dx"));
  assertClose(dws, expW, tolFor(dt.dw, expW, outputs + 1, gtol, "dw +="));
  assertClose(dbs, expB, tolFor(dt.db, expB, outputs + 1, gtol, "db +="));
  for (const t of [xt, wt, bt, dyt, y, dx, dw, db]) t.dispose();
}

/** Cases of the f16 tests: every kernel (row convolution, strided backward, both reductions). */
const HALF_CASES: DepthwiseParams[] = [
  { n: 2, c: 3, h: 7, w: 9, kernel: 3, padding: 1 }, // stride 1: flipped row conv; serial dw
  // strided backward to the input (blocks of 2x3), dilation, rectangular kernel
  { n: 2, c: 4, h: 8, w: 7, kernel: [3, 2], stride: [2, 3], padding: [1, 0], dilation: [2, 1] },
  { n: 1, c: 3, h: 9, w: 8, kernel: 3, stride: 2 }, // MobileNet's stride 2, odd sizes
  // 2 * 33 * 9 = 594 units per channel: the chunked weight reduction
  { n: 2, c: 3, h: 33, w: 35, kernel: 3, padding: 1 },
];

Deno.test(
  "depthwise f16 (training configuration: f16 x, w, y, dy, dx; f32 bias, dw, db) matches the CPU on f16-rounded inputs",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(21);
    for (const p of HALF_CASES) await halfCase(gpu, p, rng, TRAIN_F16);
  },
);

Deno.test(
  "depthwise with f32 x, w, y and f16 bias, dy, dx, dw, db, split into ranges of planes and samples, matches the CPU",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(22);
    for (const p of HALF_CASES) {
      const [, , oh, ow] = checkDepthwise(p);
      const plane = Math.max(p.h * p.w, oh * ow);
      // 1.5 samples of planes per range (f32 and f16 bindings start at different bases)
      await withBindingLimit(
        Math.max(64, Math.floor(1.5 * p.c * plane)),
        () => halfCase(gpu, p, rng, MIXED),
      );
    }
    // the training configuration over ranges too: one sample (4 planes of 56) per range
    await withBindingLimit(4 * 56, () => halfCase(gpu, HALF_CASES[1], rng, TRAIN_F16));
  },
);

Deno.test("depthwise rejects non-float tensors, naming the op", GPU_TEST, async () => {
  const gpu = await testGpu();
  const p: DepthwiseParams = { n: 1, c: 2, h: 5, w: 5, kernel: 3, padding: 1 };
  const x = gpu.zeros([1, 2, 5, 5]), w = gpu.zeros([2, 1, 3, 3]), y = gpu.empty([1, 2, 5, 5]);
  const bad = (op: string, name: string) => (e: Error) =>
    e instanceof TypeError && new RegExp(`^${op}: ${name} must be f32 or f16`).test(e.message);
  const u = (shape: Shape) => gpu.zeros(shape, { dtype: "u32" });
  assert.throws(
    () => depthwiseConv2dForward({ y, x: u(x.shape), w }, p),
    bad("depthwiseConv2dForward", "x"),
  );
  assert.throws(
    () => depthwiseConv2dForward({ y, x, w, b: u([2]) }, p),
    bad("depthwiseConv2dForward", "b"),
  );
  assert.throws(
    () => depthwiseConv2dBackward({ dx: u(x.shape), dy: y, x, w }, p),
    bad("depthwiseConv2dBackward", "dx"),
  );
  assert.throws(
    () =>
      depthwiseConv2dBackward({ dw: gpu.zeros([2, 1, 3, 3], { dtype: "i32" }), dy: y, x, w }, p),
    bad("depthwiseConv2dBackward", "dw"),
  );
  await gpu.sync();
});
