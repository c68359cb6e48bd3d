/**
 * Batch normalization (`nn.BatchNorm2d` with `hw = h * w`, `nn.BatchNorm1d` with `hw = 1`) on
 * `x` `[n, c, ...]` holding `n * c * hw` elements: training forward (batch statistics, running
 * statistics updated in place), eval forward (running statistics), and the training backward.
 *
 * Passes over the full tensor: training forward 2 (a reduction reading `x`, then the normalize
 * pass reading `x` and writing `y`), eval 1 (normalize), backward 2 (a reduction reading `dy`,
 * `x` and, with an activation, `y`; then the input-gradient pass reading them and writing `dx`).
 * What the training forward saves for the backward: `saveMean` and `saveInvStd` per channel, and
 * the caller keeps `x` (and `y` with a fused activation, whose derivative is computed from it).
 * Dispatches: training forward and backward 2 each, or 3 when a reduction needs a finalize pass
 * (below); eval 1. The backward's reduction may come from the layer after the batch norm instead
 * (`io.gradSums`, see `grad_sums.ts`): then only its finalize pass reads them.
 *
 * Each per-channel reduction runs over `N = n * hw` elements. The `(sample, channel)` planes are
 * cut into runs of at most 64 elements (the elementwise passes' mapping, below);
 * {@linkcode reducePlan} picks how a channel's runs are shared:
 * - one workgroup per channel (`final`): its 64 threads accumulate their runs in registers, lane
 *   0 adds the 64 sums after one barrier and finishes: the statistics (mean, invstd, running
 *   statistics and the normalize coefficients) or the parameter gradients and channel sums;
 * - on a CPU adapter, many channels of at most 4096 elements (`cols`): one thread per channel
 *   walks it and finishes (no workgroup memory or barrier: a workgroup's fixed cost dominates
 *   small channels on llvmpipe);
 * - several workgroups per channel (few channels, to keep the adapter busy; huge `N`; ranges):
 *   each writes its two sums, and a finalize pass (one thread per channel) adds them in order
 *   and finishes: two levels.
 * The last pass is elementwise, producing `y` or `dx`: each thread loads one channel's
 * coefficients once (the backward's from the channel sums and the saved statistics; eval's from
 * the running statistics) and walks a strided run of up to 64 elements of that channel: a
 * segment of one `(sample, channel)` plane, or for BatchNorm1d (`hw` = 1) one channel over
 * several samples (no per-element channel division or coefficient loads: 1.4 to 2.2 times the
 * throughput of one thread per element on llvmpipe; runs are shorter on GPUs, to keep enough
 * threads).
 *
 * Every thread's loops stay far below llvmpipe's silent cap of 65535 iterations per invocation
 * (reductions: runs of 64, at most 512 runs per thread, or 4096 elements per channel; the
 * finalize pass: the block count; the elementwise passes: 64). Tensors larger than one storage
 * binding (ResNet's `[256, 64, 48, 48]`, 151 MB) are processed in ranges of whole samples: the
 * reduction and the elementwise pass run once per range (the reduction writing the range's
 * blocks), the finalize pass once.
 *
 * When `hw` is a multiple of 4 the partial-sum and elementwise passes work on `vec4`s (4 elements
 * of one channel per load), which roughly doubles their throughput on llvmpipe.
 *
 * With `activation` (any `ActivationKind`: `"relu"`, `"relu6"`, `"sigmoid"`, `"tanh"`) the forward
 * applies the activation in the normalize pass (`y = f(BN(x))`, no extra pass), and the backward
 * takes the fused forward's output `y` and uses `dz = f'(BN(x)) * dy`, computed from `y` and `dy`
 * (for ReLU `dy * (y > 0)`, for sigmoid `dy * y * (1 - y)`), as the upstream gradient in both the
 * partial-sum and the input-gradient passes (no separate activation-backward pass or buffer). The
 * activation WGSL is the one of `_activation_wgsl.ts`, so the fused results are bit for bit those
 * of the separate kernels.
 *
 * Statistics are accumulated shifted by the channel's first element (`x[0, ch, 0]`), which keeps
 * `E[(x-K)^2] - E[x-K]^2` accurate when the mean is large relative to the spread.
 *
 * Storage types: every tensor may be f32 or f16, each binding its own (the training configuration
 * of `--precision f16`: `x`, `y`, `dy`, `dx` f16; `weight`, `bias`, running and saved statistics,
 * `dweight`, `dbias` f32). Values are converted to f32 on load and rounded once on store; all
 * arithmetic, the statistics and gradient sums, the partial sums and the per-channel
 * coefficients stay f32 (the statistics of f16 activations are accumulated in f32, as PyTorch's
 * autocast does). The vec4 paths read and write `vec4<f16>` (8 bytes, always aligned: `hw` and
 * every range's first element are multiples of 4). Data tensors of different dtypes in one
 * kernel have different binding bases (`bindingRange` aligns offsets to 256 bytes, 64 f32 or
 * 128 f16 elements): those kernels add `p.delta` (0 when every data tensor has `x`'s dtype) to
 * the index of the bindings whose dtype is not `x`'s. With every tensor f32 the kernels compute
 * what they computed before f16 existed.
 *
 * Outputs must not alias inputs: WebGPU rejects a buffer bound both read-only and read-write in
 * one dispatch.
 *
 * The folder: this module (parameters, checks, and the passes each function records), the
 * kernels of the forward (`forward.ts`) and of the backward (`backward.ts`), each described
 * once with `defineKernel`, and the two kinds of pass they are built from (`passes.ts`: the
 * partial-sum and the elementwise pass, their WGSL and their host-side maths).
 *
 * @module
 */

