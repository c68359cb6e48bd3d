// Tests of kernels/batchnorm/: GPU vs the Float64 CPU reference (training, running statistics
// over two steps, eval, backward), the CPU backward vs finite differences, and PyTorch fixtures
// (BatchNorm2d and BatchNorm1d, two training steps then eval). The fused BN + activation (ReLU,
// ReLU6, sigmoid, tanh; forward and backward) against the CPU reference, finite differences, and
// the unfused kernels (bit for bit). f16 storage (the training configuration of --precision f16
// and a mix of f32 and f16 data and parameters, over ranges of samples) against the reference fed
// the f16-rounded inputs.
import assert from "node:assert/strict";
import {
  activationBackward,
  activationForward,
  type ActivationKind,
} from "../kernels/activation.ts";
import { batchNormBackward, batchNormForward, checkBatchNorm } from "../kernels/batchnorm/index.ts";
import {
  assertClose,
  checkGradient,
  F16_TEST,
  f32,
  f64,
  GPU_TEST,
  outTol,
  Rng,
  stored,
  tensorOf,
  testGpu,
} from "./harness.ts";
import {
  batchNormBackwardRef,
  batchNormEvalRef,
  batchNormTrainRef,
  updateRunningRef,
} from "./cpu_ref/batchnorm.ts";
import { activationBackwardRef, activationForwardRef } from "./cpu_ref/activation.ts";
import type { Gpu, Shape, Tensor } from "../gpu/mod.ts";
import {
  assertExact,
  atDeviceLimit,
  deviceLimit,
  readSlices,
  sampleUnits,
  withBindingLimit,
} from "./big.ts";

Deno.test("batch norm CPU backward matches finite differences", () => {
  const rng = new Rng(2);
  for (const [n, c, hw] of [[4, 3, 1], [2, 2, 6], [1, 2, 5]]) {
    const x = rng.normalArray(n * c * hw);
    const w = rng.normalArray(c), b = rng.normalArray(c);
    const r = rng.normalArray(n * c * hw);
    const loss = (xx: Float64Array, ww: Float64Array, bb: Float64Array) =>
      batchNormTrainRef(n, c, hw, xx, ww, bb, 1e-5).y.reduce((s, v, i) => s + v * r[i], 0);
    const { mean, invstd } = batchNormTrainRef(n, c, hw, x, w, b, 1e-5);
    const g = batchNormBackwardRef(n, c, hw, r, x, w, mean, invstd);
    const what = `n${n} c${c} hw${hw}`;
    checkGradient((v) => loss(v, w, b), x, g.dx, { what: `dx ${what}`, atol: 1e-5 });
    checkGradient((v) => loss(x, v, b), w, g.dweight, { what: `dweight ${what}` });
    checkGradient((v) => loss(x, w, v), b, g.dbias, { what: `dbias ${what}` });
  }
});

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

const CASES: { n: number; c: number; hw: number; shape: Shape; offset: number }[] = [
  { n: 2, c: 3, hw: 35, shape: [2, 3, 7, 5], offset: 0 }, // BatchNorm2d, odd spatial size
  { n: 1, c: 1, hw: 9, shape: [1, 1, 3, 3], offset: 1 }, // batch 1, channel 1
  { n: 5, c: 4, hw: 1, shape: [5, 4], offset: -2 }, // BatchNorm1d
  { n: 3, c: 3, hw: 1, shape: [3, 3, 1, 1], offset: 0 }, // 1x1 spatial
  { n: 7, c: 130, hw: 1, shape: [7, 130], offset: 0 }, // more channels than a workgroup
  { n: 5, c: 3, hw: 4, shape: [5, 3, 2, 2], offset: 0 }, // vec4 path, one vec4 per plane
  { n: 2, c: 5, hw: 36, shape: [2, 5, 6, 6], offset: 0 }, // vec4 path (ResNet's 6x6)
  // n * hw = 5400 > one chunk of 4096, and a mean far from 0: the shifted two-pass sums; vec4
  // planes of 450 vectors, walked by each thread of the elementwise passes in steps of segs
  { n: 3, c: 2, hw: 1800, shape: [3, 2, 45, 40], offset: 50 },
  // odd hw: scalar planes of 133 elements, several per thread of the elementwise passes
  { n: 3, c: 5, hw: 133, shape: [3, 5, 7, 19], offset: 1 },
  // enough planes that each thread of the elementwise passes walks its longest run: 64 vec4s
  // (planes of 128), and 43 elements of a scalar plane of 129
  { n: 8, c: 32, hw: 512, shape: [8, 32, 16, 32], offset: -3 },
  { n: 6, c: 32, hw: 129, shape: [6, 32, 3, 43], offset: 0 },
  // BatchNorm1d with several samples per thread of the elementwise passes (columns layout)
  { n: 300, c: 4, hw: 1, shape: [300, 4], offset: 0 },
  { n: 4, c: 3, hw: 2, shape: [4, 3, 1, 2], offset: 0 }, // hw = 2: planes of two elements
];

