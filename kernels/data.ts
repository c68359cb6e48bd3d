/**
 * Data kernels: {@linkcode prepareBatch} turns a dataset resident on the GPU (u8 images and
 * labels) into a training batch in one dispatch — gather by index, optional augmentation
 * (random crop with zero padding, RandomResizedCrop-style crop, horizontal flip), bilinear
 * resize and normalization — and {@linkcode resizeBilinear} resizes f32 or f16 images. Float
 * outputs may be f32 or f16: values are computed in f32 and rounded once on store.
 *
 * Resizing is exactly `torch.nn.functional.interpolate(x, size, mode="bilinear",
 * align_corners=False)` (no antialias) applied to the `u8 / 255` image: the source coordinate of
 * output pixel `o` is `max((o + 0.5) * in / out - 0.5, 0)`, interpolated between its floor and
 * the next pixel (clamped at the border).
 *
 * Augmentation is counter-based: every random draw of an example is a hash of `(seed, example
 * index, draw number)`, so the same seed and example index give the same augmentation in any
 * batch position, batch size or order. Pass a new seed per epoch (e.g. `runSeed * 1000 + epoch`)
 * for fresh augmentations.
 *
 * Outputs larger than one storage binding (e.g. a batch of 256 RGB images at 224x224, 154 MB) are
 * written in ranges of whole images, one dispatch per range. No kernel here loops more than a few
 * dozen times per thread (the channels, torchvision's 10 crop tries).
 *
 * @module
 */

import { type Binding, formatShape, grid1d, type KernelSpec, type Tensor } from "../gpu/mod.ts";
import { bindingRange, unitRanges } from "./_binding.ts";
import {
  dtypeTag,
  type FloatDType,
  floatDType,
  floatDTypes,
  loadF32,
  storeAs,
  wgslEnable,
} from "./_dtype.ts";
import { ParamsWriter } from "./_params.ts";

/** Threads per workgroup of the data kernels. */
const WG = 128;

/** Most channels that can be normalized with per-channel mean/std. */
const MAX_NORM_CHANNELS = 4;

// ------------------------------------------------------------------ shared WGSL ----

/**
 * The counter-based hash (murmur3's 32-bit finalizer, chained) behind every random draw:
 * `rnd(seed, n, k) = fmix(fmix(fmix(seed ^ 0x9e3779b9) + n * 0x85ebca6b) ^ (k * 0x632be5ab +
 * 0x27d4eb2f))` in wrapping u32 arithmetic. `uniform(r) = (r >> 8) / 2^24`, exact in f32.
 */
const RNG_WGSL = /* wgsl */ `
fn fmix(h0: u32) -> u32 {
  var h = h0;
  h = h ^ (h >> 16u);
  h = h * 0x85ebca6bu;
  h = h ^ (h >> 13u);
  h = h * 0xc2b2ae35u;
  h = h ^ (h >> 16u);
  return h;
}
fn rnd(seed: u32, n: u32, k: u32) -> u32 {
  return fmix(fmix(fmix(seed ^ 0x9e3779b9u) + n * 0x85ebca6bu) ^ (k * 0x632be5abu + 0x27d4eb2fu));
}
fn unif(r: u32) -> f32 {
  return f32(r >> 8u) * (1.0 / 16777216.0);
}
`;

// ------------------------------------------------------------------ prepareBatch ----

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
  /** Random crop of the stored size from the image zero-padded by this much; default 0 (off). */
  readonly cropPadding?: number;
  /** Random horizontal flip with probability 1/2; default false. */
  readonly flip?: boolean;
  /**
   * RandomResizedCrop-style crop (torchvision's sampling: up to 10 tries of an area fraction
   * uniform in `scale` and an aspect ratio log-uniform in `ratio`, then a centre-crop fallback),
   * taken from the (padded-cropped) stored image and then resized to `dstH x dstW`.
   */
  readonly resizedCrop?: {
    readonly scale: readonly [number, number];
    readonly ratio: readonly [number, number];
  };
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

