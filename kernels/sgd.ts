/**
 * The SGD update of `torch.optim.SGD` over one f32 tensor: a parameter, or a model's whole
 * parameter arena (`models/arena.ts`: every parameter, gradient and momentum buffer of a model in
 * one buffer each, so that the update of the whole model is one dispatch, or one per range of a
 * binding on huge models). One flat kernel (one thread per vec4, or per element), described once
 * with `defineKernel` (kernels/_kernel.ts).
 *
 * For mixed precision the update can also take a loss scaler's state (`lossScale`, see
 * `loss_scale.ts`: the gradient is divided by the scale, and the whole update is skipped when
 * the scaler found an Inf or a NaN) and write an f16 working copy of the updated f32 master
 * parameter (`half`) in the same pass: variants of the same kernel.
 *
 * Every term maps zeros to zeros (param, gradient and momentum 0 stay 0, and their copy is 0), so
 * the zero padding between the parameters of an arena stays zero.
 *
 * @module
 */

import { formatShape, type Tensor } from "../gpu/mod.ts";
import { floatDType } from "./_dtype.ts";
import { defineKernel, variantProduct } from "./_kernel.ts";
import { UPDATE_WG, updateMain, updateRanges, updateTailBindings, variantHas } from "./_update.ts";
import { checkLossScale } from "./loss_scale.ts";

/** Hyper-parameters of {@linkcode sgdUpdate}, named as in `torch.optim.SGD`. */
export interface SgdParams {
  /** Learning rate (>= 0). */
  readonly lr: number;
  /** Momentum factor (>= 0); default 0 (no momentum buffer). */
  readonly momentum?: number;
  /** Dampening of the momentum (>= 0); default 0. */
  readonly dampening?: number;
  /** L2 penalty added to the gradient: `grad + weightDecay * param` (>= 0); default 0. */
  readonly weightDecay?: number;
  /** Nesterov momentum (needs momentum > 0 and dampening 0); default false. */
  readonly nesterov?: boolean;
  /**
   * The first step of this momentum buffer: `buf = grad` instead of
   * `buf = momentum * buf + (1 - dampening) * grad` (PyTorch's lazily created buffer); default
   * false. With a zero-filled buffer and dampening 0 both give the same result.
   */
  readonly firstStep?: boolean;
}

/** The validated, defaulted hyper-parameters. */
interface Resolved {
  lr: number;
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
  firstStep: boolean;
}

/**
 * Validates SGD hyper-parameters as `torch.optim.SGD` does and fills in the defaults.
 *
 * @returns The hyper-parameters with every default filled in.
 * @throws {RangeError} for a negative or non-finite value, or nesterov without momentum or with
 * dampening.
 * @example
 * ```ts
 * import { checkSgd } from "@modern-cnn/webgpu/kernels";
 * checkSgd({ lr: 0.1, momentum: 0.9 }).dampening; // 0
 * ```
 */
export function checkSgd(p: SgdParams): Required<SgdParams> {
  const r: Resolved = {
    lr: p.lr,
    momentum: p.momentum ?? 0,
    dampening: p.dampening ?? 0,
    weightDecay: p.weightDecay ?? 0,
    nesterov: p.nesterov ?? false,
    firstStep: p.firstStep ?? false,
  };
  for (const k of ["lr", "momentum", "dampening", "weightDecay"] as const) {
    const v = r[k];
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
      throw new RangeError(`sgdUpdate: ${k} must be a finite number >= 0, got ${v}`);
    }
  }
  if (r.nesterov && (r.momentum <= 0 || r.dampening !== 0)) {
    throw new RangeError(
      `sgdUpdate: nesterov momentum requires momentum > 0 and dampening 0 (got momentum ` +
        `${r.momentum}, dampening ${r.dampening})`,
    );
  }
  return r;
}

/** The parts of the update's name for these hyper-parameters: `wd`, `m` or `m0`, `nesterov`. */
function _parts(r: Resolved): string[] {
  const parts: string[] = [];
  if (r.weightDecay > 0) parts.push("wd");
  if (r.momentum > 0) parts.push(r.firstStep ? "m0" : "m", ...(r.nesterov ? ["nesterov"] : []));
  return parts;
}

/** Which terms the update has, read from the parts of its name (see {@linkcode _parts}). */
interface Terms {
  readonly wd: boolean;
  readonly momentum: boolean;
  readonly firstStep: boolean;
  readonly nesterov: boolean;
}

function _terms(parts: readonly string[]): Terms {
  return {
    wd: parts.includes("wd"),
    momentum: parts.includes("m") || parts.includes("m0"),
    firstStep: parts.includes("m0"),
    nesterov: parts.includes("nesterov"),
  };
}

/**
 * The WGSL statements of the update over locals `param`, `grad`, `momentumBuf` (f32 or
 * `vec4<f32>`).
 */
