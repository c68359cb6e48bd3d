// The special-case prepareBatch kernel that the affine form replaced (kernels/data/ before
// issue 16: crop with padding, resized crop and flip as separate cases), kept only as the
// reference of the equivalence test in tests/data_kernels_test.ts: the affine kernel must give
// its outputs where they overlap (bit for bit, or within the bound that test states). Test-only;
// its host code is cut to what the test uses (one dispatch, x within one binding).
import { grid1d, type Tensor } from "../../gpu/mod.ts";
import { defineKernel, flatMain } from "../../kernels/_kernel.ts";
import type { PrepareBatchParams } from "../../kernels/data/index.ts";

const WG = 128;

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

/** The `Params` of prepareBatch: the geometry, the augmentation and the normalization. */
const PREPARE_PARAMS = {
  total: "u32",
  batch: "u32",
  channels: "u32",
  count: "u32",
  srcH: "u32",
  srcW: "u32",
  dstH: "u32",
  dstW: "u32",
  pad: "u32",
  flip: "u32",
  seed: "u32",
  splitWords: "u32",
  normalize: "u32",
  xBase: "u32",
  labelsBase: "u32",
  indicesBase: "u32",
  scaleY: "f32",
  scaleX: "f32",
  scaleLo: "f32",
  scaleHi: "f32",
  logRatioLo: "f32",
  logRatioHi: "f32",
  ratioLo: "f32",
  ratioHi: "f32",
  mean0: "f32",
  mean1: "f32",
  mean2: "f32",
  mean3: "f32",
  std0: "f32",
  std1: "f32",
  std2: "f32",
  std3: "f32",
} as const;

/**
 * The kernel of prepareBatch; the `rrc` variant compiles in the RandomResizedCrop box sampling.
 * `x` is f32 or f16 (the value is computed in f32 and rounded once on store).
 */
const legacy = defineKernel({
  name: "prepare_batch_legacy",
  doc: "one thread per output pixel (b, oy, ox) of x [batch, C, dstH, dstW], flat index " +
    "t = (b * dstH + oy) * dstW + ox; the thread loops over the C channels (the geometry is " +
    "shared). Thread (b, 0, 0) also writes labels[b]. Every thread recomputes its example's " +
    "augmentation from the counter-based hash of (seed, example index n, draw k): k = 0 flip, " +
    "1/2 crop offsets, 3.. the resized-crop tries (4 draws each). u8 data is packed 4 per u32 " +
    "word; the images may be bound as two ranges (A: words [0, splitWords), B: the rest) when " +
    "larger than one storage binding. One dispatch per range of the batch: b is local to it, " +
    "and x, labels and indices are bound from the range's start (elements xBase, labelsBase, " +
    "indicesBase of their bindings).",
  params: PREPARE_PARAMS,
  bindings: {
    x: { type: "float", access: "read_write" },
    labels: { type: "i32", access: "read_write" },
    imagesA: { type: "u8-words", access: "read" },
    imagesB: { type: "u8-words", access: "read" },
    srcLabels: { type: "u8-words", access: "read" },
    indices: { type: "u32", access: "read" },
  },
  variants: ["", "rrc"],
  workgroupSize: WG,
  body: ({ variant, store }) => {
    const main = flatMain(
      "t",
      "p.total",
      `  let ox = t % p.dstW;
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
        variant === "rrc"
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
    ${store("x", "x[p.xBase + (b * p.channels + c) * plane + oy * p.dstW + ox]", "r")}
  }`,
    );
    return /* wgsl */ `${RNG_WGSL}
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
${main}`;
  },
});

/** Runs the legacy kernel on `p` (its augmentation read from `p.augment`: flip, cropPadding, resizedCrop). */
export function legacyPrepareBatch(
  io: {
    readonly x: Tensor;
    readonly labels: Tensor;
    readonly images: Tensor;
    readonly srcLabels: Tensor;
    readonly indices: Tensor;
  },
  p: PrepareBatchParams,
): void {
  const a = p.augment ?? {};
  const rrc = a.resizedCrop;
  const norm = p.mean !== undefined && p.std !== undefined;
  const mean = [0, 0, 0, 0];
  const std = [1, 1, 1, 1];
  for (let c = 0; norm && c < p.channels; c++) {
    mean[c] = p.mean![c];
    std[c] = p.std![c];
  }
  const total = p.batch * p.dstH * p.dstW;
  legacy.dispatch({
    op: "legacyPrepareBatch",
    variant: rrc ? "rrc" : "",
    params: {
      total,
      batch: p.batch,
      channels: p.channels,
      count: io.images.shape[0],
      srcH: p.srcH,
      srcW: p.srcW,
      dstH: p.dstH,
      dstW: p.dstW,
      pad: a.cropPadding ?? 0,
      flip: a.flip ? 1 : 0,
      seed: p.seed ?? 0,
      splitWords: 0xffffffff,
      normalize: norm ? 1 : 0,
      xBase: 0,
      labelsBase: 0,
      indicesBase: 0,
      scaleY: p.srcH / p.dstH,
      scaleX: p.srcW / p.dstW,
      scaleLo: rrc ? rrc.scale[0] : 1,
      scaleHi: rrc ? rrc.scale[1] : 1,
      logRatioLo: rrc ? Math.log(rrc.ratio[0]) : 0,
      logRatioHi: rrc ? Math.log(rrc.ratio[1]) : 0,
      ratioLo: rrc ? rrc.ratio[0] : 1,
      ratioHi: rrc ? rrc.ratio[1] : 1,
      mean0: mean[0],
      mean1: mean[1],
      mean2: mean[2],
      mean3: mean[3],
      std0: std[0],
      std1: std[1],
      std2: std[2],
      std3: std[3],
    },
    bindings: {
      x: io.x,
      labels: io.labels,
      imagesA: io.images,
      imagesB: io.images,
      srcLabels: io.srcLabels,
      indices: io.indices,
    },
    workgroups: grid1d(total, WG),
  });
}
