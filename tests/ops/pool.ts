// The pooling ops for testOp (tests/_op.ts): max and average pooling (forward and backward) and
// global average pooling against the Float64 references of tests/cpu_ref/pool.ts, and the suites
// of tests/pool_test.ts.
import {
  avgPool2dBackward,
  avgPool2dForward,
  checkPool2d,
  globalAvgPoolBackward,
  globalAvgPoolForward,
  type GlobalPoolParams,
  maxPool2dBackward,
  maxPool2dForward,
  type Pool2dParams,
} from "../../kernels/pool/index.ts";
import {
  avgPoolBackwardRef,
  avgPoolForwardRef,
  globalAvgPoolBackwardRef,
  globalAvgPoolForwardRef,
  maxPoolBackwardRef,
  maxPoolForwardRef,
  type PoolGeom,
} from "../cpu_ref/pool.ts";
import type { CloseOptions } from "../harness.ts";
import { roundF16 } from "../harness.ts";
import {
  type Init,
  input,
  type Mix,
  type OpCase,
  opCase,
  type OpSuite,
  output,
  uniform,
} from "../_op.ts";

/** A case: the pooling parameters, optionally run in ranges of `bindingLimit` elements. */
export type PoolCase = Pool2dParams & { readonly bindingLimit?: number };

/** The reference's geometry of `p` (stride defaults to the kernel, padding to 0). */
export function poolGeom(p: Pool2dParams): PoolGeom {
  const two = (v: number | readonly [number, number] | undefined, d: readonly number[]) =>
    v === undefined ? [d[0], d[1]] : typeof v === "number" ? [v, v] : [v[0], v[1]];
  const [kh, kw] = two(p.kernel, [1, 1]);
  const [sh, sw] = two(p.stride, [kh, kw]);
  const [ph, pw] = two(p.padding, [0, 0]);
  return { n: p.n, c: p.c, h: p.h, w: p.w, kh, kw, sh, sw, ph, pw };
}

/** `p` in messages. */
export function poolLabel(p: Pool2dParams): string {
  return `n${p.n} c${p.c} ${p.h}x${p.w} k${p.kernel} s${p.stride ?? "k"} p${p.padding ?? 0}`;
}

/** f32 outputs: sums of at most 9 terms. */
const TOL: CloseOptions = { rtol: 1e-5, atol: 1e-6 };

/**
 * Max pooling (y, argmax, dx) and average pooling (ya, dxa) of the same x and dy. The maximum of
 * the values x holds is one of them: y is exact where it can hold it (an f32 x into an f16 y
 * rounds it once). Backward sums: at most 4 dy per input here (3/2 windows overlap in 2 rows x 2
 * columns), and avg windows of at most 9 inputs: f32 sums of <= 9 terms err by ~2^-21 relative,
 * negligible next to an f16 output's rounding (2^-11): extra 0.
 */
export function pool2d(c: PoolCase): OpCase {
  const { bindingLimit, ...p } = c;
  const g = poolGeom(p);
  const out = checkPool2d(p), shape = [p.n, p.c, p.h, p.w];
  return opCase({
    label: poolLabel(p),
    tensors: {
      x: input(shape),
      dy: input(out),
      y: output(out),
      argmax: output(out, { dtype: "i32" }),
      ya: output(out),
      dx: output(shape),
      dxa: output(shape),
    },
    phases: [{
      gpu: ({ y, argmax, x, ya }) => {
        maxPool2dForward({ y, argmax, x }, p);
        avgPool2dForward({ y: ya, x }, p);
      },
      cpu: ({ x }, { dtypes }) => {
        const max = maxPoolForwardRef(g, x);
        const y = dtypes.y === "f16" ? roundF16(max.y) : max.y;
        return { y, argmax: max.argmax, ya: avgPoolForwardRef(g, x) };
      },
      tol: { y: () => ({ rtol: 0, atol: 0 }), argmax: "exact", ya: TOL },
    }, {
      gpu: ({ dx, dy, argmax, dxa }) => {
        maxPool2dBackward({ dx, dy, argmax }, p);
        avgPool2dBackward({ dx: dxa, dy }, p);
      },
      cpu: ({ dy }, { ref }) => ({
        dx: maxPoolBackwardRef(g, dy, ref.argmax as Int32Array),
        dxa: avgPoolBackwardRef(g, dy),
      }),
      tol: { dx: TOL, dxa: TOL },
    }],
    fd: [
      { wrt: "x", grad: "dx", loss: { y: "dy" } },
      { wrt: "x", grad: "dxa", loss: { ya: "dy" } },
    ],
    bindingLimit,
  });
}