Deno.test(
  "batch norm GPU matches the CPU reference: 2 training steps, backward, eval",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(8);
    for (const cs of CASES) {
      const { n, c, hw, shape } = cs;
      const what = `n${n} c${c} hw${hw}`;
      const eps = 1e-5, momentum = 0.1;
      const w = rng.uniformArray(c, 0.5, 1.5), b = rng.normalArray(c);
      const st = state(gpu, c, w, b);
      const rm = new Float64Array(c), rv = new Float64Array(c).fill(1);
      const tol = { rtol: 1e-4, atol: 1e-4 };
      for (let step = 0; step < 2; step++) {
        const x = rng.normalArray(n * c * hw).map((v) => cs.offset + (step + 1) * v);
        const xq = f32(x);
        const dy = rng.normalArray(n * c * hw);
        const ref = batchNormTrainRef(n, c, hw, xq, w, b, eps);
        updateRunningRef(rm, rv, ref.mean, ref.unbiasedVar, momentum);
        const xt = gpu.tensor(xq, { shape });
        const dyt = gpu.tensor(f32(dy), { shape });
        const y = gpu.empty(shape), dx = gpu.empty(shape);
        batchNormForward({ ...st, y, x: xt }, { n, c, hw, eps, momentum, training: true });
        const prevW = rng.normalArray(c), prevB = rng.normalArray(c);
        const dweight = gpu.tensor(f32(prevW), { shape: [c] });
        const dbias = gpu.tensor(f32(prevB), { shape: [c] });
        const accumulate = step === 1;
        batchNormBackward(
          {
            dx,
            dweight,
            dbias,
            dy: dyt,
            x: xt,
            weight: st.weight,
            saveMean: st.saveMean,
            saveInvStd: st.saveInvStd,
          },
          { n, c, hw, eps, accumulate },
        );
        const g = batchNormBackwardRef(n, c, hw, dy, xq, w, ref.mean, ref.invstd);
        const s = `${what} step ${step}`;
        assertClose(await y.toArray(), ref.y, { ...tol, what: `y ${s}` });
        assertClose(await st.saveMean.toArray(), ref.mean, {
          rtol: 1e-5,
          atol: 1e-5,
          what: `saveMean ${s}`,
        });
        assertClose(await st.saveInvStd.toArray(), ref.invstd, {
          rtol: 1e-4,
          atol: 0,
          what: `saveInvStd ${s}`,
        });
        assertClose(await st.runningMean.toArray(), rm, {
          rtol: 1e-5,
          atol: 1e-5,
          what: `runningMean ${s}`,
        });
        assertClose(await st.runningVar.toArray(), rv, {
          rtol: 1e-4,
          atol: 1e-5,
          what: `runningVar ${s}`,
        });
        assertClose(await dx.toArray(), g.dx, { ...tol, what: `dx ${s}` });
        const expW = accumulate ? g.dweight.map((v, i) => v + prevW[i]) : g.dweight;
        const expB = accumulate ? g.dbias.map((v, i) => v + prevB[i]) : g.dbias;
        assertClose(await dweight.toArray(), expW, {
          rtol: 1e-4,
          atol: 1e-3,
          what: `dweight ${s}`,
        });
        assertClose(await dbias.toArray(), expB, { rtol: 1e-4, atol: 1e-3, what: `dbias ${s}` });
        for (const t of [xt, dyt, y, dx, dweight, dbias]) t.dispose();
      }
      // eval with the running statistics: saveMean / saveInvStd stay as they were
      const savedMean = await st.saveMean.toArray();
      const x = f32(rng.normalArray(n * c * hw).map((v) => cs.offset + v));
      const xt = gpu.tensor(x, { shape });
      const y = gpu.empty(shape);
      const rmGpu = await st.runningMean.toArray(), rvGpu = await st.runningVar.toArray();
      batchNormForward({ ...st, y, x: xt }, { n, c, hw, eps, momentum, training: false });
      assertClose(await y.toArray(), batchNormEvalRef(n, c, hw, x, rmGpu, rvGpu, w, b, eps), {
        ...tol,
        what: `eval y ${what}`,
      });
      assert.deepEqual(await st.saveMean.toArray(), savedMean);
      assert.deepEqual(await st.runningMean.toArray(), rmGpu, "eval must not touch running stats");
      assert.deepEqual(await st.runningVar.toArray(), rvGpu);
    }
  },
);

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
  "batch norm split into ranges of samples (binding limit lowered) matches the CPU",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(10);
    // Two samples per range (at least the 64-element minimum) unless perRange says otherwise.
    const cases: (typeof CASES[number] & { perRange?: number })[] = [
      ...CASES.filter((cs) => cs.n >= 3),
      { n: 37, c: 3, hw: 5, shape: [37, 3, 5], offset: 2 }, // scalar path, 10 ranges
      { n: 21, c: 2, hw: 8, shape: [21, 2, 2, 4], offset: -1 }, // vec4 path, 6 ranges
      // BatchNorm1d, ranges of 130 samples: several samples per thread in the elementwise passes
      { n: 300, c: 4, hw: 1, shape: [300, 4], offset: 0, perRange: 130 },
    ];
    for (const { n, c, hw, shape, offset, perRange } of cases) {
      await withBindingLimit(Math.max(64, (perRange ?? 2) * c * hw), async () => {
        const x = f32(rng.normalArray(n * c * hw).map((v) => offset + v));
        const dy = f32(rng.normalArray(n * c * hw));
        const w = rng.uniformArray(c, 0.5, 1.5), b = rng.normalArray(c);
        const ref = batchNormTrainRef(n, c, hw, x, w, b, 1e-5);
        const g = batchNormBackwardRef(n, c, hw, dy, x, w, ref.mean, ref.invstd);
        const r = trainStep(gpu, shape, { n, c, hw }, x, dy, w, b);
        const what = `n${n} c${c} hw${hw}`;
        const tol = { rtol: 1e-4, atol: 1e-4 };
        assertClose(await r.y.toArray(), ref.y, { ...tol, what: `y ${what}` });
        assertClose(await r.st.saveMean.toArray(), ref.mean, { rtol: 1e-5, atol: 1e-5, what });
        assertClose(await r.st.saveInvStd.toArray(), ref.invstd, { rtol: 1e-4, what });
        assertClose(await r.dx.toArray(), g.dx, { ...tol, what: `dx ${what}` });
        assertClose(await r.dweight.toArray(), g.dweight, { rtol: 1e-4, atol: 1e-3, what });
        assertClose(await r.dbias.toArray(), g.dbias, { rtol: 1e-4, atol: 1e-3, what });
        for (const t of [r.x, r.dy, r.y, r.dx, r.dweight, r.dbias]) t.dispose();
      });
    }
  },
);

