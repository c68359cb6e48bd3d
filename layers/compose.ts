/**
 * Compositions of layers: chains (`Sequential` and named chains), Inception's parallel branches
 * concatenated on channels, ResNet's residual block, DenseNet's dense block. Each is planned once
 * when built (`layers/plan.ts`, `layers/concat.ts`) and has one forward and one backward that
 * mirrors it in reverse.
 *
 * @module
 */

import { formatShape, type Shape, type Tensor } from "../gpu/mod.ts";
import { accumulate, addBackwardRelu, addForward } from "../kernels/elementwise.ts";
import { conv2d } from "./conv.ts";
import { activation } from "./elementwise.ts";
import { composite, type Layer, release, type TraceStep } from "./layer.ts";
import { batchNorm } from "./norm.ts";
import { maxPool2d } from "./pool.ts";
import {
  concatBackward,
  type ConcatCache,
  concatForward,
  type ConcatPlan,
  planConcat,
} from "./concat.ts";
import { flopsThrough, planSteps, shapeThrough, stepsBackward, stepsForward } from "./plan.ts";

/** Steps applied in order, each at the shape the previous one gives (for `trace`). */
function _traceThrough(
  entries: readonly (readonly [string | null, Layer])[],
  input: Shape,
): TraceStep[] {
  const out: TraceStep[] = [];
  let shape = input;
  for (const [name, layer] of entries) {
    out.push({ name, layer, input: shape });
    shape = layer.outputShape(shape);
  }
  return out;
}

/** What a chain's forward saves: each step's cache. */
export interface ChainCache {
  /** Each step's cache, in order. */
  readonly caches: unknown[];
}

/**
 * Layers applied in order; children named by their position (`torch.nn.Sequential`).
 *
 * @example
 * ```ts
 * import { sequential, linear, activation } from "@modern-cnn/webgpu/layers";
 * const mlp = sequential([linear({ inFeatures: 4, outFeatures: 8 }), activation("relu")]);
 * ```
 */
export function sequential(layers: readonly Layer[]): Layer<ChainCache> {
  return chain(layers.map((l, i) => [String(i), l] as const));
}

/**
 * Layers applied in order with explicit child names (a `torch.nn.Module` whose `forward` calls its
 * children one after another, like MobileNet's). A `null` name marks a functional step that is
 * not a module (e.g. `x.view(n, -1)`), left out of the state dict.
 *
 * @example
 * ```ts
 * import { chain, conv2d, batchNorm, activation } from "@modern-cnn/webgpu/layers";
 * const block = chain([
 *   ["conv", conv2d({ inChannels: 3, outChannels: 8, kernel: 3 })],
 *   ["bn", batchNorm({ channels: 8 })],
 *   ["relu", activation("relu")],
 * ]);
 * ```
 */
export function chain(
  entries: readonly (readonly [string | null, Layer])[],
  options: { kind?: string } = {},
): Layer<ChainCache> {
  const layers = entries.map(([, l]) => l);
  const steps = planSteps(layers);
  return composite({
    kind: options.kind ?? "Sequential",
    children: entries.filter(([name]) => name !== null) as [string, Layer][],
    outputShape: (input) => shapeThrough(layers, input),
    flops: (input) => flopsThrough(layers, input),
    trace: (input) => _traceThrough(entries, input),
    forward(x, ctx) {
      const { y, caches } = stepsForward(steps, x, ctx);
      return { y, cache: { caches } };
    },
    backward: (dy, { cache, ctx, needDx }) =>
      stepsBackward(steps, cache.caches, { dy, ctx, needDx }),
  });
}

// -------------------------------------------------------------------------- Residual ----

