/**
 * The decisions `planConv2d` (`plan.ts`) is made of, each a pure function of the geometry, the
 * adapter's profile and the options:
 *
 * - which path each pass takes ({@linkcode directForward}, {@linkcode directInputGrad},
 *   {@linkcode directWeightGrad}: the direct kernels where they are estimated to beat im2col +
 *   GEMM, by per-lane memory operations, which dominate on CPU adapters, counting the idle threads
 *   of a small image's last workgroup; {@linkcode isPointwise}:
 *   1x1 convolutions as single GEMMs over the images' pixels);
 * - how the images are chunked ({@linkcode chunkPlan}: every binding within the device's limit
 *   and `maxChunkBytes`);
 * - how col2im splits its work over dispatches ({@linkcode col2imForm}: llvmpipe's loop cap).
 *
 * @module
 */

import type { AdapterProfile } from "../_adapter.ts";
import { LOOP_CAP, maxBindingElements } from "../_binding.ts";
import { floatBytes } from "../_dtype.ts";
import type { FloatDType } from "../_dtype.ts";
import type { Conv2dKernelOptions } from "../_types.ts";
import {
  DIRECT_WG,
  type DirectConvPlan,
  type DirectWeightGradPlan,
  planDirectConv,
  planDirectWeightGrad,
} from "./direct_plan.ts";
import {
  type Conv2dGeometry,
  conv2dGeometry,
  type Conv2dParams,
  directShape,
  flippedShape,
} from "./geometry.ts";
import type { Col2imForm } from "./im2col.ts";

/** How a convolution is split over images (see {@linkcode conv2dChunkPlan}). */
export interface Conv2dChunkPlan {
  /** Images per chunk. */
  readonly imagesPerChunk: number;
  /** Number of chunks. */
  readonly chunks: number;
  /** Elements of the im2col buffer of one full chunk (0 when im2col is skipped). */
  readonly colElements: number;
}

/** Default of `maxChunkBytes`. */
const DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024;

/**
 * Whether the convolution is a plain per-pixel matrix product (1x1, stride 1, no padding, one
 * group), run without im2col as GEMMs straight on the NCHW tensors, whatever the image size:
 * batched over images, or ({@linkcode pointwiseBatched}) for small images one GEMM per chunk
 * whose columns run over all images' pixels (x, dy, y and dx as `[channels, images * pixels]`). `pointwiseMinPixels` (default 1) sends smaller images to
 * the other paths instead (`Infinity`: never pointwise).
 *
 * @example
 * ```ts
 * import { isPointwise } from "./cost.ts";
 * import { conv2dGeometry } from "./geometry.ts";
 * isPointwise(conv2dGeometry({ n: 2, cIn: 8, h: 12, w: 12, cOut: 4, kernel: 1 }), {}); // true
 * ```
 */
export function isPointwise(g: Conv2dGeometry, options: Conv2dKernelOptions): boolean {
  return g.kh === 1 && g.kw === 1 && g.sh === 1 && g.sw === 1 && g.ph === 0 && g.pw === 0 &&
    g.groups === 1 && g.oh * g.ow >= (options.pointwiseMinPixels ?? 1);
}

/**
 * Fewest pixels per image for which a pointwise convolution runs as GEMMs batched over images
 * (one product per image, plain rows); smaller images run as one GEMM whose columns are all the
 * chunk's pixels (B read and C stored in segments). Measured on llvmpipe, MobileNet's 1x1
 * layers at b32: one GEMM 1.3-1.8x the previous paths at 6x6 and 3x3, within noise of the
 * batched GEMMs from 12x12 on.
 */
const POINTWISE_BATCHED_MIN_PIXELS = 64;

/**
 * Whether a pointwise convolution runs as GEMMs batched over images (else as one GEMM over all
 * the chunk's pixels): from 64 pixels per image.
 *
 * @example
 * ```ts
 * import { pointwiseBatched } from "./cost.ts";
 * import { conv2dGeometry } from "./geometry.ts";
 * pointwiseBatched(conv2dGeometry({ n: 32, cIn: 8, h: 3, w: 3, cOut: 4, kernel: 1 })); // false
 * ```
 */
export function pointwiseBatched(g: Conv2dGeometry): boolean {
  return g.oh * g.ow >= POINTWISE_BATCHED_MIN_PIXELS;
}