// ---------------------------------------------------------- fused BN + activation ----

const KINDS: readonly ActivationKind[] = ["relu", "relu6", "sigmoid", "tanh"];

/**
 * Per-channel weight and bias of a fused case: weights in [0.5, 1.5] and biases N(0, 1), or for
 * ReLU6 weights in [3.5, 4.5] and biases N(3, 0.25), so that BN outputs reach both clamps (below 0
 * and above 6).
 */
function fusedAffine(rng: Rng, c: number, kind: ActivationKind): [Float64Array, Float64Array] {
  const w = rng.uniformArray(c, 0.5, 1.5), b = rng.normalArray(c);
  if (kind !== "relu6") return [w, b];
  return [w.map((v) => 3 + v), b.map((v) => 3 + 0.5 * v)];
}

/** Which regions of the activation the outputs `y` fall in, as labels (for coverage checks). */
function regions(y: ArrayLike<number>, kind: ActivationKind): Set<string> {
  const seen = new Set<string>();
  for (let i = 0; i < y.length; i++) {
    const v = y[i];
    if (kind === "relu" || kind === "relu6") {
      seen.add(v === 0 ? "0" : kind === "relu6" && v === 6 ? "6" : "linear");
    } else seen.add(v < (kind === "sigmoid" ? 0.5 : 0) ? "low" : "high");
  }
  return seen;
}

