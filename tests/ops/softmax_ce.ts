// The softmax cross-entropy op for testOp (tests/_op.ts): softmaxCrossEntropy against the Float64
// reference of tests/cpu_ref/softmax_ce.ts, and the suites of tests/softmax_ce_test.ts.
import { createLossScale } from "../../kernels/loss_scale.ts";
import { softmaxCrossEntropy } from "../../kernels/softmax_ce/index.ts";
import { softmaxCrossEntropyRef } from "../cpu_ref/softmax_ce.ts";
import {
  input,
  type Mix,
  type OpCase,
  opCase,
  type OpPhase,
  type OpSuite,
  output,
} from "../_op.ts";

/**
 * A case: `n` rows of `c` logits (N(0, scale^2), default scale 2) and labels in [0, c); `eps`:
 * label smoothing; `inPlace`: dlogits is logits; `lossScale`: a loss scaler at that scale;
 * `lossInit`: lossSum's value before; `times`: calls (each adds to lossSum and correct);
 * `ignore`: every `ignore`-th row (from row 0), or every row ("all"), gets label -100 (ignored:
 * the mean is over the others); `counted`: the valid rows are accumulated into `validRows`.
 */
export interface CeCase {
  readonly n: number;
  readonly c: number;
  readonly eps?: number;
  readonly inPlace?: boolean;
  readonly lossScale?: number;
  readonly lossInit?: number;
  readonly correctInit?: number;
  readonly times?: number;
  readonly bindingLimit?: number;
  readonly ignore?: number | "all";
  readonly counted?: boolean;
}

/**
 * softmaxCrossEntropy `times` times: dlogits (scaled by the loss scale), the loss and the hits
 * (f32 / u32 sums whatever the storage of the logits: unscaled, accumulated). An f16 dlogits is
 * one rounding of an f32 value: the f32 sum of c exponentials behind it carries a relative error
 * up to c * 2^-24 = (c * 2^-13) * 2^-11, i.e. extra c * 2^-13 (exp, log and the division add a
 * few f32 ulps, far less).
 */
export function softmaxCe(p: CeCase): OpCase {
  const { n, c, eps = 0 } = p, scale = p.lossScale ?? 1;
  const call: OpPhase = {
    gpu: (t) =>
      softmaxCrossEntropy({
        dlogits: t.dlogits,
        lossSum: t.lossSum,
        correct: t.correct,
        logits: t.logits,
        labels: t.labels,
        lossScale: t.lossScale,
        validRows: t.validRows,
      }, { n, c, labelSmoothing: eps }),
    cpu: ({ logits, labels, lossSum, correct, validRows }) => {
      const r = softmaxCrossEntropyRef(logits, labels, n, c, eps);
      return {
        dlogits: r.dlogits.map((v) => v * scale),
        lossSum: [lossSum[0] + r.lossSum],
        correct: [correct[0] + r.correct],
        ...(validRows ? { validRows: [validRows[0] + r.validRows] } : {}),
      };
    },
    tol: {
      dlogits: { rtol: 1e-4, atol: 1e-8 * scale },
      lossSum: { rtol: 1e-5, atol: 1e-6 },
      correct: "exact",
      ...(p.counted ? { validRows: "exact" as const } : {}),
    },
    extra: c * 2 ** -13,
  };
  const times = p.times ?? 1;
  return opCase({
    label: `n=${n} c=${c} eps=${eps}${p.inPlace ? " in place" : ""}` +
      `${p.lossScale ? ` scale=${p.lossScale}` : ""}` +
      `${p.ignore ? ` ignore=${p.ignore}` : ""}${p.counted ? " counted" : ""}`,
    tensors: {
      logits: input([n, c], (rng, m) => rng.normalArray(m).map((v) => v * 2)),
      labels: input([n], (rng) =>
        Int32Array.from({ length: n }, (_, r) => {
          const label = rng.int(c);
          return p.ignore === "all" || (p.ignore && r % p.ignore === 0) ? -100 : label;
        }), { dtype: "i32" }),
      dlogits: output([n, c], p.inPlace ? { alias: "logits" } : {}),
      lossSum: input([1], () => [p.lossInit ?? 0]),
      correct: input([1], () => [p.correctInit ?? 0], { dtype: "u32" }),
      ...(p.lossScale
        ? { lossScale: { shape: [], make: (gpu) => createLossScale(gpu, { initScale: scale }) } }
        : {}),
      ...(p.counted ? { validRows: input([1], () => [3], { dtype: "u32" }) } : {}),
    },
    phases: Array.from({ length: times }, (_, i) => ({ ...call, name: `call ${i}` })),
    bindingLimit: p.bindingLimit,
  });
}

/** Each of `shapes` with and without label smoothing `eps`. */
const smoothed = (shapes: [number, number][], eps: number) =>
  shapes.flatMap(([n, c]) => [{ n, c }, { n, c, eps }]);

