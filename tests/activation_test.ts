// Tests of kernels/activation.ts: the CPU reference against finite differences, the GPU kernels
// against the CPU reference (vec4 and scalar paths, in place), PyTorch's values at the kinks,
// extreme inputs, and argument validation; f16 and mixed dtypes against the CPU on f16-rounded
// inputs and bit for bit against the f32 kernels rounded once.
import assert from "node:assert/strict";
import {
  activationBackward,
  activationForward,
  type ActivationKind,
} from "../kernels/activation.ts";
import {
  assertClose,
  checkGradient,
  exactTensor,
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
import { activationBackwardRef, activationForwardRef } from "./cpu_ref/activation.ts";
import { assertExact, atDeviceLimit, deviceLimit, fastFill, readSlices } from "./big.ts";

const KINDS: ActivationKind[] = ["relu", "relu6", "sigmoid", "tanh"];
const SIZES = [1, 7, 1000, 4099, 65541];

/** Inputs spread over every regime, away from the kinks (finite differences need smoothness). */
function inputs(rng: Rng, n: number): Float64Array {
  const x = rng.normalArray(n).map((v) => v * 4);
  for (let i = 0; i < n; i++) {
    for (const k of [0, 6]) if (Math.abs(x[i] - k) < 1e-3) x[i] = k + 0.5;
  }
  return x;
}

Deno.test("activation CPU backward matches finite differences of the CPU forward", () => {
  const rng = new Rng(11);
  for (const kind of KINDS) {
    const x = inputs(rng, 40);
    const w = rng.normalArray(40);
    const f = (v: Float64Array) => {
      const y = activationForwardRef(v, kind);
      return y.reduce((s, yi, i) => s + yi * w[i], 0);
    };
    const analytic = activationBackwardRef(w, activationForwardRef(x, kind), kind);
    checkGradient(f, x, analytic, { what: `${kind} backward`, rtol: 1e-5, atol: 1e-7 });
  }
});

Deno.test("activation forward/backward: GPU matches CPU on several sizes", GPU_TEST, async () => {
  const gpu = await testGpu();
  const rng = new Rng(12);
  for (const n of SIZES) {
    const xs = inputs(rng, n);
    const dys = rng.normalArray(n);
    const x = gpu.tensor(f32(xs), { shape: [n] });
    const dy = gpu.tensor(f32(dys), { shape: [n] });
    for (const kind of KINDS) {
      const y = gpu.empty([n]);
      const dx = gpu.empty([n]);
      activationForward({ y, x }, { kind });
      activationBackward({ dx, dy, y }, { kind });
      const yGpu = await y.toArray();
      // f32 inputs: compare with the Float64 reference of the same f32 values.
      assertClose(yGpu, activationForwardRef(f32(xs), kind), {
        rtol: 2e-6,
        atol: 1e-7,
        what: `${kind} forward n=${n}`,
      });
      assertClose(await dx.toArray(), activationBackwardRef(f32(dys), yGpu, kind), {
        rtol: 1e-5,
        atol: 1e-7,
        what: `${kind} backward n=${n}`,
      });
      y.dispose();
      dx.dispose();
    }
    x.dispose();
    dy.dispose();
  }
});

Deno.test(
  "activation in place (y = x, dx = dy) and on exact-size buffers (scalar path)",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(13);
    for (const n of [1, 7, 13]) {
      const xs = f32(inputs(rng, n));
      const dys = f32(rng.normalArray(n));
      for (const kind of KINDS) {
        const yRef = activationForwardRef(xs, kind);
        for (const exact of [false, true]) {
          const t = exact ? exactTensor(gpu, xs) : gpu.tensor(xs, { shape: [n] });
          activationForward({ y: t, x: t }, { kind });
          const y = await t.toArray();
          assertClose(y, yRef, { rtol: 2e-6, atol: 1e-7, what: `${kind} in place exact=${exact}` });
          const g = exact ? exactTensor(gpu, dys) : gpu.tensor(dys, { shape: [n] });
          activationBackward({ dx: g, dy: g, y: t }, { kind });
          assertClose(await g.toArray(), activationBackwardRef(dys, y, kind), {
            rtol: 1e-5,
            atol: 1e-7,
            what: `${kind} backward in place exact=${exact}`,
          });
          t.dispose();
          g.dispose();
        }
      }
    }
  },
);

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

