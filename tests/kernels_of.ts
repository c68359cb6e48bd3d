// Which kernels an operation dispatches: tests that check a path was taken (direct or im2col,
// a tuned GEMM variant, a fused epilogue) record the names `gpu.dispatch` is called with.
import type { Gpu } from "../gpu/mod.ts";

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
