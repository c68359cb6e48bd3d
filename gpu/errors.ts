/**
 * Error types of the GPU runtime. Every GPU-side failure (no adapter, a WGSL compile error, a
 * validation error, a lost device) becomes one of these, and each names the kernel involved where
 * one is known.
 *
 * @module
 */

/**
 * No WebGPU adapter could be acquired.
 *
 * @example
 * ```ts
 * import { NoAdapterError } from "@modern-cnn/webgpu/gpu";
 * const err = new NoAdapterError("navigator.gpu.requestAdapter() returned null");
 * console.log(err.message.includes("mesa-vulkan-drivers")); // true
 * ```
 */
export class NoAdapterError extends Error {
  /**
   * Creates the error; `detail` says what was tried.
   *
   * @example
   * ```ts
   * import { NoAdapterError } from "@modern-cnn/webgpu/gpu";
   * const err = new NoAdapterError("navigator.gpu is undefined");
   * ```
   */
  constructor(detail: string) {
    super(
      `no WebGPU adapter is available (${detail}). Install a GPU driver with Vulkan support, ` +
        "or Mesa's CPU implementation, which gives a WebGPU adapter on any machine: " +
        "`apt-get install -y mesa-vulkan-drivers` (Debian/Ubuntu). In a browser, use one with " +
        "WebGPU enabled (Chrome/Edge 113+, or `--enable-unsafe-webgpu`).",
    );
    this.name = "NoAdapterError";
  }
}

/**
 * A WGSL kernel failed to compile or its pipeline could not be created.
 *
 * @example
 * ```ts
 * import { KernelCompileError } from "@modern-cnn/webgpu/gpu";
 * const err = new KernelCompileError("gemm", "expected identifier");
 * console.log(err.kernel); // "gemm"
 * ```
 */
export class KernelCompileError extends Error {
  /** The name of the kernel that failed. */
  readonly kernel: string;
  /**
   * Creates the error for `kernel` with the compiler's message.
   *
   * @example
   * ```ts
   * import { KernelCompileError } from "@modern-cnn/webgpu/gpu";
   * new KernelCompileError("relu", "unknown identifier `y`");
   * ```
   */
  constructor(kernel: string, detail: string) {
    super(`WGSL kernel '${kernel}' failed to compile: ${detail.trim()}`);
    this.name = "KernelCompileError";
    this.kernel = kernel;
  }
}

/**
 * A WebGPU validation, out-of-memory or internal error raised by recorded GPU work.
 *
 * @example
 * ```ts
 * import { GpuValidationError } from "@modern-cnn/webgpu/gpu";
 * const err = new GpuValidationError(["gemm"], "validation", "binding size too small");
 * console.log(err.kernels); // ["gemm"]
 * ```
 */
export class GpuValidationError extends Error {
  /** The kernels recorded in the batch that raised the error (at least one of them is at fault). */
  readonly kernels: readonly string[];
  /** `validation`, `out-of-memory` or `internal`. */
  readonly kind: string;
  /**
   * Creates the error for a batch of `kernels`.
   *
   * @example
   * ```ts
   * import { GpuValidationError } from "@modern-cnn/webgpu/gpu";
   * new GpuValidationError(["relu"], "out-of-memory", "allocation failed");
   * ```
   */
  constructor(kernels: readonly string[], kind: string, detail: string) {
    const names = kernels.length === 0 ? "no kernel" : kernels.join(", ");
    super(`WebGPU ${kind} error in GPU work of kernel(s) [${names}]: ${detail.trim()}`);
    this.name = "GpuValidationError";
    this.kernels = kernels;
    this.kind = kind;
  }
}

/**
 * The GPU device was lost (driver reset, out of memory, or the adapter went away).
 *
 * @example
 * ```ts
 * import { DeviceLostError } from "@modern-cnn/webgpu/gpu";
 * const err = new DeviceLostError("unknown", "GPU hang", ["conv2d_im2col"]);
 * console.log(err.message);
 * ```
 */
export class DeviceLostError extends Error {
  /**
   * Creates the error with the loss reason and the kernels of the last batch.
   *
   * @example
   * ```ts
   * import { DeviceLostError } from "@modern-cnn/webgpu/gpu";
   * new DeviceLostError("unknown", "reset", []);
   * ```
   */
  constructor(reason: string, detail: string, lastKernels: readonly string[]) {
    const last = lastKernels.length ? `; last kernels recorded: [${lastKernels.join(", ")}]` : "";
    super(`WebGPU device lost (${reason}): ${detail}${last}`);
    this.name = "DeviceLostError";
  }
}
