// Tests of kernels/pool/: the suites of tests/ops/pool.ts (GPU vs the Float64 CPU references in
// f32, f16 mixes and ranges of planes, the CPU backward vs finite differences), tie handling,
// PyTorch fixtures (AvgPool2d with padding, MaxPool2d with ties), validation, and a tensor past
// one binding.
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
} from "../kernels/pool/index.ts";
import { assertClose, F16_TEST, GPU_TEST, Rng, testGpu } from "./harness.ts";
import { maxPoolBackwardRef, maxPoolForwardRef } from "./cpu_ref/pool.ts";
import type { Gpu } from "../gpu/mod.ts";
import { atDeviceLimit, deviceLimit, fastFill, readSlices, sampleUnits } from "./big.ts";
import { runOp, testOp } from "./_op.ts";
import { GLOBAL_POOL_SUITES, pool2d, POOL_SUITES, poolGeom, poolLabel } from "./ops/pool.ts";
import { WEBGPU_DEFAULT_PROFILE } from "../kernels/_adapter.ts";
import { poolWindow } from "../kernels/pool/geometry.ts";
import { planGlobalAvgPool, planPool2d } from "../kernels/pool/plan.ts";

for (const suite of POOL_SUITES) testOp(suite);
for (const suite of GLOBAL_POOL_SUITES) testOp(suite);

/** Max and avg pooling of `x` with output gradient `dy` on the GPU (f32): what the tensors hold. */
async function run(gpu: Gpu, p: Pool2dParams, x: ArrayLike<number>, dy: ArrayLike<number>) {
  return await runOp(gpu, pool2d(p), { data: { x, dy } });
}

Deno.test(
  "max pool ties keep the first index; -inf windows; overlapping backward sums",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    // All-equal input: every argmax is the first in-bounds element of its window.
    const p: Pool2dParams = { n: 1, c: 2, h: 5, w: 5, kernel: 3, stride: 2, padding: 1 };
    const g = poolGeom(p);
    const ones = new Float64Array(50).fill(1);
    const dy = new Float64Array(18).map((_, i) => i + 1);
    const out = await run(gpu, p, ones, dy);
    // windows start at rows/cols -1, 1, 3 -> first in-bounds rows/cols 0, 1, 3
    const first = [0, 1, 3].flatMap((r) => [0, 1, 3].map((c) => r * 5 + c));
    assert.deepEqual([...out.argmax], [...first, ...first]);
    assertClose(out.dx, maxPoolBackwardRef(g, dy, Int32Array.from([...first, ...first])), {
      what: "tie dx",
    });
    // -inf everywhere: y = -inf, argmax = first in-bounds element.
    const neg = await run(gpu, p, new Float64Array(50).fill(-Infinity), dy);
    assert.ok(neg.y.every((v) => v === -Infinity));
    assert.deepEqual([...neg.argmax], [...first, ...first]);
    // NaN propagates and the last NaN of the window wins (PyTorch: val > max || isnan(val)):
    // torch.nn.functional.max_pool2d([[1, nan, 5, 2], [3, nan, 1, 1]], 2) -> [nan, 5], [5, 2]
    const nan = await run(
      gpu,
      { n: 1, c: 1, h: 2, w: 4, kernel: 2 },
      [1, NaN, 5, 2, 3, NaN, 1, 1],
      [1, 1],
    );
    assert.ok(Number.isNaN(nan.y[0]));
    assert.equal(nan.y[1], 5);
    assert.deepEqual([...nan.argmax], [5, 2]);
    // AlexNet 3/2 overlap: a single peak shared by 4 windows receives the sum of their dy.
    const q: Pool2dParams = { n: 1, c: 1, h: 5, w: 5, kernel: 3, stride: 2 };
    const x = new Float64Array(25);
    x[2 * 5 + 2] = 5; // the centre is in all four 3x3 windows
    const o = await run(gpu, q, x, new Float64Array([1, 2, 3, 4]));
    assert.deepEqual([...o.argmax], [12, 12, 12, 12]);
    assert.equal(o.dx[12], 10);
    assert.equal([...o.dx].reduce((s, v) => s + Math.abs(v), 0), 10);
  },
);

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
    assertClose(out.ya, c.y, { rtol: 1e-5, atol: 1e-6, what: "torch avg y" });
    assertClose(out.dxa, c.dx, { rtol: 1e-5, atol: 1e-6, what: "torch avg dx" });
  }
});

Deno.test("max pool matches PyTorch fixture (ties, indices, dx)", GPU_TEST, async () => {
  const gpu = await testGpu();
  for (const { c, p, out } of await fixtureCases(gpu, "norm_pool_maxpool.json")) {
    assert.deepEqual([...out.argmax], c.indices, `torch indices ${poolLabel(p)}`);
    assertClose(out.y, c.y, { rtol: 0, atol: 0, what: "torch max y" });
    assertClose(out.dx, c.dx, { rtol: 1e-6, atol: 1e-6, what: "torch max dx" });
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
      const g = poolGeom(p);
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

Deno.test("planPool2d / planGlobalAvgPool: ranges of planes and segments as plain values", () => {
  const profile = WEBGPU_DEFAULT_PROFILE;
  const op = "maxPool2dForward";
  const alex = poolWindow(op, { n: 128, c: 96, h: 54, w: 54, kernel: 3, stride: 2 });
  // 12288 planes of 54 x 54 in 128 MiB bindings: 11506 planes per range.
  assert.deepEqual(planPool2d({ op, window: alex }, profile), {
    window: alex,
    ranges: [[0, 11506], [11506, 12288]],
    hb: 27,
    wb: 27,
  });
  const small = poolWindow(op, { n: 1, c: 2, h: 9, w: 7, kernel: [3, 2], stride: [1, 2] });
  assert.deepEqual(planPool2d({ op, window: small }, profile, 64).ranges, [[0, 1], [1, 2]]);
  assert.throws(() => planPool2d({ op, window: small }, profile, 62), /do not fit one storage/);
  const g = { op: "globalAvgPoolForward", dims: { n: 2, c: 8, h: 200, w: 200 } };
  // 40000 elements per plane: 3 segments of at most 16384 for the forward pass's threads.
  assert.deepEqual(planGlobalAvgPool(g, profile), {
    planes: 16,
    hw: 40000,
    splits: 3,
    seg: 13334,
    ranges: [[0, 16]],
  });
  assert.equal(planGlobalAvgPool(g, profile, 100000).ranges.length, 8);
});
