/**
 * The layer protocol: a layer is a small value that knows its parameters, its output shape, a
 * `forward` that returns the output plus a typed cache of what backward needs, and a `backward`
 * that takes the output gradient and that cache, returns the input gradient and accumulates
 * parameter gradients.
 *
 * Ownership rules (they make activation memory follow liveness through the buffer pool):
 * - `forward(x)` does not take `x`: the caller still owns it. It returns a new `y` the caller
 *   owns. A layer that needs `x` (or `y`) in backward keeps its own handle (`retain()`) in the
 *   cache.
 * - `backward(dy, { cache })` does not take `dy`; it returns a new `dx` the caller owns (or
 *   `null` when `needDx` is false) and disposes every handle in its cache.
 * - Parameter gradients (`param.grad`) are ACCUMULATED (`+=`), as in PyTorch; clear them with
 *   `zeroGrad` before each step.
 *
 * Layers are built with {@linkcode leaf} (defaults for what a leaf lacks: state, FLOPs) and
 * {@linkcode composite}. Fusion is one optional capability ({@linkcode Fusion}): a producer's
 * forward takes an {@linkcode Epilogue} (an activation, writing into a channel slice), which the
 * compositions decide once, when built, by one plan rewrite (`layers/plan.ts`).
 *
 * @module
 */

import { formatShape, type Gpu, type Shape, type Tensor } from "../gpu/mod.ts";
import type { ActivationKind } from "../kernels/activation.ts";
import type { ChannelPartials } from "../kernels/batchnorm/partials.ts";
import type { GradSumsSink } from "../kernels/batchnorm/grad_sums.ts";

/** How a parameter is initialized (d2l's `train_ch6` recipe on top of PyTorch's defaults). */
export type InitKind = "xavier-uniform" | "bias-uniform" | "ones" | "zeros";

/** A trainable f32 parameter: its spec and, once a model is materialized, its tensors. */
export interface Param {
  /** The state-dict leaf name (`weight`, `bias`). */
  readonly name: string;
  /** Its shape in PyTorch's layout (conv OIHW, linear [out, in]). */
  readonly shape: Shape;
  /** Initialization. */
  readonly init: InitKind;
  /** Fan-in and fan-out as `torch.nn.init` computes them. */
  readonly fanIn: number;
  /** Fan-out, for Xavier. */
  readonly fanOut: number;
  /** The value on the GPU (set by materialization). */
  value: Tensor | null;
  /** The gradient, accumulated by backward (set by materialization). */
  grad: Tensor | null;
  /** SGD momentum buffer (created by the optimizer on first use). */
  momentum: Tensor | null;
  /**
   * An f16 working copy of `value` (weights only, when the model runs in f16: `value` stays the
   * f32 master the optimizer updates, and rewrites this copy after each step); else null.
   */
  half: Tensor | null;
}

/** A non-trainable f32 state tensor (BatchNorm running statistics). */
export interface StateBuffer {
  /** The state-dict leaf name (`running_mean`, `running_var`). */
  readonly name: string;
  /** Its shape. */
  readonly shape: Shape;
  /** Initialization. */
  readonly init: "ones" | "zeros";
  /** The value on the GPU (set by materialization). */
  value: Tensor | null;
}

/** A scalar int64 counter kept on the CPU (BatchNorm's `num_batches_tracked`). */
export interface Counter {
  /** The state-dict leaf name. */
  readonly name: string;
  /** The count. */
  value: number;
}

/** Everything a forward or backward pass needs besides tensors. */
export interface Ctx {
  /** The runtime. */
  readonly gpu: Gpu;
  /** Training mode (batch statistics, dropout) or evaluation mode. */
  readonly training: boolean;
  /** Seed of this step's randomness (dropout masks); each dropout layer mixes in its id. */
  readonly seed: number;
  /** Overrides every dropout probability when set (`--dropout`). */
  readonly dropout?: number;
  /**
   * Set while a trainer records a step that it replays later (models/trainer.ts): an op whose
   * params change from step to step (dropout's seed) is recorded through it, as
   * `ctx.perStep(tensors, (tensors, seed) => op(tensors, seed))`; it runs now and again at every
   * replay, with that step's seed and `tensors` kept alive (bind only those and tensors that live
   * as long as the model). Unset, call the op directly with `ctx.seed`.
   */
  readonly perStep?: <T extends readonly Tensor[]>(
    tensors: T,
    record: (tensors: T, seed: number) => void,
  ) => void;
}

/** Where a producer writes when its output is a channel slice of a larger NCHW tensor. */
export interface Into {
  /** The whole output `[n, C, h, w]` (the concatenation). */
  readonly y: Tensor;
  /** First channel of the slice this layer writes. */
  readonly channelOffset: number;
}

