// The elementwise ops for testOp (tests/_op.ts): add (+ fused ReLU) and its backward, accumulate,
// channel concat and split (plain, accumulating, and fused with an activation's backward) against
// the Float64 references of tests/cpu_ref/elementwise.ts, and the suites of
// tests/elementwise_test.ts.
import { activationBackward, type ActivationKind } from "../../kernels/activation.ts";
import { accumulate, addBackwardRelu, addForward } from "../../kernels/elementwise.ts";
import { concatChannels, splitChannels } from "../../kernels/concat.ts";
import type { DType } from "../../gpu/mod.ts";
import { activationBackwardRef, activationForwardRef } from "../cpu_ref/activation.ts";
import {
  accumulateRef,
  addRef,
  addReluBackwardRef,
  concatRef,
  sliceRef,
} from "../cpu_ref/elementwise.ts";
import { type CloseOptions, f16Tolerance, maxAbs, type Numeric, roundF16 } from "../harness.ts";
import { assertExact } from "../big.ts";
import {
  input,
  type Mix,
  type OpCase,
  opCase,
  type OpPhase,
  type OpSuite,
  type OpTensor,
  output,
  type Tol,
} from "../_op.ts";

/**
 * The tolerance of an output of `dtype` from f16-rounded inputs of magnitude up to `scale`:
 * {@linkcode f16Tolerance} for f16, f32 rounding (2 ulp) otherwise.
 */
export function outTolerance(dtype: DType, scale: number, extra = 0): CloseOptions {
  return dtype === "f16" ? f16Tolerance(scale, extra) : { rtol: 2.5e-7, atol: 1e-7 * scale };
}

/** {@linkcode outTolerance} of an output's own reference magnitude (the f16 tests). */
export const ROUNDED: Tol = (dtype, want) => outTolerance(dtype, maxAbs(want));

/**
 * A case of add: `n` elements, `relu` fused (then the backward too); `inPlace`: y is a;
 * `exact`: exact-size buffers; `bindingLimit`: ranges.
 */
export interface AddCase {
  readonly n: number;
  readonly relu?: boolean;
  readonly inPlace?: boolean;
  readonly exact?: boolean;
  readonly bindingLimit?: number;
}

/**
 * y = a + b (then ReLU), then with ReLU its backward dx = dy where y > 0, a select: exact. `tol`:
 * y's (one f32 sum of two terms, rounded once: no f16 headroom). The finite differences: a away
 * from the kink (|a + b| >= 1e-3).
 */
export function add(c: AddCase, tol: Tol = { rtol: 1e-6, atol: 1e-7 }): OpCase {
  const { n, relu = false } = c;
  const forward: OpPhase<"a" | "b" | "dy" | "y" | "dx"> = {
    gpu: ({ y, a, b }) => addForward({ y, a, b }, { relu }),
    cpu: ({ a, b }) => ({ y: addRef(a, b, relu) }),
    tol: { y: tol },
  };
  const backward: OpPhase<"a" | "b" | "dy" | "y" | "dx"> = {
    gpu: relu ? ({ dx, dy, y }) => addBackwardRelu({ dx, dy, y }) : undefined,
    cpu: ({ dy, y }) => ({ dx: relu ? addReluBackwardRef(dy, y) : dy }),
    tol: { dx: () => ({ rtol: 0, atol: 0 }) },
  };
  return opCase({
    label: `add${relu ? "+relu" : ""} n=${n}${c.inPlace ? " in place" : ""}`,
    tensors: {
      b: input([n]),
      a: input(
        [n],
        (rng, m, { b }) =>
          rng.normalArray(m).map((v, i) => (Math.abs(v + b[i]) < 1e-3 ? v + 0.5 : v)),
      ),
      dy: input([n]),
      y: output([n], c.inPlace ? { alias: "a" } : {}),
      dx: output([n]),
    },
    phases: [forward, backward],
    fd: [{ wrt: "a", grad: "dx" }, { wrt: "b", grad: "dx" }],
    exact: c.exact,
    bindingLimit: c.bindingLimit,
  });
}

