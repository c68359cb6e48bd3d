// Tests of kernels/batchnorm/: the suites of tests/ops/batchnorm.ts (GPU vs the Float64 CPU
// reference: two training steps with running statistics, backward, eval; ranges of samples; the
// fused BN + activation (ReLU, ReLU6, sigmoid, tanh) against the reference and bit for bit
// against the unfused kernels; f16 storage (the training configuration of --precision f16 and a
// mix of f32 and f16 data and parameters, over ranges); the CPU backward vs finite differences),
// PyTorch fixtures (BatchNorm2d and BatchNorm1d, two training steps then eval), the fused GPU
// backward vs finite differences, validation, and a tensor past one binding.
import assert from "node:assert/strict";
import type { ActivationKind } from "../kernels/activation.ts";
import { batchNormBackward, batchNormForward, checkBatchNorm } from "../kernels/batchnorm/index.ts";
import { assertClose, checkGradient, f32, f64, GPU_TEST, Rng, testGpu } from "./harness.ts";
import { batchNormBackwardRef, batchNormTrainRef } from "./cpu_ref/batchnorm.ts";
import { activationForwardRef } from "./cpu_ref/activation.ts";
import type { Gpu, Shape, Tensor } from "../gpu/mod.ts";
import { assertExact, atDeviceLimit, deviceLimit, readSlices, sampleUnits } from "./big.ts";
import { testOp } from "./_op.ts";
import { BN_SUITES, bnBias, bnWeight } from "./ops/batchnorm.ts";
import { BN_STATS_CHECKS } from "./ops/batchnorm_stats.ts";
import { testCheck } from "./_check.ts";

for (const suite of BN_SUITES) testOp(suite);
for (const check of BN_STATS_CHECKS) testCheck(check);

interface BnState {
  saveMean: Tensor;
  saveInvStd: Tensor;
  runningMean: Tensor;
  runningVar: Tensor;
  weight: Tensor;
  bias: Tensor;
}

function state(gpu: Gpu, c: number, weight: ArrayLike<number>, bias: ArrayLike<number>): BnState {
  return {
    saveMean: gpu.empty([c]),
    saveInvStd: gpu.empty([c]),
    runningMean: gpu.tensor(new Float32Array(c), { shape: [c] }),
    runningVar: gpu.tensor(new Float32Array(c).fill(1), { shape: [c] }),
    weight: gpu.tensor(f32(weight), { shape: [c] }),
    bias: gpu.tensor(f32(bias), { shape: [c] }),
  };
}

Deno.test("batch norm matches PyTorch fixture (2d and 1d, two steps, eval)", GPU_TEST, async () => {
  const gpu = await testGpu();
  const fx = JSON.parse(
    await Deno.readTextFile(new URL("./fixtures/norm_pool_batchnorm.json", import.meta.url)),
  );
  for (const cs of fx.cases) {
    const shape: number[] = cs.shape;
    const [n, c] = shape;
    const hw = shape.slice(2).reduce((a, d) => a * d, 1);
    const p = { n, c, hw, eps: cs.eps, momentum: cs.momentum };
    assert.deepEqual(checkBatchNorm(p), hw === 1 ? shape : [n, c, hw]);
    const st = state(gpu, c, cs.weight, cs.bias);
    for (const [i, step] of cs.steps.entries()) {
      const what = `${cs.kind} step ${i}`;
      const x = gpu.tensor(f32(step.x), { shape });
      const dy = gpu.tensor(f32(step.dy), { shape });
      const y = gpu.empty(shape), dx = gpu.empty(shape);
      const dweight = gpu.empty([c]), dbias = gpu.empty([c]);
      batchNormForward({ ...st, y, x }, { ...p, training: true });
      batchNormBackward({ dx, dweight, dbias, dy, x, ...st }, p);
      assertClose(await y.toArray(), step.y, { rtol: 1e-4, atol: 1e-5, what: `torch y ${what}` });
      assertClose(await dx.toArray(), step.dx, {
        rtol: 1e-4,
        atol: 1e-5,
        what: `torch dx ${what}`,
      });
      assertClose(await dweight.toArray(), step.dweight, {
        rtol: 1e-4,
        atol: 1e-5,
        what: `torch dweight ${what}`,
      });
      assertClose(await dbias.toArray(), step.dbias, {
        rtol: 1e-4,
        atol: 1e-5,
        what: `torch dbias ${what}`,
      });
      assertClose(await st.runningMean.toArray(), step.running_mean, {
        rtol: 1e-5,
        atol: 1e-6,
        what: `torch running_mean ${what}`,
      });
      assertClose(await st.runningVar.toArray(), step.running_var, {
        rtol: 1e-5,
        atol: 1e-6,
        what: `torch running_var ${what}`,
      });
    }
    const x = gpu.tensor(f32(cs.eval.x), { shape });
    const y = gpu.empty(shape);
    batchNormForward({ ...st, y, x }, { ...p, training: false });
    assertClose(await y.toArray(), cs.eval.y, {
      rtol: 1e-4,
      atol: 1e-5,
      what: `torch eval ${cs.kind}`,
    });
  }
});