import { formatShape, type Shape, type Tensor } from "../../gpu/mod.ts";
import { type ActivationKind, checkActivationKind } from "../_activation_wgsl.ts";
import { bindingRange, unitRanges } from "../_binding.ts";
import { type FloatDType, floatDType } from "../_dtype.ts";
import { checkPositiveInts } from "../_geometry.ts";
import { normalize, statsFinal, statsPartial } from "./forward.ts";
import { type ChannelPartials, MAX_PARTIAL_TILES, statsMerge } from "./partials.ts";

export type { ChannelPartials } from "./partials.ts";
import { gradFinal, gradInput, gradPartial } from "./backward.ts";
import type { GradSumsPartials } from "./grad_sums.ts";
import {
  elementwisePlan,
  elementwiseVariant,
  partialParams,
  reducePlan,
  type Resolved,
  type SampleRange,
  samples,
  WG,
} from "./passes.ts";

type StatsVariant = NonNullable<Parameters<typeof statsPartial.dispatch>[0]["variant"]>;
type GradVariant = NonNullable<Parameters<typeof gradPartial.dispatch>[0]["variant"]>;

/** Dimensions and hyper-parameters of a batch normalization. */
export interface BatchNormParams {
  /** Batch size. */
  readonly n: number;
  /** Channels (features for BatchNorm1d). */
  readonly c: number;
  /** Elements per channel per sample: `h * w` for BatchNorm2d, 1 for BatchNorm1d. */
  readonly hw: number;
  /** Added to the variance; default 1e-5. */
  readonly eps?: number;
  /** Running-statistics update factor; default 0.1. */
  readonly momentum?: number;
}

function resolve(op: string, p: BatchNormParams): Resolved {
  checkPositiveInts(op, p, ["n", "c", "hw"]);
  const eps = p.eps ?? 1e-5;
  const momentum = p.momentum ?? 0.1;
  if (!Number.isFinite(eps) || eps < 0) {
    throw new RangeError(`${op}: eps must be a finite number >= 0, got ${eps}`);
  }
  if (!Number.isFinite(momentum) || momentum < 0 || momentum > 1) {
    throw new RangeError(`${op}: momentum must be in [0, 1], got ${momentum}`);
  }
  if (p.c > 65535) {
    throw new RangeError(`${op}: c = ${p.c} is too large (at most 65535 channels)`);
  }
  return { n: p.n, c: p.c, hw: p.hw, eps, momentum };
}

/**
 * Validates batch-norm parameters and returns the shape of `x` and `y`: `[n, c]` when `hw` is 1
 * (BatchNorm1d), else `[n, c, hw]` (tensors may have any shape `[n, c, ...]` with `hw` elements
 * per sample and channel, e.g. `[n, c, h, w]`).
 *
 * @throws {RangeError} for non-integer sizes, or eps / momentum out of range.
 * @example
 * ```ts
 * import { checkBatchNorm } from "@modern-cnn/webgpu/kernels";
 * checkBatchNorm({ n: 8, c: 64, hw: 48 * 48 }); // [8, 64, 2304]
 * checkBatchNorm({ n: 8, c: 120, hw: 1 }); // [8, 120]
 * ```
 */
