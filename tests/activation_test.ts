// Tests of kernels/activation.ts: the suites of tests/ops/activation.ts (GPU vs the Float64 CPU
// reference on several sizes, in place and on exact-size buffers, in f16 and mixed dtypes; the CPU
// backward vs finite differences), PyTorch's values at the kinks, extreme inputs, argument
// validation, a tensor past one binding, and f16 bit for bit against the f32 kernels rounded once.
import assert from "node:assert/strict";
import {
  activationBackward,
  activationForward,
  type ActivationKind,
} from "../kernels/activation.ts";
import {
  assertClose,
  f16,
  F16_TEST,
  f16Tolerance,
  f32,
  GPU_TEST,
  Rng,
  roundF16,
  stored,
  testGpu,
} from "./harness.ts";
import { activationBackwardRef, activationForwardRef } from "./cpu_ref/activation.ts";
import { assertExact, atDeviceLimit, deviceLimit, fastFill, readSlices } from "./big.ts";
import { testOp } from "./_op.ts";
import { ACTIVATION_SUITES, activationInputs, KINDS } from "./ops/activation.ts";

for (const suite of ACTIVATION_SUITES) testOp(suite);

Deno.test("activation kinks follow PyTorch; extreme inputs give no NaN", GPU_TEST, async () => {
  const gpu = await testGpu();
  const xs = new Float32Array([0, -0, 6, -1e4, 1e4, -100, 100, 1e-6, -1e-6, 3e-3, 0.2, 88, -88]);
  const n = xs.length;
  const x = gpu.tensor(xs, { shape: [n] });
  const ones = gpu.tensor(new Float32Array(n).fill(1), { shape: [n] });
  for (const kind of KINDS) {
    const y = gpu.empty([n]);
    const dx = gpu.empty([n]);
    activationForward({ y, x }, { kind });
    activationBackward({ dx, dy: ones, y }, { kind });
    const yv = await y.toArray();
    const dxv = await dx.toArray();
    assert.ok(yv.every(Number.isFinite) && dxv.every(Number.isFinite), `${kind}: ${yv} / ${dxv}`);
    assertClose(yv, activationForwardRef(xs, kind), { rtol: 2e-6, atol: 1e-30, what: kind });
    if (kind === "relu") {
      assert.equal(dxv[0], 0, "relu'(0) = 0");
      assert.equal(dxv[2], 1);
    }
    if (kind === "relu6") {
      assert.deepEqual([dxv[0], dxv[2], dxv[4], dxv[10]], [0, 0, 0, 1], "relu6' at 0, 6, 1e4, 0.2");
    }
    if (kind === "sigmoid") assert.deepEqual([yv[3], yv[4]], [0, 1]);
    if (kind === "tanh") assert.deepEqual([yv[3], yv[4], yv[5], yv[6]], [-1, 1, -1, 1]);
  }
});

Deno.test("activation validates sizes, dtypes and kind", GPU_TEST, async () => {
  const gpu = await testGpu();
  const x = gpu.zeros([2, 3]);
  assert.throws(
    () => activationForward({ y: gpu.empty([5]), x }, { kind: "relu" }),
    (e: Error) =>
      e instanceof TypeError && /activationForward\(relu\)/.test(e.message) &&
      /\[5\]/.test(e.message) && /\[2, 3\]/.test(e.message),
  );
  assert.throws(
    () => activationBackward({ dx: x, dy: x, y: gpu.zeros([7]) }, { kind: "tanh" }),
    (e: Error) => e instanceof TypeError && /\[7\]/.test(e.message) && /\[2, 3\]/.test(e.message),
  );
  assert.throws(
    () => activationForward({ y: x, x: gpu.zeros([2, 3], { dtype: "i32" }) }, { kind: "relu" }),
    TypeError,
  );
  assert.throws(
    () => activationForward({ y: x, x }, { kind: "gelu" as ActivationKind }),
    (e: Error) => e instanceof RangeError && /gelu/.test(e.message),
  );
});

Deno.test(
  "relu forward and backward in place on AlexNet's [128, 96, 54, 54] (143 MB, past one binding)",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    await atDeviceLimit(gpu, async () => {
      const shape = [128, 96, 54, 54];
      const n = shape.reduce((a, b) => a * b, 1);
      assert.ok(n > deviceLimit(gpu));
      const xs = fastFill(n, 5), dys = fastFill(n, 6);
      const x = gpu.tensor(xs, { shape }), dy = gpu.tensor(dys, { shape });
      activationForward({ y: x, x }, { kind: "relu" });
      activationBackward({ dx: dy, dy, y: x }, { kind: "relu" });
      const edge = Math.floor(deviceLimit(gpu) / 64) * 64;
      const rng = new Rng(16);
      const at = [
        0,
        edge - 4096,
        edge - 5,
        n - 4096,
        ...Array.from({ length: 8 }, () => rng.int(n)),
      ];
      const ys = await readSlices(gpu, x, at, 8192);
      const dxs = await readSlices(gpu, dy, at, 8192);
      ys.starts.forEach((s, k) => {
        const xin = xs.subarray(s, s + 8192);
        const y = f32(activationForwardRef(xin, "relu"));
        assertExact(ys.slices[k], y, `relu forward at ${s}`);
        assertExact(
          dxs.slices[k],
          f32(activationBackwardRef(dys.subarray(s, s + 8192), y, "relu")),
          `relu backward at ${s}`,
        );
      });
      x.dispose();
      dy.dispose();
      gpu.trimPool();
    });
  },
);

