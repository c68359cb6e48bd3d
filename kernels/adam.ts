/**
 * The Adam and AdamW updates of `torch.optim.Adam` / `torch.optim.AdamW` (single-tensor path, no
 * amsgrad) over one f32 tensor: a parameter, or a model's whole parameter arena
 * (`models/arena.ts`), so that the update of the whole model is one dispatch (one per range of a
 * binding on huge models). One flat kernel (one thread per vec4, or per element), described once
 * with `defineKernel`, as `sgd.ts`.
 *
 * The step number `t` (from 1) is the number of updates applied, PyTorch's `state["step"]`.
 * Without a loss scaler it is the caller's `step`: the bias corrections `1 - beta^t` are computed
 * on the host in f64 (as PyTorch computes them, in Python floats) and travel with the dispatch's
 * uniform parameters, which every dispatch records anyway: no buffer is written or read back per
 * step. With a loss scaler's state (`lossScale`, see `loss_scale.ts`) the gradient is unscaled on
 * the GPU and the whole update is skipped when the scaler found an Inf or a NaN, as
 * `GradScaler.step` skips `optimizer.step()`: a skipped step must not advance `t` either, and
 * only the GPU knows which steps were skipped. So the caller's `step` then counts its steps,
 * skipped ones included (a trainer's step number + 1), and the kernel subtracts the steps the
 * scaler skipped before this one (the state's word 3, which `lossScaleUpdate` increments after
 * the update): `t = step - skipped`, and computes the bias corrections from it in f32
 * (`1 - beta^t = -expm1(t * ln(beta))`, `ln(beta)` from the host in f64, with a range reduction
 * by `ln 2` and a degree-8 polynomial: within a few f32 ulps of the host's f64 values, see
 * tests/optim_test.ts). The scaler must therefore have counted every skipped step among the
 * caller's: create it with the caller's first step, or resume it with the skipped count
 * (`createLossScale`'s `skippedSteps`).
 *
 * Every term maps zeros to zeros (param, gradient and both moments 0 stay 0), so the zero padding
 * between the parameters of an arena stays zero.
 *
 * @module
 */

import { formatShape, type Tensor } from "../gpu/mod.ts";
import { floatDType } from "./_dtype.ts";
import { defineKernel, variantProduct } from "./_kernel.ts";
import { UPDATE_WG, updateMain, updateRanges, updateTailBindings, variantHas } from "./_update.ts";
import { checkLossScale } from "./loss_scale.ts";

/** Hyper-parameters of {@linkcode adamUpdate}, named as in `torch.optim.Adam` / `AdamW`. */
export interface AdamParams {
  /** Learning rate (>= 0) of this step (a schedule's value). */
  readonly lr: number;
  /**
   * The step number, from 1 (the bias corrections are `1 - beta^step`). With a `lossScale`: the
   * caller's step number, skipped steps included; the steps the scaler skipped are subtracted on
   * the GPU (see the module documentation).
   */
  readonly step: number;
  /** `(beta1, beta2)` in [0, 1); default `[0.9, 0.999]` (PyTorch's). */
  readonly betas?: readonly [number, number];
  /** Added to the denominator (>= 0); default 1e-8 (PyTorch's). */
  readonly eps?: number;
  /**
   * Weight decay (>= 0): Adam's L2 penalty `grad + weightDecay * param`, or with `decoupled`
   * AdamW's `param *= 1 - lr * weightDecay`; default 0 (Adam), 0.01 with `decoupled` (AdamW's
   * default).
   */
  readonly weightDecay?: number;
  /** AdamW: decoupled weight decay; default false (Adam). */
  readonly decoupled?: boolean;
}

/**
 * Validates Adam / AdamW hyper-parameters as PyTorch does and fills in the defaults.
 *
 * @returns The hyper-parameters with every default filled in.
 * @throws {RangeError} for a negative or non-finite value, a beta outside [0, 1), or a step that
 * is not an integer >= 1.
 * @example
 * ```ts
 * import { checkAdam } from "@modern-cnn/webgpu/kernels";
 * checkAdam({ lr: 1e-3, step: 1, decoupled: true }).weightDecay; // 0.01
 * ```
 */
