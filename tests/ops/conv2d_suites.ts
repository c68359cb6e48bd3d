// The suites of tests/conv2d_test.ts for the conv2d op (tests/ops/conv2d.ts): the im2col + GEMM,
// grouped and pointwise paths in f32 (both GEMM kernel families, accumulation, chunks of images,
// fused activations and channel slices) and in f16 mixes, and the CPU backward vs finite
// differences.
import assert from "../_assert.ts";
import type { Conv2dKernelOptions, Conv2dParams } from "../../kernels/conv2d/index.ts";
import type { ConvPassPlan } from "../../kernels/conv2d/plan.ts";
import type { OpSuite } from "../_op.ts";
import {
  conv2d,
  type Conv2dCase,
  type Conv2dRan,
  forwardPath,
  halfKernels,
  KINDS,
  OTHER,
  severalChunks,
  TRAIN,
} from "./conv2d.ts";

/** A grouped, dilated convolution (padding > kernel / 2). */
const GROUPED: Conv2dParams = {
  n: 3,
  cIn: 4,
  h: 8,
  w: 9,
  cOut: 6,
  kernel: 3,
  padding: 2,
  dilation: 2,
  groups: 2,
};

/** The f32 GPU cases: odd sizes, strides, dilation, groups, 1x1 (pointwise), vec4 loads. */
export const CONV2D_CASES: Conv2dCase[] = [
  {
    label: "odd sizes, cIn 3, padding 1",
    p: { n: 2, cIn: 3, h: 9, w: 7, cOut: 5, kernel: 3, padding: 1 },
    bias: true,
  },
  {
    label: "stride > kernel, batch 1, cIn 1, no bias",
    p: { n: 1, cIn: 1, h: 11, w: 10, cOut: 4, kernel: 2, stride: 3 },
  },
  { label: "dilation 2, groups 2, padding > kernel/2", p: GROUPED, bias: true },
  { label: "1x1 spatial output", p: { n: 2, cIn: 3, h: 5, w: 5, cOut: 7, kernel: 5 }, bias: true },
  {
    label: "rectangular kernel/stride/padding/dilation",
    p: {
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
    bias: true,
  },
  {
    label: "pointwise 1x1 (no im2col)",
    p: { n: 3, cIn: 5, h: 8, w: 9, cOut: 9, kernel: 1 },
    bias: true,
  },
  {
    label: "depthwise (groups = channels)",
    p: { n: 2, cIn: 6, h: 7, w: 5, cOut: 6, kernel: 3, padding: 1, groups: 6 },
  },
  {
    label: "strided 1x1",
    p: { n: 2, cIn: 8, h: 6, w: 6, cOut: 12, kernel: 1, stride: 2 },
    bias: true,
  },
  {
    label: "multiples of 4 (vec4 loads)",
    p: { n: 2, cIn: 16, h: 8, w: 8, cOut: 16, kernel: 3, padding: 1 },
    bias: true,
  },
];

/** The im2col paths in f16 (direct kernels off): window and general im2col, col2im, pointwise. */
const F16_CASES: Conv2dCase[] = ([
  {
    label: "odd sizes, stride 2 (general im2col)",
    p: { n: 2, cIn: 3, h: 9, w: 7, cOut: 5, kernel: 3, padding: 1, stride: 2 },
    bias: true,
  },
  {
    label: "window im2col, odd sizes",
    p: { n: 2, cIn: 3, h: 7, w: 9, cOut: 4, kernel: 3, padding: 1 },
    bias: true,
  },
  { ...CONV2D_CASES[2], label: "dilation 2, groups 2, no bias", bias: false },
  CONV2D_CASES[4], // rectangular kernel/stride/padding/dilation
  CONV2D_CASES[5], // pointwise 1x1 (no im2col)
] satisfies Conv2dCase[]).map((c) => ({ ...c, options: { direct: false } }));

/**
 * 1x1 convolutions on small images, which run as one GEMM over the chunk's images straight on
 * NCHW x, dy, y and dx (B read in segments): 1 and 9 pixels (scalar B loads), 4 (vec4 B loads
 * within a segment), odd channel counts, and register tiles cut at both edges.
 */
const POINTWISE_SMALL: Conv2dCase[] = [
  { label: "1x1 pixel, odd channels", p: { n: 3, cIn: 7, h: 1, w: 1, cOut: 13, kernel: 1 } },
  { label: "3x3 pixels", p: { n: 5, cIn: 13, h: 3, w: 3, cOut: 7, kernel: 1 }, bias: true },
  { label: "2x2 pixels, vec4", p: { n: 3, cIn: 8, h: 2, w: 2, cOut: 12, kernel: 1 }, bias: true },
  {
    label: "tile edges (153 columns, 70 rows)",
    p: { n: 17, cIn: 9, h: 3, w: 3, cOut: 70, kernel: 1 },
    bias: true,
  },
];

/** The GEMM tunings the small pointwise cases run with: default, shared memory, split-K. */
const POINTWISE_TUNINGS: Conv2dKernelOptions[] = [
  {},
  { gemm: { variant: "shared" } },
  { gemm: { variant: "register", tile: [4, 4], splitK: 2 } },
];

/** Every GEMM pass of a run is pointwise, and its forward and input-gradient GEMMs read B in segments. */
function pointwiseSegmented(ran: Conv2dRan): void {
  const f = ran.forward, b = ran.backward;
  assert.equal(f?.plan.forward?.path, "pointwise", ran.what);
  assert.equal(b?.plan.inputGrad?.path, "pointwise", ran.what);
  assert.equal(b?.plan.weightGrad?.path, "pointwise", ran.what);
  for (const q of [f!, b!]) {
    assert.ok(q.kernels.some((k) => /^gemm_.*_sb/.test(k)), `${ran.what}: ${q.kernels.join(", ")}`);
    assert.ok(!q.kernels.some((k) => /im2col|col2im|direct/.test(k)), q.kernels.join(", "));
  }
}

/** The chunk tests' convolutions: odd sizes and stride 2, pointwise, grouped (5, 4, 3 images). */
const CHUNKED: Conv2dParams[] = [
  { n: 5, cIn: 3, h: 9, w: 7, cOut: 5, kernel: 3, padding: 1, stride: 2 },
  { n: 4, cIn: 5, h: 8, w: 9, cOut: 9, kernel: 1 }, // pointwise path
  GROUPED,
];

/** A value no convolution writes: channels outside a slice must keep it (exact in f32). */
const SENTINEL = -12345.5;

/** A path of the forward: its case, the path it must take, a GEMM kernel that must run. */
interface FusedPath {
  readonly label: string;
  readonly p: Conv2dParams;
  readonly options: Conv2dKernelOptions;
  readonly path: ConvPassPlan["path"];
  readonly gemmKernel?: RegExp;
}

/**
 * The paths of the forward pass, with the GEMM kernels that implement an epilogue of their own
 * (vec4 stores of C, split-K's epilogue pass).
 */
const FUSED_PATHS: FusedPath[] = [
  {
    label: "im2col, odd sizes, stride 2",
    p: { n: 2, cIn: 3, h: 7, w: 9, cOut: 5, kernel: 3, padding: 1, stride: 2 },
    options: { direct: false },
    path: "im2col",
  },
  {
    label: "im2col, vec4 C stores",
    p: { n: 2, cIn: 8, h: 8, w: 8, cOut: 8, kernel: 3, padding: 1 },
    options: { direct: false },
    path: "im2col",
    gemmKernel: /gemm_reg.*_vc/,
  },
  { label: "grouped, dilated", p: GROUPED, options: {}, path: "im2col" },
  { label: "pointwise 1x1", p: CONV2D_CASES[5].p, options: {}, path: "pointwise" },
  {
    label: "direct (forced)",
    p: { n: 2, cIn: 3, h: 9, w: 11, cOut: 5, kernel: 3, padding: 1 },
    options: { direct: true },
    path: "direct",
  },
  {
    label: "im2col, split-K epilogue",
    p: { n: 1, cIn: 6, h: 5, w: 5, cOut: 3, kernel: 3, padding: 1 },
    options: { direct: false, gemm: { splitK: 2 } },
    path: "im2col",
    gemmKernel: /gemm_splitk_epilogue/,
  },
];

/**
 * A forward alone on `f`'s path, with a bias and weights in [-2, 2] (outputs past relu6's 6 and
 * tanh's knee), and the fusions of `more`.
 */
function fused(f: FusedPath, more: Partial<Conv2dCase>): Conv2dCase {
  const { label, p, options } = f;
  return { label, p, options, bias: true, wRange: 2, forwardOnly: true, ...more };
}

/**
 * The slices of the channel-offset tests: at the start, in the middle, at the end (the last with
 * an activation that changes from path `i` to the next).
 */
const slices = (cOut: number, i: number): Partial<Conv2dCase>[] =>
  [
    { offset: 0, channels: cOut + 3 },
    { offset: 3, channels: cOut + 5, activation: "relu" as const },
    { offset: 2, channels: cOut + 2, activation: KINDS[(2 + 3 * i) % 4] },
  ].map(({ activation, ...s }) => ({ activation, slice: { ...s, sentinel: SENTINEL } }));

/** The suites of tests/conv2d_test.ts. */
export const CONV2D_SUITES: OpSuite<Conv2dCase>[] = [{
  name: "conv2d reference",
  op: conv2d,
  seed: 11,
  fd: ([
    { n: 2, cIn: 3, h: 5, w: 4, cOut: 2, kernel: 3, padding: 1 },
    {
      n: 1,
      cIn: 4,
      h: 7,
      w: 6,
      cOut: 4,
      kernel: [2, 3],
      stride: [2, 3],
      padding: [2, 0],
      dilation: 2,
      groups: 2,
    },
    { n: 2, cIn: 1, h: 6, w: 6, cOut: 3, kernel: 2, stride: 3 },
  ] as Conv2dParams[]).map((p) => ({ p, bias: true })),
}, {
  name: "conv2d forward and backward",
  op: conv2d,
  seed: 20,
  cases: CONV2D_CASES,
}, {
  name: "conv2d: both GEMM kernel families",
  op: conv2d,
  seed: 40,
  cases: (["register", "shared"] as const).flatMap((variant) =>
    CONV2D_CASES.filter((_, i) => i % 2 === 0).map((c) => ({
      ...c,
      label: `${c.label} (${variant})`,
      options: { gemm: { variant } },
    }))
  ),
}, {
  // dx is overwritten; dw alone is then accumulated once more.
  name: "conv2d backward: accumulate adds to prior dw and db",
  op: conv2d,
  seed: 60,
  cases: [{
    p: { n: 2, cIn: 3, h: 6, w: 5, cOut: 4, kernel: 3, padding: 1, stride: 2 },
    accumulate: true,
    again: ["dw"],
  }],
}, {
  // 1 byte: one image per chunk; 3000 bytes: a few images per chunk, ranges not 256-aligned.
  name: "conv2d chunking: forced small chunks give the same results",
  op: conv2d,
  seed: 70,
  cases: CHUNKED.map((p) => ({ p, bias: true, chunks: [1, 3000], check: severalChunks })),
}, {
  name: "conv2d activation: every kind in every path (im2col, grouped, pointwise, direct, split-K)",
  op: conv2d,
  seed: 900,
  cases: FUSED_PATHS.flatMap((f) =>
    KINDS.map((activation) =>
      fused(f, {
        activation,
        separate: true,
        check: (ran: Conv2dRan) => {
          forwardPath(f.path, f.gemmKernel)(ran);
          const kernels = ran.forward!.kernels;
          assert.ok(
            kernels.some((k) => k.endsWith(`_${activation}`)),
            `${ran.what}: no fused ${activation} kernel among ${kernels.join(", ")}`,
          );
        },
      })
    )
  ),
}, {
  name: "conv2d yChannelOffset: writes only its channel slice in every path, with activations",
  op: conv2d,
  seed: 950,
  cases: FUSED_PATHS.flatMap((f, i) =>
    slices(f.p.cOut, i).map((s) =>
      fused(f, { ...s, separate: true, check: forwardPath(f.path, f.gemmKernel) })
    )
  ),
}, {
  // 1 byte: one image per chunk; 3000 bytes: a few images per chunk (ranges not aligned).
  name: "conv2d yChannelOffset: chunks of images give the same results and touch only the slice",
  op: conv2d,
  seed: 990,
  cases: ([
    ...CHUNKED.map((p) => [p, {}]),
    [{ n: 5, cIn: 2, h: 9, w: 11, cOut: 4, kernel: 3, padding: 1 }, { direct: true }],
  ] as [Conv2dParams, Conv2dKernelOptions][]).map(([p, options]) => ({
    p,
    options,
    bias: true,
    wRange: 2,
    forwardOnly: true,
    separate: true,
    activation: "relu6",
    slice: { offset: 3, channels: p.cOut + 4, sentinel: SENTINEL },
    chunks: [1, 3000],
    check: severalChunks,
  })),
}, {
  name: "conv2d pointwise: small images as one GEMM over the batch, on NCHW tensors",
  op: conv2d,
  seed: 1000,
  cases: POINTWISE_SMALL.flatMap((c) =>
    POINTWISE_TUNINGS.map((options) => ({ ...c, options, check: pointwiseSegmented }))
  ),
}, {
  name: "conv2d pointwise: small images in chunks, fused activation, channel slice",
  op: conv2d,
  seed: 1020,
  cases: POINTWISE_SMALL.slice(1, 3).map((c) => ({
    ...c,
    activation: "relu6" as const,
    slice: { offset: 2, channels: c.p.cOut + 3, sentinel: SENTINEL },
    chunks: [1, 500],
    check: (ran: Conv2dRan) => {
      pointwiseSegmented(ran);
      severalChunks(ran);
    },
  })),
}, {
  name: "conv2d pointwise f16 (training mix): small images as one GEMM",
  op: conv2d,
  seed: 1040,
  cases: POINTWISE_SMALL.map((c) => ({ ...c, check: pointwiseSegmented })),
  mixes: [TRAIN],
}, {
  name: "conv2d f16 (training mix): every im2col path",
  op: conv2d,
  seed: 1100,
  cases: F16_CASES.map((c) => ({ ...c, check: halfKernels })),
  mixes: [TRAIN],
}, {
  // Small integers: every product and sum is an integer well below 2048, so f16 storage with
  // f32 arithmetic must match the reference exactly (no tolerance hides a lost, misplaced or
  // wrongly converted element).
  name: "conv2d f16: integer data is reproduced exactly by every im2col path",
  op: conv2d,
  seed: 1190,
  cases: F16_CASES.map((c) => ({ ...c, ints: true })),
  mixes: [TRAIN],
}, {
  name: "conv2d f16 (another mix): f32 activations, f16 parameters",
  op: conv2d,
  seed: 1120,
  cases: F16_CASES.filter((_, i) => i % 2 === 0),
  mixes: [OTHER],
}, {
  name: "conv2d f16: fused activation and a channel slice of an f16 output, in every path",
  op: conv2d,
  seed: 1140,
  cases: FUSED_PATHS.filter((f) => !f.options.gemm?.splitK) // the split-K epilogue is gemm's
    .map((f, i) =>
      fused(f, {
        activation: KINDS[i % 4],
        slice: { offset: 2, channels: f.p.cOut + 3, sentinel: -1234 }, // exact in f16
        check: forwardPath(f.path, f.gemmKernel),
      })
    ),
  mixes: [{ x: "f16", w: "f16", y: "f16" }],
}, {
  // 1 byte: one image per chunk; 1500 bytes: a few images per chunk, ranges not aligned.
  name: "conv2d f16 chunking: chunks give the same results",
  op: conv2d,
  seed: 1160,
  cases: CHUNKED.slice(0, 2).map((p) => ({
    p,
    bias: true,
    options: { direct: false },
    chunks: [1, 1500],
    check: severalChunks,
  })),
  mixes: [TRAIN],
}, {
  // 2 + kh * (kw + 2) = 3722 loop trips per column of dx: 16 columns per dispatch of 60.
  name: "conv2d f16: col2im of a large kernel splits the columns over dispatches",
  op: conv2d,
  seed: 1200,
  cases: [{
    label: "k60",
    p: { n: 1, cIn: 1, h: 60, w: 62, cOut: 2, kernel: 60, padding: [0, 1] },
    bias: true,
    options: { direct: false },
    check: (ran) => {
      const col2im = ran.backward!.plan.steps.filter((t) => t.kind === "col2im");
      assert.equal(col2im.length, 1);
      assert.deepEqual(col2im[0].kind === "col2im" && col2im[0].form, {
        form: "pixel",
        ranges: [[0, 16], [16, 32], [32, 48], [48, 62]],
      });
    },
  }],
  mixes: [TRAIN],
}];