/**
 * ResNet's residual block as d2l defines it: `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut)`,
 * where the shortcut is `x` or a strided 1×1 conv (`conv3`). State-dict children: conv1, conv2,
 * conv3 (optional), bn1, bn2. The add and the final ReLU are one fused kernel; forward saves a
 * handle to the block's output for that ReLU's gradient.
 *
 * @example
 * ```ts
 * import { residual } from "@modern-cnn/webgpu/layers";
 * residual({ inChannels: 64, channels: 128, use1x1: true, stride: 2 }).outputShape([1, 64, 24, 24]);
 * // [1, 128, 12, 12]
 * ```
 */
export function residual(
  options: { inChannels: number; channels: number; use1x1?: boolean; stride?: number },
): Layer<{ main: unknown[]; short: unknown; y: Tensor }> {
  const { inChannels, channels } = options;
  const stride = options.stride ?? 1;
  const conv1 = conv2d({ inChannels, outChannels: channels, kernel: 3, padding: 1, stride });
  const conv2 = conv2d({ inChannels: channels, outChannels: channels, kernel: 3, padding: 1 });
  const conv3 = options.use1x1
    ? conv2d({ inChannels, outChannels: channels, kernel: 1, stride })
    : null;
  const bn1 = batchNorm({ channels }), bn2 = batchNorm({ channels });
  const main = [conv1, bn1, activation("relu"), conv2, bn2];
  const steps = planSteps(main);
  const children: [string, Layer][] = [["conv1", conv1], ["conv2", conv2]];
  if (conv3) children.push(["conv3", conv3]);
  children.push(["bn1", bn1], ["bn2", bn2]);
  const check = (input: Shape): Shape => {
    const out = shapeThrough(main, input);
    const short = conv3 ? conv3.outputShape(input) : input;
    if (out.some((d, i) => d !== short[i])) {
      throw new TypeError(
        `Residual: main path gives ${formatShape(out)} but the shortcut gives ${
          formatShape(short)
        }` +
          " (use use1x1 when channels or stride change)",
      );
    }
    return out;
  };
  return composite({
    kind: "Residual",
    children,
    outputShape: check,
    flops: (input) => flopsThrough(main, input) + (conv3 ? conv3.flops(input) : 0),
    trace: (input) => [
      ..._traceThrough(
        [["conv1", conv1], ["bn1", bn1], [null, main[2]], ["conv2", conv2], ["bn2", bn2]],
        input,
      ),
      ...(conv3 ? [{ name: "conv3", layer: conv3, input }] : []),
    ],
    forward(x, ctx) {
      check(x.shape);
      const m = stepsForward(steps, x, ctx);
      const s = conv3?.forward(x, ctx);
      const y = ctx.gpu.empty(m.y.shape, { dtype: m.y.dtype });
      addForward({ y, a: m.y, b: s?.y ?? x }, { relu: true });
      release(m.y, s?.y);
      return { y, cache: { main: m.caches, short: s?.cache ?? null, y: y.retain() } };
    },
    backward(dy, { cache, ctx, needDx }) {
      const dsum = ctx.gpu.empty(dy.shape, { dtype: dy.dtype });
      addBackwardRelu({ dx: dsum, dy, y: cache.y });
      release(cache.y);
      const dxMain = stepsBackward(steps, cache.main, { dy: dsum, ctx, needDx });
      const dxShort = conv3
        ? conv3.backward(dsum, { cache: cache.short as never, ctx, needDx })
        : null;
      if (!needDx) {
        release(dsum, dxMain, dxShort);
        return null;
      }
      accumulate({ y: dxMain!, x: dxShort ?? dsum });
      release(dsum, dxShort);
      return dxMain;
    },
  });
}

// ------------------------------------------------------------------------- Inception ----

/** What an Inception forward saves: per branch, its steps' caches, and the output. */
export type InceptionCache = ConcatCache;

