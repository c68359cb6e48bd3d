// The GEMM family's reductions for testOp (tests/_op.ts): sumRows (linear's bias gradient) and
// reduceStrided (conv2d's) against the Float64 references of tests/cpu_ref/gemm.ts, and their
// suites in tests/gemm_test.ts.
import type { DType } from "../../gpu/mod.ts";
import { bindingRange } from "../../kernels/_binding.ts";
import { reduceStrided, sumRows } from "../../kernels/gemm/index.ts";
import { reduceStridedRef, sumRowsRef } from "../cpu_ref/gemm.ts";
import { type CloseOptions, f16Tolerance, maxAbs, type Numeric } from "../harness.ts";
import { input, type Mix, type OpCase, opCase, type OpSuite, uniform } from "../_op.ts";

/** Starting values: uniform in [-1, 1). */
const U = uniform(-1, 1);

/** f32 sums of a few terms. */
const TOL = { rtol: 1e-4, atol: 1e-5 };

/**
 * Tolerance of a sum of stored values: TOL for an f32 y, for an f16 y its own rounding plus, as
 * `extra`, TOL's absolute 1e-5 relative to f16Tolerance's 2^-9 * scale (the f32 sums are far
 * more accurate than one f16 rounding; extra < 0.01 here).
 */
export function tolSum(expected: Numeric, y: DType): CloseOptions {
  if (y !== "f16") return TOL;
  const scale = maxAbs(expected);
  return f16Tolerance(scale, 1e-5 / (2 ** -9 * Math.max(scale, 1e-3)));
}

/** A case of {@linkcode sumRowsOp}. */
export interface SumRowsCase {
  readonly rows: number;
  readonly cols: number;
}

/** `y += column sums of x[rows, cols]`, then `y =` them (overwriting). */
export function sumRowsOp({ rows, cols }: SumRowsCase): OpCase {
  const tol = { y: (dtype: DType, want: Numeric) => tolSum(want, dtype) };
  return opCase({
    label: `sumRows ${rows}x${cols}`,
    tensors: { x: input([rows, cols], U), y: input([cols], U) },
    phases: [{
      name: "accumulate",
      gpu: ({ y, x }) => sumRows({ y, x }, { rows, cols, accumulate: true }),
      cpu: ({ x, y }) => ({ y: sumRowsRef(x, rows, cols).map((v, i) => v + y[i]) }),
      tol,
    }, {
      name: "overwrite",
      gpu: ({ y, x }) => sumRows({ y, x }, { rows, cols }),
      cpu: ({ x }) => ({ y: sumRowsRef(x, rows, cols) }),
      tol,
    }],
  });
}

/** A case of {@linkcode reduceStridedOp}: `x[outer, mid, inner]`. */
export interface ReduceCase {
  readonly outer: number;
  readonly mid: number;
  readonly inner: number;
}

/**
 * conv2d's bias gradient: `y[mid]` = sums of `x[outer, mid, inner]` over outer and inner, into
 * elements 3.. of a `[mid + 3]` tensor (an offset inside the binding; the first 3 keep their
 * values). The tolerance is that of the sums alone.
 */
export function reduceStridedOp({ outer, mid, inner }: ReduceCase): OpCase {
  return opCase({
    label: `reduceStrided ${outer}x${mid}x${inner}`,
    tensors: { x: input([outer, mid, inner], U), y: input([mid + 3], U) },
    phases: [{
      gpu: ({ y, x }) =>
        reduceStrided(y.gpu, {
          y: bindingRange(y, 3, mid),
          x: bindingRange(x, 0, outer * mid * inner),
          outer,
          mid,
          inner,
          accumulate: false,
        }),
      cpu: ({ x, y }) => {
        const out = Float64Array.from(y);
        out.set(reduceStridedRef(x, outer, mid, inner), 3);
        return { y: out };
      },
      tol: { y: (dtype, want) => tolSum(Float64Array.from(want).subarray(3), dtype) },
    }],
  });
}

/** x f16 with y f32 (bias gradients), both f16, f32 x with f16 y. */
const REDUCE_MIXES: Mix[] = [
  { x: "f16", y: "f32" },
  { x: "f16", y: "f16" },
  { x: "f32", y: "f16" },
];

/** Cases of `[rows, cols]` pairs. */
const sizes = (rc: readonly (readonly [number, number])[]): SumRowsCase[] =>
  rc.map(([rows, cols]) => ({ rows, cols }));

/** The suites of sumRows. */
export const SUM_ROWS_SUITES: OpSuite<SumRowsCase>[] = [{
  name: "sumRows: column sums, accumulate and overwrite, long reductions",
  op: sumRowsOp,
  seed: 500,
  cases: sizes([[1, 1], [128, 10], [3000, 3], [7, 333], [100000, 2]]),
}, {
  name: "sumRows f16: x f16 with y f32 (bias gradients) or f16, split reductions",
  op: sumRowsOp,
  seed: 1300,
  cases: sizes([[1, 1], [128, 10], [3000, 3], [7, 333]]),
  mixes: REDUCE_MIXES,
}];

/** The suites of reduceStrided ([2, 3, 1000] runs two passes). */
export const REDUCE_SUITES: OpSuite<ReduceCase>[] = [{
  name: "reduceStrided f16: conv2d's bias gradient, x f16 with y f32 or f16, split reductions",
  op: reduceStridedOp,
  seed: 1301,
  cases: [{ outer: 3, mid: 5, inner: 7 }, { outer: 2, mid: 3, inner: 1000 }],
  mixes: REDUCE_MIXES,
}];
