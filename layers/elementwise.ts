/**
 * The elementwise layers: activations, dropout and flatten (a view); and the backward of an
 * activation fused into a producer's epilogue, shared by the producers.
 *
 * @module
 */

import type { Shape, Tensor } from "../gpu/mod.ts";
import {
  activationBackward,
  activationForward,
  type ActivationKind,
} from "../kernels/activation.ts";
import { dropoutBackward, dropoutForward, dropoutMaskWords } from "../kernels/dropout.ts";
import { type Ctx, type Layer, leaf, release } from "./layer.ts";

const ACTIVATION_KIND: Record<ActivationKind, string> = {
  relu: "ReLU",
  relu6: "ReLU6",
  sigmoid: "Sigmoid",
  tanh: "Tanh",
};

/**
 * An elementwise activation (`ReLU`, `ReLU6`, `Sigmoid`, `Tanh`). Forward saves a handle to its
 * output: every one of these has a derivative expressible from the output. A composition folds
 * it into the producer before it when that one accepts it (see `layers/plan.ts`).
 *
 * @example
 * ```ts
 * import { activation } from "@modern-cnn/webgpu/layers";
 * const relu = activation("relu");
 * ```
 */
export function activation(kind: ActivationKind): Layer<{ y: Tensor }> {
  if (!(kind in ACTIVATION_KIND)) throw new RangeError(`activation: unknown kind '${kind}'`);
  return leaf({
    kind: ACTIVATION_KIND[kind],
    fusion: { activation: kind },
    outputShape: (input) => input,
    forward(x, ctx) {
      const y = ctx.gpu.empty(x.shape, { dtype: x.dtype });
      activationForward({ y, x }, { kind });
      return { y, cache: { y: y.retain() } };
    },
    backward(dy, { cache, ctx, needDx }) {
      let dx: Tensor | null = null;
      if (needDx) {
        dx = ctx.gpu.empty(dy.shape, { dtype: dy.dtype });
        activationBackward({ dx, dy, y: cache.y }, { kind });
      }
      release(cache.y);
      return dx;
    },
  });
}

/** What a producer that applied an activation in its epilogue saves for its derivative. */
export interface EpilogueActivation {
  /** The activation. */
  readonly kind: ActivationKind;
  /** A handle to the producer's output (the activation's output). */
  readonly y: Tensor;
}

/**
 * The gradient before an activation fused into a producer's epilogue: `f'(y)·dy` into a new
 * tensor (the activation's backward kernel); releases the saved output.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { epilogueGrad } from "./elementwise.ts";
 * const gpu = await getGpu();
 * const dz = epilogueGrad(gpu.zeros([4]), { kind: "relu", y: gpu.zeros([4]) }, { gpu, training: true, seed: 0 });
 * dz.shape; // [4]
 * ```
 */
export function epilogueGrad(dy: Tensor, act: EpilogueActivation, ctx: Ctx): Tensor {
  const dz = ctx.gpu.empty(dy.shape, { dtype: dy.dtype });
  activationBackward({ dx: dz, dy, y: act.y }, { kind: act.kind });
  release(act.y);
  return dz;
}

let dropoutIds = 0;

/**
 * Dropout (`torch.nn.Dropout`): in training, zeroes each element with probability `p` and scales
 * the rest by 1/(1-p); identity in evaluation. Forward saves the keep mask (bits) for backward.
 * `ctx.dropout` overrides `p` for every dropout layer.
 *
 * @example
 * ```ts
 * import { dropout } from "@modern-cnn/webgpu/layers";
 * const d = dropout(0.5);
 * ```
 */
export function dropout(p: number): Layer<{ mask: Tensor | null; p: number }> {
  if (!(p >= 0 && p < 1)) throw new RangeError(`Dropout: p must be in [0, 1), got ${p}`);
  const id = ++dropoutIds;
  return leaf<{ mask: Tensor | null; p: number }>({
    kind: "Dropout",
    outputShape: (input) => input,
    forward(x, ctx) {
      const prob = ctx.dropout ?? p;
      if (!ctx.training || prob === 0) return { y: x.retain(), cache: { mask: null, p: prob } };
      const y = ctx.gpu.empty(x.shape, { dtype: x.dtype });
      const mask = ctx.gpu.empty([dropoutMaskWords(x.size)], { dtype: "u32" });
      // The seed changes every step: a replayed step records this dispatch anew (Ctx.perStep).
      const record = ([y, mask, x]: readonly Tensor[], stepSeed: number) => {
        const seed = (Math.imul(stepSeed >>> 0, 0x9e3779b1) + Math.imul(id, 0x85ebca6b)) >>> 0;
        dropoutForward({ y, mask, x }, { p: prob, seed });
      };
      if (ctx.perStep) ctx.perStep([y, mask, x], record);
      else record([y, mask, x], ctx.seed);
      return { y, cache: { mask, p: prob } };
    },
    backward(dy, { cache, ctx, needDx }) {
      let dx: Tensor | null = null;
      if (needDx) {
        if (cache.mask) {
          dx = ctx.gpu.empty(dy.shape, { dtype: dy.dtype });
          dropoutBackward({ dx, dy, mask: cache.mask }, { p: cache.p });
        } else {
          dx = dy.retain();
        }
      }
      release(cache.mask);
      return dx;
    },
  });
}

/**
 * Flattens all but the batch dimension (`torch.nn.Flatten`): a view, no copy.
 *
 * @example
 * ```ts
 * import { flatten } from "@modern-cnn/webgpu/layers";
 * flatten().outputShape([8, 16, 5, 5]); // [8, 400]
 * ```
 */
export function flatten(): Layer<Shape> {
  return leaf({
    kind: "Flatten",
    outputShape: (input) => [input[0], input.slice(1).reduce((a, b) => a * b, 1)],
    forward: (x) => ({ y: x.flatten(1), cache: x.shape }),
    backward: (dy, { cache, needDx }) => (needDx ? dy.reshape(cache) : null),
  });
}
