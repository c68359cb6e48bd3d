// The batch norm op for testOp (tests/_op.ts): batchNormForward / batchNormBackward (training
// steps with running statistics, the backward overwriting or accumulating, eval; optionally fused
// with an activation and compared bit for bit with the unfused kernels) against the Float64
// reference of tests/cpu_ref/batchnorm.ts, and the suites of tests/batchnorm_test.ts.
import {
  activationBackward,
  activationForward,
  type ActivationKind,
} from "../../kernels/activation.ts";
import { batchNormBackward, batchNormForward } from "../../kernels/batchnorm/index.ts";
import type { Shape, Tensor } from "../../gpu/mod.ts";
import { activationBackwardRef, activationForwardRef } from "../cpu_ref/activation.ts";
import {
  batchNormBackwardRef,
  batchNormEvalRef,
  batchNormTrainRef,
  updateRunningRef,
} from "../cpu_ref/batchnorm.ts";
import assert from "../_assert.ts";
import type { Rng } from "../harness.ts";
import {
  input,
  type Mix,
  type OpCase,
  opCase,
  type OpPhase,
  type OpSuite,
  type OpTensor,
  output,
} from "../_op.ts";

/** One training step of a case: x ~ offset + scale * N(0, 1), then the backward(s). */
export interface BnStep {
  /** x's spread. */
  readonly scale: number;
  /** The backward after the forward: overwriting (false) or accumulating (true), in order. */
  readonly accumulate: readonly boolean[];
}

/**
 * A case: `n` samples of `c` channels of `hw` values in `shape` (2d or 1d), x around `offset`;
 * `kind`: the activation fused; `steps`: the training steps (default one, x spread 2, the
 * backward accumulating); then an eval forward (x ~ offset + N(0, 1)); `unfused`: also the
 * unfused kernels on a second copy of the state, equal bit for bit; `bindingLimit`: ranges.
 */
export interface BnCase {
  readonly n: number;
  readonly c: number;
  readonly hw: number;
  readonly shape: Shape;
  readonly offset: number;
  readonly kind?: ActivationKind;
  readonly steps?: readonly BnStep[];
  readonly unfused?: boolean;
  readonly bindingLimit?: number;
}

const EPS = 1e-5, MOMENTUM = 0.1;
const TOL = { rtol: 1e-4, atol: 1e-4 }, GRAD = { rtol: 1e-4, atol: 1e-3 };
const STATS = ["saveMean", "saveInvStd", "runningMean", "runningVar"] as const;

/**
 * Per-channel weights of a case: in [0.5, 1.5], or for ReLU6 in [3.5, 4.5] (with
 * {@linkcode bnBias}, BN outputs reach both clamps, below 0 and above 6).
 */
export function bnWeight(rng: Rng, c: number, kind?: ActivationKind): Float64Array {
  return rng.uniformArray(c, 0.5, 1.5).map((v) => (kind === "relu6" ? 3 + v : v));
}

/** Per-channel biases of a case: N(0, 1), or for ReLU6 N(3, 0.25). */
export function bnBias(rng: Rng, c: number, kind?: ActivationKind): Float64Array {
  return rng.normalArray(c).map((v) => (kind === "relu6" ? 3 + 0.5 * v : v));
}

/**
 * Batch norm training steps (forward then backward), then eval with the running statistics the
 * GPU holds (which leaves them and the saved statistics as they were). The references: the
 * forward's from the reference's own running statistics (over several steps); the backward's
 * from the y the GPU stored (through the activation's backward) and the saved statistics (the
 * GPU's when a tensor is f16). Weights in [0.5, 1.5] and biases N(0, 1), or for ReLU6 weights in
 * [3.5, 4.5] and biases N(3, 0.25), so that BN outputs reach both clamps (below 0 and above 6).
 * f16 outputs: per-channel sums in f32 over N = n * hw values err by up to about N * 2^-24 of the
 * sum of magnitudes, N * 2^-13 in units of the f16 rounding (2^-11) f16Tolerance allows; the
 * elementwise outputs add a few f32 roundings (covered by the same headroom); eval (no reduction,
 * f32 roundings of the coefficients and of the normalization only): 0.01.
 */
