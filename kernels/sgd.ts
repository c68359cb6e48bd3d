/**
 * The SGD update of `torch.optim.SGD`, one parameter tensor per dispatch, fused into one flat
 * elementwise kernel (one thread per vec4, see {@linkcode elementwiseMap}).
 *
 * For mixed precision the update can also take a loss scaler's state (`lossScale`, see
 * `loss_scale.ts`: the gradient is divided by the scale, and the whole update is skipped when
 * the scaler found an Inf or a NaN) and write an f16 working copy of the updated f32 master
 * parameter (`half`) in the same pass; that variant is a kernel of its own (below), the plain
 * update is unchanged.
 *
 * @module
 */

import { type Binding, formatShape, grid1d, type KernelSpec, type Tensor } from "../gpu/mod.ts";
import { unitRanges } from "./_binding.ts";
import {
  dtypeTag,
  floatBytes,
  type FloatDType,
  floatDType,
  storageType,
  vec4Bytes,
  wgslEnable,
} from "./_dtype.ts";
import { ParamsWriter } from "./_params.ts";
import { elementwiseMap, type ElementwiseMapKernel, type MapAccess } from "./elementwise.ts";
import { checkLossScale } from "./loss_scale.ts";

/** Threads per workgroup of the mixed-precision update kernel. */
const WG = 256;

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

const kernels = new Map<string, ElementwiseMapKernel>();

/** The name of the update for these hyper-parameters (its specialization). */
function _baseName(r: Resolved): string {
  const useMomentum = r.momentum > 0;
  const wd = r.weightDecay > 0;
  return `sgd${wd ? "_wd" : ""}${
    useMomentum ? (r.firstStep ? "_m0" : "_m") + (r.nesterov ? "_nesterov" : "") : ""
  }`;
}

/**
 * The WGSL statements of the update over locals `param`, `grad`, `momentumBuf` (f32 or
 * `vec4<f32>`), shared by both kernels.
 */
function _bodyLines(r: Resolved): string[] {
  const useMomentum = r.momentum > 0;
  const wd = r.weightDecay > 0;
  // torch.optim.SGD (single-tensor path), in f32:
  //   d = grad (+ wd * param); buf = d (first step) | momentum * buf + (1 - dampening) * d;
  //   d = d + momentum * buf (nesterov) | buf; param = param + (-lr) * d.
  const lines = ["var d = grad;"];
  if (wd) lines.push("d = d + p.wd * param;");
  if (useMomentum) {
    lines.push(
      r.firstStep
        ? "momentumBuf = d;"
        : "momentumBuf = p.momentum * momentumBuf + p.oneMinusDampening * d;",
    );
    lines.push(r.nesterov ? "d = d + p.momentum * momentumBuf;" : "d = momentumBuf;");
  }
  lines.push("param = param + p.negLr * d;");
  return lines;
}

function kernelFor(r: Resolved): ElementwiseMapKernel {
  const useMomentum = r.momentum > 0;
  const name = _baseName(r);
  const hit = kernels.get(name);
  if (hit) return hit;
  const lines = _bodyLines(r);
  const operands: { name: string; access: MapAccess }[] = [
    { name: "param", access: "readwrite" },
    { name: "grad", access: "read" },
  ];
  if (useMomentum) {
    operands.push({
      name: "momentumBuf",
      access: r.firstStep ? "write" : "readwrite",
    });
  }
  const k: ElementwiseMapKernel = {
    name,
    operands,
    uniforms: ["negLr", "wd", "momentum", "oneMinusDampening"],
    body: lines.join("\n    "),
  };
  kernels.set(name, k);
  return k;
}

const mixedSpecs = new Map<string, KernelSpec>();

/**
 * The update with a loss scaler and/or an f16 copy. `vec`: one thread per 4 elements
 * (`vec4<f32>` / `vec4<f16>` bindings), else one per element.
 */
function _mixedSpec(
  r: Resolved,
  o: { scaled: boolean; half: FloatDType | null; vec: boolean },
): KernelSpec {
  const useMomentum = r.momentum > 0;
  const tag = o.half ? dtypeTag({ half: o.half }) : "";
  const name = `${_baseName(r)}_mp${o.scaled ? "_scaled" : ""}${o.half ? "_copy" : ""}${tag}_${
    o.vec ? "v4" : "s"
  }`;
  const hit = mixedSpecs.get(name);
  if (hit) return hit;
  const T = o.vec ? "vec4<f32>" : "f32";
  const H = o.half ? storageType(o.half, o.vec) : "";
  const decls = [
    `@group(0) @binding(1) var<storage, read_write> paramB: array<T>;`,
    `@group(0) @binding(2) var<storage, read> gradB: array<T>;`,
  ];
  if (useMomentum) {
    decls.push(`@group(0) @binding(${decls.length + 1}) var<storage, read_write> momB: array<T>;`);
  }
  if (o.half) {
    decls.push(`@group(0) @binding(${decls.length + 1}) var<storage, read_write> halfB: array<H>;`);
  }
  if (o.scaled) {
    decls.push(
      `@group(0) @binding(${
        decls.length + 1
      }) var<storage, read> lossScale: array<u32>; // 0: scale bits, 2: found flag`,
    );
  }
  const step = [
    o.scaled
      ? "let grad: T = gradB[i] * (1.0 / bitcast<f32>(lossScale[0]));"
      : "let grad = gradB[i];",
    ...(useMomentum ? [r.firstStep ? "var momentumBuf: T;" : "var momentumBuf: T = momB[i];"] : []),
    "{",
    ..._bodyLines(r).map((l) => `  ${l}`),
    "}",
    "paramB[i] = param;",
    ...(useMomentum ? ["momB[i] = momentumBuf;"] : []),
  ];
  const body = o.scaled
    ? `if (lossScale[2] == 0u) {\n    ${step.join("\n    ")}\n  }`
    : step.join("\n  ");
  const code = `${wgslEnable(o.half ? [o.half] : [])}// ${name}: one thread per ${
    o.vec ? "vec4 (4 consecutive elements)" : "element"
  }; flat index i = gid.x + gid.y * nwg.x * WG over
// p.count ${o.vec ? "vectors" : "elements"} (grid1d). The SGD update of the f32 master param${
    o.scaled
      ? ", with the gradient\n// divided by the loss scale (lossScale[0], f32 bits) and the whole update skipped (param and\n// momentum untouched) when the scaler's found flag (lossScale[2]) is set"
      : ""
  }${
    o.half
      ? `;\n// then the ${o.half} copy halfB = ${o.half}(param) is written, skipped step or not (one rounding)`
      : ""
  }.
