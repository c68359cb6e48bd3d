/**
 * The GPU runtime of modern-cnn: {@linkcode requestGpu} / {@linkcode getGpu} acquire a WebGPU
 * device, {@linkcode Gpu} records kernels into batched submits, and {@linkcode Tensor} holds data.
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

export * from "./device.ts";
export * from "./errors.ts";
export * from "./pool.ts";
export * from "./shape.ts";
export * from "./tensor.ts";