export function checkBatchNorm(p: BatchNormParams): Shape {
  const r = resolve("batchNorm", p);
  return r.hw === 1 ? [r.n, r.c] : [r.n, r.c, r.hw];
}

/** Checks a data tensor (`x`, `y`, `dy`, `dx`) and returns its dtype. */
function checkData(op: string, name: string, t: Tensor, r: Resolved): FloatDType {
  const s = t.shape;
  if (s.length < 2 || s[0] !== r.n || s[1] !== r.c || t.size !== r.n * r.c * r.hw) {
    throw new TypeError(
      `${op}: ${name} has shape ${formatShape(s)}, expected [${r.n}, ${r.c}, ...] with ` +
        `${r.hw} element(s) per sample and channel`,
    );
  }
  return floatDType(op, name, t);
}

/** Checks a per-channel tensor (`[c]`) and returns its dtype. */
function checkChannel(op: string, name: string, t: Tensor, r: Resolved): FloatDType {
  if (t.shape.length !== 1 || t.shape[0] !== r.c) {
    throw new TypeError(`${op}: ${name} has shape ${formatShape(t.shape)}, expected [${r.c}]`);
  }
  return floatDType(op, name, t);
}

/**
 * Validates the `activation` option (RangeError naming `op` for an unknown kind): returns the
 * fused kind, or undefined for none.
 */
function checkActivationOption(op: string, activation: unknown): ActivationKind | undefined {
  checkActivationKind(op, activation as ActivationKind | undefined);
  return activation as ActivationKind | undefined;
}

/**
 * Batch normalization forward.
 *
 * Training (`training: true`): normalizes with the batch mean and biased batch variance over
 * `n * hw` elements per channel, overwrites `saveMean` and `saveInvStd = 1 / sqrt(var + eps)`
 * (`[c]`, for the backward), and updates `runningMean` / `runningVar` in place:
 * `r = (1 - momentum) * r + momentum * stat`, with the unbiased variance for `runningVar`.
 * Eval: `y = (x - runningMean) / sqrt(runningVar + eps) * weight + bias`; `saveMean` and
 * `saveInvStd` are untouched. `y` is overwritten in both modes.
 *
 * With `activation` (an `ActivationKind`: `"relu"`, `"relu6"`, `"sigmoid"` or `"tanh"`),
 * `y = f(BN(x))` in both modes, computed in the normalize pass (bit for bit
 * `activationForward({ kind })` of the unfused output); the statistics are those of `x` as
 * without it. Pass that `y` to {@linkcode batchNormBackward} with the same `activation`.
 *
 * Tensors are f32 or f16, each its own (mixed precision: f16 `x` and `y`, f32 `weight`, `bias`
 * and statistics); the statistics are accumulated in f32 from the loaded values and `y` is
 * rounded once.
 *
 * @throws {TypeError} when a tensor's shape does not match the parameters, or a tensor is not
 *   f32 or f16 (or is f16 on a device without `shader-f16`).
 * @throws {RangeError} in training with a single value per channel (`n * hw == 1`), as PyTorch,
 *   or for an unknown activation kind.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { batchNormForward } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const x = gpu.zeros([4, 64, 24, 24]);
 * const y = gpu.empty(x.shape);
 * const [saveMean, saveInvStd, runningMean, runningVar, weight, bias] = [0, 1, 2, 3, 4, 5].map(
 *   () => gpu.zeros([64]),
 * );
 * batchNormForward(
 *   { y, saveMean, saveInvStd, runningMean, runningVar, x, weight, bias },
 *   { n: 4, c: 64, hw: 24 * 24, training: true },
 * );
 * // BatchNorm2d followed by ReLU (or "relu6", "sigmoid", "tanh"), in one pass over the output:
 * batchNormForward(
 *   { y, saveMean, saveInvStd, runningMean, runningVar, x, weight, bias },
 *   { n: 4, c: 64, hw: 24 * 24, training: true, activation: "relu" },
 * );
 * ```
 */
