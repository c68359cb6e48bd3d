// Tests of the direct convolution kernels (kernels/conv2d/direct*.ts), through conv2dForward /
// conv2dBackward with `direct: true` and directly with forced blockings, against the Float64 CPU
// reference (tests/cpu_ref/conv2d.ts, itself checked against PyTorch and finite differences in
// conv2d_test.ts).
import assert from "node:assert/strict";
import type { Tensor } from "../gpu/mod.ts";
import {
  conv2dBackward,
  conv2dForward,
  type Conv2dKernelOptions,
  type Conv2dParams,
} from "../kernels/mod.ts";
import { conv2dGeometry } from "../kernels/conv2d/index.ts";
import { bindingRange } from "../kernels/_binding.ts";
import {
  type AdapterProfile,
  adapterProfile,
  WEBGPU_DEFAULT_PROFILE,
} from "../kernels/_adapter.ts";
import type { DirectConvShape } from "../kernels/conv2d/geometry.ts";
import { directConvForward } from "../kernels/conv2d/direct.ts";
import { directConvWeightGrad } from "../kernels/conv2d/direct_weight_grad.ts";
import { planDirectConv, planDirectWeightGrad } from "../kernels/conv2d/direct_plan.ts";
import { activationForwardRef } from "./cpu_ref/activation.ts";
import { conv2dBackwardRef, conv2dRef } from "./cpu_ref/conv2d.ts";
import {
  assertClose,
  channelSlice,
  f16,
  F16_TEST,
  f16Tolerance,
  f32,
  GPU_TEST,
  maxAbs,
  Rng,
  roundF16,
  tensorOf,
  testGpu,
} from "./harness.ts";
import { conv2dPlansOf, kernelsOf } from "./kernels_of.ts";
import {
  conv2dCandidates,
  type Conv2dProblem,
  type ConvPlan,
  type ConvStep,
  planConv2d,
} from "../kernels/conv2d/plan.ts";
import { convKey, TuningTable } from "../kernels/autotune/table.ts";

const count = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** f32 tolerance for sums of `len` O(1) terms. */
const tol = (len: number) => ({ rtol: 1e-4, atol: 1e-5 + 2e-8 * len });

function shapes(p: Conv2dParams) {
  const g = conv2dGeometry(p);
  return {
    g,
    x: [g.n, g.cIn, g.h, g.w],
    w: [g.cOut, g.cIn, g.kh, g.kw],
    y: [g.n, g.cOut, g.oh, g.ow],
    len: Math.max(g.cIn * g.kh * g.kw, g.n * g.oh * g.ow, g.cOut * g.kh * g.kw),
  };
}

function data(p: Conv2dParams, seed: number, bias: boolean) {
  const s = shapes(p);
  const rng = new Rng(seed);
  return {
    s,
    x: rng.uniformArray(count(s.x)),
    w: rng.uniformArray(count(s.w)),
    b: bias ? rng.uniformArray(p.cOut) : undefined,
    dy: rng.uniformArray(count(s.y)),
  };
}

type Data = ReturnType<typeof data>;

type Store = "f32" | "f16";

/** Storage types of every operand of a forward and backward run. */
type Mix = Record<"x" | "w" | "b" | "y" | "dy" | "dx" | "dw" | "db", Store>;

/** Every operand f32. */
const F32: Mix = {
  x: "f32",
  w: "f32",
  b: "f32",
  y: "f32",
  dy: "f32",
  dx: "f32",
  dw: "f32",
  db: "f32",
};

/**
 * A forward and backward run with `mix`'s storage types (default every operand f32); the outputs
 * start as NaN (each must be overwritten). Returns the outputs, the plans the runner ran
 * (`plans.forward`, `plans.backward`) and the kernels dispatched.
 */
async function run(p: Conv2dParams, d: Data, options: Conv2dKernelOptions, mix: Mix = F32) {
  const gpu = await testGpu();
  const { s } = d;
  const up = (a: ArrayLike<number>, dtype: Store, shape: number[]) =>
    tensorOf(gpu, a, { dtype, shape });
  const nan = (t: Store, shape: number[]) => up(new Float64Array(count(shape)).fill(NaN), t, shape);
  const x = up(d.x, mix.x, s.x), w = up(d.w, mix.w, s.w), dy = up(d.dy, mix.dy, s.y);
  const b = d.b ? up(d.b, mix.b, [p.cOut]) : undefined;
  const y = nan(mix.y, s.y), dx = nan(mix.dx, s.x), dw = nan(mix.dw, s.w);
  const db = nan(mix.db, [p.cOut]);
  let ran: ConvPlan[] = [];
  const kernels = kernelsOf(gpu, () => {
    ran = conv2dPlansOf(gpu, () => {
      conv2dForward({ y, x, w, b }, { ...p, ...options });
      conv2dBackward({ dx, dw, db, dy, x, w }, { ...p, ...options });
    });
  });
  assert.equal(ran.length, 2);
  const out = {
    y: await y.toArray(),
    dx: await dx.toArray(),
    dw: await dw.toArray(),
    db: await db.toArray(),
    plans: { forward: ran[0], backward: ran[1] },
    kernels,
  };
  for (const t of [x, w, b, dy, y, dx, dw, db] as (Tensor | undefined)[]) t?.dispose();
  return out;
}

