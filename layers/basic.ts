/**
 * The basic layers: conv2d (grouped and depthwise), linear, activations, dropout, pooling,
 * flatten, batch normalization and local response normalization. Each is a factory returning a
 * {@linkcode Layer}; forward and backward of each sit together.
 *
 * @module
 */

import { assertShape, formatShape, type Shape, type Tensor } from "../gpu/mod.ts";
import {
  activationBackward,
  activationForward,
  type ActivationKind,
} from "../kernels/activation.ts";
import { batchNormBackward, batchNormForward, checkBatchNorm } from "../kernels/batchnorm/index.ts";
import {
  checkConv2d,
  conv2dBackward,
  conv2dForward,
  type Conv2dParams,
} from "../kernels/conv2d.ts";
import { depthwiseConv2dBackward, depthwiseConv2dForward } from "../kernels/depthwise.ts";
import { dropoutBackward, dropoutForward, dropoutMaskWords } from "../kernels/dropout.ts";
import { gemm, sumRows } from "../kernels/gemm.ts";
import { checkLrn, lrnBackward, lrnForward } from "../kernels/lrn.ts";
import {
  avgPool2dBackward,
  avgPool2dForward,
  checkPool2d,
  globalAvgPoolBackward,
  globalAvgPoolForward,
  maxPool2dBackward,
  maxPool2dForward,
} from "../kernels/pool.ts";
import { window2d, type Window2dParams } from "../kernels/_geometry.ts";
import {
  type Counter,
  type Ctx,
  type Layer,
  type Param,
  param,
  release,
  type StateBuffer,
  weightFor,
} from "./layer.ts";

const NONE: readonly never[] = Object.freeze([]);

function expectRank(kind: string, input: Shape, rank: number, what: string): void {
  if (input.length !== rank) {
    throw new TypeError(`${kind}: expected a ${rank}-d input ${what}, got ${formatShape(input)}`);
  }
}

// ---------------------------------------------------------------------------- Conv2d ----

/**
 * Options of {@linkcode conv2d} (as `torch.nn.Conv2d`): the window (kernel; stride 1, zero
 * padding 0 and dilation 1 by default), the channels, groups and bias.
 */
export interface Conv2dOptions extends Window2dParams {
  /** Input channels. */
  readonly inChannels: number;
  /** Output channels. */
  readonly outChannels: number;
  /** Groups; default 1. `groups == inChannels == outChannels` runs the depthwise kernels. */
  readonly groups?: number;
  /** Whether there is a bias; default true. */
  readonly bias?: boolean;
}

/** What a conv2d forward saves: a handle to its input and the resolved params. */
export interface ConvCache {
  /** The input (for the weight gradient). */
  readonly x: Tensor;
  /** The params of this call. */
  readonly p: Conv2dParams;
}

/**
 * A 2-d convolution (`torch.nn.Conv2d`): weight OIHW `[out, in/groups, kh, kw]`, bias `[out]`.
 * Forward saves a handle to its input for the weight gradient.
 *
 * @example
 * ```ts
 * import { conv2d } from "@modern-cnn/webgpu/layers";
 * const c = conv2d({ inChannels: 1, outChannels: 6, kernel: 5, padding: 2 });
 * c.outputShape([8, 1, 28, 28]); // [8, 6, 28, 28]
 * ```
 */
