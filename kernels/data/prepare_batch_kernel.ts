/**
 * The kernel of `prepareBatch` (`prepare_batch.ts`), described once with `defineKernel`: gather,
 * augmentation as one affine map per example, bilinear resampling and normalization of one
 * output pixel per thread, with the counter-based hash behind every random draw.
 *
 * @module
 */

import { defineKernel, flatMain, variantProduct } from "../_kernel.ts";

/** Threads per workgroup of the prepareBatch kernel. */
export const WG = 128;

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
// Uniform in [-1, 1) (2u - 1 is exact).
fn sym(r: u32) -> f32 {
  return 2.0 * unif(r) - 1.0;
}
`;

/**
 * (sin, cos) of `a` degrees, |a| <= 360, to about 1e-7 on every device (WGSL's own sin/cos may
 * be off by 2^-11): reduced exactly to [-45, 45] degrees, then Taylor polynomials (degree 9 and
 * 8, truncation below 3e-8 on [-pi/4, pi/4]). sinCosDeg(0) is exactly (0, 1).
 */
const SINCOS_WGSL = /* wgsl */ `
fn sinCosDeg(a: f32) -> vec2<f32> {
  let q = round(a / 90.0);
  let x = (a - 90.0 * q) * 0.017453292519943295;
  let x2 = x * x;
  let s = x * (1.0 + x2 * (-0.16666666666666666 + x2 * (0.008333333333333333 +
    x2 * (-0.0001984126984126984 + x2 * 2.7557319223985893e-6))));
  let c = 1.0 + x2 * (-0.5 + x2 * (0.041666666666666664 + x2 * (-0.001388888888888889 +
    x2 * 2.48015873015873e-5)));
  switch (i32(q) & 3) {
    case 0: { return vec2<f32>(s, c); }
    case 1: { return vec2<f32>(c, -s); }
    case 2: { return vec2<f32>(-s, -c); }
    default: { return vec2<f32>(-c, s); }
  }
}
`;

/**
 * The `affine` variants' part of `geometry(n)`: RandomAffine's draws (k = 43..47: angle, shifts,
 * zoom, shear; torchvision's get_params) and its inverse matrix `A` and shift `e`.
 */
const AFFINE_WGSL = /* wgsl */ `  {
    let angle = p.degrees * sym(rnd(p.seed, n, 43u));
    let tx = round(p.maxDx * sym(rnd(p.seed, n, 44u)));
    let ty = round(p.maxDy * sym(rnd(p.seed, n, 45u)));
    let zoom = p.zoomLo + (p.zoomHi - p.zoomLo) * unif(rnd(p.seed, n, 46u));
    let sh = sinCosDeg(p.shear * sym(rnd(p.seed, n, 47u)));
    let tanSh = sh.x / sh.y;
    let rot = sinCosDeg(angle);
    // The forward rotation-shear [[ra, rb], [rc, rd]] (determinant 1); A is its inverse / zoom.
    let ra = rot.y;
    let rb = -rot.y * tanSh - rot.x;
    let rc = rot.x;
    let rd = -rot.x * tanSh + rot.y;
    a00 = rd / zoom;
    a01 = -rb / zoom;
    a10 = -rc / zoom;
    a11 = ra / zoom;
    let cx = 0.5 * f32(p.dstW);
    let cy = 0.5 * f32(p.dstH);
    ex = cx - (a00 * (cx + tx) + a01 * (cy + ty));
    ey = cy - (a10 * (cx + tx) + a11 * (cy + ty));
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
  degrees: "f32",
  maxDx: "f32",
  maxDy: "f32",
  zoomLo: "f32",
  zoomHi: "f32",
  shear: "f32",
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
 * The kernel of prepareBatch; the `rrc` variants compile in the RandomResizedCrop box sampling,
 * the `affine` ones RandomAffine's draws and zero fill (without them the map has no rotation: a
 * uniform branch over that code cost llvmpipe ~12% of the kernel's time). `x` is f32 or f16 (the
 * value is computed in f32 and rounded once on store).
 */