/**
 * What a producer applies on its way out, fused into its forward (see {@linkcode Fusion}); the
 * plan rewrite of the compositions (`layers/plan.ts`) decides it, never the layer.
 */
export interface Epilogue {
  /**
   * An activation applied before the output is stored. The layer keeps what its backward needs
   * (its output), and its backward then takes the gradient of the activation's output; with
   * `into` the caller applies the activation's derivative instead (it reads the concatenation:
   * `splitChannels` with `activation`), and backward takes the gradient before the activation.
   */
  readonly activation?: ActivationKind;
  /**
   * Write into channels `[channelOffset, +out channels)` of `into.y` instead of a new tensor;
   * forward then returns a new handle to `into.y`.
   */
  readonly into?: Into;
  /**
   * Gather per-channel partial statistics of the output as it is stored, for the batch
   * normalization after this producer (training only): the producer puts them in the sink, or
   * leaves it empty where its kernels do not (the batch norm then reduces its input itself).
   */
  readonly stats?: StatsSink;
  /**
   * A batch normalization's input statistics, gathered by the producer before it (the sink it
   * filled): merged instead of reducing the input; an empty sink, the input is reduced.
   */
  readonly batchStats?: StatsSink;
}

/** Where a producer leaves the partial statistics it gathered for the batch norm after it. */
export interface StatsSink {
  /** The partial statistics, once gathered (owned by the consumer, which disposes them). */
  partials?: ChannelPartials;
}

/**
 * How a layer takes part in the plan rewrite: an activation layer says which activation it is
 * (the rewrite folds it into the producer before it); a producer lists the {@linkcode Epilogue}
 * parts its forward accepts. A layer without it runs as it is.
 */
export type Fusion =
  | { readonly activation: ActivationKind }
  | {
    readonly epilogue: readonly (keyof Epilogue)[];
    readonly pointwise?: Pointwise;
    /**
     * Its part in the backward's gradient sums ({@linkcode BackwardOptions.gradSums}): a producer
     * that can gather those of the batch norm before it (`"gather"`), or that batch norm
     * (`"merge"`).
     */
    readonly gradSums?: "gather" | "merge";
  };

/**
 * What a producer that is a pointwise convolution (ungrouped, 1×1, stride 1, no padding,
 * dilation 1) declares of itself, so that a channel concatenation can run several of them that
 * read its input as one GEMM (`layers/concat.ts`): its parameters and channels.
 */
export interface Pointwise {
  /** The weight `[cOut, cIn, 1, 1]`. */
  readonly weight: Param;
  /** The bias `[cOut]`, or null. */
  readonly bias: Param | null;
  /** Input channels. */
  readonly cIn: number;
  /** Output channels. */
  readonly cOut: number;
}

/** A layer's own state, each list in state-dict order (parameters, then buffers, then counters). */
export interface OwnState {
  /** Trainable parameters. */
  readonly params: readonly Param[];
  /** State buffers (running stats). */
  readonly buffers: readonly StateBuffer[];
  /** Int64 counters. */
  readonly counters: readonly Counter[];
}

/** What `forward` returns: the output and the layer's cache for backward. */
export interface Forward<C> {
  /** The output, owned by the caller. */
  readonly y: Tensor;
  /** What backward needs (handles owned by the cache). */
  readonly cache: C;
}

/** Options of `backward`. */
export interface BackwardOptions<C> {
  /** The cache returned by forward (consumed: its handles are disposed). */
  readonly cache: C;
  /** The context of the step. */
  readonly ctx: Ctx;
  /** Whether to compute the input gradient (false for a network's first layer). */
  readonly needDx: boolean;
  /**
   * The batch norm's gradient sums (the plan pairs a batch norm with the producer after it,
   * `Fusion.gradSums`): a producer gathers them into it as it stores its input gradient, where its
   * kernels can; the batch norm merges what it holds instead of its own gradient-sum pass.
   */
  readonly gradSums?: GradSumsSink;
}

/**
 * A layer (or a composition of layers): what a model, the trainer, the summary and the state dict
 * need. Build one with {@linkcode leaf} or {@linkcode composite}.
 */