export function conv2d(options: Conv2dOptions): Layer<ConvCache> {
  const { inChannels: cIn, outChannels: cOut } = options;
  const groups = options.groups ?? 1;
  const { kh, kw } = window2d("Conv2d", options);
  if (cIn % groups !== 0 || cOut % groups !== 0) {
    throw new RangeError(`Conv2d: channels ${cIn}->${cOut} are not divisible by groups ${groups}`);
  }
  const receptive = kh * kw;
  const weight = param("weight", [cOut, cIn / groups, kh, kw], {
    init: "xavier-uniform",
    fanIn: (cIn / groups) * receptive,
    fanOut: (cOut / groups) * receptive,
  });
  const bias = options.bias === false ? null : param("bias", [cOut], {
    init: "bias-uniform",
    fanIn: (cIn / groups) * receptive,
    fanOut: cOut,
  });
  const depthwise = groups > 1 && groups === cIn && groups === cOut;
  const params = (input: Shape): Conv2dParams => {
    expectRank("Conv2d", input, 4, "[n, c, h, w]");
    if (input[1] !== cIn) {
      throw new TypeError(
        `Conv2d: input ${formatShape(input)} has ${input[1]} channels, expected ${cIn}`,
      );
    }
    return {
      n: input[0],
      cIn,
      h: input[2],
      w: input[3],
      cOut,
      kernel: [kh, kw],
      stride: options.stride ?? 1,
      padding: options.padding ?? 0,
      dilation: options.dilation ?? 1,
      groups,
    };
  };
  const outShape = (input: Shape): Shape => checkConv2d(params(input));
  const flops = (input: Shape): number => {
    const out = checkConv2d(params(input));
    return 2 * out[1] * out[2] * out[3] * (cIn / groups) * kh * kw;
  };
  // Forward saves a handle to x (the weight gradient needs it) and the resolved params.
  const run = (
    y: Tensor,
    x: Tensor,
    p: Conv2dParams,
    fused: { activation?: ActivationKind; yChannelOffset?: number },
  ): ConvCache => {
    const w = weightFor(weight, x), b = bias?.value ?? undefined;
    if (depthwise) depthwiseConv2dForward({ y, x, w, b }, { ...p, c: cIn });
    else conv2dForward({ y, x, w, b }, { ...p, ...fused });
    return { x: x.retain(), p };
  };
  // Overwrites dx (a new tensor); accumulates into weight.grad and bias.grad.
  const back = (dy: Tensor, cache: ConvCache, ctx: Ctx, needDx: boolean): Tensor | null => {
    const { x, p } = cache;
    const dx = needDx ? ctx.gpu.empty(x.shape, { dtype: dy.dtype }) : undefined;
    const io = {
      dx,
      dw: weight.grad!,
      db: bias?.grad ?? undefined,
      dy,
      x,
      w: weightFor(weight, x),
    };
    if (depthwise) depthwiseConv2dBackward(io, { ...p, c: cIn, accumulate: true });
    else conv2dBackward(io, { ...p, accumulate: true });
    release(x);
    return dx ?? null;
  };
  return {
    kind: "Conv2d",
    children: NONE,
    params: bias ? [weight, bias] : [weight],
    buffers: NONE,
    counters: NONE,
    outputShape: outShape,
    flops,
    forward(x, ctx) {
      const p = params(x.shape);
      const y = ctx.gpu.empty(checkConv2d(p), { dtype: x.dtype });
      return { y, cache: run(y, x, p, {}) };
    },
    backward: (dy, { cache, ctx, needDx }) => back(dy, cache, ctx, needDx),
    fuseActivation: (act) =>
      depthwise ? null : fusedStep(`Conv2d+${ACTIVATION_KIND[act]}`, act, {
        outputShape: outShape,
        flops,
        forward(x, ctx) {
          const p = params(x.shape);
          const y = ctx.gpu.empty(checkConv2d(p), { dtype: x.dtype });
          return { y, cache: run(y, x, p, { activation: act }) };
        },
        backward: back,
      }),
    forwardInto(x, _ctx, into) {
      if (depthwise) throw new TypeError("Conv2d: forwardInto is not supported for depthwise");
      const p = params(x.shape);
      return run(into.y, x, p, { activation: into.activation, yChannelOffset: into.channelOffset });
    },
  };
}

/**
 * A fused step "producer then activation": the producer's forward applies the activation in its
 * epilogue and the step saves a handle to the output y (the activation's derivative is a
 * function of y). Backward: dz = f'(y) * dy into a new tensor (the separate activation's
 * backward kernel), then the producer's backward on dz.
 */