Deno.test("batch norm rejects bad shapes and values", GPU_TEST, async () => {
  const gpu = await testGpu();
  assert.deepEqual(checkBatchNorm({ n: 8, c: 64, hw: 36 }), [8, 64, 36]);
  assert.deepEqual(checkBatchNorm({ n: 8, c: 120, hw: 1 }), [8, 120]);
  assert.throws(() => checkBatchNorm({ n: 0, c: 3, hw: 1 }), RangeError);
  assert.throws(() => checkBatchNorm({ n: 2, c: 3, hw: 1, momentum: 2 }), RangeError);
  assert.throws(() => checkBatchNorm({ n: 2, c: 3, hw: 1, eps: -1 }), RangeError);
  const st = state(gpu, 3, [1, 1, 1], [0, 0, 0]);
  const x = gpu.zeros([2, 3, 4, 4]);
  assert.throws(
    () =>
      batchNormForward({ ...st, y: gpu.empty([2, 3, 4, 5]), x }, {
        n: 2,
        c: 3,
        hw: 16,
        training: true,
      }),
    (e: Error) =>
      e instanceof TypeError &&
      /batchNormForward: y has shape \[2, 3, 4, 5\], expected \[2, 3, \.\.\.\]/.test(e.message),
  );
  assert.throws(
    () =>
      batchNormForward({ ...st, weight: gpu.zeros([4]), y: gpu.empty(x.shape), x }, {
        n: 2,
        c: 3,
        hw: 16,
        training: true,
      }),
    /batchNormForward: weight has shape \[4\], expected \[3\]/,
  );
  const one = gpu.zeros([1, 3]);
  assert.throws(
    () =>
      batchNormForward({ ...st, y: gpu.empty([1, 3]), x: one }, {
        n: 1,
        c: 3,
        hw: 1,
        training: true,
      }),
    (e: Error) => e instanceof RangeError && /more than 1 value per channel/.test(e.message),
  );
  // eval with a single value per channel is fine
  batchNormForward({ ...st, y: gpu.empty([1, 3]), x: one }, { n: 1, c: 3, hw: 1, training: false });
  await gpu.sync();
});

// ------------------------------------------------------------ beyond the device limits ----

/** Runs a training forward and backward; returns the GPU tensors (caller disposes). */
function trainStep(
  gpu: Gpu,
  shape: Shape,
  p: { n: number; c: number; hw: number },
  xs: Float32Array,
  dys: Float32Array,
  w: ArrayLike<number>,
  b: ArrayLike<number>,
) {
  const st = state(gpu, p.c, w, b);
  const x = gpu.tensor(xs, { shape }), dy = gpu.tensor(dys, { shape });
  const y = gpu.empty(shape), dx = gpu.empty(shape);
  const dweight = gpu.empty([p.c]), dbias = gpu.empty([p.c]);
  batchNormForward({ ...st, y, x }, { ...p, training: true });
  batchNormBackward({
    dx,
    dweight,
    dbias,
    dy,
    x,
    weight: st.weight,
    saveMean: st.saveMean,
    saveInvStd: st.saveInvStd,
  }, p);
  return { st, x, dy, y, dx, dweight, dbias };
}