/** A case of accumulate: y += alpha * x on `n` elements; `self`: x is y. */
export interface AccumulateCase {
  readonly n: number;
  readonly alpha: number;
  readonly self?: boolean;
  readonly exact?: boolean;
  readonly bindingLimit?: number;
}

/** y += alpha * x: a multiply-add in f32, rounded once (no f16 headroom). */
export function accumulateOp(c: AccumulateCase, tol: Tol = { rtol: 1e-6, atol: 1e-7 }): OpCase {
  const { n, alpha } = c;
  return opCase({
    label: `accumulate alpha=${alpha} n=${n}${c.self ? " y += alpha * y" : ""}`,
    tensors: { y: input([n]), x: c.self ? output([n], { alias: "y" }) : input([n]) },
    phases: [{
      gpu: ({ y, x }) => accumulate({ y, x }, { alpha }),
      cpu: ({ y, x }) => ({ y: accumulateRef(y, x, alpha) }),
      tol: { y: tol },
    }],
    exact: c.exact,
    bindingLimit: c.bindingLimit,
  });
}

/** A layout of the concat / split tests: `n` samples of `hw` pixels, slices of `cs` channels. */
export interface ConcatCase {
  readonly n: number;
  readonly hw: number;
  readonly cs: readonly number[];
  readonly bindingLimit?: number;
}

/** Each slice's channel offset. */
const offsets = (cs: readonly number[]) =>
  cs.map((_, k) => cs.slice(0, k).reduce((a, b) => a + b, 0));
const sum = (cs: readonly number[]) => cs.reduce((a, b) => a + b, 0);
const label = (c: ConcatCase) => `n=${c.n} hw=${c.hw} cs=${c.cs}`;

/** Values of `dtype` (f16: rounded). */
const as = (dtype: DType, a: Numeric) => (dtype === "f16" ? roundF16(a) : a);

/**
 * The slices `x0, x1, ...` concatenated along the channels into y (filled with NaN), one
 * concatChannels call each, in reverse order: a copy, exact (rounded to f16 when y is f16).
 */
export function concat(c: ConcatCase): OpCase {
  const { n, hw, cs } = c, cTotal = sum(cs), off = offsets(cs);
  const tensors: Record<string, OpTensor> = {};
  cs.forEach((ch, k) => (tensors[`x${k}`] = input([n, ch, hw], undefined, { as: "x" })));
  tensors.y = output([n, cTotal, hw]);
  tensors.dy = input([n, cTotal, hw], undefined, { as: "y" }); // for the finite differences
  return opCase({
    label: `concat ${label(c)}`,
    tensors,
    phases: [{
      gpu: (t) => {
        for (const k of [...cs.keys()].reverse()) {
          concatChannels({ y: t.y, x: t[`x${k}`] }, { n, hw, cTotal, cOffset: off[k], c: cs[k] });
        }
      },
      cpu: (v, { dtypes }) => ({
        y: concatRef(cs.map((_, k) => as(dtypes.y, v[`x${k}`])), [...cs], n, hw),
      }),
      tol: { y: "exact" },
    }, {
      // concat's backward, split: a reference only here (its kernel is tested by split).
      cpu: ({ dy }) =>
        Object.fromEntries(cs.map((ch, k) => [`dx${k}`, sliceRef(dy, n, hw, cTotal, off[k], ch)])),
      tol: {},
    }],
    fd: cs.map((_, k) => ({ wrt: `x${k}`, grad: `dx${k}` })),
    bindingLimit: c.bindingLimit,
  });
}

/**
 * dy split along the channels into slices `dx0, dx1, ...` (exact copies), and accumulated into
 * `acc0, acc1, ...` (one f32 sum, rounded once: `acc`'s tolerance); then the slices concatenated
 * back into `whole`, which must be dy again.
 */