function compare(p: Conv2dParams, d: Data, got: Awaited<ReturnType<typeof run>>, label: string) {
  const t = tol(d.s.len);
  assertClose(got.y, conv2dRef(p, d.x, d.w, d.b), { ...t, what: `${label} y` });
  const g = conv2dBackwardRef(p, d.x, d.w, d.dy);
  assertClose(got.dx, g.dx, { ...t, what: `${label} dx` });
  assertClose(got.dw, g.dw, { ...t, what: `${label} dw` });
  assertClose(got.db, g.db, { ...t, what: `${label} db` });
}

/** The steps of a run's forward and backward plans. */
const stepsOf = (got: { plans: { forward: ConvPlan; backward: ConvPlan } }): ConvStep[] => [
  ...got.plans.forward.steps,
  ...got.plans.backward.steps,
];

/** How many of `steps` are of `kind`. */
const countSteps = (steps: readonly ConvStep[], kind: ConvStep["kind"]) =>
  steps.filter((s) => s.kind === kind).length;

// ---------------------------------------------------------------- forced direct path ----

/** [label, params, bias, whether the input gradient can run direct (stride 1)]. */
const CONFIGS: [string, Conv2dParams, boolean, boolean][] = [
  [
    "odd sizes, cIn 3, padding 1",
    { n: 2, cIn: 3, h: 9, w: 7, cOut: 5, kernel: 3, padding: 1 },
    true,
    true,
  ],
  [
    "stride > kernel, batch 1, cIn 1, no bias",
    {
      n: 1,
      cIn: 1,
      h: 11,
      w: 10,
      cOut: 4,
      kernel: 2,
      stride: 3,
    },
    false,
    false,
  ],
  [
    "padding > dilation*(k-1): negative padding of the flipped convolution",
    { n: 2, cIn: 2, h: 5, w: 6, cOut: 3, kernel: 3, padding: 3 },
    true,
    true,
  ],
  ["1x1 spatial output", { n: 2, cIn: 3, h: 5, w: 5, cOut: 7, kernel: 5 }, true, true],
  [
    "rectangular kernel/stride/padding/dilation",
    {
      n: 2,
      cIn: 3,
      h: 13,
      w: 14,
      cOut: 8,
      kernel: [3, 5],
      stride: [2, 1],
      padding: [4, 0],
      dilation: [1, 3],
    },
    true,
    false,
  ],
  [
    "stride 2 = dilation 2 (sliding weight gradient)",
    { n: 3, cIn: 2, h: 11, w: 9, cOut: 3, kernel: 3, stride: 2, dilation: 2, padding: 1 },
    true,
    false,
  ],
  [
    "dilation 2, stride 1 (flipped dilated kernel)",
    { n: 2, cIn: 3, h: 8, w: 9, cOut: 4, kernel: 3, padding: 2, dilation: 2 },
    false,
    true,
  ],
  ["pointwise 1x1", { n: 3, cIn: 5, h: 8, w: 9, cOut: 9, kernel: 1 }, true, true],
  ["LeNet conv2 shape, batch 3", { n: 3, cIn: 6, h: 14, w: 14, cOut: 16, kernel: 5 }, true, true],
];

Deno.test("direct conv2d (forced) forward and backward vs CPU reference", GPU_TEST, async () => {
  let seed = 100;
  for (const [label, p, bias, directDx] of CONFIGS) {
    const d = data(p, seed++, bias);
    const got = await run(p, d, { direct: true });
    compare(p, d, got, label);
    // The direct kernels ran (GEMM + col2im only for an input gradient of stride > 1).
    const { forward, backward } = got.plans;
    assert.equal(forward.forward?.path, "direct", label);
    assert.equal(backward.weightGrad?.path, "direct", label);
    assert.equal(backward.inputGrad?.path, directDx ? "direct" : "im2col", label);
    const steps = stepsOf(got), what = `${label}: ${steps.map((t) => t.kind)}`;
    assert.equal(countSteps(steps, "direct"), directDx ? 2 : 1, what);
    assert.equal(countSteps(steps, "directWeightGrad"), 1, what);
    assert.equal(countSteps(steps, "col2im") > 0, !directDx, what);
    assert.equal(countSteps(steps, "im2col"), 0, what);
  }
});