export const prepare = defineKernel({
  name: "prepare_batch",
  doc: "one thread per output pixel (b, oy, ox) of x [batch, C, dstH, dstW], flat index " +
    "t = (b * dstH + oy) * dstW + ox; the thread loops over the C channels (the geometry is " +
    "shared). Thread (b, 0, 0) also writes labels[b]. Every thread rebuilds its example's affine " +
    "map (output pixel centre -> view pixel coordinates, plus the view's integer offset in the " +
    "image) from the counter-based hash of (seed, example index n, draw k): k = 0 flip, 1/2 crop " +
    "offsets, 3..42 the resized-crop tries (4 draws each), 43..47 RandomAffine's angle, shifts, " +
    "zoom and shear. u8 data is packed 4 per u32 word; the images may be bound as two ranges " +
    "(A: words [0, splitWords), B: the rest) when larger than one storage binding. One dispatch " +
    "per range of the batch: b is local to it, and x, labels and indices are bound from the " +
    "range's start (elements xBase, labelsBase, indicesBase of their bindings).",
  params: PREPARE_PARAMS,
  bindings: {
    x: { type: "float", access: "read_write" },
    labels: { type: "i32", access: "read_write" },
    imagesA: { type: "u8-words", access: "read" },
    imagesB: { type: "u8-words", access: "read" },
    srcLabels: { type: "u8-words", access: "read" },
    indices: { type: "u32", access: "read" },
  },
  variants: variantProduct(["", "rrc"], ["", "affine"]),
  workgroupSize: WG,
  body: ({ variant, store }) => {
    const rrc = variant.split("_").includes("rrc");
    const affine = variant.split("_").includes("affine");
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
  let g = geometry(n);
  let h = g.size.x;
  let w = g.size.y;
  // The output pixel centre mapped to view pixel coordinates (the -0.5 of PyTorch's
  // align_corners = False source index is in m0.z and m1.z).
  let ux = f32(ox) + 0.5;
  let uy = f32(oy) + 0.5;
  let rx0 = g.m0.x * ux + (g.m0.y * uy + g.m0.z);
  let ry0 = g.m1.y * uy + (g.m1.x * ux + g.m1.z);
  // Inside the view [-0.5, size - 0.5] (always, without RandomAffine) the weight is 1; outside
  // it falls linearly to 0 at -1 and size (RandomAffine's zero fill: a whole-pixel shift gives
  // exact zeros, as grid_sample's).
  ${
        affine
          ? `let cover = clamp(min(2.0 * ry0 + 2.0, 2.0 * (f32(h) - ry0)), 0.0, 1.0) *
    clamp(min(2.0 * rx0 + 2.0, 2.0 * (f32(w) - rx0)), 0.0, 1.0);`
          : "let cover = 1.0;"
      }
  // Bilinear taps (PyTorch's area_pixel_compute_source_index, align_corners = False: clamped
  // to the view), then placed in the image (zero outside it).
  let ry = max(ry0, 0.0);
  let y0 = min(i32(ry), h - 1);
  let y1 = select(y0, y0 + 1, y0 < h - 1);
  let ly1 = ry - f32(y0);
  let ly0 = 1.0 - ly1;
  let rx = max(rx0, 0.0);
  let x0 = min(i32(rx), w - 1);
  let x1 = select(x0, x0 + 1, x0 < w - 1);
  let lx1 = rx - f32(x0);
  let lx0 = 1.0 - lx1;
  let o00 = tap(y0 + g.off.x, x0 + g.off.y);
  let o01 = tap(y0 + g.off.x, x1 + g.off.y);
  let o10 = tap(y1 + g.off.x, x0 + g.off.y);
  let o11 = tap(y1 + g.off.x, x1 + g.off.y);
  let srcPlane = p.srcH * p.srcW;
  for (var c = 0u; c < p.channels; c = c + 1u) {
    let base = (n * p.channels + c) * srcPlane;
    let v = cover * (ly0 * (lx0 * pix(base, o00) + lx1 * pix(base, o01)) +
      ly1 * (lx0 * pix(base, o10) + lx1 * pix(base, o11)));
    var r = v / 255.0;
    if (p.normalize != 0u) { r = (r - meanOf(c)) / stdOf(c); }
    ${store("x", "x[p.xBase + (b * p.channels + c) * plane + oy * p.dstW + ox]", "r")}
  }`,
    );
    return /* wgsl */ `${RNG_WGSL}${affine ? SINCOS_WGSL : ""}
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
${
      rrc
        ? `// The crop box (top, left, height, width) of torchvision's RandomResizedCrop.get_params in an
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
`
        : ""
    }
// An example's map: view pixel coordinate = (m0, m1) . (output pixel centre, 1); view pixel
// (vy, vx) is image pixel (vy + off.x, vx + off.y); the view is size.x x size.y.
struct Geometry { m0: vec3<f32>, m1: vec3<f32>, off: vec2<i32>, size: vec2<i32> }
fn geometry(n: u32) -> Geometry {
  let flipped = p.flip != 0u && (rnd(p.seed, n, 0u) & 1u) == 1u;
  var dy = 0;
  var dx = 0;
  if (p.pad > 0u) {
    dy = i32(rnd(p.seed, n, 1u) % (2u * p.pad + 1u));
    dx = i32(rnd(p.seed, n, 2u) % (2u * p.pad + 1u));
  }
  var box = vec4<i32>(0, 0, i32(p.srcH), i32(p.srcW));
  var sy = p.scaleY;
  var sx = p.scaleX;
  ${
      rrc
        ? `box = resizedCropBox(n);
  sy = f32(box.z) / f32(p.dstH);
  sx = f32(box.w) / f32(p.dstW);`
        : ""
    }
  // RandomAffine's inverse about the output centre (torchvision's _get_inverse_affine_matrix):
  // q = A (u - c - t) + c = A u + e.
  var a00 = 1.0;
  var a01 = 0.0;
  var a10 = 0.0;
  var a11 = 1.0;
  var ex = 0.0;
  var ey = 0.0;
${
      affine
        ? AFFINE_WGSL
        : ""
    }  // Then undo the flip (x -> dstW - x) and the resize (x scale), in view pixel coordinates.
  var fx = sx;
  var mx = -0.5;
  if (flipped) {
    fx = -sx;
    mx = f32(box.w) - 0.5;
  }
  var g: Geometry;
  g.m0 = vec3<f32>(fx * a00, fx * a01, fx * ex + mx);
  g.m1 = vec3<f32>(sy * a10, sy * a11, sy * ey - 0.5);
  g.off = vec2<i32>(box.x + dy - i32(p.pad), box.y + dx - i32(p.pad));
  g.size = vec2<i32>(box.z, box.w);
  return g;
}
// Plane offset of image pixel (sy, sx), or -1 outside the image (zero padding and fill).
fn tap(sy: i32, sx: i32) -> i32 {
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
