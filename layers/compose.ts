/**
 * Compositions of layers: chains (`Sequential` and named chains), Inception's parallel branches
 * concatenated on channels, ResNet's residual block, DenseNet's dense block. Each backward
 * mirrors its forward in reverse.
 *
 * @module
 */

import { formatShape, type Shape, type Tensor } from "../gpu/mod.ts";
import { accumulate, addBackwardRelu, addForward } from "../kernels/elementwise.ts";
import { concatChannels, splitChannels } from "../kernels/concat.ts";
import { activation, batchNorm, conv2d, type ConvCache, maxPool2d } from "./basic.ts";
import type { Ctx, Layer } from "./layer.ts";
import { release } from "./layer.ts";

const NONE: readonly never[] = Object.freeze([]);

/**
 * The execution steps of a list of layers: the layers themselves, or, when fusing, each
 * "producer, activation" pair whose producer offers `fuseActivation` replaced by the fused step
 * (conv/linear/BatchNorm + activation). Memoized per list.
 */
function plan(layers: readonly Layer[], ctx: Ctx): readonly Layer[] {
  if (ctx.fuse === false) return layers;
  let steps = fusedPlans.get(layers);
  if (steps) return steps;
  steps = [];
  for (let i = 0; i < layers.length; i++) {
    const next = layers[i + 1];
    const fused = next?.activation ? layers[i].fuseActivation?.(next.activation) : null;
    if (fused) {
      steps.push(fused);
      i++;
    } else {
      steps.push(layers[i]);
    }
  }
  fusedPlans.set(layers, steps);
  return steps;
}
const fusedPlans = new WeakMap<readonly Layer[], Layer[]>();

/** What a chain's forward saves: the steps it ran (fused or not) and each step's cache. */
export interface ChainCache {
  /** The steps run, in order. */
  readonly steps: readonly Layer[];
  /** Each step's cache. */
  readonly caches: unknown[];
}

function chainForward(
  layers: readonly Layer[],
  x: Tensor,
  ctx: Ctx,
): { y: Tensor; cache: ChainCache } {
  const steps = plan(layers, ctx);
  const caches: unknown[] = [];
  let h = x;
  for (const layer of steps) {
    const { y, cache } = layer.forward(h, ctx);
    if (h !== x) h.dispose();
    caches.push(cache);
    h = y;
  }
  if (h === x) h = x.retain();
  return { y: h, cache: { steps, caches } };
}

