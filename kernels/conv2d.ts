/**
 * 2-D convolution (PyTorch's `conv2d`: cross-correlation, NCHW activations, OIHW weights) with
 * any kernel size, stride, padding, dilation and groups: by im2col + GEMM, or on CPU adapters,
 * for convolutions with few channels (LeNet's, every model's first layer), by the direct kernels
 * of `conv2d_direct.ts` (forward, stride-1 input gradient, weight and bias gradients), chosen per
 * pass by an estimate of per-lane memory operations (option `direct` forces either way).
 *
 * Forward, per chunk of images: `im2col` unfolds x into `col[cIn*kh*kw, images*oh*ow]`, then one
 * GEMM per group computes `y = W . col (+ b)`, storing straight into NCHW (the GEMM's columns run
 * over images and pixels). Backward: `dy` is permuted to `dyT[cOut, images*oh*ow]`; then
 * `dW (+)= dyT . col^T` (the reduction over images and pixels is the GEMM's k, split when long)
 * and `dcol = W^T . dyT`, folded back by `col2im` (each thread owns one row of dx: no atomics);
 * `db` sums dy over images and pixels. 1x1 convolutions with stride 1 and no padding skip im2col
 * and col2im (the GEMMs read x and write dx directly, batched over images).
 *
 * The forward pass can fuse an activation into its store (`y = f(conv(x, w) + b)`, in every
 * path) and write into a channel slice of a wider output (`yChannelOffset`: a branch storing
 * straight into a channel concatenation).
 *
 * Chunking keeps every binding (col, and ranges of x, y, dx, dy) under the device's
 * `maxStorageBufferBindingSize`; tensors larger than that are bound by ranges. The direct
 * kernels need no col buffer: their chunks are bounded by the activations alone.
 *
 * Storage types: every tensor is f32 or f16, each on its own (training stores activations,
 * their gradients and the weights' copies as f16, the bias and the parameter gradients as
 * f32). Arithmetic and accumulation are f32; an f16 output is rounded once, as it is stored.
 * The im2col buffer takes x's type (f16 halves it, so f16 chunks hold twice the images); in
 * the backward pass it is f16 only when x and dx both are (it holds dcol too). Where an f16
 * result would otherwise be summed in memory (col2im's taps, the direct kernel's input-channel
 * chunks), the sums are kept in f32 until the one store.
 *
 * @module
 */

import type { Gpu, Shape, Tensor } from "../gpu/mod.ts";
import { formatShape, grid1d } from "../gpu/mod.ts";
import { tunedConv } from "./_autotune_table.ts";
import { bindingRange, LOOP_CAP, maxBindingElements, type TensorRange } from "./_binding.ts";
import {
  convert,
  dtypeTag,
  floatBytes,
  type FloatDType,
  floatDType,
  loadF32,
  storeAs,
  wgslEnable,
} from "./_dtype.ts";
import {
  checkPositiveInts,
  checkWindow2d,
  type Conv2dGeometry,
  window2d,
  type Window2dParams,
} from "./_geometry.ts";
import type { Conv2dKernelOptions } from "./_types.ts";
import { ParamsWriter } from "./_params.ts";
import type { ActivationKind } from "./_activation_wgsl.ts";
import {
  directConvForward,
  type DirectConvShape,
  directConvWeightGrad,
  planDirectConv,
  planDirectWeightGrad,
} from "./conv2d_direct.ts";
import { checkActivationKind } from "./_activation_wgsl.ts";
import { gemmStrided, reduceStrided } from "./gemm/index.ts";

export type { Conv2dGeometry, Window2d, Window2dParams } from "./_geometry.ts";
export type { Conv2dKernelOptions } from "./_types.ts";

/**
 * Dimensions and hyper-parameters of a 2-D convolution: the window (kernel, stride 1, zero
 * padding 0, dilation 1 by default) and the sizes.
 */
export interface Conv2dParams extends Window2dParams {
  /** Batch size. */
  readonly n: number;
  /** Input channels. */
  readonly cIn: number;
  /** Input height. */
  readonly h: number;
  /** Input width. */
  readonly w: number;
  /** Output channels. */
  readonly cOut: number;
  /** Groups (`cIn` and `cOut` must be multiples); default 1. */
  readonly groups?: number;
}

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
}

/** How a convolution is split over images (see {@linkcode conv2dChunkPlan}). */
export interface Conv2dChunkPlan {
  /** Images per chunk. */
  readonly imagesPerChunk: number;
  /** Number of chunks. */
  readonly chunks: number;
  /** Elements of the im2col buffer of one full chunk (0 when im2col is skipped). */
  readonly colElements: number;
}

/**
 * Resolves defaults and validates a convolution, returning every size including the output's.
 *
 * @throws {RangeError} for bad values (non-positive sizes, groups not dividing the channels, an
 * output smaller than 1x1).
 * @example
 * ```ts
 * import { conv2dGeometry } from "./conv2d.ts";
 * const g = conv2dGeometry({ n: 1, cIn: 1, h: 224, w: 224, cOut: 96, kernel: 11, stride: 4, padding: 1 });
 * console.log(g.oh, g.ow); // 54 54
 * ```
 */
export function conv2dGeometry(p: Conv2dParams): Conv2dGeometry {
  const op = "conv2d";
  checkPositiveInts(op, p, ["n", "cIn", "h", "w", "cOut"]);
  const win = window2d(op, p);
  const groups = p.groups ?? 1;
  if (!Number.isInteger(groups) || groups < 1) {
    throw new RangeError(`${op}: groups must be an integer >= 1, got ${p.groups}`);
  }
  if (p.cIn % groups !== 0 || p.cOut % groups !== 0) {
    throw new RangeError(
      `${op}: groups ${groups} must divide cIn ${p.cIn} and cOut ${p.cOut}`,
    );
  }
  const [, , oh, ow] = checkWindow2d(op, win, [p.n, p.cIn, p.h, p.w]);
  const { kh, kw, sh, sw, ph, pw, dh, dw } = win;
  return {
    n: p.n,
    cIn: p.cIn,
    h: p.h,
    w: p.w,
    cOut: p.cOut,
    kh,
    kw,
    sh,
    sw,
    ph,
    pw,
    dh,
    dw,
    groups,
    oh,
    ow,
  };
}

