/**
 * 2-D convolution (PyTorch's `conv2d`: cross-correlation, NCHW activations, OIHW weights) with
 * any kernel size, stride, padding, dilation and groups: {@linkcode conv2dForward} and
 * {@linkcode conv2dBackward} check their tensors, plan the call (`planConv2d`, `plan.ts`: pure),
 * and hand the plan to a small runner ({@linkcode runConv2dPlan}) that allocates its scratch
 * buffers, binds each step's ranges and records its dispatches.
 *
 * The paths (chosen per pass, see `cost.ts`): by im2col + GEMM (`im2col.ts`, `gemmStrided`), or
 * on CPU adapters, for convolutions with few channels (LeNet's, every model's first layer), by
 * the direct kernels (`direct.ts`, `direct_weight_grad.ts`: forward, stride-1 input gradient,
 * weight and bias gradients); 1x1 convolutions with stride 1 and no padding skip im2col and
 * col2im (one GEMM per chunk of images, reading and writing NCHW activations in place). Forward, per chunk of images: `im2col` unfolds x into
 * `col[cIn*kh*kw, images*oh*ow]`, then one GEMM per group computes `y = W . col (+ b)`, storing
 * straight into NCHW. Backward: `dy` is read as `[cOut, images*oh*ow]`, in place (the GEMMs read
 * NCHW tensors in segments: along k for the weight gradient, along n for dcol) or, where scalar
 * loads of odd segments would cost more, permuted first (`readsInPlace` of `plan.ts`); then
 * `dW (+)= dy . col^T` and `dcol = W^T . dy`, folded back by `col2im`; `db` sums dy.
 *
 * The forward pass can fuse an activation into its store (`y = f(conv(x, w) + b)`, in every
 * path) and write into a channel slice of a wider output (`yChannelOffset`), and gather its
 * output's batch statistics for a batch norm after it (`stats`; `stats.ts` decides and plans).
 * (Over 500 lines: the entry points with their JSDoc and the runner that binds every step kind;
 * the statistics' planning lives in `stats.ts`.)
 *
 * Storage types: every tensor is f32 or f16, each on its own (training stores activations,
 * their gradients and the weights' copies as f16, the bias and the parameter gradients as
 * f32). Arithmetic and accumulation are f32; an f16 output is rounded once, as it is stored.
 *
 * Which plan ran: the tuner (`autotune/`) installs an observer ({@linkcode observeConv2d}) to
 * which the runner reports every planned call.
 *
 * @module
 */

import type { Gpu, Tensor } from "../../gpu/mod.ts";
import { adapterProfile } from "../_adapter.ts";
import { checkActivationKind } from "../_activation_wgsl.ts";
import { bindingRange } from "../_binding.ts";
import type { FloatDType } from "../_dtype.ts";
import type { Conv2dKernelOptions } from "../_types.ts";
import type { ActivationKind } from "../_activation_wgsl.ts";
import { activeTuningTable } from "../autotune/table.ts";
import { gemmStrided, reduceStrided } from "../gemm/index.ts";
import { runGemmPlan, type StridedGemm } from "../gemm/index.ts";
import type { ChannelPartials } from "../batchnorm/partials.ts";
import { conv2dStatsPlans } from "./stats.ts";
import { gemmStridedGradSums } from "../gemm/grad_sums.ts";
import type { GradSumsSink } from "../batchnorm/grad_sums.ts";
import { directConvForward } from "./direct.ts";
import { directConvWeightGrad } from "./direct_weight_grad.ts";
import {
  checkConv2dTensors,
  checkOutputSlice,
  conv2dGeometry,
  type Conv2dParams,
} from "./geometry.ts";
import { col2im, im2col, permuteNc } from "./im2col.ts";
import {
  type Conv2dProblem,
  type ConvBuffer,
  type ConvOperand,
  type ConvPlan,
  planConv2d,
  readsInPlace,
} from "./plan.ts";
import type { GemmStep } from "./steps.ts";

export { checkConv2d, conv2dGeometry, type Conv2dParams } from "./geometry.ts";
export type { Conv2dGeometry, Window2d, Window2dParams } from "../_geometry.ts";
export type { Conv2dKernelOptions } from "../_types.ts";
export { type Conv2dStatsLayout, conv2dStatsLayout } from "./stats.ts";