export function batchNorm(cs: BnCase): OpCase {
  const { n, c, hw, shape, kind } = cs;
  const steps = cs.steps ?? [{ scale: 2, accumulate: [true] }];
  const p = { n, c, hw, eps: EPS, momentum: MOMENTUM, activation: kind };
  const act = (y: Float64Array) => (kind ? activationForwardRef(y, kind) : y);
  const tensors: Record<string, OpTensor> = {
    weight: input([c], (rng) => bnWeight(rng, c, kind)),
    bias: input([c], (rng) => bnBias(rng, c, kind)),
    runningMean: input([c], () => new Float64Array(c)),
    runningVar: input([c], () => new Float64Array(c).fill(1)),
    saveMean: output([c]),
    saveInvStd: output([c]),
    y: output(shape),
    dx: output(shape),
  };
  steps.forEach((s, i) => {
    tensors[`x${i}`] = input(
      shape,
      (rng, k) => rng.normalArray(k).map((v) => cs.offset + s.scale * v),
      { as: "x" },
    );
    tensors[`dy${i}`] = input(shape, undefined, { as: "dy" });
  });
  tensors.dweight = input([c]);
  tensors.dbias = input([c]);
  tensors.xe = input(shape, (rng, k) => rng.normalArray(k).map((v) => cs.offset + v), { as: "x" });
  if (cs.unfused) {
    for (const s of STATS) tensors[`${s}U`] = { ...tensors[s], as: s };
    for (const name of ["z", "yU", "dz", "dxU"]) tensors[name] = output(shape, { as: "y" });
    tensors.dweightU = input([c], (_r, _k, d) => d.dweight, { as: "dweight" });
    tensors.dbiasU = input([c], (_r, _k, d) => d.dbias, { as: "dbias" });
  }
  const state = (t: Readonly<Record<string, Tensor>>, u = "") => ({
    saveMean: t[`saveMean${u}`],
    saveInvStd: t[`saveInvStd${u}`],
    runningMean: t[`runningMean${u}`],
    runningVar: t[`runningVar${u}`],
    weight: t.weight,
    bias: t.bias,
  });
  const same = (names: readonly string[]) =>
    cs.unfused ? Object.fromEntries(names.map((k) => [k, `${k}U`])) : undefined;
  const extra = n * hw * 2 ** -13;

  const forward = (i: number): OpPhase => ({
    name: `step ${i} forward`,
    gpu: (t) => {
      const x = t[`x${i}`];
      batchNormForward({ ...state(t), y: t.y, x }, { ...p, training: true });
      if (!cs.unfused) return;
      batchNormForward({ ...state(t, "U"), y: t.z, x }, {
        ...p,
        training: true,
        activation: undefined,
      });
      activationForward({ y: t.yU, x: t.z }, { kind: kind! });
    },
    cpu: (v, { ref }) => {
      const r = batchNormTrainRef(n, c, hw, v[`x${i}`], v.weight, v.bias, EPS);
      const rm = Float64Array.from(ref.runningMean), rv = Float64Array.from(ref.runningVar);
      updateRunningRef(rm, rv, r.mean, r.unbiasedVar, MOMENTUM);
      return {
        y: act(r.y),
        saveMean: r.mean,
        saveInvStd: r.invstd,
        runningMean: rm,
        runningVar: rv,
      };
    },
    tol: {
      y: TOL,
      saveMean: { rtol: 1e-5, atol: 1e-5 },
      saveInvStd: { rtol: 1e-4, atol: 0 },
      runningMean: { rtol: 1e-5, atol: 1e-5 },
      runningVar: { rtol: 1e-4, atol: 1e-5 },
    },
    extra,
    same: same(["y", ...STATS]),
  });
  const backward = (i: number, accumulate: boolean): OpPhase => ({
    name: `step ${i} backward${accumulate ? " (accumulate)" : ""}`,
    gpu: (t) => {
      const common = { weight: t.weight, saveMean: t.saveMean, saveInvStd: t.saveInvStd };
      const io = {
        dx: t.dx,
        dweight: t.dweight,
        dbias: t.dbias,
        dy: t[`dy${i}`],
        x: t[`x${i}`],
        y: t.y,
      };
      batchNormBackward({ ...io, ...common }, { ...p, accumulate });
      if (!cs.unfused) return;
      activationBackward({ dx: t.dz, dy: t[`dy${i}`], y: t.yU }, { kind: kind! });
      batchNormBackward(
        { dx: t.dxU, dweight: t.dweightU, dbias: t.dbiasU, dy: t.dz, x: t[`x${i}`], ...common },
        { ...p, accumulate, activation: undefined },
      );
    },
    cpu: (v, { ref, half }) => {
      const dy = v[`dy${i}`];
      const dz = kind ? activationBackwardRef(dy, v.y, kind) : dy;
      const [mean, invstd] = half ? [v.saveMean, v.saveInvStd] : [ref.saveMean, ref.saveInvStd];
      const g = batchNormBackwardRef(n, c, hw, dz, v[`x${i}`], v.weight, mean, invstd);
      if (!accumulate) return g;
      return {
        dx: g.dx,
        dweight: g.dweight.map((d, k) => d + v.dweight[k]),
        dbias: g.dbias.map((d, k) => d + v.dbias[k]),
      };
    },
    tol: { dx: TOL, dweight: GRAD, dbias: GRAD },
    extra,
    same: same(["dx", "dweight", "dbias"]),
  });
  const evaluate: OpPhase = {
    name: "eval",
    gpu: (t) => {
      batchNormForward({ ...state(t), y: t.y, x: t.xe }, { ...p, training: false });
      if (!cs.unfused) return;
      batchNormForward({ ...state(t, "U"), y: t.z, x: t.xe }, {
        ...p,
        training: false,
        activation: undefined,
      });
      activationForward({ y: t.yU, x: t.z }, { kind: kind! });
    },
    cpu: (v) => ({
      y: act(batchNormEvalRef(n, c, hw, v.xe, v.runningMean, v.runningVar, v.weight, v.bias, EPS)),
      saveMean: v.saveMean,
      saveInvStd: v.saveInvStd,
      runningMean: v.runningMean,
      runningVar: v.runningVar,
    }),
    tol: {
      y: TOL,
      saveMean: "exact",
      saveInvStd: "exact",
      runningMean: "exact",
      runningVar: "exact",
    },
    extra: 0.01,
    same: same(["y"]),
  };
  return opCase({
    label: `${kind ?? "no act"} n${n} c${c} hw${hw}`,
    tensors,
    phases: [
      ...steps.flatMap((s, i) => [forward(i), ...s.accumulate.map((a) => backward(i, a))]),
      evaluate,
    ],
    fd: [
      { wrt: "x0", grad: "dx", atol: 1e-5, loss: { y: "dy0" } },
      { wrt: "weight", grad: "dweight", loss: { y: "dy0" } },
      { wrt: "bias", grad: "dbias", loss: { y: "dy0" } },
    ],
    bindingLimit: cs.bindingLimit,
  });
}