/** The suites of tests/softmax_ce_test.ts. */
export const CE_SUITES: OpSuite<CeCase>[] = [{
  name: "softmax CE on several shapes, with and without smoothing",
  op: softmaxCe,
  seed: 32,
  cases: smoothed([[1, 1], [1, 10], [7, 3], [256, 10], [300, 10], [600, 7], [33, 1000]], 0.1),
}, {
  name: "softmax CE accumulates lossSum and correct; dlogits may alias logits",
  op: softmaxCe,
  seed: 33,
  cases: [
    { n: 50, c: 10, eps: 0.05, lossInit: 1.5, correctInit: 7, times: 3 },
    { n: 50, c: 10, eps: 0.05, inPlace: true },
  ],
}, {
  name: "softmax CE split into many row ranges and workgroups (limit lowered)",
  op: softmaxCe,
  seed: 39,
  cases: [[700, 10, 0], [301, 7, 0.1], [9, 400, 0], [2, 1000, 0.2]].flatMap(([n, c, eps]) =>
    [false, true].map((inPlace) => ({ n, c, eps, inPlace, lossInit: 2, bindingLimit: 3000 }))
  ),
}, {
  name: "softmax CE with f16 logits and/or dlogits on the f16-rounded logits",
  op: softmaxCe,
  seed: 40,
  cases: smoothed([[1, 1], [7, 3], [300, 10], [5, 257]], 0.1),
  mixes: [
    { logits: "f16", dlogits: "f16" }, // training in f16
    { logits: "f16" },
    { dlogits: "f16" },
  ],
}, {
  name: "softmax CE in place on f16 logits",
  op: softmaxCe,
  seed: 41,
  cases: smoothed([[1, 1], [7, 3], [300, 10], [5, 257]], 0.1).map((p) => ({ ...p, inPlace: true })),
  mixes: [{ logits: "f16" } satisfies Mix],
}, {
  name: "softmax CE with a loss scale: dlogits scaled, loss and hits unscaled",
  op: softmaxCe,
  seed: 42,
  cases: [[7, 3], [300, 10], [5, 257]].flatMap(([n, c]) =>
    [4096, 3000].flatMap((lossScale) => [
      { n, c, eps: 0.1, lossScale },
      { n, c, eps: 0.1, lossScale, inPlace: true },
    ])
  ),
  mixes: [{ logits: "f16", dlogits: "f16" }],
}, {
  name: "softmax CE with a loss scale on f32 logits",
  op: softmaxCe,
  seed: 43,
  cases: [[7, 3], [300, 10], [5, 257]].flatMap(([n, c]) =>
    [4096, 3000].map((lossScale) => ({ n, c, lossScale }))
  ),
}, {
  // Rows per workgroup and per range: floor(3000 / c), so 3, 2 and 1 ranges / workgroups.
  name: "softmax CE with f16 logits split into row ranges and workgroups (limit lowered)",
  op: softmaxCe,
  seed: 44,
  cases: [[1001, 7], [9, 400], [2, 1000]].flatMap(([n, c]) =>
    [false, true].map((inPlace) => ({
      n,
      c,
      eps: 0.1,
      lossScale: 512,
      inPlace,
      bindingLimit: 3000,
    }))
  ),
  mixes: [{ logits: "f16", dlogits: "f16" }],
}, {
  name: "softmax CE with ignored rows (-100): the mean over the others, as PyTorch's",
  op: softmaxCe,
  seed: 45,
  cases: [[1, 1], [7, 3], [300, 10], [33, 1000]].flatMap(([n, c]) =>
    ([3, "all"] as const).flatMap((ignore) => [
      { n, c, ignore },
      { n, c, eps: 0.1, ignore, counted: true },
      { n, c, eps: 0.2, ignore, counted: true, inPlace: true, lossScale: 1024, lossInit: 1 },
    ])
  ),
}, {
  // Rows per workgroup and per range: floor(3000 / c): each workgroup counts all the labels.
  name: "softmax CE with ignored rows split into row ranges and workgroups (limit lowered)",
  op: softmaxCe,
  seed: 46,
  cases: [[700, 10, 2], [301, 7, 5], [9, 400, 4], [2, 1000, 2]].flatMap(([n, c, ignore]) =>
    [false, true].map((inPlace) => ({
      n,
      c,
      eps: 0.1,
      ignore,
      counted: true,
      inPlace,
      bindingLimit: 3000,
    }))
  ),
}, {
  name: "softmax CE with ignored rows and f16 logits and dlogits",
  op: softmaxCe,
  seed: 47,
  cases: [[7, 3, 2], [300, 10, 3], [5, 257, 5]].map(([n, c, ignore]) => ({
    n,
    c,
    eps: 0.1,
    ignore,
    counted: true,
    lossScale: 512,
  })),
  mixes: [{ logits: "f16", dlogits: "f16" }],
}];
