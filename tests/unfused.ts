// An unfused reference executor of a model's layer tree, for the tests: every leaf layer runs by
// itself (its forward without an epilogue: a conv then a separate activation kernel), and each
// composition as d2l's module computes it, with the separate glue kernels (a branch's output
// copied into the concatenation with concatChannels, split back with splitChannels). The library
// runs the fused plan (layers/plan.ts); tests/fusion_test.ts checks that both give the same bits,
// and tests/precision_test.ts runs this executor in f16 and with a hook that rounds every layer's
// output and input gradient (the compositions' too) to f16.
//
// It knows the compositions of layers/compose.ts by kind and child names (as
// tests/fixtures/d2l_nets.py does): Residual (conv1, conv2, conv3?, bn1, bn2), Inception (p1_1 ..
// p4_2), DenseBlock (net: its conv blocks); any other layer with children is a chain of them,
// where a Linear after a 4-d output gets the unnamed `x.view(n, -1)` of MobileNetV1's forward.
import type { Tensor } from "../gpu/mod.ts";
import { accumulate, addBackwardRelu, addForward } from "../kernels/elementwise.ts";
import { concatChannels, splitChannels } from "../kernels/concat.ts";
import {
  activation,
  type BackwardOptions,
  type Ctx,
  type Epilogue,
  flatten,
  type Forward,
  type Layer,
  release,
  type StatsSink,
} from "../layers/mod.ts";

/** A node of the reference: the forward and backward of one layer (or composition). */
export interface Reference {
  forward(x: Tensor, ctx: Ctx, epilogue?: Epilogue): Forward<unknown>;
  backward(dy: Tensor, options: BackwardOptions<unknown>): Tensor | null;
  /** The layer of a leaf (its own forward, which may take an epilogue). */
  readonly leaf?: Layer;
}

/**
 * Options of the reference: `batchStats`, the one fusion it keeps (a conv/linear followed by a
 * batch norm gathers the batch statistics in its store and the batch norm merges them, as the
 * plan of layers/plan.ts pairs them), so that the rest is compared bit for bit.
 */
export interface ReferenceOptions {
  readonly batchStats?: boolean;
}

/** Called on each new output and input gradient of every layer of the tree. */
export type Hook = (t: Tensor) => void;

/** The unfused reference of `layer`; `hook` sees every tensor a layer of its tree returns. */
export function unfused(layer: Layer, hook?: Hook, options: ReferenceOptions = {}): Reference {
  const ref = build(layer, hook, options);
  if (!hook) return ref;
  return {
    forward(x, ctx) {
      const f = ref.forward(x, ctx);
      if (f.y !== x) hook(f.y);
      return f;
    },
    backward(dy, options) {
      const dx = ref.backward(dy, options);
      if (dx && dx !== dy) hook(dx);
      return dx;
    },
  };
}