/** Fusions of {@linkcode conv2dForward}: an activation epilogue and output into a channel slice. */
export interface Conv2dForwardOptions {
  /**
   * Activation applied to every output as it is stored: `y = f(conv2d(x, w) + b)`, bit for bit
   * what `activationForward` computes on the unfused output (in every path: im2col + GEMM,
   * grouped, pointwise and direct). Default: none.
   */
  readonly activation?: ActivationKind;
  /**
   * Write into a channel slice of a wider output: `y` is then `[n, C, oh, ow]` with
   * `C >= yChannelOffset + cOut`, and the convolution writes channels
   * `[yChannelOffset, yChannelOffset + cOut)` of each image, leaving the others untouched (a
   * branch writing straight into a concatenated output, as in Inception or DenseNet). Default:
   * `y` is exactly `[n, cOut, oh, ow]`.
   */
  readonly yChannelOffset?: number;
  /**
   * Also gather per-channel partial statistics of the stored `y` for a batch normalization after
   * it (see `conv2dStatsLayout`, `stats.ts`): `conv2dForward` then returns them, or `undefined`
   * where the plan or the adapter's decision does not (the batch norm reduces `y` itself).
   * Default false.
   */
  readonly stats?: boolean;
}

/** Options of {@linkcode conv2dBackward}. */
export interface Conv2dBackwardOptions {
  /** `dw` and `db` are accumulated (`+=`); default overwritten. */
  readonly accumulate?: boolean;
  /**
   * `dx` is accumulated (`+=`): several pointwise convolutions of one input sum their input
   * gradients in place. Only where the input gradient runs as a pointwise GEMM (a 1x1, stride-1,
   * unpadded, ungrouped convolution, not forced direct): a RangeError otherwise. Default false.
   */
  readonly accumulateDx?: boolean;
}

/** The tensors a plan's steps bind, by name (absent ones are not bound). */
export type Conv2dIO =
  & { readonly [K in "x" | "w"]: Tensor }
  & {
    readonly [K in "b" | "y" | "dy" | "dx" | "dw" | "db" | "xT"]?: Tensor | undefined;
  };

/** What the runner reports of a call: the problem it planned and the plan it ran. */
export interface Conv2dExecution {
  /** The problem. */
  readonly problem: Conv2dProblem;
  /** The plan. */
  readonly plan: ConvPlan;
}

const observers = new WeakMap<Gpu, Set<(e: Conv2dExecution) => void>>();

/**
 * Calls `observer` with every conv2d call planned on `gpu` (before its dispatches are recorded)
 * until the returned function is called: how the autotuner learns which problems a training
 * step computes.
 *
 * @returns A function that removes the observer.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { conv2dForward, observeConv2d } from "./index.ts";
 * const gpu = await getGpu();
 * const paths: string[] = [];
 * const stop = observeConv2d(gpu, ({ plan }) => paths.push(plan.forward!.path));
 * const x = gpu.zeros([1, 1, 8, 8]), w = gpu.zeros([2, 1, 3, 3]), y = gpu.empty([1, 2, 6, 6]);
 * conv2dForward({ y, x, w }, { n: 1, cIn: 1, h: 8, w: 8, cOut: 2, kernel: 3 });
 * stop();
 * console.log(paths); // ["im2col"]
 * ```
 */
export function observeConv2d(gpu: Gpu, observer: (e: Conv2dExecution) => void): () => void {
  let set = observers.get(gpu);
  if (!set) observers.set(gpu, set = new Set());
  const own = (e: Conv2dExecution) => observer(e);
  set.add(own);
  return () => void set.delete(own);
}

/** The kernel options of a call's params. */
function kernelOptions(p: Conv2dKernelOptions): Conv2dKernelOptions {
  const { maxChunkBytes, gemm, pointwiseMinPixels, direct } = p;
  return { maxChunkBytes, gemm, pointwiseMinPixels, direct };
}

const dtypeOf = (t: Tensor | undefined) => t?.dtype as FloatDType | undefined;

/** Plans a call on `gpu`'s adapter and table, reports it, and runs it. */
function planAndRun(
  gpu: Gpu,
  problem: Conv2dProblem,
  io: Conv2dIO,
  stats = false,
): ChannelPartials | undefined {
  const plan = planConv2d(problem, adapterProfile(gpu), activeTuningTable(gpu));
  for (const observer of observers.get(gpu) ?? []) observer({ problem, plan });
  const gradSums = (io as { gradSums?: GradSumsSink }).gradSums;
  return runConv2dPlan(plan, io, { stats, activation: problem.activation, gradSums });
}