Deno.test("direct conv2d: direct: false never takes the direct kernels", GPU_TEST, async () => {
  const p = CONFIGS[0][1];
  const d = data(p, 120, true);
  const got = await run(p, d, { direct: false });
  compare(p, d, got, "direct: false");
  const { forward, backward } = got.plans;
  for (const pass of [forward.forward, backward.inputGrad, backward.weightGrad]) {
    assert.equal(pass?.path, "im2col");
  }
  const steps = stepsOf(got);
  assert.equal(countSteps(steps, "direct") + countSteps(steps, "directWeightGrad"), 0);
});

Deno.test(
  "direct conv2d backward: dw and db accumulate (+=), dx is overwritten",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const p: Conv2dParams = { n: 3, cIn: 2, h: 7, w: 6, cOut: 4, kernel: 3, padding: 1 };
    const d = data(p, 130, false);
    const { s } = d;
    const rng = new Rng(131);
    const priorW = rng.uniformArray(count(s.w)), priorB = rng.uniformArray(p.cOut);
    const x = gpu.tensor(f32(d.x), { shape: s.x });
    const w = gpu.tensor(f32(d.w), { shape: s.w });
    const dy = gpu.tensor(f32(d.dy), { shape: s.y });
    const dx = gpu.tensor(new Float32Array(count(s.x)).fill(7), { shape: s.x });
    const dw = gpu.tensor(f32(priorW), { shape: s.w });
    const db = gpu.tensor(f32(priorB), { shape: [p.cOut] });
    conv2dBackward({ dx, dw, db, dy, x, w }, { ...p, accumulate: true, direct: true });
    const g = conv2dBackwardRef(p, d.x, d.w, d.dy);
    const t = tol(s.len);
    assertClose(await dw.toArray(), g.dw.map((v, i) => v + priorW[i]), { ...t, what: "dw +=" });
    assertClose(await db.toArray(), g.db.map((v, i) => v + priorB[i]), { ...t, what: "db +=" });
    assertClose(await dx.toArray(), g.dx, { ...t, what: "dx (overwritten)" });
    // Only db, then only dw, each accumulated once more.
    conv2dBackward({ db, dy, x, w }, { ...p, accumulate: true, direct: true });
    conv2dBackward({ dw, dy, x, w }, { ...p, accumulate: true, direct: true });
    assertClose(await dw.toArray(), g.dw.map((v, i) => 2 * v + priorW[i]), { ...t, what: "dw 2x" });
    assertClose(await db.toArray(), g.db.map((v, i) => 2 * v + priorB[i]), { ...t, what: "db 2x" });
    for (const tt of [x, w, dy, dx, dw, db]) tt.dispose();
  },
);

Deno.test("direct conv2d: chunks of images give the same results", GPU_TEST, async () => {
  const p: Conv2dParams = { n: 5, cIn: 3, h: 9, w: 7, cOut: 5, kernel: 3, padding: 1 };
  const d = data(p, 140, true);
  const whole = await run(p, d, { direct: true });
  // 1 byte: one image per chunk (ranges at offsets that are not 256-byte aligned).
  const chunked = await run(p, d, { direct: true, maxChunkBytes: 1 });
  assert.equal(chunked.plans.backward.chunks.chunks, 5);
  assert.equal(countSteps(chunked.plans.backward.steps, "directWeightGrad"), 5);
  assert.deepEqual(chunked.y, whole.y);
  assert.deepEqual(chunked.dx, whole.dx);
  assertClose(chunked.dw, whole.dw, { ...tol(d.s.len), what: "chunked dw" });
  assertClose(chunked.db, whole.db, { ...tol(d.s.len), what: "chunked db" });
  compare(p, d, whole, "whole");
});

// ----------------------------------------------------------------- forced blockings ----

function directShape(p: Conv2dParams): DirectConvShape {
  const g = conv2dGeometry(p);
  return { ...g, n: g.n };
}