/**
 * Validates a convolution and returns the output shape `[n, cOut, oh, ow]`.
 *
 * @throws {RangeError} for bad values; errors name the op (`conv2d`).
 * @example
 * ```ts
 * import { checkConv2d } from "@modern-cnn/webgpu/kernels";
 * checkConv2d({ n: 256, cIn: 1, h: 28, w: 28, cOut: 6, kernel: 5, padding: 2 }); // [256, 6, 28, 28]
 * ```
 */
export function checkConv2d(p: Conv2dParams): Shape {
  const g = conv2dGeometry(p);
  return [g.n, g.cOut, g.oh, g.ow];
}

function expectShape(name: string, t: Tensor | undefined, want: Shape): void {
  if (!t) return;
  floatDType("conv2d", name, t);
  if (t.shape.length !== want.length || t.shape.some((d, i) => d !== want[i])) {
    throw new TypeError(
      `conv2d: ${name} has shape ${formatShape(t.shape)}, expected ${formatShape(want)}`,
    );
  }
}

function checkTensors(
  g: Conv2dGeometry,
  t: {
    x?: Tensor;
    w?: Tensor;
    b?: Tensor;
    y?: Tensor;
    dx?: Tensor;
    dw?: Tensor;
    db?: Tensor;
    dy?: Tensor;
  },
): void {
  const xs = [g.n, g.cIn, g.h, g.w];
  const ws = [g.cOut, g.cIn / g.groups, g.kh, g.kw];
  const ys = [g.n, g.cOut, g.oh, g.ow];
  expectShape("x", t.x, xs);
  expectShape("w", t.w, ws);
  expectShape("b", t.b, [g.cOut]);
  expectShape("y", t.y, ys);
  expectShape("dx", t.dx, xs);
  expectShape("dw", t.dw, ws);
  expectShape("db", t.db, [g.cOut]);
  expectShape("dy", t.dy, ys);
}

const DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024;

/**
 * Whether the convolution is a plain per-pixel matrix product, run as GEMMs batched over images
 * without im2col. With few pixels per image such GEMMs fill few SIMD lanes: then the im2col path
 * (whose GEMM columns run over all images' pixels) is faster and used instead.
 */
function isPointwise(g: Conv2dGeometry, options: Conv2dKernelOptions): boolean {
  return g.kh === 1 && g.kw === 1 && g.sh === 1 && g.sw === 1 && g.ph === 0 && g.pw === 0 &&
    g.groups === 1 && g.oh * g.ow >= (options.pointwiseMinPixels ?? POINTWISE_MIN_PIXELS);
}

/** Fewest pixels per image for the batched pointwise path (measured on llvmpipe). */
const POINTWISE_MIN_PIXELS = 64;

/**
 * How a convolution is chunked over images: each chunk's im2col buffer and each bound range of
 * x, y, dx, dy stay within `maxChunkBytes` (default 64 MiB) and the device's binding limit.
 * Option `dtype: "f16"` plans for f16 activations (and im2col buffer): half the bytes per image.
 *
 * @throws {RangeError} when a single image does not fit.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { conv2dChunkPlan } from "./conv2d.ts";
 * const gpu = await getGpu();
 * const plan = conv2dChunkPlan(gpu, { n: 128, cIn: 1, h: 224, w: 224, cOut: 96, kernel: 11, stride: 4, padding: 1 });
 * console.log(plan.chunks); // 3 (the im2col of 128 images would take 181 MB)
 * console.log(conv2dChunkPlan(gpu, { n: 128, cIn: 1, h: 224, w: 224, cOut: 96, kernel: 11, stride: 4, padding: 1 }, { dtype: "f16" }).chunks); // 2
 * ```
 */
export function conv2dChunkPlan(
  gpu: Gpu,
  p: Conv2dParams,
  options: Conv2dKernelOptions & {
    /** Storage type of x, y and the im2col buffer; default f32 (f16 halves their bytes). */
    readonly dtype?: "f32" | "f16";
  } = {},
): Conv2dChunkPlan {
  const g = conv2dGeometry(p);
  const e = floatBytes(options.dtype ?? "f32");
  return chunkPlan(gpu, g, {
    kernel: options,
    im2col: !isPointwise(g, options),
    bytes: { col: e, x: e, y: e },
  });
}

/** Bytes per element of what a chunk binds: the im2col buffer, x (and dx), y (and dy). */
interface ChunkBytes {
  readonly col: number;
  readonly x: number;
  readonly y: number;
}

/**
 * `yChannels`: channels of y's images (more than cOut when writing a channel slice); `bytes`:
 * element sizes (default all f32).
 */
function chunkPlan(
  gpu: Gpu,
  g: Conv2dGeometry,
  o: {
    kernel: Conv2dKernelOptions;
    im2col: boolean;
    yChannels?: number;
    bytes?: ChunkBytes;
  },
): Conv2dChunkPlan {
  const options = o.kernel;
  const b = o.bytes ?? { col: 4, x: 4, y: 4 };
  const deviceElems = maxBindingElements(gpu);
  const limitElems = Math.min(
    deviceElems,
    Math.floor((options.maxChunkBytes ?? DEFAULT_CHUNK_BYTES) / 4),
  );
  const P = g.oh * g.ow;
  const colPer = o.im2col ? g.cIn * g.kh * g.kw * P : 0;
  // The largest binding of one image in 4-byte units: its f32 element count when all is f32.
  const perImage = Math.max(
    colPer * b.col,
    g.cIn * g.h * g.w * b.x,
    (o.yChannels ?? g.cOut) * P * b.y,
  ) / 4;
  if (perImage > deviceElems) {
    throw new RangeError(
      `conv2d: one image needs ${perImage * 4} bytes in one binding (im2col or activations), ` +
        `more than the device's maxStorageBufferBindingSize ` +
        `${gpu.limits.maxStorageBufferBindingSize}`,
    );
  }
  if (g.ow > LOOP_CAP) {
    throw new RangeError(`conv2d: output width ${g.ow} exceeds ${LOOP_CAP}`);
  }
  // Columns of the chunk's GEMM must fit the grid as well (65535 workgroups of >= 32 columns).
  const maxCols = 65535 * 32;
  const imagesPerChunk = Math.max(
    1,
    Math.min(g.n, Math.floor(limitElems / perImage), Math.floor(maxCols / P), 32768),
  );
  const chunks = Math.ceil(g.n / imagesPerChunk);
  return { imagesPerChunk, chunks, colElements: colPer * imagesPerChunk };
}

