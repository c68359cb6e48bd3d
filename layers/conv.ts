/**
 * The weight layers: a 2-d convolution (grouped and depthwise) and a fully connected layer. Both
 * are producers: their forward takes an activation epilogue, and a non-depthwise convolution also
 * writes into a channel slice of a concatenation.
 *
 * @module
 */

import { formatShape, type Shape, type Tensor } from "../gpu/mod.ts";
import {
  checkConv2d,
  conv2dBackward,
  conv2dForward,
  type Conv2dParams,
} from "../kernels/conv2d/index.ts";
import { depthwiseConv2dBackward, depthwiseConv2dForward } from "../kernels/depthwise/index.ts";
import { gemm, sumRows } from "../kernels/gemm/index.ts";
import { gemmGradSums } from "../kernels/gemm/grad_sums.ts";
import { window2d, type Window2dParams } from "../kernels/_geometry.ts";
import { type EpilogueActivation, epilogueGrad } from "./elementwise.ts";
import { expectRank, type Layer, leaf, param, release, weightFor } from "./layer.ts";

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
  /** The activation of its epilogue, when it wrote a tensor of its own. */
  readonly act?: EpilogueActivation;
}

/**
 * A 2-d convolution (`torch.nn.Conv2d`): weight OIHW `[out, in/groups, kh, kw]`, bias `[out]`.
 * Forward saves a handle to its input for the weight gradient. Its epilogue (not depthwise): an
 * activation, and writing into a channel slice.
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
  const win = window2d("Conv2d", options), { kh, kw } = win;
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
  // Declared to the compositions, which may run several that read one input as one GEMM.
  const pointwise = groups === 1 &&
    [win.kh, win.kw, win.sh, win.sw, win.dh, win.dw].every((v) => v === 1) &&
    win.ph === 0 && win.pw === 0;
  return leaf({
    kind: "Conv2d",
    params: bias ? [weight, bias] : [weight],
    fusion: depthwise ? undefined : {
      epilogue: ["activation", "into", "stats"],
      gradSums: "gather",
      ...(pointwise ? { pointwise: { weight, bias, cIn, cOut } } : {}),
    },
    outputShape: (input) => checkConv2d(params(input)),
    flops(input) {
      const out = checkConv2d(params(input));
      return 2 * out[1] * out[2] * out[3] * (cIn / groups) * kh * kw;
    },
    // Saves a handle to x (the weight gradient needs it) and the resolved params; with an
    // activation into its own output, a handle to that output (the activation's derivative).
    forward(x, ctx, epilogue) {
      const p = params(x.shape);
      const { activation, into } = epilogue ?? {};
      const y = into ? into.y.retain() : ctx.gpu.empty(checkConv2d(p), { dtype: x.dtype });
      const w = weightFor(weight, x), b = bias?.value ?? undefined;
      if (depthwise) depthwiseConv2dForward({ y, x, w, b }, { ...p, c: cIn });
      else {
        // Statistics for the batch norm after it (the plan's pair), where the kernels gather.
        const sink = epilogue?.stats;
        const partials = conv2dForward({ y, x, w, b }, {
          ...p,
          activation,
          yChannelOffset: into?.channelOffset,
          stats: sink !== undefined && !activation && !into,
        });
        if (sink && partials) sink.partials = partials;
      }
      const act = activation && !into ? { kind: activation, y: y.retain() } : undefined;
      return { y, cache: { x: x.retain(), p, act } };
    },
    // Overwrites dx (a new tensor); accumulates into weight.grad and bias.grad.
    // With gradSums (the batch norm before it), the kernel storing dx gathers that batch norm's
    // sums where it can (a pointwise conv's GEMM, the flipped direct kernel).
    backward(dy, { cache, ctx, needDx, gradSums }) {
      const { x, p } = cache;
      const dz = cache.act ? epilogueGrad(dy, cache.act, ctx) : dy;
      const dx = needDx ? ctx.gpu.empty(x.shape, { dtype: dz.dtype }) : undefined;
      const io = {
        dx,
        dw: weight.grad!,
        db: bias?.grad ?? undefined,
        dy: dz,
        x,
        w: weightFor(weight, x),
      };
      if (depthwise) depthwiseConv2dBackward(io, { ...p, c: cIn, accumulate: true });
      else conv2dBackward(dx && gradSums ? { ...io, gradSums } : io, { ...p, accumulate: true });
      release(x);
      if (dz !== dy) dz.dispose();
      return dx ?? null;
    },
  });
}

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
 * handle to its input for the weight gradient. Its epilogue: an activation.
 *
 * @example
 * ```ts
 * import { linear } from "@modern-cnn/webgpu/layers";
 * linear({ inFeatures: 400, outFeatures: 120 }).outputShape([8, 400]); // [8, 120]
 * ```
 */
export function linear(
  options: LinearOptions,
): Layer<{ x: Tensor; act?: EpilogueActivation }> {
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
  return leaf({
    kind: "Linear",
    params: bias ? [weight, bias] : [weight],
    fusion: { epilogue: ["activation", "stats"], gradSums: "gather" },
    outputShape: check,
    flops: () => 2 * fin * fout,
    // Saves a handle to x for the weight gradient (and to y with an activation).
    forward(x, ctx, epilogue) {
      const [n] = check(x.shape);
      const activation = epilogue?.activation;
      const y = ctx.gpu.empty([n, fout], { dtype: x.dtype });
      const sink = epilogue?.stats;
      const partials = gemm(
        { c: y, a: x, b: weightFor(weight, x), bias: bias?.value ?? undefined },
        {
          m: n,
          n: fout,
          k: fin,
          transB: true,
          activation,
          ...(sink && !activation ? { stats: "col" as const } : {}),
        },
      );
      if (sink && partials) sink.partials = partials;
      const act = activation ? { kind: activation, y: y.retain() } : undefined;
      return { y, cache: { x: x.retain(), act } };
    },
    // Overwrites dx (a new tensor); accumulates into weight.grad and bias.grad.
    // With gradSums (the batch norm before it), dx's GEMM gathers that batch norm's sums.
    backward(dy, { cache, ctx, needDx, gradSums }) {
      const { x } = cache;
      const dz = cache.act ? epilogueGrad(dy, cache.act, ctx) : dy;
      const n = x.shape[0];
      let dx: Tensor | null = null;
      if (needDx && gradSums) {
        dx = ctx.gpu.empty(x.shape, { dtype: dz.dtype });
        gradSums.partials = gemmGradSums(
          { c: dx, a: dz, b: weightFor(weight, x) },
          gradSums.source,
        );
      } else if (needDx) {
        dx = ctx.gpu.empty(x.shape, { dtype: dz.dtype });
        gemm({ c: dx, a: dz, b: weightFor(weight, x) }, { m: n, n: fin, k: fout }); // dx = dz·W
      }
      // dW += dzᵀ·x ; db += Σ_rows dz
      gemm({ c: weight.grad!, a: dz, b: x }, { m: fout, n: fin, k: n, transA: true, beta: 1 });
      if (bias) sumRows({ y: bias.grad!, x: dz }, { rows: n, cols: fout, accumulate: true });
      release(x);
      if (dz !== dy) dz.dispose();
      return dx;
    },
  });
}
