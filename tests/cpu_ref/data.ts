// Float64 CPU references of the data kernels. prepareBatchRef is the affine form (as the kernel
// now works): each example's draws give a view box, a flip and RandomAffine's parameters, composed
// into one 2x3 matrix from output pixel centres to view pixel coordinates (Float64; its entries
// then held in f32 and the coordinate evaluated with f32 roundings as the kernel does, so that
// without RandomAffine it is the f32 source index of PyTorch's resize), and one bilinear
// resampling. prepareBatchStepsRef is the older step-by-step reference (zero-pad, crop,
// resized-crop box, flip as explicit images, then PyTorch's bilinear resize, align_corners =
// False, no antialias), kept to check the affine form where they overlap. Both normalize last.
// The random draws use the same counter-based hash as the kernel.

/** murmur3's 32-bit finalizer. */
export function fmix(h0: number): number {
  let h = h0 >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h = (h ^ (h >>> 13)) >>> 0;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  return h;
}

/** The k-th random u32 of example n under `seed`. */
export function rnd(seed: number, n: number, k: number): number {
  const a = fmix((seed ^ 0x9e3779b9) >>> 0);
  const b = fmix((a + Math.imul(n, 0x85ebca6b)) >>> 0);
  return fmix((b ^ ((Math.imul(k, 0x632be5ab) + 0x27d4eb2f) >>> 0)) >>> 0);
}

/** Uniform in [0, 1) from a random u32 (24 bits). */
export function unif(r: number): number {
  return (r >>> 8) / 16777216;
}

/** Python's round(): half to even. */
export function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** torchvision RandomResizedCrop.get_params with the counter-based draws: [i, j, h, w]. */
export function resizedCropBoxRef(
  seed: number,
  n: number,
  H: number,
  W: number,
  scale: readonly [number, number],
  ratio: readonly [number, number],
): [number, number, number, number] {
  const area = H * W;
  const lr0 = Math.log(ratio[0]), lr1 = Math.log(ratio[1]);
  for (let t = 0; t < 10; t++) {
    const k = 3 + 4 * t;
    const target = area * (scale[0] + (scale[1] - scale[0]) * unif(rnd(seed, n, k)));
    const aspect = Math.exp(lr0 + (lr1 - lr0) * unif(rnd(seed, n, k + 1)));
    const w = roundHalfEven(Math.sqrt(target * aspect));
    const h = roundHalfEven(Math.sqrt(target / aspect));
    if (w > 0 && w <= W && h > 0 && h <= H) {
      const i = rnd(seed, n, k + 2) % (H - h + 1);
      const j = rnd(seed, n, k + 3) % (W - w + 1);
      return [i, j, h, w];
    }
  }
  const inRatio = W / H;
  let w = W, h = H;
  if (inRatio < ratio[0]) h = roundHalfEven(w / ratio[0]);
  else if (inRatio > ratio[1]) w = roundHalfEven(h * ratio[1]);
  return [Math.trunc((H - h) / 2), Math.trunc((W - w) / 2), h, w];
}

/**
 * Bilinear resize of planes [planes, h, w] to [planes, oh, ow] (align_corners = False). As in
 * PyTorch for float32 images, the scale `in / out` and the source coordinate
 * `(o + 0.5) * scale - 0.5` are computed in float32 (`Math.fround`); the interpolation in Float64.
 */