// ------------------------------------------------------------ direct or im2col + GEMM ----

function directShape(g: Conv2dGeometry, n: number): DirectConvShape {
  return {
    n,
    cIn: g.cIn,
    h: g.h,
    w: g.w,
    cOut: g.cOut,
    oh: g.oh,
    ow: g.ow,
    kh: g.kh,
    kw: g.kw,
    sh: g.sh,
    sw: g.sw,
    ph: g.ph,
    pw: g.pw,
    dh: g.dh,
    dw: g.dw,
  };
}

/**
 * The input gradient of a stride-1 convolution as a direct convolution of dy with the flipped
 * kernel: channels exchanged, padding `dilation*(k-1) - padding` (possibly negative).
 */
function flippedShape(g: Conv2dGeometry, n: number): DirectConvShape {
  return {
    n,
    cIn: g.cOut,
    h: g.oh,
    w: g.ow,
    cOut: g.cIn,
    oh: g.h,
    ow: g.w,
    kh: g.kh,
    kw: g.kw,
    sh: 1,
    sw: 1,
    ph: g.dh * (g.kh - 1) - g.ph,
    pw: g.dw * (g.kw - 1) - g.pw,
    dh: g.dh,
    dw: g.dw,
  };
}

/*
 * Cost estimates (per-lane memory operations, which dominate on CPU adapters) that choose
 * between the direct kernels and im2col + GEMM. The GEMM's register blocks load about 2/16
 * values per multiply-add; im2col stores K values per output pixel column.
 */

/**
 * Fewest multiply-adds of a convolution (over the whole batch) for which the direct kernels are
 * considered by default: each of their specializations costs llvmpipe a second or more to
 * compile, which only pays off on convolutions that take milliseconds.
 */
const DIRECT_MIN_FMAS = 1 << 23;

/** Mesa's CPU adapters (llvmpipe, lavapipe), whose costs the direct kernels are designed for. */
const MESA_CPU = /llvmpipe|lavapipe/i;

/**
 * Whether the direct kernels are considered by default: on Mesa's CPU adapters (their design
 * follows llvmpipe's costs; on SwiftShader, Chromium's CPU adapter, one LeNet conv1 dispatch took
 * 9 s and the backward crashed its GPU process), for convolutions big enough to repay the
 * compile time.
 */
function autoDirect(gpu: Gpu, g: Conv2dGeometry): boolean {
  const fmas = g.n * g.cOut * g.oh * g.ow * (g.cIn / g.groups) * g.kh * g.kw;
  return gpu.isCpu && MESA_CPU.test(gpu.description) && fmas >= DIRECT_MIN_FMAS;
}

/**
 * Whether the direct forward kernel's plan for `s` takes the input channels over several
 * dispatches (an f16 output then needs an f32 scratch for the partial sums).
 */
function directSplitsChannels(s: DirectConvShape): boolean {
  const plan = planDirectConv(s);
  return plan !== undefined && plan.tile.ci < s.cIn;
}

/** Whether the forward pass runs the direct kernel. */
function useDirectForward(gpu: Gpu, g: Conv2dGeometry, o: Conv2dKernelOptions): boolean {
  o = tunedConv(gpu, g, "forward", o, useDirectForward); // tuned, if any
  if (o.direct === undefined && !autoDirect(gpu, g)) return false;
  if (o.direct === false || g.groups !== 1) return false;
  const plan = planDirectConv(directShape(g, g.n));
  if (!plan) return false;
  if (o.direct === true) return true;
  if (isPointwise(g, o)) return false;
  const K = g.cIn * g.kh * g.kw;
  return plan.cost < K / 8 + (K / g.cOut) * (1 + 1 / g.kw) + 1;
}

/** Whether the input gradient runs the direct kernel (stride 1 only). */
function useDirectInputGrad(gpu: Gpu, g: Conv2dGeometry, o: Conv2dKernelOptions): boolean {
  o = tunedConv(gpu, g, "inputGrad", o, useDirectInputGrad); // tuned, if any
  if (o.direct === undefined && !autoDirect(gpu, g)) return false;
  if (o.direct === false || g.groups !== 1 || g.sh !== 1 || g.sw !== 1) return false;
  const plan = planDirectConv(flippedShape(g, g.n));
  if (!plan) return false;
  if (o.direct === true) return true;
  if (isPointwise(g, o)) return false;
  // GEMM path per dx element: its share of dcol (each cOut/8 loads + a store), col2im's
  // kh*kw loads and a store, and the permutation of dy.
  const K = g.cIn * g.kh * g.kw;
  const xPer = g.cIn * g.h * g.w, yPer = g.cOut * g.oh * g.ow;
  const dcolPer = (K * g.oh * g.ow) / xPer;
  return plan.cost < dcolPer * (g.cOut / 8 + 1) + g.kh * g.kw + 1 + (2 * yPer) / xPer;
}

