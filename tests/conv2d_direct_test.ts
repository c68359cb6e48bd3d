// Tests of the direct convolution kernels (kernels/conv2d/direct*.ts): the suites of
// tests/ops/conv2d_direct.ts (conv2dForward / conv2dBackward with `direct: true`, or by default
// on llvmpipe, in f32 and f16 mixes, against the Float64 CPU reference of tests/cpu_ref/conv2d.ts,
// itself checked against PyTorch and finite differences in conv2d_test.ts, with the paths and
// steps of the plans they ran), the kernels called directly with forced blockings, and the
// planner's choices.
import assert from "node:assert/strict";
import type { Tensor } from "../gpu/mod.ts";
import type { Conv2dParams } from "../kernels/mod.ts";
import { conv2dGeometry } from "../kernels/conv2d/index.ts";
import { bindingRange } from "../kernels/_binding.ts";
import { type AdapterProfile, WEBGPU_DEFAULT_PROFILE } from "../kernels/_adapter.ts";
import { type DirectConvShape, flippedShape } from "../kernels/conv2d/geometry.ts";
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
  testGpu,
} from "./harness.ts";
import { kernelsOf } from "./kernels_of.ts";
import { conv2dChoices, type Conv2dProblem, planConv2d } from "../kernels/conv2d/plan.ts";
import { convKey, TuningTable } from "../kernels/autotune/table.ts";
import { testOp } from "./_op.ts";
import { conv2dShapes, conv2dTol as tol } from "./ops/conv2d.ts";
import { DIRECT_SUITES } from "./ops/conv2d_direct.ts";

for (const suite of DIRECT_SUITES) testOp(suite);

