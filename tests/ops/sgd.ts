// The SGD update for testOp (tests/_op.ts): sgdUpdate over several steps (momentum, dampening,
// nesterov, weight decay; a loss scale and a half-precision copy) against the Float64 reference
// of tests/cpu_ref/sgd.ts or torch.optim.SGD's values, and the suites of tests/sgd_test.ts.
import { createLossScale, lossScaleCheck, lossScaleUpdate } from "../../kernels/loss_scale.ts";
import { type SgdParams, sgdUpdate } from "../../kernels/sgd.ts";
import { sgdStepRef } from "../cpu_ref/sgd.ts";
import assert from "../_assert.ts";
import { assertExact } from "../big.ts";
import type { KernelCheck } from "../_check.ts";
import { assertClose } from "../harness.ts";
import {
  checkOp,
  input,
  type OpCase,
  opCase,
  type OpPhase,
  type OpSuite,
  type OpTensor,
  output,
} from "../_op.ts";

/**
 * A case: `steps` updates (default 3) of `n` parameters with `p`; `lossScale`: gradients scaled
 * by it, a scaler at that scale checking them; `half`: a copy of the parameters (f16 unless the
 * mix says f32); `exact`: exact-size buffers; `torch`: the values torch.optim.SGD gave after each
 * step, instead of the reference (and its param0 and gradients); `bindingLimit`: ranges.
 */
export interface SgdCase {
  readonly n: number;
  readonly p: SgdParams;
  readonly steps?: number;
  readonly lossScale?: number;
  readonly half?: boolean;
  readonly exact?: boolean;
  readonly bindingLimit?: number;
  readonly torch?: {
    readonly param0: readonly number[];
    readonly steps: readonly {
      readonly grad: readonly number[];
      readonly param: readonly number[];
      readonly buf: readonly number[] | null;
    }[];
  };
}

/**
 * `steps` SGD updates on the same param and momentum buffer (NaN before the first step, which
 * must not read it), each from its own gradient `g<s>`; the reference chains its own param and
 * buffer (the gradient it is fed: the uploaded, f32-rounded scaled one divided by the scale).
 * The half copy is one rounding of the updated f32 master: exactly Math.f16round of it.
 */
export function sgd(c: SgdCase): OpCase {
  const { n, p } = c, steps = c.torch?.steps.length ?? c.steps ?? 3, scale = c.lossScale ?? 1;
  const torch = c.torch;
  const tensors: Record<string, OpTensor> = {
    param: input([n], torch ? () => torch.param0 : undefined),
    momentumBuf: input([n], () => new Float64Array(n).fill(NaN)),
  };
  for (let s = 0; s < steps; s++) {
    tensors[`g${s}`] = input(
      [n],
      torch ? () => torch.steps[s].grad : (rng) => rng.normalArray(n).map((v) => v * scale),
    );
  }
  if (c.half) tensors.half = output([n]);
  if (c.lossScale) {
    tensors.lossScale = {
      shape: [],
      make: (gpu) => createLossScale(gpu, { initScale: scale, growthInterval: 1000 }),
    };
  }
  const momentum = (p.momentum ?? 0) !== 0;
  const tol = torch ? { rtol: 1e-6, atol: 1e-7 } : { rtol: 1e-5, atol: 1e-6 };
  const step = (s: number): OpPhase => ({
    name: `step ${s}`,
    gpu: (t) => {
      const grad = t[`g${s}`], lossScale = t.lossScale;
      if (lossScale) lossScaleCheck({ lossScale, grad });
      sgdUpdate({ param: t.param, grad, momentumBuf: t.momentumBuf, half: t.half, lossScale }, {
        ...p,
        firstStep: s === 0,
      });
      if (lossScale) lossScaleUpdate({ lossScale });
    },
    cpu: (v, { ref }) => {
      if (torch) return { param: torch.steps[s].param, momentumBuf: torch.steps[s].buf ?? [] };
      const param = Float64Array.from(ref.param);
      const buf = s === 0 || !momentum ? null : Float64Array.from(ref.momentumBuf);
      const grad = Float64Array.from(v[`g${s}`], (g) => g / scale);
      return { param, momentumBuf: sgdStepRef(param, grad, buf, p) ?? undefined };
    },
    tol: momentum ? { param: tol, momentumBuf: tol } : { param: tol },
    check: c.half
      ? (got, _want, { dtypes }) => {
        const want = dtypes.half === "f16"
          ? Float64Array.from(got.param, Math.f16round)
          : got.param;
        assertExact(got.half, want, `half copy after step ${s}`);
      }
      : undefined,
    reads: c.half ? ["half"] : [],
  });
  const what = `${c.lossScale ? ` scale=${c.lossScale}` : ""}${c.exact ? " exact" : ""}`;
  return opCase({
    label: `n=${n} ${JSON.stringify(p)}${what}`,
    tensors,
    phases: Array.from({ length: steps }, (_, s) => step(s)),
    exact: c.exact,
    bindingLimit: c.bindingLimit,
  });
}