export function checkAdam(p: AdamParams): Required<AdamParams> {
  const decoupled = p.decoupled ?? false;
  const r = {
    lr: p.lr,
    step: p.step,
    betas: p.betas ?? [0.9, 0.999] as const,
    eps: p.eps ?? 1e-8,
    weightDecay: p.weightDecay ?? (decoupled ? 0.01 : 0),
    decoupled,
  };
  const op = decoupled ? "adamwUpdate" : "adamUpdate";
  for (const k of ["lr", "eps", "weightDecay"] as const) {
    const v = r[k];
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
      throw new RangeError(`${op}: ${k} must be a finite number >= 0, got ${v}`);
    }
  }
  r.betas.forEach((b, i) => {
    if (typeof b !== "number" || !(b >= 0 && b < 1)) {
      throw new RangeError(`${op}: betas[${i}] must be in [0, 1), got ${b}`);
    }
  });
  if (!Number.isInteger(r.step) || r.step < 1) {
    throw new RangeError(`${op}: step must be an integer >= 1, got ${r.step}`);
  }
  return r;
}

/**
 * The variants: weight decay (`wd`: Adam's L2 penalty; `dwd`: AdamW's decoupled decay), `scaled`
 * (a loss scaler's state is bound), `copy` (an f16 or f32 copy of the updated param is written)
 * and the layout, `v4` (one thread per 4 elements) or `s` (one thread per element).
 */
const VARIANTS = variantProduct(["", "wd", "dwd"], ["", "scaled"], ["", "copy"], ["v4", "s"]);
type Variant = typeof VARIANTS[number];
const has = variantHas;

/** ln 2 in two parts, the first with 15 significant bits (`n * LN2_HI` is exact for |n| < 2^9). */
const LN2_HI = 0.693145751953125;
const LN2_LO = Math.fround(Math.LN2 - LN2_HI);

/** A number as a WGSL f32 literal (abstract float, rounded to f32 once). */
function _lit(v: number): string {
  const s = String(v);
  return /[.e]/.test(s) ? s : `${s}.0`;
}

/**
 * WGSL of the loss-scaled path's bias corrections: `adamCorrections(t, lr, lnBeta1, lnBeta2)`
 * returns `(-lr / (1 - beta1^t), sqrt(1 - beta2^t))` from `t` (an f32 integer >= 1) and
 * `ln(beta)` (from the host in f64; -200 or above). `1 - beta^t = -expm1(x)`, `x = t * ln(beta)`:
 * `x = n ln 2 + r` (|r| <= ln 2 / 2, Cody-Waite), `expm1(r)` by its Taylor polynomial of degree 8
 * (truncation below 2e-8 relative) and `1 - 2^n (1 + expm1(r)) = (1 - 2^n) - 2^n expm1(r)`,
 * which has no cancellation; no built-in `exp`/`pow` (WGSL allows them thousands of ulps).
 *
 * @example
 * ```ts
 * import { _ADAM_CORRECTIONS_WGSL } from "./adam.ts";
 * _ADAM_CORRECTIONS_WGSL.includes("fn adamCorrections"); // true
 * ```
 */
export const _ADAM_CORRECTIONS_WGSL: string = (() => {
  let poly = _lit(1 / 40320);
  for (const k of [7, 6, 5, 4, 3, 2]) {
    let f = 1;
    for (let j = 2; j <= k; j++) f *= j;
    poly = `${_lit(1 / f)} + r * (${poly})`;
  }
  return `fn oneMinusPow(t: f32, lnBeta: f32) -> f32 {
  let x = t * lnBeta;
  if (x < -100.0) { return 1.0; }
  let n = round(x * ${_lit(1 / Math.LN2)});
  let r = (x - n * ${_lit(LN2_HI)}) - n * ${_lit(LN2_LO)};
  let q = r * (1.0 + r * (${poly}));
  let s = ldexp(1.0, i32(n));
  return (1.0 - s) - s * q;
}

fn adamCorrections(t: f32, lr: f32, lnBeta1: f32, lnBeta2: f32) -> vec2<f32> {
  return vec2<f32>(-lr / oneMinusPow(t, lnBeta1), sqrt(oneMinusPow(t, lnBeta2)));
}
`;
})();