/**
 * Records the forward convolution `y = conv2d(x, w) + b` (PyTorch semantics). `y` is overwritten.
 *
 * Fusions ({@linkcode Conv2dForwardOptions}): `activation` gives `y = f(conv2d(x, w) + b)` in
 * the same pass; `yChannelOffset` writes the output into channels
 * `[yChannelOffset, yChannelOffset + cOut)` of a wider `y` of shape `[n, C, oh, ow]` (other
 * channels untouched), e.g. one branch of a channel concatenation.
 *
 * `x`, `w`, `b` and `y` are f32 or f16, each on its own: sums in f32, `y` rounded once.
 *
 * @throws {TypeError} when a tensor's shape does not fit (message names the op and both shapes),
 * or a tensor is not f32/f16 (or f16 on a device without `shader-f16`).
 * @throws {RangeError} for bad hyper-parameters, an unknown activation or a `yChannelOffset`
 * that is not an integer >= 0.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { checkConv2d, conv2dForward } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const p = { n: 2, cIn: 3, h: 8, w: 8, cOut: 4, kernel: 3, padding: 1 };
 * const x = gpu.zeros([2, 3, 8, 8]), w = gpu.zeros([4, 3, 3, 3]), b = gpu.zeros([4]);
 * const y = gpu.empty(checkConv2d(p));
 * conv2dForward({ y, x, w, b }, p);
 * // Fused ReLU, into channels 2..5 of a 10-channel concatenation buffer:
 * const cat = gpu.zeros([2, 10, 8, 8]);
 * conv2dForward({ y: cat, x, w, b }, { ...p, activation: "relu", yChannelOffset: 2 });
 * ```
 */
export function conv2dForward(
  io: { y: Tensor; x: Tensor; w: Tensor; b?: Tensor },
  p: Conv2dParams & Conv2dForwardOptions & Conv2dKernelOptions,
): ChannelPartials | undefined {
  const g = conv2dGeometry(p);
  checkConv2dTensors(g, { x: io.x, w: io.w, b: io.b });
  const yChannels = checkOutputSlice(g, io.y, p.yChannelOffset);
  checkActivationKind("conv2d", p.activation);
  return planAndRun(
    io.x.gpu,
    {
      geometry: g,
      call: "forward",
      dtypes: { x: dtypeOf(io.x)!, w: dtypeOf(io.w)!, b: dtypeOf(io.b), y: dtypeOf(io.y) },
      yChannels,
      yChannelOffset: p.yChannelOffset ?? 0,
      activation: p.activation,
      options: kernelOptions(p),
    },
    io,
    p.stats ?? false,
  );
}

/**
 * Records the backward convolution: `dx` (input gradient, overwritten, or accumulated `+=` when
 * `accumulateDx`), `dw` and `db` (weight and bias gradients: overwritten, or accumulated `+=`
 * when `accumulate` is true). Any of the three may be omitted. `xT` (optional): x already
 * permuted by {@linkcode conv2dPermuteX}, which a pointwise weight gradient then reads.
 *
 * Every tensor is f32 or f16, each on its own (training: `dx`, `dy`, `x`, `w` f16; `dw`, `db`
 * f32, accumulated in f32): sums in f32, each output rounded once to its type.
 *
 * @throws {TypeError} when a tensor's shape does not fit (message names the op and both shapes),
 * or a tensor is not f32/f16 (or f16 on a device without `shader-f16`).
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { conv2dBackward } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const p = { n: 2, cIn: 3, h: 8, w: 8, cOut: 4, kernel: 3, padding: 1 };
 * const x = gpu.zeros([2, 3, 8, 8]), w = gpu.zeros([4, 3, 3, 3]), dy = gpu.zeros([2, 4, 8, 8]);
 * const dx = gpu.empty([2, 3, 8, 8]), dw = gpu.zeros([4, 3, 3, 3]), db = gpu.zeros([4]);
 * conv2dBackward({ dx, dw, db, dy, x, w }, { ...p, accumulate: true });
 * ```
 */
