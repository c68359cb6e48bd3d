// Tests of kernels/depthwise/: the suites of tests/ops/depthwise.ts (GPU vs the Float64 CPU
// reference in f32, in the training configuration of --precision f16 and a mix of f32 and f16
// tensors, over ranges; the CPU backward vs finite differences), accumulation and partial
// backwards, unread inputs, a PyTorch fixture (nn.Conv2d with groups = channels), validation, and
// a tensor past one binding.
import assert from "node:assert/strict";
import {
  checkDepthwise,
  depthwiseConv2dBackward,
  depthwiseConv2dForward,
  type DepthwiseParams,
} from "../kernels/depthwise/index.ts";
import { assertClose, f32, GPU_TEST, Rng, testGpu } from "./harness.ts";
import { depthwiseBackwardRef, depthwiseForwardRef } from "./cpu_ref/depthwise.ts";
import { atDeviceLimit, deviceLimit, readSlices, sampleUnits } from "./big.ts";
import type { Gpu, Shape } from "../gpu/mod.ts";
import { runOp, testOp } from "./_op.ts";
import { depthwise, DW_SUITES, dwGeom } from "./ops/depthwise.ts";
import { WEBGPU_DEFAULT_PROFILE } from "../kernels/_adapter.ts";
import { depthwiseWindow } from "../kernels/depthwise/geometry.ts";
import { planDepthwise, planePlanes, rowTile, tileBlocks } from "../kernels/depthwise/plan.ts";

for (const suite of DW_SUITES) testOp(suite);