export function batchNormForward(
  io: {
    y: Tensor;
    saveMean: Tensor;
    saveInvStd: Tensor;
    runningMean: Tensor;
    runningVar: Tensor;
    x: Tensor;
    weight: Tensor;
    bias: Tensor;
    /**
     * Training: the per-channel partial statistics of `x` its producer gathered as it stored
     * it (`gemm` with `stats`, `conv2dForward` with `stats`): merged instead of reducing `x`
     * (one full read of `x` less).
     */
    partials?: ChannelPartials;
  },
  p: BatchNormParams & {
    /** Batch statistics (and running-statistics update) when true, running statistics else. */
    readonly training: boolean;
    /**
     * Activation fused into the output, `y = f(BN(x))` (e.g. `"relu"`: `max(BN(x), 0)`,
     * `"sigmoid"`: `1 / (1 + exp(-BN(x)))`); default none.
     */
    readonly activation?: ActivationKind;
  },
): void {
  const op = "batchNormForward";
  const r = resolve(op, p);
  const kind = checkActivationOption(op, p.activation);
  checkData(op, "x", io.x, r);
  checkData(op, "y", io.y, r);
  for (
    const k of ["saveMean", "saveInvStd", "runningMean", "runningVar", "weight", "bias"] as const
  ) {
    checkChannel(op, k, io[k], r);
  }
  const gpu = io.x.gpu;
  if (p.training && r.n * r.hw < 2) {
    throw new RangeError(
      `${op}: expected more than 1 value per channel when training, got input ` +
        `${formatShape(io.x.shape)}`,
    );
  }
  const vec4 = r.hw % 4 === 0;
  if (!p.training) {
    const { runningMean, runningVar, weight, bias } = io;
    for (const s of unitRanges(op, gpu, r.n, r.c * r.hw).map(([b0, b1]) => ({ b0, b1 }))) {
      const x = samples(io.x, r, s), y = samples(io.y, r, s);
      const ew = elementwisePlan(gpu, r, s, [x, y]);
      normalize.dispatch({
        op,
        variant: `${elementwiseVariant(ew.layout, kind)}_eval`,
        params: { ...ew.params, eps: r.eps },
        bindings: { x, runningMean, runningVar, weight, bias, y },
        workgroups: ew.workgroups,
      });
    }
    return;
  }
  const plan = reducePlan(op, gpu, r);
  const coef = gpu.empty([r.c, 2]);
  if (io.partials) {
    const { weight, saveMean, saveInvStd, runningMean, runningVar } = io;
    _mergePartials(op, io.partials, r, {
      weight,
      saveMean,
      saveInvStd,
      runningMean,
      runningVar,
      coef,
    });
  }
  const partial = plan.final || io.partials ? undefined : gpu.empty([r.c, plan.total, 2]);
  const x0 = bindingRange(io.x, 0, r.c * r.hw);
  const stats = {
    weight: io.weight,
    saveMean: io.saveMean,
    saveInvStd: io.saveInvStd,
    runningMean: io.runningMean,
    runningVar: io.runningVar,
    coef,
  };
  for (const s of io.partials ? [] : plan.ranges) {
    const x = samples(io.x, r, s);
    statsPartial.dispatch({
      op,
      variant: [vec4 ? "vec4" : "", plan.mode].filter((v) => v !== "").join("_") as StatsVariant,
      params: { ...partialParams(r, plan, s, [x]), eps: r.eps, momentum: r.momentum },
      bindings: plan.final ? { x, x0, ...stats } : { x, x0, partial },
      workgroups: plan.mode === "cols" ? Math.ceil(r.c / WG) : [s.blocks, r.c, 1],
    });
  }
  if (partial) {
    statsFinal.dispatch({
      op,
      params: {
        c: r.c,
        hw: r.hw,
        blocks: plan.total,
        count: r.n * r.hw,
        eps: r.eps,
        momentum: r.momentum,
      },
      bindings: { partial, x0, ...stats },
      workgroups: Math.ceil(r.c / WG),
    });
    partial.dispose();
  }
  for (const s of plan.ranges) {
    const x = samples(io.x, r, s), y = samples(io.y, r, s);
    const ew = elementwisePlan(gpu, r, s, [x, y]);
    normalize.dispatch({
      op,
      variant: elementwiseVariant(ew.layout, kind),
      params: { ...ew.params, eps: r.eps },
      bindings: { x, coef, bias: io.bias, y },
      workgroups: ew.workgroups,
    });
  }
  coef.dispose();
}

