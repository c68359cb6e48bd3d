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
 * @module
 */

import type { Gpu, Shape, Tensor } from "../gpu/mod.ts";
import type { ActivationKind } from "../kernels/activation.ts";

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
   * Whether compositions run fused steps (conv/linear/BatchNorm + activation, branch
   * outputs written straight into concat buffers); default true. The fused and unfused paths
   * compute the same values (tests compare them); false is for tests and measurements.
   */
  readonly fuse?: boolean;
}

/** Where {@linkcode Layer.forwardInto} writes: a channel slice of a larger NCHW tensor. */
export interface Into {
  /** The whole output `[n, C, h, w]` (the concatenation). */
  readonly y: Tensor;
  /** First channel of the slice this layer writes. */
  readonly channelOffset: number;
  /** An activation applied on the way (the layer's fused epilogue), if any. */
  readonly activation?: ActivationKind;
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
}

/** A layer (or a composition of layers). */
export interface Layer<C = unknown> {
  /** The PyTorch class it mirrors (`Conv2d`, `Sequential`, `Residual`, ...). */
  readonly kind: string;
  /** Named children, in state-dict order. */
  readonly children: readonly (readonly [string, Layer])[];
  /** Own trainable parameters, in state-dict order. */
  readonly params: readonly Param[];
  /** Own state buffers (running stats), in state-dict order after the params. */
  readonly buffers: readonly StateBuffer[];
  /** Own int64 counters, in state-dict order after the buffers. */
  readonly counters: readonly Counter[];
  /**
   * The output shape for an input shape (batch first); throws a `TypeError` naming the layer and
   * the shapes when the input does not fit.
   */
  outputShape(input: Shape): Shape;
  /** Multiply-adds ×2 of one forward pass for an input shape. */
  flops(input: Shape): number;
  /** Records the forward pass. */
  forward(x: Tensor, ctx: Ctx): Forward<C>;
  /** Records the backward pass; accumulates parameter gradients. */
  backward(dy: Tensor, options: BackwardOptions<C>): Tensor | null;
  /** Set on activation layers: which activation (lets compositions fuse it into a producer). */
  readonly activation?: ActivationKind;
  /**
   * Optional fusion hook: a step that runs this layer followed by the activation `kind` in one
   * forward (and backward), sharing this layer's parameters; `null` when it cannot. The returned
   * layer is an execution step, not a module: it has no children, params or state of its own.
   */
  fuseActivation?(kind: ActivationKind): Layer<unknown> | null;
  /**
   * Optional: the forward pass writing its output (after `into.activation`, if given) straight
   * into channels `[into.channelOffset, +out channels)` of `into.y` instead of a new tensor.
   * The cache is the one `backward` takes; backward then receives the gradient of this layer's
   * own output (before the activation: the caller applies the activation's backward).
   */
  forwardInto?(x: Tensor, ctx: Ctx, into: Into): C;
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
    for (const param of l.params) out.push([p + param.name, param]);
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
    for (const param of l.params) out.push({ kind: "param", name: p + param.name, param });
    for (const buffer of l.buffers) out.push({ kind: "buffer", name: p + buffer.name, buffer });
    for (const counter of l.counters) {
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