/** Bytes per element of what a chunk binds: the im2col buffer, x (and dx), y (and dy). */
export interface ChunkBytes {
  /** The im2col buffer's (0 without one). */
  readonly col: number;
  /** x's and dx's (the larger). */
  readonly x: number;
  /** y's and dy's. */
  readonly y: number;
}

/**
 * How a convolution is chunked over images: each chunk's im2col buffer (with `im2col`) and each
 * bound range of x, y, dx, dy stay within `maxChunkBytes` (default 64 MiB) and the device's
 * binding limit. `yChannels`: channels of y's images (more than cOut when writing a channel
 * slice); `bytes`: element sizes (default all f32).
 *
 * @throws {RangeError} when a single image does not fit.
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { chunkPlan } from "./cost.ts";
 * import { conv2dGeometry } from "./geometry.ts";
 * const g = conv2dGeometry({ n: 128, cIn: 1, h: 224, w: 224, cOut: 96, kernel: 11, stride: 4, padding: 1 });
 * chunkPlan(WEBGPU_DEFAULT_PROFILE, g, { kernel: {}, im2col: true }).chunks; // 3
 * ```
 */
export function chunkPlan(
  profile: AdapterProfile,
  g: Conv2dGeometry,
  o: {
    readonly kernel: Conv2dKernelOptions;
    readonly im2col: boolean;
    readonly yChannels?: number;
    readonly bytes?: ChunkBytes;
  },
): Conv2dChunkPlan {
  const options = o.kernel;
  const b = o.bytes ?? { col: 4, x: 4, y: 4 };
  const deviceElems = maxBindingElements(profile);
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
        `${profile.limits.maxStorageBufferBindingSize}`,
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

/**
 * How the im2col path of a convolution is chunked over images on an adapter (see
 * {@linkcode chunkPlan}). Option `dtype: "f16"` plans for f16 activations (and im2col buffer):
 * half the bytes per image.
 *
 * @throws {RangeError} when a single image does not fit.
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { conv2dChunkPlan } from "./cost.ts";
 * const alex = { n: 128, cIn: 1, h: 224, w: 224, cOut: 96, kernel: 11, stride: 4, padding: 1 };
 * console.log(conv2dChunkPlan(WEBGPU_DEFAULT_PROFILE, alex).chunks); // 3 (the im2col of 128 images would take 181 MB)
 * console.log(conv2dChunkPlan(WEBGPU_DEFAULT_PROFILE, alex, { dtype: "f16" }).chunks); // 2
 * ```
 */
export function conv2dChunkPlan(
  profile: AdapterProfile,
  p: Conv2dParams,
  options: Conv2dKernelOptions & {
    /** Storage type of x, y and the im2col buffer; default f32 (f16 halves their bytes). */
    readonly dtype?: FloatDType;
  } = {},
): Conv2dChunkPlan {
  const g = conv2dGeometry(p);
  const e = floatBytes(options.dtype ?? "f32");
  return chunkPlan(profile, g, {
    kernel: options,
    im2col: !isPointwise(g, options),
    bytes: { col: e, x: e, y: e },
  });
}

// ------------------------------------------------------------ direct or im2col + GEMM ----

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

/**
 * Whether the direct kernels are considered by default: on Mesa's CPU adapters (their design
 * follows llvmpipe's costs), for convolutions big enough to repay the compile time. Not on
 * SwiftShader (Chromium's CPU adapter), where they run correctly (`deno task test:browser` forces
 * them) but compile far slower and run no faster: LeNet's 6->16 convolution at batch 100 took
 * 28 s (forward) and 18 s (backward) to compile and run the first time, against 4 s and 2 s for
 * im2col + GEMM, and about as long as those once compiled.
 */
function autoDirect(profile: AdapterProfile, g: Conv2dGeometry): boolean {
  const fmas = g.n * g.cOut * g.oh * g.ow * (g.cIn / g.groups) * g.kh * g.kw;
  return profile.mesaCpu && fmas >= DIRECT_MIN_FMAS;
}

/**
 * The direct kernel's estimate per useful output, counting the idle threads of its last
 * workgroup: it runs `n * oh * ceil(ow / tx)` threads in workgroups of 64 (`DIRECT_WG`), and a
 * workgroup costs the same (every thread stages weights and computes a clamped pixel) however
 * few of its threads store. Small images at small batches leave much of a workgroup idle:
 * ResNet at b8 runs 24 threads per workgroup of 64 on 3x3 outputs, 144 threads in 3 workgroups
 * on 6x6 ones. Measured on llvmpipe (2 busy cores, medians of 7 alternating runs), ResNet b8@96,
 * direct / im2col time with the estimates' ratio after this term: forward 3x3 512@3 2.15 (2.61),
 * 256@6 1.52 (1.30), 128@12 0.94 (0.95), 64@24 0.98 (0.80); stride 2 64->128@24 1.16 (1.01),
 * 128->256@12 1.39 (1.39), 256->512@6 2.0 (1.00); 1x1 stride 2 at 24, 12, 6: 0.98 (0.97), 1.22
 * (1.50), 1.44 (3.28); input gradient 512@3 2.31 (2.58), 256@6 1.46 (1.26), 128@12 1.03
 * (0.91), 64@24 0.85 (0.73). AlexNet b2 3x3 layers at 12x12 (72 threads in 2 workgroups): 2.0
 * (1.6). Kept direct, as measured: LeNet b256 (0.64 and 0.43), AlexNet conv1 b2 (0.81), the
 * stems, DenseNet b16 3x3 at 6x6 (forward 0.99 (0.85), input gradient 0.70 (0.78)).
 */
function _occupied(plan: DirectConvPlan, n: number, oh: number, ow: number): number {
  const threads = n * oh * Math.ceil(ow / plan.tile.tx);
  return (plan.cost * Math.ceil(threads / DIRECT_WG) * DIRECT_WG) / threads;
}

/**
 * The direct forward kernel's plan when the forward pass runs it, else `undefined` (im2col +
 * GEMM). `direct`: forced (option or tuning table), or `undefined` for the cost model.
 *
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { directForward } from "./cost.ts";
 * import { conv2dGeometry } from "./geometry.ts";
 * const g = conv2dGeometry({ n: 256, cIn: 6, h: 14, w: 14, cOut: 16, kernel: 5 });
 * directForward(WEBGPU_DEFAULT_PROFILE, g, {}); // undefined: not a Mesa CPU adapter
 * directForward(WEBGPU_DEFAULT_PROFILE, g, { direct: true })?.tile; // { tx: 2, co: 16, ci: 6 }
 * ```
 */
export function directForward(
  profile: AdapterProfile,
  g: Conv2dGeometry,
  o: Conv2dKernelOptions,
): DirectConvPlan | undefined {
  if (o.direct === undefined && !autoDirect(profile, g)) return undefined;
  if (o.direct === false || g.groups !== 1) return undefined;
  const plan = planDirectConv(directShape(g, g.n));
  if (!plan || o.direct === true) return plan;
  if (isPointwise(g, o)) return undefined;
  const K = g.cIn * g.kh * g.kw;
  const direct = _occupied(plan, g.n, g.oh, g.ow);
  return direct < K / 8 + (K / g.cOut) * (1 + 1 / g.kw) + 1 ? plan : undefined;
}

/**
 * The direct kernel's plan (of the flipped convolution) when the input gradient runs it (stride
 * 1 only), else `undefined`; `direct` as {@linkcode directForward}.
 *
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { directInputGrad } from "./cost.ts";
 * import { conv2dGeometry } from "./geometry.ts";
 * const g = conv2dGeometry({ n: 8, cIn: 6, h: 14, w: 14, cOut: 16, kernel: 5, stride: 2 });
 * directInputGrad(WEBGPU_DEFAULT_PROFILE, g, { direct: true }); // undefined: stride 2
 * ```
 */
export function directInputGrad(
  profile: AdapterProfile,
  g: Conv2dGeometry,
  o: Conv2dKernelOptions,
): DirectConvPlan | undefined {
  if (o.direct === undefined && !autoDirect(profile, g)) return undefined;
  if (o.direct === false || g.groups !== 1 || g.sh !== 1 || g.sw !== 1) return undefined;
  const plan = planDirectConv(flippedShape(g, g.n));
  if (!plan || o.direct === true) return plan;
  if (isPointwise(g, o)) return undefined;
  // GEMM path per dx element: its share of dcol (each cOut/8 loads + a store), col2im's
  // kh*kw loads and a store, and the permutation of dy.
  const K = g.cIn * g.kh * g.kw;
  const xPer = g.cIn * g.h * g.w, yPer = g.cOut * g.oh * g.ow;
  const dcolPer = (K * g.oh * g.ow) / xPer;
  const gemm = dcolPer * (g.cOut / 8 + 1) + g.kh * g.kw + 1 + (2 * yPer) / xPer;
  return _occupied(plan, g.n, g.h, g.w) < gemm ? plan : undefined;
}

/**
 * The direct weight-gradient kernel's plan when the weight and bias gradients run it, else
 * `undefined`; `direct` as {@linkcode directForward}.
 *
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { directWeightGrad } from "./cost.ts";
 * import { conv2dGeometry } from "./geometry.ts";
 * const g = conv2dGeometry({ n: 8, cIn: 1, h: 28, w: 28, cOut: 6, kernel: 5, padding: 2 });
 * directWeightGrad(WEBGPU_DEFAULT_PROFILE, g, { direct: true })?.tile; // { tx: 4, co: 6, ky: 5 }
 * ```
 */
export function directWeightGrad(
  profile: AdapterProfile,
  g: Conv2dGeometry,
  o: Conv2dKernelOptions,
): DirectWeightGradPlan | undefined {
  if (o.direct === undefined && !autoDirect(profile, g)) return undefined;
  if (o.direct === false || g.groups !== 1) return undefined;
  const plan = planDirectWeightGrad(directShape(g, g.n));
  if (!plan || o.direct === true) return plan;
  if (isPointwise(g, o)) return undefined;
  // GEMM path per multiply-add: the register block's loads, im2col's stores (K per column,
  // shared by cOut outputs) and the permutation of dy.
  const K = g.cIn * g.kh * g.kw;
  return plan.cost < 0.8 * (2 / 16 + 1 / g.cOut + 2 / K) ? plan : undefined;
}

// -------------------------------------------------------------------------- col2im ----

/**
 * How col2im folds `nb` images' dcol into a dx stored as `dx`, within llvmpipe's loop cap per
 * invocation: an f16 dx by the per-element gather (each element's taps summed in f32, stored
 * once; its columns split over dispatches); an f32 dx by the row gather for horizontal stride 1
 * when its loop count fits, else by the scatter (its kernel rows split over dispatches).
 *
 * @throws {RangeError} when even one column (or kernel row) exceeds the loop cap.
 * @example
 * ```ts
 * import { col2imForm } from "./cost.ts";
 * import { conv2dGeometry } from "./geometry.ts";
 * const g = conv2dGeometry({ n: 1, cIn: 1, h: 60, w: 62, cOut: 2, kernel: 60, padding: [0, 1] });
 * col2imForm(g, "f16").ranges.length; // 4 (16 columns per dispatch)
 * ```
 */
export function col2imForm(g: Conv2dGeometry, dx: FloatDType): Col2imForm {
  const ranges: [number, number][] = [];
  if (dx === "f16") {
    // Loop iterations per thread: 1 + columns * (2 + kh * (kw + 2)).
    const perIx = 2 + g.kh * (g.kw + 2);
    const ixPer = Math.floor((LOOP_CAP - 1) / perIx);
    if (ixPer < 1) {
      throw new RangeError(
        `conv2d: backward of a ${g.kh}x${g.kw} kernel exceeds the loop budget of one ` +
          `invocation (${LOOP_CAP})`,
      );
    }
    for (let ix0 = 0; ix0 < g.w; ix0 += ixPer) ranges.push([ix0, Math.min(g.w, ix0 + ixPer)]);
    return { form: "pixel", ranges };
  }
  // Gather for horizontal stride 1 (one load per tap, one store per element and valid ky), when
  // its loop count per thread, w + kh * (1 + w * (1 + kw)), fits the budget.
  if (g.sw === 1 && g.w + g.kh * (1 + g.w * (1 + g.kw)) <= LOOP_CAP) {
    return { form: "gather", ranges: [[0, g.kh]] };
  }
  // Scatter: loop iterations per thread are w (zeroing) + per ky: 1 + kw * (ow + 1). The ky
  // range is split over dispatches when that exceeds the budget (later ones add to dx).
  const perKy = 1 + g.kw * (g.ow + 1);
  if (g.w + perKy > LOOP_CAP) {
    throw new RangeError(
      `conv2d: backward of a ${g.kw}-wide kernel over ${g.ow} output columns exceeds the loop ` +
        `budget of one invocation (${LOOP_CAP})`,
    );
  }
  const kyPer = Math.max(1, Math.floor((LOOP_CAP - g.w) / perKy));
  for (let ky0 = 0; ky0 < g.kh; ky0 += kyPer) ranges.push([ky0, Math.min(g.kh, ky0 + kyPer)]);
  return { form: "scatter", ranges };
}