/** Whether the weight and bias gradients run the direct kernel. */
function useDirectWeightGrad(gpu: Gpu, g: Conv2dGeometry, o: Conv2dKernelOptions): boolean {
  o = tunedConv(gpu, g, "weightGrad", o, useDirectWeightGrad); // tuned, if any
  if (o.direct === undefined && !autoDirect(gpu, g)) return false;
  if (o.direct === false || g.groups !== 1) return false;
  const plan = planDirectWeightGrad(directShape(g, g.n));
  if (!plan) return false;
  if (o.direct === true) return true;
  if (isPointwise(g, o)) return false;
  // GEMM path per multiply-add: the register block's loads, im2col's stores (K per column,
  // shared by cOut outputs) and the permutation of dy.
  const K = g.cIn * g.kh * g.kw;
  return plan.cost < 0.8 * (2 / 16 + 1 / g.cOut + 2 / K);
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
): void {
  const g = conv2dGeometry(p);
  checkTensors(g, { x: io.x, w: io.w, b: io.b });
  const yC = checkOutputSlice(g, io.y, p.yChannelOffset);
  checkActivationKind("conv2d", p.activation);
  const off = p.yChannelOffset ?? 0;
  const gpu = io.x.gpu;
  const P = g.oh * g.ow;
  // The y range of images [n0, n0 + nb): from channel `off` of image n0 to channel off + cOut of
  // image n0 + nb - 1 (image stride yC * P).
  const yRange = (n0: number, nb: number) =>
    bindingRange(io.y, (n0 * yC + off) * P, ((nb - 1) * yC + g.cOut) * P);
  const xb = floatBytes(io.x.dtype as FloatDType), yb = floatBytes(io.y.dtype as FloatDType);
  if (useDirectForward(gpu, g, p)) {
    // An f16 y over several input-channel dispatches sums into an f32 scratch of cOut channels.
    const scratch = io.y.dtype === "f16" && directSplitsChannels(directShape(g, g.n));
    const plan = chunkPlan(gpu, g, {
      kernel: p,
      im2col: false,
      yChannels: yC,
      bytes: { col: 0, x: xb, y: scratch ? 4 : yb },
    });
    for (let n0 = 0; n0 < g.n; n0 += plan.imagesPerChunk) {
      const nb = Math.min(plan.imagesPerChunk, g.n - n0);
      directConvForward(gpu, directShape(g, nb), {
        y: yRange(n0, nb),
        x: bindingRange(io.x, n0 * g.cIn * g.h * g.w, nb * g.cIn * g.h * g.w),
        w: io.w,
        b: io.b,
      }, { activation: p.activation, yChannels: yC });
    }
    return;
  }
  const pointwise = isPointwise(g, p);
  // The im2col buffer takes x's storage type.
  const plan = chunkPlan(gpu, g, {
    kernel: p,
    im2col: !pointwise,
    yChannels: yC,
    bytes: { col: xb, x: xb, y: yb },
  });
  const G = g.groups;
  const cInG = g.cIn / G, cOutG = g.cOut / G;
  const K = cInG * g.kh * g.kw;
  const wr = bindingRange(io.w, 0, io.w.size);
  const br = io.b ? bindingRange(io.b, 0, io.b.size) : undefined;
  const col = pointwise ? undefined : gpu.empty([plan.colElements], { dtype: io.x.dtype });
  for (let n0 = 0; n0 < g.n; n0 += plan.imagesPerChunk) {
    const nb = Math.min(plan.imagesPerChunk, g.n - n0);
    const yr = yRange(n0, nb);
    const xr = bindingRange(io.x, n0 * g.cIn * g.h * g.w, nb * g.cIn * g.h * g.w);
    if (pointwise) {
      // y[img] = W . x[img], batched over images.
      gemmStrided(gpu, {
        m: g.cOut,
        n: P,
        k: g.cIn,
        batch: nb,
        transA: false,
        transB: false,
        alpha: 1,
        beta: 0,
        a: wr,
        b: xr,
        c: yr,
        lda: g.cIn,
        ldb: P,
        ldc: P,
        strideA: 0,
        strideB: g.cIn * P,
        strideC: yC * P,
        bias: br,
        biasMode: br ? "row" : "none",
        strideBias: 0,
        activation: p.activation,
      }, p.gemm);
      continue;
    }
    const cols = nb * P;
    const cr = bindingRange(col!, 0, g.cIn * g.kh * g.kw * cols);
    im2col(gpu, g, xr, cr, nb);
    // y (NCHW) = W_g . col_g per group; GEMM column j = image * P + pixel.
    gemmStrided(gpu, {
      m: cOutG,
      n: cols,
      k: K,
      batch: G,
      transA: false,
      transB: false,
      alpha: 1,
      beta: 0,
      a: wr,
      b: cr,
      c: yr,
      lda: K,
      ldb: cols,
      ldc: P,
      strideA: cOutG * K,
      strideB: K * cols,
      strideC: cOutG * P,
      segment: P,
      segmentStride: yC * P,
      bias: br,
      biasMode: br ? "row" : "none",
      strideBias: cOutG,
      activation: p.activation,
    }, p.gemm);
  }
  col?.dispose();
}

/**
 * Validates `y` of a forward convolution, returning its channel count: exactly
 * `[n, cOut, oh, ow]` without `yChannelOffset`, else `[n, C, oh, ow]` with
 * `C >= yChannelOffset + cOut`.
 */
function checkOutputSlice(g: Conv2dGeometry, y: Tensor, offset: number | undefined): number {
  if (offset === undefined) {
    expectShape("y", y, [g.n, g.cOut, g.oh, g.ow]);
    return g.cOut;
  }
  if (!Number.isInteger(offset) || offset < 0) {
    throw new RangeError(`conv2d: yChannelOffset must be an integer >= 0, got ${offset}`);
  }
  floatDType("conv2d", "y", y);
  const s = y.shape;
  if (
    s.length !== 4 || s[0] !== g.n || s[2] !== g.oh || s[3] !== g.ow || s[1] < offset + g.cOut
  ) {
    throw new TypeError(
      `conv2d: y has shape ${formatShape(s)}, expected ` +
        `${formatShape([g.n, offset + g.cOut, g.oh, g.ow])} or more channels ` +
        `(yChannelOffset ${offset} + cOut ${g.cOut})`,
    );
  }
  return s[1];
}