function build(layer: Layer, hook: Hook | undefined, options: ReferenceOptions): Reference {
  const child = (name: string) => {
    const c = layer.children.find(([n]) => n === name);
    return c ? unfused(c[1], hook, options) : null;
  };
  const chain = (steps: Reference[], x: Tensor, ctx: Ctx) =>
    chainForward(steps, x, ctx, options.batchStats ?? false);
  // Activations and views the compositions create themselves (not children: no hook).
  const relu = () => unfused(activation("relu"));
  switch (layer.kind) {
    case "Residual":
      return residualRef(child("conv1")!, child("bn1")!, relu(), child("conv2")!, child("bn2")!, {
        conv3: child("conv3"),
        chain,
      });
    case "Inception": {
      const [p1_1, p2_1, p2_2, p3_1, p3_2, p4_1, p4_2] = [
        "p1_1",
        "p2_1",
        "p2_2",
        "p3_1",
        "p3_2",
        "p4_1",
        "p4_2",
      ]
        .map((n) => child(n)!);
      return inceptionRef(layer, chain, [
        [p1_1, relu()],
        [p2_1, relu(), p2_2, relu()],
        [p3_1, relu(), p3_2, relu()],
        [p4_1, p4_2, relu()],
      ]);
    }
    case "DenseBlock": {
      const blocks = layer.children[0][1].children.map(([, b]) => b);
      return denseRef(blocks, blocks.map((b) => unfused(b, hook, options)));
    }
  }
  if (layer.children.length === 0) {
    return {
      forward: (x, ctx, epilogue) => layer.forward(x, ctx, epilogue),
      backward: (dy, o) => layer.backward(dy, o),
      leaf: layer,
    };
  }
  const view = unfused(flatten());
  const refs = layer.children.map(([, c]) => unfused(c, hook, options));
  return {
    forward(x, ctx) {
      // The chain's steps: the children, with MobileNetV1's x.view(n, -1) before its Linear.
      const steps: Reference[] = [];
      let shape = x.shape;
      layer.children.forEach(([, c], i) => {
        if (c.kind === "Linear" && shape.length === 4) {
          steps.push(view);
          shape = flatten().outputShape(shape);
        }
        steps.push(refs[i]);
        shape = c.outputShape(shape);
      });
      return chain(steps, x, ctx);
    },
    backward: (dy, o) => chainBackward(dy, o as BackwardOptions<ChainRefCache>),
  };
}

interface ChainRefCache {
  steps: Reference[];
  caches: unknown[];
}

/** Whether a leaf's fusion lists epilogue part `part`. */
const accepts = (r: Reference | undefined, part: keyof Epilogue) => {
  const f = r?.leaf?.fusion;
  return f !== undefined && "epilogue" in f && f.epilogue.includes(part);
};

function chainForward(
  steps: Reference[],
  x: Tensor,
  ctx: Ctx,
  batchStats: boolean,
): Forward<ChainRefCache> {
  const caches: unknown[] = [];
  let h = x;
  let sink: StatsSink | undefined;
  for (const [i, s] of steps.entries()) {
    // The producer/batch-norm pairs of layers/plan.ts: statistics gathered, then merged.
    const merge = sink;
    sink = batchStats && ctx.training && accepts(s, "stats") &&
        accepts(steps[i + 1], "batchStats")
      ? {}
      : undefined;
    const epilogue = sink ? { stats: sink } : merge ? { batchStats: merge } : undefined;
    const { y, cache } = s.forward(h, ctx, epilogue);
    merge?.partials?.partials.dispose();
    if (h !== x) h.dispose();
    caches.push(cache);
    h = y;
  }
  return { y: h === x ? x.retain() : h, cache: { steps, caches } };
}

function chainBackward(dy: Tensor, o: BackwardOptions<ChainRefCache>): Tensor | null {
  const { steps, caches } = o.cache;
  let g: Tensor | null = dy;
  for (let i = steps.length - 1; i >= 0; i--) {
    const next: Tensor | null = steps[i].backward(g!, {
      cache: caches[i],
      ctx: o.ctx,
      needDx: i > 0 || o.needDx,
    });
    if (g !== dy) g!.dispose();
    g = next;
  }
  return g === dy ? dy.retain() : g;
}

