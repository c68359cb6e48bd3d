/**
 * A channel concatenation of branches run on one input (Inception's paths, DenseNet's
 * `cat(X, blk(X))`): its plan ({@linkcode planConcat}: the branches, each planned with `into` by
 * `plan.ts`, and the merge of their first steps) and its executors ({@linkcode concatForward} /
 * {@linkcode concatBackward}).
 *
 * The plan merges the first steps of the branches that are pointwise convolutions of the input
 * with the same fused activation (an Inception block's three 1×1 convolutions, as their layers
 * declare through `fusion.pointwise`): forward, one GEMM whose rows are the members' output
 * channels, stored in row groups (the GEMM's `rows` store) straight into the concatenation's
 * slice (a branch whose only step merges) and into each other member's output (views of a
 * second buffer); backward, the members' input gradients summed in place (the pointwise GEMM's
 * beta) and x permuted once for all their weight gradients (where they do not read it in place:
 * `conv2dReadsInPlace`). Where a call cannot merge (an f16
 * weight that a 4-byte copy cannot place, a tensor over one binding) it runs the branches one by
 * one.
 *
 * @module
 */

import type { Shape, Tensor } from "../gpu/mod.ts";
import type { ActivationKind } from "../kernels/activation.ts";
import { type AdapterLimits, bindingElements } from "../kernels/_adapter.ts";
import { accumulate } from "../kernels/elementwise.ts";
import { splitChannels } from "../kernels/concat.ts";
import {
  conv2dBackward,
  conv2dPermuteX,
  conv2dPointwiseGroup,
  conv2dReadsInPlace,
} from "../kernels/conv2d/index.ts";
import { epilogueGrad } from "./elementwise.ts";
import { type Ctx, type Pointwise, release, weightFor } from "./layer.ts";
import { type Step, stepsBackward, stepsInto } from "./plan.ts";

/** A branch of a channel concatenation: its planned steps and its slice of the output. */
export interface Branch {
  /** The steps, planned with `into` (no steps: the input itself). */
  readonly steps: readonly Step[];
  /** First channel of its slice. */
  readonly channelOffset: number;
  /** Channels of its slice. */
  readonly channels: number;
}

/** A member of a {@linkcode PointwiseMerge}: a branch whose first step merges. */
export interface MergeMember {
  /** The branch (its index in the concatenation). */
  readonly branch: number;
  /** Its first row of the merged GEMM (the rows before it are the earlier members'). */
  readonly row: number;
  /** Its output channels (its rows). */
  readonly channels: number;
  /** Whether the merged step is the branch's only one and writes into its slice. */
  readonly into: boolean;
}

/**
 * The first steps of a concatenation's branches that run as one GEMM: pointwise convolutions
 * (ungrouped 1×1, stride 1, no padding) of the concatenation's input, each fusing the same
 * activation, all with a bias or all without.
 */
export interface PointwiseMerge {
  /** The members, in branch order. */
  readonly members: readonly MergeMember[];
  /** Rows of the merged GEMM: the members' channels. */
  readonly rows: number;
  /** Input channels. */
  readonly cIn: number;
  /** The activation every member fuses, if any. */
  readonly activation?: ActivationKind;
  /** Whether the members have biases. */
  readonly bias: boolean;
}

/** A channel concatenation as planned once: its branches, and the merge of their first steps. */
export interface ConcatPlan {
  /** The branches (each planned with `into`). */
  readonly branches: readonly Branch[];
  /** The merged first steps, or null (fewer than two branches qualify). */
  readonly merge: PointwiseMerge | null;
}

/** What a branch's first step declares when it is a pointwise convolution. */
function _pointwiseOf(b: Branch): Pointwise | undefined {
  const f = b.steps[0]?.layer.fusion;
  return f !== undefined && "epilogue" in f ? f.pointwise : undefined;
}

