// Float64 CPU reference of the data kernels, written step by step from the definitions: the
// augmentation builds each intermediate image explicitly (zero-pad, crop, resized-crop box, flip)
// and then resizes it with PyTorch's bilinear rule (align_corners = False, no antialias), then
// normalizes. The random draws use the same counter-based hash as the kernel.

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
  cropPadding?: number;
  flip?: boolean;
  resizedCrop?: { scale: readonly [number, number]; ratio: readonly [number, number] };
  seed?: number;
}

/** The augmentation drawn for example n. */
export interface AugmentRef {
  flip: boolean;
  dy: number;
  dx: number;
  box: [number, number, number, number];
}

/** The augmentation of example `n` (flip, crop offsets into the padded image, resized-crop box). */
export function augmentRef(p: PrepareRefParams, n: number): AugmentRef {
  const seed = p.seed ?? 0;
  const pad = p.cropPadding ?? 0;
  const flip = (p.flip ?? false) && (rnd(seed, n, 0) & 1) === 1;
  const dy = pad > 0 ? rnd(seed, n, 1) % (2 * pad + 1) : 0;
  const dx = pad > 0 ? rnd(seed, n, 2) % (2 * pad + 1) : 0;
  const box: [number, number, number, number] = p.resizedCrop
    ? resizedCropBoxRef(seed, n, p.srcH, p.srcW, p.resizedCrop.scale, p.resizedCrop.ratio)
    : [0, 0, p.srcH, p.srcW];
  return { flip, dy, dx, box };
}

/**
 * The batch the kernel should produce: x [batch, C, dstH, dstW] (Float64) and labels (-1 and a
 * zero image for an index >= count).
 */
export function prepareBatchRef(
  images: Uint8Array,
  srcLabels: Uint8Array,
  indices: ArrayLike<number>,
  p: PrepareRefParams,
): { x: Float64Array; labels: Int32Array } {
  const { batch, channels: C, srcH: H, srcW: W, dstH, dstW } = p;
  const count = srcLabels.length;
  const pad = p.cropPadding ?? 0;
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
