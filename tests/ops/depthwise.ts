// The depthwise convolution op for testOp (tests/_op.ts): depthwiseConv2dForward / Backward
// against the Float64 reference of tests/cpu_ref/depthwise.ts, and the suites of
// tests/depthwise_test.ts.
import {
  checkDepthwise,
  depthwiseConv2dBackward,
  depthwiseConv2dForward,
  type DepthwiseParams,
} from "../../kernels/depthwise/index.ts";
import { depthwiseBackwardRef, depthwiseForwardRef, type DwGeom } from "../cpu_ref/depthwise.ts";
import type { CloseOptions } from "../harness.ts";
import { input, type Mix, type OpCase, opCase, type OpSuite, output } from "../_op.ts";

/**
 * A case: the convolution's parameters; `bias`: with a bias; `accumulate`: the backward adds
 * dw and db to their previous values; `bindingLimit`: run in ranges of that many elements.
 */
export type DwCase = DepthwiseParams & {
  readonly bias?: boolean;
  readonly accumulate?: boolean;
  readonly bindingLimit?: number;
};

/** The reference's geometry of `p`. */
export function dwGeom(p: DepthwiseParams): DwGeom {
  const two = (v: number | readonly [number, number] | undefined, d: number) =>
    v === undefined ? [d, d] : typeof v === "number" ? [v, v] : [v[0], v[1]];
  const [kh, kw] = two(p.kernel, 1);
  const [sh, sw] = two(p.stride, 1);
  const [ph, pw] = two(p.padding, 0);
  const [dh, dw] = two(p.dilation, 1);
  return { n: p.n, c: p.c, h: p.h, w: p.w, kh, kw, sh, sw, ph, pw, dh, dw };
}

/** `p` in messages. */
export function dwLabel(p: DepthwiseParams): string {
  return `n${p.n} c${p.c} ${p.h}x${p.w} k${p.kernel} s${p.stride ?? 1} p${p.padding ?? 0} ` +
    `d${p.dilation ?? 1}`;
}

/** f32 tolerances of y, dx (sums of kh * kw terms) and dw, db (sums over n * oh * ow outputs). */
export interface DwTol {
  readonly y: CloseOptions;
  readonly dx: CloseOptions;
  readonly dw: CloseOptions;
  readonly db: CloseOptions;
}

/** The f32 tolerances of most tests. */
export const DW_TOL: DwTol = {
  y: { rtol: 1e-4, atol: 1e-4 },
  dx: { rtol: 1e-4, atol: 1e-4 },
  dw: { rtol: 1e-4, atol: 1e-3 },
  db: { rtol: 1e-4, atol: 1e-3 },
};

/**
 * Depthwise convolution forward (with a bias if `c.bias`) then the backward to dx, dw and db.
 * f16 outputs get `f16Tolerance(max |ref|, extra)` with `extra` from the length of the f32 sum
 * behind each output (up to about length * 2^-24 of the sum of magnitudes: length * 2^-13 in units
 * of the f16 rounding, 2^-11): y, kh * kw taps and the bias; dx, at most kh * kw taps; dw and db,
 * n * oh * ow outputs and the previous value.
 */
export function depthwise(c: DwCase, tol: DwTol = DW_TOL): OpCase {
  const { bias, accumulate, bindingLimit, ...p } = c;
  const g = dwGeom(p);
  const out = checkDepthwise(p), [, , oh, ow] = out;
  const taps = g.kh * g.kw, outputs = g.n * oh * ow;
  const wShape = [g.c, 1, g.kh, g.kw];
  const grad = (shape: number[]) => accumulate ? input(shape) : output(shape);
  return opCase({
    label: dwLabel(p),
    tensors: {
      x: input([g.n, g.c, g.h, g.w]),
      w: input(wShape),
      ...(bias ? { b: input([g.c]) } : {}),
      dy: input(out),
      dw: grad(wShape),
      db: grad([g.c]),
      y: output(out),
      dx: output([g.n, g.c, g.h, g.w]),
    },
    phases: [{
      gpu: ({ y, x, w, b }) => depthwiseConv2dForward({ y, x, w, b }, p),
      cpu: ({ x, w, b }) => ({ y: depthwiseForwardRef(g, x, w, b) }),
      tol: { y: tol.y },
      extra: (taps + 1) * 2 ** -13,
    }, {
      gpu: ({ dx, dw, db, dy, x, w }) =>
        depthwiseConv2dBackward({ dx, dw, db, dy, x, w }, { ...p, accumulate }),
      cpu: ({ dy, x, w, dw, db }) => {
        const r = depthwiseBackwardRef(g, dy, x, w);
        if (!accumulate) return r;
        return { dx: r.dx, dw: r.dw.map((v, i) => v + dw[i]), db: r.db.map((v, i) => v + db[i]) };
      },
      tol: { dx: tol.dx, dw: tol.dw, db: tol.db },
      extra: { dx: taps * 2 ** -13, dw: (outputs + 1) * 2 ** -13, db: (outputs + 1) * 2 ** -13 },
    }],
    fd: [
      { wrt: "x", grad: "dx" },
      { wrt: "w", grad: "dw" },
      ...(bias ? [{ wrt: "b" as const, grad: "db" as const }] : []),
    ],
    bindingLimit,
  });
}