function chainBackward(
  dy: Tensor,
  options: { cache: ChainCache; ctx: Ctx; needDx: boolean },
): Tensor | null {
  const { steps, caches } = options.cache;
  let g: Tensor | null = dy;
  for (let i = steps.length - 1; i >= 0; i--) {
    const needDx = i > 0 || options.needDx;
    const next: Tensor | null = steps[i].backward(g!, {
      cache: caches[i],
      ctx: options.ctx,
      needDx,
    });
    if (g !== dy) g!.dispose();
    g = next;
  }
  if (g === dy) return dy.retain();
  return g;
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
  return {
    kind: options.kind ?? "Sequential",
    children: entries.filter(([name]) => name !== null) as [string, Layer][],
    params: NONE,
    buffers: NONE,
    counters: NONE,
    outputShape: (input) => layers.reduce((s, l) => l.outputShape(s), input),
    flops(input) {
      let total = 0, s = input;
      for (const l of layers) {
        total += l.flops(s);
        s = l.outputShape(s);
      }
      return total;
    },
    forward: (x, ctx) => chainForward(layers, x, ctx),
    backward: (dy, { cache, ctx, needDx }) => chainBackward(dy, { cache, ctx, needDx }),
  };
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
): Layer<{ main: ChainCache; short: unknown; y: Tensor }> {
  const { inChannels, channels } = options;
  const stride = options.stride ?? 1;
  const conv1 = conv2d({ inChannels, outChannels: channels, kernel: 3, padding: 1, stride });
  const conv2 = conv2d({ inChannels: channels, outChannels: channels, kernel: 3, padding: 1 });
  const conv3 = options.use1x1
    ? conv2d({ inChannels, outChannels: channels, kernel: 1, stride })
    : null;
  const bn1 = batchNorm({ channels }), bn2 = batchNorm({ channels });
  const main = [conv1, bn1, activation("relu"), conv2, bn2];
  const children: [string, Layer][] = [["conv1", conv1], ["conv2", conv2]];
  if (conv3) children.push(["conv3", conv3]);
  children.push(["bn1", bn1], ["bn2", bn2]);
  const check = (input: Shape): Shape => {
    const out = main.reduce((s, l) => l.outputShape(s), input);
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
  return {
    kind: "Residual",
    children,
    params: NONE,
    buffers: NONE,
    counters: NONE,
    outputShape: check,
    flops: (input) =>
      main.reduce((acc, l) => {
        acc.f += l.flops(acc.s);
        acc.s = l.outputShape(acc.s);
        return acc;
      }, { f: 0, s: input }).f + (conv3 ? conv3.flops(input) : 0),
    forward(x, ctx) {
      check(x.shape);
      const m = chainForward(main, x, ctx);
      let shortY: Tensor, shortCache: unknown = null;
      if (conv3) {
        const f = conv3.forward(x, ctx);
        shortY = f.y;
        shortCache = f.cache;
      } else {
        shortY = x;
      }
      const y = ctx.gpu.empty(m.y.shape, { dtype: m.y.dtype });
      addForward({ y, a: m.y, b: shortY }, { relu: true });
      m.y.dispose();
      if (conv3) shortY.dispose();
      return { y, cache: { main: m.cache, short: shortCache, y: y.retain() } };
    },
    backward(dy, { cache, ctx, needDx }) {
      const dsum = ctx.gpu.empty(dy.shape, { dtype: dy.dtype });
      addBackwardRelu({ dx: dsum, dy, y: cache.y });
      release(cache.y);
      const dxMain = chainBackward(dsum, { cache: cache.main, ctx, needDx });
      let dxShort: Tensor | null = null;
      if (conv3) dxShort = conv3.backward(dsum, { cache: cache.short as never, ctx, needDx });
      if (!needDx) {
        release(dsum, dxMain, dxShort);
        return null;
      }
      accumulate({ y: dxMain!, x: dxShort ?? dsum });
      release(dsum, dxShort);
      return dxMain;
    },
  };
}

// ------------------------------------------------------------------------- Inception ----

/** What an Inception forward saves: per branch, its chain caches (and the output when fused). */
export type InceptionCache =
  | { readonly kind: "plain"; readonly caches: ChainCache[] }
  | {
    readonly kind: "fused";
    readonly caches: { pre: ChainCache; conv: unknown }[];
    /** The block's output (its branches' ReLU masks). */
    readonly y: Tensor;
  };

/**
 * GoogLeNet's Inception block as d2l defines it: four parallel paths (1×1; 1×1→3×3; 1×1→5×5;
 * 3×3 max-pool→1×1), each ending in ReLU, concatenated on channels. State-dict children: p1_1,
 * p2_1, p2_2, p3_1, p3_2, p4_1 (the pool), p4_2. Branch outputs are written straight into the
 * concatenated output at their channel offsets.
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
  const branches: Layer[][] = [
    [p1_1, relu()],
    [p2_1, relu(), p2_2, relu()],
    [p3_1, relu(), p3_2, relu()],
    [p4_1, p4_2, relu()],
  ];
  // Each branch without its final conv and ReLU (the fused path runs those as one step).
  const heads = branches.map((b) => b.slice(0, -2));
  const widths = [c1, c2[1], c3[1], c4];
  const cTotal = widths.reduce((a, b) => a + b, 0);
  const offsets = widths.map((_, i) => widths.slice(0, i).reduce((a, b) => a + b, 0));
  const check = (input: Shape): Shape => {
    const outs = branches.map((b) => b.reduce((s, l) => l.outputShape(s), input));
    return [input[0], cTotal, outs[0][2], outs[0][3]];
  };
  return {
    kind: "Inception",
    children: [["p1_1", p1_1], ["p2_1", p2_1], ["p2_2", p2_2], ["p3_1", p3_1], ["p3_2", p3_2], [
      "p4_1",
      p4_1,
    ], ["p4_2", p4_2]],
    params: NONE,
    buffers: NONE,
    counters: NONE,
    outputShape: check,
    flops: (input) =>
      branches.reduce((total, b) => {
        let s = input;
        for (const l of b) {
          total += l.flops(s);
          s = l.outputShape(s);
        }
        return total;
      }, 0),
    forward(x, ctx) {
      const shape = check(x.shape);
      const y = ctx.gpu.empty(shape, { dtype: x.dtype });
      const hw = shape[2] * shape[3];
      if (ctx.fuse === false) {
        const caches = branches.map((b, i) => {
          const f = chainForward(b, x, ctx);
          concatChannels({ y, x: f.y }, {
            n: shape[0],
            hw,
            cTotal,
            cOffset: offsets[i],
            c: widths[i],
          });
          f.y.dispose();
          return f.cache;
        });
        return { y, cache: { kind: "plain", caches } };
      }
      // Fused: each branch's last conv applies its ReLU and writes straight into its channels
      // of y; y is saved (a handle) for those ReLUs' backward.
      const caches = branches.map((b, i) => {
        const pre = chainForward(heads[i], x, ctx);
        const conv = b[b.length - 2].forwardInto!(pre.y, ctx, {
          y,
          channelOffset: offsets[i],
          activation: "relu",
        });
        pre.y.dispose();
        return { pre: pre.cache, conv };
      });
      return { y, cache: { kind: "fused", caches, y: y.retain() } };
    },
    backward(dy, { cache, ctx, needDx }) {
      const [n, , h, w] = dy.shape;
      let dx: Tensor | null = null;
      for (let i = 0; i < branches.length; i++) {
        const dBranch = ctx.gpu.empty([n, widths[i], h, w], { dtype: dy.dtype });
        const slice = { n, hw: h * w, cTotal, cOffset: offsets[i], c: widths[i] };
        let g: Tensor | null;
        if (cache.kind === "plain") {
          splitChannels({ dx: dBranch, dy }, slice);
          g = chainBackward(dBranch, { cache: cache.caches[i], ctx, needDx });
        } else {
          // The branch's final ReLU backward reads its slice of y: one pass with the split.
          splitChannels({ dx: dBranch, dy, y: cache.y }, { ...slice, activation: "relu" });
          const { pre, conv } = cache.caches[i];
          const head = heads[i].length > 0;
          const dh = branches[i][branches[i].length - 2].backward(dBranch, {
            cache: conv,
            ctx,
            needDx: head || needDx,
          });
          g = head ? chainBackward(dh!, { cache: pre, ctx, needDx }) : dh;
          if (head) dh!.dispose();
        }
        dBranch.dispose();
        if (!g) continue;
        if (dx) {
          accumulate({ y: dx, x: g });
          g.dispose();
        } else {
          dx = g;
        }
      }
      if (cache.kind === "fused") release(cache.y);
      return dx;
    },
  };
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
function denseConvLayers(
  inChannels: number,
  channels: number,
): readonly [Layer<unknown>, Layer<unknown>, Layer<ConvCache>] {
  return [
    batchNorm({ channels: inChannels }),
    activation("relu"),
    conv2d({ inChannels, outChannels: channels, kernel: 3, padding: 1 }),
  ];
}

/**
 * DenseNet's dense block as d2l defines it: each conv block's output is concatenated to its
 * input on channels (`X = cat(X, blk(X))`). State-dict child: `net` (a Sequential of conv
 * blocks).
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
  // Each conv block as its layers [bn, relu, conv]: the fused path runs bn+relu as one step and
  // lets the conv write straight into the next concatenation.
  const parts = Array.from(
    { length: numConvs },
    (_, i) => denseConvLayers(inChannels + i * growth, growth),
  );
  const heads = parts.map((l) => [l[0], l[1]]);
  const blocks = parts.map((l) => sequential(l));
  const net = sequential(blocks);
  const cOut = inChannels + numConvs * growth;
  const check = (input: Shape): Shape => {
    if (input.length !== 4 || input[1] !== inChannels) {
      throw new TypeError(
        `DenseBlock: input ${formatShape(input)}, expected [n, ${inChannels}, h, w]`,
      );
    }
    return [input[0], cOut, input[2], input[3]];
  };
  return {
    kind: "DenseBlock",
    children: [["net", net]],
    params: NONE,
    buffers: NONE,
    counters: NONE,
    outputShape: check,
    flops: (input) =>
      blocks.reduce(
        (t, b, i) => t + b.flops([input[0], inChannels + i * growth, input[2], input[3]]),
        0,
      ),
    forward(x, ctx) {
      check(x.shape);
      const [n, , h, w] = x.shape;
      const caches: DenseBlockCache["caches"] = [];
      let cur = x;
      for (let i = 0; i < numConvs; i++) {
        const c = inChannels + i * growth;
        const next = ctx.gpu.empty([n, c + growth, h, w], { dtype: x.dtype });
        const slice = { n, hw: h * w, cTotal: c + growth };
        if (ctx.fuse === false) {
          const f = blocks[i].forward(cur, ctx);
          caches.push({ block: f.cache });
          concatChannels({ y: next, x: f.y }, { ...slice, cOffset: c, c: growth });
          f.y.dispose();
        } else {
          // The conv writes its output straight into channels [c, c + growth) of next.
          const pre = chainForward(heads[i], cur, ctx);
          const conv = parts[i][2].forwardInto!(pre.y, ctx, { y: next, channelOffset: c });
          pre.y.dispose();
          caches.push({ pre: pre.cache, conv });
        }
        concatChannels({ y: next, x: cur }, { ...slice, cOffset: 0, c });
        if (cur !== x) cur.dispose();
        cur = next;
      }
      if (cur === x) cur = x.retain();
      return { y: cur, cache: { caches } };
    },
    backward(dy, { cache, ctx, needDx }) {
      const [n, , h, w] = dy.shape;
      let g = dy;
      for (let i = numConvs - 1; i >= 0; i--) {
        const c = inChannels + i * growth;
        const slice = { n, hw: h * w, cTotal: c + growth };
        const dY = ctx.gpu.empty([n, growth, h, w], { dtype: dy.dtype });
        splitChannels({ dx: dY, dy: g }, { ...slice, cOffset: c, c: growth });
        const need = i > 0 || needDx;
        const ci = cache.caches[i];
        let dXblk: Tensor | null;
        if (ci.block) {
          dXblk = blocks[i].backward(dY, { cache: ci.block, ctx, needDx: need });
        } else {
          const dh = parts[i][2].backward(dY, { cache: ci.conv as ConvCache, ctx, needDx: true })!;
          dXblk = chainBackward(dh, { cache: ci.pre!, ctx, needDx: need });
          dh.dispose();
        }
        dY.dispose();
        let dX: Tensor | null = null;
        if (need) {
          dX = dXblk!;
          splitChannels({ dx: dX, dy: g }, { ...slice, cOffset: 0, c, accumulate: true });
        }
        if (g !== dy) g.dispose();
        if (!dX) return null;
        g = dX;
      }
      return g === dy ? dy.retain() : g;
    },
  };
}

/** What a dense block's forward saves, per conv block: its chain cache, or the fused parts. */
export interface DenseBlockCache {
  /** Per conv block: `block` (unfused) or `pre` (bn+relu) and `conv` (fused). */
  readonly caches: { block?: ChainCache; pre?: ChainCache; conv?: unknown }[];
}