/**
 * Records the backward convolution: `dx` (input gradient, overwritten), `dw` and `db` (weight and
 * bias gradients: overwritten, or accumulated `+=` when `accumulate` is true). Any of the three
 * may be omitted.
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
  io: { dx?: Tensor; dw?: Tensor; db?: Tensor; dy: Tensor; x: Tensor; w: Tensor },
  p: Conv2dParams & { readonly accumulate?: boolean } & Conv2dKernelOptions,
): void {
  const g = conv2dGeometry(p);
  checkTensors(g, io);
  if (!io.dx && !io.dw && !io.db) return;
  const gpu = io.dy.gpu;
  const pointwise = isPointwise(g, p);
  // The direct kernels take what they can; the rest goes through im2col + GEMM.
  // (db alone is a plain reduction of dy.)
  const directW = !!io.dw && useDirectWeightGrad(gpu, g, p);
  const directX = !!io.dx && useDirectInputGrad(gpu, g, p);
  const gemmW = !directW && !!io.dw;
  const gemmX = !directX && !!io.dx;
  // The im2col buffer holds x's columns (for dW) and dcol (for dx). dcol stays f32 even for an
  // f16 dx: col2im sums each element's taps in f32 and rounds once (an f16 dcol would round every
  // tap first, ~2x the error, and break "f16 = the f32 path rounded once per layer"). Only x's
  // columns alone (no dx through the buffer) are stored f16, which is exact.
  const colDType: FloatDType = !gemmX && io.x.dtype === "f16" ? "f16" : "f32";
  const xb = Math.max(
    floatBytes(io.x.dtype as FloatDType),
    io.dx ? floatBytes(io.dx.dtype as FloatDType) : 0,
  );
  // An f16 dx from several input-channel dispatches of the direct kernel sums into an f32
  // scratch of dx's size.
  const dxScratch = directX && io.dx!.dtype === "f16" &&
    directSplitsChannels(flippedShape(g, g.n));
  const plan = chunkPlan(gpu, g, {
    kernel: p,
    im2col: (gemmW || gemmX) && !pointwise,
    bytes: {
      col: floatBytes(colDType),
      x: dxScratch ? 4 : xb,
      y: floatBytes(io.dy.dtype as FloatDType),
    },
  });
  const P = g.oh * g.ow;
  const G = g.groups;
  const cInG = g.cIn / G, cOutG = g.cOut / G;
  const K = cInG * g.kh * g.kw;
  const accumulate = p.accumulate ?? false;
  const wr = bindingRange(io.w, 0, io.w.size);
  const needT = gemmW || (gemmX && !pointwise);
  const dyT = needT
    ? gpu.empty([plan.imagesPerChunk * g.cOut * P], { dtype: io.dy.dtype })
    : undefined;
  const col = (gemmW || gemmX) && !pointwise
    ? gpu.empty([plan.colElements], { dtype: colDType })
    : undefined;
  for (let n0 = 0, chunk = 0; n0 < g.n; n0 += plan.imagesPerChunk, chunk++) {
    const nb = Math.min(plan.imagesPerChunk, g.n - n0);
    const cols = nb * P;
    const acc = accumulate || chunk > 0;
    const dyr = bindingRange(io.dy, n0 * g.cOut * P, nb * g.cOut * P);
    const xr = bindingRange(io.x, n0 * g.cIn * g.h * g.w, nb * g.cIn * g.h * g.w);
    if (directW) {
      directConvWeightGrad(gpu, directShape(g, nb), { dw: io.dw, db: io.db, x: xr, dy: dyr }, {
        accumulate: acc,
      });
    }
    if (directX) {
      const dxr = bindingRange(io.dx!, n0 * g.cIn * g.h * g.w, nb * g.cIn * g.h * g.w);
      directConvForward(gpu, flippedShape(g, nb), { y: dxr, x: dyr, w: io.w }, { flip: true });
    }
    if (io.db && !directW) {
      reduceStrided(gpu, {
        y: bindingRange(io.db, 0, g.cOut),
        x: dyr,
        outer: nb,
        mid: g.cOut,
        inner: P,
        accumulate: acc,
      });
    }
    if (!gemmW && !gemmX) continue;
    let dytr: TensorRange | undefined;
    if (needT) {
      dytr = bindingRange(dyT!, 0, g.cOut * cols);
      permuteDy(gpu, dyr, dytr, nb, g.cOut, P);
    }
    const cr = col ? bindingRange(col, 0, g.cIn * g.kh * g.kw * cols) : undefined;
    if (gemmW) {
      // dW_g (+)= dyT_g [cOutG, cols] . col_g^T (col_g stored [K, cols]).
      const bSrc = pointwise ? undefined : cr!;
      if (!pointwise) im2col(gpu, g, xr, bSrc!, nb);
      if (pointwise) {
        // x chunk permuted to [cIn, cols] is pointwise im2col: reuse the permute kernel.
        const xt = gpu.empty([g.cIn * cols], { dtype: io.x.dtype });
        const xtr = bindingRange(xt, 0, g.cIn * cols);
        permuteDy(gpu, xr, xtr, nb, g.cIn, P);
        gemmStrided(gpu, {
          m: g.cOut,
          n: g.cIn,
          k: cols,
          batch: 1,
          transA: false,
          transB: true,
          alpha: 1,
          beta: acc ? 1 : 0,
          a: dytr!,
          b: xtr,
          c: bindingRange(io.dw!, 0, io.dw!.size),
          lda: cols,
          ldb: cols,
          ldc: g.cIn,
          strideA: 0,
          strideB: 0,
          strideC: 0,
          biasMode: "none",
        }, p.gemm);
        xt.dispose();
      } else {
        gemmStrided(gpu, {
          m: cOutG,
          n: K,
          k: cols,
          batch: G,
          transA: false,
          transB: true,
          alpha: 1,
          beta: acc ? 1 : 0,
          a: dytr!,
          b: cr!,
          c: bindingRange(io.dw!, 0, io.dw!.size),
          lda: cols,
          ldb: cols,
          ldc: K,
          strideA: cOutG * cols,
          strideB: K * cols,
          strideC: cOutG * K,
          biasMode: "none",
        }, p.gemm);
      }
    }
    if (gemmX) {
      const dxr = bindingRange(io.dx!, n0 * g.cIn * g.h * g.w, nb * g.cIn * g.h * g.w);
      if (pointwise) {
        // dx[img] = W^T . dy[img], batched over images (W stored [cOut, cIn] = [k, m]).
        gemmStrided(gpu, {
          m: g.cIn,
          n: P,
          k: g.cOut,
          batch: nb,
          transA: true,
          transB: false,
          alpha: 1,
          beta: 0,
          a: wr,
          b: dyr,
          c: dxr,
          lda: g.cIn,
          ldb: P,
          ldc: P,
          strideA: 0,
          strideB: g.cOut * P,
          strideC: g.cIn * P,
          biasMode: "none",
        }, p.gemm);
      } else {
        // dcol_g [K, cols] = W_g^T . dyT_g (W_g stored [cOutG, K] = [k, m]), then col2im.
        gemmStrided(gpu, {
          m: K,
          n: cols,
          k: cOutG,
          batch: G,
          transA: true,
          transB: false,
          alpha: 1,
          beta: 0,
          a: wr,
          b: dytr!,
          c: cr!,
          lda: K,
          ldb: cols,
          ldc: cols,
          strideA: cOutG * K,
          strideB: cOutG * cols,
          strideC: K * cols,
          biasMode: "none",
        }, p.gemm);
        col2im(gpu, g, cr!, dxr, nb);
      }
    }
  }
  dyT?.dispose();
  col?.dispose();
}

// ------------------------------------------------------------------------- kernels ----

const WG = 64;

const GEOM_WGSL = `struct Params {
  nb: u32, cIn: u32, h: u32, w: u32,
  kh: u32, kw: u32, sh: u32, sw: u32,
  ph: u32, pw: u32, dh: u32, dw: u32,
  oh: u32, ow: u32, srcOff: u32, dstOff: u32,
  kyBeg: u32, kyEnd: u32, zero: u32,
}
@group(0) @binding(0) var<uniform> p: Params;`;

function geomParams(
  g: Conv2dGeometry,
  nb: number,
  srcOff: number,
  dstOff: number,
  ky: [number, number, boolean] = [0, g.kh, true],
): Uint8Array {
  return new ParamsWriter()
    .u32(nb).u32(g.cIn).u32(g.h).u32(g.w)
    .u32(g.kh).u32(g.kw).u32(g.sh).u32(g.sw)
    .u32(g.ph).u32(g.pw).u32(g.dh).u32(g.dw)
    .u32(g.oh).u32(g.ow).u32(srcOff).u32(dstOff)
    .u32(ky[0]).u32(ky[1]).u32(ky[2] ? 1 : 0)
    .bytes();
}

/** Kernel specializations (storage types, kernel widths) by name: each WGSL is built once. */
const kernelSpecs = new Map<string, { name: string; code: string }>();