const count = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** x, w, b and dy of `p`, uniform in [-1, 1) from `seed`, and the shapes. */
function data(p: Conv2dParams, seed: number) {
  const s = conv2dShapes(p), rng = new Rng(seed);
  const u = (shape: number[]) => rng.uniformArray(count(shape));
  return { s, x: u(s.x), w: u(s.w), b: rng.uniformArray(p.cOut), dy: u(s.y) };
}

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
    const d = data(p, 150);
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
    // (the last block half empty), 4 pixels per thread (the last block of 9 partly empty); the
    // multiply-adds in groups of output channels (2 + 2 + 1, and one by one).
    for (
      const tile of [
        { tx: 4, co: 2, ci: 2 },
        { tx: 9, co: 5, ci: 1 },
        { tx: 1, co: 3, ci: 4 },
        { tx: 4, co: 5, ci: 2, cg: 2 },
        { tx: 3, co: 3, ci: 4, cg: 1 },
      ]
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
    // (Also with its multiply-adds in groups of 2 + 1 output channels.)
    const dx = gpu.tensor(new Float32Array(count(s.x)).fill(NaN), { shape: s.x });
    for (const tile of [{ tx: 2, co: 3, ci: 1 }, { tx: 2, co: 3, ci: 1, cg: 2 }]) {
      gpu.write(dx, new Float32Array(count(s.x)).fill(NaN));
      directConvForward(gpu, flipped, { y: r(dx), x: r(dy), w }, { flip: true, tile });
      assertClose(await dx.toArray(), ref.dx, { ...t, what: `flipped dx ${JSON.stringify(tile)}` });
    }
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
    const d = data(p, 160);
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
  // Not on other adapters (SwiftShader: they run there, forced, but compile far slower; GPUs),
  // nor for convolutions too small to repay the compile time.
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
    conv2dChoices(q, pass, WEBGPU_DEFAULT_PROFILE).map((c) => c.plan[pass]?.path);
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

Deno.test("planConv2d on llvmpipe: im2col for small images and wide layers, as timed", () => {
  // ResNet-18 at b8@96 (what `deno task tune` chose; see _occupied() in kernels/conv2d/cost.ts):
  // im2col + GEMM where the direct kernel measured 1.2-2.3x slower, direct where it was faster
  // or within a few percent.
  const path = (p: Conv2dParams, pass: "forward" | "inputGrad") =>
    planConv2d(
      pass === "forward" ? forwardProblem(p) : backwardProblem(p),
      LLVMPIPE,
      undefined,
    )[pass]?.path;
  const r = (cIn: number, hw: number, cOut: number, kernel: number, stride = 1) => ({
    n: 8,
    cIn,
    h: hw,
    w: hw,
    cOut,
    kernel,
    stride,
    padding: kernel === 3 ? 1 : 0,
  });
  for (
    const [p, forward, inputGrad] of [
      [r(64, 24, 64, 3), "direct", "direct"],
      [r(128, 12, 128, 3), "direct", "direct"],
      [r(256, 6, 256, 3), "im2col", "im2col"],
      [r(512, 3, 512, 3), "im2col", "im2col"],
      [r(128, 12, 256, 3, 2), "im2col", undefined],
      [r(256, 6, 512, 3, 2), "im2col", undefined],
      [r(128, 12, 256, 1, 2), "im2col", undefined],
      [r(256, 6, 512, 1, 2), "im2col", undefined],
    ] as const
  ) {
    assert.equal(path(p, "forward"), forward, `forward ${JSON.stringify(p)}`);
    if (inputGrad) assert.equal(path(p, "inputGrad"), inputGrad, `dx ${JSON.stringify(p)}`);
  }
  // AlexNet at b2: conv1 direct (0.81x im2col's time), the 3x3 layers at 12x12 im2col (2.0x).
  const alex1 = { n: 2, cIn: 1, h: 224, w: 224, cOut: 96, kernel: 11, stride: 4, padding: 1 };
  assert.equal(path(alex1, "forward"), "direct");
  const alex3 = { n: 2, cIn: 256, h: 12, w: 12, cOut: 384, kernel: 3, padding: 1 };
  assert.equal(path(alex3, "forward"), "im2col");
  assert.equal(path(alex3, "inputGrad"), "im2col");
  // DenseNet b16 3x3 at 6x6 stays direct (forward 0.99x, input gradient 0.70x).
  const dense3 = { n: 16, cIn: 144, h: 6, w: 6, cOut: 32, kernel: 3, padding: 1 };
  assert.equal(path(dense3, "forward"), "direct");
  assert.equal(path(dense3, "inputGrad"), "direct");
});

Deno.test("planConv2d: a table entry's groups picks the grouped or the plain direct blocking", () => {
  // ResNet's 3x3 64 -> 64 at 24x24: the grouped blocking (tx 4, co 16 in groups of 4) replaces
  // the plain one (tx 2, co 32) by default.
  const p: Conv2dParams = { n: 8, cIn: 64, h: 24, w: 24, cOut: 64, kernel: 3, padding: 1 };
  const g = conv2dGeometry(p);
  const grouped = planDirectConv(directShape(p))!.tile;
  const plain = planDirectConv(directShape(p), false)!.tile;
  assert.equal(grouped.cg, 4);
  assert.equal(plain.cg, undefined);
  const flipped = flippedShape(g, g.n);
  const groupedX = planDirectConv(flipped)!.tile, plainX = planDirectConv(flipped, false)!.tile;
  assert.notDeepEqual(groupedX, plainX);
  const dw = planConv2d(backwardProblem(p, { direct: true }), LLVMPIPE, undefined).weightGrad;
  const cases: [boolean | undefined, typeof grouped, typeof grouped][] = [
    [undefined, grouped, groupedX],
    [true, grouped, groupedX],
    [false, plain, plainX],
  ];
  for (const [groups, tile, tileX] of cases) {
    const table = new TuningTable();
    for (const pass of ["forward", "inputGrad", "weightGrad"] as const) {
      table.set(convKey(g, pass), {
        op: "conv2d",
        direct: true,
        ...(groups === undefined ? {} : { groups }),
      });
    }
    const f = planConv2d(forwardProblem(p), LLVMPIPE, table);
    assert.deepEqual(f.forward, { path: "direct", tile }, `groups ${groups}`);
    assert.ok(f.steps.every((s) => s.kind === "direct" && s.tile === tile), `groups ${groups}`);
    const b = planConv2d(backwardProblem(p), LLVMPIPE, table);
    assert.deepEqual(b.inputGrad, { path: "direct", tile: tileX }, `groups ${groups}`);
    const flips = b.steps.filter((s) => s.kind === "direct");
    assert.ok(flips.length > 0 && flips.every((s) => s.kind === "direct" && s.tile === tileX));
    // The weight gradient's blocking has no groups: the direct one, whatever `groups` says.
    assert.deepEqual(b.weightGrad, dw);
    // An option forcing the path ignores the table (and its groups).
    const forced = planConv2d(forwardProblem(p, { direct: true }), LLVMPIPE, table);
    assert.deepEqual(forced.forward, { path: "direct", tile: grouped });
  }
  // Without a table: the cost model's (grouped) blocking.
  assert.deepEqual(planConv2d(forwardProblem(p), LLVMPIPE, undefined).forward, {
    path: "direct",
    tile: grouped,
  });
  // The tuner's choices: im2col, the grouped and the plain blocking, each with its table entry;
  // one direct entry (no groups) where the blockings agree (LeNet's conv2, the weight gradient).
  const choices = conv2dChoices(forwardProblem(p), "forward", WEBGPU_DEFAULT_PROFILE);
  assert.deepEqual(choices.map((c) => c.choice), [
    { op: "conv2d", direct: false },
    { op: "conv2d", direct: true, groups: true },
    { op: "conv2d", direct: true, groups: false },
  ]);
  assert.deepEqual(choices.map((c) => c.plan.forward), [
    { path: "im2col" },
    { path: "direct", tile: grouped },
    { path: "direct", tile: plain },
  ]);
  const dx = conv2dChoices(backwardProblem(p), "inputGrad", WEBGPU_DEFAULT_PROFILE);
  assert.deepEqual(dx.map((c) => c.plan.inputGrad), [
    { path: "im2col" },
    { path: "direct", tile: groupedX },
    { path: "direct", tile: plainX },
  ]);
  const dwChoices = conv2dChoices(backwardProblem(p), "weightGrad", WEBGPU_DEFAULT_PROFILE);
  assert.deepEqual(dwChoices.map((c) => c.choice), [
    { op: "conv2d", direct: false },
    { op: "conv2d", direct: true },
  ]);
  const lenet2 = forwardProblem({ n: 100, cIn: 6, h: 14, w: 14, cOut: 16, kernel: 5 });
  assert.deepEqual(conv2dChoices(lenet2, "forward", LLVMPIPE).map((c) => c.choice), [
    { op: "conv2d", direct: false },
    { op: "conv2d", direct: true },
  ]);
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

Deno.test(
  "direct kernels f16: forced blockings, chunks summed in f32 into an f16 channel slice",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const p: Conv2dParams = { n: 3, cIn: 4, h: 8, w: 9, cOut: 5, kernel: 3, padding: 1 };
    const d = data(p, 1330);
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
      const tile of [
        { tx: 4, co: 2, ci: 2 },
        { tx: 3, co: 5, ci: 1 },
        { tx: 9, co: 3, ci: 4 },
        { tx: 3, co: 5, ci: 2, cg: 2 },
      ]
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