/** The regions each kind's test inputs must reach, over all cases of a test. */
const WANTED: Record<ActivationKind, string[]> = {
  relu: ["0", "linear"],
  relu6: ["0", "linear", "6"],
  sigmoid: ["low", "high"],
  tanh: ["low", "high"],
};

/**
 * One case of the fused BN + activation: training forward (fused, and BN then activationForward
 * on a second copy of the state), backward (fused, and activationBackward then BN backward) with
 * `accumulate` false then true, then eval forward both ways. Checks the fused results against
 * the Float64 CPU reference and bit for bit against the unfused ones; adds the regions of the
 * activation its training outputs reach to `seen`.
 */
async function fusedCase(
  gpu: Gpu,
  cs: { n: number; c: number; hw: number; shape: Shape; offset: number },
  rng: Rng,
  kind: ActivationKind,
  seen: Set<string>,
): Promise<void> {
  const { n, c, hw, shape } = cs;
  const what = `${kind} n${n} c${c} hw${hw}`;
  const p = { n, c, hw, eps: 1e-5, momentum: 0.1 };
  const tol = { rtol: 1e-4, atol: 1e-4 };
  // Readbacks of a phase are issued together (one wait instead of one per tensor).
  const read = (...ts: Tensor[]) => Promise.all(ts.map((t) => t.toArray()));
  const [w, b] = fusedAffine(rng, c, kind);
  const stF = state(gpu, c, w, b), stU = state(gpu, c, w, b);
  const xq = f32(rng.normalArray(n * c * hw).map((v) => cs.offset + 2 * v));
  const dyq = f32(rng.normalArray(n * c * hw));
  const x = gpu.tensor(xq, { shape }), dy = gpu.tensor(dyq, { shape });
  const yF = gpu.empty(shape), z = gpu.empty(shape), yU = gpu.empty(shape);
  batchNormForward({ ...stF, y: yF, x }, { ...p, training: true, activation: kind });
  batchNormForward({ ...stU, y: z, x }, { ...p, training: true });
  activationForward({ y: yU, x: z }, { kind });
  const stats = ["saveMean", "saveInvStd", "runningMean", "runningVar"] as const;
  const [ys, yus, ...st] = await read(
    yF,
    yU,
    ...stats.map((k) => stF[k]),
    ...stats.map((k) => stU[k]),
  );
  const ref = batchNormTrainRef(n, c, hw, xq, w, b, p.eps);
  assertClose(ys, activationForwardRef(ref.y, kind), { ...tol, what: `fused train y ${what}` });
  for (const r of regions(ys, kind)) seen.add(r);
  assertExact(ys, yus, `fused train y == BN then ${kind} ${what}`);
  stats.forEach((k, i) => assertExact(st[i], st[i + 4], `fused ${k} ${what}`));
  assertClose(st[0], ref.mean, { rtol: 1e-5, atol: 1e-5, what });
  assertClose(st[1], ref.invstd, { rtol: 1e-4, atol: 0, what });

  // Backward, overwriting then accumulating into the previous gradients.
  const dzRef = activationBackwardRef(dyq, ys, kind);
  const g = batchNormBackwardRef(n, c, hw, dzRef, xq, w, ref.mean, ref.invstd);
  const dz = gpu.empty(shape), dxF = gpu.empty(shape), dxU = gpu.empty(shape);
  const prevW = f32(rng.normalArray(c)), prevB = f32(rng.normalArray(c));
  const dwF = gpu.tensor(prevW, { shape: [c] }), dbF = gpu.tensor(prevB, { shape: [c] });
  const dwU = gpu.tensor(prevW, { shape: [c] }), dbU = gpu.tensor(prevB, { shape: [c] });
  for (const accumulate of [false, true]) {
    const s = `${what} accumulate ${accumulate}`;
    const expW = Float64Array.from(g.dweight, (v, i) => v + (accumulate ? prevW[i] : 0));
    const expB = Float64Array.from(g.dbias, (v, i) => v + (accumulate ? prevB[i] : 0));
    if (accumulate) {
      gpu.write(dwF, prevW);
      gpu.write(dbF, prevB);
      gpu.write(dwU, prevW);
      gpu.write(dbU, prevB);
    }
    const common = { weight: stF.weight, saveMean: stF.saveMean, saveInvStd: stF.saveInvStd };
    batchNormBackward(
      { dx: dxF, dweight: dwF, dbias: dbF, dy, x, y: yF, ...common },
      { ...p, accumulate, activation: kind },
    );
    activationBackward({ dx: dz, dy, y: yU }, { kind });
    batchNormBackward(
      { dx: dxU, dweight: dwU, dbias: dbU, dy: dz, x, ...common },
      { ...p, accumulate },
    );
    const [dxs, dws, dbs, dxu, dwu, dbu] = await read(dxF, dwF, dbF, dxU, dwU, dbU);
    assertClose(dxs, g.dx, { ...tol, what: `fused dx ${s}` });
    assertClose(dws, expW, { rtol: 1e-4, atol: 1e-3, what: `fused dweight ${s}` });
    assertClose(dbs, expB, { rtol: 1e-4, atol: 1e-3, what: `fused dbias ${s}` });
    assertExact(dxs, dxu, `fused dx == ${kind} backward then BN backward ${s}`);
    assertExact(dws, dwu, `fused dweight == unfused ${s}`);
    assertExact(dbs, dbu, `fused dbias == unfused ${s}`);
  }

  // Eval with the running statistics of the training step.
  const xe = f32(rng.normalArray(n * c * hw).map((v) => cs.offset + v));
  const xet = gpu.tensor(xe, { shape });
  batchNormForward({ ...stF, y: yF, x: xet }, { ...p, training: false, activation: kind });
  batchNormForward({ ...stU, y: z, x: xet }, { ...p, training: false });
  activationForward({ y: yU, x: z }, { kind });
  const [ye, yue] = await read(yF, yU);
  const [rm, rv] = [st[2], st[3]]; // the running statistics of the training step
  const eRef = activationForwardRef(batchNormEvalRef(n, c, hw, xe, rm, rv, w, b, p.eps), kind);
  assertClose(ye, eRef, { ...tol, what: `fused eval y ${what}` });
  assertExact(ye, yue, `fused eval y == BN then ${kind} ${what}`);
  for (const t of [x, dy, yF, z, yU, dz, dxF, dxU, dwF, dbF, dwU, dbU, xet]) t.dispose();
}