function kernelSpec(name: string, build: () => string): { name: string; code: string } {
  let spec = kernelSpecs.get(name);
  if (!spec) kernelSpecs.set(name, spec = { name, code: build() });
  return spec;
}

/** Storage types of an im2col kernel's bindings. */
interface Im2colDTypes {
  x: FloatDType;
  col: FloatDType;
}

function im2colKernel(dt: Im2colDTypes): { name: string; code: string } {
  return kernelSpec(
    `conv2d_im2col${dtypeTag({ ...dt })}`,
    () =>
      `${wgslEnable(Object.values(dt))}${GEOM_WGSL}
@group(0) @binding(1) var<storage, read> x: array<${dt.x}>;
@group(0) @binding(2) var<storage, read_write> col: array<${dt.col}>;
// One thread per (kernel tap kidx = (ci*kh + ky)*kw + kx, image, output row oy): it writes the
// ow columns col[kidx][(image*oh + oy)*ow + ox], zero where the tap falls in the padding.
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * ${WG}u;
  let rows = p.nb * p.oh;
  if (t >= rows * p.cIn * p.kh * p.kw) { return; }
  let r = t % rows;
  let kidx = t / rows;
  let oy = r % p.oh;
  let img = r / p.oh;
  let kx = kidx % p.kw;
  let ky = (kidx / p.kw) % p.kh;
  let ci = kidx / (p.kw * p.kh);
  let cols = rows * p.ow;
  let dst = p.dstOff + kidx * cols + r * p.ow;
  let iy = i32(oy * p.sh + ky * p.dh) - i32(p.ph);
  if (iy < 0 || iy >= i32(p.h)) {
    for (var ox = 0u; ox < p.ow; ox++) { col[dst + ox] = 0.0; }
    return;
  }
  let src = p.srcOff + ((img * p.cIn + ci) * p.h + u32(iy)) * p.w;
  let ix0 = i32(kx * p.dw) - i32(p.pw);
  for (var ox = 0u; ox < p.ow; ox++) {
    let ix = ix0 + i32(ox * p.sw);
    var v = 0.0;
    if (ix >= 0 && ix < i32(p.w)) { v = ${loadF32(dt.x, "x[src + u32(ix)]")}; }
    col[dst + ox] = ${storeAs(dt.col, "v")};
  }
}`,
  );
}

/** Widest kernel of the sliding-window im2col (one register per tap of a row). */
const WINDOW_MAX_KW = 16;

/**
 * im2col for horizontal stride 1 and dilation 1: one thread per (ci, ky, image, oy) row keeps
 * the kw input values under the kernel in registers and slides them along the row, so each
 * input is loaded once instead of kw times; it writes the kw col rows (ci, ky, 0..kw-1).
 */
function im2colWindowKernel(kw: number, dt: Im2colDTypes): { name: string; code: string } {
  return kernelSpec(`conv2d_im2col_window_kw${kw}${dtypeTag({ ...dt })}`, () => {
    const taps = Array.from({ length: kw }, (_, j) => j);
    const load = (ix: string) =>
      `select(0.0, ${
        loadF32(dt.x, `x[src + u32(clamp(${ix}, 0, i32(p.w) - 1))]`)
      }, ${ix} >= 0 && ${ix} < i32(p.w))`;
    return `${wgslEnable(Object.values(dt))}${GEOM_WGSL}
@group(0) @binding(1) var<storage, read> x: array<${dt.x}>;
@group(0) @binding(2) var<storage, read_write> col: array<${dt.col}>;
// One thread per (ci*kh + ky, image, oy): registers v0..v${kw - 1} hold x[iy][ox - pw + kx] for
// the current ox; each step stores them to col rows (ci, ky, kx) and slides by one input.
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * ${WG}u;
  let rows = p.nb * p.oh;
  if (t >= rows * p.cIn * p.kh) { return; }
  let r = t % rows;
  let cky = t / rows;
  let oy = r % p.oh;
  let img = r / p.oh;
  let ky = cky % p.kh;
  let ci = cky / p.kh;
  let cols = rows * p.ow;
  let dst = p.dstOff + cky * ${kw}u * cols + r * p.ow;
  let iy = i32(oy * p.sh + ky * p.dh) - i32(p.ph);
  if (iy < 0 || iy >= i32(p.h)) {
    for (var ox = 0u; ox < p.ow; ox++) {
${taps.map((j) => `      col[dst + ${j}u * cols + ox] = 0.0;`).join("\n")}
    }
    return;
  }
  let src = p.srcOff + ((img * p.cIn + ci) * p.h + u32(iy)) * p.w;
  let ix0 = -i32(p.pw);
${taps.map((j) => `  var v${j} = ${load(`(ix0 + ${j})`)};`).join("\n")}
  for (var ox = 0u; ox < p.ow; ox++) {
${taps.map((j) => `    col[dst + ${j}u * cols + ox] = ${storeAs(dt.col, `v${j}`)};`).join("\n")}
${taps.slice(1).map((j) => `    v${j - 1} = v${j};`).join("\n")}
    let ixn = ix0 + i32(ox) + ${kw};
    v${kw - 1} = ${load("ixn")};
  }
}`;
  });
}