/**
 * The plan of a channel concatenation (pure; decided once, when the composition is built): the
 * branches whose first step is a pointwise convolution of the input merge into one GEMM, when at
 * least two share the activation their step fuses and whether they have a bias (the largest such
 * set; the first in branch order among equals). A branch whose only step merges writes into its
 * slice; a branch of one step that cannot write into its slice does not merge.
 *
 * @example
 * ```ts
 * import { activation, conv2d } from "@modern-cnn/webgpu/layers";
 * import { planConcat } from "./concat.ts";
 * import { planSteps } from "./plan.ts";
 * const branch = (c: number, offset: number) => ({
 *   steps: planSteps([conv2d({ inChannels: 8, outChannels: c, kernel: 1 }), activation("relu")], {
 *     into: true,
 *   }),
 *   channelOffset: offset,
 *   channels: c,
 * });
 * const plan = planConcat([branch(4, 0), branch(6, 4)]);
 * plan.merge?.members.map((m) => [m.branch, m.row, m.channels]); // [[0, 0, 4], [1, 4, 6]]
 * ```
 */
export function planConcat(branches: readonly Branch[]): ConcatPlan {
  const sets = new Map<string, number[]>();
  branches.forEach((b, i) => {
    const pw = _pointwiseOf(b);
    if (!pw || (b.steps.length === 1 && !b.steps[0].into)) return;
    const key = `${b.steps[0].activation ?? ""}|${pw.bias !== null}|${pw.cIn}`;
    sets.set(key, [...(sets.get(key) ?? []), i]);
  });
  let best: number[] = [];
  for (const set of sets.values()) if (set.length > best.length) best = set;
  if (best.length < 2) return { branches, merge: null };
  let row = 0;
  const members = best.map((branch): MergeMember => {
    const b = branches[branch], pw = _pointwiseOf(b)!;
    const m = { branch, row, channels: pw.cOut, into: b.steps.length === 1 };
    row += pw.cOut;
    return m;
  });
  const first = branches[best[0]];
  const activation = first.steps[0].activation;
  return {
    branches,
    merge: {
      members,
      rows: row,
      cIn: _pointwiseOf(first)!.cIn,
      ...(activation ? { activation } : {}),
      bias: _pointwiseOf(first)!.bias !== null,
    },
  };
}

/**
 * Where the merged GEMM stores: the concatenation (a tensor of its own: later steps read the
 * members' outputs while writing into it, and WebGPU refuses a buffer bound read-only and
 * read-write in one dispatch), and one buffer holding the members' own outputs.
 */
export interface MergeLayout {
  /** Elements of the buffer of the members' outputs (0: every member writes into its slice). */
  readonly elements: number;
  /** Per member (in order), the first element of its own output (`[n, channels, h, w]`), or -1. */
  readonly outputs: readonly number[];
}

/**
 * Whether a call of a merge can run as one GEMM, and where it stores: each member that does not
 * write into its slice of the concatenation gets an output of its own in one buffer, each from
 * an element the device's offset alignment allows; null (the branches run one by one) when a
 * tensor exceeds one binding, the spatial size changes, the members' weights differ in storage
 * type, or an f16 weight's rows cannot be copied side by side with 4-byte-aligned copies (odd
 * `channels * cIn`).
 *
 * @example
 * ```ts
 * import { mergeLayout } from "./concat.ts";
 * const merge = {
 *   members: [
 *     { branch: 0, row: 0, channels: 4, into: true },
 *     { branch: 1, row: 4, channels: 6, into: false },
 *     { branch: 2, row: 10, channels: 2, into: false },
 *   ],
 *   rows: 12,
 *   cIn: 8,
 *   bias: true,
 * };
 * const limits = {
 *   maxStorageBufferBindingSize: 2 ** 27,
 *   minStorageBufferOffsetAlignment: 256,
 *   maxBufferSize: 2 ** 28,
 * };
 * const call = { x: [2, 8, 3, 3], y: [2, 16, 3, 3], dtype: "f32", limits } as const;
 * mergeLayout(merge, call)?.outputs; // [-1, 0, 128]
 * ```
 */