export interface Layer<C = unknown> {
  /** The PyTorch class it mirrors (`Conv2d`, `Sequential`, `Residual`, ...). */
  readonly kind: string;
  /** Named children, in state-dict order. */
  readonly children: readonly (readonly [string, Layer])[];
  /** Its own parameters, buffers and counters (a composition has none). */
  readonly own: OwnState;
  /**
   * The output shape for an input shape (batch first); throws a `TypeError` naming the layer and
   * the shapes when the input does not fit.
   */
  outputShape(input: Shape): Shape;
  /** Multiply-adds ×2 of one forward pass for an input shape. */
  flops(input: Shape): number;
  /**
   * Records the forward pass; `epilogue` (only parts the layer's {@linkcode Fusion} accepts) is
   * fused into it.
   */
  forward(x: Tensor, ctx: Ctx, epilogue?: Epilogue): Forward<C>;
  /** Records the backward pass; accumulates parameter gradients. */
  backward(dy: Tensor, options: BackwardOptions<C>): Tensor | null;
  /** Its part in the plan rewrite, if any. */
  readonly fusion?: Fusion;
  /**
   * For a composition: its steps in forward order for an input shape, each a child (by its
   * state-dict path relative to this layer) or an unnamed functional step (`null`), with the
   * input shape it gets. The summary expands a block with it; without it a block is one row.
   */
  trace?(input: Shape): readonly TraceStep[];
}

/** One step of a composition's forward ({@linkcode Layer.trace}). */
export interface TraceStep {
  /** The child's state-dict path relative to the composition (`conv1`, `net.0`), or null. */
  readonly name: string | null;
  /** The layer. */
  readonly layer: Layer;
  /** The input shape it gets. */
  readonly input: Shape;
}

const NONE: readonly never[] = Object.freeze([]);
const zeroFlops = (): number => 0;

/**
 * What {@linkcode leaf} takes: a layer without children, whose own state (each list default
 * none) is given flat, and whose FLOPs default to 0.
 */
export type LeafSpec<C> =
  & Omit<Layer<C>, "children" | "own" | "flops">
  & Partial<OwnState>
  & { flops?(input: Shape): number };

/** What {@linkcode composite} takes: a layer with children, and no state or fusion of its own. */
export type CompositeSpec<C> = Omit<Layer<C>, "own" | "fusion">;

/** A forward that refuses (TypeError) an epilogue part the layer's fusion does not accept. */
function _guarded<C>(
  kind: string,
  fusion: Fusion | undefined,
  forward: Layer<C>["forward"],
): Layer<C>["forward"] {
  const accepts = fusion && "epilogue" in fusion ? fusion.epilogue : NONE;
  return (x: Tensor, ctx: Ctx, epilogue?: Epilogue): Forward<C> => {
    for (const part of Object.keys(epilogue ?? {}) as (keyof Epilogue)[]) {
      if (epilogue![part] !== undefined && !accepts.includes(part)) {
        throw new TypeError(`${kind}: its forward does not fuse an epilogue '${part}'`);
      }
    }
    return forward(x, ctx, epilogue);
  };
}

/**
 * A leaf layer from its spec: no children, and no state or FLOPs unless given. Its forward
 * refuses (TypeError) an epilogue part its `fusion` does not accept.
 *
 * @example
 * ```ts
 * import { leaf } from "@modern-cnn/webgpu/layers";
 * const identity = leaf({
 *   kind: "Identity",
 *   outputShape: (input) => input,
 *   forward: (x) => ({ y: x.retain(), cache: null }),
 *   backward: (dy, { needDx }) => (needDx ? dy.retain() : null),
 * });
 * identity.outputShape([2, 3]); // [2, 3]
 * ```
 */
export function leaf<C>(spec: LeafSpec<C>): Layer<C> {
  const { params = NONE, buffers = NONE, counters = NONE, fusion } = spec;
  return {
    kind: spec.kind,
    children: NONE,
    own: { params, buffers, counters },
    outputShape: spec.outputShape,
    flops: spec.flops ?? zeroFlops,
    forward: _guarded(spec.kind, fusion, spec.forward),
    backward: spec.backward,
    ...(fusion ? { fusion } : {}),
  };
}

/**
 * A composition from its spec: it owns no state (its children do) and fuses no epilogue. Give it
 * one forward, and one backward that mirrors it in reverse.
 *
 * @example
 * ```ts
 * import { composite, linear } from "@modern-cnn/webgpu/layers";
 * const fc = linear({ inFeatures: 4, outFeatures: 2 });
 * const wrapper = composite({
 *   kind: "Wrapper",
 *   children: [["fc", fc]],
 *   outputShape: (input) => fc.outputShape(input),
 *   flops: (input) => fc.flops(input),
 *   forward: (x, ctx) => fc.forward(x, ctx),
 *   backward: (dy, options) => fc.backward(dy, options),
 * });
 * wrapper.own.params.length; // 0
 * ```
 */
