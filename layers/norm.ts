/**
 * The normalization layers: batch normalization (a producer: its forward takes an activation
 * epilogue, its backward applies the activation's derivative in its own passes) and local
 * response normalization.
 *
 * @module
 */

import { formatShape, type Shape, type Tensor } from "../gpu/mod.ts";
import type { ActivationKind } from "../kernels/activation.ts";
import { batchNormBackward, batchNormForward, checkBatchNorm } from "../kernels/batchnorm/index.ts";
import { checkLrn, lrnBackward, lrnForward } from "../kernels/lrn.ts";
import {
  type Counter,
  expectRank,
  type Layer,
  leaf,
  param,
  release,
  type StateBuffer,
} from "./layer.ts";

/** What a training-mode batch-norm forward saves. */
export interface BnCache {
  /** The input. */
  readonly x: Tensor;
  /** Batch mean per channel. */
  readonly mean: Tensor;
  /** 1/sqrt(batch variance + eps) per channel. */
  readonly invStd: Tensor;
  /** The activation fused in, if any. */
  readonly act?: ActivationKind;
  /** The output, when an activation is fused in (its derivative is a function of it). */
  readonly y?: Tensor;
}

/**
 * Batch normalization (`torch.nn.BatchNorm1d` on `[n, c]`, `BatchNorm2d` on `[n, c, h, w]`),
 * eps 1e-5, momentum 0.1. Training normalizes with batch statistics, updates the running stats
 * and counts `num_batches_tracked`; evaluation uses the running stats. Forward (training) saves a
 * handle to its input and the batch mean and 1/std. Its epilogue: an activation.
 *
 * @example
 * ```ts
 * import { batchNorm } from "@modern-cnn/webgpu/layers";
 * const bn = batchNorm({ channels: 64 });
 * ```
 */
export function batchNorm(
  options: { channels: number; dims?: 1 | 2; eps?: number; momentum?: number },
): Layer<BnCache | null> {
  const c = options.channels;
  const dims = options.dims ?? 2;
  const weight = param("weight", [c], { init: "ones", fanIn: c, fanOut: c });
  const bias = param("bias", [c], { init: "zeros", fanIn: c, fanOut: c });
  const runningMean: StateBuffer = { name: "running_mean", shape: [c], init: "zeros", value: null };
  const runningVar: StateBuffer = { name: "running_var", shape: [c], init: "ones", value: null };
  const tracked: Counter = { name: "num_batches_tracked", value: 0 };
  const kind = dims === 1 ? "BatchNorm1d" : "BatchNorm2d";
  const bnParams = (input: Shape) => {
    expectRank(kind, input, dims === 1 ? 2 : 4, dims === 1 ? "[n, c]" : "[n, c, h, w]");
    if (input[1] !== c) {
      throw new TypeError(
        `${kind}: input ${formatShape(input)} has ${input[1]} channels, expected ${c}`,
      );
    }
    return {
      n: input[0],
      c,
      hw: dims === 1 ? 1 : input[2] * input[3],
      eps: options.eps ?? 1e-5,
      momentum: options.momentum ?? 0.1,
    };
  };
  return leaf({
    kind,
    params: [weight, bias],
    buffers: [runningMean, runningVar],
    counters: [tracked],
    fusion: { epilogue: ["activation", "batchStats"], gradSums: "merge" },
    outputShape: (input) => (checkBatchNorm(bnParams(input)), input),
    // Training saves a handle to x and the batch mean and 1/std (the backward needs all three);
    // with a fused activation also a handle to y (its derivative is a function of y).
    forward(x, ctx, epilogue) {
      const act = epilogue?.activation;
      const p = bnParams(x.shape);
      // The statistics the producer before gathered as it stored x (training), if it could.
      const partials = ctx.training ? epilogue?.batchStats?.partials : undefined;
      const y = ctx.gpu.empty(x.shape, { dtype: x.dtype });
      const mean = ctx.gpu.empty([c]);
      const invStd = ctx.gpu.empty([c]);
      batchNormForward({
        y,
        saveMean: mean,
        saveInvStd: invStd,
        runningMean: runningMean.value!,
        runningVar: runningVar.value!,
        x,
        weight: weight.value!,
        bias: bias.value!,
        partials,
      }, { ...p, training: ctx.training, activation: act });
      if (partials) {
        partials.partials.dispose();
        epilogue!.batchStats!.partials = undefined;
      }
      if (!ctx.training) {
        release(mean, invStd);
        return { y, cache: null };
      }
      tracked.value++;
      return { y, cache: { x: x.retain(), mean, invStd, act, y: act ? y.retain() : undefined } };
    },
    // Overwrites dx (a new tensor); accumulates into weight.grad and bias.grad.
    // Merges the gradient sums the producer after it gathered (gradSums), if it could.
    backward(dy, { cache, ctx, needDx, gradSums: sink }) {
      if (!cache) throw new TypeError(`${kind}: backward needs a forward in training mode`);
      const dx = ctx.gpu.empty(cache.x.shape, { dtype: dy.dtype });
      const gradSums = sink?.partials;
      if (sink) sink.partials = undefined;
      batchNormBackward({
        dx,
        dweight: weight.grad!,
        dbias: bias.grad!,
        dy,
        x: cache.x,
        y: cache.y,
        weight: weight.value!,
        saveMean: cache.mean,
        saveInvStd: cache.invStd,
        gradSums,
      }, {
        ...bnParams(cache.x.shape),
        accumulate: true,
        activation: cache.act,
      });
      gradSums?.partials.dispose();
      release(cache.x, cache.mean, cache.invStd, cache.y);
      if (needDx) return dx;
      dx.dispose();
      return null;
    },
  });
}

/**
 * Local response normalization across channels (`torch.nn.LocalResponseNorm`). Forward saves a
 * handle to its input and the per-element scale `k + alpha/size·Σa²`.
 *
 * @example
 * ```ts
 * import { localResponseNorm } from "@modern-cnn/webgpu/layers";
 * const lrn = localResponseNorm({ size: 5, alpha: 1e-4, beta: 0.75, k: 2 });
 * ```
 */
export function localResponseNorm(
  options: { size: number; alpha?: number; beta?: number; k?: number },
): Layer<{ x: Tensor; scale: Tensor }> {
  const lrnParams = (input: Shape) => {
    expectRank("LocalResponseNorm", input, 4, "[n, c, h, w]");
    return { n: input[0], c: input[1], h: input[2], w: input[3], ...options };
  };
  return leaf({
    kind: "LocalResponseNorm",
    outputShape: (input) => checkLrn(lrnParams(input)),
    forward(x, ctx) {
      const y = ctx.gpu.empty(x.shape, { dtype: x.dtype });
      const scale = ctx.gpu.empty(x.shape, { dtype: x.dtype });
      lrnForward({ y, scale, x }, lrnParams(x.shape));
      return { y, cache: { x: x.retain(), scale } };
    },
    backward(dy, { cache, ctx, needDx }) {
      let dx: Tensor | null = null;
      if (needDx) {
        dx = ctx.gpu.empty(cache.x.shape, { dtype: dy.dtype });
        lrnBackward({ dx, dy, x: cache.x, scale: cache.scale }, lrnParams(cache.x.shape));
      }
      release(cache.x, cache.scale);
      return dx;
    },
  });
}
