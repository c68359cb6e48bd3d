// Float64 CPU references of the pointwise activations (PyTorch semantics) and of their backward
// passes computed from the forward's output, written from the definitions.

/** The activations of `kernels/activation.ts`. */
export type ActivationKindRef = "relu" | "relu6" | "sigmoid" | "tanh";

/** y = f(x) elementwise. */
export function activationForwardRef(x: ArrayLike<number>, kind: ActivationKindRef): Float64Array {
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    switch (kind) {
      case "relu":
        y[i] = v > 0 ? v : 0;
        break;
      case "relu6":
        y[i] = Math.min(Math.max(v, 0), 6);
        break;
      case "sigmoid":
        y[i] = 1 / (1 + Math.exp(-v));
        break;
      case "tanh":
        y[i] = Math.tanh(v);
        break;
    }
  }
  return y;
}

/**
 * dx = dy * f'(x) expressed through y = f(x), with PyTorch's values at the kinks: relu'(0) = 0,
 * relu6'(0) = relu6'(6) = 0.
 */
export function activationBackwardRef(
  dy: ArrayLike<number>,
  y: ArrayLike<number>,
  kind: ActivationKindRef,
): Float64Array {
  const dx = new Float64Array(dy.length);
  for (let i = 0; i < dy.length; i++) {
    const v = y[i];
    let d: number;
    switch (kind) {
      case "relu":
        d = v > 0 ? 1 : 0;
        break;
      case "relu6":
        d = v > 0 && v < 6 ? 1 : 0;
        break;
      case "sigmoid":
        d = v * (1 - v);
        break;
      case "tanh":
        d = 1 - v * v;
        break;
    }
    dx[i] = dy[i] * d;
  }
  return dx;
}
