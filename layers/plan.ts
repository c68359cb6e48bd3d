/**
 * How the compositions run their children: the one plan rewrite ({@linkcode planSteps}) that
 * fuses, and the executors every composition shares: a list of steps forward and back
 * ({@linkcode stepsForward} / {@linkcode stepsBackward}; a channel concatenation of branches is
 * `concat.ts`'s).
 *
 * The rewrite is decided once, when a composition is built: each activation layer that follows a
 * producer accepting it becomes that producer's epilogue (conv/linear/BatchNorm + activation in
 * one kernel), and the last producer of a concatenated branch writes straight into its channel
 * slice of the output (with its activation, whose derivative the split of the backward applies).
 * A branch whose last step cannot write into a slice is copied into it instead.
 *
 * @module
 */

import type { Shape, Tensor } from "../gpu/mod.ts";
import type { ActivationKind } from "../kernels/activation.ts";
import type { GradSumsSink, GradSumsSource } from "../kernels/batchnorm/grad_sums.ts";
import { concatChannels } from "../kernels/concat.ts";
import type { Ctx, Epilogue, Into, Layer, StatsSink } from "./layer.ts";

/** One step of a plan: a layer and the epilogue the rewrite fused into its forward. */
export interface Step {
  /** The layer run. */
  readonly layer: Layer;
  /** The activation layer folded into this producer (its epilogue), if any. */
  readonly activation?: ActivationKind;
  /** Whether it writes straight into the branch's channel slice (a branch's last step only). */
  readonly into: boolean;
  /**
   * Whether this producer gathers the batch statistics of its output for the next step, a batch
   * normalization (which then has `batchStats`).
   */
  readonly stats?: boolean;
  /** Whether this batch normalization merges the statistics the step before gathered. */
  readonly batchStats?: boolean;
  /**
   * Whether its backward gathers the gradient sums of the step before it, a batch norm (whose
   * output gradient its input gradient is), for that batch norm's backward.
   */
  readonly gradSums?: boolean;
}

function _accepts(layer: Layer, part: keyof Epilogue): boolean {
  const f = layer.fusion;
  return f !== undefined && "epilogue" in f && f.epilogue.includes(part);
}

function _activationOf(layer: Layer | undefined): ActivationKind | undefined {
  const f = layer?.fusion;
  return f !== undefined && "activation" in f ? f.activation : undefined;
}

/**
 * The plan rewrite of a list of layers: each "producer, activation" pair whose producer accepts
 * the activation becomes one step; with `into` (the list is a branch of a channel
 * concatenation), the last step writes into the slice when its layer accepts that.
 *
 * @example
 * ```ts
 * import { activation, conv2d } from "@modern-cnn/webgpu/layers";
 * import { planSteps } from "./plan.ts";
 * const steps = planSteps([conv2d({ inChannels: 3, outChannels: 8, kernel: 1 }), activation("relu")], {
 *   into: true,
 * });
 * steps.map((s) => [s.layer.kind, s.activation, s.into]); // [["Conv2d", "relu", true]]
 * ```
 */
export function planSteps(
  layers: readonly Layer[],
  options: { into?: boolean } = {},
): readonly Step[] {
  const steps: Step[] = [];
  for (let i = 0; i < layers.length; i++) {
    const act = _activationOf(layers[i + 1]);
    if (act && _accepts(layers[i], "activation")) {
      steps.push({ layer: layers[i], activation: act, into: false });
      i++;
    } else {
      steps.push({ layer: layers[i], into: false });
    }
  }
  const last = steps.at(-1);
  if (options.into && last && _accepts(last.layer, "into")) {
    steps[steps.length - 1] = { ...last, into: true };
  }
  return _pairGradSums(_pairStats(steps));
}

/**
 * The producer/batch-norm pairs of a plan: a step whose layer gathers statistics (`stats`), with
 * no activation of its own and not writing into a slice, followed by one that merges them
 * (`batchStats`, a batch norm). Additive: every other field of the steps is left as it is.
 */
function _pairStats(steps: Step[]): Step[] {
  for (let i = 0; i + 1 < steps.length; i++) {
    const s = steps[i], next = steps[i + 1];
    if (
      !s.activation && !s.into && !s.batchStats && _accepts(s.layer, "stats") &&
      _accepts(next.layer, "batchStats")
    ) {
      steps[i] = { ...s, stats: true };
      steps[i + 1] = { ...next, batchStats: true };
    }
  }
  return steps;
}

function _gradSumsPart(layer: Layer): "gather" | "merge" | undefined {
  const f = layer.fusion;
  return f !== undefined && "epilogue" in f ? f.gradSums : undefined;
}

/**
 * The batch-norm/producer pairs of the backward's gradient sums: a step whose layer gathers them
 * (`gradSums`) after one that merges them (a batch norm, with or without its activation).
 * Additive: every other field of the steps is left as it is.
 */
function _pairGradSums(steps: Step[]): Step[] {
  for (let i = 1; i < steps.length; i++) {
    if (
      _gradSumsPart(steps[i].layer) === "gather" && _gradSumsPart(steps[i - 1].layer) === "merge"
    ) {
      steps[i] = { ...steps[i], gradSums: true };
    }
  }
  return steps;
}

/**
 * The output shape of layers applied in order.
 *
 * @example
 * ```ts
 * import { flatten, linear } from "@modern-cnn/webgpu/layers";
 * import { shapeThrough } from "./plan.ts";
 * shapeThrough([flatten(), linear({ inFeatures: 12, outFeatures: 2 })], [1, 3, 2, 2]); // [1, 2]
 * ```
 */
