// What an operation ran: the plans of its conv2d calls (the path of each pass, as the conv2d
// runner reports them), and the names of the kernels it dispatches (tests that check a kernel
// specialization: a tuned GEMM variant, a fused epilogue, an f16 binding record the names
// `gpu.dispatch` is called with).
import type { Gpu } from "../gpu/mod.ts";
import { observeConv2d } from "../kernels/conv2d/index.ts";
import type { ConvPlan } from "../kernels/conv2d/plan.ts";

/** Starts recording the kernel names `gpu.dispatch` is called with; `stop()` ends it. */
function watchKernels(gpu: Gpu): { names: string[]; stop: () => void } {
  const names: string[] = [];
  const own = Object.hasOwn(gpu, "dispatch");
  const original = gpu.dispatch;
  gpu.dispatch = (kernel, options) => {
    names.push(kernel.name);
    original.call(gpu, kernel, options);
  };
  const stop = () => {
    if (own) gpu.dispatch = original;
    else Reflect.deleteProperty(gpu, "dispatch");
  };
  return { names, stop };
}

/**
 * The names of the kernels `f` dispatches, in order.
 *
 * @example
 * ```ts
 * const names = kernelsOf(gpu, () => conv2dForward({ y, x, w }, p));
 * ```
 */
export function kernelsOf(gpu: Gpu, f: () => void): string[] {
  const w = watchKernels(gpu);
  try {
    f();
  } finally {
    w.stop();
  }
  return w.names;
}

/** {@linkcode kernelsOf} for an `f` that returns a promise (awaited before recording stops). */
export async function kernelsOfAsync(gpu: Gpu, f: () => unknown): Promise<string[]> {
  const w = watchKernels(gpu);
  try {
    await f();
  } finally {
    w.stop();
  }
  return w.names;
}

/**
 * The plans of the conv2d calls `f` records (forward and backward calls, in order), as the
 * conv2d runner reports them: which path each pass took, its chunks and steps.
 *
 * @example
 * ```ts
 * const [plan] = conv2dPlansOf(gpu, () => conv2dForward({ y, x, w }, p));
 * assert.equal(plan.forward?.path, "direct");
 * ```
 */
export function conv2dPlansOf(gpu: Gpu, f: () => void): ConvPlan[] {
  const plans: ConvPlan[] = [];
  const stop = observeConv2d(gpu, (e) => plans.push(e.plan));
  try {
    f();
  } finally {
    stop();
  }
  return plans;
}