Deno.test(
  "direct kernels: forced blockings (input-channel chunks, partial channel/row blocks, splits)",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const p: Conv2dParams = { n: 3, cIn: 4, h: 8, w: 9, cOut: 5, kernel: 3, padding: 1 };
    const d = data(p, 150, true);
    const { s } = d;
    const sh = directShape(p);
    const x = gpu.tensor(f32(d.x), { shape: s.x });
    const w = gpu.tensor(f32(d.w), { shape: s.w });
    const b = gpu.tensor(f32(d.b!), { shape: [p.cOut] });
    const dy = gpu.tensor(f32(d.dy), { shape: s.y });
    const r = (t: Tensor) => bindingRange(t, 0, t.size);
    const t = tol(s.len);
    const refY = conv2dRef(p, d.x, d.w, d.b);
    const ref = conv2dBackwardRef(p, d.x, d.w, d.dy);
    // Forward: 2 input channels per dispatch (the second adds), 2 output channels per thread
    // (the last block half empty), 4 pixels per thread (the last block of 9 partly empty).
    for (
      const tile of [{ tx: 4, co: 2, ci: 2 }, { tx: 9, co: 5, ci: 1 }, { tx: 1, co: 3, ci: 4 }]
    ) {
      const y = gpu.tensor(new Float32Array(count(s.y)).fill(NaN), { shape: s.y });
      directConvForward(gpu, sh, { y: r(y), x: r(x), w, b }, { tile });
      assertClose(await y.toArray(), refY, { ...t, what: `y ${JSON.stringify(tile)}` });
      y.dispose();
    }
    // Input gradient: the flipped convolution of dy, in 2 chunks of output channels of 3 and 2.
    const flipped: DirectConvShape = {
      ...sh,
      cIn: sh.cOut,
      cOut: sh.cIn,
      h: sh.oh,
      w: sh.ow,
      oh: sh.h,
      ow: sh.w,
      ph: 2 - sh.ph,
      pw: 2 - sh.pw,
    };
    const dx = gpu.tensor(new Float32Array(count(s.x)).fill(NaN), { shape: s.x });
    directConvForward(gpu, flipped, { y: r(dx), x: r(dy), w }, {
      flip: true,
      tile: { tx: 2, co: 3, ci: 1 },
    });
    assertClose(await dx.toArray(), ref.dx, { ...t, what: "flipped dx" });
    // Weight gradient: 2 output channels and 2 kernel rows per thread (partial last blocks),
    // 3 pixels per step; one split (each thread over all 3 images) and 2 splits (2 + 1 images).
    for (
      const [tile, splits] of [[{ tx: 3, co: 2, ky: 2 }, 1], [{ tx: 3, co: 2, ky: 2 }, 2], [
        { tx: 9, co: 5, ky: 3 },
        3,
      ]] as const
    ) {
      const dw = gpu.tensor(new Float32Array(count(s.w)).fill(NaN), { shape: s.w });
      const db = gpu.tensor(new Float32Array(p.cOut).fill(NaN), { shape: [p.cOut] });
      directConvWeightGrad(gpu, sh, { dw, db, x: r(x), dy: r(dy) }, {
        accumulate: false,
        tile,
        splits,
      });
      const what = `${JSON.stringify(tile)} splits ${splits}`;
      assertClose(await dw.toArray(), ref.dw, { ...t, what: `dw ${what}` });
      assertClose(await db.toArray(), ref.db, { ...t, what: `db ${what}` });
      dw.dispose();
      db.dispose();
    }
    assert.throws(
      () => directConvForward(gpu, sh, { y: r(dx), x: r(x), w }, { tile: { tx: 2, co: 2, ci: 3 } }),
      (e: Error) => e instanceof RangeError && /3 must divide 4/.test(e.message),
    );
    const big = { ...sh, cIn: 64, cOut: 64 };
    assert.throws(
      () =>
        directConvForward(gpu, big, { y: r(dx), x: r(x), w }, { tile: { tx: 1, co: 8, ci: 64 } }),
      (e: Error) => e instanceof RangeError && /exceeds the 4096/.test(e.message),
    );
    for (const tt of [x, w, b, dy, dx]) tt.dispose();
  },
);

Deno.test(
  "direct forward: activation in the last input-channel chunk only, output into a channel slice",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const p: Conv2dParams = { n: 3, cIn: 4, h: 8, w: 9, cOut: 5, kernel: 3, padding: 1 };
    const d = data(p, 160, true);
    const { s } = d;
    const sh = directShape(p);
    const wd = d.w.map((v) => 2 * v); // outputs past relu6's 6
    const x = gpu.tensor(f32(d.x), { shape: s.x });
    const w = gpu.tensor(f32(wd), { shape: s.w });
    const b = gpu.tensor(f32(d.b!), { shape: [p.cOut] });
    const P = 8 * 9, C = p.cOut + 3, off = 2;
    const sentinel = -777.5;
    const plain = conv2dRef(p, d.x, wd, d.b);
    for (const activation of ["relu6", "tanh"] as const) {
      const ref = activationForwardRef(plain, activation);
      // 2 and 1 input channels per dispatch: the activation must wait for the last one.
      for (const tile of [{ tx: 4, co: 2, ci: 2 }, { tx: 3, co: 5, ci: 1 }]) {
        const y = gpu.tensor(new Float32Array(p.n * C * P).fill(sentinel), {
          shape: [p.n, C, 8, 9],
        });
        const yr = bindingRange(y, off * P, ((p.n - 1) * C + p.cOut) * P);
        directConvForward(gpu, sh, { y: yr, x: r(x), w, b }, { tile, activation, yChannels: C });
        const got = await y.toArray();
        y.dispose();
        const slice = channelSlice(got, {
          n: p.n,
          channels: C,
          offset: off,
          cOut: p.cOut,
          pixels: P,
          sentinel,
        });
        assertClose(slice, ref, { ...tol(s.len), what: `${activation} ${JSON.stringify(tile)}` });
      }
    }
    assert.throws(
      () => directConvForward(gpu, sh, { y: r(x), x: r(x), w }, { yChannels: 4 }),
      (e: Error) =>
        e instanceof RangeError && /yChannels 4 must be an integer >= cOut 5/.test(e.message),
    );
    for (const tt of [x, w, b]) tt.dispose();
  },
);

