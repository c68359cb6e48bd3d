/**
 * {@linkcode prepareBatch}: a training batch from a dataset resident on the GPU (u8 images and
 * labels) in one dispatch per range of the batch (see `index.ts`); its kernel is in
 * `prepare_batch_kernel.ts`.
 *
 * @module
 */

import { formatShape, grid1d, type Tensor } from "../../gpu/mod.ts";
import { sameShape } from "../../gpu/shape.ts";
import { bindingRange, unitRanges } from "../_binding.ts";
import { floatDType } from "../_dtype.ts";
import type { BoundTensor } from "../_kernel.ts";
import { _hasAffine, type AugmentParams, checkAugment } from "./augment.ts";
import { prepare, WG } from "./prepare_batch_kernel.ts";

/** Most channels that can be normalized with per-channel mean/std. */
const MAX_NORM_CHANNELS = 4;

const isPositiveInt = (v: unknown): v is number =>
  typeof v === "number" && Number.isInteger(v) && v > 0;

/** Hyper-parameters of {@linkcode prepareBatch}. */
export interface PrepareBatchParams {
  /** Examples in the batch. */
  readonly batch: number;
  /** Channels: 1 (MNIST) or 3 (CIFAR, stored CHW per image as in the binary format). */
  readonly channels: number;
  /** Stored image height (28 or 32). */
  readonly srcH: number;
  /** Stored image width. */
  readonly srcW: number;
  /** Output height (the `--resize` target). */
  readonly dstH: number;
  /** Output width. */
  readonly dstW: number;
  /** Per-channel mean subtracted after `/255` (needs `std` too; at most 4 channels). */
  readonly mean?: readonly number[];
  /** Per-channel standard deviation divided by after subtracting `mean`. */
  readonly std?: readonly number[];
  /**
   * The augmentation ({@linkcode AugmentParams}: crop with padding, resized crop, flip, rotation,
   * translation, zoom, shear); default none.
   */
  readonly augment?: AugmentParams;
  /** Seed of the counter-based randomness (u32); default 0. */
  readonly seed?: number;
}

/** Shapes of the tensors of {@linkcode prepareBatch}. */
export interface PrepareBatchShapes {
  /** `[count, channels, srcH, srcW]` (u8). */
  readonly images?: readonly number[];
  /** `[count]` (u8). */
  readonly srcLabels?: readonly number[];
  /** `[batch]` (u32). */
  readonly indices?: readonly number[];
  /** `[batch, channels, dstH, dstW]` (f32 or f16). */
  readonly x?: readonly number[];
  /** `[batch]` (i32). */
  readonly labels?: readonly number[];
}

/**
 * Validates {@linkcode PrepareBatchParams} (RangeError for bad values) and, when given, the
 * tensor shapes (TypeError naming the op and both shapes); returns the shape of `x`,
 * `[batch, channels, dstH, dstW]`.
 *
 * @example
 * ```ts
 * import { checkPrepareBatch } from "@modern-cnn/webgpu/kernels";
 * checkPrepareBatch({ batch: 256, channels: 1, srcH: 28, srcW: 28, dstH: 96, dstW: 96 });
 * // [256, 1, 96, 96]
 * ```
 */