export function split(c: ConcatCase, acc: Tol = {}): OpCase {
  const { n, hw, cs } = c, cTotal = sum(cs), off = offsets(cs);
  const tensors: Record<string, OpTensor> = { dy: input([n, cTotal, hw]) };
  cs.forEach((ch, k) => {
    tensors[`dx${k}`] = output([n, ch, hw], { as: "dx" });
    tensors[`acc${k}`] = input([n, ch, hw], undefined, { as: "dx" });
  });
  tensors.whole = output([n, cTotal, hw], { as: "dy" });
  const p = (k: number) => ({ n, hw, cTotal, cOffset: off[k], c: cs[k] });
  const slice = (dy: Numeric, k: number) => sliceRef(dy, n, hw, cTotal, off[k], cs[k]);
  return opCase({
    label: `split ${label(c)}`,
    tensors,
    phases: [{
      name: "split",
      gpu: (t) =>
        cs.forEach((_, k) => {
          splitChannels({ dx: t[`dx${k}`], dy: t.dy }, p(k));
          splitChannels({ dx: t[`acc${k}`], dy: t.dy }, { ...p(k), accumulate: true });
        }),
      cpu: (v, { dtypes }) =>
        Object.fromEntries(cs.flatMap((_, k) => [
          [`dx${k}`, as(dtypes[`dx${k}`], slice(v.dy, k))],
          [`acc${k}`, accumulateRef(v[`acc${k}`], slice(v.dy, k))],
        ])),
      tol: Object.fromEntries(cs.flatMap((_, k) => [[`dx${k}`, "exact"], [`acc${k}`, acc]])),
    }, {
      name: "concat(split(dy))",
      gpu: (t) => cs.forEach((_, k) => concatChannels({ y: t.whole, x: t[`dx${k}`] }, p(k))),
      cpu: ({ dy }) => ({ whole: dy }),
      tol: { whole: "exact" },
    }],
    bindingLimit: c.bindingLimit,
  });
}

/** A case of split with a fused activation backward. */
export interface SplitActivationCase extends ConcatCase {
  readonly kind: ActivationKind;
}

/**
 * splitChannels with the backward of `kind` fused, of every slice of a `[n, sum(cs), hw]` dy and
 * y (a forward output of `kind`: f of N(0, 16) inputs, so that relu and relu6 produce exact zeros
 * and relu6 exact sixes, their kinks), overwriting (`fused<k>`) and accumulating (`fusedAcc<k>`):
 * against the Float64 reference (the slice of the activation backward, on the values dy and y
 * hold) and bit for bit against activationBackward into a tensor dz of dx's dtype followed by the
 * plain split (both round the f32 result once). Mix keys: `in` (dy and y), `dx`. The exactness
 * to the unfused pair holds only without accumulate for an f16 dx: the unfused pair rounds dz to
 * f16 before the sum. f16 dy and y: f'(y) * dy in f32 (two products), plus one sum when
 * accumulating: a few f32 ulp, far below the f16 rounding (extra 0.01).
 */