/**
 * `extra` of the f16 outputs: no reduction, f is evaluated in f32 (error < 1e-6 relative, 1/500 of
 * an f16 half-ulp), then rounded once; 0.01 covers that f32 error where it tips the rounding. f32
 * outputs keep the f32 evaluation's error (as in the f32 tests above).
 */
const EXTRA = 0.01;

/** dtype mixes: training (x, y, dx, dy all f16) and others. */
const F16_MIXES = [
  { x: "f16", y: "f16", dx: "f16", dy: "f16" }, // training
  { x: "f32", y: "f16", dx: "f32", dy: "f16" },
  { x: "f16", y: "f32", dx: "f16", dy: "f32" },
] as const;

Deno.test(
  "f16: activation forward/backward match the CPU on f16-rounded inputs",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(17);
    for (const n of [7, 1001]) {
      const xs = inputs(rng, n), dys = rng.normalArray(n);
      for (const mix of F16_MIXES) {
        const x = tensorOf(gpu, xs, { dtype: mix.x, shape: [n] });
        const dy = tensorOf(gpu, dys, { dtype: mix.dy, shape: [n] });
        const xRef = stored(xs, mix.x), dyRef = stored(dys, mix.dy);
        for (const kind of KINDS) {
          const what = `${kind} n=${n} ${JSON.stringify(mix)}`;
          const y = gpu.empty([n], { dtype: mix.y });
          const dx = gpu.empty([n], { dtype: mix.dx });
          activationForward({ y, x }, { kind });
          activationBackward({ dx, dy, y }, { kind });
          const yGpu = await y.toArray();
          const yRef = activationForwardRef(xRef, kind);
          assertClose(
            yGpu,
            yRef,
            outTol(mix.y, yRef, {
              extra: EXTRA,
              f32: { rtol: 2e-6, atol: 1e-7 },
              what: `forward ${what}`,
            }),
          );
          // The backward from the y the kernel read (f16 values when y is f16).
          const dxRef = activationBackwardRef(dyRef, yGpu, kind);
          assertClose(
            await dx.toArray(),
            dxRef,
            outTol(mix.dx, dxRef, {
              extra: EXTRA,
              f32: { rtol: 1e-5, atol: 1e-7 },
              what: `backward ${what}`,
            }),
          );
          y.dispose();
          dx.dispose();
        }
        x.dispose();
        dy.dispose();
      }
    }
  },
);

Deno.test(
  "f16: activation in place on exact-size buffers (scalar path); kinks; extremes",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(18);
    for (const n of [5, 13]) {
      const xs = f16(inputs(rng, n)), dys = f16(rng.normalArray(n));
      for (const kind of KINDS) {
        const t = exactTensor(gpu, xs);
        activationForward({ y: t, x: t }, { kind });
        const y = await t.toArray();
        const yRef = activationForwardRef(xs, kind);
        assertClose(y, yRef, { ...f16Tolerance(maxAbs(yRef), EXTRA), what: `${kind} in place` });
        const g = exactTensor(gpu, dys);
        activationBackward({ dx: g, dy: g, y: t }, { kind });
        const dxRef = activationBackwardRef(dys, y, kind);
        assertClose(await g.toArray(), dxRef, {
          ...f16Tolerance(maxAbs(dxRef), EXTRA),
          what: `${kind} backward in place`,
        });
        t.dispose();
        g.dispose();
      }
    }
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
    const xs = roundF16(inputs(rng, n)), dys = roundF16(rng.normalArray(n));
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