/**
 * GoogLeNet's Inception block as d2l defines it: four parallel paths (1×1; 1×1→3×3; 1×1→5×5;
 * 3×3 max-pool→1×1), each ending in ReLU, concatenated on channels. State-dict children: p1_1,
 * p2_1, p2_2, p3_1, p3_2, p4_1 (the pool), p4_2. Each branch's last conv applies its ReLU and
 * writes straight into its channels of the output.
 *
 * @example
 * ```ts
 * import { inception } from "@modern-cnn/webgpu/layers";
 * inception({ inChannels: 192, c1: 64, c2: [96, 128], c3: [16, 32], c4: 32 }).outputShape([1, 192, 12, 12]);
 * // [1, 256, 12, 12]
 * ```
 */
export function inception(options: {
  inChannels: number;
  c1: number;
  c2: readonly [number, number];
  c3: readonly [number, number];
  c4: number;
}): Layer<InceptionCache> {
  const { inChannels: cin, c1, c2, c3, c4 } = options;
  const p1_1 = conv2d({ inChannels: cin, outChannels: c1, kernel: 1 });
  const p2_1 = conv2d({ inChannels: cin, outChannels: c2[0], kernel: 1 });
  const p2_2 = conv2d({ inChannels: c2[0], outChannels: c2[1], kernel: 3, padding: 1 });
  const p3_1 = conv2d({ inChannels: cin, outChannels: c3[0], kernel: 1 });
  const p3_2 = conv2d({ inChannels: c3[0], outChannels: c3[1], kernel: 5, padding: 2 });
  const p4_1 = maxPool2d({ kernel: 3, stride: 1, padding: 1 });
  const p4_2 = conv2d({ inChannels: cin, outChannels: c4, kernel: 1 });
  const relu = () => activation("relu");
  const named: (readonly [string | null, Layer])[][] = [
    [["p1_1", p1_1], [null, relu()]],
    [["p2_1", p2_1], [null, relu()], ["p2_2", p2_2], [null, relu()]],
    [["p3_1", p3_1], [null, relu()], ["p3_2", p3_2], [null, relu()]],
    [["p4_1", p4_1], ["p4_2", p4_2], [null, relu()]],
  ];
  const paths: Layer[][] = named.map((p) => p.map(([, l]) => l));
  const widths = [c1, c2[1], c3[1], c4];
  const cTotal = widths.reduce((a, b) => a + b, 0);
  // Branches 1-3 start with a 1×1 convolution of x and its ReLU: one GEMM (planConcat).
  const plan: ConcatPlan = planConcat(paths.map((layers, i) => ({
    steps: planSteps(layers, { into: true }),
    channelOffset: widths.slice(0, i).reduce((a, b) => a + b, 0),
    channels: widths[i],
  })));
  const check = (input: Shape): Shape => {
    const outs = paths.map((p) => shapeThrough(p, input));
    return [input[0], cTotal, outs[0][2], outs[0][3]];
  };
  return composite({
    kind: "Inception",
    children: [
      ["p1_1", p1_1],
      ["p2_1", p2_1],
      ["p2_2", p2_2],
      ["p3_1", p3_1],
      ["p3_2", p3_2],
      ["p4_1", p4_1],
      ["p4_2", p4_2],
    ],
    outputShape: check,
    flops: (input) => paths.reduce((total, p) => total + flopsThrough(p, input), 0),
    trace: (input) => named.flatMap((p) => _traceThrough(p, input)),
    forward: (x, ctx) => concatForward(plan, { x, shape: check(x.shape), ctx }),
    backward: (dy, { cache, ctx, needDx }) => concatBackward(plan, cache, { dy, ctx, needDx }),
  });
}

// ------------------------------------------------------------------------ DenseBlock ----

/**
 * d2l's `conv_block`: BatchNorm → ReLU → 3×3 conv (a `Sequential` of three).
 *
 * @example
 * ```ts
 * import { denseConvBlock } from "@modern-cnn/webgpu/layers";
 * const b = denseConvBlock(64, 32);
 * ```
 */
export function denseConvBlock(inChannels: number, channels: number): Layer<ChainCache> {
  return sequential(denseConvLayers(inChannels, channels));
}