export function shapeThrough(layers: readonly Layer[], input: Shape): Shape {
  return layers.reduce((s, l) => l.outputShape(s), input);
}

/**
 * The FLOPs of layers applied in order (each at the shape the previous one gives).
 *
 * @example
 * ```ts
 * import { linear } from "@modern-cnn/webgpu/layers";
 * import { flopsThrough } from "./plan.ts";
 * flopsThrough([linear({ inFeatures: 4, outFeatures: 2 })], [1, 4]); // 16
 * ```
 */
export function flopsThrough(layers: readonly Layer[], input: Shape): number {
  let total = 0, s = input;
  for (const l of layers) {
    total += l.flops(s);
    s = l.outputShape(s);
  }
  return total;
}

/** Runs steps forward; with `into`, the result lands in the slice and `y` is null. */
function _run(
  steps: readonly Step[],
  x: Tensor,
  ctx: Ctx,
  into?: Into,
): { y: Tensor | null; caches: unknown[] } {
  const caches: unknown[] = [];
  let h = x;
  let sink: StatsSink | undefined; // what the step before gathered for this one
  steps.forEach((step, i) => {
    const slice = into && step.into && i === steps.length - 1 ? into : undefined;
    const batchStats = step.batchStats ? sink : undefined;
    sink = step.stats && ctx.training ? {} : undefined;
    const epilogue = step.activation || slice || sink || batchStats
      ? { activation: step.activation, into: slice, stats: sink, batchStats }
      : undefined;
    const { y, cache } = step.layer.forward(h, ctx, epilogue);
    batchStats?.partials?.partials.dispose(); // a consumer that did not merge them
    if (h !== x) h.dispose();
    caches.push(cache);
    h = y;
  });
  if (!into) return { y: h === x ? x.retain() : h, caches };
  if (steps.at(-1)?.into) {
    h.dispose(); // the handle to into.y the last step returned
  } else {
    const [n, cTotal, hh, ww] = into.y.shape;
    concatChannels({ y: into.y, x: h }, {
      n,
      hw: hh * ww,
      cTotal,
      cOffset: into.channelOffset,
      c: h.shape[1],
    });
    if (h !== x) h.dispose();
  }
  return { y: null, caches };
}

/**
 * Runs planned steps forward: the output (owned by the caller; a new handle to `x` when there
 * are no steps) and each step's cache.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { activation, flatten } from "@modern-cnn/webgpu/layers";
 * import { planSteps, stepsBackward, stepsForward } from "./plan.ts";
 * const gpu = await getGpu();
 * const steps = planSteps([flatten(), activation("relu")]); // nothing to fuse: two steps
 * const ctx = { gpu, training: true, seed: 1 };
 * const x = gpu.zeros([3, 2, 2, 1]);
 * const f = stepsForward(steps, x, ctx); // f.y: [3, 4]
 * const dx = stepsBackward(steps, f.caches, { dy: gpu.zeros([3, 4]), ctx, needDx: true });
 * for (const t of [x, f.y, dx]) t?.dispose();
 * ```
 */
export function stepsForward(
  steps: readonly Step[],
  x: Tensor,
  ctx: Ctx,
): { y: Tensor; caches: unknown[] } {
  const { y, caches } = _run(steps, x, ctx);
  return { y: y!, caches };
}

/**
 * The backward of {@linkcode stepsForward}: each step's backward in reverse order (the first one
 * computes an input gradient only if `needDx`). Returns a new tensor (a new handle to `dy` when
 * there are no steps) or null. See {@linkcode stepsForward} for an example.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { stepsBackward } from "./plan.ts";
 * const gpu = await getGpu();
 * const dy = gpu.zeros([2, 3]);
 * const dx = stepsBackward([], [], { dy, ctx: { gpu, training: true, seed: 0 }, needDx: true });
 * dx === dy; // false: a new handle to the same storage
 * ```
 */
export function stepsBackward(
  steps: readonly Step[],
  caches: readonly unknown[],
  options: { dy: Tensor; ctx: Ctx; needDx: boolean },
): Tensor | null {
  const { dy, ctx } = options;
  let g: Tensor | null = dy;
  let sums: GradSumsSink | undefined; // what the step after this one gathered for it
  for (let i = steps.length - 1; i >= 0; i--) {
    const needDx = i > 0 || options.needDx;
    const merge = sums;
    sums = steps[i].gradSums && i > 0 && caches[i - 1]
      ? { source: caches[i - 1] as GradSumsSource }
      : undefined;
    const gradSums = sums ?? merge;
    const next: Tensor | null = steps[i].layer.backward(g!, {
      cache: caches[i],
      ctx,
      needDx,
      ...(gradSums ? { gradSums } : {}),
    });
    merge?.partials?.partials.dispose(); // a batch norm that did not merge them
    if (g !== dy) g!.dispose();
    g = next;
  }
  return g === dy ? dy.retain() : g;
}

/**
 * Runs a concatenation's branch forward on `x` (`concat.ts`): its result lands in its slice of
 * `into.y` (written by its last step, or copied). Returns each step's cache.
 *
 * @example
 * ```ts ignore
 * const caches = stepsInto(branch.steps, { x, ctx, into: { y, channelOffset: 4 } });
 * ```
 */
export function stepsInto(
  steps: readonly Step[],
  io: { readonly x: Tensor; readonly ctx: Ctx; readonly into: Into },
): unknown[] {
  return _run(steps, io.x, io.ctx, io.into).caches;
}