export function resizeBilinearRef(
  x: ArrayLike<number>,
  planes: number,
  h: number,
  w: number,
  oh: number,
  ow: number,
): Float64Array {
  const y = new Float64Array(planes * oh * ow);
  const f = Math.fround;
  const sy = f(h / oh), sx = f(w / ow);
  const coord = (o: number, s: number, size: number): [number, number, number] => {
    const r = Math.max(f(f((o + 0.5) * s) - 0.5), 0);
    const i0 = Math.min(Math.floor(r), size - 1);
    const i1 = i0 < size - 1 ? i0 + 1 : i0;
    return [i0, i1, r - i0];
  };
  for (let pl = 0; pl < planes; pl++) {
    for (let oy = 0; oy < oh; oy++) {
      const [y0, y1, ly] = coord(oy, sy, h);
      for (let ox = 0; ox < ow; ox++) {
        const [x0, x1, lx] = coord(ox, sx, w);
        const at = (yy: number, xx: number) => x[(pl * h + yy) * w + xx];
        y[(pl * oh + oy) * ow + ox] = (1 - ly) * ((1 - lx) * at(y0, x0) + lx * at(y0, x1)) +
          ly * ((1 - lx) * at(y1, x0) + lx * at(y1, x1));
      }
    }
  }
  return y;
}

/** The augmentation of the reference (the same fields as the kernel's AugmentParams). */
export interface AugmentRefParams {
  flip?: boolean;
  cropPadding?: number;
  resizedCrop?: { scale: readonly [number, number]; ratio: readonly [number, number] };
  rotate?: number;
  translate?: readonly [number, number];
  scale?: readonly [number, number];
  shear?: number;
}

/** Parameters of the reference (the same fields as the kernel's PrepareBatchParams). */
export interface PrepareRefParams {
  batch: number;
  channels: number;
  srcH: number;
  srcW: number;
  dstH: number;
  dstW: number;
  mean?: readonly number[];
  std?: readonly number[];
  augment?: AugmentRefParams;
  seed?: number;
}

/** The augmentation drawn for example n. */
export interface AugmentRef {
  flip: boolean;
  dy: number;
  dx: number;
  box: [number, number, number, number];
  /** RandomAffine's draws: degrees, whole output pixels, zoom, x-shear degrees (0, 0, 0, 1, 0: none). */
  angle: number;
  tx: number;
  ty: number;
  zoom: number;
  shear: number;
}

/** Uniform in [-1, 1) from a random u32 (as the kernel's 2u - 1, exact). */
function sym(r: number): number {
  return 2 * unif(r) - 1;
}

/** Whether `a` has a RandomAffine part. */
function hasAffine(a: AugmentRefParams): boolean {
  return (a.rotate ?? 0) > 0 || a.translate !== undefined || a.scale !== undefined ||
    (a.shear ?? 0) > 0;
}

/**
 * The augmentation of example `n`: flip, crop offsets into the padded image, resized-crop box
 * (draws 0..42), and RandomAffine's angle, shifts, zoom and shear (draws 43..47; torchvision's
 * get_params: shifts `round(uniform(-a * size, a * size))`, in f32 as the kernel's product).
 */
export function augmentRef(p: PrepareRefParams, n: number): AugmentRef {
  const seed = p.seed ?? 0;
  const a = p.augment ?? {};
  const pad = a.cropPadding ?? 0;
  const flip = (a.flip ?? false) && (rnd(seed, n, 0) & 1) === 1;
  const dy = pad > 0 ? rnd(seed, n, 1) % (2 * pad + 1) : 0;
  const dx = pad > 0 ? rnd(seed, n, 2) % (2 * pad + 1) : 0;
  const box: [number, number, number, number] = a.resizedCrop
    ? resizedCropBoxRef(seed, n, p.srcH, p.srcW, a.resizedCrop.scale, a.resizedCrop.ratio)
    : [0, 0, p.srcH, p.srcW];
  const f = Math.fround;
  const affine = { angle: 0, tx: 0, ty: 0, zoom: 1, shear: 0 };
  if (hasAffine(a)) {
    const maxDx = f((a.translate?.[0] ?? 0) * p.dstW), maxDy = f((a.translate?.[1] ?? 0) * p.dstH);
    const [lo, hi] = a.scale ?? [1, 1];
    affine.angle = (a.rotate ?? 0) * sym(rnd(seed, n, 43));
    affine.tx = roundHalfEven(f(maxDx * sym(rnd(seed, n, 44))));
    affine.ty = roundHalfEven(f(maxDy * sym(rnd(seed, n, 45))));
    affine.zoom = lo + (hi - lo) * unif(rnd(seed, n, 46));
    affine.shear = (a.shear ?? 0) * sym(rnd(seed, n, 47));
  }
  return { flip, dy, dx, box, ...affine };
}