function r(t: Tensor) {
  return bindingRange(t, 0, t.size);
}

// --------------------------------------------------------------- the default choice ----

Deno.test(
  "direct conv2d: LeNet's convolutions at batch 100 take the direct kernels by default",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const layers: [Conv2dParams, boolean][] = [
      [{ n: 100, cIn: 1, h: 28, w: 28, cOut: 6, kernel: 5, padding: 2 }, false],
      [{ n: 100, cIn: 6, h: 14, w: 14, cOut: 16, kernel: 5 }, true],
    ];
    let seed = 160;
    for (const [p, needDx] of layers) {
      const d = data(p, seed++, true);
      const got = await run(p, d, {});
      if (!adapterProfile(gpu).mesaCpu) continue; // the default choice is for llvmpipe
      const label = `LeNet ${p.cIn}->${p.cOut}`;
      const { forward, backward } = got.plans;
      for (const pass of [forward.forward, backward.inputGrad, backward.weightGrad]) {
        assert.equal(pass?.path, "direct", label);
      }
      const kinds = stepsOf(got).map((t) => t.kind);
      assert.ok(kinds.every((k) => k === "direct" || k === "directWeightGrad"), `${kinds}`);
      const t = tol(d.s.len);
      assertClose(got.y, conv2dRef(p, d.x, d.w, d.b), { ...t, what: `${label} y` });
      const g = conv2dBackwardRef(p, d.x, d.w, d.dy);
      if (needDx) assertClose(got.dx, g.dx, { ...t, what: `${label} dx` });
      assertClose(got.dw, g.dw, { ...t, what: `${label} dw` });
      assertClose(got.db, g.db, { ...t, what: `${label} db` });
    }
  },
);

/** llvmpipe, as the planner sees it (whatever adapter runs the tests). */
const LLVMPIPE: AdapterProfile = {
  ...WEBGPU_DEFAULT_PROFILE,
  description: "llvmpipe (LLVM 19.1.7, 256 bits)",
  isCpu: true,
  mesaCpu: true,
};

const F = "f32" as const;
const forwardProblem = (p: Conv2dParams, options = {}): Conv2dProblem => ({
  geometry: conv2dGeometry(p),
  call: "forward",
  dtypes: { x: F, w: F, b: F, y: F },
  options,
});
const backwardProblem = (p: Conv2dParams, options = {}): Conv2dProblem => ({
  geometry: conv2dGeometry(p),
  call: "backward",
  dtypes: { x: F, w: F, dy: F, dx: F, dw: F, db: F },
  options,
});

Deno.test("planConv2d: direct kernels by default on Mesa's CPU adapters only; table, options", () => {
  const lenet1: Conv2dParams = { n: 100, cIn: 1, h: 28, w: 28, cOut: 6, kernel: 5, padding: 2 };
  const lenet2: Conv2dParams = { n: 100, cIn: 6, h: 14, w: 14, cOut: 16, kernel: 5 };
  for (const p of [lenet1, lenet2]) {
    assert.equal(planConv2d(forwardProblem(p), LLVMPIPE, undefined).forward?.path, "direct");
    const b = planConv2d(backwardProblem(p), LLVMPIPE, undefined);
    assert.equal(b.inputGrad?.path, "direct");
    assert.equal(b.weightGrad?.path, "direct");
    assert.ok(b.steps.every((t) => t.kind === "direct" || t.kind === "directWeightGrad"));
  }
  // Not on other adapters (SwiftShader, GPUs), nor for convolutions too small to repay the
  // compile time.
  const swiftShader = {
    ...LLVMPIPE,
    description: "SwiftShader",
    mesaCpu: false,
    swiftShader: true,
  };
  for (const profile of [swiftShader, WEBGPU_DEFAULT_PROFILE]) {
    assert.equal(planConv2d(forwardProblem(lenet2), profile, undefined).forward?.path, "im2col");
  }
  const small = forwardProblem({ ...lenet2, n: 2 });
  assert.equal(planConv2d(small, LLVMPIPE, undefined).forward?.path, "im2col");
  // A table entry steers a pass the options leave open; options win over the table.
  const table = new TuningTable();
  table.set(convKey(conv2dGeometry(lenet2), "forward"), { op: "conv2d", direct: false });
  table.set(convKey(conv2dGeometry({ ...lenet2, n: 2 }), "forward"), {
    op: "conv2d",
    direct: true,
  });
  assert.equal(planConv2d(forwardProblem(lenet2), LLVMPIPE, table).forward?.path, "im2col");
  assert.equal(planConv2d(small, LLVMPIPE, table).forward?.path, "direct");
  const forced = forwardProblem(lenet2, { direct: true });
  assert.equal(planConv2d(forced, LLVMPIPE, table).forward?.path, "direct");
  // The tuner's candidates: both paths, or im2col alone where no direct kernel runs (a stride-2
  // input gradient); 1x1 convolutions with enough pixels: batched GEMMs.
  const paths = (q: Conv2dProblem, pass: "forward" | "inputGrad" | "weightGrad") =>
    conv2dCandidates(q, pass, WEBGPU_DEFAULT_PROFILE).map((c) => c[pass]?.path);
  assert.deepEqual(paths(forwardProblem(lenet2), "forward"), ["im2col", "direct"]);
  const strided = backwardProblem({ ...lenet2, stride: 2 });
  assert.deepEqual(paths(strided, "inputGrad"), ["im2col"]);
  assert.deepEqual(paths(strided, "weightGrad"), ["im2col", "direct"]);
  const pointwise = forwardProblem({ n: 4, cIn: 8, h: 9, w: 9, cOut: 16, kernel: 1 });
  assert.deepEqual(paths(pointwise, "forward"), ["pointwise", "direct"]);
  // Plans are plain values: the same problem gives equal plans.
  const again = planConv2d(backwardProblem(lenet2), LLVMPIPE, undefined);
  assert.deepEqual(again, planConv2d(backwardProblem(lenet2), LLVMPIPE, undefined));
  assert.deepEqual(JSON.parse(JSON.stringify(again)), again);
});