/** A case of global average pooling: its shape, optionally run in ranges. */
export type GlobalPoolCase = GlobalPoolParams & { readonly bindingLimit?: number };

/** Tolerances and starting values of a global average pooling suite. */
export interface GlobalPoolOptions {
  /** f32 tolerance of y and of dx. */
  readonly tol: { readonly y: CloseOptions; readonly dx: CloseOptions };
  /** x's starting values (default normal). */
  readonly x?: Init;
  /** Headroom of an f16 y over its rounding (default 0). */
  readonly extra?: number;
}

/** Global average pooling forward and backward: y = the mean of each plane. */
export function globalPool(c: GlobalPoolCase, o: GlobalPoolOptions): OpCase {
  const { bindingLimit, ...p } = c;
  const planes = p.n * p.c, hw = p.h * p.w;
  return opCase({
    label: `${p.n}x${p.c}x${p.h}x${p.w}`,
    tensors: {
      x: input([p.n, p.c, p.h, p.w], o.x),
      dy: input([p.n, p.c, 1, 1]),
      y: output([p.n, p.c, 1, 1]),
      dx: output([p.n, p.c, p.h, p.w]),
    },
    phases: [{
      gpu: ({ y, x }) => globalAvgPoolForward({ y, x }, p),
      cpu: ({ x }) => ({ y: globalAvgPoolForwardRef(planes, hw, x) }),
      tol: { y: o.tol.y },
      extra: o.extra ?? 0,
    }, {
      gpu: ({ dx, dy }) => globalAvgPoolBackward({ dx, dy }, p),
      cpu: ({ dy }) => ({ dx: globalAvgPoolBackwardRef(planes, hw, dy) }),
      tol: { dx: o.tol.dx },
    }],
    fd: [{ wrt: "x", grad: "dx" }],
    bindingLimit,
  });
}

/** Shapes of the f32 GPU tests. */
export const POOL_CASES: Pool2dParams[] = [
  { n: 2, c: 3, h: 7, w: 9, kernel: 3, stride: 2 }, // AlexNet 3/2, overlapping windows
  { n: 1, c: 1, h: 5, w: 5, kernel: 3, stride: 2, padding: 1 }, // ResNet 3/2/1: over the edges
  { n: 3, c: 2, h: 1, w: 1, kernel: 1 }, // 1x1 spatial
  { n: 2, c: 3, h: 8, w: 7, kernel: 2, stride: 3, padding: 1 }, // stride > kernel, padding
  { n: 1, c: 4, h: 6, w: 9, kernel: [3, 2], stride: [1, 2], padding: [1, 1] },
  { n: 2, c: 5, h: 13, w: 13, kernel: 3, stride: 2 }, // AlexNet-like
  { n: 2, c: 3, h: 6, w: 5, kernel: 3, stride: 1, padding: 1 }, // GoogLeNet branch pool 3/1/1
  { n: 2, c: 6, h: 8, w: 8, kernel: 2, stride: 2 }, // LeNet / DenseNet transition 2/2
];

/** The configuration training uses: f16 activations and gradients. */
const F16_TRAIN: Mix = { x: "f16", y: "f16", ya: "f16", dy: "f16", dx: "f16", dxa: "f16" };