/** Asserts that each kind's cases reached every region of its activation. */
function assertCoverage(seen: Map<ActivationKind, Set<string>>): void {
  for (const kind of KINDS) {
    const got = seen.get(kind) ?? new Set();
    const missing = WANTED[kind].filter((r) => !got.has(r));
    assert.deepEqual(missing, [], `${kind}: no output in region(s) ${missing.join(", ")}`);
  }
}

Deno.test(
  "batch norm + activation fused (relu, relu6, sigmoid, tanh; forward train/eval, backward, both accumulate modes) matches the CPU and equals the unfused kernels bit for bit",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(11);
    const seen = new Map(KINDS.map((k) => [k, new Set<string>()]));
    // CASES cover odd hw (scalar path), hw % 4 == 0 (vec4 path), BatchNorm1d, 130 channels, and
    // n * hw past one chunk of the partial sums.
    for (const cs of CASES) {
      // Offsets move the mean; the activations need both signs around it (it cancels in BN).
      for (const kind of KINDS) await fusedCase(gpu, cs, rng, kind, seen.get(kind)!);
    }
    assertCoverage(seen);
  },
);

Deno.test(
  "batch norm + activation fused, split into ranges of samples (binding limit lowered), matches the CPU and the unfused kernels",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(12);
    // Two samples per range (at least the 64-element minimum) unless perRange says otherwise.
    const cases = [
      { n: 37, c: 3, hw: 5, shape: [37, 3, 5], offset: 2 }, // scalar path, 19 ranges
      { n: 21, c: 2, hw: 8, shape: [21, 2, 2, 4], offset: -1 }, // vec4 path, 11 ranges
      // planes of 133 and 280 elements walked several per thread by the elementwise passes
      { n: 5, c: 3, hw: 133, shape: [5, 3, 7, 19], offset: 1 },
      { n: 5, c: 2, hw: 280, shape: [5, 2, 14, 20], offset: 0 },
      { n: 30, c: 4, hw: 1, shape: [30, 4], offset: 0 }, // BatchNorm1d
      // BatchNorm1d, ranges of 130 samples: several samples per thread
      { n: 300, c: 4, hw: 1, shape: [300, 4], offset: 0, perRange: 130 },
    ];
    const seen = new Map(KINDS.map((k) => [k, new Set<string>()]));
    for (const [i, cs] of cases.entries()) {
      // Every kind on the scalar and the vec4 paths; the others with ReLU.
      for (const kind of i < 2 ? KINDS : ["relu"] as const) {
        await withBindingLimit(
          Math.max(64, (cs.perRange ?? 2) * cs.c * cs.hw),
          () => fusedCase(gpu, cs, rng, kind, seen.get(kind)!),
        );
      }
    }
    assertCoverage(seen);
  },
);

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

