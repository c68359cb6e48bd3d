// Float64 CPU reference of depthwise 2-D convolution (groups = channels, multiplier 1), written
// straight from the definition: forward, and backward to input, weight and bias by scattering
// each output gradient into the taps that produced it.

/** Resolved geometry of a depthwise convolution. */
export interface DwGeom {
  n: number;
  c: number;
  h: number;
  w: number;
  kh: number;
  kw: number;
  sh: number;
  sw: number;
  ph: number;
  pw: number;
  dh: number;
  dw: number;
}

/** Output height and width. */
export function dwOut(g: DwGeom): [number, number] {
  return [
    Math.floor((g.h + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh) + 1,
    Math.floor((g.w + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw) + 1,
  ];
}

/** y [n, c, oh, ow] from x [n, c, h, w], w [c, 1, kh, kw], optional bias [c]. */
export function depthwiseForwardRef(
  g: DwGeom,
  x: ArrayLike<number>,
  wt: ArrayLike<number>,
  bias?: ArrayLike<number>,
): Float64Array {
  const [oh, ow] = dwOut(g);
  const y = new Float64Array(g.n * g.c * oh * ow);
  for (let b = 0; b < g.n; b++) {
    for (let c = 0; c < g.c; c++) {
      for (let oy = 0; oy < oh; oy++) {
        for (let ox = 0; ox < ow; ox++) {
          let s = bias ? bias[c] : 0;
          for (let ky = 0; ky < g.kh; ky++) {
            const iy = oy * g.sh - g.ph + ky * g.dh;
            if (iy < 0 || iy >= g.h) continue;
            for (let kx = 0; kx < g.kw; kx++) {
              const ix = ox * g.sw - g.pw + kx * g.dw;
              if (ix < 0 || ix >= g.w) continue;
              s += x[((b * g.c + c) * g.h + iy) * g.w + ix] * wt[(c * g.kh + ky) * g.kw + kx];
            }
          }
          y[((b * g.c + c) * oh + oy) * ow + ox] = s;
        }
      }
    }
  }
  return y;
}

/** dx, dw and db of the depthwise convolution for an output gradient dy. */
export function depthwiseBackwardRef(
  g: DwGeom,
  dy: ArrayLike<number>,
  x: ArrayLike<number>,
  wt: ArrayLike<number>,
): { dx: Float64Array; dw: Float64Array; db: Float64Array } {
  const [oh, ow] = dwOut(g);
  const dx = new Float64Array(g.n * g.c * g.h * g.w);
  const dw = new Float64Array(g.c * g.kh * g.kw);
  const db = new Float64Array(g.c);
  for (let b = 0; b < g.n; b++) {
    for (let c = 0; c < g.c; c++) {
      for (let oy = 0; oy < oh; oy++) {
        for (let ox = 0; ox < ow; ox++) {
          const gy = dy[((b * g.c + c) * oh + oy) * ow + ox];
          db[c] += gy;
          for (let ky = 0; ky < g.kh; ky++) {
            const iy = oy * g.sh - g.ph + ky * g.dh;
            if (iy < 0 || iy >= g.h) continue;
            for (let kx = 0; kx < g.kw; kx++) {
              const ix = ox * g.sw - g.pw + kx * g.dw;
              if (ix < 0 || ix >= g.w) continue;
              const xi = ((b * g.c + c) * g.h + iy) * g.w + ix;
              const wi = (c * g.kh + ky) * g.kw + kx;
              dx[xi] += gy * wt[wi];
              dw[wi] += gy * x[xi];
            }
          }
        }
      }
    }
  }
  return { dx, dw, db };
}