export function mergeLayout(
  merge: PointwiseMerge,
  call: {
    readonly x: Shape;
    readonly y: Shape;
    readonly dtype: "f32" | "f16";
    /** The weights' storage type (default `dtype`); `mixed` when the members' differ. */
    readonly weights?: "f32" | "f16" | "mixed";
    readonly limits: Pick<
      AdapterLimits,
      "maxStorageBufferBindingSize" | "minStorageBufferOffsetAlignment" | "maxBufferSize"
    >;
  },
): MergeLayout | null {
  const [n, cIn, h, w] = call.x;
  if (call.y[2] !== h || call.y[3] !== w || cIn !== merge.cIn) return null;
  const bytes = call.dtype === "f16" ? 2 : 4, weights = call.weights ?? call.dtype;
  if (weights === "mixed") return null;
  if (weights === "f16" && merge.members.some((m) => (m.channels * cIn) % 2 !== 0)) return null;
  const align = call.limits.minStorageBufferOffsetAlignment / bytes;
  const P = h * w;
  let end = 0;
  const outputs = merge.members.map((m) => {
    if (m.into) return -1;
    const at = Math.ceil(end / align) * align;
    end = at + n * m.channels * P;
    return at;
  });
  const limit = bindingElements(call.limits) * (4 / bytes);
  const largest = Math.max(end, n * cIn * P, n * call.y[1] * P);
  if (largest > limit || largest * bytes > call.limits.maxBufferSize) return null;
  return { elements: end, outputs };
}

/** What the merged first steps keep for backward: the input, and the members' own outputs. */
export interface MergedCache {
  /** A handle to the concatenation's input. */
  readonly x: Tensor;
  /** Per member, its output (the activation's derivative reads it), or null (into its slice). */
  readonly outputs: (Tensor | null)[];
}

/** What {@linkcode concatForward} saves: each branch's caches and, when needed, the output. */
export interface ConcatCache {
  /** Per branch, each step's cache (a merged first step's: null). */
  readonly caches: unknown[][];
  /** The concatenation, kept when a branch fused an activation into its slice. */
  readonly y: Tensor | null;
  /** The merged first steps' cache, when they ran merged. */
  readonly merged: MergedCache | null;
}

/** The activation whose derivative the split of a branch applies (fused into its slice). */
function _sliceActivation(b: Branch): ActivationKind | undefined {
  const last = b.steps.at(-1);
  return last?.into ? last.activation : undefined;
}

/** The members' parameters, in member order. */
function _memberParams(plan: ConcatPlan, merge: PointwiseMerge): Pointwise[] {
  return merge.members.map((m) => _pointwiseOf(plan.branches[m.branch])!);
}

/**
 * Records the merged GEMM ({@linkcode conv2dPointwiseGroup}): each member's channels stored into
 * `y`'s slice or into its own output in `outputs` (see {@linkcode mergeLayout}).
 */
function _mergedGemm(
  plan: ConcatPlan,
  merge: PointwiseMerge,
  io: { x: Tensor; y: Tensor; outputs: Tensor | null; layout: MergeLayout },
): void {
  const { x, y, outputs, layout } = io;
  const [n, , h, w] = x.shape;
  const P = h * w;
  const params = _memberParams(plan, merge);
  conv2dPointwiseGroup({
    y,
    outputs: outputs ?? undefined,
    x,
    weights: params.map((p) => weightFor(p.weight, x)),
    biases: merge.bias ? params.map((p) => p.bias!.value!) : undefined,
  }, {
    outputs: merge.members.map((m, i) => {
      const out = layout.outputs[i];
      return out < 0
        ? {
          channels: m.channels,
          base: plan.branches[m.branch].channelOffset * P,
          imageStride: y.size / n,
        }
        : { channels: m.channels, base: out, imageStride: m.channels * P, second: true };
    }),
    activation: merge.activation,
  });
}