export function conv2dBackward(
  io: {
    dx?: Tensor;
    dw?: Tensor;
    db?: Tensor;
    dy: Tensor;
    x: Tensor;
    w: Tensor;
    xT?: Tensor;
    /**
     * dx is the output gradient of this batch norm (`kernels/batchnorm/grad_sums.ts`): where one
     * kernel stores all of dx (a pointwise convolution's GEMM, the flipped direct kernel), it
     * gathers the batch norm's gradient sums into `gradSums.partials` if the plan says so;
     * elsewhere (im2col's col2im, chunked images) they stay undefined.
     */
    gradSums?: GradSumsSink;
  },
  p: Conv2dParams & Conv2dBackwardOptions & Conv2dKernelOptions,
): void {
  const g = conv2dGeometry(p);
  checkConv2dTensors(g, io);
  if (!io.dx && !io.dw && !io.db) return;
  if (io.xT && io.xT.size !== io.x.size) {
    throw new TypeError(
      `conv2dBackward: xT ${io.xT} must hold x ${io.x} permuted (${io.x.size} elements)`,
    );
  }
  planAndRun(io.dy.gpu, {
    geometry: g,
    call: "backward",
    dtypes: {
      x: dtypeOf(io.x)!,
      w: dtypeOf(io.w)!,
      dy: dtypeOf(io.dy),
      dx: dtypeOf(io.dx),
      dw: dtypeOf(io.dw),
      db: dtypeOf(io.db),
    },
    accumulate: p.accumulate ?? false,
    accumulateDx: p.accumulateDx ?? false,
    permutedX: io.xT !== undefined,
    options: kernelOptions(p),
  }, io);
}

/** Whether a GEMM step stores all of `dx` (overwriting it), NCHW with its rows the channels. */
function _storesDx(
  m: Extract<ConvPlan["steps"][number], { kind: "gemm" }>["gemm"],
  cIn: number,
  dx: Tensor | undefined,
): boolean {
  const hw = dx === undefined ? 0 : dx.size / (dx.shape[0] * cIn);
  return dx !== undefined && m.c.buffer === "dx" && m.c.offset === 0 && m.c.count === dx.size &&
    m.beta === 0 && m.m === cIn && m.ldc === hw && (m.ldcCol ?? 1) === 1 &&
    m.bias === undefined && m.activation === undefined;
}

/**
 * Whether {@linkcode conv2dBackward} on `gpu` reads dy and a pointwise convolution's x in place
 * for output planes of `pixels` (`readsInPlace` of `plan.ts`): where it does not, a caller
 * sharing x among several pointwise convolutions permutes it once ({@linkcode conv2dPermuteX})
 * and binds it as `xT`; where it does, that copy would be wasted.
 *
 * @returns True when the backward GEMMs read dy and x in place.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { conv2dReadsInPlace } from "./index.ts";
 * const gpu = await getGpu();
 * conv2dReadsInPlace(gpu, 12 * 12); // true: segments of whole vec4s
 * ```
 */
export function conv2dReadsInPlace(
  gpu: Gpu,
  pixels: number,
  options?: Conv2dKernelOptions,
): boolean {
  return readsInPlace(pixels, adapterProfile(gpu), options);
}

/**
 * Records `xT = x` permuted from `[n, c, h, w]` to `[c, n * h * w]`: the input of a pointwise
 * convolution's weight gradient, shared by several pointwise convolutions of one input (give it
 * to each {@linkcode conv2dBackward} as `io.xT`). `xT` is overwritten.
 *
 * @throws {TypeError} when `xT` does not hold as many elements as `x`, or `x` is not 4-d.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { conv2dPermuteX } from "./index.ts";
 * const gpu = await getGpu();
 * const x = gpu.zeros([2, 3, 4, 4]), xT = gpu.empty([3, 32]);
 * conv2dPermuteX({ xT, x });
 * ```
 */
export function conv2dPermuteX(io: { xT: Tensor; x: Tensor }): void {
  const { x, xT } = io;
  if (x.shape.length !== 4 || xT.size !== x.size) {
    throw new TypeError(`conv2dPermuteX: x ${x} must be [n, c, h, w] and xT ${xT} as large`);
  }
  const [n, c, h, w] = x.shape;
  permuteNc(bindingRange(x, 0, x.size), bindingRange(xT, 0, xT.size), { nb: n, c, len: h * w });
}

/** Where one convolution of {@linkcode conv2dPointwiseGroup} stores its output channels. */
export interface PointwiseGroupOutput {
  /** Its output channels (its weight's rows). */
  readonly channels: number;
  /** Element of its channel 0 of image 0 in `y` (or in `outputs` with `second`). */
  readonly base: number;
  /** Elements between two images of its output. */
  readonly imageStride: number;
  /** Stored into `outputs` instead of `y`. */
  readonly second?: boolean;
}