export function splitActivation(c: SplitActivationCase): OpCase {
  const { n, hw, cs, kind } = c, cTotal = sum(cs), off = offsets(cs);
  const shape = [n, cTotal, hw];
  const tensors: Record<string, OpTensor> = {
    dy: input(shape, undefined, { as: "in" }),
    y: input(shape, (rng, m) => activationForwardRef(rng.normalArray(m).map((v) => 4 * v), kind), {
      as: "in",
    }),
    dz: output(shape, { as: "dx" }),
  };
  cs.forEach((ch, k) => {
    const prev = `prev${k}`,
      copy = (_r: unknown, _n: number, d: Record<string, Numeric>) => d[prev];
    tensors[prev] = input([n, ch, hw], undefined, { as: "dx" });
    for (const name of ["fused", "unfused", "fusedAcc", "unfusedAcc"]) {
      tensors[`${name}${k}`] = input([n, ch, hw], copy, { as: "dx" });
    }
  });
  const p = (k: number) => ({ n, hw, cTotal, cOffset: off[k], c: cs[k] });
  const tol: Tol = (dtype, want, { dtypes }) =>
    dtypes.dy === "f16" ? outTolerance(dtype, maxAbs(want), 0.01) : F32;
  return opCase({
    label: `split + ${kind} backward ${label(c)}`,
    tensors,
    phases: [{
      name: "split",
      gpu: (t) => {
        activationBackward({ dx: t.dz, dy: t.dy, y: t.y }, { kind });
        cs.forEach((_, k) => {
          for (const accumulate of [false, true]) {
            const s = accumulate ? "Acc" : "";
            const fused = { dx: t[`fused${s}${k}`], dy: t.dy, y: t.y };
            splitChannels(fused, { ...p(k), activation: kind, accumulate });
            splitChannels({ dx: t[`unfused${s}${k}`], dy: t.dz }, { ...p(k), accumulate });
          }
        });
      },
      cpu: (v) => {
        const dz = activationBackwardRef(v.dy, v.y, kind);
        return Object.fromEntries(cs.flatMap((_, k) => {
          const want = sliceRef(dz, n, hw, cTotal, off[k], cs[k]);
          return [[`fused${k}`, want], [`fusedAcc${k}`, accumulateRef(v[`prev${k}`], want)]];
        }));
      },
      tol: Object.fromEntries(cs.flatMap((_, k) => [[`fused${k}`, tol], [`fusedAcc${k}`, tol]])),
      same: Object.fromEntries(cs.map((_, k) => [`fused${k}`, `unfused${k}`])),
      reads: cs.map((_, k) => `unfusedAcc${k}`),
      check: (got, _want, { dtypes }) => {
        if (dtypes.dz === "f16") return;
        for (const k of cs.keys()) {
          assertExact(
            got[`fusedAcc${k}`],
            got[`unfusedAcc${k}`],
            `fused == unfused acc slice ${k}`,
          );
        }
      },
    }],
    bindingLimit: c.bindingLimit,
  });
}

/** f32 tolerance of the fused split from f32 dy and y. */
const F32: CloseOptions = { rtol: 1e-5, atol: 1e-6 };

/** The sizes of the f32 add and accumulate tests: one element to past a vec4 workgroup grid. */
const SIZES = [1, 7, 1001, 65539];

/** The layouts of the concat / split tests. */
export const CONCAT_CASES: ConcatCase[] = [
  { n: 2, hw: 9, cs: [3, 5, 1] }, // odd hw: scalar path
  { n: 3, hw: 4, cs: [2, 4, 6] }, // hw % 4 == 0: vec4 path
  { n: 1, hw: 1, cs: [4, 8, 4] }, // 1x1 spatial, channels % 4 == 0: vec4
  { n: 5, hw: 1, cs: [3, 1, 2] }, // 1x1 spatial, odd channels: scalar
  { n: 2, hw: 2, cs: [2, 6] }, // c * hw % 4 == 0 everywhere: vec4
  { n: 2, hw: 2, cs: [1, 2] }, // offsets not multiples of 4 elements: scalar
  { n: 4, hw: 49, cs: [64, 32] }, // DenseNet-like, 7x7
];

/** Layouts in ranges of one or two rows (binding limit lowered): odd (scalar) and vec4. */
const RANGE_CASES: ConcatCase[] = [
  { n: 37, hw: 5, cs: [3, 2, 4], bindingLimit: 64 },
  { n: 13, hw: 4, cs: [4, 8, 4], bindingLimit: 140 },
];

/** Layouts of the f16 concat / split tests: scalar (odd hw), vec4, offsets off the vec4 grid. */
const F16_CASES: ConcatCase[] = [
  { n: 2, hw: 9, cs: [3, 5, 1] },
  { n: 3, hw: 4, cs: [2, 4, 6] },
  { n: 2, hw: 2, cs: [1, 2] },
];

