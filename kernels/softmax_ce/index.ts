/**
 * Fused softmax cross-entropy (`nn.CrossEntropyLoss(reduction="mean", label_smoothing=eps)`)
 * with its gradient, the summed loss and the count of correct predictions, plus the eval-time
 * accuracy count.
 *
 * The family, one file per part:
 * - `index.ts` (this module): the entry points, which check their tensors, plan the call and
 *   record the plan;
 * - `check.ts`: the parameters and their validation (`checkSoftmaxCrossEntropy`);
 * - `plan.ts`: `planSoftmaxCe`, the pure planner: rows per workgroup of 256 threads (as many as
 *   keep each thread's loops, about `3c` iterations per row, well under llvmpipe's silent cap of
 *   65535 loop iterations per invocation), ranges of rows for logits larger than one storage
 *   binding, and whether a second pass adds the workgroups' partial sums;
 * - `kernels.ts`: the per-row kernel (each workgroup first counts the valid labels of all rows,
 *   the mean's divisor; then thread `t` handles rows `t, t + WG, ...` of its block, numerically
 *   stable: max subtraction, log-sum-exp; then a tree reduction of the loss and hit counts;
 *   with a single workgroup, e.g. the classifier head of the seed models, up to ~120k rows of 10
 *   classes, thread 0 adds the sums to `lossSum` and `correct`), the final pass (WGSL has no
 *   float atomics), and their recorder. The summation order is fixed, so results are
 *   deterministic. At most 16384 classes.
 *
 * Labels outside `[0, c)` (e.g. -100, PyTorch's default `ignore_index`) are ignored: their row
 * gets a zero gradient, adds 0 to the loss and is never counted correct, and the mean is taken
 * over the other rows, as PyTorch's `reduction="mean"`: the kernel counts them on the GPU (no
 * readback, no upload), and an all-ignored batch gets a zero gradient (PyTorch's too; its loss,
 * `0 / 0`, is NaN, as `lossSum / validRows` is).
 *
 * Logits and dlogits are f32 or f16, each independently; the arithmetic is f32 (f16 logits are
 * converted on load, f16 gradients rounded once on store), the sums `lossSum` (f32) and
 * `correct` (u32) are unchanged. With a loss scaler's state (`lossScale`, see `loss_scale.ts`)
 * the gradient is multiplied by the current scale, read on the GPU, before it is rounded.
 *
 * @module
 */

import type { Tensor } from "../../gpu/mod.ts";
import { adapterProfile } from "../_adapter.ts";
import { bindingLimit } from "../_binding.ts";
import {
  type AccuracyParams,
  checkSoftmaxCrossEntropy,
  type SoftmaxCrossEntropyParams,
} from "./check.ts";
import { recordSoftmaxCe } from "./kernels.ts";
import { planSoftmaxCe, type SoftmaxCePlan, type SoftmaxCeProblem } from "./plan.ts";

export {
  type AccuracyParams,
  checkSoftmaxCrossEntropy,
  type SoftmaxCrossEntropyParams,
} from "./check.ts";

/** The plan of a call on `t`'s device. */
function plan(problem: SoftmaxCeProblem, t: Tensor): SoftmaxCePlan {
  return planSoftmaxCe(problem, adapterProfile(t.gpu), bindingLimit(t.gpu));
}

