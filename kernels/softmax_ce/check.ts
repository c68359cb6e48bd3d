/**
 * The parameters of softmax cross-entropy and of the accuracy count, and their validation
 * ({@linkcode checkSoftmaxCrossEntropy}): sizes, label smoothing, every tensor's size and dtype,
 * and which tensors may share a buffer (only `dlogits` with `logits`, in place).
 *
 * @module
 */

import { formatShape, type Tensor } from "../../gpu/mod.ts";
import { floatDType } from "../_dtype.ts";
import { checkLossScale } from "../loss_scale.ts";

/** Params of `softmaxCrossEntropy`. */
export interface SoftmaxCrossEntropyParams {
  /** Rows (batch size). */
  readonly n: number;
  /** Classes. */
  readonly c: number;
  /** Label smoothing `eps` in [0, 1]; default 0. */
  readonly labelSmoothing?: number;
}

/** Params of `accuracyCount`. */
export interface AccuracyParams {
  /** Rows (batch size). */
  readonly n: number;
  /** Classes. */
  readonly c: number;
}

function describe(t: Tensor): string {
  return `${formatShape(t.shape)} (${t.dtype})`;
}

/**
 * Validates the sizes, dtypes and params of `softmaxCrossEntropy` (`index.ts`) /
 * `accuracyCount`; returns the logits shape `[n, c]`.
 *
 * @returns `[n, c]`.
 * @throws {RangeError} for bad `n`, `c` or label smoothing.
 * @throws {TypeError} for mismatched sizes or dtypes.
 * @example
 * ```ts
 * import { checkSoftmaxCrossEntropy } from "@modern-cnn/webgpu/kernels";
 * checkSoftmaxCrossEntropy("softmaxCrossEntropy", { n: 256, c: 10 }); // [256, 10]
 * ```
 */
export function checkSoftmaxCrossEntropy(
  op: string,
  p: SoftmaxCrossEntropyParams,
  io?: {
    dlogits?: Tensor;
    lossSum?: Tensor;
    correct: Tensor;
    logits: Tensor;
    labels: Tensor;
    lossScale?: Tensor;
    validRows?: Tensor;
  },
): [number, number] {
  if (!Number.isInteger(p.n) || p.n < 0) {
    throw new RangeError(`${op}: n must be an integer >= 0, got ${p.n}`);
  }
  if (!Number.isInteger(p.c) || p.c < 1) {
    throw new RangeError(`${op}: c must be an integer >= 1, got ${p.c}`);
  }
  const eps = p.labelSmoothing ?? 0;
  if (typeof eps !== "number" || !(eps >= 0 && eps <= 1)) {
    throw new RangeError(`${op}: labelSmoothing must be in [0, 1], got ${eps}`);
  }
  if (io) {
    const { logits, labels, correct } = io;
    const nc = p.n * p.c;
    floatDType(op, "logits", logits);
    if (logits.size !== nc) {
      throw new TypeError(
        `${op}: logits has shape ${describe(logits)}, expected ${logits.dtype} [${p.n}, ${p.c}]`,
      );
    }
    if (labels.dtype !== "i32" || labels.size !== p.n) {
      throw new TypeError(
        `${op}: labels has shape ${describe(labels)}, expected i32 [${p.n}] for logits ` +
          formatShape(logits.shape),
      );
    }
    if (correct.dtype !== "u32" || correct.size !== 1) {
      throw new TypeError(`${op}: correct has shape ${describe(correct)}, expected u32 [1]`);
    }
    if (io.dlogits) {
      floatDType(op, "dlogits", io.dlogits);
      if (io.dlogits.size !== nc) {
        throw new TypeError(
          `${op}: dlogits has shape ${describe(io.dlogits)}, logits has shape ` +
            `${formatShape(logits.shape)}`,
        );
      }
      if (
        io.dlogits.overlaps(logits) &&
        (!io.dlogits.sameStart(logits) || io.dlogits.dtype !== logits.dtype)
      ) {
        throw new TypeError(
          `${op}: dlogits ${describe(io.dlogits)} shares its buffer with logits ` +
            `${describe(logits)}: in place needs one dtype`,
        );
      }
    }
    if (io.lossSum && (io.lossSum.dtype !== "f32" || io.lossSum.size !== 1)) {
      throw new TypeError(`${op}: lossSum has shape ${describe(io.lossSum)}, expected f32 [1]`);
    }
    if (io.validRows && (io.validRows.dtype !== "u32" || io.validRows.size !== 1)) {
      throw new TypeError(
        `${op}: validRows has shape ${describe(io.validRows)}, expected u32 [1]`,
      );
    }
    const outs = [io.dlogits, io.lossSum, correct, io.validRows].filter((t): t is Tensor => !!t);
    const shared = outs.some((t, i) =>
      outs.some((u, j) => j > i && t.overlaps(u)) || t.overlaps(labels) ||
      (t !== io.dlogits && t.overlaps(logits))
    );
    if (shared) {
      throw new TypeError(
        `${op}: outputs must not share buffers with each other or with the inputs ` +
          "(only dlogits may be the same tensor as logits)",
      );
    }
    if (io.lossScale) {
      checkLossScale(op, io.lossScale);
      const ls = io.lossScale;
      if ([...outs, logits, labels].some((t) => t.overlaps(ls))) {
        throw new TypeError(`${op}: lossScale must not share a buffer with another operand`);
      }
    }
  }
  return [p.n, p.c];
}