Deno.test("direct conv2d plans: budgets and limits", () => {
  const lenet2 = directShape({ n: 256, cIn: 6, h: 14, w: 14, cOut: 16, kernel: 5 });
  const plan = planDirectConv(lenet2)!;
  assert.ok(plan, "LeNet conv2 has a direct plan");
  assert.equal(lenet2.cIn % plan.tile.ci, 0);
  assert.ok(plan.tile.ci * 25 * plan.tile.co * plan.tile.tx <= 4800, JSON.stringify(plan));
  // Weights staged per workgroup fit 16 KiB of workgroup memory, whatever the shape.
  for (const [cIn, cOut, k] of [[1, 96, 11], [3, 64, 7], [64, 64, 3], [16, 512, 1]]) {
    const s = directShape({ n: 4, cIn, h: 32, w: 32, cOut, kernel: k });
    const t = planDirectConv(s)?.tile;
    if (t) assert.ok(t.co * t.ci * k * k <= 4096, `${cIn}->${cOut} k${k}: ${JSON.stringify(t)}`);
  }
  // Kernel rows wider than 16 taps: neither kernel.
  const wide = directShape({ n: 1, cIn: 1, h: 20, w: 20, cOut: 2, kernel: [1, 17] });
  assert.equal(planDirectConv(wide), undefined);
  assert.equal(planDirectWeightGrad(wide), undefined);
  // Every blocking of a wide 3x3 convolution keeps its per-thread loads within budget.
  const big = directShape({ n: 8, cIn: 512, h: 14, w: 14, cOut: 512, kernel: 3, padding: 1 });
  const bigPlan = planDirectConv(big);
  if (bigPlan) assert.ok(bigPlan.tile.ci * 3 * (bigPlan.tile.tx + 2) <= 256);
  // The weight gradient's accumulators per thread stay within budget.
  const wg = planDirectWeightGrad(lenet2)!;
  assert.ok(wg.tile.co * wg.tile.ky * 5 <= 200, JSON.stringify(wg));
});

// ------------------------------------------------------------------------- f16 ----

/**
 * Training's configuration: activations and their gradients f16, weights f16 copies, the bias
 * and every parameter gradient f32.
 */
const TRAIN: Mix = {
  x: "f16",
  w: "f16",
  b: "f32",
  y: "f16",
  dy: "f16",
  dx: "f16",
  dw: "f32",
  db: "f32",
} as const;

/** Another mix: f32 activations and input gradient, f16 parameters, dy and parameter gradients. */
const OTHER: Mix = {
  x: "f32",
  w: "f16",
  b: "f16",
  y: "f32",
  dy: "f16",
  dx: "f32",
  dw: "f16",
  db: "f16",
} as const;

/**
 * `[label, params, bias, whether dx runs direct]`: the direct kernels in f16, with an f32
 * scratch for the partial sums where the input channels take several dispatches (LeNet conv2's
 * input gradient: 16 input channels, 4 per dispatch).
 */
const F16_CONFIGS: [string, Conv2dParams, boolean, boolean][] = [
  CONFIGS[0].slice(0, 4) as [string, Conv2dParams, boolean, boolean],
  CONFIGS[1].slice(0, 4) as [string, Conv2dParams, boolean, boolean],
  CONFIGS[6].slice(0, 4) as [string, Conv2dParams, boolean, boolean],
  CONFIGS[8].slice(0, 4) as [string, Conv2dParams, boolean, boolean],
];