/** The max / avg pooling suites of tests/pool_test.ts. */
export const POOL_SUITES: OpSuite<PoolCase>[] = [{
  name: "max and avg pool",
  op: pool2d,
  seed: 17,
  cases: POOL_CASES,
  fd: [ // distinct values: no ties
    { n: 1, c: 2, h: 5, w: 5, kernel: 3, stride: 2, padding: 1 },
    { n: 2, c: 1, h: 7, w: 6, kernel: 3, stride: 2 },
    { n: 1, c: 1, h: 4, w: 5, kernel: [2, 3], stride: [3, 1], padding: [1, 1] },
  ],
}, {
  name: "pooling split into ranges of planes (binding limit lowered)",
  op: pool2d,
  seed: 26,
  cases: POOL_CASES.map((p) => ({ ...p, bindingLimit: 200 })),
}, {
  name: "max and avg pool with f16 tensors",
  op: pool2d,
  seed: 41,
  cases: [
    { n: 2, c: 3, h: 7, w: 9, kernel: 3, stride: 2 }, // AlexNet 3/2, overlapping, odd sizes
    { n: 1, c: 4, h: 6, w: 9, kernel: [3, 2], stride: [1, 2], padding: [1, 1] },
    { n: 2, c: 3, h: 8, w: 7, kernel: 2, stride: 3, padding: 1 }, // stride > kernel
  ],
  mixes: [
    F16_TRAIN,
    // f32 input with an f16 output, and the other way round
    { x: "f32", y: "f16", ya: "f16", dy: "f16", dx: "f32", dxa: "f32" },
    { x: "f16", y: "f32", ya: "f32", dy: "f32", dx: "f16", dxa: "f16" },
  ],
}, {
  // 200-element ranges start past the first 64 elements of a binding, where an f16 range's
  // base (offset mod 128) differs from the i32 argmax's (offset mod 64).
  name: "f16 pooling split into ranges of planes: f16 and i32 bindings start at different bases",
  op: pool2d,
  seed: 42,
  cases: [POOL_CASES[0], POOL_CASES[5]].map((p) => ({ ...p, bindingLimit: 200 })),
  mixes: [F16_TRAIN],
}];

/** f32 tolerances of global average pooling. */
const GLOBAL_TOL = { y: { rtol: 1e-5, atol: 1e-6 }, dx: { rtol: 1e-5, atol: 1e-7 } };

/** The global average pooling suites of tests/pool_test.ts. */
export const GLOBAL_POOL_SUITES: OpSuite<GlobalPoolCase>[] = [{
  name: "global average pool",
  op: (p) => globalPool(p, { tol: GLOBAL_TOL }),
  seed: 23,
  cases: [
    { n: 2, c: 3, h: 5, w: 7 },
    { n: 1, c: 1, h: 1, w: 1 },
    { n: 3, c: 4, h: 3, w: 3 },
    { n: 2, c: 130, h: 2, w: 2 },
  ],
  fd: [{ n: 2, c: 3, h: 4, w: 5 }],
}, {
  // Means of 9e4 f32 values in [0, 2): the sum's rounding error stays below 1e-5 relative.
  name: "global average pool over planes longer than llvmpipe's loop cap (300x300, 257x257)",
  op: (p) =>
    globalPool(p, {
      tol: { y: { rtol: 1e-5 }, dx: { rtol: 1e-6, atol: 1e-12 } },
      x: uniform(0, 2),
    }),
  seed: 25,
  cases: [{ n: 1, c: 3, h: 300, w: 300 }, { n: 2, c: 1, h: 257, w: 257 }],
}, {
  name: "global average pool split into ranges of planes (binding limit lowered)",
  op: (p) => globalPool(p, { tol: GLOBAL_TOL }),
  seed: 27,
  cases: [{ n: 3, c: 5, h: 7, w: 9 }, { n: 2, c: 130, h: 2, w: 2 }].map((p) => ({
    ...p,
    bindingLimit: 200,
  })),
}, {
  // An f32 sum of hw terms errs by at most hw * 2^-24 of the sum of magnitudes: 16900 terms of
  // |x| < 3 with mean 1: about 3 * 16900 * 2^-24 = 3e-3 of the mean, 6 f16 half-ulps (2^-11):
  // extra 6 (random rounding errors make the actual error far smaller). [1, 2, 130, 130]: planes
  // of 16900 > 16384 elements, summed in two f32 segments then a final f32 pass (the partial sums
  // stay f32 whatever y's type). f32 outputs: the tolerance of the f32 pooling tests.
  name: "global average pool with f16 tensors",
  op: (p) => globalPool(p, { tol: { y: TOL, dx: TOL }, x: uniform(-1, 3), extra: 6 }),
  seed: 43,
  cases: [{ n: 2, c: 3, h: 5, w: 7 }, { n: 3, c: 4, h: 3, w: 3 }, { n: 1, c: 2, h: 130, w: 130 }],
  mixes: [{ x: "f16", y: "f16", dy: "f16", dx: "f16" }, {
    x: "f32",
    y: "f16",
    dy: "f16",
    dx: "f32",
  }],
}];