const KINDS: ActivationKind[] = ["relu", "relu6", "sigmoid", "tanh"];
const withKinds = (cases: ConcatCase[], kinds = KINDS) =>
  kinds.flatMap((kind) => cases.map((c) => ({ ...c, kind })));

/** The dtype mixes of the f16 add tests: training's (all f16) and others. */
const ADD_MIXES: Mix[] = [
  { y: "f16", a: "f16", b: "f16" }, // training: activations
  { y: "f16", a: "f32", b: "f16" },
  { y: "f32", a: "f16", b: "f16" },
].flatMap((m) => [{ ...m, dy: "f16", dx: "f16" }, { ...m, dy: "f16", dx: "f32" }] as Mix[]);

/** The add suites of tests/elementwise_test.ts. */
export const ADD_SUITES: OpSuite<AddCase>[] = [{
  name: "add / add+relu / relu backward",
  op: (c) => add(c),
  seed: 42,
  cases: SIZES.flatMap((n) => [{ n }, { n, relu: true }]),
  fd: [{ n: 30 }, { n: 30, relu: true }],
}, {
  name: "add split into many binding ranges (limit lowered)",
  op: (c) => add(c, {}),
  seed: 47,
  cases: SIZES.flatMap((n) => [
    { n, relu: true, bindingLimit: 200 },
    // An exact-size buffer (no room for a partial vec4): the scalar path.
    { n, inPlace: true, exact: true, bindingLimit: 200 },
  ]),
}, {
  // Training: dx, dy, y f16; and dy f16 into an f32 dx. One f32 sum of two terms, rounded once:
  // no reduction (extra 0); the backward is a select: exact.
  name: "f16: add / add+relu / backward on f16-rounded inputs",
  op: (c) => add(c, ROUNDED),
  seed: 60,
  cases: [7, 1001].flatMap((n) => [{ n }, { n, relu: true }]),
  mixes: ADD_MIXES,
}, {
  // storageBytes(n, f16) < 8 * ceil(n / 4): no room for the last vec4<f16>.
  name: "f16: add+relu in place on exact-size buffers (scalar path)",
  op: (c) => add(c),
  seed: 61,
  cases: [5, 13].map((n) => ({ n, relu: true, inPlace: true, exact: true })),
  mixes: [{ a: "f16", b: "f16", dy: "f16", dx: "f16" }],
}, {
  // Ranges start at multiples of 128 elements (256 bytes of f16), bases 0 for both dtypes.
  name: "f16: add f32 + f16 -> f16 in ranges (limit lowered)",
  op: (c) => add(c),
  seed: 62,
  cases: [7, 1001].map((n) => ({ n, bindingLimit: 200 })),
  mixes: [{ a: "f32", b: "f16", y: "f16" }],
}];

/** The accumulate suites of tests/elementwise_test.ts. */
export const ACCUMULATE_SUITES: OpSuite<AccumulateCase>[] = [{
  name: "accumulate",
  op: (c) => accumulateOp(c),
  seed: 43,
  cases: SIZES.flatMap((n) => [1, 0.5, -2].map((alpha) => ({ n, alpha }))),
}, {
  name: "accumulate split into many binding ranges (limit lowered)",
  op: (c) => accumulateOp(c, {}),
  seed: 48,
  cases: SIZES.map((n) => ({ n, alpha: -2, bindingLimit: 200 })),
}, {
  // f16 += f16 (activation gradients), f32 += f16, f16 += f32: y + alpha * x in f32 (a
  // multiply-add), rounded once: extra 0.
  name: "f16: accumulate on f16-rounded inputs",
  op: (c) => accumulateOp(c, ROUNDED),
  seed: 63,
  cases: [7, 1001].flatMap((n) => [1, -0.75].map((alpha) => ({ n, alpha }))),
  mixes: [{ y: "f16", x: "f16" }, { y: "f32", x: "f16" }, { y: "f16", x: "f32" }],
}, {
  name: "f16: accumulate aliased (y += y / 2) on exact-size buffers (scalar path)",
  op: (c) => accumulateOp(c),
  seed: 64,
  cases: [5, 13].map((n) => ({ n, alpha: 0.5, self: true, exact: true })),
  mixes: [{ y: "f16" }],
}, {
  // An f32 output: f32 rounding of values up to 3 max |y|.
  name: "f16: accumulate f32 += f16 in ranges (limit lowered)",
  op: (c) => accumulateOp(c, (d, _w, { v }) => outTolerance(d, 3 * maxAbs(v.y))),
  seed: 65,
  cases: [7, 1001].map((n) => ({ n, alpha: 2, bindingLimit: 200 })),
  mixes: [{ y: "f32", x: "f16" }],
}];

