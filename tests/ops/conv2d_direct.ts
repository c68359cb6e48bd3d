// The suites of tests/conv2d_direct_test.ts for the conv2d op (tests/ops/conv2d.ts): the direct
// convolution kernels (kernels/conv2d/direct*.ts) forced with `direct: true`, or taken by
// default on llvmpipe, in f32 and f16 mixes, with the paths and steps of the plans they ran.
import assert from "../_assert.ts";
import { adapterProfile } from "../../kernels/_adapter.ts";
import type { ConvPassPlan } from "../../kernels/conv2d/plan.ts";
import type { OpSuite } from "../_op.ts";
import {
  conv2d,
  type Conv2dCase,
  type Conv2dRan,
  countSteps,
  halfKernels,
  kernelsRan,
  OTHER,
  stepsOf,
  TRAIN,
} from "./conv2d.ts";
import { CONV2D_CASES } from "./conv2d_suites.ts";

/** A case of the forced direct path: whether its input gradient runs direct (stride 1). */
type DirectCase = Conv2dCase & { readonly directDx: boolean };

/** `c` with the direct kernels forced; `directDx`: its input gradient runs direct (stride 1). */
function direct(c: Conv2dCase, directDx: boolean, label = c.label): DirectCase {
  return { ...c, label, directDx, options: { direct: true } };
}

/** The forced direct cases: some of conv2d_test's and the direct kernels' own edges. */
export const DIRECT_CASES: DirectCase[] = [
  direct(CONV2D_CASES[0], true), // odd sizes, cIn 3, padding 1
  direct(CONV2D_CASES[1], false), // stride > kernel, batch 1, cIn 1, no bias
  direct({
    label: "padding > dilation*(k-1): negative padding of the flipped convolution",
    p: { n: 2, cIn: 2, h: 5, w: 6, cOut: 3, kernel: 3, padding: 3 },
    bias: true,
  }, true),
  direct(CONV2D_CASES[3], true), // 1x1 spatial output
  direct(CONV2D_CASES[4], false), // rectangular kernel/stride/padding/dilation
  direct({
    label: "stride 2 = dilation 2 (sliding weight gradient)",
    p: { n: 3, cIn: 2, h: 11, w: 9, cOut: 3, kernel: 3, stride: 2, dilation: 2, padding: 1 },
    bias: true,
  }, false),
  direct({
    label: "dilation 2, stride 1 (flipped dilated kernel)",
    p: { n: 2, cIn: 3, h: 8, w: 9, cOut: 4, kernel: 3, padding: 2, dilation: 2 },
  }, true),
  direct(CONV2D_CASES[5], true, "pointwise 1x1"),
  direct({
    label: "LeNet conv2 shape, batch 3",
    p: { n: 3, cIn: 6, h: 14, w: 14, cOut: 16, kernel: 5 },
    bias: true,
  }, true),
];

/** Five images, odd sizes, with a bias, direct: the chunk and mixed-precision cases. */
const FIVE: Conv2dCase = {
  p: { n: 5, cIn: 3, h: 9, w: 7, cOut: 5, kernel: 3, padding: 1 },
  bias: true,
  options: { direct: true },
};

/** Every pass of a run (forward, input and weight gradients) took `path`. */
function allPasses(ran: Conv2dRan, path: ConvPassPlan["path"]): void {
  const f = ran.forward!.plan, b = ran.backward!.plan;
  for (const pass of [f.forward, b.inputGrad, b.weightGrad]) {
    assert.equal(pass?.path, path, ran.what);
  }
}

/**
 * The direct kernels ran (GEMM + col2im only for an input gradient of stride > 1): the passes'
 * paths and the steps of the plans.
 */
