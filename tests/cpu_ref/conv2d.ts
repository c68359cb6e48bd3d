/**
 * Float64 CPU references of conv2d (`kernels/conv2d/`): direct loops over PyTorch's definition
 * (cross-correlation, NCHW, OIHW weights, zero padding, dilation, groups).
 *
 * @module
 */

import {
  type Conv2dGeometry,
  conv2dGeometry,
  type Conv2dParams,
} from "../../kernels/conv2d/index.ts";
import type { Numeric } from "../harness.ts";

/** Calls `f(img, co, oy, ox, ci, ky, kx, xIndex)` for every tap that reads an input element. */
function forEachTap(
  g: Conv2dGeometry,
  f: (yi: number, wi: number, xi: number, co: number) => void,
): void {
  const cInG = g.cIn / g.groups, cOutG = g.cOut / g.groups;
  for (let img = 0; img < g.n; img++) {
    for (let co = 0; co < g.cOut; co++) {
      const grp = Math.floor(co / cOutG);
      for (let oy = 0; oy < g.oh; oy++) {
        for (let ox = 0; ox < g.ow; ox++) {
          const yi = ((img * g.cOut + co) * g.oh + oy) * g.ow + ox;
          for (let cig = 0; cig < cInG; cig++) {
            const ci = grp * cInG + cig;
            for (let ky = 0; ky < g.kh; ky++) {
              const iy = oy * g.sh - g.ph + ky * g.dh;
              if (iy < 0 || iy >= g.h) continue;
              for (let kx = 0; kx < g.kw; kx++) {
                const ix = ox * g.sw - g.pw + kx * g.dw;
                if (ix < 0 || ix >= g.w) continue;
                const xi = ((img * g.cIn + ci) * g.h + iy) * g.w + ix;
                const wi = ((co * cInG + cig) * g.kh + ky) * g.kw + kx;
                f(yi, wi, xi, co);
              }
            }
          }
        }
      }
    }
  }
}

/**
 * `conv2d(x, w) + b` in Float64.
 *
 * @example
 * ```ts
 * import { conv2dRef } from "./conv2d.ts";
 * conv2dRef({ n: 1, cIn: 1, h: 2, w: 2, cOut: 1, kernel: 2 }, [1, 2, 3, 4], [1, 1, 1, 1]); // [10]
 * ```
 */
export function conv2dRef(p: Conv2dParams, x: Numeric, w: Numeric, b?: Numeric): Float64Array {
  const g = conv2dGeometry(p);
  const y = new Float64Array(g.n * g.cOut * g.oh * g.ow);
  if (b) {
    const P = g.oh * g.ow;
    for (let i = 0; i < y.length; i++) y[i] = b[Math.floor(i / P) % g.cOut];
  }
  forEachTap(g, (yi, wi, xi) => {
    y[yi] += w[wi] * x[xi];
  });
  return y;
}

/**
 * Gradients of `sum(dy * conv2d(x, w, b))` in Float64: `dx`, `dw`, `db`.
 *
 * @example
 * ```ts
 * import { conv2dBackwardRef } from "./conv2d.ts";
 * const p = { n: 1, cIn: 1, h: 2, w: 2, cOut: 1, kernel: 2 };
 * conv2dBackwardRef(p, [1, 2, 3, 4], [1, 1, 1, 1], [1]).dw; // [1, 2, 3, 4]
 * ```
 */
export function conv2dBackwardRef(
  p: Conv2dParams,
  x: Numeric,
  w: Numeric,
  dy: Numeric,
): { dx: Float64Array; dw: Float64Array; db: Float64Array } {
  const g = conv2dGeometry(p);
  const dx = new Float64Array(x.length);
  const dw = new Float64Array(w.length);
  const db = new Float64Array(g.cOut);
  const P = g.oh * g.ow;
  for (let i = 0; i < dy.length; i++) db[Math.floor(i / P) % g.cOut] += dy[i];
  forEachTap(g, (yi, wi, xi) => {
    dx[xi] += w[wi] * dy[yi];
    dw[wi] += x[xi] * dy[yi];
  });
  return { dx, dw, db };
}