export function composite<C>(spec: CompositeSpec<C>): Layer<C> {
  return {
    kind: spec.kind,
    children: spec.children,
    own: { params: NONE, buffers: NONE, counters: NONE },
    outputShape: spec.outputShape,
    flops: spec.flops,
    forward: _guarded(spec.kind, undefined, spec.forward),
    backward: spec.backward,
    ...(spec.trace ? { trace: spec.trace } : {}),
  };
}

/**
 * Every (state-dict name, param) of a layer tree, in PyTorch's `state_dict` order.
 *
 * @example
 * ```ts
 * import { namedParams, sequential, linear } from "@modern-cnn/webgpu/layers";
 * const net = sequential([linear({ inFeatures: 4, outFeatures: 2 })]);
 * namedParams(net).map(([name]) => name); // ["0.weight", "0.bias"]
 * ```
 */
export function namedParams(layer: Layer, prefix = ""): [string, Param][] {
  const out: [string, Param][] = [];
  walk(layer, prefix, (p, l) => {
    for (const param of l.own.params) out.push([p + param.name, param]);
  });
  return out;
}

/** One entry of a model's state: a parameter, a running statistic or a counter. */
export type StateEntry =
  | { readonly kind: "param"; readonly name: string; readonly param: Param }
  | { readonly kind: "buffer"; readonly name: string; readonly buffer: StateBuffer }
  | { readonly kind: "counter"; readonly name: string; readonly counter: Counter };

/**
 * Every state entry of a layer tree with its full name, in PyTorch's `state_dict` order
 * (per module: parameters, then buffers, then counters; then its children).
 *
 * @example
 * ```ts
 * import { stateEntries, batchNorm } from "@modern-cnn/webgpu/layers";
 * stateEntries(batchNorm({ channels: 3 })).map((e) => e.name);
 * // ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
 * ```
 */
export function stateEntries(layer: Layer, prefix = ""): StateEntry[] {
  const out: StateEntry[] = [];
  walk(layer, prefix, (p, l) => {
    for (const param of l.own.params) out.push({ kind: "param", name: p + param.name, param });
    for (const buffer of l.own.buffers) {
      out.push({ kind: "buffer", name: p + buffer.name, buffer });
    }
    for (const counter of l.own.counters) {
      out.push({ kind: "counter", name: p + counter.name, counter });
    }
  });
  return out;
}

function walk(layer: Layer, prefix: string, visit: (prefix: string, l: Layer) => void): void {
  visit(prefix, layer);
  for (const [name, child] of layer.children) walk(child, `${prefix}${name}.`, visit);
}

/**
 * A parameter spec (no tensors yet).
 *
 * @example
 * ```ts
 * import { param } from "@modern-cnn/webgpu/layers";
 * const w = param("weight", [10, 84], { init: "xavier-uniform", fanIn: 84, fanOut: 10 });
 * ```
 */
export function param(
  name: string,
  shape: Shape,
  options: { init: InitKind; fanIn: number; fanOut: number },
): Param {
  return { name, shape, ...options, value: null, grad: null, momentum: null, half: null };
}

/**
 * The weight tensor a kernel should read for input `x`: the f16 working copy when `x` is f16 and
 * the parameter has one, else the f32 master value.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { weightFor, param } from "@modern-cnn/webgpu/layers";
 * const gpu = await getGpu();
 * const w = param("weight", [2, 2], { init: "xavier-uniform", fanIn: 2, fanOut: 2 });
 * w.value = gpu.zeros([2, 2]);
 * weightFor(w, gpu.zeros([1, 2])) === w.value; // true
 * ```
 */
export function weightFor(p: Param, x: Tensor): Tensor {
  return x.dtype === "f16" && p.half ? p.half : p.value!;
}

/**
 * Disposes tensors (skipping nulls): the end of a cache's life.
 *
 * @example
 * ```ts
 * import { release } from "@modern-cnn/webgpu/layers";
 * release(null, undefined);
 * ```
 */
export function release(...tensors: (Tensor | null | undefined)[]): void {
  for (const t of tensors) t?.dispose();
}

/**
 * Throws a `TypeError` naming the layer when an input shape does not have `rank` dimensions.
 *
 * @example
 * ```ts
 * import { expectRank } from "./layer.ts";
 * expectRank("Conv2d", [1, 3, 8, 8], 4, "[n, c, h, w]"); // ok
 * ```
 */
export function expectRank(kind: string, input: Shape, rank: number, what: string): void {
  if (input.length !== rank) {
    throw new TypeError(`${kind}: expected a ${rank}-d input ${what}, got ${formatShape(input)}`);
  }
}