/** The activations. */
const KINDS: readonly ActivationKind[] = ["relu", "relu6", "sigmoid", "tanh"];

/** Which regions of the activation the outputs `y` fall in, as labels (for coverage checks). */
function regions(y: ArrayLike<number>, kind: ActivationKind): Set<string> {
  const seen = new Set<string>();
  for (let i = 0; i < y.length; i++) {
    const v = y[i];
    if (kind === "relu" || kind === "relu6") {
      seen.add(v === 0 ? "0" : kind === "relu6" && v === 6 ? "6" : "linear");
    } else seen.add(v < (kind === "sigmoid" ? 0.5 : 0) ? "low" : "high");
  }
  return seen;
}

/** The regions each kind's test inputs must reach, over all cases of a test. */
const WANTED: Record<ActivationKind, string[]> = {
  relu: ["0", "linear"],
  relu6: ["0", "linear", "6"],
  sigmoid: ["low", "high"],
  tanh: ["low", "high"],
};

/**
 * A suite of fused cases that records the regions of the activation their training outputs
 * reach, and asserts once they all ran that each kind reached every region of its activation.
 */
function covering(s: Omit<OpSuite<BnCase>, "op" | "after">): OpSuite<BnCase> {
  const seen = new Map(KINDS.map((k) => [k, new Set<string>()]));
  return {
    ...s,
    op: (p) => {
      const c = batchNorm(p);
      const [first, ...rest] = c.phases;
      const check: OpPhase["check"] = (got) => {
        for (const r of regions(got.y, p.kind!)) seen.get(p.kind!)!.add(r);
      };
      return { ...c, phases: [{ ...first, check }, ...rest] };
    },
    after: () => {
      for (const kind of KINDS) {
        const missing = WANTED[kind].filter((r) => !seen.get(kind)!.has(r));
        assert.deepEqual(missing, [], `${kind}: no output in region(s) ${missing.join(", ")}`);
        seen.get(kind)!.clear();
      }
    },
  };
}

