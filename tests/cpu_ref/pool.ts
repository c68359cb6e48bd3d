// Float64 CPU references of 2-D max / average / global average pooling with PyTorch's semantics
// (ceil_mode=False, count_include_pad=True, first index wins on ties), written from the
// definitions: backward passes scatter each output gradient into its window.

/** Resolved pooling geometry. */
export interface PoolGeom {
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
}

/** Output height and width. */
export function poolOut(g: PoolGeom): [number, number] {
  return [
    Math.floor((g.h + 2 * g.ph - g.kh) / g.sh) + 1,
    Math.floor((g.w + 2 * g.pw - g.kw) / g.sw) + 1,
  ];
}

/** Max pool: values and flat argmax indices (iy * w + ix) per output. */
export function maxPoolForwardRef(
  g: PoolGeom,
  x: ArrayLike<number>,
): { y: Float64Array; argmax: Int32Array } {
  const [oh, ow] = poolOut(g);
  const y = new Float64Array(g.n * g.c * oh * ow);
  const argmax = new Int32Array(y.length);
  for (let pl = 0; pl < g.n * g.c; pl++) {
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        let best = -Infinity, bi = -1;
        for (let ky = 0; ky < g.kh; ky++) {
          const iy = oy * g.sh - g.ph + ky;
          if (iy < 0 || iy >= g.h) continue;
          for (let kx = 0; kx < g.kw; kx++) {
            const ix = ox * g.sw - g.pw + kx;
            if (ix < 0 || ix >= g.w) continue;
            const v = x[pl * g.h * g.w + iy * g.w + ix];
            if (bi < 0 || v > best) {
              best = v;
              bi = iy * g.w + ix;
            }
          }
        }
        const o = (pl * oh + oy) * ow + ox;
        y[o] = best;
        argmax[o] = bi;
      }
    }
  }
  return { y, argmax };
}

/** Max pool backward: dy scattered to the argmax of each window. */
export function maxPoolBackwardRef(
  g: PoolGeom,
  dy: ArrayLike<number>,
  argmax: ArrayLike<number>,
): Float64Array {
  const [oh, ow] = poolOut(g);
  const dx = new Float64Array(g.n * g.c * g.h * g.w);
  for (let pl = 0; pl < g.n * g.c; pl++) {
    for (let o = 0; o < oh * ow; o++) {
      dx[pl * g.h * g.w + argmax[pl * oh * ow + o]] += dy[pl * oh * ow + o];
    }
  }
  return dx;
}

function divisor(g: PoolGeom, oy: number, ox: number): number {
  const hs = oy * g.sh - g.ph, ws = ox * g.sw - g.pw;
  const he = Math.min(hs + g.kh, g.h + g.ph), we = Math.min(ws + g.kw, g.w + g.pw);
  return (he - hs) * (we - ws);
}

/** Average pool forward, count_include_pad=True. */
export function avgPoolForwardRef(g: PoolGeom, x: ArrayLike<number>): Float64Array {
  const [oh, ow] = poolOut(g);
  const y = new Float64Array(g.n * g.c * oh * ow);
  for (let pl = 0; pl < g.n * g.c; pl++) {
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        let s = 0;
        for (let ky = 0; ky < g.kh; ky++) {
          const iy = oy * g.sh - g.ph + ky;
          if (iy < 0 || iy >= g.h) continue;
          for (let kx = 0; kx < g.kw; kx++) {
            const ix = ox * g.sw - g.pw + kx;
            if (ix < 0 || ix >= g.w) continue;
            s += x[pl * g.h * g.w + iy * g.w + ix];
          }
        }
        y[(pl * oh + oy) * ow + ox] = s / divisor(g, oy, ox);
      }
    }
  }
  return y;
}

/** Average pool backward: dy / window size scattered over each window's in-bounds part. */
export function avgPoolBackwardRef(g: PoolGeom, dy: ArrayLike<number>): Float64Array {
  const [oh, ow] = poolOut(g);
  const dx = new Float64Array(g.n * g.c * g.h * g.w);
  for (let pl = 0; pl < g.n * g.c; pl++) {
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        const d = dy[(pl * oh + oy) * ow + ox] / divisor(g, oy, ox);
        for (let ky = 0; ky < g.kh; ky++) {
          const iy = oy * g.sh - g.ph + ky;
          if (iy < 0 || iy >= g.h) continue;
          for (let kx = 0; kx < g.kw; kx++) {
            const ix = ox * g.sw - g.pw + kx;
            if (ix < 0 || ix >= g.w) continue;
            dx[pl * g.h * g.w + iy * g.w + ix] += d;
          }
        }
      }
    }
  }
  return dx;
}

/** Global average pool forward: the mean of each plane. */
export function globalAvgPoolForwardRef(
  planes: number,
  hw: number,
  x: ArrayLike<number>,
): Float64Array {
  const y = new Float64Array(planes);
  for (let pl = 0; pl < planes; pl++) {
    let s = 0;
    for (let i = 0; i < hw; i++) s += x[pl * hw + i];
    y[pl] = s / hw;
  }
  return y;
}

/** Global average pool backward. */
export function globalAvgPoolBackwardRef(
  planes: number,
  hw: number,
  dy: ArrayLike<number>,
): Float64Array {
  const dx = new Float64Array(planes * hw);
  for (let i = 0; i < dx.length; i++) dx[i] = dy[Math.floor(i / hw)] / hw;
  return dx;
}
