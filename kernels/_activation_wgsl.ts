/**
 * The WGSL of each activation, shared by the activation kernels and by the kernels that fuse an
 * activation into their epilogue (GEMM, conv2d, batch norm, channel split), so that a fused
 * kernel computes bit for bit what the separate one does.
 *
 * Each forward body reads `x` and assigns `y`; each backward body reads `dy` and the forward's
 * output `y` and assigns `dx`. All of them are written in a type alias `T` (`f32` or `vec4<f32>`)
 * that the including kernel declares.
 *
 * @module
 */

/** The activation functions: `nn.ReLU`, `nn.ReLU6`, `nn.Sigmoid`, `nn.Tanh`. */
export type ActivationKind = "relu" | "relu6" | "sigmoid" | "tanh";

/** Forward bodies: read `x: T`, assign `y: T` (a `var` declared by the kernel). */
export const ACTIVATION_FORWARD_WGSL: Record<ActivationKind, string> = {
  relu: "y = max(x, T(0.0));",
  relu6: "y = min(max(x, T(0.0)), T(6.0));",
  // Stable for both signs: with e = exp(-|x|) <= 1, sigmoid = 1 / (1 + e) for x >= 0 and
  // e / (1 + e) for x < 0 (no overflow, no 1 - tiny cancellation).
  sigmoid:
    "let e = exp(-abs(x)); let r = T(1.0) / (T(1.0) + e); y = select(e * r, r, x >= T(0.0));",
  // tanh(|x|) = (1 - t) / (1 + t) with t = exp(-2|x|) <= 1 (no inf / inf); below |x| = 0.125 an
  // odd Taylor polynomial (error < 1e-9 relative) avoids the cancellation in 1 - t.
  tanh: `let a = abs(x);
    let t = exp(-2.0 * a);
    let big = (T(1.0) - t) / (T(1.0) + t);
    let a2 = a * a;
    let small = a * (T(1.0) + a2 * (T(-1.0 / 3.0) + a2 * (T(2.0 / 15.0) + a2 * T(-17.0 / 315.0))));
    y = sign(x) * select(big, small, a < T(0.125));`,
};

/** Every activation kind, in the order of `ActivationKind` (e.g. for a kernel's variants). */
export const ACTIVATION_KINDS: readonly ActivationKind[] = ["relu", "relu6", "sigmoid", "tanh"];

/** Backward bodies: read `dy: T` and the forward output `y: T`, assign `dx: T`. */
export const ACTIVATION_BACKWARD_WGSL: Record<ActivationKind, string> = {
  relu: "dx = select(T(0.0), dy, y > T(0.0));",
  relu6: "dx = select(T(0.0), dy, (y > T(0.0)) & (y < T(6.0)));",
  sigmoid: "dx = dy * (T(1.0) - y) * y;",
  // (1 - y)(1 + y) rather than 1 - y * y: no cancellation of a rounded y * y near |y| = 1.
  tanh: "dx = dy * ((T(1.0) - y) * (T(1.0) + y));",
};

/**
 * Checks an optional activation kind of a fused epilogue.
 *
 * @throws {RangeError} naming `op` for a kind that is not one of `ActivationKind`.
 */
export function checkActivationKind(op: string, kind: ActivationKind | undefined): void {
  if (kind === undefined) return;
  if (typeof kind !== "string" || !Object.hasOwn(ACTIVATION_FORWARD_WGSL, kind)) {
    throw new RangeError(
      `${op}: unknown activation ${JSON.stringify(kind)} (expected one of ` +
        `${Object.keys(ACTIVATION_FORWARD_WGSL).join(", ")})`,
    );
  }
}

/** WGSL `fn act(x: T) -> T`: the forward body as a function (the kernel declares `T`). */
export function actForwardFn(kind: ActivationKind): string {
  return `fn act(x: T) -> T {
  var y: T;
  ${ACTIVATION_FORWARD_WGSL[kind]}
  return y;
}`;
}

/** WGSL `fn actBackward(dy: T, y: T) -> T`: the backward body, from the forward's output. */
export function actBackwardFn(kind: ActivationKind): string {
  return `fn actBackward(dy: T, y: T) -> T {
  var dx: T;
  ${ACTIVATION_BACKWARD_WGSL[kind]}
  return dx;
}`;
}

/**
 * The WGSL of a fused activation for kernels without their own `T`: `alias T = <type>;` and
 * {@linkcode actForwardFn}; empty without an activation.
 */
export function activationWgsl(
  kind: ActivationKind | undefined,
  type: "f32" | "vec4<f32>",
): string {
  if (!kind) return "";
  return `alias T = ${type};
${actForwardFn(kind)}`;
}