Deno.test("direct conv2d f16 (forced, training mix) vs CPU reference", F16_TEST, async () => {
  let seed = 1300;
  for (const [label, p, bias, directDx] of F16_CONFIGS) {
    const d = data(p, seed++, bias);
    const got = await run(p, d, { direct: true }, TRAIN);
    const x = roundF16(d.x), w = roundF16(d.w), dy = roundF16(d.dy);
    const refY = conv2dRef(p, x, w, d.b);
    const g = conv2dBackwardRef(p, x, w, dy);
    // y and a direct dx: f32 sums of f16 values, rounded once on store (extra 0, whatever
    // the reduction length). A dx through im2col also rounds dcol (W^T dy, cOut = 4 terms) to
    // f16 before col2im sums at most ceil(2/3)^2 = 1 tap per element: extra 0.5.
    assertClose(got.y, refY, { ...f16Tolerance(maxAbs(refY)), what: `f16 ${label} y` });
    assertClose(got.dx, g.dx, {
      ...f16Tolerance(maxAbs(g.dx), directDx ? 0 : 0.5),
      what: `f16 ${label} dx`,
    });
    assertClose(got.dw, g.dw, { ...tol(d.s.len), what: `f16 ${label} dw` });
    assertClose(got.db, g.db, { ...tol(d.s.len), what: `f16 ${label} db` });
    const own = got.kernels.filter((k) => k.startsWith("conv2d"));
    assert.ok(own.every((k) => k.includes("_h-")), `${label}: ${own.join(", ")}`);
    const steps = stepsOf(got), what = `${label}: ${steps.map((t) => t.kind)}`;
    assert.equal(countSteps(steps, "direct"), directDx ? 2 : 1, what);
    assert.equal(countSteps(steps, "directWeightGrad"), 1, what);
    // LeNet conv2's input gradient (16 input channels) takes 4 per dispatch: their sums go
    // through the f32 scratch, added by the last dispatch.
    const flip = steps.find((t) => t.kind === "direct" && t.flip);
    const split = flip?.kind === "direct" && flip.tile.ci < flip.shape.cIn;
    assert.equal(split, p.cOut === 16, `${label}: ${JSON.stringify(flip)}`);
    const prev = got.kernels.filter((k) => /^conv2d_direct_fwd.*_flip_prev/.test(k)).length;
    assert.equal(prev, p.cOut === 16 ? 1 : 0, `${label}: ${got.kernels}`);
  }
});

Deno.test("direct conv2d f16: integer data is reproduced exactly", F16_TEST, async () => {
  // Small integers: every product and partial sum is an integer well below 2048, so the f16
  // paths must match the reference exactly (the f32 scratch of LeNet conv2's chunks included).
  const rng = new Rng(1320);
  const ints = (n: number, m: number) =>
    Float64Array.from({ length: n }, () => Math.round(rng.uniform(-m, m)));
  for (const [label, p, bias] of F16_CONFIGS) {
    const s = shapes(p);
    const d = {
      s,
      x: ints(count(s.x), 2),
      w: ints(count(s.w), 2),
      b: bias ? ints(p.cOut, 3) : undefined,
      dy: ints(count(s.y), 2),
    };
    const got = await run(p, d, { direct: true }, TRAIN);
    const g = conv2dBackwardRef(p, d.x, d.w, d.dy);
    const exact = (what: string) => ({ rtol: 0, atol: 0, what: `exact ${label} ${what}` });
    assertClose(got.y, conv2dRef(p, d.x, d.w, d.b), exact("y"));
    assertClose(got.dx, g.dx, exact("dx"));
    assertClose(got.dw, g.dw, exact("dw"));
    assertClose(got.db, g.db, exact("db"));
  }
});