/** The shapes of the f32 tests. */
export const BN_CASES: BnCase[] = [
  { n: 2, c: 3, hw: 35, shape: [2, 3, 7, 5], offset: 0 }, // BatchNorm2d, odd spatial size
  { n: 1, c: 1, hw: 9, shape: [1, 1, 3, 3], offset: 1 }, // batch 1, channel 1
  { n: 5, c: 4, hw: 1, shape: [5, 4], offset: -2 }, // BatchNorm1d
  { n: 3, c: 3, hw: 1, shape: [3, 3, 1, 1], offset: 0 }, // 1x1 spatial
  { n: 7, c: 130, hw: 1, shape: [7, 130], offset: 0 }, // more channels than a workgroup
  { n: 5, c: 3, hw: 4, shape: [5, 3, 2, 2], offset: 0 }, // vec4 path, one vec4 per plane
  { n: 2, c: 5, hw: 36, shape: [2, 5, 6, 6], offset: 0 }, // vec4 path (ResNet's 6x6)
  // n * hw = 5400 > one chunk of 4096, and a mean far from 0: the shifted two-pass sums; vec4
  // planes of 450 vectors, walked by each thread of the elementwise passes in steps of segs
  { n: 3, c: 2, hw: 1800, shape: [3, 2, 45, 40], offset: 50 },
  // odd hw: scalar planes of 133 elements, several per thread of the elementwise passes
  { n: 3, c: 5, hw: 133, shape: [3, 5, 7, 19], offset: 1 },
  // enough planes that each thread of the elementwise passes walks its longest run: 64 vec4s
  // (planes of 128), and 43 elements of a scalar plane of 129
  { n: 8, c: 32, hw: 512, shape: [8, 32, 16, 32], offset: -3 },
  { n: 6, c: 32, hw: 129, shape: [6, 32, 3, 43], offset: 0 },
  // BatchNorm1d with several samples per thread of the elementwise passes (columns layout)
  { n: 300, c: 4, hw: 1, shape: [300, 4], offset: 0 },
  { n: 4, c: 3, hw: 2, shape: [4, 3, 1, 2], offset: 0 }, // hw = 2: planes of two elements
  // few channels and n * hw past 64 runs of a workgroup: the reduction in several blocks per
  // channel, then the finalize pass (two levels), on the vec4 (runs of 63 vec4s) and the scalar
  // path (n * hw = 1050); and n * hw = 5 with 7 channels (one level)
  { n: 20, c: 3, hw: 1000, shape: [20, 3, 25, 40], offset: 5 },
  { n: 70, c: 7, hw: 15, shape: [70, 7, 3, 5], offset: -1 },
  { n: 5, c: 7, hw: 1, shape: [5, 7], offset: 0 },
  // many channels of small planes: on a CPU adapter, one thread per channel finishes the sums
  { n: 3, c: 300, hw: 36, shape: [3, 300, 6, 6], offset: 1 },
  { n: 4, c: 260, hw: 9, shape: [4, 260, 3, 3], offset: 0 },
];