/**
 * Fused, numerically stable softmax cross-entropy over logits `[n, c]` (f32 or f16) and labels
 * `[n]` (i32), as `torch.nn.CrossEntropyLoss(label_smoothing=eps)` with mean reduction:
 *
 * - `dlogits` (f32 or f16 `[n, c]`) is OVERWRITTEN with `(softmax(logits) - target) / m`, where
 *   `target = (1 - eps) * onehot(label) + eps / c` and `m` is the number of rows whose label is
 *   in `[0, c)` (all `n` unless some are ignored); it may be the same tensor as `logits`; with
 *   `lossScale` (a loss scaler's state, see `createLossScale`) it is multiplied by the
 *   current scale, read on the GPU (the gradient of the scaled loss), before it is stored;
 * - `lossSum` (f32 `[1]`) is ACCUMULATED: `+=` the sum over rows of the per-row loss (the mean
 *   loss of the step is `lossSum / m`; never scaled);
 * - `correct` (u32 `[1]`) is ACCUMULATED: `+=` the rows whose argmax (first maximum on ties)
 *   equals the label;
 * - `validRows` (optional, u32 `[1]`) is ACCUMULATED: `+=` `m`, the rows whose label is in
 *   `[0, c)` (PyTorch's mean is `lossSum / validRows`: NaN when every row is ignored).
 *
 * Rows whose label is outside `[0, c)` (PyTorch's `ignore_index=-100`) are ignored: zero
 * gradient, no loss, never correct, not counted in `m`.
 *
 * @returns Nothing: the dispatch is recorded.
 * @throws {TypeError} for mismatched sizes, dtypes or shared buffers.
 * @throws {RangeError} for bad `n`, `c` or `labelSmoothing`.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { softmaxCrossEntropy } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const logits = gpu.tensor(new Float32Array([2, 0, 0, 1, 3, 0]), { shape: [2, 3] });
 * const labels = gpu.tensor(new Int32Array([0, 2]), { shape: [2] });
 * const dlogits = gpu.empty([2, 3]);
 * const lossSum = gpu.zeros([1]);
 * const correct = gpu.zeros([1], { dtype: "u32" });
 * softmaxCrossEntropy({ dlogits, lossSum, correct, logits, labels }, { n: 2, c: 3 });
 * console.log((await lossSum.toArray())[0] / 2, (await correct.toArray())[0]); // mean loss, 1
 * ```
 * @example Ignored rows (label -100): the mean over the others, as PyTorch's.
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { softmaxCrossEntropy } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const logits = gpu.tensor(new Float32Array([2, 0, 0, 1, 3, 0]), { shape: [2, 3] });
 * const labels = gpu.tensor(new Int32Array([0, -100]), { shape: [2] });
 * const dlogits = gpu.empty([2, 3]);
 * const [lossSum, correct] = [gpu.zeros([1]), gpu.zeros([1], { dtype: "u32" })];
 * const validRows = gpu.zeros([1], { dtype: "u32" });
 * softmaxCrossEntropy({ dlogits, lossSum, correct, logits, labels, validRows }, { n: 2, c: 3 });
 * const [sum] = await lossSum.toArray(), [m] = await validRows.toArray();
 * console.log(sum / m, m); // the mean loss of row 0, 1
 * ```
 */
export function softmaxCrossEntropy(
  io: {
    dlogits: Tensor;
    lossSum: Tensor;
    correct: Tensor;
    logits: Tensor;
    labels: Tensor;
    lossScale?: Tensor;
    validRows?: Tensor;
  },
  p: SoftmaxCrossEntropyParams,
): void {
  const op = "softmaxCrossEntropy";
  checkSoftmaxCrossEntropy(op, p, io);
  if (p.n === 0) return;
  const kind = io.dlogits.sameStart(io.logits) ? "ce_inplace" : "ce";
  const { n, c, labelSmoothing } = p;
  recordSoftmaxCe(op, plan({ op, kind, n, c, labelSmoothing }, io.logits), io);
}

/**
 * Eval-time accuracy: `correct` (u32 `[1]`) is ACCUMULATED `+=` the number of rows of logits
 * `[n, c]` (f32 or f16) whose argmax (first maximum on ties) equals the label (i32 `[n]`); labels outside
 * `[0, c)` never count.
 *
 * @returns Nothing: the dispatch is recorded.
 * @throws {TypeError} for mismatched sizes or dtypes.
 * @throws {RangeError} for bad `n` or `c`.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { accuracyCount } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const logits = gpu.tensor(new Float32Array([2, 0, 0, 1]), { shape: [2, 2] });
 * const labels = gpu.tensor(new Int32Array([0, 0]), { shape: [2] });
 * const correct = gpu.zeros([1], { dtype: "u32" });
 * accuracyCount({ correct, logits, labels }, { n: 2, c: 2 });
 * console.log((await correct.toArray())[0]); // 1
 * ```
 */
export function accuracyCount(
  io: { correct: Tensor; logits: Tensor; labels: Tensor },
  p: AccuracyParams,
): void {
  const op = "accuracyCount";
  checkSoftmaxCrossEntropy(op, { n: p.n, c: p.c }, io);
  if (p.n === 0) return;
  recordSoftmaxCe(op, plan({ op, kind: "acc", n: p.n, c: p.c }, io.logits), io);
}