function residualRef(
  conv1: Reference,
  bn1: Reference,
  relu: Reference,
  conv2: Reference,
  bn2: Reference,
  options: {
    conv3: Reference | null;
    chain: (steps: Reference[], x: Tensor, ctx: Ctx) => Forward<ChainRefCache>;
  },
): Reference {
  const main = [conv1, bn1, relu, conv2, bn2];
  const { conv3, chain } = options;
  type Cache = { main: ChainRefCache; short: unknown; y: Tensor };
  return {
    forward(x, ctx) {
      const m = chain(main, x, ctx);
      const s = conv3?.forward(x, ctx);
      const y = ctx.gpu.empty(m.y.shape, { dtype: m.y.dtype });
      addForward({ y, a: m.y, b: s?.y ?? x }, { relu: true });
      release(m.y, s?.y);
      return { y, cache: { main: m.cache, short: s?.cache, y: y.retain() } };
    },
    backward(dy, o) {
      const { cache, ctx, needDx } = o as BackwardOptions<Cache>;
      const dsum = ctx.gpu.empty(dy.shape, { dtype: dy.dtype });
      addBackwardRelu({ dx: dsum, dy, y: cache.y });
      release(cache.y);
      const dxMain = chainBackward(dsum, { cache: cache.main, ctx, needDx });
      const dxShort = conv3 ? conv3.backward(dsum, { cache: cache.short, ctx, needDx }) : null;
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

function inceptionRef(
  layer: Layer,
  chain: (steps: Reference[], x: Tensor, ctx: Ctx) => Forward<ChainRefCache>,
  branches: Reference[][],
): Reference {
  type Cache = { caches: ChainRefCache[]; widths: number[] };
  return {
    forward(x, ctx) {
      const shape = layer.outputShape(x.shape);
      const y = ctx.gpu.empty(shape, { dtype: x.dtype });
      const [n, cTotal, h, w] = shape;
      let cOffset = 0;
      const widths: number[] = [];
      const caches = branches.map((b) => {
        const f = chain(b, x, ctx);
        const c = f.y.shape[1];
        concatChannels({ y, x: f.y }, { n, hw: h * w, cTotal, cOffset, c });
        f.y.dispose();
        cOffset += c;
        widths.push(c);
        return f.cache;
      });
      return { y, cache: { caches, widths } };
    },
    backward(dy, o) {
      const { cache, ctx, needDx } = o as BackwardOptions<Cache>;
      const [n, cTotal, h, w] = dy.shape;
      let dx: Tensor | null = null, cOffset = 0;
      cache.widths.forEach((c, i) => {
        const dBranch = ctx.gpu.empty([n, c, h, w], { dtype: dy.dtype });
        splitChannels({ dx: dBranch, dy }, { n, hw: h * w, cTotal, cOffset, c });
        cOffset += c;
        const g = chainBackward(dBranch, { cache: cache.caches[i], ctx, needDx });
        dBranch.dispose();
        if (!g) return;
        if (dx) {
          accumulate({ y: dx, x: g });
          g.dispose();
        } else {
          dx = g;
        }
      });
      return dx;
    },
  };
}

function denseRef(blocks: Layer[], refs: Reference[]): Reference {
  return {
    forward(x, ctx) {
      const [n, , h, w] = x.shape;
      const caches: unknown[] = [];
      let cur = x;
      refs.forEach((r, i) => {
        const c = cur.shape[1], growth = blockGrowth(blocks[i]);
        const next = ctx.gpu.empty([n, c + growth, h, w], { dtype: x.dtype });
        const slice = { n, hw: h * w, cTotal: c + growth };
        const f = r.forward(cur, ctx);
        caches.push(f.cache);
        concatChannels({ y: next, x: f.y }, { ...slice, cOffset: c, c: growth });
        f.y.dispose();
        concatChannels({ y: next, x: cur }, { ...slice, cOffset: 0, c });
        if (cur !== x) cur.dispose();
        cur = next;
      });
      return { y: cur === x ? x.retain() : cur, cache: caches };
    },
    backward(dy, o) {
      const { cache, ctx, needDx } = o as BackwardOptions<unknown[]>;
      const [n, , h, w] = dy.shape;
      let g = dy;
      for (let i = refs.length - 1; i >= 0; i--) {
        const cTotal = g.shape[1], growth = blockGrowth(blocks[i]), c = cTotal - growth;
        const slice = { n, hw: h * w, cTotal };
        const dY = ctx.gpu.empty([n, growth, h, w], { dtype: dy.dtype });
        splitChannels({ dx: dY, dy: g }, { ...slice, cOffset: c, c: growth });
        const need = i > 0 || needDx;
        const dXblk = refs[i].backward(dY, { cache: cache[i], ctx, needDx: need });
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

/** A DenseNet conv block's growth: the output channels of its conv (its weight's first dim). */
function blockGrowth(block: Layer): number {
  const conv = block.children.at(-1)![1];
  return conv.own.params[0].shape[0];
}