function fusedStep<C>(
  kind: string,
  act: ActivationKind,
  producer: {
    outputShape(input: Shape): Shape;
    flops(input: Shape): number;
    forward(x: Tensor, ctx: Ctx): { y: Tensor; cache: C };
    backward(dy: Tensor, cache: C, ctx: Ctx, needDx: boolean): Tensor | null;
  },
): Layer<{ inner: C; y: Tensor }> {
  return {
    kind,
    children: NONE,
    params: NONE,
    buffers: NONE,
    counters: NONE,
    outputShape: producer.outputShape,
    flops: producer.flops,
    forward(x, ctx) {
      const { y, cache } = producer.forward(x, ctx);
      return { y, cache: { inner: cache, y: y.retain() } };
    },
    backward(dy, { cache, ctx, needDx }) {
      const dz = ctx.gpu.empty(dy.shape, { dtype: dy.dtype });
      activationBackward({ dx: dz, dy, y: cache.y }, { kind: act });
      release(cache.y);
      const dx = producer.backward(dz, cache.inner, ctx, needDx);
      dz.dispose();
      return dx;
    },
  };
}

// ---------------------------------------------------------------------------- Linear ----

/** Options of {@linkcode linear} (as `torch.nn.Linear`). */
export interface LinearOptions {
  /** Input features. */
  readonly inFeatures: number;
  /** Output features. */
  readonly outFeatures: number;
  /** Whether there is a bias; default true. */
  readonly bias?: boolean;
}

/**
 * A fully connected layer (`torch.nn.Linear`): y = x·Wᵀ + b with W `[out, in]`. Forward saves a
 * handle to its input for the weight gradient.
 *
 * @example
 * ```ts
 * import { linear } from "@modern-cnn/webgpu/layers";
 * linear({ inFeatures: 400, outFeatures: 120 }).outputShape([8, 400]); // [8, 120]
 * ```
 */
export function linear(options: LinearOptions): Layer<{ x: Tensor }> {
  const { inFeatures: fin, outFeatures: fout } = options;
  const weight = param("weight", [fout, fin], {
    init: "xavier-uniform",
    fanIn: fin,
    fanOut: fout,
  });
  const bias = options.bias === false
    ? null
    : param("bias", [fout], { init: "bias-uniform", fanIn: fin, fanOut: fout });
  const check = (input: Shape): Shape => {
    if (input.length !== 2 || input[1] !== fin) {
      throw new TypeError(
        `Linear: input has shape ${formatShape(input)}, expected [*, ${fin}]` +
          (input.length === 4 && input[1] * input[2] * input[3] !== fin
            ? ` (the layer before gives ${input[1] * input[2] * input[3]} features: check the ` +
              "input size, see the model's required resize)"
            : ""),
      );
    }
    return [input[0], fout];
  };
  // Forward saves a handle to x for the weight gradient.
  const run = (x: Tensor, ctx: Ctx, act?: ActivationKind): { y: Tensor; cache: { x: Tensor } } => {
    const [n] = check(x.shape);
    const y = ctx.gpu.empty([n, fout], { dtype: x.dtype });
    gemm(
      { c: y, a: x, b: weightFor(weight, x), bias: bias?.value ?? undefined },
      { m: n, n: fout, k: fin, transB: true, activation: act },
    );
    return { y, cache: { x: x.retain() } };
  };
  // Overwrites dx (a new tensor); accumulates into weight.grad and bias.grad.
  const back = (dy: Tensor, cache: { x: Tensor }, ctx: Ctx, needDx: boolean): Tensor | null => {
    const { x } = cache;
    const n = x.shape[0];
    let dx: Tensor | null = null;
    if (needDx) {
      dx = ctx.gpu.empty(x.shape, { dtype: dy.dtype });
      gemm({ c: dx, a: dy, b: weightFor(weight, x) }, { m: n, n: fin, k: fout }); // dx = dy·W
    }
    // dW += dyᵀ·x ; db += Σ_rows dy
    gemm({ c: weight.grad!, a: dy, b: x }, { m: fout, n: fin, k: n, transA: true, beta: 1 });
    if (bias) sumRows({ y: bias.grad!, x: dy }, { rows: n, cols: fout, accumulate: true });
    release(x);
    return dx;
  };
  const flops = (): number => 2 * fin * fout;
  return {
    kind: "Linear",
    children: NONE,
    params: bias ? [weight, bias] : [weight],
    buffers: NONE,
    counters: NONE,
    outputShape: check,
    flops,
    forward: (x, ctx) => run(x, ctx),
    backward: (dy, { cache, ctx, needDx }) => back(dy, cache, ctx, needDx),
    fuseActivation: (act) =>
      fusedStep(`Linear+${ACTIVATION_KIND[act]}`, act, {
        outputShape: check,
        flops,
        forward: (x, ctx) => run(x, ctx, act),
        backward: back,
      }),
  };
}

