// Float64 CPU reference of one torch.optim.SGD step (single-tensor algorithm of PyTorch 1.13):
//   d = grad + weight_decay * param
//   buf = d (first step) | momentum * buf + (1 - dampening) * d
//   d = d + momentum * buf (nesterov) | buf (momentum) ; param -= lr * d

/** SGD hyper-parameters (as torch.optim.SGD). */
export interface SgdRefParams {
  lr: number;
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
}

/**
 * One step in place on `param` and `buf` (`buf` null before the first momentum step); returns
 * the momentum buffer (a new array on the first step).
 */
export function sgdStepRef(
  param: Float64Array,
  grad: ArrayLike<number>,
  buf: Float64Array | null,
  p: SgdRefParams,
): Float64Array | null {
  const mom = p.momentum ?? 0, damp = p.dampening ?? 0, wd = p.weightDecay ?? 0;
  const d = Float64Array.from({ length: param.length }, (_, i) => grad[i] + wd * param[i]);
  let b = buf;
  if (mom !== 0) {
    if (b === null) b = Float64Array.from(d);
    else for (let i = 0; i < d.length; i++) b[i] = mom * b[i] + (1 - damp) * d[i];
    for (let i = 0; i < d.length; i++) d[i] = p.nesterov ? d[i] + mom * b[i] : b[i];
  }
  for (let i = 0; i < d.length; i++) param[i] -= p.lr * d[i];
  return b;
}
