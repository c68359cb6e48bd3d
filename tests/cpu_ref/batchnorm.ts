// Float64 CPU reference of batch normalization on x [n, c, hw] (BatchNorm1d: hw = 1), written
// from the definitions (two-pass mean and variance), with PyTorch's running-statistics update.

/** Training forward: batch statistics (biased variance for normalizing). */
export function batchNormTrainRef(
  n: number,
  c: number,
  hw: number,
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  bias: ArrayLike<number>,
  eps: number,
): { y: Float64Array; mean: Float64Array; invstd: Float64Array; unbiasedVar: Float64Array } {
  const N = n * hw;
  const y = new Float64Array(n * c * hw);
  const mean = new Float64Array(c), invstd = new Float64Array(c), unbiasedVar = new Float64Array(c);
  for (let ch = 0; ch < c; ch++) {
    let s = 0;
    for (let b = 0; b < n; b++) for (let i = 0; i < hw; i++) s += x[(b * c + ch) * hw + i];
    const m = s / N;
    let ss = 0;
    for (let b = 0; b < n; b++) {
      for (let i = 0; i < hw; i++) ss += (x[(b * c + ch) * hw + i] - m) ** 2;
    }
    const v = ss / N;
    mean[ch] = m;
    invstd[ch] = 1 / Math.sqrt(v + eps);
    unbiasedVar[ch] = ss / (N - 1);
    for (let b = 0; b < n; b++) {
      for (let i = 0; i < hw; i++) {
        const e = (b * c + ch) * hw + i;
        y[e] = (x[e] - m) * invstd[ch] * weight[ch] + bias[ch];
      }
    }
  }
  return { y, mean, invstd, unbiasedVar };
}

/** Running statistics after one training step (in place). */
export function updateRunningRef(
  runningMean: Float64Array,
  runningVar: Float64Array,
  mean: ArrayLike<number>,
  unbiasedVar: ArrayLike<number>,
  momentum: number,
): void {
  for (let ch = 0; ch < runningMean.length; ch++) {
    runningMean[ch] = (1 - momentum) * runningMean[ch] + momentum * mean[ch];
    runningVar[ch] = (1 - momentum) * runningVar[ch] + momentum * unbiasedVar[ch];
  }
}

/** Eval forward with running statistics. */
export function batchNormEvalRef(
  n: number,
  c: number,
  hw: number,
  x: ArrayLike<number>,
  runningMean: ArrayLike<number>,
  runningVar: ArrayLike<number>,
  weight: ArrayLike<number>,
  bias: ArrayLike<number>,
  eps: number,
): Float64Array {
  const y = new Float64Array(n * c * hw);
  for (let e = 0; e < y.length; e++) {
    const ch = Math.floor(e / hw) % c;
    y[e] = (x[e] - runningMean[ch]) / Math.sqrt(runningVar[ch] + eps) * weight[ch] + bias[ch];
  }
  return y;
}

/** Training-mode backward from the saved mean and 1/sqrt(var + eps). */
export function batchNormBackwardRef(
  n: number,
  c: number,
  hw: number,
  dy: ArrayLike<number>,
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  mean: ArrayLike<number>,
  invstd: ArrayLike<number>,
): { dx: Float64Array; dweight: Float64Array; dbias: Float64Array } {
  const N = n * hw;
  const dx = new Float64Array(n * c * hw);
  const dweight = new Float64Array(c), dbias = new Float64Array(c);
  for (let ch = 0; ch < c; ch++) {
    let sdy = 0, sdyxhat = 0;
    for (let b = 0; b < n; b++) {
      for (let i = 0; i < hw; i++) {
        const e = (b * c + ch) * hw + i;
        sdy += dy[e];
        sdyxhat += dy[e] * (x[e] - mean[ch]) * invstd[ch];
      }
    }
    dbias[ch] = sdy;
    dweight[ch] = sdyxhat;
    for (let b = 0; b < n; b++) {
      for (let i = 0; i < hw; i++) {
        const e = (b * c + ch) * hw + i;
        const xhat = (x[e] - mean[ch]) * invstd[ch];
        dx[e] = weight[ch] * invstd[ch] * (dy[e] - sdy / N - xhat * sdyxhat / N);
      }
    }
  }
  return { dx, dweight, dbias };
}