function _bodyLines(t: Terms): string[] {
  // torch.optim.SGD (single-tensor path), in f32:
  //   d = grad (+ wd * param); buf = d (first step) | momentum * buf + (1 - dampening) * d;
  //   d = d + momentum * buf (nesterov) | buf; param = param + (-lr) * d.
  const lines = ["var d = grad;"];
  if (t.wd) lines.push("d = d + p.wd * param;");
  if (t.momentum) {
    lines.push(
      t.firstStep
        ? "momentumBuf = d;"
        : "momentumBuf = p.momentum * momentumBuf + p.oneMinusDampening * d;",
    );
    lines.push(t.nesterov ? "d = d + p.momentum * momentumBuf;" : "d = momentumBuf;");
  }
  lines.push("param = param + p.negLr * d;");
  return lines;
}

/**
 * The variants of the update: its terms (see {@linkcode _parts}), `scaled` (a loss scaler's state
 * is bound), `copy` (an f16 or f32 copy of the updated param is written) and the layout, `v4`
 * (one thread per 4 elements, vec4 bindings; every float buffer has room for the last, partial
 * vector) or `s` (one thread per element). The plain update is a variant without `scaled` and
 * `copy`.
 */
const VARIANTS = variantProduct(
  ["", "wd"],
  ["", "m", "m0"],
  ["", "nesterov"],
  ["", "scaled"],
  ["", "copy"],
  ["v4", "s"],
);
type Variant = typeof VARIANTS[number];
const has = variantHas;
const hasMomentum = (variant: string) => has("m")(variant) || has("m0")(variant);

/**
 * The update. `paramB`, `gradB` and `momB` are f32 (checked by {@linkcode sgdUpdate}); the copy
 * `halfB` is f16 or f32.
 */
const update = defineKernel({
  name: "sgd",
  doc: "one thread per vec4 (4 consecutive elements) with v4, else per element; flat index i = " +
    "gid.x + gid.y * nwg.x * WG over p.count vectors or elements (grid1d). The SGD update of " +
    "the f32 master param (wd: weight decay; m, m0: momentum, its first step; nesterov); " +
    "scaled: the gradient divided by the loss scale (lossScale[0], f32 bits) and the whole " +
    "update skipped (param and momentum untouched) when the scaler's found flag (lossScale[2]) " +
    "is set; copy: then halfB = H(param) is written, skipped step or not (one rounding).",
  params: { count: "u32", negLr: "f32", wd: "f32", momentum: "f32", oneMinusDampening: "f32" },
  bindings: {
    paramB: { type: "float", access: "read_write", vec4: has("v4") },
    gradB: { type: "float", access: "read", vec4: has("v4") },
    momB: {
      type: "float",
      access: "read_write",
      vec4: has("v4"),
      variants: VARIANTS.filter(hasMomentum),
    },
    ...updateTailBindings(VARIANTS),
  },
  variants: VARIANTS,
  workgroupSize: UPDATE_WG,
  body: ({ dtypes, variant }) => {
    const parts = variant.split("_");
    const t = _terms(parts);
    const [scaled, vec, half] = [parts.includes("scaled"), parts.includes("v4"), dtypes.halfB];
    const step = [
      scaled
        ? "let grad: T = gradB[i] * (1.0 / bitcast<f32>(lossScale[0]));"
        : "let grad = gradB[i];",
      ...(t.momentum
        ? [t.firstStep ? "var momentumBuf: T;" : "var momentumBuf: T = momB[i];"]
        : []),
      "{",
      ..._bodyLines(t).map((l) => `  ${l}`),
      "}",
      "paramB[i] = param;",
      ...(t.momentum ? ["momB[i] = momentumBuf;"] : []),
    ];
    return updateMain({ step, scaled, vec, half });
  },
});

/** Records the update over the validated tensors (see {@linkcode sgdUpdate}). */
function _record(
  r: Resolved,
  io: { param: Tensor; grad: Tensor; momentumBuf?: Tensor; half?: Tensor; lossScale?: Tensor },
): void {
  const floats: [string, Tensor][] = [["param", io.param], ["grad", io.grad]];
  if (io.momentumBuf) floats.push(["momentumBuf", io.momentumBuf]);
  if (io.half) floats.push(["half", io.half]);
  updateRanges("sgdUpdate", floats, io.lossScale, ({ layout, count, workgroups, at }) => {
    const variant = [
      ..._parts(r),
      ...(io.lossScale ? ["scaled"] : []),
      ...(io.half ? ["copy"] : []),
      layout,
    ].join("_") as Variant;
    update.dispatch({
      op: "sgdUpdate",
      variant,
      params: {
        count,
        negLr: -r.lr,
        wd: r.weightDecay,
        momentum: r.momentum,
        oneMinusDampening: 1 - r.dampening,
      },
      bindings: {
        paramB: at(io.param)!,
        gradB: at(io.grad)!,
        momB: at(io.momentumBuf),
        halfB: at(io.half),
        lossScale: io.lossScale,
      },
      workgroups,
    });
  });
}