// ------------------------------------------------------------------------ f16 storage ----

type Float = "f32" | "f16";
/** Storage types of every tensor of a forward + backward. */
type BnDTypes = Record<
  | "x"
  | "y"
  | "dy"
  | "dx"
  | "weight"
  | "bias"
  | "runningMean"
  | "runningVar"
  | "saveMean"
  | "saveInvStd"
  | "dweight"
  | "dbias",
  Float
>;

/** The training configuration of --precision f16: activations and their gradients f16. */
const TRAIN_F16: BnDTypes = {
  x: "f16",
  y: "f16",
  dy: "f16",
  dx: "f16",
  weight: "f32",
  bias: "f32",
  runningMean: "f32",
  runningVar: "f32",
  saveMean: "f32",
  saveInvStd: "f32",
  dweight: "f32",
  dbias: "f32",
};

/**
 * Another mix: f32 x and dx with f16 y and dy (data bindings of two dtypes, whose binding bases
 * differ once split into ranges), and every per-channel tensor f16 (loads, stores, running
 * statistics updated and gradients accumulated in f16 storage).
 */
const MIXED: BnDTypes = {
  x: "f32",
  y: "f16",
  dy: "f16",
  dx: "f32",
  weight: "f16",
  bias: "f16",
  runningMean: "f16",
  runningVar: "f16",
  saveMean: "f16",
  saveInvStd: "f16",
  dweight: "f16",
  dbias: "f16",
};

/**
 * One f16 case: training forward (optionally fused with `kind`), backward accumulating into
 * the previous gradients, then eval forward, every tensor stored as `dt` says; checked against
 * the Float64 reference fed what the tensors hold (inputs rounded to their dtype; the backward
 * from the saved statistics and, with an activation, the output `y` the GPU stored).
 */