function directPaths(directDx: boolean): (ran: Conv2dRan) => void {
  return (ran) => {
    const { what } = ran;
    assert.equal(ran.forward?.plan.forward?.path, "direct", what);
    assert.equal(ran.backward?.plan.weightGrad?.path, "direct", what);
    assert.equal(ran.backward?.plan.inputGrad?.path, directDx ? "direct" : "im2col", what);
    const steps = stepsOf(ran), kinds = `${what}: ${steps.map((t) => t.kind)}`;
    assert.equal(countSteps(steps, "direct"), directDx ? 2 : 1, kinds);
    assert.equal(countSteps(steps, "directWeightGrad"), 1, kinds);
    assert.equal(countSteps(steps, "col2im") > 0, !directDx, kinds);
    assert.equal(countSteps(steps, "im2col"), 0, kinds);
  };
}

/** The weight gradient ran as `count` direct steps (one a chunk of images). */
const weightGradSteps = (count: number, chunked = false) => (ran: Conv2dRan) => {
  const backward = chunked ? ran.chunked[0].backward : ran.backward;
  assert.equal(countSteps(backward!.plan.steps, "directWeightGrad"), count, ran.what);
};

/**
 * The direct kernels in f16, with an f32 scratch for the partial sums where the input channels
 * take several dispatches (LeNet conv2's input gradient: 16 input channels, 4 per dispatch).
 */
const F16_CASES = [0, 1, 6, 8].map((i) => DIRECT_CASES[i]);

/**
 * Blockings of many accumulators, which the planner runs in groups of output channels: 32->32
 * at 7x7 (4 pixels of 7, 16 channels in groups of 4, both passes), 24->24 at 10x10 (5 pixels,
 * 12 channels in groups of 3).
 */
const GROUPED: DirectCase[] = [
  { p: { n: 2, cIn: 32, h: 7, w: 7, cOut: 32, kernel: 3, padding: 1 }, bias: true },
  { p: { n: 2, cIn: 24, h: 10, w: 10, cOut: 24, kernel: 3, padding: 1 } },
].map((c) => direct(c, true, "output-channel groups"));

/** The forward and the input gradient ran blockings in output-channel groups. */
const groupedTiles = (ran: Conv2dRan) => {
  const tiles = stepsOf(ran).filter((t) => t.kind === "direct")
    .map((t) => t.kind === "direct" ? t.tile : undefined);
  assert.equal(tiles.length, 2, ran.what);
  for (const t of tiles) assert.ok(t?.cg !== undefined && t.cg < t.co, JSON.stringify(t));
  assert.ok(kernelsRan(ran).some((k) => /^conv2d_direct_fwd.*_g\d/.test(k)), ran.what);
};