/**
 * One `torch.optim.SGD` step for one parameter tensor, or a whole parameter arena (every
 * parameter of a model: one dispatch), in place: with `d = grad + weightDecay * param`, the
 * momentum buffer becomes `d` on the first step and `momentum * buf + (1 - dampening) * d`
 * afterwards; then `d = d + momentum * buf` (nesterov) or `d = buf`; finally `param -= lr * d`.
 * `param` and `momentumBuf` (required when momentum > 0, same size as `param`) are updated in
 * place; `grad` is read only. `param`, `grad` and `momentumBuf` are f32.
 *
 * Mixed precision (optional operands; without them the update is exactly the plain one):
 *
 * - `lossScale`, a loss scaler's state (`createLossScale`): `grad` holds the gradient of the
 *   scaled loss and is divided by the current scale (read on the GPU) before the update; when the
 *   scaler's found flag is set (`lossScaleCheck` saw an Inf or a NaN) the update is skipped:
 *   `param` and `momentumBuf` are left untouched. A skipped first step does not initialise the
 *   momentum buffer: use a zero-filled buffer (with dampening 0, `firstStep` then makes no
 *   difference).
 * - `half` (f16, or f32; same size as `param`) is OVERWRITTEN with the updated `param` rounded
 *   to its dtype (the working copy the f16 kernels read), also when the step is skipped, so that
 *   it always equals the rounded master value.
 *
 * @returns Nothing: the dispatch is recorded.
 * @throws {TypeError} for mismatched sizes or dtypes, a missing momentum buffer, operands that
 * share a buffer, or a `lossScale` that is not a scaler's state.
 * @throws {RangeError} for bad hyper-parameters (see {@linkcode checkSgd}).
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { sgdUpdate } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const param = gpu.tensor(new Float32Array([1, 2]), { shape: [2] });
 * const grad = gpu.tensor(new Float32Array([10, -10]), { shape: [2] });
 * const momentumBuf = gpu.zeros([2]);
 * sgdUpdate({ param, grad, momentumBuf }, { lr: 0.1, momentum: 0.9, firstStep: true });
 * console.log(await param.toArray()); // Float32Array [0, 3]
 * ```
 * @example Mixed precision: a scaled gradient and an f16 copy.
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { createLossScale, lossScaleCheck, sgdUpdate } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const lossScale = createLossScale(gpu, { initScale: 1024 });
 * const param = gpu.tensor(new Float32Array([1, 2]), { shape: [2] });
 * const grad = gpu.tensor(new Float32Array([1024, -1024]), { shape: [2] }); // scaled by 1024
 * const half = gpu.empty([2], { dtype: "f16" });
 * lossScaleCheck({ lossScale, grad });
 * sgdUpdate({ param, grad, half, lossScale }, { lr: 0.5 });
 * console.log(await half.toArray()); // Float16Array [0.5, 2.5]
 * ```
 */
export function sgdUpdate(
  io: { param: Tensor; grad: Tensor; momentumBuf?: Tensor; half?: Tensor; lossScale?: Tensor },
  p: SgdParams,
): void {
  const r = checkSgd(p);
  const tensors: Record<string, Tensor> = { param: io.param, grad: io.grad };
  if (r.momentum > 0) {
    if (!io.momentumBuf) {
      throw new TypeError(
        `sgdUpdate: momentum ${r.momentum} needs a momentumBuf for param of shape ` +
          `[${io.param.shape.join(", ")}]`,
      );
    }
    tensors.momentumBuf = io.momentumBuf;
  }
  // The master parameter, its gradient and momentum are f32 (f16 only for the copy `half`).
  for (const [name, t] of Object.entries(tensors)) {
    if (t.dtype !== "f32") {
      throw new TypeError(
        `sgdUpdate: ${name} must be f32, got ${formatShape(t.shape)} (${t.dtype})`,
      );
    }
  }
  const named: [string, Tensor | undefined][] = [
    ["grad", io.grad],
    ["momentumBuf", tensors.momentumBuf],
    ["half", io.half],
  ];
  if (io.half) floatDType("sgdUpdate", "half", io.half);
  for (const [name, t] of named) {
    if (t && t.size !== io.param.size) {
      throw new TypeError(
        `sgdUpdate: ${name} has shape ${formatShape(t.shape)} (${t.size} elements), param has ` +
          `shape ${formatShape(io.param.shape)} (${io.param.size} elements)`,
      );
    }
  }
  if (io.lossScale) checkLossScale("sgdUpdate", io.lossScale);
  _record(r, {
    param: io.param,
    grad: io.grad,
    momentumBuf: tensors.momentumBuf,
    half: io.half,
    lossScale: io.lossScale,
  });
}