/** The update; `paramB`, `gradB`, `avgB` and `sqB` are f32, the copy `halfB` f16 or f32. */
const update = defineKernel({
  name: "adam",
  doc: "one thread per vec4 (4 consecutive elements) with v4, else per element; flat index i = " +
    "gid.x + gid.y * nwg.x * WG over p.count vectors or elements (grid1d). The Adam update of " +
    "the f32 master param (wd: L2 decay added to the gradient; dwd: AdamW's decoupled decay, " +
    "param *= p.decay first), exp_avg and exp_avg_sq in place; the bias corrections arrive in " +
    "p (negStepSize = -lr / (1 - beta1^t), bc2Sqrt = sqrt(1 - beta2^t)); scaled: the gradient " +
    "divided by the loss scale (lossScale[0], f32 bits) and the whole update skipped when the " +
    "scaler's found flag (lossScale[2]) is set; t = p.step - lossScale[3] (the steps the scaler " +
    "skipped; at least 1) and the corrections computed from it (adamCorrections: p.lr and " +
    "p.lnBeta1/2 = ln(beta)); copy: then halfB = H(param) is written.",
  params: {
    count: "u32",
    negStepSize: "f32",
    bc2Sqrt: "f32",
    eps: "f32",
    beta1: "f32",
    oneMinusBeta1: "f32",
    beta2: "f32",
    oneMinusBeta2: "f32",
    wd: "f32",
    decay: "f32",
    step: "u32",
    lr: "f32",
    lnBeta1: "f32",
    lnBeta2: "f32",
  },
  bindings: {
    paramB: { type: "float", access: "read_write", vec4: has("v4") },
    gradB: { type: "float", access: "read", vec4: has("v4") },
    avgB: { type: "float", access: "read_write", vec4: has("v4") },
    sqB: { type: "float", access: "read_write", vec4: has("v4") },
    ...updateTailBindings(VARIANTS),
  },
  variants: VARIANTS,
  workgroupSize: UPDATE_WG,
  body: ({ dtypes, variant }) => {
    const parts = variant.split("_");
    const [scaled, vec, half] = [parts.includes("scaled"), parts.includes("v4"), dtypes.halfB];
    // torch.optim.Adam / AdamW (_single_tensor_adam[w]) in f32, op for op.
    const step = [
      ...(scaled
        ? [
          // The updates applied so far + 1: the caller's steps less the scaler's skipped ones.
          "let t = max(p.step, lossScale[3] + 1u) - lossScale[3];",
          "let c = adamCorrections(f32(t), p.lr, p.lnBeta1, p.lnBeta2);",
          "let negStepSize = c.x;",
          "let bc2Sqrt = c.y;",
          "var grad: T = gradB[i] * (1.0 / bitcast<f32>(lossScale[0]));",
        ]
        : [
          "let negStepSize = p.negStepSize;",
          "let bc2Sqrt = p.bc2Sqrt;",
          "var grad: T = gradB[i];",
        ]),
      ...(parts.includes("wd") ? ["grad = grad + p.wd * param;"] : []),
      ...(parts.includes("dwd") ? ["param = param * p.decay;"] : []),
      "let m: T = avgB[i] * p.beta1 + grad * p.oneMinusBeta1;",
      "let v: T = sqB[i] * p.beta2 + p.oneMinusBeta2 * grad * grad;",
      "let denom = sqrt(v) / bc2Sqrt + p.eps;",
      "param = param + negStepSize * (m / denom);",
      "paramB[i] = param;",
      "avgB[i] = m;",
      "sqB[i] = v;",
    ];
    return `${scaled ? _ADAM_CORRECTIONS_WGSL : ""}${updateMain({ step, scaled, vec, half })}`;
  },
});

/** The operands of {@linkcode adamUpdate}. */
export interface AdamIo {
  /** f32 parameter (or arena), updated in place. */
  readonly param: Tensor;
  /** f32 gradient, read only. */
  readonly grad: Tensor;
  /** f32 first moment (`exp_avg`), updated in place; zero before the first step. */
  readonly expAvg: Tensor;
  /** f32 second moment (`exp_avg_sq`), updated in place; zero before the first step. */
  readonly expAvgSq: Tensor;
  /** f16 or f32 copy of the updated param, OVERWRITTEN (also when the step is skipped). */
  readonly half?: Tensor;
  /** A loss scaler's state: the gradient is unscaled, the step skipped on Inf / NaN. */
  readonly lossScale?: Tensor;
}