Deno.test(
  "batch norm training forward and backward on ResNet's [256, 64, 48, 48] (151 MB, past one binding)",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    await atDeviceLimit(gpu, async () => {
      const n = 256, c = 64, hw = 48 * 48, shape = [n, c, 48, 48];
      const per = c * hw;
      assert.ok(n * per > deviceLimit(gpu));
      // Samples repeat with period 8 (x and dy), so the Float64 reference of 8 samples gives the
      // statistics and gradients of all 256: the means and variances are the same, dweight / dbias
      // are 32 times larger, y and dx repeat. The range boundary (sample 227) is not a multiple of 8.
      const P = 8;
      const rng = new Rng(9);
      const bx = f32(rng.normalArray(P * per).map((v) => 3 + 2 * v)),
        bdy = f32(rng.normalArray(P * per));
      const xs = new Float32Array(n * per), dys = new Float32Array(n * per);
      for (let s = 0; s < n; s += P) {
        xs.set(bx, s * per);
        dys.set(bdy, s * per);
      }
      const w = rng.uniformArray(c, 0.5, 1.5), b = rng.normalArray(c);
      const ref = batchNormTrainRef(P, c, hw, bx, w, b, 1e-5);
      const g = batchNormBackwardRef(P, c, hw, bdy, bx, w, ref.mean, ref.invstd);
      const r = trainStep(gpu, shape, { n, c, hw }, xs, dys, w, b);
      assertClose(await r.st.saveMean.toArray(), ref.mean, {
        rtol: 1e-5,
        atol: 1e-5,
        what: "mean",
      });
      assertClose(await r.st.saveInvStd.toArray(), ref.invstd, { rtol: 1e-4, what: "invstd" });
      const k = n / P;
      // dweight, dbias: sums of 589,824 products of O(1) values, O(1e3) in size.
      assertClose(await r.dbias.toArray(), g.dbias.map((v) => k * v), { rtol: 1e-4, atol: 1e-2 });
      assertClose(await r.dweight.toArray(), g.dweight.map((v) => k * v), {
        rtol: 1e-4,
        atol: 1e-2,
      });
      const check = sampleUnits(gpu, n, per, 4, rng);
      const ys = await readSlices(gpu, r.y, check.map((s) => s * per), per);
      const dxs = await readSlices(gpu, r.dx, check.map((s) => s * per), per);
      check.forEach((s, i) => {
        const o = (s % P) * per;
        const tol = { rtol: 1e-4, atol: 1e-4 };
        assertClose(ys.slices[i], ref.y.subarray(o, o + per), { ...tol, what: `y sample ${s}` });
        assertClose(dxs.slices[i], g.dx.subarray(o, o + per), { ...tol, what: `dx sample ${s}` });
      });
      for (const t of [r.x, r.dy, r.y, r.dx, r.dweight, r.dbias]) t.dispose();
      gpu.trimPool();
    });
  },
);

Deno.test(
  "batch norm of constant channels (variance 0), and eval of one value per channel",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(31);
    // [2, 3] (BatchNorm1d), [1, 3, 2, 2] and [3, 3, 1, 1]: every channel constant, so the batch
    // variance is exactly 0 (invstd = 1 / sqrt(eps)), y = bias and dweight = 0.
    for (const shape of [[2, 3], [1, 3, 2, 2], [3, 3, 1, 1]]) {
      const [n, c] = shape;
      const hw = shape.slice(2).reduce((a, d) => a * d, 1);
      const values = [2.5, -1, 0.125];
      const xs = new Float64Array(n * c * hw).map((_, i) => values[Math.floor(i / hw) % c]);
      const w = rng.uniformArray(c, 0.5, 1.5), b = rng.normalArray(c);
      const dys = rng.normalArray(n * c * hw);
      const st = state(gpu, c, w, b);
      const x = gpu.tensor(f32(xs), { shape }), dy = gpu.tensor(f32(dys), { shape });
      const y = gpu.empty(shape), dx = gpu.empty(shape);
      const dweight = gpu.empty([c]), dbias = gpu.empty([c]);
      const p = { n, c, hw };
      batchNormForward({ ...st, y, x }, { ...p, training: true });
      batchNormBackward({ dx, dweight, dbias, dy, x, ...st }, p);
      const ref = batchNormTrainRef(n, c, hw, xs, w, b, 1e-5);
      const g = batchNormBackwardRef(n, c, hw, dys, xs, w, ref.mean, ref.invstd);
      const what = `[${shape}]`;
      assert.deepEqual(await st.saveMean.toArray(), f32(values));
      assertClose(await st.saveInvStd.toArray(), ref.invstd, {
        rtol: 1e-4,
        what: `${what} invstd`,
      });
      assert.deepEqual(await st.runningVar.toArray(), f32([0.9, 0.9, 0.9]), `${what} running var`);
      assertClose(await y.toArray(), ref.y, { rtol: 1e-4, atol: 1e-4, what: `${what} y` });
      assertClose(await dx.toArray(), g.dx, { rtol: 1e-4, atol: 1e-4, what: `${what} dx` });
      assertClose(await dweight.toArray(), g.dweight, { rtol: 1e-4, atol: 1e-3, what: "dweight" });
      assertClose(await dbias.toArray(), g.dbias, { rtol: 1e-4, atol: 1e-3, what: "dbias" });
      for (const t of [x, dy, y, dx, dweight, dbias, ...Object.values(st)]) t.dispose();
    }
    // N = 1, H = W = 1: eval normalizes the single value with the running statistics.
    const st = state(gpu, 3, [1, 2, 0.5], [0, 1, -1]);
    const x = gpu.tensor(f32([1, -2, 4]), { shape: [1, 3, 1, 1] }), y = gpu.empty([1, 3, 1, 1]);
    batchNormForward({ ...st, y, x }, { n: 1, c: 3, hw: 1, training: false });
    const s = 1 / Math.sqrt(1 + 1e-5);
    assertClose(await y.toArray(), [s, -4 * s + 1, 2 * s - 1], { rtol: 1e-6, atol: 1e-6 });
    for (const t of [x, y, ...Object.values(st)]) t.dispose();
  },
);

