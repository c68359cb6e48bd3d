/**
 * The SGD update of `torch.optim.SGD`, one parameter tensor per dispatch, fused into one flat
 * elementwise kernel (one thread per vec4, see {@linkcode elementwiseMap}).
 *
 * @module
 */

import type { Tensor } from "../gpu/mod.ts";
import { elementwiseMap, type ElementwiseMapKernel, type MapAccess } from "./elementwise.ts";

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

function kernelFor(r: Resolved): ElementwiseMapKernel {
  const useMomentum = r.momentum > 0;
  const wd = r.weightDecay > 0;
  const name = `sgd${wd ? "_wd" : ""}${
    useMomentum ? (r.firstStep ? "_m0" : "_m") + (r.nesterov ? "_nesterov" : "") : ""
  }`;
  const hit = kernels.get(name);
  if (hit) return hit;
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

/**
 * One `torch.optim.SGD` step for one parameter tensor, in place: with `d = grad + weightDecay *
 * param`, the momentum buffer becomes `d` on the first step and `momentum * buf + (1 -
 * dampening) * d` afterwards; then `d = d + momentum * buf` (nesterov) or `d = buf`; finally
 * `param -= lr * d`. `param` and `momentumBuf` (required when momentum > 0, same size as
 * `param`) are updated in place; `grad` is read only.
 *
 * @returns Nothing: the dispatch is recorded.
 * @throws {TypeError} for mismatched sizes or dtypes, or a missing momentum buffer.
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
 */
export function sgdUpdate(
  io: { param: Tensor; grad: Tensor; momentumBuf?: Tensor },
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
  elementwiseMap("sgdUpdate", kernelFor(r), tensors, [
    -r.lr,
    r.weightDecay,
    r.momentum,
    1 - r.dampening,
  ]);
}
