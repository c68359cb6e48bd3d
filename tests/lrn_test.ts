// Tests of kernels/lrn.ts: the suites of tests/ops/lrn.ts (GPU vs the Float64 CPU reference in
// f32, f16 mixes and ranges of samples, the CPU backward vs finite differences), a PyTorch
// fixture (nn.LocalResponseNorm, odd and even sizes), validation, and a tensor past one binding.
import assert from "node:assert/strict";
import { checkLrn, lrnBackward, lrnForward, type LrnParams } from "../kernels/lrn.ts";
import { assertClose, F16_TEST, GPU_TEST, Rng, testGpu } from "./harness.ts";
import { lrnBackwardRef, lrnForwardRef } from "./cpu_ref/lrn.ts";
import { atDeviceLimit, deviceLimit, fastFill, readSlices, sampleUnits } from "./big.ts";
import { runOp, testOp } from "./_op.ts";
import { lrn, LRN_SUITES, lrnGeom, lrnLabel } from "./ops/lrn.ts";

for (const suite of LRN_SUITES) testOp(suite);

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
      const out = await runOp(gpu, lrn(p), { data: { x: c.x, dy: c.dy } });
      assertClose(out.y, c.y, { rtol: 1e-4, atol: 1e-5, what: `torch y ${lrnLabel(p)}` });
      assertClose(out.dx, c.dx, { rtol: 1e-4, atol: 1e-5, what: `torch dx ${lrnLabel(p)}` });
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
      const one = { ...lrnGeom(p), n: 1 };
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
