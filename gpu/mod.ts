/**
 * The GPU runtime of modern-cnn: {@linkcode requestGpu} / {@linkcode getGpu} acquire a WebGPU
 * device, {@linkcode Gpu} records kernels into batched submits, and {@linkcode Tensor} holds data.
 * A kernel of one's own is a {@linkcode KernelSpec} dispatched with {@linkcode Gpu.dispatch}
 * ({@linkcode grid1d} for flat launches); {@linkcode assertShape}, {@linkcode formatShape} and
 * {@linkcode numel} help check its shapes.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * const gpu = await getGpu();
 * const x = gpu.tensor(new Float32Array([1, 2, 3, 4]), { shape: [2, 2] });
 * console.log(await x.toArray());
 * ```
 *
 * @module
 */

export { getGpu, requestGpu, type RequestGpuOptions, shutdownGpu } from "./device.ts";
export {
  DeviceLostError,
  GpuValidationError,
  KernelCompileError,
  NoAdapterError,
} from "./errors.ts";
export { grid1d, type KernelSpec } from "./kernel.ts";
export { BufferPool, type PoolStats } from "./pool.ts";
export { assertShape, formatShape, numel, type Shape } from "./shape.ts";
export {
  type ArrayFor,
  type Binding,
  type DispatchOptions,
  type DType,
  type DTypeOf,
  type Gpu,
  type GpuFeatures,
  type GpuStats,
  Tensor,
} from "./tensor.ts";