/** Shapes of the f32 GPU tests. */
export const DW_CASES: DwCase[] = [
  { n: 2, c: 3, h: 7, w: 9, kernel: 3, padding: 1, bias: true }, // odd sizes, channels 3
  { n: 1, c: 1, h: 5, w: 5, kernel: 3, stride: 2, padding: 1 }, // batch 1, channel 1
  { n: 3, c: 5, h: 1, w: 1, kernel: 3, padding: 1, bias: true }, // 1x1 spatial
  { n: 2, c: 4, h: 8, w: 7, kernel: [3, 2], stride: [2, 3], padding: [1, 0], dilation: [2, 1] },
  { n: 2, c: 6, h: 12, w: 12, kernel: 3, stride: 2, padding: 1 }, // MobileNet stride-2 block
  { n: 1, c: 2, h: 5, w: 4, kernel: 5, stride: 3, padding: 2 }, // stride 3, large kernel
  { n: 1, c: 2, h: 7, w: 6, kernel: 3, dilation: 2, padding: 1 }, // stride 1, dilated
  { n: 2, c: 1, h: 4, w: 5, kernel: 2, padding: 2 }, // padding > (k - 1) * d
  { n: 1, c: 3, h: 9, w: 8, kernel: 3, stride: 2 }, // stride 2, no padding
  { n: 1, c: 2, h: 7, w: 7, kernel: 1, stride: 2 }, // stride > kernel: some inputs get nothing
  // weight gradient: up to ~430 units (row segments of 4 outputs) per channel are reduced
  // serially at 3x3 (the cases above; fewer for larger kernels); 2 * 33 * 9 = 594 units take the
  // workgroup reduction with one chunk, 3 * 40 * 10 = 1200 with two chunks (1024 units each)
  { n: 2, c: 3, h: 33, w: 35, kernel: 3, padding: 1 },
  { n: 3, c: 2, h: 40, w: 40, kernel: 3, padding: 1, bias: true },
  // vec4 row tiles (widths multiples of 4, planes over 144 elements): whole rows of 4 vec4s
  // and odd rows; stride 2; rows of 14 vec4s in tiles of 2; padding 0 (k1: taps on whole
  // vec4s); padding 2 with k5; dilation 2
  { n: 2, c: 3, h: 13, w: 16, kernel: 3, padding: 1, bias: true },
  { n: 2, c: 3, h: 10, w: 16, kernel: 3, stride: 2, padding: 1, bias: true },
  { n: 1, c: 2, h: 5, w: 56, kernel: 3, padding: 1 },
  { n: 2, c: 2, h: 13, w: 12, kernel: 1 },
  { n: 1, c: 3, h: 11, w: 16, kernel: 5, padding: 2 },
  { n: 1, c: 2, h: 12, w: 24, kernel: 3, dilation: 2, padding: 2 },
  { n: 1, c: 2, h: 12, w: 16, kernel: 3, stride: 2, dilation: 2, padding: 2 }, // strided, dilated
  // the weight gradient in bands of vec4 rows (past 512 units, where the chunked reduction ran):
  // 7 bands of 3 rows with 2 rows past the output's 19; stride 2
  { n: 12, c: 2, h: 19, w: 16, kernel: 3, padding: 1, bias: true },
  { n: 28, c: 2, h: 20, w: 16, kernel: 3, stride: 2, padding: 1 },
  // small planes (one thread per whole plane or 4 planes): MobileNet's 6x6 (channels not a
  // multiple of 4), 3x3 (4 planes per thread, channels 4 and 6), 12x12 -> 6x6 and 6x6 -> 3x3
  // at stride 2, stride 2 without padding
  { n: 1, c: 5, h: 6, w: 6, kernel: 3, padding: 1, bias: true },
  { n: 2, c: 4, h: 3, w: 3, kernel: 3, padding: 1, bias: true },
  { n: 2, c: 6, h: 3, w: 3, kernel: 3, padding: 1 },
  { n: 2, c: 3, h: 12, w: 12, kernel: 3, stride: 2, padding: 1 },
  { n: 1, c: 4, h: 6, w: 6, kernel: 3, stride: 2, padding: 1, bias: true },
  { n: 2, c: 4, h: 6, w: 6, kernel: 3, stride: 2 },
];