alias T = ${T};${o.half ? `\nalias H = ${H};` : ""}
const WG = ${WG}u;
struct Params { count: u32, negLr: f32, wd: f32, momentum: f32, oneMinusDampening: f32 }
@group(0) @binding(0) var<uniform> p: Params;
${decls.join("\n")}
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * WG;
  if (i >= p.count) { return; }
  var param: T = paramB[i];
  ${body}${o.half ? "\n  halfB[i] = H(param);" : ""}
}
`;
  const sp = { name, code };
  mixedSpecs.set(name, sp);
  return sp;
}

/** Records the mixed-precision variant over the validated tensors (see {@linkcode sgdUpdate}). */
function _mixedUpdate(
  r: Resolved,
  io: { param: Tensor; grad: Tensor; momentumBuf?: Tensor; half?: Tensor; lossScale?: Tensor },
): void {
  const op = "sgdUpdate";
  const n = io.param.size;
  const half = io.half ? floatDType(op, "half", io.half) : null;
  const floats: [string, Tensor][] = [["param", io.param], ["grad", io.grad]];
  if (io.momentumBuf) floats.push(["momentumBuf", io.momentumBuf]);
  if (io.half) floats.push(["half", io.half]);
  // Every buffer is bound once, and at least one binding is written: no two operands may share.
  const all = [...floats, ...(io.lossScale ? [["lossScale", io.lossScale] as const] : [])];
  for (let a = 0; a < all.length; a++) {
    for (let b = a + 1; b < all.length; b++) {
      if (all[a][1].buffer === all[b][1].buffer) {
        throw new TypeError(
          `${op}: ${all[a][0]} ${formatShape(all[a][1].shape)} and ${all[b][0]} ` +
            `${formatShape(all[b][1].shape)} share a buffer`,
        );
      }
    }
  }
  if (n === 0) return;
  // vec4 when every float binding has room for the last, partial vector (the lanes past the end
  // compute on the buffer's slack, never read); else the scalar path.
  const vec = floats.every(([, t]) => t.buffer.size >= vec4Bytes(t));
  const spec = _mixedSpec(r, { scaled: io.lossScale !== undefined, half, vec });
  const gpu = io.param.gpu;
  // Range starts are multiples of the binding offset alignment for 2-byte elements (hence for
  // 4-byte ones) and of 4: every range starts at element 0 (vector 0) of its bindings.
  const quantum = Math.max(4, gpu.limits.minStorageBufferOffsetAlignment / 2);
  const bind = (t: Tensor, e0: number, count: number): Binding => {
    const bytes = floatBytes(t.dtype as FloatDType);
    const size = vec ? vec4Bytes(t, count) : Math.ceil((count * bytes) / 4) * 4;
    return { buffer: t.buffer, offset: e0 * bytes, size };
  };
  for (const [e0, e1] of unitRanges(op, gpu, n, 1, quantum)) {
    const count = vec ? Math.ceil((e1 - e0) / 4) : e1 - e0;
    const params = new ParamsWriter().u32(count).f32(-r.lr).f32(r.weightDecay).f32(r.momentum)
      .f32(1 - r.dampening).bytes();
    const bindings: Binding[] = floats.map(([, t]) => bind(t, e0, e1 - e0));
    if (io.lossScale) bindings.push(io.lossScale);
    gpu.dispatch(spec, { params, bindings, workgroups: grid1d(count, WG) });
  }
}

/**
 * One `torch.optim.SGD` step for one parameter tensor, in place: with `d = grad + weightDecay *
 * param`, the momentum buffer becomes `d` on the first step and `momentum * buf + (1 -
 * dampening) * d` afterwards; then `d = d + momentum * buf` (nesterov) or `d = buf`; finally
 * `param -= lr * d`. `param` and `momentumBuf` (required when momentum > 0, same size as
 * `param`) are updated in place; `grad` is read only. `param`, `grad` and `momentumBuf` are f32.
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
 * share a buffer (mixed precision), or a `lossScale` that is not a scaler's state.
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
  if (!io.half && !io.lossScale) {
    elementwiseMap("sgdUpdate", kernelFor(r), tensors, [
      -r.lr,
      r.weightDecay,
      r.momentum,
      1 - r.dampening,
    ]);
    return;
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
  _mixedUpdate(r, {
    param: io.param,
    grad: io.grad,
    momentumBuf: tensors.momentumBuf,
    half: io.half,
    lossScale: io.lossScale,
  });
}
