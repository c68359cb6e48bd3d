/**
 * The WGSL kernels of modern-cnn and their dispatch code, forward and backward: GEMM, conv2d
 * (im2col), depthwise conv, pooling, batch norm, LRN, activations, dropout, softmax
 * cross-entropy, residual add, channel concat/split, SGD, and the data kernels. Every function
 * records GPU work only; nothing waits on the GPU.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { activationForward } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const x = gpu.tensor(new Float32Array([-1, 2]), { shape: [2] });
 * const y = gpu.empty([2]);
 * activationForward({ y, x }, { kind: "relu" });
 * console.log(await y.toArray()); // Float32Array [0, 2]
 * ```
 *
 * @module
 */

export * from "./activation.ts";
export {
  adapterKey,
  autotune,
  type AutotuneOptions,
  defaultTuningCachePath,
  formatChoice,
  loadTuningCache,
  recordProblems,
  saveTuningCache,
  type TunedChoice,
  tuneProblems,
  type TuneResult,
  type TuningProblem,
  TuningTable,
  tuningTable,
} from "./autotune.ts";
export * from "./batchnorm.ts";
export * from "./conv2d.ts";
export * from "./data.ts";
export * from "./depthwise.ts";
export * from "./dropout.ts";
export * from "./elementwise.ts";
export { createFiniteWatch, FINITE, finiteCheck, readFiniteWatch } from "./finite.ts";
export {
  checkGemm,
  gemm,
  type GemmParams,
  type GemmTuning,
  type GemmVariant,
  sumRows,
} from "./gemm.ts";
export * from "./loss_scale.ts";
export * from "./lrn.ts";
export * from "./pool.ts";
export * from "./sgd.ts";
export * from "./softmax_ce.ts";