/** im2col of x into col: each takes its own tensor's storage type (f32 or f16). */
function im2col(gpu: Gpu, g: Conv2dGeometry, x: TensorRange, col: TensorRange, nb: number): void {
  const params = geomParams(g, nb, x.base, col.base);
  const bindings = [x.binding, col.binding];
  const dt: Im2colDTypes = {
    x: x.tensor.dtype as FloatDType,
    col: col.tensor.dtype as FloatDType,
  };
  if (g.sw === 1 && g.dw === 1 && g.kw > 1 && g.kw <= WINDOW_MAX_KW) {
    const threads = g.cIn * g.kh * nb * g.oh;
    gpu.dispatch(im2colWindowKernel(g.kw, dt), {
      params,
      bindings,
      workgroups: grid1d(threads, WG),
    });
    return;
  }
  const threads = g.cIn * g.kh * g.kw * nb * g.oh;
  gpu.dispatch(im2colKernel(dt), { params, bindings, workgroups: grid1d(threads, WG) });
}

/** WGSL: thread t of a col2im kernel owns row (img, ci, iy) of dx, starting at dx[dst]. */
const COL2IM_ROW = `  let t = gid.x + gid.y * nwg.x * ${WG}u;
  if (t >= p.nb * p.cIn * p.h) { return; }
  let iy = t % p.h;
  let ci = (t / p.h) % p.cIn;
  let img = t / (p.h * p.cIn);
  let dst = p.dstOff + t * p.w;`;

/** Scatter col2im into an f32 dx (col f32 or f16). */
function col2imKernel(colType: FloatDType): { name: string; code: string } {
  return kernelSpec(
    `conv2d_col2im${dtypeTag({ col: colType })}`,
    () =>
      `${wgslEnable([colType])}${GEOM_WGSL}
@group(0) @binding(1) var<storage, read> col: array<${colType}>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
// One thread per row (image, ci, iy) of dx: zeroes it (when p.zero), then adds every col entry
// whose tap lands on it: for each ky in [kyBeg, kyEnd) with (iy + ph - ky*dh) = oy*sh,
// 0 <= oy < oh, each kx and each ox, dx[.., ox*sw - pw + kx*dw] += col[kidx][(image*oh + oy)*ow
// + ox]. No two threads share a row.
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
${COL2IM_ROW}
  if (p.zero != 0u) {
    for (var ix = 0u; ix < p.w; ix++) { dx[dst + ix] = 0.0; }
  }
  let cols = p.nb * p.oh * p.ow;
  for (var ky = p.kyBeg; ky < p.kyEnd; ky++) {
    let ty = i32(iy + p.ph) - i32(ky * p.dh);
    if (ty < 0) { break; }
    if (u32(ty) % p.sh != 0u) { continue; }
    let oy = u32(ty) / p.sh;
    if (oy >= p.oh) { continue; }
    let rowBase = p.srcOff + (img * p.oh + oy) * p.ow;
    for (var kx = 0u; kx < p.kw; kx++) {
      let kidx = (ci * p.kh + ky) * p.kw + kx;
      let src = rowBase + kidx * cols;
      let ix0 = i32(kx * p.dw) - i32(p.pw);
      for (var ox = 0u; ox < p.ow; ox++) {
        let ix = ix0 + i32(ox * p.sw);
        if (ix >= 0 && ix < i32(p.w)) {
          dx[dst + u32(ix)] += ${loadF32(colType, "col[src + ox]")};
        }
      }
    }
  }
}`,
  );
}

/** Gather col2im for horizontal stride 1 into an f32 dx (col f32 or f16). */
function col2imGatherKernel(colType: FloatDType): { name: string; code: string } {
  return kernelSpec(
    `conv2d_col2im_gather_s1${dtypeTag({ col: colType })}`,
    () =>
      `${wgslEnable([colType])}${GEOM_WGSL}
@group(0) @binding(1) var<storage, read> col: array<${colType}>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
// Horizontal stride 1: one thread per row (image, ci, iy) of dx. For each ky whose output row
// oy = (iy + ph - ky*dh) / sh is exact and in range, and each ix, it sums
// col[(ci, ky, kx)][(image*oh + oy)*ow + ox] over kx with ox = ix + pw - kx*dw in range, and
// writes (first valid ky) or adds it to dx; a row no tap reaches is zeroed.
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
${COL2IM_ROW}
  let cols = p.nb * p.oh * p.ow;
  var first = true;
  for (var ky = 0u; ky < p.kh; ky++) {
    let ty = i32(iy + p.ph) - i32(ky * p.dh);
    if (ty < 0) { break; }
    let oy = u32(ty) / p.sh;
    if (oy * p.sh != u32(ty) || oy >= p.oh) { continue; }
    let rowBase = p.srcOff + (ci * p.kh + ky) * p.kw * cols + (img * p.oh + oy) * p.ow;
    for (var ix = 0u; ix < p.w; ix++) {
      var acc = 0.0;
      for (var kx = 0u; kx < p.kw; kx++) {
        let ox = i32(ix + p.pw) - i32(kx * p.dw);
        if (ox >= 0 && ox < i32(p.ow)) { acc += ${
        loadF32(colType, "col[rowBase + kx * cols + u32(ox)]")
      }; }
      }
      if (first) { dx[dst + ix] = acc; } else { dx[dst + ix] += acc; }
    }
    first = false;
  }
  if (first) {
    for (var ix = 0u; ix < p.w; ix++) { dx[dst + ix] = 0.0; }
  }
}`,
  );
}

/**
 * Gather col2im into a dx of any storage type (used for f16 dx, which must not accumulate in
 * memory): each element's taps are summed in f32 and stored once. The Params struct is
 * GEOM_WGSL's with its last fields holding the column range [ixBeg, ixEnd) of the dispatch.
 */