/** The layers of {@linkcode denseConvBlock}: [BatchNorm, ReLU, 3×3 conv]. */
function denseConvLayers(inChannels: number, channels: number): Layer[] {
  return [
    batchNorm({ channels: inChannels }),
    activation("relu"),
    conv2d({ inChannels, outChannels: channels, kernel: 3, padding: 1 }),
  ];
}

/** What a dense block's forward saves: per conv block, its concatenation's cache. */
export interface DenseBlockCache {
  /** Per conv block, the cache of `cat(X, blk(X))`. */
  readonly caches: ConcatCache[];
}

/**
 * DenseNet's dense block as d2l defines it: each conv block's output is concatenated to its
 * input on channels (`X = cat(X, blk(X))`). State-dict child: `net` (a Sequential of conv
 * blocks). Each conv writes straight into its channels of the next concatenation, and the input
 * is copied into the first ones.
 *
 * @example
 * ```ts
 * import { denseBlock } from "@modern-cnn/webgpu/layers";
 * denseBlock({ numConvs: 4, inChannels: 64, growth: 32 }).outputShape([1, 64, 24, 24]);
 * // [1, 192, 24, 24]
 * ```
 */
export function denseBlock(
  options: { numConvs: number; inChannels: number; growth: number },
): Layer<DenseBlockCache> {
  const { numConvs, inChannels, growth } = options;
  const parts = Array.from(
    { length: numConvs },
    (_, i) => denseConvLayers(inChannels + i * growth, growth),
  );
  const blocks = parts.map((l) => sequential(l));
  const net = sequential(blocks);
  // Conv block i: cat(X, blk(X)) with X of c = inChannels + i·growth channels: the block's
  // branch into channels [c, c + growth), then X itself into [0, c).
  const stages = parts.map((layers, i): ConcatPlan => {
    const c = inChannels + i * growth;
    return planConcat([
      { steps: planSteps(layers, { into: true }), channelOffset: c, channels: growth },
      { steps: [], channelOffset: 0, channels: c },
    ]);
  });
  const cOut = inChannels + numConvs * growth;
  const check = (input: Shape): Shape => {
    if (input.length !== 4 || input[1] !== inChannels) {
      throw new TypeError(
        `DenseBlock: input ${formatShape(input)}, expected [n, ${inChannels}, h, w]`,
      );
    }
    return [input[0], cOut, input[2], input[3]];
  };
  return composite({
    kind: "DenseBlock",
    children: [["net", net]],
    outputShape: check,
    flops: (input) =>
      parts.reduce(
        (t, p, i) => t + flopsThrough(p, [input[0], inChannels + i * growth, input[2], input[3]]),
        0,
      ),
    trace: (input) =>
      blocks.map((layer, i) => ({
        name: `net.${i}`,
        layer,
        input: [input[0], inChannels + i * growth, input[2], input[3]],
      })),
    forward(x, ctx) {
      check(x.shape);
      const [n, , h, w] = x.shape;
      const caches: ConcatCache[] = [];
      let cur = x;
      stages.forEach((plan, i) => {
        const shape = [n, inChannels + (i + 1) * growth, h, w];
        const { y: next, cache } = concatForward(plan, { x: cur, shape, ctx });
        caches.push(cache);
        if (cur !== x) cur.dispose();
        cur = next;
      });
      return { y: cur === x ? x.retain() : cur, cache: { caches } };
    },
    backward(dy, { cache, ctx, needDx }) {
      let g: Tensor | null = dy;
      for (let i = numConvs - 1; i >= 0 && g; i--) {
        const need = i > 0 || needDx;
        const dX: Tensor | null = concatBackward(stages[i], cache.caches[i], {
          dy: g,
          ctx,
          needDx: need,
        });
        if (g !== dy) g.dispose();
        g = dX;
      }
      return g === dy ? dy.retain() : g;
    },
  });
}