Deno.test("depthwise backward: accumulate, and dw / db / dx alone", GPU_TEST, async () => {
  const gpu = await testGpu();
  const rng = new Rng(9);
  for (
    const p of [
      { n: 2, c: 3, h: 6, w: 5, kernel: 3, stride: 2, padding: 1 }, // serial reduction
      { n: 3, c: 2, h: 41, w: 40, kernel: 3, stride: 1, padding: 1 }, // chunked: 1230 units
    ] as DepthwiseParams[]
  ) {
    const g = dwGeom(p);
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
    // The vec4 tiles (widths multiples of 4): kernel [3, 1] at stride 2, 20 x 16: odd columns
    // and row 19 are never read, and the weight gradient's bands of 2 rows (9 output rows; 30
    // samples: 540 units, past the serial reduction) have a row past the output that would read
    // rows 18 and 19.
    const cases: [DepthwiseParams, (i: number) => boolean][] = [8, 522].map((h) => [
      { n: 2, c: 2, h, w: 8, kernel: 3, stride: 2 },
      (i: number) => i % 8 === 7,
    ]);
    cases.push([
      { n: 30, c: 2, h: 20, w: 16, kernel: [3, 1], stride: 2 },
      (i: number) => i % 2 === 1 || i % 320 >= 19 * 16,
    ]);
    for (const [p, unread] of cases) {
      const h = p.h;
      const g = dwGeom(p);
      const outShape = checkDepthwise(p);
      const x = rng.normalArray(g.n * g.c * g.h * g.w).map((v, i) => (unread(i) ? Infinity : v));
      const w = rng.normalArray(g.c * g.kh * g.kw);
      const dy = rng.normalArray(outShape.reduce((a, d) => a * d, 1));
      const out = await runOp(gpu, depthwise(p), { data: { x, w, dy } });
      const ref = depthwiseBackwardRef(g, dy, x, w);
      const tol = { rtol: 1e-4, atol: 1e-3 };
      assertClose(out.y, depthwiseForwardRef(g, x, w), { ...tol, what: `y h${h}` });
      assertClose(out.dx, ref.dx, { ...tol, what: `dx h${h}` });
      assertClose(out.dw, ref.dw, { ...tol, what: `dw h${h}` });
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
    assert.deepEqual(checkDepthwise(p), c.y_shape);
    const data = { x: c.x, w: c.weight, b: c.bias, dy: c.dy };
    const out = await runOp(gpu, depthwise({ ...p, bias: true }), { data });
    const tol = { rtol: 1e-4, atol: 1e-5 };
    assertClose(out.y, c.y, { ...tol, what: "torch y" });
    assertClose(out.dx, c.dx, { ...tol, what: "torch dx" });
    assertClose(out.dw, c.dweight, { ...tol, what: "torch dw" });
    assertClose(out.db, c.dbias, { ...tol, what: "torch db" });
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
  const g = dwGeom(p);
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
      const g = dwGeom(p);
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

// ------------------------------------------------------------------------ f16 storage ----

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

Deno.test("planDepthwise: paths, ranges and chunks as plain values", () => {
  const profile = WEBGPU_DEFAULT_PROFILE;
  const op = "depthwiseConv2dBackward";
  const plan = (p: DepthwiseParams, limit?: number) =>
    planDepthwise(
      { op, window: depthwiseWindow(op, p), call: "backward", dx: true, dw: true, db: true },
      profile,
      limit,
    );
  // Stride 1: the input gradient is the row convolution of dy with the flipped kernel.
  const s1 = plan({ n: 3, c: 2, h: 41, w: 40, kernel: 3 });
  const row = s1.inputGrad;
  assert.ok(row?.path === "rowConv");
  const g = row.window;
  assert.deepEqual([g.h, g.w, g.oh, g.ow, g.ph, g.pw], [39, 38, 41, 40, 2, 2]);
  assert.equal(row.flip, true);
  assert.equal(row.owb, 10);
  // 3 * 39 * 10 = 1170 units per channel: chunked.
  assert.equal(s1.weightGrad?.path, "chunked");
  // Strided: the gather over blocks; a short reduction: serial.
  const s2 = plan({ n: 2, c: 3, h: 6, w: 5, kernel: 3, stride: 2, padding: 1 });
  const gather = s2.inputGrad;
  assert.ok(gather?.path === "blockGather");
  assert.deepEqual([gather.hb, gather.wb], [3, 3]);
  assert.deepEqual(s2.weightGrad, {
    path: "serial",
    window: s2.window,
    accumulate: false,
    units: 2 * 3 * 1,
  });
  // Ranges: MobileNet's first strided layer past one 128 MiB binding; chunks numbered in order.
  const big = plan({ n: 256, c: 64, h: 48, w: 48, kernel: 3, stride: 2, padding: 1 });
  assert.ok(big.inputGrad !== undefined && big.inputGrad.ranges.length === 2);
  const wg = big.weightGrad;
  assert.ok(wg?.path === "chunked");
  assert.deepEqual(wg.ranges.map((r) => r.samples), [[0, 227], [227, 256]]);
  assert.equal(wg.ranges[1].chunkOff, wg.ranges[0].chunks);
  assert.equal(wg.chunks, wg.ranges[0].chunks + wg.ranges[1].chunks);
  // A lowered binding limit splits planes; the forward pass plans alone.
  const fwd = planDepthwise(
    { op, window: depthwiseWindow(op, { n: 2, c: 3, h: 9, w: 10, kernel: 3 }), call: "forward" },
    profile,
    200,
  );
  assert.deepEqual(fwd.forward?.ranges, [[0, 2], [2, 4], [4, 6]]);
  assert.equal(fwd.inputGrad, undefined);
  assert.equal(fwd.weightGrad, undefined);
  // Widths multiples of 4: vec4 row tiles (whole rows of up to 12 vec4s, rows per thread that
  // fill SIMD batches of 8); the 48x48 forward, its flipped input gradient, and stride 2.
  const mb = (h: number, stride: number) =>
    plan({ n: 32, c: 32, h, w: h, kernel: 3, stride, padding: 1 });
  const mesa = { ...profile, mesaCpu: true };
  const mbMesa = (h: number, stride: number) =>
    planDepthwise({
      op,
      window: depthwiseWindow(op, { n: 32, c: 32, h, w: h, kernel: 3, stride, padding: 1 }),
      call: "backward",
      dx: true,
      dw: true,
      db: true,
    }, mesa);
  const m48 = mb(48, 1);
  assert.ok(m48.inputGrad?.path === "rowConv");
  assert.deepEqual(m48.inputGrad.tile, { cx: 12, ry: 6, wg: 8 });
  // the weight gradient: bands of 6 rows per thread, added by the chunked reduction's pass 2
  // (on Mesa's CPU adapters; elsewhere the chunked reduction's pass 1)
  assert.equal(m48.weightGrad?.path, "chunked");
  assert.deepEqual(mbMesa(48, 1).weightGrad, {
    path: "tile",
    window: m48.window,
    accumulate: false,
    tile: { cx: 12, ry: 6, wg: 8 },
    bands: 8,
  });
  const forward = (p: DepthwiseParams) =>
    planDepthwise({ op, window: depthwiseWindow(op, p), call: "forward" }, profile).forward;
  const s48 = forward({ n: 2, c: 3, h: 48, w: 48, kernel: 3, stride: 2, padding: 1 });
  assert.ok(s48?.path === "rowConv");
  assert.deepEqual(s48.tile, { cx: 6, ry: 3, wg: 8 });
  const odd = forward({ n: 2, c: 3, h: 48, w: 48, kernel: 3, stride: 2 }); // 23 x 23
  assert.ok(odd?.path === "rowConv" && odd.tile === undefined);
  assert.equal(
    rowTile(depthwiseWindow(op, { n: 1, c: 1, h: 9, w: 9, kernel: 3 }), profile),
    undefined,
  );
  assert.equal(
    rowTile(depthwiseWindow(op, { n: 1, c: 1, h: 9, w: 56, kernel: 3, padding: 1 }), profile)?.cx,
    2, // 14 vec4s a row: tiles of a divisor
  );
  assert.deepEqual(tileBlocks(3, 2, 1, 1, 6), [-1, 11]);
  // Small planes: one thread per plane (6x6), or per 4 planes (3x3); every pass, strides 1 and 2.
  const m6 = mb(6, 1);
  assert.deepEqual(m6.inputGrad, {
    path: "plane",
    window: m6.window,
    mode: "dx",
    pp: 1,
    ranges: [[0, 32 * 32]],
  });
  assert.deepEqual(m6.weightGrad, { path: "plane", window: m6.window, accumulate: false, pp: 1 });
  const m3 = mb(6, 2);
  assert.ok(m3.inputGrad?.path === "plane" && m3.inputGrad.pp === 4);
  assert.ok(m3.weightGrad?.path === "plane" && m3.weightGrad.pp === 4);
  const w3 = (c: number) => depthwiseWindow(op, { n: 3, c, h: 3, w: 3, kernel: 3, padding: 1 });
  assert.equal(planePlanes(w3(4), profile), 4);
  assert.equal(planePlanes(w3(5), profile), undefined); // 15 planes: not whole groups of 4
  assert.equal(mb(24, 1).inputGrad?.path, "rowConv"); // 576 elements: past the plane path
  // Ranges of the plane path: whole groups of 4 planes.
  const ranged = planDepthwise({ op, window: w3(4), call: "forward" }, profile, 40);
  assert.deepEqual(ranged.forward?.ranges, [[0, 4], [4, 8], [8, 12]]);
  assert.throws(
    () => plan({ n: 1, c: 1, h: 300, w: 300, kernel: 61 }),
    /kernel \[61, 61\] with stride 1 and dilation 1 is too large/,
  );
});