Deno.test(
  "direct kernels f16: forced blockings, chunks summed in f32 into an f16 channel slice",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const p: Conv2dParams = { n: 3, cIn: 4, h: 8, w: 9, cOut: 5, kernel: 3, padding: 1 };
    const d = data(p, 1330, true);
    const { s } = d;
    const sh = directShape(p);
    const wd = d.w.map((v) => 2 * v); // outputs past relu6's 6
    const x = gpu.tensor(f16(d.x), { shape: s.x });
    const w = gpu.tensor(f16(wd), { shape: s.w });
    const b = gpu.tensor(f32(d.b!), { shape: [p.cOut] });
    const dy = gpu.tensor(f16(d.dy), { shape: s.y });
    const P = 8 * 9, C = p.cOut + 3, off = 2;
    const sentinel = -777.5; // exact in f16
    const ref = activationForwardRef(conv2dRef(p, roundF16(d.x), roundF16(wd), d.b), "relu6");
    // 2 and 1 input channels per dispatch (through the f32 scratch), and all 4 in one.
    for (
      const tile of [{ tx: 4, co: 2, ci: 2 }, { tx: 3, co: 5, ci: 1 }, { tx: 9, co: 3, ci: 4 }]
    ) {
      const y = gpu.tensor(new Float16Array(p.n * C * P).fill(sentinel), {
        shape: [p.n, C, 8, 9],
      });
      const yr = bindingRange(y, off * P, ((p.n - 1) * C + p.cOut) * P);
      const kernels = kernelsOf(gpu, () =>
        directConvForward(gpu, sh, { y: yr, x: r(x), w, b }, {
          tile,
          activation: "relu6",
          yChannels: C,
        }));
      assert.equal(kernels.some((k) => k.includes("_prev")), tile.ci < 4, kernels.join(", "));
      const got = await y.toArray();
      y.dispose();
      const slice = channelSlice(got, {
        n: p.n,
        channels: C,
        offset: off,
        cOut: p.cOut,
        pixels: P,
        sentinel,
      });
      // f32 sums of f16 values rounded once (extra 0, whatever the 36-term reduction).
      assertClose(slice, ref, { ...f16Tolerance(maxAbs(ref)), what: `y ${JSON.stringify(tile)}` });
    }
    // Weight gradient from f16 x and dy into f32 dw and db: split over 1 and 2 image groups.
    const g = conv2dBackwardRef(p, roundF16(d.x), roundF16(wd), roundF16(d.dy));
    for (const splits of [1, 2]) {
      const dw = gpu.tensor(new Float32Array(count(s.w)).fill(NaN), { shape: s.w });
      const db = gpu.tensor(new Float32Array(p.cOut).fill(NaN), { shape: [p.cOut] });
      directConvWeightGrad(gpu, sh, { dw, db, x: r(x), dy: r(dy) }, {
        accumulate: false,
        tile: { tx: 3, co: 2, ky: 2 },
        splits,
      });
      assertClose(await dw.toArray(), g.dw, { ...tol(s.len), what: `f16 dw splits ${splits}` });
      assertClose(await db.toArray(), g.db, { ...tol(s.len), what: `f16 db splits ${splits}` });
      dw.dispose();
      db.dispose();
    }
    // A non-float tensor in a float slot.
    const u = gpu.empty(s.x, { dtype: "u32" });
    const yy = gpu.empty(s.y, { dtype: "f16" });
    assert.throws(
      () => directConvForward(gpu, sh, { y: r(yy), x: r(u), w }),
      (e: Error) => e instanceof TypeError && /conv2d: x must be f32 or f16/.test(e.message),
    );
    assert.throws(
      () => directConvWeightGrad(gpu, sh, { dw: yy, x: r(x), dy: r(u) }, { accumulate: false }),
      (e: Error) => e instanceof TypeError && /conv2d: dy must be f32 or f16/.test(e.message),
    );
    for (const tt of [x, w, b, dy, u, yy]) tt.dispose();
  },
);

Deno.test(
  "direct conv2d f16: another mix, and chunks of images give the same results",
  F16_TEST,
  async () => {
    const p: Conv2dParams = { n: 5, cIn: 3, h: 9, w: 7, cOut: 5, kernel: 3, padding: 1 };
    const d = data(p, 1340, true);
    // f32 x, y and dx; f16 w, b, dy, dw and db.
    const got = await run(p, d, { direct: true }, OTHER);
    const g = conv2dBackwardRef(
      p,
      Float64Array.from(d.x, Math.fround),
      roundF16(d.w),
      roundF16(d.dy),
    );
    const refY = conv2dRef(p, Float64Array.from(d.x, Math.fround), roundF16(d.w), roundF16(d.b!));
    const t = tol(d.s.len);
    assertClose(got.y, refY, { ...t, what: "mixed y" });
    assertClose(got.dx, g.dx, { ...t, what: "mixed dx" });
    // f32 sums (over 5 * 63 pixels) rounded once into f16.
    assertClose(got.dw, g.dw, { ...f16Tolerance(maxAbs(g.dw)), what: "mixed dw" });
    assertClose(got.db, g.db, { ...f16Tolerance(maxAbs(g.db)), what: "mixed db" });
    assert.ok(got.y instanceof Float32Array && got.dw instanceof Float16Array);
    assert.equal(countSteps(got.plans.backward.steps, "directWeightGrad"), 1);
    // Training's mix, one image per chunk (ranges of f16 tensors at unaligned offsets).
    const whole = await run(p, d, { direct: true }, TRAIN);
    const chunked = await run(p, d, { direct: true, maxChunkBytes: 1 }, TRAIN);
    assert.equal(countSteps(chunked.plans.backward.steps, "directWeightGrad"), 5);
    assert.deepEqual(chunked.y, whole.y);
    assert.deepEqual(chunked.dx, whole.dx);
    assertClose(chunked.dw, whole.dw, { ...tol(d.s.len), what: "chunked dw" });
    assertClose(chunked.db, whole.db, { ...tol(d.s.len), what: "chunked db" });
  },
);
