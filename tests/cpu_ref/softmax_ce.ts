// Float64 CPU reference of softmax cross-entropy with label smoothing (PyTorch's
// CrossEntropyLoss), written from the definition: loss_r = -sum_j target_j * log softmax_j with
// target = (1 - eps) * onehot + eps / c; rows with a label outside [0, c) are ignored, and the
// mean is over the others (PyTorch's reduction="mean" with ignore_index).

/**
 * Sum of per-row losses, gradient of the mean (sum / validRows; 0 when every row is ignored),
 * count of rows with argmax == label, and the rows with a valid label.
 */
export function softmaxCrossEntropyRef(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  n: number,
  c: number,
  eps = 0,
): { lossSum: number; dlogits: Float64Array; correct: number; validRows: number } {
  const dlogits = new Float64Array(n * c);
  const valid = (lab: number) => Number.isInteger(lab) && lab >= 0 && lab < c;
  let validRows = 0;
  for (let r = 0; r < n; r++) if (valid(labels[r])) validRows++;
  let lossSum = 0, correct = 0;
  for (let r = 0; r < n; r++) {
    const row = Array.from({ length: c }, (_, j) => logits[r * c + j]);
    const lab = labels[r];
    if (!valid(lab)) continue;
    let m = -Infinity, arg = 0;
    row.forEach((v, j) => {
      if (v > m) [m, arg] = [v, j];
    });
    if (arg === lab) correct++;
    const s = row.reduce((a, v) => a + Math.exp(v - m), 0);
    const logSoftmax = row.map((v) => v - m - Math.log(s));
    for (let j = 0; j < c; j++) {
      const target = (j === lab ? 1 - eps : 0) + eps / c;
      lossSum -= target * logSoftmax[j];
      dlogits[r * c + j] = (Math.exp(logSoftmax[j]) - target) / validRows;
    }
  }
  return { lossSum, dlogits, correct, validRows };
}

/** Rows whose argmax (first maximum on ties) equals a valid label. */
export function accuracyCountRef(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  n: number,
  c: number,
): number {
  return softmaxCrossEntropyRef(logits, labels, n, c).correct;
}