// ----------------------------------------------------------------------- activations ----

const ACTIVATION_KIND: Record<ActivationKind, string> = {
  relu: "ReLU",
  relu6: "ReLU6",
  sigmoid: "Sigmoid",
  tanh: "Tanh",
};

/**
 * An elementwise activation (`ReLU`, `ReLU6`, `Sigmoid`, `Tanh`). Forward saves a handle to its
 * output: every one of these has a derivative expressible from the output.
 *
 * @example
 * ```ts
 * import { activation } from "@modern-cnn/webgpu/layers";
 * const relu = activation("relu");
 * ```
 */
export function activation(kind: ActivationKind): Layer<{ y: Tensor }> {
  if (!(kind in ACTIVATION_KIND)) throw new RangeError(`activation: unknown kind '${kind}'`);
  return {
    kind: ACTIVATION_KIND[kind],
    activation: kind,
    children: NONE,
    params: NONE,
    buffers: NONE,
    counters: NONE,
    outputShape: (input) => input,
    flops: () => 0,
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
  };
}

// --------------------------------------------------------------------------- Dropout ----

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
  return {
    kind: "Dropout",
    children: NONE,
    params: NONE,
    buffers: NONE,
    counters: NONE,
    outputShape: (input) => input,
    flops: () => 0,
    forward(x, ctx) {
      const prob = ctx.dropout ?? p;
      if (!ctx.training || prob === 0) return { y: x.retain(), cache: { mask: null, p: prob } };
      const y = ctx.gpu.empty(x.shape, { dtype: x.dtype });
      const mask = ctx.gpu.empty([dropoutMaskWords(x.size)], { dtype: "u32" });
      const seed = (Math.imul(ctx.seed >>> 0, 0x9e3779b1) + Math.imul(id, 0x85ebca6b)) >>> 0;
      dropoutForward({ y, mask, x }, { p: prob, seed });
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
  };
}

// --------------------------------------------------------------------------- Pooling ----

/**
 * Options of {@linkcode maxPool2d} and {@linkcode avgPool2d}: the window without dilation (stride
 * the window size by default; implicit padding, default 0, at most half the window).
 */
export interface Pool2dOptions extends Omit<Window2dParams, "dilation"> {}

function poolParams(kind: string, input: Shape, o: Pool2dOptions) {
  expectRank(kind, input, 4, "[n, c, h, w]");
  return {
    n: input[0],
    c: input[1],
    h: input[2],
    w: input[3],
    kernel: o.kernel,
    stride: o.stride ?? o.kernel,
    padding: o.padding ?? 0,
  };
}

/**
 * Max pooling (`torch.nn.MaxPool2d`, ceil_mode false). Forward saves the argmax of each window.
 *
 * @example
 * ```ts
 * import { maxPool2d } from "@modern-cnn/webgpu/layers";
 * maxPool2d({ kernel: 3, stride: 2 }).outputShape([1, 96, 54, 54]); // [1, 96, 26, 26]
 * ```
 */