function col2imPixelKernel(dt: { col: FloatDType; dx: FloatDType }): {
  name: string;
  code: string;
} {
  return kernelSpec(
    `conv2d_col2im_pixel${dtypeTag({ ...dt })}`,
    () =>
      `${wgslEnable(Object.values(dt))}struct Params {
  nb: u32, cIn: u32, h: u32, w: u32,
  kh: u32, kw: u32, sh: u32, sw: u32,
  ph: u32, pw: u32, dh: u32, dw: u32,
  oh: u32, ow: u32, srcOff: u32, dstOff: u32,
  ixBeg: u32, ixEnd: u32, unused: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> col: array<${dt.col}>;
@group(0) @binding(2) var<storage, read_write> dx: array<${dt.dx}>;
// One thread per row (image, ci, iy) of dx, over its columns ix in [ixBeg, ixEnd): sums in f32
// col[(ci, ky, kx)][(image*oh + oy)*ow + ox] over every ky with oy = (iy + ph - ky*dh) / sh
// exact and < oh, and every kx with ox = (ix + pw - kx*dw) / sw exact and < ow, then stores
// the sum once (0 where no tap lands). No two threads share an element.
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
${COL2IM_ROW}
  let cols = p.nb * p.oh * p.ow;
  for (var ix = p.ixBeg; ix < p.ixEnd; ix++) {
    var acc = 0.0;
    for (var ky = 0u; ky < p.kh; ky++) {
      let ty = i32(iy + p.ph) - i32(ky * p.dh);
      if (ty < 0) { break; }
      let oy = u32(ty) / p.sh;
      if (oy * p.sh != u32(ty) || oy >= p.oh) { continue; }
      let rowBase = p.srcOff + (ci * p.kh + ky) * p.kw * cols + (img * p.oh + oy) * p.ow;
      for (var kx = 0u; kx < p.kw; kx++) {
        let tx = i32(ix + p.pw) - i32(kx * p.dw);
        if (tx < 0) { break; }
        let ox = u32(tx) / p.sw;
        if (ox * p.sw == u32(tx) && ox < p.ow) {
          acc += ${loadF32(dt.col, "col[rowBase + kx * cols + ox]")};
        }
      }
    }
    dx[dst + ix] = ${storeAs(dt.dx, "acc")};
  }
}`,
  );
}

function col2im(gpu: Gpu, g: Conv2dGeometry, col: TensorRange, dx: TensorRange, nb: number): void {
  const workgroups = grid1d(nb * g.cIn * g.h, WG);
  const colType = col.tensor.dtype as FloatDType;
  const dxType = dx.tensor.dtype as FloatDType;
  if (dxType === "f16") {
    // Per element, all taps summed in f32 and stored once. Loop iterations per thread:
    // 1 + columns * (2 + kh * (kw + 2)); the columns are split over dispatches to fit.
    const perIx = 2 + g.kh * (g.kw + 2);
    const ixPer = Math.floor((LOOP_CAP - 1) / perIx);
    if (ixPer < 1) {
      throw new RangeError(
        `conv2d: backward of a ${g.kh}x${g.kw} kernel exceeds the loop budget of one ` +
          `invocation (${LOOP_CAP})`,
      );
    }
    const spec = col2imPixelKernel({ col: colType, dx: dxType });
    for (let ix0 = 0; ix0 < g.w; ix0 += ixPer) {
      gpu.dispatch(spec, {
        params: geomParams(g, nb, col.base, dx.base, [ix0, Math.min(g.w, ix0 + ixPer), false]),
        bindings: [col.binding, dx.binding],
        workgroups,
      });
    }
    return;
  }
  // Gather form for horizontal stride 1 (one load per tap, one store per element and valid ky),
  // when its loop count per thread, w + kh * (1 + w * (1 + kw)), fits the budget.
  if (g.sw === 1 && g.w + g.kh * (1 + g.w * (1 + g.kw)) <= LOOP_CAP) {
    gpu.dispatch(col2imGatherKernel(colType), {
      params: geomParams(g, nb, col.base, dx.base),
      bindings: [col.binding, dx.binding],
      workgroups,
    });
    return;
  }
  // Scatter form: loop iterations per thread are w (zeroing) + per ky: 1 + kw * (ow + 1).
  // Split the ky range over dispatches when that exceeds the budget (later dispatches add to dx
  // without zeroing).
  const perKy = 1 + g.kw * (g.ow + 1);
  const kyPer = Math.max(1, Math.floor((LOOP_CAP - g.w) / perKy));
  if (g.w + perKy > LOOP_CAP) {
    throw new RangeError(
      `conv2d: backward of a ${g.kw}-wide kernel over ${g.ow} output columns exceeds the loop ` +
        `budget of one invocation (${LOOP_CAP})`,
    );
  }
  const spec = col2imKernel(colType);
  for (let ky0 = 0; ky0 < g.kh; ky0 += kyPer) {
    const ky1 = Math.min(g.kh, ky0 + kyPer);
    gpu.dispatch(spec, {
      params: geomParams(g, nb, col.base, dx.base, [ky0, ky1, ky0 === 0]),
      bindings: [col.binding, dx.binding],
      workgroups,
    });
  }
}

const RUN = 16;

function permuteKernel(dt: { src: FloatDType; dst: FloatDType }): { name: string; code: string } {
  const value = convert("src[s + i]", dt.src, dt.dst);
  return kernelSpec(
    `conv2d_permute_nc${dtypeTag({ ...dt })}`,
    () =>
      `${
        wgslEnable(Object.values(dt))
      }struct Params { nb: u32, c: u32, len: u32, runs: u32, srcOff: u32, dstOff: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<${dt.src}>;
@group(0) @binding(2) var<storage, read_write> dst: array<${dt.dst}>;
// [nb, c, len] -> [c, nb * len]. One thread per (channel, image, run of ${RUN} positions).
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * ${WG}u;
  if (t >= p.c * p.nb * p.runs) { return; }
  let q = t % p.runs;
  let row = t / p.runs;
  let img = row % p.nb;
  let ch = row / p.nb;
  let beg = q * ${RUN}u;
  let end = min(beg + ${RUN}u, p.len);
  let s = p.srcOff + (img * p.c + ch) * p.len;
  let d = p.dstOff + (ch * p.nb + img) * p.len;
  for (var i = beg; i < end; i++) { dst[d + i] = ${value}; }
}`,
  );
}

/** [nb, c, len] -> [c, nb * len], each range in its own storage type. */
function permuteDy(
  gpu: Gpu,
  src: TensorRange,
  dst: TensorRange,
  nb: number,
  c: number,
  len: number,
): void {
  const runs = Math.ceil(len / RUN);
  const dt = { src: src.tensor.dtype as FloatDType, dst: dst.tensor.dtype as FloatDType };
  gpu.dispatch(permuteKernel(dt), {
    params: new ParamsWriter().u32(nb).u32(c).u32(len).u32(runs).u32(src.base).u32(dst.base)
      .bytes(),
    bindings: [src.binding, dst.binding],
    workgroups: grid1d(c * nb * runs, WG),
  });
}