/** The suites of tests/conv2d_direct_test.ts. */
export const DIRECT_SUITES: OpSuite<Conv2dCase>[] = [{
  name: "direct conv2d: output-channel groups of many-accumulator blockings",
  op: conv2d,
  seed: 110,
  cases: GROUPED.map((c) => ({
    ...c,
    check: (ran: Conv2dRan) => {
      directPaths(true)(ran);
      groupedTiles(ran);
    },
  })),
}, {
  name: "direct conv2d f16 (training mix): output-channel groups",
  op: conv2d,
  seed: 115,
  cases: GROUPED.map((c) => ({ ...c, check: halfKernels })),
  mixes: [TRAIN],
}, {
  name: "direct conv2d (forced) forward and backward",
  op: conv2d,
  seed: 100,
  cases: DIRECT_CASES.map((c) => ({ ...c, check: directPaths(c.directDx) })),
}, {
  name: "direct conv2d: direct: false never takes the direct kernels",
  op: conv2d,
  seed: 120,
  cases: [{
    ...DIRECT_CASES[0],
    options: { direct: false },
    check: (ran) => {
      allPasses(ran, "im2col");
      const steps = stepsOf(ran);
      assert.equal(countSteps(steps, "direct") + countSteps(steps, "directWeightGrad"), 0);
    },
  }],
}, {
  // dx is overwritten; db alone, then dw alone, are then accumulated once more.
  name: "direct conv2d backward: dw and db accumulate (+=)",
  op: conv2d,
  seed: 130,
  cases: [{
    p: { n: 3, cIn: 2, h: 7, w: 6, cOut: 4, kernel: 3, padding: 1 },
    options: { direct: true },
    accumulate: true,
    again: ["db", "dw"],
  }],
}, {
  // 1 byte: one image per chunk (ranges at offsets that are not 256-byte aligned).
  name: "direct conv2d: chunks of images give the same results",
  op: conv2d,
  seed: 140,
  cases: [{
    ...FIVE,
    chunks: [1],
    check: (ran) => {
      assert.equal(ran.chunked[0].backward!.plan.chunks.chunks, 5);
      weightGradSteps(5, true)(ran);
    },
  }],
}, {
  // The default choice is for llvmpipe: elsewhere only the values are checked.
  name: "direct conv2d: LeNet's convolutions at batch 100 take the direct kernels by default",
  op: conv2d,
  seed: 160,
  cases: [
    { n: 100, cIn: 1, h: 28, w: 28, cOut: 6, kernel: 5, padding: 2 },
    { n: 100, cIn: 6, h: 14, w: 14, cOut: 16, kernel: 5 },
  ].map((p) => ({
    label: `LeNet ${p.cIn}->${p.cOut}`,
    p,
    bias: true,
    check: (ran: Conv2dRan) => {
      if (!adapterProfile(ran.gpu).mesaCpu) return;
      allPasses(ran, "direct");
      const kinds = stepsOf(ran).map((t) => t.kind);
      assert.ok(kinds.every((k) => k === "direct" || k === "directWeightGrad"), `${kinds}`);
    },
  })),
}, {
  // y and a direct dx: f32 sums of f16 values, rounded once on store (extra 0, whatever the
  // reduction length). A dx through im2col also rounds dcol (W^T dy, cOut = 4 terms) to f16
  // before col2im sums at most ceil(2/3)^2 = 1 tap per element: extra 0.5.
  name: "direct conv2d f16 (forced, training mix)",
  op: conv2d,
  seed: 1300,
  cases: F16_CASES.map((c) => ({
    ...c,
    extra: { dx: c.directDx ? 0 : 0.5 },
    check: (ran: Conv2dRan) => {
      halfKernels(ran);
      directPaths(c.directDx)(ran);
      // LeNet conv2's input gradient (16 input channels) takes 4 per dispatch: their sums go
      // through the f32 scratch, added by the last dispatch.
      const steps = stepsOf(ran), split = c.p.cOut === 16;
      const flip = steps.find((t) => t.kind === "direct" && t.flip);
      const chunked = flip?.kind === "direct" && flip.tile.ci < flip.shape.cIn;
      assert.equal(chunked, split, `${ran.what}: ${JSON.stringify(flip)}`);
      const kernels = kernelsRan(ran);
      const prev = kernels.filter((k) => /^conv2d_direct_fwd.*_flip_prev/.test(k)).length;
      assert.equal(prev, split ? 1 : 0, `${ran.what}: ${kernels}`);
    },
  })),
  mixes: [TRAIN],
}, {
  // Small integers: every product and partial sum is an integer well below 2048, so the f16
  // paths must match the reference exactly (the f32 scratch of LeNet conv2's chunks included).
  name: "direct conv2d f16: integer data is reproduced exactly",
  op: conv2d,
  seed: 1320,
  cases: F16_CASES.map((c) => ({ ...c, ints: true })),
  mixes: [TRAIN],
}, {
  // f32 x, y and dx; f16 w, b, dy, dw and db (f32 sums over 5 * 63 pixels rounded once).
  name: "direct conv2d f16: another mix",
  op: conv2d,
  seed: 1340,
  cases: [{ ...FIVE, check: weightGradSteps(1) }],
  mixes: [OTHER],
}, {
  // Training's mix, one image per chunk (ranges of f16 tensors at unaligned offsets).
  name: "direct conv2d f16: chunks of images give the same results",
  op: conv2d,
  seed: 1341,
  cases: [{ ...FIVE, chunks: [1], check: weightGradSteps(5, true) }],
  mixes: [TRAIN],
}];
