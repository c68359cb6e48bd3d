// Tests of kernels/depthwise.ts: GPU vs the Float64 CPU reference, the CPU backward vs finite
// differences, and a PyTorch fixture (nn.Conv2d with groups = channels).
import assert from "node:assert/strict";
import {
  checkDepthwise,
  depthwiseConv2dBackward,
  depthwiseConv2dForward,
  type DepthwiseParams,
} from "../kernels/depthwise.ts";
import { assertClose, checkGradient, f32, GPU_TEST, Rng, testGpu } from "./harness.ts";
import { depthwiseBackwardRef, depthwiseForwardRef, type DwGeom } from "./cpu_ref/depthwise.ts";
import { atDeviceLimit, deviceLimit, readSlices, sampleUnits, withBindingLimit } from "./big.ts";
import type { Gpu } from "../gpu/mod.ts";

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