export function maxPool2d(options: Pool2dOptions): Layer<{ argmax: Tensor; x: Shape }> {
  window2d("MaxPool2d", options, { stride: "kernel" }); // bad options fail here, not at the first use
  return {
    kind: "MaxPool2d",
    children: NONE,
    params: NONE,
    buffers: NONE,
    counters: NONE,
    outputShape: (input) => checkPool2d(poolParams("MaxPool2d", input, options)),
    flops: () => 0,
    forward(x, ctx) {
      const p = poolParams("MaxPool2d", x.shape, options);
      const shape = checkPool2d(p);
      const y = ctx.gpu.empty(shape, { dtype: x.dtype });
      const argmax = ctx.gpu.empty(shape, { dtype: "i32" });
      maxPool2dForward({ y, argmax, x }, p);
      return { y, cache: { argmax, x: x.shape } };
    },
    backward(dy, { cache, ctx, needDx }) {
      let dx: Tensor | null = null;
      if (needDx) {
        dx = ctx.gpu.empty(cache.x, { dtype: dy.dtype });
        maxPool2dBackward(
          { dx, dy, argmax: cache.argmax },
          poolParams("MaxPool2d", cache.x, options),
        );
      }
      release(cache.argmax);
      return dx;
    },
  };
}

/**
 * Average pooling (`torch.nn.AvgPool2d`, count_include_pad true). Saves nothing but the shape.
 *
 * @example
 * ```ts
 * import { avgPool2d } from "@modern-cnn/webgpu/layers";
 * avgPool2d({ kernel: 2 }).outputShape([1, 6, 28, 28]); // [1, 6, 14, 14]
 * ```
 */
export function avgPool2d(options: Pool2dOptions): Layer<Shape> {
  window2d("AvgPool2d", options, { stride: "kernel" }); // bad options fail here, not at the first use
  return {
    kind: "AvgPool2d",
    children: NONE,
    params: NONE,
    buffers: NONE,
    counters: NONE,
    outputShape: (input) => checkPool2d(poolParams("AvgPool2d", input, options)),
    flops: () => 0,
    forward(x, ctx) {
      const p = poolParams("AvgPool2d", x.shape, options);
      const y = ctx.gpu.empty(checkPool2d(p), { dtype: x.dtype });
      avgPool2dForward({ y, x }, p);
      return { y, cache: x.shape };
    },
    backward(dy, { cache, ctx, needDx }) {
      if (!needDx) return null;
      const dx = ctx.gpu.empty(cache, { dtype: dy.dtype });
      avgPool2dBackward({ dx, dy }, poolParams("AvgPool2d", cache, options));
      return dx;
    },
  };
}

/**
 * Global average pooling (`torch.nn.AdaptiveAvgPool2d((1, 1))`): `[n, c, h, w]` → `[n, c, 1, 1]`.
 *
 * @example
 * ```ts
 * import { globalAvgPool } from "@modern-cnn/webgpu/layers";
 * globalAvgPool().outputShape([2, 512, 3, 3]); // [2, 512, 1, 1]
 * ```
 */
