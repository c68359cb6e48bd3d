// Tests of kernels/activation.ts: the CPU reference against finite differences, the GPU kernels
// against the CPU reference (vec4 and scalar paths, in place), PyTorch's values at the kinks,
// extreme inputs, and argument validation.
import assert from "node:assert/strict";
import { type Gpu, POOL_USAGE, Tensor } from "../gpu/mod.ts";
import {
  activationBackward,
  activationForward,
  type ActivationKind,
} from "../kernels/activation.ts";
import { assertClose, checkGradient, f32, GPU_TEST, Rng, testGpu } from "./harness.ts";
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

/** A tensor on a buffer of exactly its byte length: no slack, so the kernels take the scalar path. */
function exactTensor(gpu: Gpu, data: Float32Array): Tensor {
  const buffer = gpu.device.createBuffer({ size: data.byteLength, usage: POOL_USAGE });
  const t = new Tensor(gpu, buffer, { shape: [data.length], dtype: "f32" });
  gpu.write(t, data);
  return t;
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