/**
 * Runs a concatenation's branches on the same input, each writing its slice of a new output of
 * `shape` (`[n, C, h, w]`), in order; the plan's merged first steps run as one GEMM where the call
 * allows it ({@linkcode mergeLayout}). Returns the output (owned by the caller) and the cache.
 *
 * @example
 * ```ts ignore
 * const { y, cache } = concatForward(plan, { x, shape: [n, 256, h, w], ctx });
 * ```
 */
export function concatForward(
  plan: ConcatPlan,
  io: { x: Tensor; shape: Shape; ctx: Ctx },
): { y: Tensor; cache: ConcatCache } {
  const { x, ctx, shape } = io;
  const { branches, merge } = plan;
  const dtype = x.dtype === "f16" ? "f16" : "f32";
  const wTypes = new Set(
    merge ? _memberParams(plan, merge).map((p) => weightFor(p.weight, x).dtype) : [],
  );
  const weights = wTypes.size !== 1 ? "mixed" : wTypes.has("f16") ? "f16" : "f32";
  const layout = merge
    ? mergeLayout(merge, { x: x.shape, y: shape, dtype, weights, limits: ctx.gpu.limits })
    : null;
  if (!merge || !layout) {
    const y = ctx.gpu.empty(shape, { dtype: x.dtype });
    const caches = branches.map((b) =>
      stepsInto(b.steps, { x, ctx, into: { y, channelOffset: b.channelOffset } })
    );
    const keep = branches.some(_sliceActivation) ? y.retain() : null;
    return { y, cache: { caches, y: keep, merged: null } };
  }
  const y = ctx.gpu.empty(shape, { dtype: x.dtype });
  const buffer = layout.elements > 0 ? ctx.gpu.empty([layout.elements], { dtype: x.dtype }) : null;
  const [n, , h, w] = shape;
  const outputs = merge.members.map((m, i) =>
    m.into ? null : buffer!.slice(layout.outputs[i], n * m.channels * h * w, [n, m.channels, h, w])
  );
  _mergedGemm(plan, merge, { x, y, outputs: buffer, layout });
  buffer?.dispose(); // the views keep it
  const caches = branches.map((b, i) => {
    const k = merge.members.findIndex((m) => m.branch === i);
    if (k < 0) return stepsInto(b.steps, { x, ctx, into: { y, channelOffset: b.channelOffset } });
    const out = outputs[k];
    if (!out) return [null];
    return [
      null,
      ...stepsInto(b.steps.slice(1), { x: out, ctx, into: { y, channelOffset: b.channelOffset } }),
    ];
  });
  // The outputs stay for the activation's derivative; without one they are not needed.
  if (!merge.activation) outputs.forEach((t, i) => (outputs[i] = (t?.dispose(), null)));
  const keep = branches.some(_sliceActivation) ? y.retain() : null;
  return { y, cache: { caches, y: keep, merged: { x: x.retain(), outputs } } };
}

/**
 * The backward of {@linkcode concatForward}: per branch, its slice of `dy` (through the fused
 * activation's derivative) back through its steps, the input gradients summed in branch order
 * (a branch without steps splits its slice straight into the sum). Merged first steps: their
 * input gradients are summed in place (the pointwise GEMM's beta), x is permuted once for all
 * their weight gradients. Returns a new tensor or null.
 *
 * @example
 * ```ts ignore
 * const dx = concatBackward(plan, cache, { dy, ctx, needDx: true });
 * ```
 */