/** The statistics from a producer's partial statistics (`partials.ts`), checked. */
function _mergePartials(
  op: string,
  partials: ChannelPartials,
  r: Resolved,
  io: {
    weight: Tensor;
    saveMean: Tensor;
    saveInvStd: Tensor;
    runningMean: Tensor;
    runningVar: Tensor;
    coef: Tensor;
  },
): void {
  const { tiles } = partials;
  if (!Number.isInteger(tiles) || tiles < 1 || tiles > MAX_PARTIAL_TILES) {
    throw new RangeError(
      `${op}: partials.tiles must be an integer in [1, ${MAX_PARTIAL_TILES}], got ${tiles}`,
    );
  }
  if (partials.partials.dtype !== "f32" || partials.partials.size !== r.c * tiles * 4) {
    throw new TypeError(
      `${op}: partials must be f32 with ${r.c * tiles * 4} elements (c * tiles * 4), got ` +
        `${partials.partials.dtype} ${formatShape(partials.partials.shape)}`,
    );
  }
  // Many tiles: one workgroup per channel (its threads share the tiles), else one thread.
  const wide = tiles > 4 * WG;
  statsMerge.dispatch({
    op,
    variant: wide ? "wg" : "",
    params: { c: r.c, tiles, count: r.n * r.hw, eps: r.eps, momentum: r.momentum },
    bindings: { partials: partials.partials, ...io },
    workgroups: wide ? r.c : Math.ceil(r.c / WG),
  });
}

/**
 * A producer's partial gradient sums, checked against the batch norm: its slots are the blocks
 * its finalize pass adds.
 */
function _gradSumsChecked(op: string, r: Resolved, g: GradSumsPartials): GradSumsPartials {
  if (g.partials.size !== r.c * g.tiles * 2 || g.tiles < 1) {
    throw new TypeError(
      `${op}: gradSums holds ${g.partials.size} values, expected ${r.c} channels x ${g.tiles} ` +
        "tiles x 2",
    );
  }
  return g;
}

/**
 * Batch normalization backward (training mode, with the `saveMean` / `saveInvStd` of the
 * forward): `dx` is overwritten; `dweight` and `dbias` are overwritten, or `+=` with
 * `accumulate: true`.
 *
 * With `activation` (an `ActivationKind`) this is the backward of the fused BN + activation
 * forward: `y` is that forward's output and `dy` the gradient of `y`; the gradient reaching the
 * batch norm, `dz = f'(BN(x)) * dy` computed from `y` as `activationBackward` does (ReLU:
 * `dy * (y > 0)`, relu'(0) = 0 as in PyTorch; ReLU6: `dy * (0 < y < 6)`; sigmoid:
 * `dy * y * (1 - y)`; tanh: `dy * (1 - y) * (1 + y)`), is computed on the fly in both passes over
 * the data, with no separate activation-backward pass or buffer.
 *
 * Tensors are f32 or f16, each its own (mixed precision: f16 `dy`, `x`, `y`, `dx`, f32 `weight`,
 * statistics, `dweight`, `dbias`); the sums are f32 and each output is rounded once.
 *
 * @throws {TypeError} when a tensor's shape does not match the parameters, a tensor is not f32
 *   or f16 (or is f16 on a device without `shader-f16`), or `activation` is given without `y`.
 * @throws {RangeError} for an unknown activation kind.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { batchNormBackward } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const x = gpu.zeros([4, 64, 24, 24]);
 * const dy = gpu.zeros(x.shape);
 * const dx = gpu.empty(x.shape);
 * const [dweight, dbias, weight, saveMean, saveInvStd] = [0, 1, 2, 3, 4].map(() => gpu.zeros([64]));
 * batchNormBackward(
 *   { dx, dweight, dbias, dy, x, weight, saveMean, saveInvStd },
 *   { n: 4, c: 64, hw: 24 * 24 },
 * );
 * // Backward of BN + ReLU (any fused activation), with y the output of the fused forward:
 * const y = gpu.zeros(x.shape);
 * batchNormBackward(
 *   { dx, dweight, dbias, dy, x, y, weight, saveMean, saveInvStd },
 *   { n: 4, c: 64, hw: 24 * 24, activation: "relu" },
 * );
 * ```
 */
