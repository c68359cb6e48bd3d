// Float64 CPU reference of one torch.optim.Adam / AdamW step (single-tensor path, no amsgrad),
// written from PyTorch's algorithm: AdamW decays the parameter by 1 - lr * wd first, Adam adds
// wd * param to the gradient; then the moments, the bias corrections 1 - beta^t and the step.

/** One step in place over `param`, `expAvg`, `expAvgSq` (Float64Arrays) with gradient `grad`. */
export function adamStepRef(
  s: { param: Float64Array; expAvg: Float64Array; expAvgSq: Float64Array },
  grad: ArrayLike<number>,
  p: {
    lr: number;
    step: number;
    betas?: readonly [number, number];
    eps?: number;
    weightDecay?: number;
    decoupled?: boolean;
  },
): void {
  const [b1, b2] = p.betas ?? [0.9, 0.999];
  const eps = p.eps ?? 1e-8, wd = p.weightDecay ?? (p.decoupled ? 0.01 : 0);
  const bc1 = 1 - b1 ** p.step, bc2 = 1 - b2 ** p.step;
  for (let i = 0; i < s.param.length; i++) {
    let g = grad[i];
    if (p.decoupled) s.param[i] *= 1 - p.lr * wd;
    else g += wd * s.param[i];
    s.expAvg[i] = b1 * s.expAvg[i] + (1 - b1) * g;
    s.expAvgSq[i] = b2 * s.expAvgSq[i] + (1 - b2) * g * g;
    const denom = Math.sqrt(s.expAvgSq[i]) / Math.sqrt(bc2) + eps;
    s.param[i] -= (p.lr / bc1) * s.expAvg[i] / denom;
  }
}