/**
 * Forward of several pointwise convolutions (1×1, stride 1, no padding, ungrouped) of one input
 * `x` `[n, cIn, h, w]` as one GEMM: the weights `[c_i, cIn, 1, 1]` (and biases) copied side by
 * side, then `f(W_cat · x + b_cat)` with each convolution's channels stored where its
 * {@linkcode PointwiseGroupOutput} says, in `y` or in `outputs` (the GEMM's row groups; at most 4
 * convolutions). The weights share one storage type, each `c_i * cIn` even for f16 (4-byte
 * copies); the biases, all present or all absent.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { conv2dPointwiseGroup } from "./index.ts";
 * const gpu = await getGpu();
 * const x = gpu.zeros([2, 4, 3, 3]), y = gpu.empty([2, 6, 3, 3]);
 * const weights = [gpu.zeros([2, 4, 1, 1]), gpu.zeros([4, 4, 1, 1])];
 * conv2dPointwiseGroup({ y, x, weights }, {
 *   outputs: [
 *     { channels: 2, base: 0, imageStride: 54 },
 *     { channels: 4, base: 18, imageStride: 54 },
 *   ],
 *   activation: "relu",
 * });
 * ```
 */
export function conv2dPointwiseGroup(
  io: {
    y: Tensor;
    outputs?: Tensor | undefined;
    x: Tensor;
    weights: readonly Tensor[];
    biases?: readonly Tensor[] | undefined;
  },
  p: { outputs: readonly PointwiseGroupOutput[]; activation?: ActivationKind | undefined },
): void {
  const { x, y, outputs, weights, biases } = io;
  const gpu = x.gpu;
  const [n, cIn, h, w] = x.shape;
  const P = h * w;
  const rows = p.outputs.reduce((a, o) => a + o.channels, 0);
  if (weights.length !== p.outputs.length || (biases && biases.length !== weights.length)) {
    throw new TypeError(
      `conv2dPointwiseGroup: ${weights.length} weights, ${biases?.length ?? 0} biases and ` +
        `${p.outputs.length} outputs must match`,
    );
  }
  weights.forEach((wt, i) => {
    if (wt.size !== p.outputs[i].channels * cIn || wt.dtype !== weights[0].dtype) {
      throw new TypeError(
        `conv2dPointwiseGroup: weight ${i} ${wt} must hold [${p.outputs[i].channels}, ${cIn}, ` +
          `1, 1] of the first weight's type`,
      );
    }
  });
  const wCat = gpu.empty([rows * cIn], { dtype: weights[0].dtype });
  const bCat = biases ? gpu.empty([rows], { dtype: biases[0].dtype }) : null;
  const wb = wCat.dtype === "f16" ? 2 : 4, bb = bCat?.dtype === "f16" ? 2 : 4;
  let row = 0;
  const rowGroups = p.outputs.map((o, i) => {
    gpu.copy(weights[i], wCat, { dstOffset: row * cIn * wb, bytes: o.channels * cIn * wb });
    if (bCat) gpu.copy(biases![i], bCat, { dstOffset: row * bb, bytes: o.channels * bb });
    const group = {
      row,
      base: o.base,
      segmentStride: o.imageStride,
      ...(o.second ? { second: true } : {}),
    };
    row += o.channels;
    return group;
  });
  try {
    gemmStrided(gpu, {
      m: rows,
      n: n * P,
      k: cIn,
      batch: 1,
      transA: false,
      transB: false,
      alpha: 1,
      beta: 0,
      a: bindingRange(wCat, 0, rows * cIn),
      b: bindingRange(x, 0, x.size),
      c: bindingRange(y, 0, y.size),
      ...(outputs ? { c2: bindingRange(outputs, 0, outputs.size) } : {}),
      lda: cIn,
      ldb: P,
      ldc: P,
      strideA: 0,
      strideB: 0,
      strideC: 0,
      segment: P,
      segmentStride: y.size / n,
      segmentB: P,
      segmentStrideB: cIn * P,
      rowGroups,
      bias: bCat ? bindingRange(bCat, 0, rows) : undefined,
      biasMode: bCat ? "row" : "none",
      strideBias: 0,
      activation: p.activation,
    });
  } finally {
    wCat.dispose();
    bCat?.dispose();
  }
}