/** The concat / split suites of tests/elementwise_test.ts. */
export const CONCAT_SUITES: OpSuite<ConcatCase>[] = [{
  name: "concatChannels (torch.cat semantics) on several layouts",
  op: concat,
  seed: 44,
  cases: CONCAT_CASES,
  fd: [{ n: 2, hw: 3, cs: [2, 1, 3] }],
}, {
  name: "splitChannels: slices, accumulates, and round-trips concat",
  op: (c) => split(c),
  seed: 45,
  cases: CONCAT_CASES,
}, {
  name: "concat / split in ranges of rows (limit lowered)",
  op: concat,
  seed: 46,
  cases: RANGE_CASES,
}, {
  name: "split in ranges of rows (limit lowered)",
  op: (c) => split(c),
  seed: 49,
  cases: RANGE_CASES,
}, {
  // A copy (rounded to f16 when either side is f16): exact.
  name: "f16: concatChannels copies exactly",
  op: concat,
  seed: 66,
  cases: F16_CASES,
  mixes: [{ y: "f16", x: "f16" }, { y: "f16", x: "f32" }, { y: "f32", x: "f16" }],
}, {
  // One f32 sum, rounded once: extra 0.
  name: "f16: splitChannels copies exactly; split accumulates",
  op: (c) => split(c, ROUNDED),
  seed: 67,
  cases: F16_CASES,
  mixes: [{ dx: "f16", dy: "f16" }, { dx: "f32", dy: "f16" }],
}, {
  // Ranges of rows: bases of f16 bindings (256-byte offsets = 128 elements).
  name: "f16: concat in ranges of rows (limit lowered)",
  op: concat,
  seed: 68,
  cases: RANGE_CASES,
  mixes: [{ y: "f16", x: "f16" }],
}];

/** The suites of split with a fused activation backward in tests/elementwise_test.ts. */
export const SPLIT_ACTIVATION_SUITES: OpSuite<SplitActivationCase>[] = [{
  // CONCAT_CASES: odd hw (scalar), hw % 4 == 0 (vec4), 1x1, offsets off the vec4 grid.
  name: "splitChannels with a fused activation backward: every kind, layout and accumulate mode",
  op: splitActivation,
  seed: 50,
  cases: withKinds(CONCAT_CASES),
}, {
  name: "splitChannels with a fused activation backward in ranges of rows (limit lowered)",
  op: splitActivation,
  seed: 51,
  cases: RANGE_CASES.flatMap((c) => withKinds([c])),
}, {
  name: "f16: splitChannels with a fused activation backward (training: all f16)",
  op: splitActivation,
  seed: 69,
  cases: [...withKinds(F16_CASES), ...withKinds(RANGE_CASES, ["tanh"])],
  mixes: [{ in: "f16", dx: "f16" }],
}, {
  name: "f16: splitChannels with a fused activation backward from f16 dy and y into an f32 dx",
  op: splitActivation,
  seed: 70,
  cases: [
    { n: 3, hw: 4, cs: [2, 4, 6], kind: "sigmoid" },
    { n: 2, hw: 9, cs: [3, 5, 1], kind: "relu6" },
  ],
  mixes: [{ in: "f16" }],
}];