function isPosInt(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v > 0;
}

function sameDims(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
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
    if (!isPosInt(p[k])) {
      throw new RangeError(`${op}: ${k} must be a positive integer, got ${p[k]}`);
    }
  }
  const pad = p.cropPadding ?? 0;
  if (!Number.isInteger(pad) || pad < 0) {
    throw new RangeError(`${op}: cropPadding must be an integer >= 0, got ${pad}`);
  }
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
  if (p.resizedCrop) {
    const { scale, ratio } = p.resizedCrop;
    if (
      !Array.isArray(scale) || scale.length !== 2 || !(scale[0] > 0) || !(scale[0] <= scale[1]) ||
      !Number.isFinite(scale[1])
    ) {
      throw new RangeError(
        `${op}: resizedCrop.scale must be [lo, hi] with 0 < lo <= hi, got ${JSON.stringify(scale)}`,
      );
    }
    if (
      !Array.isArray(ratio) || ratio.length !== 2 || !(ratio[0] > 0) || !(ratio[0] <= ratio[1]) ||
      !Number.isFinite(ratio[1])
    ) {
      throw new RangeError(
        `${op}: resizedCrop.ratio must be [lo, hi] with 0 < lo <= hi, got ${JSON.stringify(ratio)}`,
      );
    }
  }
  const out = [p.batch, p.channels, p.dstH, p.dstW];
  const check = (name: string, actual: readonly number[] | undefined, expected: number[]) => {
    if (actual && !sameDims(actual, expected)) {
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

/**
 * The WGSL of prepareBatch; `rrc` compiles in the RandomResizedCrop box sampling, `xd` is the
 * storage type of `x` (the value is computed in f32 and rounded once on store).
 */
function prepareBatchWgsl(rrc: boolean, xd: FloatDType): string {
  return /* wgsl */ `${wgslEnable([xd])}
// prepare_batch: one thread per output pixel (b, oy, ox) of x [batch, C, dstH, dstW], flat index
// t = (b * dstH + oy) * dstW + ox; the thread loops over the C channels (the geometry is shared).
// Thread (b, 0, 0) also writes labels[b]. Every thread recomputes its example's augmentation from
// the counter-based hash of (seed, example index n, draw k): k = 0 flip, 1/2 crop offsets, 3.. the
// resized-crop tries (4 draws each). u8 data is packed 4 per u32 word; the images may be bound as
// two ranges (A: words [0, splitWords), B: the rest) when larger than one storage binding. One
// dispatch per range of the batch: b is local to it, and x, labels and indices are bound from
// the range's start (elements xBase, labelsBase, indicesBase of their bindings). x is stored as
// ${xd}.
const WG = ${WG}u;
struct Params {
  total: u32, batch: u32, channels: u32, count: u32,
  srcH: u32, srcW: u32, dstH: u32, dstW: u32,
  pad: u32, flip: u32, seed: u32, splitWords: u32,
  normalize: u32, xBase: u32, labelsBase: u32, indicesBase: u32,
  scaleY: f32, scaleX: f32, scaleLo: f32, scaleHi: f32,
  logRatioLo: f32, logRatioHi: f32, ratioLo: f32, ratioHi: f32,
  mean0: f32, mean1: f32, mean2: f32, mean3: f32,
  std0: f32, std1: f32, std2: f32, std3: f32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<${xd}>;
@group(0) @binding(2) var<storage, read_write> labels: array<i32>;
@group(0) @binding(3) var<storage, read> imagesA: array<u32>;
@group(0) @binding(4) var<storage, read> imagesB: array<u32>;
@group(0) @binding(5) var<storage, read> srcLabels: array<u32>;
@group(0) @binding(6) var<storage, read> indices: array<u32>;
${RNG_WGSL}
fn imageByte(i: u32) -> f32 {
  let w = i >> 2u;
  var word: u32;
  if (w < p.splitWords) { word = imagesA[w]; } else { word = imagesB[w - p.splitWords]; }
  return f32((word >> ((i & 3u) * 8u)) & 0xffu);
}
fn meanOf(c: u32) -> f32 {
  switch (c) { case 0u: { return p.mean0; } case 1u: { return p.mean1; }
    case 2u: { return p.mean2; } default: { return p.mean3; } }
}
fn stdOf(c: u32) -> f32 {
  switch (c) { case 0u: { return p.std0; } case 1u: { return p.std1; }
    case 2u: { return p.std2; } default: { return p.std3; } }
}
// The crop box (top, left, height, width) of torchvision's RandomResizedCrop.get_params in an
// H x W image; returns vec4<i32>(i, j, h, w).
fn resizedCropBox(n: u32) -> vec4<i32> {
  let H = i32(p.srcH);
  let W = i32(p.srcW);
  let area = f32(p.srcH * p.srcW);
  for (var t = 0u; t < 10u; t = t + 1u) {
    let k = 3u + 4u * t;
    let tgt = area * (p.scaleLo + (p.scaleHi - p.scaleLo) * unif(rnd(p.seed, n, k)));
    let aspect = exp(p.logRatioLo + (p.logRatioHi - p.logRatioLo) * unif(rnd(p.seed, n, k + 1u)));
    let w = i32(round(sqrt(tgt * aspect)));
    let h = i32(round(sqrt(tgt / aspect)));
    if (w > 0 && w <= W && h > 0 && h <= H) {
      let i = i32(rnd(p.seed, n, k + 2u) % u32(H - h + 1));
      let j = i32(rnd(p.seed, n, k + 3u) % u32(W - w + 1));
      return vec4<i32>(i, j, h, w);
    }
  }
  let inRatio = f32(W) / f32(H);
  var w = W;
  var h = H;
  if (inRatio < p.ratioLo) {
    h = i32(round(f32(w) / p.ratioLo));
  } else if (inRatio > p.ratioHi) {
    w = i32(round(f32(h) * p.ratioHi));
  }
  return vec4<i32>((H - h) / 2, (W - w) / 2, h, w);
}
// Plane offset of view pixel (vy, vx), or -1 where it falls on the zero padding.
fn tap(vy: i32, vx: i32, box: vec4<i32>, flipped: bool, dy: i32, dx: i32) -> i32 {
  var xx = vx;
  if (flipped) { xx = box.w - 1 - vx; }
  let sy = vy + box.x + dy - i32(p.pad);
  let sx = xx + box.y + dx - i32(p.pad);
  if (sy < 0 || sy >= i32(p.srcH) || sx < 0 || sx >= i32(p.srcW)) { return -1; }
  return sy * i32(p.srcW) + sx;
}
fn pix(base: u32, off: i32) -> f32 {
  if (off < 0) { return 0.0; }
  return imageByte(base + u32(off));
}
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * WG;
  if (t >= p.total) { return; }
  let ox = t % p.dstW;
  let oy = (t / p.dstW) % p.dstH;
  let b = t / (p.dstW * p.dstH);
  let plane = p.dstH * p.dstW;
  let n = indices[p.indicesBase + b];
  if (n >= p.count) {
    for (var c = 0u; c < p.channels; c = c + 1u) {
      x[p.xBase + (b * p.channels + c) * plane + oy * p.dstW + ox] = 0.0;
    }
    if (ox == 0u && oy == 0u) { labels[p.labelsBase + b] = -1; }
    return;
  }
  if (ox == 0u && oy == 0u) {
    labels[p.labelsBase + b] = i32((srcLabels[n >> 2u] >> ((n & 3u) * 8u)) & 0xffu);
  }
  let flipped = p.flip != 0u && (rnd(p.seed, n, 0u) & 1u) == 1u;
  var dy = 0;
  var dx = 0;
  if (p.pad > 0u) {
    dy = i32(rnd(p.seed, n, 1u) % (2u * p.pad + 1u));
    dx = i32(rnd(p.seed, n, 2u) % (2u * p.pad + 1u));
  }
  var box = vec4<i32>(0, 0, i32(p.srcH), i32(p.srcW));
  var scaleY = p.scaleY;
  var scaleX = p.scaleX;
  ${
    rrc
      ? `box = resizedCropBox(n);
  scaleY = f32(box.z) / f32(p.dstH);
  scaleX = f32(box.w) / f32(p.dstW);`
      : ""
  }
  // Bilinear taps (PyTorch's area_pixel_compute_source_index, align_corners = False).
  let ry = max((f32(oy) + 0.5) * scaleY - 0.5, 0.0);
  let y0 = min(i32(ry), box.z - 1);
  let y1 = select(y0, y0 + 1, y0 < box.z - 1);
  let ly1 = ry - f32(y0);
  let ly0 = 1.0 - ly1;
  let rx = max((f32(ox) + 0.5) * scaleX - 0.5, 0.0);
  let x0 = min(i32(rx), box.w - 1);
  let x1 = select(x0, x0 + 1, x0 < box.w - 1);
  let lx1 = rx - f32(x0);
  let lx0 = 1.0 - lx1;
  let o00 = tap(y0, x0, box, flipped, dy, dx);
  let o01 = tap(y0, x1, box, flipped, dy, dx);
  let o10 = tap(y1, x0, box, flipped, dy, dx);
  let o11 = tap(y1, x1, box, flipped, dy, dx);
  let srcPlane = p.srcH * p.srcW;
  for (var c = 0u; c < p.channels; c = c + 1u) {
    let base = (n * p.channels + c) * srcPlane;
    let v = ly0 * (lx0 * pix(base, o00) + lx1 * pix(base, o01)) +
      ly1 * (lx0 * pix(base, o10) + lx1 * pix(base, o11));
    var r = v / 255.0;
    if (p.normalize != 0u) { r = (r - meanOf(c)) / stdOf(c); }
    x[p.xBase + (b * p.channels + c) * plane + oy * p.dstW + ox] = ${storeAs(xd, "r")};
  }
}
`;
}

const prepareSpecs = new Map<string, KernelSpec>();

function prepareSpec(rrc: boolean, xd: FloatDType): KernelSpec {
  const name = (rrc ? "prepare_batch_rrc" : "prepare_batch") + dtypeTag({ x: xd });
  let spec = prepareSpecs.get(name);
  if (!spec) {
    spec = { name, code: prepareBatchWgsl(rrc, xd) };
    prepareSpecs.set(name, spec);
  }
  return spec;
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
 * each `b`, example `n = indices[b]` is augmented (crop with zero padding, resized crop, flip;
 * as configured), resized to `dstH x dstW` exactly as `F.interpolate(img / 255, mode="bilinear",
 * align_corners=False)`, optionally normalized `(v - mean[c]) / std[c]`, and written to `x[b]`
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
 *   batch: 4, channels: 1, srcH: 28, srcW: 28, dstH: 96, dstW: 96, flip: true, seed: 7,
 * });
 * ```
 */
export function prepareBatch(io: PrepareBatchIO, p: PrepareBatchParams): void {
  const op = "prepareBatch";
  const xd = floatDType(op, "x", io.x);
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
  let a: Binding = io.images;
  let bRange: Binding = io.images;
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
    const at = io.images.byteOffset;
    a = { buffer: io.images.buffer, offset: at, size: split };
    bRange = { buffer: io.images.buffer, offset: at + split, size: imageBytes - split };
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
  const rrc = p.resizedCrop;
  const per = p.channels * p.dstH * p.dstW;
  for (const [b0, b1] of unitRanges(op, gpu, p.batch, per)) {
    const nb = b1 - b0;
    const x = bindingRange(io.x, b0 * per, nb * per);
    const labels = bindingRange(io.labels, b0, nb);
    const indices = bindingRange(io.indices, b0, nb);
    const total = nb * p.dstH * p.dstW;
    const w = new ParamsWriter()
      .u32(total).u32(nb).u32(p.channels).u32(count)
      .u32(p.srcH).u32(p.srcW).u32(p.dstH).u32(p.dstW)
      .u32(p.cropPadding ?? 0).u32(p.flip ? 1 : 0).u32(p.seed ?? 0).u32(splitWords)
      .u32(norm ? 1 : 0).u32(x.base).u32(labels.base).u32(indices.base)
      .f32(p.srcH / p.dstH).f32(p.srcW / p.dstW)
      .f32(rrc ? rrc.scale[0] : 1).f32(rrc ? rrc.scale[1] : 1)
      .f32(rrc ? Math.log(rrc.ratio[0]) : 0).f32(rrc ? Math.log(rrc.ratio[1]) : 0)
      .f32(rrc ? rrc.ratio[0] : 1).f32(rrc ? rrc.ratio[1] : 1);
    for (const m of mean) w.f32(m);
    for (const s of std) w.f32(s);
    gpu.dispatch(prepareSpec(rrc !== undefined, xd), {
      params: w.bytes(),
      bindings: [x.binding, labels.binding, a, bRange, io.srcLabels, indices.binding],
      workgroups: grid1d(total, WG),
    });
  }
}

// ------------------------------------------------------------------ resizeBilinear ----

/** Hyper-parameters of {@linkcode resizeBilinear}. */
export interface ResizeParams {
  /** Output height. */
  readonly outH: number;
  /** Output width. */
  readonly outW: number;
}

/**
 * Validates the input shape `[N, C, H, W]` and sizes of {@linkcode resizeBilinear}; returns the
 * output shape `[N, C, outH, outW]`.
 *
 * @example
 * ```ts
 * import { checkResize } from "@modern-cnn/webgpu/kernels";
 * checkResize({ outH: 96, outW: 96 }, [8, 1, 28, 28]); // [8, 1, 96, 96]
 * ```
 */
export function checkResize(p: ResizeParams, xShape: readonly number[]): number[] {
  if (!isPosInt(p.outH) || !isPosInt(p.outW)) {
    throw new RangeError(
      `resizeBilinear: outH and outW must be positive integers, got ${p.outH} x ${p.outW}`,
    );
  }
  if (xShape.length !== 4 || xShape.some((d) => !isPosInt(d))) {
    throw new TypeError(
      `resizeBilinear: x has shape ${formatShape(xShape)}, expected [N, C, H, W] with sizes > 0`,
    );
  }
  return [xShape[0], xShape[1], p.outH, p.outW];
}

/**
 * The WGSL of resizeBilinear with `y` stored as `yd` and `x` as `xd` (taps converted to f32 on
 * load, the interpolation in f32, rounded once on store).
 */
function resizeWgsl(yd: FloatDType, xd: FloatDType): string {
  const tap = (i: string) => loadF32(xd, `x[${i}]`);
  const v = `ly0 * (lx0 * ${tap("r0 + x0")} + lx1 * ${tap("r0 + x1")}) + ly1 * (lx0 * ${
    tap("r1 + x0")
  } + lx1 * ${tap("r1 + x1")})`;
  return /* wgsl */ `${wgslEnable([yd, xd])}
// resize_bilinear: one thread per output element t = ((n * C + c) * outH + oy) * outW + ox of
// y [N, C, outH, outW]; bilinear with align_corners = False (PyTorch's source-index rule). One
// dispatch per range of planes: t is local to it, which starts at element xBase of the x binding
// and yBase of the y binding. Storage: y ${yd}, x ${xd}; arithmetic in f32.
const WG = ${WG}u;
struct Params {
  total: u32, inH: u32, inW: u32, outH: u32,
  outW: u32, xBase: u32, scaleY: f32, scaleX: f32, yBase: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<${yd}>;
@group(0) @binding(2) var<storage, read> x: array<${xd}>;
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * WG;
  if (t >= p.total) { return; }
  let ox = t % p.outW;
  let oy = (t / p.outW) % p.outH;
  let plane = t / (p.outW * p.outH);
  let ry = max((f32(oy) + 0.5) * p.scaleY - 0.5, 0.0);
  let y0 = min(u32(ry), p.inH - 1u);
  let y1 = select(y0, y0 + 1u, y0 < p.inH - 1u);
  let ly1 = ry - f32(y0);
  let ly0 = 1.0 - ly1;
  let rx = max((f32(ox) + 0.5) * p.scaleX - 0.5, 0.0);
  let x0 = min(u32(rx), p.inW - 1u);
  let x1 = select(x0, x0 + 1u, x0 < p.inW - 1u);
  let lx1 = rx - f32(x0);
  let lx0 = 1.0 - lx1;
  let base = p.xBase + plane * p.inH * p.inW;
  let r0 = base + y0 * p.inW;
  let r1 = base + y1 * p.inW;
  y[p.yBase + t] = ${storeAs(yd, v)};
}
`;
}

const resizeSpecs = new Map<string, KernelSpec>();

function resizeSpec(yd: FloatDType, xd: FloatDType): KernelSpec {
  const name = "resize_bilinear" + dtypeTag({ y: yd, x: xd });
  let spec = resizeSpecs.get(name);
  if (!spec) {
    spec = { name, code: resizeWgsl(yd, xd) };
    resizeSpecs.set(name, spec);
  }
  return spec;
}

/**
 * Records a bilinear resize of images `x [N, C, H, W]` into `y [N, C, outH, outW]`
 * (overwritten), exactly `F.interpolate(x, (outH, outW), mode="bilinear", align_corners=False)`
 * without antialias. `x` and `y` are f32 or f16 each (interpolated in f32, rounded once into
 * an f16 `y`).
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { resizeBilinear } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const x = gpu.tensor(new Float32Array([0, 1, 2, 3]), { shape: [1, 1, 2, 2] });
 * const y = gpu.empty([1, 1, 4, 4]);
 * resizeBilinear({ y, x }, { outH: 4, outW: 4 });
 * ```
 */
export function resizeBilinear(
  io: { readonly y: Tensor; readonly x: Tensor },
  p: ResizeParams,
): void {
  const dt = floatDTypes("resizeBilinear", { y: io.y, x: io.x });
  const out = checkResize(p, io.x.shape);
  if (!sameDims(io.y.shape, out)) {
    throw new TypeError(
      `resizeBilinear: y has shape ${formatShape(io.y.shape)}, expected ${formatShape(out)} ` +
        `for x ${formatShape(io.x.shape)}`,
    );
  }
  const [, , inH, inW] = io.x.shape;
  const hw = inH * inW, ohw = p.outH * p.outW;
  for (
    const [p0, p1] of unitRanges("resizeBilinear", io.x.gpu, out[0] * out[1], Math.max(hw, ohw))
  ) {
    const x = bindingRange(io.x, p0 * hw, (p1 - p0) * hw);
    const y = bindingRange(io.y, p0 * ohw, (p1 - p0) * ohw);
    const total = (p1 - p0) * ohw;
    const params = new ParamsWriter()
      .u32(total).u32(inH).u32(inW).u32(p.outH)
      .u32(p.outW).u32(x.base).f32(inH / p.outH).f32(inW / p.outW).u32(y.base)
      .bytes();
    io.x.gpu.dispatch(resizeSpec(dt.y, dt.x), {
      params,
      bindings: [y.binding, x.binding],
      workgroups: grid1d(total, WG),
    });
  }
}