/** The settings of the mixed-precision tests. */
export const MIXED_SETTINGS: SgdParams[] = [
  { lr: 0.1 },
  { lr: 0.05, momentum: 0.9, dampening: 0.1, weightDecay: 1e-3 },
  { lr: 0.01, momentum: 0.95, nesterov: true, weightDecay: 1e-2 },
];

/** The suites of tests/sgd_test.ts (the fixture's is built from the fixture). */
export const SGD_SUITES: OpSuite<SgdCase>[] = [{
  name: "SGD on several sizes and settings over 3 steps",
  op: sgd,
  seed: 51,
  cases: [1, 7, 1003, 40961].flatMap((n) =>
    [
      { lr: 0.1 },
      { lr: 0.2, weightDecay: 5e-4 },
      { lr: 0.05, momentum: 0.9 },
      { lr: 0.05, momentum: 0.9, dampening: 0.1, weightDecay: 1e-3 },
      { lr: 0.01, momentum: 0.95, nesterov: true, weightDecay: 1e-2 },
      { lr: 0, momentum: 0.5 },
    ].map((p) => ({ n, p }))
  ),
}, {
  name: "SGD with a loss scale and an f16 copy (vec4 and scalar paths)",
  op: sgd,
  seed: 53,
  cases: [1, 7, 1003].flatMap((n) =>
    [false, true].flatMap((exact) =>
      MIXED_SETTINGS.flatMap((p) =>
        [1024, 3000].map((lossScale) => ({ n, p, lossScale, half: true, exact, steps: 2 }))
      )
    )
  ),
  mixes: [{ half: "f16" }],
}, {
  // 1003 elements in 4 ranges of at most 256 (starts at multiples of 128).
  name: "SGD with a loss scale and an f16 copy in ranges (limit lowered)",
  op: sgd,
  seed: 56,
  cases: [false, true].map((exact) => ({
    n: 1003,
    p: MIXED_SETTINGS[1],
    lossScale: 512,
    half: true,
    exact,
    steps: 2,
    bindingLimit: 256,
  })),
  mixes: [{ half: "f16" }],
}];

/** tests/fixtures/misc_sgd.json: torch.optim.SGD over 3 steps in several settings. */
export interface SgdFixture {
  readonly cases: readonly {
    readonly config: {
      readonly lr: number;
      readonly momentum?: number;
      readonly dampening?: number;
      readonly weight_decay?: number;
      readonly nesterov?: boolean;
    };
    readonly param0: number[];
    readonly steps: { grad: number[]; param: number[]; buf: number[] | null }[];
  }[];
}

/** The fixture's (PyTorch's) hyper-parameters as sgdUpdate's. */
export function torchSgdParams(cfg: SgdFixture["cases"][number]["config"]): SgdParams {
  return {
    lr: cfg.lr,
    momentum: cfg.momentum,
    dampening: cfg.dampening,
    weightDecay: cfg.weight_decay,
    nesterov: cfg.nesterov,
  };
}

/** The fixture's cases as an SGD suite: the GPU update against torch.optim.SGD's values. */
export function torchSgdSuite(fx: SgdFixture): OpSuite<SgdCase> {
  return {
    name: "SGD matches torch.optim.SGD over 3 steps",
    op: sgd,
    seed: 0,
    cases: fx.cases.map((k) => ({ n: k.param0.length, p: torchSgdParams(k.config), torch: k })),
  };
}

/** The torch.optim.SGD parity of tests/sgd_test.ts (the CPU reference, then the GPU update). */
export const SGD_CHECKS: readonly KernelCheck[] = [{
  name: "SGD CPU reference matches torch.optim.SGD over 3 steps",
  gpu: false,
  f16: false,
  run: async (_gpu, fixture) => {
    const fx = await fixture("misc_sgd.json") as SgdFixture;
    for (const k of fx.cases) {
      const p = torchSgdParams(k.config);
      const param = Float64Array.from(k.param0);
      let buf: Float64Array | null = null;
      for (const [s, step] of k.steps.entries()) {
        buf = sgdStepRef(param, step.grad, buf, p);
        const what = `${JSON.stringify(k.config)} step ${s}`;
        // torch ran in f32: allow f32 rounding accumulated over a few steps.
        assertClose(param, step.param, { rtol: 1e-6, atol: 1e-7, what: `param ${what}` });
        if (step.buf) assertClose(buf!, step.buf, { rtol: 1e-6, atol: 1e-7, what: `buf ${what}` });
        else assert.equal(buf, null);
      }
    }
  },
}, {
  name: "SGD matches torch.optim.SGD over 3 steps: GPU vs reference",
  gpu: true,
  f16: false,
  run: async (gpu, fixture) =>
    await checkOp(gpu, torchSgdSuite(await fixture("misc_sgd.json") as SgdFixture)),
}];