// ---------------------------------------------------------- fused BN + activation ----

const KINDS: readonly ActivationKind[] = ["relu", "relu6", "sigmoid", "tanh"];

/** Per-channel weight and bias of a fused case (see tests/ops/batchnorm.ts). */
function fusedAffine(rng: Rng, c: number, kind: ActivationKind): [Float64Array, Float64Array] {
  return [bnWeight(rng, c, kind), bnBias(rng, c, kind)];
}

Deno.test(
  "batch norm + activation fused backward matches finite differences of f(BN(x)) (away from the kinks)",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(13);
    const shapes = [[2, 3, 5, [2, 3, 5]], [2, 2, 4, [2, 2, 2, 2]], [6, 3, 1, [6, 3]]] as const;
    for (const kind of KINDS) {
      for (const [n, c, hw, shape] of shapes) {
        const what = `${kind} n${n} c${c} hw${hw}`;
        const size = n * c * hw;
        const [w64, b64] = fusedAffine(rng, c, kind);
        const w = f32(w64), b = f32(b64);
        const r = f32(rng.normalArray(size));
        // ReLU and ReLU6: a point where every BN output is at least 0.05 away from the kinks (0,
        // and 6) and the outputs reach every region (below 0, between, above 6 for ReLU6).
        const kinks = kind === "relu" ? [0] : kind === "relu6" ? [0, 6] : [];
        let x = new Float64Array(0);
        for (let tries = 0; tries < 1000 && x.length === 0; tries++) {
          const cand = Float64Array.from(f32(rng.normalArray(size)));
          const zz = batchNormTrainRef(n, c, hw, cand, w, b, 1e-5).y;
          const away = zz.every((v) => kinks.every((k) => Math.abs(v - k) > 0.05));
          const all = kinks.every((k) => zz.some((v) => v < k)) &&
            kinks.every((k) => zz.some((v) => v > k));
          if (away && (kind !== "relu6" || zz.some((v) => v > 0 && v < 6)) && all) x = cand;
        }
        assert.ok(x.length === size, `no point away from the kinks for ${what}`);
        const loss = (xx: Float64Array, ww: Float64Array, bb: Float64Array) =>
          activationForwardRef(batchNormTrainRef(n, c, hw, xx, ww, bb, 1e-5).y, kind)
            .reduce((s, v, i) => s + v * r[i], 0);
        const st = state(gpu, c, w, b);
        const xt = gpu.tensor(f32(x), { shape: [...shape] });
        const dy = gpu.tensor(r, { shape: [...shape] });
        const y = gpu.empty([...shape]), dx = gpu.empty([...shape]);
        const dweight = gpu.empty([c]), dbias = gpu.empty([c]);
        const p = { n, c, hw, activation: kind };
        batchNormForward({ ...st, y, x: xt }, { ...p, training: true });
        const io = { dx, dweight, dbias, dy, x: xt, y, ...st };
        batchNormBackward(io, p);
        const fd = { rtol: 1e-3, atol: 1e-4 };
        const [dxs, gw, gb] = await Promise.all([dx, dweight, dbias].map((t) => t.toArray()));
        checkGradient((v) => loss(v, f64(w), f64(b)), Float64Array.from(x), dxs, {
          ...fd,
          what: `dx ${what}`,
        });
        checkGradient((v) => loss(x, v, f64(b)), f64(w), gw, { ...fd, what: `dweight ${what}` });
        checkGradient((v) => loss(x, f64(w), v), f64(b), gb, { ...fd, what: `dbias ${what}` });
        // accumulate: a second backward adds the same gradients
        batchNormBackward(io, { ...p, accumulate: true });
        const [dx2, gw2, gb2] = await Promise.all([dx, dweight, dbias].map((t) => t.toArray()));
        assertClose(gw2, gw.map((v) => 2 * v), { what: `dweight acc ${what}` });
        assertClose(gb2, gb.map((v) => 2 * v), { what: `dbias acc ${what}` });
        assertExact(dx2, dxs, `dx is overwritten, not accumulated ${what}`);
        for (const t of [xt, dy, y, dx, dweight, dbias]) t.dispose();
      }
    }
  },
);