export function checkPrepareBatch(
  p: PrepareBatchParams,
  shapes: PrepareBatchShapes = {},
): number[] {
  const op = "prepareBatch";
  for (const k of ["batch", "channels", "srcH", "srcW", "dstH", "dstW"] as const) {
    if (!isPositiveInt(p[k])) {
      throw new RangeError(`${op}: ${k} must be a positive integer, got ${p[k]}`);
    }
  }
  for (const k of ["flip", "cropPadding", "resizedCrop"]) {
    if (k in p) {
      throw new TypeError(`${op}: ${k} is a field of augment now: pass { augment: { ${k} } }`);
    }
  }
  if (p.augment !== undefined) checkAugment(p.augment, op);
  const seed = p.seed ?? 0;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new RangeError(`${op}: seed must be an integer in [0, 2^32), got ${seed}`);
  }
  if ((p.mean === undefined) !== (p.std === undefined)) {
    throw new RangeError(`${op}: mean and std must be given together`);
  }
  if (p.mean && p.std) {
    if (p.mean.length !== p.channels || p.std.length !== p.channels) {
      throw new RangeError(
        `${op}: mean (${p.mean.length} values) and std (${p.std.length} values) need one value ` +
          `per channel (${p.channels})`,
      );
    }
    if (p.channels > MAX_NORM_CHANNELS) {
      throw new RangeError(
        `${op}: per-channel normalization supports at most ${MAX_NORM_CHANNELS} channels, got ` +
          p.channels,
      );
    }
    if (p.mean.some((v) => !Number.isFinite(v))) {
      throw new RangeError(`${op}: mean must be finite, got [${p.mean.join(", ")}]`);
    }
    if (p.std.some((v) => !Number.isFinite(v) || v <= 0)) {
      throw new RangeError(`${op}: std must be finite and > 0, got [${p.std.join(", ")}]`);
    }
  }
  const out = [p.batch, p.channels, p.dstH, p.dstW];
  const check = (name: string, actual: readonly number[] | undefined, expected: number[]) => {
    if (actual && !sameShape(actual, expected)) {
      throw new TypeError(
        `${op}: ${name} has shape ${formatShape(actual)}, expected ${
          formatShape(expected).replace("-1", "*")
        }`,
      );
    }
  };
  const count = shapes.images?.[0] ?? shapes.srcLabels?.[0] ?? -1;
  if (shapes.images) {
    const s = shapes.images;
    const ok = s.length === 4 && s[1] === p.channels && s[2] === p.srcH && s[3] === p.srcW &&
      s[0] > 0;
    if (!ok) {
      throw new TypeError(
        `${op}: images has shape ${formatShape(s)}, expected [count, ${p.channels}, ${p.srcH}, ` +
          `${p.srcW}]`,
      );
    }
  }
  if (shapes.srcLabels) {
    const s = shapes.srcLabels;
    if (s.length !== 1 || s[0] !== count) {
      throw new TypeError(
        `${op}: srcLabels has shape ${formatShape(s)}, expected [${count}] (one per image)`,
      );
    }
  }
  check("indices", shapes.indices, [p.batch]);
  check("x", shapes.x, out);
  check("labels", shapes.labels, [p.batch]);
  return out;
}

function checkDtype(op: string, name: string, t: Tensor, dtype: string): void {
  if (t.dtype !== dtype) {
    throw new TypeError(
      `${op}: ${name} must be ${dtype}, got ${formatShape(t.shape)} (${t.dtype})`,
    );
  }
}

/** Tensors of {@linkcode prepareBatch}: outputs first, then inputs. */
export interface PrepareBatchIO {
  /** Output images `[batch, channels, dstH, dstW]` (f32 or f16), overwritten. */
  readonly x: Tensor;
  /** Output labels `[batch]` (i32), overwritten (-1 for an out-of-range index). */
  readonly labels: Tensor;
  /** The whole dataset `[count, channels, srcH, srcW]` (u8), uploaded once. */
  readonly images: Tensor;
  /** Labels of the whole dataset `[count]` (u8). */
  readonly srcLabels: Tensor;
  /** Which examples to take `[batch]` (u32), e.g. a slice of a shuffled order. */
  readonly indices: Tensor;
}

/**
 * Records one dispatch that prepares a training batch from a dataset resident on the GPU: for
 * each `b`, example `n = indices[b]` is augmented (`p.augment`: crop with zero padding, resized
 * crop, flip, rotation, translation, zoom, shear; one affine map per example, drawn on the GPU),
 * resampled to `dstH x dstW` as `F.interpolate(img / 255, mode="bilinear", align_corners=False)`
 * (exactly so without augmentation), optionally normalized `(v - mean[c]) / std[c]`, and written to `x[b]`
 * (f32, or rounded once to f16 when `x` is f16); `labels[b] = srcLabels[n]`. Both outputs are
 * overwritten. An index `>= count` yields a zero image and label -1.
 *
 * The images may exceed one storage binding (e.g. CIFAR-10's 153.6 MB training set): they are
 * then bound as two ranges, up to twice the device's `maxStorageBufferBindingSize`. An output
 * `x` larger than one binding is written in ranges of whole images (one dispatch each).
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { prepareBatch } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const images = gpu.tensor(new Uint8Array(10 * 28 * 28), { shape: [10, 1, 28, 28] });
 * const srcLabels = gpu.tensor(new Uint8Array(10), { shape: [10] });
 * const indices = gpu.tensor(new Uint32Array([3, 1, 4, 1]), { shape: [4] });
 * const x = gpu.empty([4, 1, 96, 96]);
 * const labels = gpu.empty([4], { dtype: "i32" });
 * prepareBatch({ x, labels, images, srcLabels, indices }, {
 *   batch: 4, channels: 1, srcH: 28, srcW: 28, dstH: 96, dstW: 96, seed: 7,
 *   augment: { flip: true, rotate: 10, scale: [0.9, 1.1] },
 * });
 * ```
 */
