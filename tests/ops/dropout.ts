// The dropout op for testOp (tests/_op.ts): dropoutForward / dropoutBackward against the
// independent BigInt reference of the counter-based RNG (tests/cpu_ref/dropout.ts), bit for bit,
// and the suites of tests/dropout_test.ts.
import { dropoutBackward, dropoutForward, dropoutMaskWords } from "../../kernels/dropout.ts";
import { dropoutBackwardRef, dropoutForwardRef, dropoutKeepRef } from "../cpu_ref/dropout.ts";
import { f16Tolerance, maxAbs, type Numeric } from "../harness.ts";
import { input, type Mix, type OpCase, opCase, type OpSuite, output, type Tol } from "../_op.ts";
import { AssertionError } from "../_assert.ts";

/**
 * A case: dropout with probability `p` and `seed` of `n` elements; `inPlace`: y is x and dx is
 * dy; `exact`: exact-size buffers (the scalar kernels); `bindingLimit`: ranges.
 */
export interface DropoutCase {
  readonly n: number;
  readonly p: number;
  readonly seed: number;
  readonly inPlace?: boolean;
  readonly exact?: boolean;
  readonly bindingLimit?: number;
}

/**
 * f32 outputs: bit for bit (the reference rounds `x * f32(1 / (1 - p))` to f32 as the kernel
 * does); f16 outputs: one rounding of that f32 product (extra 0).
 */
const ROUNDED: Tol = (dtype, want) => dtype === "f16" ? f16Tolerance(maxAbs(want), 0) : "exact";

/** Throws unless `got` is 0 wherever `mask` drops the element. */
function assertDropped(got: Numeric, mask: Numeric, what: string): void {
  for (let i = 0; i < got.length; i++) {
    if (!((mask[i >> 5] >>> (i & 31)) & 1) && got[i] !== 0) {
      throw new AssertionError({ message: `${what}: element ${i} dropped but is ${got[i]}` });
    }
  }
}

/**
 * Dropout forward (the mask bit for bit, y) then backward (dx from the GPU's mask). Mix keys: `x`
 * (x and dy), `y` (y and dx). The finite differences: with the mask fixed, the forward is
 * linear; its smooth version (unrounded) is differentiated.
 */
export function dropout(c: DropoutCase): OpCase {
  const { n, p, seed } = c;
  const where = `${c.exact ? " exact" : ""}${c.inPlace ? " in place" : ""}`;
  return opCase({
    label: `n=${n} p=${p} seed=${seed}${where}`,
    tensors: {
      x: input([n]),
      dy: input([n], undefined, { as: "x" }),
      y: output([n], c.inPlace ? { alias: "x" } : {}),
      mask: output([dropoutMaskWords(n)], { dtype: "u32" }),
      dx: output([n], c.inPlace ? { alias: "dy" } : { as: "y" }),
    },
    phases: [{
      gpu: ({ y, mask, x }) => dropoutForward({ y, mask, x }, { p, seed }),
      cpu: ({ x }, { fd }) => {
        const ref = dropoutForwardRef(x, p, seed);
        if (!fd) return ref;
        const keep = (i: number) => dropoutKeepRef(seed, i, p);
        return { mask: ref.mask, y: Float64Array.from(x, (v, i) => (keep(i) ? v / (1 - p) : 0)) };
      },
      tol: { mask: "exact", y: ROUNDED },
      check: (got) => assertDropped(got.y, got.mask, `y dropped (${c.n})`),
    }, {
      gpu: ({ dx, dy, mask }) => dropoutBackward({ dx, dy, mask }, { p }),
      cpu: ({ dy, mask }) => ({ dx: dropoutBackwardRef(dy, mask as Uint32Array, p) }),
      tol: { dx: ROUNDED },
      check: (got, _want, { ref }) => assertDropped(got.dx, ref.mask, `dx dropped (${c.n})`),
    }],
    fd: [{ wrt: "x", grad: "dx", rtol: 1e-6 }],
    exact: c.exact,
    bindingLimit: c.bindingLimit,
  });
}

/** Every `[p, seed]` on each of `sizes`. */
const settings = (sizes: number[], ps: [number, number][], more: Partial<DropoutCase> = {}) =>
  sizes.flatMap((n) => ps.map(([p, seed]) => ({ n, p, seed, ...more })));

/** The dtype mixes of the f16 tests: training (f16 activations and gradients) and others. */
const F16_MIXES: Mix[] = [{ x: "f16", y: "f16" }, { x: "f32", y: "f16" }, { x: "f16", y: "f32" }];

/** The suites of tests/dropout_test.ts. */
export const DROPOUT_SUITES: OpSuite<DropoutCase>[] = [{
  name: "dropout: GPU mask, output and gradient equal the CPU reference bit for bit",
  op: dropout,
  seed: 21,
  cases: settings([1, 7, 33, 1000, 100003], [[0.5, 1], [0.1, 987654321], [0.9, 0xffffffff]]),
}, {
  name: "dropout mask does not depend on the layout (vec4, scalar, in place)",
  op: dropout,
  seed: 22,
  cases: [5, 37, 4097].flatMap((n) =>
    [{}, { exact: true }, { inPlace: true }, { inPlace: true, exact: true }].map((more) => ({
      n,
      p: 0.4,
      seed: 77,
      ...more,
    }))
  ),
}, {
  name: "dropout backward, in place, on exact-size buffers",
  op: dropout,
  seed: 24,
  cases: [1, 7, 1000, 70001].flatMap((n) =>
    [{}, { inPlace: true }, { inPlace: true, exact: true }].map((more) => ({
      n,
      p: 0.35,
      seed: n,
      ...more,
    }))
  ),
  fd: [{ n: 50, p: 0.3, seed: 9 }],
}, {
  name: "dropout split into many binding ranges (limit lowered)",
  op: dropout,
  seed: 59,
  cases: settings([5000, 20001], [[0.3, 99]], { bindingLimit: 4096 }).flatMap((c) => [
    c,
    { ...c, exact: true },
  ]),
}, {
  // 37 and 4097 f16 elements fill a partial vec4<f16> (8 bytes): with an exact-size buffer the
  // scalar kernels run; pooled buffers take the vec4 ones.
  name: "dropout with f16 tensors: the mask bit for bit, y and dx vs the CPU reference",
  op: dropout,
  seed: 60,
  cases: [7, 37, 4097].flatMap((n) => [
    { n, p: 0.4, seed: 1000 + n },
    { n, p: 0.4, seed: 1000 + n, exact: true },
  ]),
  mixes: F16_MIXES,
}, {
  name: "dropout in place on f16 tensors",
  op: dropout,
  seed: 61,
  cases: [5, 1000].flatMap((n) => [
    { n, p: 0.3, seed: 7 + n, inPlace: true },
    { n, p: 0.3, seed: 7 + n, inPlace: true, exact: true },
  ]),
  mixes: [F16_MIXES[0]],
}, {
  name: "f16 dropout split into binding ranges (limit lowered)",
  op: dropout,
  seed: 62,
  cases: [{ n: 20001, p: 0.3, seed: 99, bindingLimit: 4096 }],
  mixes: [F16_MIXES[0], F16_MIXES[1]],
}];