export function batchNormBackward(
  io: {
    dx: Tensor;
    dweight: Tensor;
    dbias: Tensor;
    dy: Tensor;
    x: Tensor;
    weight: Tensor;
    saveMean: Tensor;
    saveInvStd: Tensor;
    /**
     * The output of the fused forward (same shape as `x`); required with `activation`, unused
     * without it.
     */
    y?: Tensor;
    /**
     * The gradient sums the layer after gathered as it stored `dy` (`grad_sums.ts`): merged
     * instead of the gradient-sum pass over `dy`, `x` and `y`.
     */
    gradSums?: GradSumsPartials;
  },
  p: BatchNormParams & {
    /** Add into `dweight` / `dbias` instead of overwriting them; default false. */
    readonly accumulate?: boolean;
    /**
     * The activation fused into the forward: `dy` is then the gradient of its output `io.y`,
     * and `f'(BN(x)) * dy` (from `y`, e.g. `dy * (y > 0)` for `"relu"`) that of the batch
     * norm's output; default none.
     */
    readonly activation?: ActivationKind;
  },
): void {
  const op = "batchNormBackward";
  const r = resolve(op, p);
  const kind = checkActivationOption(op, p.activation);
  checkData(op, "dy", io.dy, r);
  checkData(op, "x", io.x, r);
  checkData(op, "dx", io.dx, r);
  if (kind !== undefined && io.y === undefined) {
    throw new TypeError(`${op}: activation "${p.activation}" needs y, the fused forward's output`);
  }
  if (io.y !== undefined) checkData(op, "y", io.y, r);
  for (const k of ["dweight", "dbias", "weight", "saveMean", "saveInvStd"] as const) {
    checkChannel(op, k, io[k], r);
  }
  const gpu = io.x.gpu;
  const merged = io.gradSums && _gradSumsChecked(op, r, io.gradSums);
  const plan = reducePlan(op, gpu, r);
  const vec4 = r.hw % 4 === 0;
  const sums = gpu.empty([r.c, 2]);
  const partial = merged?.partials ?? (plan.final ? undefined : gpu.empty([r.c, plan.total, 2]));
  const { weight, saveMean, saveInvStd, dweight, dbias } = io;
  // y, the fused forward's output, with an activation only.
  const yOf = (s: SampleRange) => (kind === undefined ? undefined : samples(io.y!, r, s));
  for (const s of merged ? [] : plan.ranges) {
    const dy = samples(io.dy, r, s), x = samples(io.x, r, s), y = yOf(s);
    const variant = [kind ?? "", vec4 ? "vec4" : "", plan.mode, p.accumulate ? "acc" : ""]
      .filter((v, i) => v !== "" && (i < 3 || plan.final)).join("_") as GradVariant;
    gradPartial.dispatch({
      op,
      variant,
      params: partialParams(r, plan, s, y ? [x, dy, y] : [x, dy]),
      bindings: plan.final
        ? { dy, x, saveMean, y, saveInvStd, dweight, dbias, sums }
        : { dy, x, saveMean, y, partial },
      workgroups: plan.mode === "cols" ? Math.ceil(r.c / WG) : [s.blocks, r.c, 1],
    });
  }
  if (partial) {
    gradFinal.dispatch({
      op,
      variant: p.accumulate ? "acc" : "",
      params: { c: r.c, blocks: merged?.tiles ?? plan.total },
      bindings: { partial, saveInvStd, dweight, dbias, sums },
      workgroups: Math.ceil(r.c / WG),
    });
    if (!merged) partial.dispose();
  }
  for (const s of plan.ranges) {
    const dy = samples(io.dy, r, s), x = samples(io.x, r, s), dx = samples(io.dx, r, s);
    const y = yOf(s);
    const ew = elementwisePlan(gpu, r, s, y ? [x, dy, dx, y] : [x, dy, dx]);
    gradInput.dispatch({
      op,
      variant: elementwiseVariant(ew.layout, kind),
      params: { ...ew.params, count: r.n * r.hw },
      bindings: { dy, x, sums, weight, saveMean, saveInvStd, dx, y },
      workgroups: ew.workgroups,
    });
  }
  sums.dispose();
}