export function prepareBatch(io: PrepareBatchIO, p: PrepareBatchParams): void {
  const op = "prepareBatch";
  floatDType(op, "x", io.x);
  checkDtype(op, "labels", io.labels, "i32");
  checkDtype(op, "images", io.images, "u8");
  checkDtype(op, "srcLabels", io.srcLabels, "u8");
  checkDtype(op, "indices", io.indices, "u32");
  checkPrepareBatch(p, {
    images: io.images.shape,
    srcLabels: io.srcLabels.shape,
    indices: io.indices.shape,
    x: io.x.shape,
    labels: io.labels.shape,
  });
  const gpu = io.x.gpu;
  const count = io.images.shape[0];
  const imageBytes = io.images.byteLength;
  const maxBind = gpu.limits.maxStorageBufferBindingSize;
  let imagesA: BoundTensor = io.images;
  let imagesB: BoundTensor = io.images;
  let splitWords = 0xffffffff;
  if (imageBytes > maxBind) {
    const align = Math.max(256, gpu.limits.minStorageBufferOffsetAlignment);
    const split = Math.floor(maxBind / align) * align;
    if (imageBytes - split > maxBind) {
      throw new RangeError(
        `${op}: images ${formatShape(io.images.shape)} take ${imageBytes} bytes, more than two ` +
          `storage bindings (${2 * split} bytes) on this device; split the dataset`,
      );
    }
    imagesA = { tensor: io.images, offset: 0, size: split };
    imagesB = { tensor: io.images, offset: split, size: imageBytes - split };
    splitWords = split / 4;
  }
  const norm = p.mean !== undefined && p.std !== undefined;
  const mean = [0, 0, 0, 0];
  const std = [1, 1, 1, 1];
  if (norm) {
    for (let c = 0; c < p.channels; c++) {
      mean[c] = p.mean![c];
      std[c] = p.std![c];
    }
  }
  const a = p.augment ?? {};
  const rrc = a.resizedCrop;
  const affine = _hasAffine(a);
  const per = p.channels * p.dstH * p.dstW;
  for (const [b0, b1] of unitRanges(op, gpu, p.batch, per)) {
    const nb = b1 - b0;
    const x = bindingRange(io.x, b0 * per, nb * per);
    const labels = bindingRange(io.labels, b0, nb);
    const indices = bindingRange(io.indices, b0, nb);
    const total = nb * p.dstH * p.dstW;
    prepare.dispatch({
      op,
      variant: rrc ? (affine ? "rrc_affine" : "rrc") : (affine ? "affine" : ""),
      params: {
        total,
        batch: nb,
        channels: p.channels,
        count,
        srcH: p.srcH,
        srcW: p.srcW,
        dstH: p.dstH,
        dstW: p.dstW,
        pad: a.cropPadding ?? 0,
        flip: a.flip ? 1 : 0,
        seed: p.seed ?? 0,
        splitWords,
        normalize: norm ? 1 : 0,
        xBase: x.base,
        labelsBase: labels.base,
        indicesBase: indices.base,
        scaleY: p.srcH / p.dstH,
        scaleX: p.srcW / p.dstW,
        scaleLo: rrc ? rrc.scale[0] : 1,
        scaleHi: rrc ? rrc.scale[1] : 1,
        logRatioLo: rrc ? Math.log(rrc.ratio[0]) : 0,
        logRatioHi: rrc ? Math.log(rrc.ratio[1]) : 0,
        ratioLo: rrc ? rrc.ratio[0] : 1,
        ratioHi: rrc ? rrc.ratio[1] : 1,
        degrees: a.rotate ?? 0,
        maxDx: (a.translate?.[0] ?? 0) * p.dstW,
        maxDy: (a.translate?.[1] ?? 0) * p.dstH,
        zoomLo: a.scale?.[0] ?? 1,
        zoomHi: a.scale?.[1] ?? 1,
        shear: a.shear ?? 0,
        mean0: mean[0],
        mean1: mean[1],
        mean2: mean[2],
        mean3: mean[3],
        std0: std[0],
        std1: std[1],
        std2: std[2],
        std3: std[3],
      },
      bindings: { x, labels, imagesA, imagesB, srcLabels: io.srcLabels, indices },
      workgroups: grid1d(total, WG),
    });
  }
}