export function concatBackward(
  plan: ConcatPlan,
  cache: ConcatCache,
  options: { dy: Tensor; ctx: Ctx; needDx: boolean },
): Tensor | null {
  const { dy, ctx, needDx } = options;
  const { branches } = plan;
  const merge = cache.merged ? plan.merge : null;
  const [n, cTotal, h, w] = dy.shape;
  let dx: Tensor | null = null;
  let xT: Tensor | null = null;
  // x permuted once for the members' weight gradients, unless they read it in place.
  if (merge && !conv2dReadsInPlace(ctx.gpu, h * w, { direct: false })) {
    const x = cache.merged!.x;
    xT = ctx.gpu.empty([x.shape[1], n * h * w], { dtype: x.dtype });
    conv2dPermuteX({ xT, x });
  }
  branches.forEach((b, i) => {
    const slice = { n, hw: h * w, cTotal, cOffset: b.channelOffset, c: b.channels };
    if (b.steps.length === 0) {
      if (!needDx) return;
      if (dx) {
        splitChannels({ dx, dy }, { ...slice, accumulate: true });
      } else {
        dx = ctx.gpu.empty([n, b.channels, h, w], { dtype: dy.dtype });
        splitChannels({ dx, dy }, slice);
      }
      return;
    }
    const dBranch = ctx.gpu.empty([n, b.channels, h, w], { dtype: dy.dtype });
    const activation = _sliceActivation(b);
    if (activation) splitChannels({ dx: dBranch, dy, y: cache.y! }, { ...slice, activation });
    else splitChannels({ dx: dBranch, dy }, slice);
    const k = merge ? merge.members.findIndex((m) => m.branch === i) : -1;
    if (k >= 0) {
      dx = _memberBackward(plan, {
        merge: merge!,
        k,
        dBranch,
        caches: cache.caches[i],
        merged: cache.merged!,
        xT,
        dx,
        ctx,
        needDx,
      });
      // x and its permutation are done with after the last member.
      if (k === merge!.members.length - 1) {
        release(cache.merged!.x, xT);
        xT = null;
      }
      return;
    }
    const g = stepsBackward(b.steps, cache.caches[i], { dy: dBranch, ctx, needDx });
    dBranch.dispose();
    if (!g) return;
    if (dx) {
      accumulate({ y: dx, x: g });
      g.dispose();
    } else {
      dx = g;
    }
  });
  release(cache.y);
  return dx;
}

/**
 * The backward of merged member `k` (branch gradient `dBranch`, consumed): the branch's later
 * steps, the activation's derivative, then the pointwise convolution's gradients: dx summed into
 * `dx` (a new one for the first), its weight gradient from the shared `xT` (or from x in place). Returns dx. The
 * pointwise GEMM path is forced (`direct: false`, which summing dx in place needs): a tuning
 * table's choice of the direct kernel for these layers is not used.
 */
function _memberBackward(
  plan: ConcatPlan,
  o: {
    merge: PointwiseMerge;
    k: number;
    dBranch: Tensor;
    caches: unknown[];
    merged: MergedCache;
    xT: Tensor | null;
    dx: Tensor | null;
    ctx: Ctx;
    needDx: boolean;
  },
): Tensor | null {
  const { merge, k } = o;
  const m = merge.members[k], b = plan.branches[m.branch];
  const { x } = o.merged;
  let dz = o.dBranch;
  if (!m.into) {
    const g = stepsBackward(b.steps.slice(1), o.caches.slice(1), {
      dy: o.dBranch,
      ctx: o.ctx,
      needDx: true,
    })!;
    o.dBranch.dispose();
    const out = o.merged.outputs[k];
    if (out && merge.activation) {
      dz = epilogueGrad(g, { kind: merge.activation, y: out }, o.ctx); // releases out
      g.dispose();
    } else dz = g;
  }
  const pw = _pointwiseOf(b)!;
  const [n, cIn, h, w] = x.shape;
  const dx = o.needDx ? (o.dx ?? o.ctx.gpu.empty(x.shape, { dtype: dz.dtype })) : null;
  conv2dBackward({
    ...(dx ? { dx } : {}),
    dw: pw.weight.grad!,
    ...(pw.bias ? { db: pw.bias.grad! } : {}),
    dy: dz,
    x,
    w: weightFor(pw.weight, x),
    ...(o.xT ? { xT: o.xT } : {}),
  }, {
    n,
    cIn,
    h,
    w,
    cOut: pw.cOut,
    kernel: 1,
    accumulate: true,
    accumulateDx: o.dx !== null,
    direct: false,
  });
  dz.dispose();
  return dx;
}