/**
 * Example `n`'s map in the affine form: view pixel coordinate `r = (m[0..2] . (ux, uy, 1),
 * m[3..5] . (ux, uy, 1))` of output pixel centre `(ux, uy)`, the `h x w` view at image pixel
 * `(top, left)`. Composed in Float64: torchvision's inverse affine matrix about the output
 * centre, then the flip `x -> dstW - x`, the scale `view / out` (f32, as the kernel's) and the
 * source-index shift `-0.5`.
 */
export function viewMapRef(
  p: PrepareRefParams,
  n: number,
): { m: number[]; top: number; left: number; h: number; w: number } {
  const aug = augmentRef(p, n);
  const [bi, bj, h, w] = aug.box;
  const pad = p.augment?.cropPadding ?? 0;
  const f = Math.fround;
  const sy = f(h / p.dstH), sx = f(w / p.dstW);
  // torchvision's _get_inverse_affine_matrix (no y shear): forward rotation-shear R, A = R^-1 / zoom.
  const rad = (aug.angle * Math.PI) / 180, sh = (aug.shear * Math.PI) / 180;
  const [ra, rb, rc, rd] = [
    Math.cos(rad),
    -Math.cos(rad) * Math.tan(sh) - Math.sin(rad),
    Math.sin(rad),
    -Math.sin(rad) * Math.tan(sh) + Math.cos(rad),
  ];
  const [a00, a01, a10, a11] = [rd / aug.zoom, -rb / aug.zoom, -rc / aug.zoom, ra / aug.zoom];
  const cx = p.dstW / 2, cy = p.dstH / 2;
  const ex = cx - (a00 * (cx + aug.tx) + a01 * (cy + aug.ty));
  const ey = cy - (a10 * (cx + aug.tx) + a11 * (cy + aug.ty));
  const fx = aug.flip ? -sx : sx;
  const mx = aug.flip ? w - 0.5 : -0.5;
  return {
    m: [fx * a00, fx * a01, fx * ex + mx, sy * a10, sy * a11, sy * ey - 0.5].map(f),
    top: bi + aug.dy - pad,
    left: bj + aug.dx - pad,
    h,
    w,
  };
}

/**
 * The batch the kernel should produce, in the affine form (see the top of this file): x
 * [batch, C, dstH, dstW] (Float64) and labels (-1 and a zero image for an index >= count).
 */
export function prepareBatchRef(
  images: Uint8Array,
  srcLabels: Uint8Array,
  indices: ArrayLike<number>,
  p: PrepareRefParams,
): { x: Float64Array; labels: Int32Array } {
  const { batch, channels: C, srcH: H, srcW: W, dstH, dstW } = p;
  const count = srcLabels.length;
  const f = Math.fround;
  const x = new Float64Array(batch * C * dstH * dstW);
  const labels = new Int32Array(batch);
  // PyTorch's source index clamped to a view of `size` pixels: [i0, i1, weight of i1].
  const taps = (r: number, size: number): [number, number, number] => {
    const rr = Math.max(r, 0);
    const i0 = Math.min(Math.floor(rr), size - 1);
    return [i0, i0 < size - 1 ? i0 + 1 : i0, rr - i0];
  };
  for (let b = 0; b < batch; b++) {
    const n = indices[b];
    if (n >= count) {
      labels[b] = -1;
      continue;
    }
    labels[b] = srcLabels[n];
    const { m, top, left, h, w } = viewMapRef(p, n);
    for (let oy = 0; oy < dstH; oy++) {
      for (let ox = 0; ox < dstW; ox++) {
        const ux = ox + 0.5, uy = oy + 0.5;
        const rx = f(f(m[0] * ux) + f(f(m[1] * uy) + m[2]));
        const ry = f(f(m[4] * uy) + f(f(m[3] * ux) + m[5]));
        // 1 inside [-0.5, size - 0.5], linear to 0 at -1 and size (RandomAffine's zero fill).
        const cover = Math.min(Math.max(Math.min(2 * ry + 2, 2 * (h - ry)), 0), 1) *
          Math.min(Math.max(Math.min(2 * rx + 2, 2 * (w - rx)), 0), 1);
        const [y0, y1, ly] = taps(ry, h);
        const [x0, x1, lx] = taps(rx, w);
        for (let c = 0; c < C; c++) {
          const at = (vy: number, vx: number) => {
            const sy = vy + top, sx = vx + left;
            if (sy < 0 || sy >= H || sx < 0 || sx >= W) return 0;
            return images[((n * C + c) * H + sy) * W + sx] / 255;
          };
          const v = cover === 0
            ? 0
            : cover * ((1 - ly) * ((1 - lx) * at(y0, x0) + lx * at(y0, x1)) +
              ly * ((1 - lx) * at(y1, x0) + lx * at(y1, x1)));
          x[((b * C + c) * dstH + oy) * dstW + ox] = p.mean && p.std
            ? (v - p.mean[c]) / p.std[c]
            : v;
        }
      }
    }
  }
  return { x, labels };
}

