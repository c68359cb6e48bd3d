// Float64 CPU reference of local response normalization across channels, as
// torch.nn.LocalResponseNorm: window c - floor(size / 2) .. c + floor((size - 1) / 2), zero
// padded; backward by scattering each output's derivative into its window.

/** LRN hyper-parameters and shape. */
export interface LrnGeom {
  n: number;
  c: number;
  hw: number;
  size: number;
  alpha: number;
  beta: number;
  k: number;
}

/** y and scale = k + alpha / size * window sum of squares. */
export function lrnForwardRef(
  g: LrnGeom,
  x: ArrayLike<number>,
): { y: Float64Array; scale: Float64Array } {
  const y = new Float64Array(g.n * g.c * g.hw), scale = new Float64Array(y.length);
  for (let b = 0; b < g.n; b++) {
    for (let c = 0; c < g.c; c++) {
      for (let i = 0; i < g.hw; i++) {
        let s = 0;
        for (let cc = c - Math.floor(g.size / 2); cc <= c + Math.floor((g.size - 1) / 2); cc++) {
          if (cc < 0 || cc >= g.c) continue;
          s += x[(b * g.c + cc) * g.hw + i] ** 2;
        }
        const e = (b * g.c + c) * g.hw + i;
        scale[e] = g.k + (g.alpha / g.size) * s;
        y[e] = x[e] * scale[e] ** -g.beta;
      }
    }
  }
  return { y, scale };
}

/**
 * dx for an output gradient dy (product rule through every window containing the element), from
 * the forward's `scale` (default: computed from x; pass the saved one, e.g. as rounded to f16).
 */
export function lrnBackwardRef(
  g: LrnGeom,
  dy: ArrayLike<number>,
  x: ArrayLike<number>,
  scale: ArrayLike<number> = lrnForwardRef(g, x).scale,
): Float64Array {
  const dx = new Float64Array(g.n * g.c * g.hw);
  for (let b = 0; b < g.n; b++) {
    for (let c = 0; c < g.c; c++) {
      for (let i = 0; i < g.hw; i++) {
        const e = (b * g.c + c) * g.hw + i;
        dx[e] += dy[e] * scale[e] ** -g.beta;
        // d y[e] / d scale[e] * d scale[e] / d x[cc]
        const dScale = dy[e] * x[e] * -g.beta * scale[e] ** (-g.beta - 1);
        for (let cc = c - Math.floor(g.size / 2); cc <= c + Math.floor((g.size - 1) / 2); cc++) {
          if (cc < 0 || cc >= g.c) continue;
          const ec = (b * g.c + cc) * g.hw + i;
          dx[ec] += dScale * (g.alpha / g.size) * 2 * x[ec];
        }
      }
    }
  }
  return dx;
}
