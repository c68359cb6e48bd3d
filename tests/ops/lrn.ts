// The LRN op for testOp (tests/_op.ts): lrnForward / lrnBackward against the Float64 reference
// of tests/cpu_ref/lrn.ts, and the suites of tests/lrn_test.ts.
import { checkLrn, lrnBackward, lrnForward, type LrnParams } from "../../kernels/lrn.ts";
import { lrnBackwardRef, lrnForwardRef, type LrnGeom } from "../cpu_ref/lrn.ts";
import { input, type Mix, type OpCase, opCase, type OpSuite, output } from "../_op.ts";

/** A case: the LRN parameters, optionally run in ranges of `bindingLimit` elements. */
export type LrnCase = LrnParams & { readonly bindingLimit?: number };

/** The reference's parameters of `p` (PyTorch's defaults filled in). */
export function lrnGeom(p: LrnParams): LrnGeom {
  return {
    n: p.n,
    c: p.c,
    hw: p.h * p.w,
    size: p.size,
    alpha: p.alpha ?? 1e-4,
    beta: p.beta ?? 0.75,
    k: p.k ?? 1,
  };
}

/** `p` in messages. */
export function lrnLabel(p: LrnParams): string {
  return `n${p.n} c${p.c} ${p.h}x${p.w} size${p.size}`;
}

/** f32 outputs: the f32 pow of llvmpipe errs by up to ~1e-5 relative. */
const TOL = { rtol: 1e-4, atol: 1e-5 };

/**
 * LRN forward (y and the saved scale) then backward, x ~ N(0, 4). f16 outputs: the forward sums
 * at most `size` (<= 12 here) squares in f32 (~2^-21 relative) and takes one f32 pow (<= ~1e-5
 * relative on llvmpipe, 0.02 f16 half-ulps): extra 0.25 covers both. The backward sums at most
 * `size` products, each with an f32 pow, minus dy * scale^-beta: the f32 errors (~1e-5 relative
 * per term, up to ~10 terms) can reach ~1e-4 of the largest term, 0.2 half-ulps: extra 0.5. With
 * an f16 tensor in the mix the reference backward starts from the scale as saved (f16-rounded or
 * not).
 */
export function lrn(c: LrnCase): OpCase {
  const { bindingLimit, ...p } = c;
  const g = lrnGeom(p), shape = checkLrn(p);
  return opCase({
    label: lrnLabel(p),
    tensors: {
      x: input(shape, (rng, n) => rng.normalArray(n).map((v) => 2 * v)),
      dy: input(shape),
      y: output(shape),
      scale: output(shape),
      dx: output(shape),
    },
    phases: [{
      gpu: ({ y, scale, x }) => lrnForward({ y, scale, x }, p),
      cpu: ({ x }) => lrnForwardRef(g, x),
      tol: { y: TOL, scale: TOL },
      extra: 0.25,
    }, {
      gpu: ({ dx, dy, x, scale }) => lrnBackward({ dx, dy, x, scale }, p),
      cpu: ({ dy, x, scale }, { ref, half }) => ({
        dx: lrnBackwardRef(g, dy, x, half ? scale : ref.scale),
      }),
      tol: { dx: TOL },
      extra: 0.5,
    }],
    fd: [{ wrt: "x", grad: "dx" }],
    bindingLimit,
  });
}

/** Shapes of the f32 GPU tests: odd and even sizes, windows wider than the channels, vec4. */
export const LRN_CASES: LrnParams[] = [
  { n: 2, c: 7, h: 3, w: 5, size: 5, alpha: 0.5, beta: 0.75, k: 2 }, // odd sizes
  { n: 1, c: 1, h: 4, w: 3, size: 5, alpha: 1, beta: 0.75, k: 1 }, // channel 1, batch 1
  { n: 3, c: 3, h: 1, w: 1, size: 3, alpha: 0.7, beta: 0.5, k: 1.5 }, // 1x1 spatial, channels 3
  { n: 2, c: 6, h: 2, w: 3, size: 4, alpha: 1, beta: 0.6, k: 1 }, // even size
  { n: 1, c: 9, h: 5, w: 5, size: 12, alpha: 2, beta: 0.9, k: 1 }, // window wider than channels
  { n: 2, c: 16, h: 7, w: 7, size: 5, alpha: 1e-4, beta: 0.75, k: 2 }, // AlexNet hyper-parameters
  // h * w a multiple of 4: the vec4 kernels (the cases above with 12 pixels too)
  { n: 2, c: 6, h: 2, w: 4, size: 4, alpha: 1, beta: 0.6, k: 1 },
  { n: 1, c: 5, h: 4, w: 4, size: 2, alpha: 0.8, beta: 0.9, k: 1.5 },
  { n: 2, c: 11, h: 6, w: 6, size: 5, alpha: 0.5, beta: 0.75, k: 2 },
];

/** Shapes of the tests in ranges of samples (f32 and f16): the scalar path, then vec4. */
const RANGE_CASES: LrnCase[] = [
  { n: 9, c: 7, h: 3, w: 5, size: 5, alpha: 0.5, beta: 0.75, k: 2 }, // scalar path
  { n: 7, c: 6, h: 2, w: 4, size: 4, alpha: 1, beta: 0.6, k: 1 }, // vec4 path
].map((p) => ({ ...p, bindingLimit: Math.max(64, 2 * p.c * p.h * p.w) })); // two samples a range

/** The dtype mixes of the f16 tests. */
const F16_MIXES: Mix[] = [
  // Training: f16 activations and gradients; the saved scale f16 too, or f32.
  { x: "f16", y: "f16", scale: "f16", dy: "f16", dx: "f16" },
  { x: "f16", y: "f16", scale: "f32", dy: "f16", dx: "f16" },
  // f32 input with f16 output (and back).
  { x: "f32", y: "f16", scale: "f32", dy: "f16", dx: "f32" },
];

/** The suites of tests/lrn_test.ts. */
export const LRN_SUITES: OpSuite<LrnCase>[] = [{
  name: "LRN",
  op: lrn,
  seed: 31,
  cases: LRN_CASES,
  fd: [
    { n: 2, c: 7, h: 2, w: 1, size: 5, alpha: 0.5, beta: 0.75, k: 2 },
    { n: 1, c: 6, h: 1, w: 3, size: 4, alpha: 1, beta: 0.6, k: 1 },
    { n: 1, c: 3, h: 2, w: 2, size: 2, alpha: 0.9, beta: 1.3, k: 0.5 },
  ],
}, {
  name: "LRN split into ranges of samples (binding limit lowered)",
  op: lrn,
  seed: 33,
  cases: RANGE_CASES,
}, {
  name: "LRN with f16 tensors",
  op: lrn,
  seed: 34,
  cases: [
    { n: 2, c: 7, h: 3, w: 5, size: 5, alpha: 0.5, beta: 0.75, k: 2 }, // scalar, odd sizes
    { n: 2, c: 6, h: 2, w: 4, size: 4, alpha: 1, beta: 0.6, k: 1 }, // vec4, even size
    { n: 1, c: 9, h: 5, w: 5, size: 12, alpha: 2, beta: 0.9, k: 1 }, // window wider than c
  ],
  mixes: F16_MIXES,
}, {
  // Past the first 64 elements of a binding, an f16 range's base (offset mod 128) differs from
  // an f32 one's (offset mod 64).
  name: "f16 LRN split into ranges of samples: f16 and f32 bindings start at different bases",
  op: lrn,
  seed: 35,
  cases: RANGE_CASES,
  mixes: [F16_MIXES[1], F16_MIXES[2]],
}];