/** 1.5 samples of planes per range (boundaries inside samples), one sample for dw. */
function ranges(p: DwCase): DwCase {
  const [, , oh, ow] = checkDepthwise(p);
  const plane = Math.max(p.h * p.w, oh * ow);
  return { ...p, bindingLimit: Math.max(64, Math.floor(1.5 * p.c * plane)) };
}

/** The training configuration of --precision f16: activations, gradients and weights f16. */
const TRAIN_F16: Mix = { x: "f16", w: "f16", b: "f32", y: "f16", dy: "f16", dx: "f16" };

/** Another mix: f32 x, w and y with f16 bias, dy, dx and f16 parameter gradients. */
const MIXED: Mix = { b: "f16", dy: "f16", dx: "f16", dw: "f16", db: "f16" };

/**
 * The f16 tests: forward with a bias, the backward to dx, and to dw and db accumulating into
 * previous values; every kernel (row convolution, strided backward, both reductions).
 */
const HALF_CASES: DwCase[] = ([
  { n: 2, c: 3, h: 7, w: 9, kernel: 3, padding: 1 }, // stride 1: flipped row conv; serial dw
  // strided backward to the input (blocks of 2x3), dilation, rectangular kernel
  { n: 2, c: 4, h: 8, w: 7, kernel: [3, 2], stride: [2, 3], padding: [1, 0], dilation: [2, 1] },
  { n: 1, c: 3, h: 9, w: 8, kernel: 3, stride: 2 }, // MobileNet's stride 2, odd sizes
  // 2 * 33 * 9 = 594 units per channel: the chunked weight reduction
  { n: 2, c: 3, h: 33, w: 35, kernel: 3, padding: 1 },
  // vec4 row tiles at strides 1 and 2; small planes (1 and 4 per thread, strides 1 and 2)
  { n: 2, c: 3, h: 10, w: 16, kernel: 3, padding: 1 },
  { n: 2, c: 3, h: 10, w: 16, kernel: 3, stride: 2, padding: 1 },
  { n: 2, c: 4, h: 6, w: 6, kernel: 3, padding: 1 },
  { n: 2, c: 4, h: 3, w: 3, kernel: 3, padding: 1 },
  { n: 1, c: 4, h: 6, w: 6, kernel: 3, stride: 2, padding: 1 },
  { n: 10, c: 3, h: 19, w: 16, kernel: 3, padding: 1 }, // the weight gradient in bands
] as DepthwiseParams[]).map((p) => ({ ...p, bias: true, accumulate: true }));

/** The suites of tests/depthwise_test.ts. */
export const DW_SUITES: OpSuite<DwCase>[] = [{
  name: "depthwise",
  op: depthwise,
  seed: 5,
  cases: DW_CASES,
  fd: [
    { n: 2, c: 2, h: 5, w: 4, kernel: 3, stride: 2, padding: 1, bias: true },
    { n: 1, c: 3, h: 4, w: 5, kernel: [2, 3], padding: [1, 1], dilation: [2, 1], bias: true },
  ],
}, {
  // 2 x 32 rows x 8 blocks of 4 outputs = 512 units per channel of up to ~150 loop iterations
  // each (counting every loop, unrolled or not): too many for one serial thread within the loop
  // budget, so the chunked reduction runs.
  name: "depthwise 7x7/2: the weight reduction sized by its loop count",
  op: (p) => depthwise(p, { ...DW_TOL, y: DW_TOL.dw, dx: DW_TOL.dw }),
  seed: 15,
  cases: [{ n: 2, c: 3, h: 64, w: 64, kernel: 7, stride: 2, padding: 3 }],
}, {
  name: "depthwise split into ranges of planes and samples (binding limit lowered)",
  op: depthwise,
  seed: 16,
  cases: DW_CASES.filter((q) => q.n * q.c > 1).map(ranges),
}, {
  name:
    "depthwise f16 (training configuration: f16 x, w, y, dy, dx; f32 bias, dw, db) on f16-rounded inputs",
  op: depthwise,
  seed: 21,
  cases: HALF_CASES,
  mixes: [TRAIN_F16],
}, {
  // f32 and f16 bindings start at different bases
  name: "depthwise with f32 x, w, y and f16 bias, dy, dx, dw, db, in ranges of planes and samples",
  op: depthwise,
  seed: 22,
  cases: HALF_CASES.map(ranges),
  mixes: [MIXED],
}, {
  // the training configuration over ranges too: one sample (4 planes of 56) per range
  name: "depthwise f16 (training configuration) in ranges of samples",
  op: depthwise,
  seed: 23,
  cases: [{ ...HALF_CASES[1], bindingLimit: 4 * 56 }],
  mixes: [TRAIN_F16],
}];