async function halfCase(
  gpu: Gpu,
  cs: { n: number; c: number; hw: number; shape: Shape; offset: number },
  rng: Rng,
  dt: BnDTypes,
  kind: ActivationKind | undefined,
): Promise<void> {
  const { n, c, hw, shape } = cs;
  const size = n * c * hw;
  const what = `${dt === TRAIN_F16 ? "train-f16" : "mixed"} ${
    kind ?? "no act"
  } n${n} c${c} hw${hw}`;
  // Per-channel sums in f32 over N = n * hw values: error up to about N * 2^-24 of the sum of
  // magnitudes, N * 2^-13 in units of the f16 rounding (2^-11) f16Tolerance allows; elementwise
  // outputs add a few f32 roundings (covered by the same headroom).
  const extra = n * hw * 2 ** -13;
  const p = { n, c, hw, eps: 1e-5, momentum: 0.1 };
  const tol = { rtol: 1e-4, atol: 1e-4 };
  const [w0, b0] = kind
    ? fusedAffine(rng, c, kind)
    : [rng.uniformArray(c, 0.5, 1.5), rng.normalArray(c)];
  const w = stored(w0, dt.weight), b = stored(b0, dt.bias);
  const x = stored(rng.normalArray(size).map((v) => cs.offset + 2 * v), dt.x);
  const dy = stored(rng.normalArray(size), dt.dy);
  const prevW = stored(rng.normalArray(c), dt.dweight),
    prevB = stored(rng.normalArray(c), dt.dbias);
  const st: BnState = {
    saveMean: gpu.empty([c], { dtype: dt.saveMean }),
    saveInvStd: gpu.empty([c], { dtype: dt.saveInvStd }),
    runningMean: tensorOf(gpu, new Float64Array(c), { dtype: dt.runningMean, shape: [c] }),
    runningVar: tensorOf(gpu, new Float64Array(c).fill(1), { dtype: dt.runningVar, shape: [c] }),
    weight: tensorOf(gpu, w, { dtype: dt.weight, shape: [c] }),
    bias: tensorOf(gpu, b, { dtype: dt.bias, shape: [c] }),
  };
  const xt = tensorOf(gpu, x, { dtype: dt.x, shape });
  const dyt = tensorOf(gpu, dy, { dtype: dt.dy, shape });
  const y = gpu.empty(shape, { dtype: dt.y }), dx = gpu.empty(shape, { dtype: dt.dx });
  const dweight = tensorOf(gpu, prevW, { dtype: dt.dweight, shape: [c] });
  const dbias = tensorOf(gpu, prevB, { dtype: dt.dbias, shape: [c] });
  batchNormForward({ ...st, y, x: xt }, { ...p, training: true, activation: kind });
  batchNormBackward({
    dx,
    dweight,
    dbias,
    dy: dyt,
    x: xt,
    y,
    weight: st.weight,
    saveMean: st.saveMean,
    saveInvStd: st.saveInvStd,
  }, { ...p, accumulate: true, activation: kind });
  const [ys, mean, invstd, rm, rv, dxs, dws, dbs] = await Promise.all(
    [y, st.saveMean, st.saveInvStd, st.runningMean, st.runningVar, dx, dweight, dbias].map((t) =>
      t.toArray()
    ),
  );
  for (const [t, d] of [[y, dt.y], [dx, dt.dx], [dweight, dt.dweight]] as const) {
    assert.equal(t.dtype, d);
  }
  const ref = batchNormTrainRef(n, c, hw, x, w, b, p.eps);
  const yRef = kind ? activationForwardRef(ref.y, kind) : ref.y;
  assertClose(ys, yRef, outTol(dt.y, yRef, { extra, f32: tol, what: `y ${what}` }));
  assertClose(
    mean,
    ref.mean,
    outTol(dt.saveMean, ref.mean, {
      extra,
      f32: { rtol: 1e-5, atol: 1e-5 },
      what: `saveMean ${what}`,
    }),
  );
  assertClose(
    invstd,
    ref.invstd,
    outTol(dt.saveInvStd, ref.invstd, {
      extra,
      f32: { rtol: 1e-4, atol: 0 },
      what: `saveInvStd ${what}`,
    }),
  );
  const rmRef = new Float64Array(c), rvRef = new Float64Array(c).fill(1);
  updateRunningRef(rmRef, rvRef, ref.mean, ref.unbiasedVar, p.momentum);
  assertClose(
    rm,
    rmRef,
    outTol(dt.runningMean, rmRef, {
      extra,
      f32: { rtol: 1e-5, atol: 1e-5 },
      what: `runningMean ${what}`,
    }),
  );
  assertClose(
    rv,
    rvRef,
    outTol(dt.runningVar, rvRef, {
      extra,
      f32: { rtol: 1e-4, atol: 1e-5 },
      what: `runningVar ${what}`,
    }),
  );
  // The backward reads the stored y (through the activation's backward) and statistics.
  const dz = kind ? activationBackwardRef(dy, ys, kind) : dy;
  const g = batchNormBackwardRef(n, c, hw, dz, x, w, mean, invstd);
  assertClose(dxs, g.dx, outTol(dt.dx, g.dx, { extra, f32: tol, what: `dx ${what}` }));
  const expW = g.dweight.map((v, i) => v + prevW[i]), expB = g.dbias.map((v, i) => v + prevB[i]);
  const gtol = { rtol: 1e-4, atol: 1e-3 };
  assertClose(
    dws,
    expW,
    outTol(dt.dweight, expW, { extra, f32: gtol, what: `dweight += ${what}` }),
  );
  assertClose(
    dbs,
    expB,
    outTol(dt.dbias, expB, { extra, f32: gtol, what: `dbias += ${what}` }),
  );

  // Eval with the (stored) running statistics.
  const xe = stored(rng.normalArray(size).map((v) => cs.offset + v), dt.x);
  const xet = tensorOf(gpu, xe, { dtype: dt.x, shape });
  batchNormForward({ ...st, y, x: xet }, { ...p, training: false, activation: kind });
  const eRef0 = batchNormEvalRef(n, c, hw, xe, rm, rv, w, b, p.eps);
  const eRef = kind ? activationForwardRef(eRef0, kind) : eRef0;
  // no reduction: f32 roundings of the coefficients and of the normalization only
  assertClose(
    await y.toArray(),
    eRef,
    outTol(dt.y, eRef, { extra: 0.01, f32: tol, what: `eval y ${what}` }),
  );
  for (const t of [xt, dyt, y, dx, dweight, dbias, xet, ...Object.values(st)]) t.dispose();
}