/**
 * One `torch.optim.Adam` (or, with `decoupled`, `torch.optim.AdamW`) step for one parameter
 * tensor or a whole parameter arena (one dispatch), in place: with `g = grad` (Adam with weight
 * decay: `+ weightDecay * param`; AdamW: `param *= 1 - lr * weightDecay` first),
 * `expAvg = beta1 * expAvg + (1 - beta1) * g`, `expAvgSq = beta2 * expAvgSq + (1 - beta2) * g²`,
 * `param -= lr / (1 - beta1^step) * expAvg / (sqrt(expAvgSq) / sqrt(1 - beta2^step) + eps)`.
 * The moments start at zero (PyTorch's lazily created state); `step` counts from 1.
 *
 * Mixed precision as `sgdUpdate`: `lossScale` unscales the gradient and skips the whole update
 * on an Inf / NaN; `half` receives the rounded updated parameter.
 *
 * @returns Nothing: the dispatch is recorded.
 * @throws {TypeError} for mismatched sizes or dtypes, operands that share a buffer, or a
 * `lossScale` that is not a scaler's state.
 * @throws {RangeError} for bad hyper-parameters (see {@linkcode checkAdam}).
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { adamUpdate } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const param = gpu.tensor(new Float32Array([1, 2]), { shape: [2] });
 * const grad = gpu.tensor(new Float32Array([10, -10]), { shape: [2] });
 * const [expAvg, expAvgSq] = [gpu.zeros([2]), gpu.zeros([2])];
 * adamUpdate({ param, grad, expAvg, expAvgSq }, { lr: 0.1, step: 1 });
 * console.log(await param.toArray()); // about [0.9, 2.1]: the first step moves each by lr
 * ```
 */
export function adamUpdate(io: AdamIo, p: AdamParams): void {
  const r = checkAdam(p);
  const op = r.decoupled ? "adamwUpdate" : "adamUpdate";
  const named: [string, Tensor][] = [
    ["param", io.param],
    ["grad", io.grad],
    ["expAvg", io.expAvg],
    ["expAvgSq", io.expAvgSq],
  ];
  for (const [name, t] of named) {
    if (t.dtype !== "f32") {
      throw new TypeError(`${op}: ${name} must be f32, got ${formatShape(t.shape)} (${t.dtype})`);
    }
  }
  if (io.half) {
    floatDType(op, "half", io.half);
    named.push(["half", io.half]);
  }
  for (const [name, t] of named.slice(1)) {
    if (t.size !== io.param.size) {
      throw new TypeError(
        `${op}: ${name} has shape ${formatShape(t.shape)} (${t.size} elements), param has ` +
          `shape ${formatShape(io.param.shape)} (${io.param.size} elements)`,
      );
    }
  }
  if (io.lossScale) {
    checkLossScale(op, io.lossScale);
    named.push(["lossScale", io.lossScale]);
  }
  const wd = r.weightDecay > 0 ? (r.decoupled ? "dwd" : "wd") : "";
  const floats = named.filter(([name]) => name !== "lossScale") as [string, Tensor][];
  // The bias corrections in f64, as PyTorch's Python floats: 1 - beta^t.
  const [beta1, beta2] = r.betas;
  const bc1 = 1 - beta1 ** r.step, bc2 = 1 - beta2 ** r.step;
  updateRanges(op, floats, io.lossScale, ({ layout, count, workgroups, at }) => {
    const variant = [
      ...(wd ? [wd] : []),
      ...(io.lossScale ? ["scaled"] : []),
      ...(io.half ? ["copy"] : []),
      layout,
    ].join("_") as Variant;
    update.dispatch({
      op,
      variant,
      params: {
        count,
        negStepSize: -r.lr / bc1,
        bc2Sqrt: Math.sqrt(bc2),
        eps: r.eps,
        beta1,
        oneMinusBeta1: 1 - beta1,
        beta2,
        oneMinusBeta2: 1 - beta2,
        wd: r.weightDecay,
        decay: 1 - r.lr * r.weightDecay,
        step: Math.min(r.step, 0xffffffff),
        lr: r.lr,
        lnBeta1: Math.max(Math.log(beta1), -200),
        lnBeta2: Math.max(Math.log(beta2), -200),
      },
      bindings: {
        paramB: at(io.param)!,
        gradB: at(io.grad)!,
        avgB: at(io.expAvg)!,
        sqB: at(io.expAvgSq)!,
        halfB: at(io.half),
        lossScale: io.lossScale,
      },
      workgroups,
    });
  });
}