/**
 * Runs a plan (from `planConv2d`) on the call's tensors: allocates the plan's scratch buffers,
 * records each step with its operands bound as ranges of the tensors and scratch buffers, then
 * releases the scratch. Makes no decision of its own.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { adapterProfile } from "../_adapter.ts";
 * import { conv2dGeometry } from "./geometry.ts";
 * import { runConv2dPlan } from "./index.ts";
 * import { planConv2d } from "./plan.ts";
 * const gpu = await getGpu();
 * const geometry = conv2dGeometry({ n: 1, cIn: 1, h: 8, w: 8, cOut: 2, kernel: 3 });
 * const dtypes = { x: "f32", w: "f32", y: "f32" } as const;
 * const plan = planConv2d({ geometry, call: "forward", dtypes }, adapterProfile(gpu), undefined);
 * const x = gpu.zeros([1, 1, 8, 8]), w = gpu.zeros([2, 1, 3, 3]), y = gpu.empty([1, 2, 6, 6]);
 * runConv2dPlan(plan, { x, w, y });
 * ```
 */
export function runConv2dPlan(
  plan: ConvPlan,
  io: Conv2dIO,
  options: {
    readonly stats?: boolean;
    readonly activation?: string;
    readonly gradSums?: GradSumsSink;
  } = {},
): ChannelPartials | undefined {
  const { gradSums } = options;
  const gpu = io.x.gpu;
  const g = plan.geometry;
  const buffers: Partial<Record<ConvBuffer, Tensor>> = { ...io };
  const scratch: Tensor[] = [];
  for (const [name, [elements, dtype]] of Object.entries(plan.scratch)) {
    const t = gpu.empty([elements], { dtype });
    scratch.push(t);
    buffers[name as ConvBuffer] = t;
  }
  const tensor = (name: ConvBuffer): Tensor => {
    const t = buffers[name];
    if (!t) throw new TypeError(`conv2d: the plan binds '${name}', which the call lacks`);
    return t;
  };
  const bind = (o: ConvOperand) => bindingRange(tensor(o.buffer), o.offset, o.count);
  const strided = (m: GemmStep): StridedGemm => ({
    ...m,
    a: bind(m.a),
    b: bind(m.b),
    c: bind(m.c),
    bias: m.bias && bind(m.bias),
  });
  const stats = options.stats && io.y ? conv2dStatsPlans(plan, io.y, strided, options) : undefined;
  let gemmIndex = 0;
  try {
    for (const s of plan.steps) {
      switch (s.kind) {
        case "im2col":
          im2col(g, bind(s.x), bind(s.col), s.nb);
          break;
        case "col2im":
          col2im(g, bind(s.col), bind(s.dx), s.nb, s.form);
          break;
        case "permute":
          permuteNc(bind(s.src), bind(s.dst), s.shape);
          break;
        case "gemm": {
          if (stats) {
            const k = gemmIndex++;
            const { layout, base } = stats.layout.gemms[k];
            runGemmPlan(gpu, strided(s.gemm), stats.plans[k], {
              layout,
              base,
              tiles: stats.layout.tiles,
              out: bindingRange(stats.out, 0, stats.out.size),
            });
            break;
          }
          // The GEMM that stores all of dx, channels along its rows, gathers a batch norm's sums.
          if (gradSums && _storesDx(s.gemm, g.cIn, io.dx)) {
            const o = { source: gradSums.source, axis: "row", cOffset: 0 } as const;
            gradSums.partials = gemmStridedGradSums(gpu, strided(s.gemm), o, s.tuning);
          } else gemmStrided(gpu, strided(s.gemm), s.tuning);
          break;
        }
        case "reduce":
          reduceStrided(gpu, { ...s, y: bind(s.y), x: bind(s.x) });
          break;
        case "direct": {
          // The flipped kernel storing all of dx gathers a batch norm's sums (where it can).
          const sums = gradSums && s.flip && s.y.buffer === "dx" && s.y.offset === 0 &&
              s.y.count === io.dx?.size
            ? gradSums.source
            : undefined;
          const partials = directConvForward(gpu, s.shape, {
            y: bind(s.y),
            x: bind(s.x),
            w: tensor("w"),
            b: s.bias ? tensor("b") : undefined,
          }, {
            flip: s.flip,
            tile: s.tile,
            activation: s.activation,
            yChannels: s.yChannels,
            gradSums: sums,
          });
          if (sums) gradSums!.partials = partials;
          break;
        }
        case "directWeightGrad":
          directConvWeightGrad(gpu, s.shape, {
            dw: s.dw ? tensor("dw") : undefined,
            db: s.db ? tensor("db") : undefined,
            x: bind(s.x),
            dy: bind(s.dy),
          }, { accumulate: s.accumulate, tile: s.tile, split: s.split });
          break;
      }
    }
  } finally {
    for (const t of scratch) t.dispose();
  }
  return stats ? { partials: stats.out, tiles: stats.layout.tiles } : undefined;
}