Deno.test(
  "batch norm f16 (training configuration: f16 x, y, dy, dx; f32 parameters, statistics, gradients) matches the CPU on f16-rounded inputs",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(21);
    const cases = [
      { n: 2, c: 3, hw: 35, shape: [2, 3, 7, 5], offset: 0 }, // scalar planes, odd hw
      { n: 3, c: 2, hw: 8, shape: [3, 2, 2, 4], offset: 1 }, // vec4<f16> planes
      { n: 5, c: 4, hw: 1, shape: [5, 4], offset: -2 }, // BatchNorm1d (columns)
      // n * hw = 4800 values per channel (two chunks of the partial sums), far from 0: the f32
      // statistics of f16 values, to f32 accuracy
      { n: 2, c: 2, hw: 2400, shape: [2, 2, 40, 60], offset: 3 },
    ];
    for (const [i, cs] of cases.entries()) {
      for (const kind of [undefined, KINDS[i % KINDS.length]]) {
        await halfCase(gpu, cs, rng, TRAIN_F16, kind);
      }
    }
    // f16 tensors split into ranges of samples (binding offsets of 128 f16 elements)
    await withBindingLimit(
      64,
      () =>
        halfCase(gpu, { n: 7, c: 2, hw: 8, shape: [7, 2, 8], offset: -1 }, rng, TRAIN_F16, "relu"),
    );
  },
);

Deno.test(
  "batch norm with f32 x / dx, f16 y / dy and f16 parameters and statistics, split into ranges of samples, matches the CPU",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(22);
    const cases = [
      { n: 3, c: 3, hw: 5, shape: [3, 3, 5], offset: 1 }, // one range
      // ranges of 2 samples (210 elements): f32 and f16 bindings start at different bases
      { n: 5, c: 3, hw: 35, shape: [5, 3, 5, 7], offset: 1, limit: 210 },
      { n: 7, c: 2, hw: 8, shape: [7, 2, 8], offset: -1, limit: 64 }, // vec4, ranges of 4
      { n: 30, c: 4, hw: 1, shape: [30, 4], offset: 0, limit: 64 }, // BatchNorm1d, ranges of 16
    ];
    for (const cs of cases) {
      for (const kind of [undefined, "sigmoid"] as const) {
        if (cs.limit === undefined) await halfCase(gpu, cs, rng, MIXED, kind);
        else await withBindingLimit(cs.limit, () => halfCase(gpu, cs, rng, MIXED, kind));
      }
    }
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