/**
 * The step-by-step reference of the augmentations that predate RandomAffine (crop with padding,
 * resized crop, flip; RandomAffine's fields must be absent): the explicit padded, cropped and
 * flipped image, resized by {@linkcode resizeBilinearRef}.
 */
export function prepareBatchStepsRef(
  images: Uint8Array,
  srcLabels: Uint8Array,
  indices: ArrayLike<number>,
  p: PrepareRefParams,
): { x: Float64Array; labels: Int32Array } {
  const { batch, channels: C, srcH: H, srcW: W, dstH, dstW } = p;
  const count = srcLabels.length;
  if (hasAffine(p.augment ?? {})) throw new Error("prepareBatchStepsRef: no RandomAffine");
  const pad = p.augment?.cropPadding ?? 0;
  const x = new Float64Array(batch * C * dstH * dstW);
  const labels = new Int32Array(batch);
  for (let b = 0; b < batch; b++) {
    const n = indices[b];
    if (n >= count) {
      labels[b] = -1;
      continue;
    }
    labels[b] = srcLabels[n];
    const aug = augmentRef(p, n);
    const [bi, bj, bh, bw] = aug.box;
    for (let c = 0; c < C; c++) {
      // 1. zero-pad the u8/255 image by `pad` on every side.
      const PH = H + 2 * pad, PW = W + 2 * pad;
      const padded = new Float64Array(PH * PW);
      for (let y = 0; y < H; y++) {
        for (let xx = 0; xx < W; xx++) {
          padded[(y + pad) * PW + xx + pad] = images[((n * C + c) * H + y) * W + xx] / 255;
        }
      }
      // 2. crop H x W at (dy, dx).
      const cropped = new Float64Array(H * W);
      for (let y = 0; y < H; y++) {
        for (let xx = 0; xx < W; xx++) {
          cropped[y * W + xx] = padded[(y + aug.dy) * PW + xx + aug.dx];
        }
      }
      // 3. the resized-crop box, 4. flip.
      const view = new Float64Array(bh * bw);
      for (let y = 0; y < bh; y++) {
        for (let xx = 0; xx < bw; xx++) {
          const sx = aug.flip ? bw - 1 - xx : xx;
          view[y * bw + xx] = cropped[(y + bi) * W + sx + bj];
        }
      }
      // 5. resize, 6. normalize.
      const r = resizeBilinearRef(view, 1, bh, bw, dstH, dstW);
      const base = (b * C + c) * dstH * dstW;
      for (let i = 0; i < r.length; i++) {
        x[base + i] = p.mean && p.std ? (r[i] - p.mean[c]) / p.std[c] : r[i];
      }
    }
  }
  return { x, labels };
}