Deno.test(
  "batch norm + activation rejects a missing or misshapen y and unknown activations",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const st = state(gpu, 3, [1, 1, 1], [0, 0, 0]);
    const x = gpu.zeros([2, 3, 4, 4]);
    const dx = gpu.empty(x.shape), dy = gpu.zeros(x.shape);
    const dweight = gpu.empty([3]), dbias = gpu.empty([3]);
    const p = { n: 2, c: 3, hw: 16 };
    const common = { dx, dweight, dbias, dy, x, ...st };
    for (const kind of KINDS) {
      assert.throws(
        () => batchNormBackward(common, { ...p, activation: kind }),
        (e: Error) =>
          e instanceof TypeError &&
          new RegExp(`batchNormBackward: activation "${kind}" needs y`).test(e.message),
      );
      assert.throws(
        () =>
          batchNormBackward({ ...common, y: gpu.empty([2, 3, 4, 5]) }, { ...p, activation: kind }),
        (e: Error) =>
          e instanceof TypeError &&
          /batchNormBackward: y has shape \[2, 3, 4, 5\], expected \[2, 3, \.\.\.\]/.test(
            e.message,
          ),
      );
    }
    for (const activation of ["gelu", "ReLU", "", 1, null]) {
      const bad = { ...p, activation: activation as unknown as ActivationKind };
      const name = JSON.stringify(activation).replace(/[[\]]/g, "\\$&");
      assert.throws(
        () => batchNormBackward({ ...common, y: gpu.empty(x.shape) }, bad),
        (e: Error) =>
          e instanceof RangeError &&
          new RegExp(`batchNormBackward: unknown activation ${name}`).test(e.message),
        `backward ${name}`,
      );
      assert.throws(
        () => batchNormForward({ ...st, y: gpu.empty(x.shape), x }, { ...bad, training: true }),
        (e: Error) =>
          e instanceof RangeError &&
          new RegExp(`batchNormForward: unknown activation ${name}`).test(e.message),
        `forward ${name}`,
      );
    }
    await gpu.sync();
  },
);

Deno.test("batch norm rejects non-float tensors, naming the op", GPU_TEST, async () => {
  const gpu = await testGpu();
  const c = 3, shape = [2, 3, 4];
  const p = { n: 2, c, hw: 4 };
  const st = state(gpu, c, [1, 1, 1], [0, 0, 0]);
  const x = gpu.zeros(shape), y = gpu.empty(shape);
  const u = gpu.zeros(shape, { dtype: "u32" }), uc = gpu.zeros([c], { dtype: "i32" });
  const fwd = (io: Partial<Parameters<typeof batchNormForward>[0]>) => () =>
    batchNormForward({ ...st, x, y, ...io }, { ...p, training: true });
  const bwdIo = { dx: gpu.empty(shape), dweight: gpu.empty([c]), dbias: gpu.empty([c]), dy: x, x };
  const bwd = (io: Partial<Parameters<typeof batchNormBackward>[0]>) => () =>
    batchNormBackward({ ...bwdIo, ...st, ...io }, p);
  const bad = (op: string, name: string) => (e: Error) =>
    e instanceof TypeError && new RegExp(`^${op}: ${name} must be f32 or f16`).test(e.message);
  assert.throws(fwd({ x: u }), bad("batchNormForward", "x"));
  assert.throws(fwd({ y: u }), bad("batchNormForward", "y"));
  assert.throws(fwd({ runningVar: uc }), bad("batchNormForward", "runningVar"));
  assert.throws(bwd({ dy: u }), bad("batchNormBackward", "dy"));
  assert.throws(bwd({ dweight: uc }), bad("batchNormBackward", "dweight"));
  await gpu.sync();
});