export function globalAvgPool(): Layer<Shape> {
  const dims = (input: Shape) => {
    expectRank("AdaptiveAvgPool2d", input, 4, "[n, c, h, w]");
    return { n: input[0], c: input[1], h: input[2], w: input[3] };
  };
  return {
    kind: "AdaptiveAvgPool2d",
    children: NONE,
    params: NONE,
    buffers: NONE,
    counters: NONE,
    outputShape: (input) => (dims(input), [input[0], input[1], 1, 1]),
    flops: () => 0,
    forward(x, ctx) {
      const y = ctx.gpu.empty([x.shape[0], x.shape[1], 1, 1], { dtype: x.dtype });
      globalAvgPoolForward({ y, x }, dims(x.shape));
      return { y, cache: x.shape };
    },
    backward(dy, { cache, ctx, needDx }) {
      if (!needDx) return null;
      const dx = ctx.gpu.empty(cache, { dtype: dy.dtype });
      globalAvgPoolBackward({ dx, dy }, dims(cache));
      return dx;
    },
  };
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
  return {
    kind: "Flatten",
    children: NONE,
    params: NONE,
    buffers: NONE,
    counters: NONE,
    outputShape: (input) => [input[0], input.slice(1).reduce((a, b) => a * b, 1)],
    flops: () => 0,
    forward: (x) => ({ y: x.flatten(1), cache: x.shape }),
    backward: (dy, { cache, needDx }) => (needDx ? dy.reshape(cache) : null),
  };
}

// ------------------------------------------------------------------------- BatchNorm ----

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
 * handle to its input and the batch mean and 1/std.
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
  // Training forward saves a handle to x and the batch mean and 1/std (the backward needs all
  // three); with a fused activation also a handle to y (its derivative is a function of y).
  const run = (
    x: Tensor,
    ctx: Ctx,
    act?: ActivationKind,
  ): { y: Tensor; cache: BnCache | null } => {
    const p = bnParams(x.shape);
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
    }, { ...p, training: ctx.training, activation: act });
    if (!ctx.training) {
      release(mean, invStd);
      return { y, cache: null };
    }
    tracked.value++;
    return { y, cache: { x: x.retain(), mean, invStd, act, y: act ? y.retain() : undefined } };
  };
  // Overwrites dx (a new tensor); accumulates into weight.grad and bias.grad.
  const back = (dy: Tensor, cache: BnCache | null, ctx: Ctx, needDx: boolean): Tensor | null => {
    if (!cache) throw new TypeError(`${kind}: backward needs a forward in training mode`);
    const dx = ctx.gpu.empty(cache.x.shape, { dtype: dy.dtype });
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
    }, {
      ...bnParams(cache.x.shape),
      accumulate: true,
      activation: cache.act,
    });
    release(cache.x, cache.mean, cache.invStd, cache.y);
    if (needDx) return dx;
    dx.dispose();
    return null;
  };
  const outputShape = (input: Shape): Shape => (checkBatchNorm(bnParams(input)), input);
  return {
    kind,
    children: NONE,
    params: [weight, bias],
    buffers: [runningMean, runningVar],
    counters: [tracked],
    outputShape,
    flops: () => 0,
    forward: (x, ctx) => run(x, ctx),
    backward: (dy, { cache, ctx, needDx }) => back(dy, cache, ctx, needDx),
    fuseActivation: (act): Layer<BnCache | null> => ({
      kind: `${kind}+${ACTIVATION_KIND[act]}`,
      children: NONE,
      params: NONE,
      buffers: NONE,
      counters: NONE,
      outputShape,
      flops: () => 0,
      forward: (x, ctx) => run(x, ctx, act),
      backward: (dy, { cache, ctx, needDx }) => back(dy, cache, ctx, needDx),
    }),
  };
}

// ------------------------------------------------------------------------------- LRN ----

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
  return {
    kind: "LocalResponseNorm",
    children: NONE,
    params: NONE,
    buffers: NONE,
    counters: NONE,
    outputShape: (input) => checkLrn(lrnParams(input)),
    flops: () => 0,
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
  };
}

/** Re-exported so model code can name parameter types. */
export type { Param };

/**
 * Asserts a tensor's shape inside a layer (re-exported helper for composite layers).
 *
 * @example
 * ```ts
 * import { checkInput } from "./basic.ts";
 * checkInput("Residual", [1, 64, 8, 8], [1, 64, 8, 8]);
 * ```
 */
export function checkInput(kind: string, actual: Shape, expected: Shape): void {
  assertShape(kind, "input", actual, expected);
}
