// The activation op for testOp (tests/_op.ts): activationForward / activationBackward against the
// Float64 reference of tests/cpu_ref/activation.ts, and the suites of tests/activation_test.ts.
import {
  activationBackward,
  activationForward,
  type ActivationKind,
} from "../../kernels/activation.ts";
import { activationBackwardRef, activationForwardRef } from "../cpu_ref/activation.ts";
import type { Rng } from "../harness.ts";
import { input, type Mix, type OpCase, opCase, type OpSuite, output } from "../_op.ts";

/** The activations. */
export const KINDS: ActivationKind[] = ["relu", "relu6", "sigmoid", "tanh"];

/**
 * A case: the activation on `n` elements; `inPlace`: y is x and dx is dy; `exact`: buffers of
 * exactly the tensors' size (the scalar path).
 */
export interface ActivationCase {
  readonly kind: ActivationKind;
  readonly n: number;
  readonly inPlace?: boolean;
  readonly exact?: boolean;
}

/** Inputs spread over every regime, away from the kinks (finite differences need smoothness). */
export function activationInputs(rng: Rng, n: number): Float64Array {
  const x = rng.normalArray(n).map((v) => v * 4);
  for (let i = 0; i < n; i++) {
    for (const k of [0, 6]) if (Math.abs(x[i] - k) < 1e-3) x[i] = k + 0.5;
  }
  return x;
}

/**
 * The activation forward, then its backward from the y the kernel wrote (f16 values when y is
 * f16). f16 outputs: no reduction, f is evaluated in f32 (error < 1e-6 relative, 1/500 of an f16
 * half-ulp), then rounded once; extra 0.01 covers that f32 error where it tips the rounding. f32
 * outputs keep the f32 evaluation's error.
 */
export function activation(c: ActivationCase): OpCase {
  const { kind, n } = c;
  const where = `${c.exact ? " exact" : ""}${c.inPlace ? " in place" : ""}`;
  return opCase({
    label: `${kind} n=${n}${where}`,
    tensors: {
      x: input([n], activationInputs),
      dy: input([n]),
      y: output([n], c.inPlace ? { alias: "x" } : {}),
      dx: output([n], c.inPlace ? { alias: "dy" } : {}),
    },
    phases: [{
      gpu: ({ y, x }) => activationForward({ y, x }, { kind }),
      cpu: ({ x }) => ({ y: activationForwardRef(x, kind) }),
      tol: { y: { rtol: 2e-6, atol: 1e-7 } },
      extra: 0.01,
    }, {
      gpu: ({ dx, dy, y }) => activationBackward({ dx, dy, y }, { kind }),
      cpu: ({ dy, y }) => ({ dx: activationBackwardRef(dy, y, kind) }),
      tol: { dx: { rtol: 1e-5, atol: 1e-7 } },
      extra: 0.01,
    }],
    fd: [{ wrt: "x", grad: "dx", rtol: 1e-5, atol: 1e-7 }],
    exact: c.exact,
  });
}

/** Every kind on each of `sizes`, with `more` parameters. */
function each(sizes: number[], more: Partial<ActivationCase> = {}): ActivationCase[] {
  return sizes.flatMap((n) => KINDS.map((kind) => ({ kind, n, ...more })));
}

/** The suites of tests/activation_test.ts. */
export const ACTIVATION_SUITES: OpSuite<ActivationCase>[] = [{
  name: "activation forward/backward on several sizes",
  op: activation,
  seed: 12,
  cases: each([1, 7, 1000, 4099, 65541]),
  fd: each([40]),
}, {
  name: "activation in place (y = x, dx = dy) and on exact-size buffers (scalar path)",
  op: activation,
  seed: 13,
  cases: [
    ...each([1, 7, 13], { inPlace: true }),
    ...each([1, 7, 13], { inPlace: true, exact: true }),
  ],
}, {
  name: "f16: activation forward/backward on f16-rounded inputs",
  op: activation,
  seed: 17,
  cases: each([7, 1001]),
  mixes: [
    { x: "f16", y: "f16", dx: "f16", dy: "f16" }, // training
    { x: "f32", y: "f16", dx: "f32", dy: "f16" },
    { x: "f16", y: "f32", dx: "f16", dy: "f32" },
  ],
}, {
  name: "f16: activation in place on exact-size buffers (scalar path)",
  op: activation,
  seed: 18,
  cases: each([5, 13], { inPlace: true, exact: true }),
  mixes: [{ x: "f16", dy: "f16" } satisfies Mix],
}];