// ------------------------------------------------------------------ f16 ----

/** `extra` of the f16 outputs (see tests/ops/activation.ts). */
const EXTRA = 0.01;

Deno.test(
  "f16: activation kinks; extremes",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    // PyTorch's kinks in f16 (0 and 6 are exact), and f16's extremes (±65504, subnormals).
    const xs = f16([0, -0, 6, -65504, 65504, -100, 100, 2 ** -24, -(2 ** -24), 0.2, 11, -11]);
    const n = xs.length;
    const x = gpu.tensor(xs, { shape: [n] });
    const ones = gpu.tensor(f16(new Array(n).fill(1)), { shape: [n] });
    for (const kind of KINDS) {
      const y = gpu.empty([n], { dtype: "f16" }), dx = gpu.empty([n], { dtype: "f16" });
      activationForward({ y, x }, { kind });
      activationBackward({ dx, dy: ones, y }, { kind });
      const yv = await y.toArray(), dxv = await dx.toArray();
      assert.ok(yv.every(Number.isFinite) && dxv.every(Number.isFinite), `${kind}: ${yv} / ${dxv}`);
      const yRef = activationForwardRef(xs, kind);
      assertClose(yv, yRef, { ...f16Tolerance(1, EXTRA), what: `${kind} extremes` });
      if (kind === "relu") assert.deepEqual([dxv[0], dxv[2]], [0, 1], "relu'(0) = 0");
      if (kind === "relu6") {
        assert.deepEqual(
          [dxv[0], dxv[2], dxv[4], dxv[9]],
          [0, 0, 0, 1],
          "relu6' at 0, 6, max, 0.2",
        );
      }
      if (kind === "sigmoid") assert.deepEqual([yv[3], yv[4]], [0, 1]);
      if (kind === "tanh") assert.deepEqual([yv[3], yv[4], yv[10], yv[11]], [-1, 1, 1, -1]);
    }
  },
);

Deno.test(
  "f16: a non-float tensor in a float slot throws TypeError naming the op",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const h = gpu.zeros([2, 3], { dtype: "f16" }), u = gpu.zeros([2, 3], { dtype: "u32" });
    assert.throws(
      () => activationForward({ y: h, x: u }, { kind: "relu" }),
      (e: Error) =>
        e instanceof TypeError &&
        /^activationForward\(relu\): x must be f32 or f16/.test(e.message),
    );
    assert.throws(
      () => activationBackward({ dx: h, dy: u, y: h }, { kind: "sigmoid" }),
      (e: Error) =>
        e instanceof TypeError &&
        /^activationBackward\(sigmoid\): dy must be f32 or f16/.test(e.message),
    );
    // Sizes are still checked across dtypes, naming both shapes.
    assert.throws(
      () => activationForward({ y: gpu.empty([5]), x: h }, { kind: "tanh" }),
      (e: Error) => e instanceof TypeError && /\[5\]/.test(e.message) && /\[2, 3\]/.test(e.message),
    );
    await gpu.sync();
  },
);

Deno.test(
  "f16: every dtype mix equals the all-f32 kernel on the same values, rounded once",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(19);
    const n = 1001;
    // f16-representable inputs: the f32 kernel then computes from the same values.
    const xs = roundF16(activationInputs(rng, n)), dys = roundF16(rng.normalArray(n));
    const x32 = gpu.tensor(f32(xs), { shape: [n] }), x16 = gpu.tensor(f16(xs), { shape: [n] });
    const dy32 = gpu.tensor(f32(dys), { shape: [n] }), dy16 = gpu.tensor(f16(dys), { shape: [n] });
    for (const kind of KINDS) {
      const y32 = gpu.empty([n]), y16 = gpu.empty([n], { dtype: "f16" });
      activationForward({ y: y32, x: x32 }, { kind });
      activationForward({ y: y16, x: x16 }, { kind });
      const y32v = await y32.toArray();
      for (const [xd, yd] of [["f16", "f16"], ["f16", "f32"], ["f32", "f16"]] as const) {
        const y = gpu.empty([n], { dtype: yd });
        activationForward({ y, x: xd === "f16" ? x16 : x32 }, { kind });
        assertExact(await y.toArray(), stored(y32v, yd), `${kind} forward y ${yd} <- x ${xd}`);
        y.dispose();
      }
      // Backward from an f16-representable y (the f16 forward's output).
      const yf = gpu.tensor(f32(await y16.toArray()), { shape: [n] });
      const dx32 = gpu.empty([n]);
      activationBackward({ dx: dx32, dy: dy32, y: yf }, { kind });
      const dx32v = await dx32.toArray();
      for (const dxd of ["f16", "f32"] as const) {
        const dx = gpu.empty([n], { dtype: dxd });
        activationBackward({ dx, dy: dy16, y: y16 }, { kind });
        assertExact(await dx.toArray(), stored(dx32v, dxd), `${kind} backward dx ${dxd}`);
        dx.dispose();
      }
      for (const t of [y32, y16, yf, dx32]) t.dispose();
    }
    for (const t of [x32, x16, dy32, dy16]) t.dispose();
  },
);
