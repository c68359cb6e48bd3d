// Float64 CPU references of the residual add (with fused ReLU), its backward, gradient
// accumulation, and channel concatenation / split of [n, c, hw] tensors (torch.cat(dim=1)).

/** y = a + b, or max(a + b, 0) with relu. */
export function addRef(a: ArrayLike<number>, b: ArrayLike<number>, relu = false): Float64Array {
  return Float64Array.from({ length: a.length }, (_, i) => {
    const v = a[i] + b[i];
    return relu ? Math.max(v, 0) : v;
  });
}

/** dx = dy * (y > 0). */
export function addReluBackwardRef(dy: ArrayLike<number>, y: ArrayLike<number>): Float64Array {
  return Float64Array.from({ length: dy.length }, (_, i) => (y[i] > 0 ? dy[i] : 0));
}

/** y + alpha * x. */
export function accumulateRef(
  y: ArrayLike<number>,
  x: ArrayLike<number>,
  alpha = 1,
): Float64Array {
  return Float64Array.from({ length: y.length }, (_, i) => y[i] + alpha * x[i]);
}

/** torch.cat of [n, c_k, hw] tensors along dim 1. */
export function concatRef(
  parts: ArrayLike<number>[],
  cs: number[],
  n: number,
  hw: number,
): Float64Array {
  const cTotal = cs.reduce((a, b) => a + b, 0);
  const y = new Float64Array(n * cTotal * hw);
  let off = 0;
  parts.forEach((x, k) => {
    for (let b = 0; b < n; b++) {
      for (let ch = 0; ch < cs[k]; ch++) {
        for (let s = 0; s < hw; s++) {
          y[(b * cTotal + off + ch) * hw + s] = x[(b * cs[k] + ch) * hw + s];
        }
      }
    }
    off += cs[k];
  });
  return y;
}

/** Channels [cOffset, cOffset + c) of a [n, cTotal, hw] tensor. */
export function sliceRef(
  y: ArrayLike<number>,
  n: number,
  hw: number,
  cTotal: number,
  cOffset: number,
  c: number,
): Float64Array {
  const x = new Float64Array(n * c * hw);
  for (let b = 0; b < n; b++) {
    for (let ch = 0; ch < c; ch++) {
      for (let s = 0; s < hw; s++) {
        x[(b * c + ch) * hw + s] = y[(b * cTotal + cOffset + ch) * hw + s];
      }
    }
  }
  return x;
}