/** `cs` in ranges of `perRange` samples (default two; at least the 64-element minimum). */
const ranges = (cs: BnCase, perRange = 2): BnCase => ({
  ...cs,
  bindingLimit: Math.max(64, perRange * cs.c * cs.hw),
});

/** Two training steps (the second accumulating into the first's gradients), then eval. */
const TWO_STEPS: BnStep[] = [{ scale: 1, accumulate: [false] }, { scale: 2, accumulate: [true] }];

/** The training configuration of --precision f16: activations and their gradients f16. */
const TRAIN_F16: Mix = { x: "f16", y: "f16", dy: "f16", dx: "f16" };

/**
 * Another mix: f32 x and dx with f16 y and dy (data bindings of two dtypes, whose binding bases
 * differ once split into ranges), and every per-channel tensor f16 (loads, stores, running
 * statistics updated and gradients accumulated in f16 storage).
 */
const MIXED: Mix = {
  y: "f16",
  dy: "f16",
  weight: "f16",
  bias: "f16",
  runningMean: "f16",
  runningVar: "f16",
  saveMean: "f16",
  saveInvStd: "f16",
  dweight: "f16",
  dbias: "f16",
};

/** The suites of tests/batchnorm_test.ts. */
export const BN_SUITES: OpSuite<BnCase>[] = [
  {
    name: "batch norm: 2 training steps, backward, eval",
    op: batchNorm,
    seed: 8,
    cases: BN_CASES.map((cs) => ({ ...cs, steps: TWO_STEPS })),
    fd: [[4, 3, 1], [2, 2, 6], [1, 2, 5]].map(([n, c, hw]) => ({
      n,
      c,
      hw,
      shape: [n, c, hw],
      offset: 0,
    })),
  },
  {
    name: "batch norm split into ranges of samples (binding limit lowered)",
    op: batchNorm,
    seed: 10,
    cases: [
      ...BN_CASES.filter((cs) => cs.n >= 3).map((cs) => ranges(cs)),
      ranges({ n: 37, c: 3, hw: 5, shape: [37, 3, 5], offset: 2 }), // scalar path, 10 ranges
      ranges({ n: 21, c: 2, hw: 8, shape: [21, 2, 2, 4], offset: -1 }), // vec4 path, 6 ranges
      // BatchNorm1d, ranges of 130 samples: several samples per thread in the elementwise passes
      ranges({ n: 300, c: 4, hw: 1, shape: [300, 4], offset: 0 }, 130),
    ].map((cs) => ({ ...cs, steps: [{ scale: 1, accumulate: [false] }] })),
  },
  covering({
    // BN_CASES cover odd hw (scalar path), hw % 4 == 0 (vec4 path), BatchNorm1d, 130 channels, and
    // n * hw past one chunk of the partial sums. Offsets move the mean; the activations need both
    // signs around it (it cancels in BN).
    name: "batch norm + activation fused (forward train/eval, backward, both accumulate modes) " +
      "equals the unfused kernels bit for bit",
    seed: 11,
    cases: BN_CASES.flatMap((cs) =>
      KINDS.map((kind) => ({
        ...cs,
        kind,
        unfused: true,
        steps: [{ scale: 2, accumulate: [false, true] }],
      }))
    ),
  }),
  covering({
    // Two samples per range (at least the 64-element minimum) unless said otherwise; every kind
    // on the scalar and the vec4 paths, the others with ReLU.
    name: "batch norm + activation fused, split into ranges of samples (binding limit lowered)",
    seed: 12,
    cases: [
      ranges({ n: 37, c: 3, hw: 5, shape: [37, 3, 5], offset: 2 }), // scalar path, 19 ranges
      ranges({ n: 21, c: 2, hw: 8, shape: [21, 2, 2, 4], offset: -1 }), // vec4 path, 11 ranges
      // planes of 133 and 280 elements walked several per thread by the elementwise passes
      ranges({ n: 5, c: 3, hw: 133, shape: [5, 3, 7, 19], offset: 1 }),
      ranges({ n: 5, c: 2, hw: 280, shape: [5, 2, 14, 20], offset: 0 }),
      ranges({ n: 30, c: 4, hw: 1, shape: [30, 4], offset: 0 }), // BatchNorm1d
      // BatchNorm1d, ranges of 130 samples: several samples per thread
      ranges({ n: 300, c: 4, hw: 1, shape: [300, 4], offset: 0 }, 130),
    ].flatMap((cs, i) =>
      (i < 2 ? KINDS : ["relu" as const]).map((kind) => ({
        ...cs,
        kind,
        unfused: true,
        steps: [{ scale: 2, accumulate: [false, true] }],
      }))
    ),
  }),
  {
    name: "batch norm f16 (training configuration: f16 x, y, dy, dx; f32 parameters, statistics, " +
      "gradients) on f16-rounded inputs",
    op: batchNorm,
    seed: 21,
    cases: [
      ...([
        { n: 2, c: 3, hw: 35, shape: [2, 3, 7, 5], offset: 0 }, // scalar planes, odd hw
        { n: 3, c: 2, hw: 8, shape: [3, 2, 2, 4], offset: 1 }, // vec4<f16> planes
        { n: 5, c: 4, hw: 1, shape: [5, 4], offset: -2 }, // BatchNorm1d (columns)
        // n * hw = 4800 values per channel (two chunks of the partial sums), far from 0: the f32
        // statistics of f16 values, to f32 accuracy
        { n: 2, c: 2, hw: 2400, shape: [2, 2, 40, 60], offset: 3 },
        // many channels of small planes (one thread per channel on a CPU adapter)
        { n: 3, c: 300, hw: 36, shape: [3, 300, 6, 6], offset: 1 },
      ] as BnCase[]).flatMap((cs, i) => [cs, { ...cs, kind: KINDS[i % KINDS.length] }]),
      // f16 tensors split into ranges of samples (binding offsets of 128 f16 elements)
      { n: 7, c: 2, hw: 8, shape: [7, 2, 8], offset: -1, kind: "relu", bindingLimit: 64 },
    ],
    mixes: [TRAIN_F16],
  },
  {
    name: "batch norm with f32 x / dx, f16 y / dy and f16 parameters and statistics, split into " +
      "ranges of samples",
    op: batchNorm,
    seed: 22,
    cases: [
      { n: 3, c: 3, hw: 5, shape: [3, 3, 5], offset: 1 }, // one range
      // ranges of 2 samples (210 elements): f32 and f16 bindings start at different bases
      { n: 5, c: 3, hw: 35, shape: [5, 3, 5, 7], offset: 1, bindingLimit: 210 },
      { n: 7, c: 2, hw: 8, shape: [7, 2, 8], offset: -1, bindingLimit: 64 }, // vec4, ranges of 4
      { n: 30, c: 4, hw: 1, shape: [30, 4], offset: 0, bindingLimit: 64 }, // BatchNorm1d, ranges of 16
      { n: 2, c: 260, hw: 9, shape: [2, 260, 3, 3], offset: 0 }, // one thread per channel (CPU)
    ].flatMap((cs) => [cs, { ...cs, kind: "sigmoid" as const }]),
    mixes: [MIXED],
  },
];
