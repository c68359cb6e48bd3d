/**
 * The WGSL kernels of modern-cnn and their dispatch code, forward and backward: GEMM, conv2d
 * (im2col), depthwise conv, pooling, batch norm, LRN, activations, dropout, softmax
 * cross-entropy, residual add, channel concat/split, SGD, and the data kernels. Every function
 * records GPU work only; nothing waits on the GPU.
 *
 * This is the API for writing layers: each kernel's functions, its params type and its `checkXxx`
 * function (which validates the params and returns the output shape), the finite watch, the
 * dynamic loss scaler and autotuning. The helpers the kernels are built from (chunk planners,
 * WGSL builders) are not exported.
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

export {
  activationBackward,
  activationForward,
  type ActivationKind,
  type ActivationParams,
  checkActivation,
} from "./activation.ts";
export {
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
} from "./autotune/index.ts";
export {
  batchNormBackward,
  batchNormForward,
  type BatchNormParams,
  type ChannelPartials,
  checkBatchNorm,
} from "./batchnorm/index.ts";
export type { GradSumsPartials, GradSumsSink, GradSumsSource } from "./batchnorm/grad_sums.ts";
export {
  type BnFusion,
  bnFusionMode,
  type FusionMode,
  setBnFusionMode,
} from "./batchnorm/fusion_mode.ts";
export {
  checkConv2d,
  conv2dBackward,
  type Conv2dBackwardOptions,
  conv2dForward,
  type Conv2dForwardOptions,
  type Conv2dKernelOptions,
  type Conv2dParams,
  conv2dPermuteX,
  conv2dPointwiseGroup,
  type PointwiseGroupOutput,
  type Window2d,
  type Window2dParams,
} from "./conv2d/index.ts";
export {
  type AugmentParams,
  checkAugment,
  checkPrepareBatch,
  checkResize,
  prepareBatch,
  type PrepareBatchIO,
  type PrepareBatchParams,
  type PrepareBatchShapes,
  type Range2,
  resizeBilinear,
  type ResizeParams,
} from "./data/index.ts";
export {
  checkDepthwise,
  depthwiseConv2dBackward,
  depthwiseConv2dForward,
  type DepthwiseParams,
} from "./depthwise/index.ts";
export {
  dropoutBackward,
  type DropoutBackwardParams,
  dropoutForward,
  dropoutMaskWords,
  type DropoutParams,
} from "./dropout.ts";
export {
  accumulate,
  type AccumulateParams,
  addBackwardRelu,
  addForward,
  type AddParams,
  cast,
} from "./elementwise.ts";
export {
  type ChannelSliceParams,
  checkChannelSlice,
  concatChannels,
  splitChannels,
  type SplitChannelsParams,
} from "./concat.ts";
export { createFiniteWatch, FINITE, finiteCheck, readFiniteWatch } from "./finite.ts";
export {
  checkGemm,
  gemm,
  type GemmParams,
  type GemmTuning,
  type GemmVariant,
  type StatsAxis,
  sumRows,
} from "./gemm/index.ts";
export {
  checkLossScale,
  createLossScale,
  lossScaleCheck,
  type LossScaleInfo,
  type LossScaleOptions,
  lossScaleUpdate,
  readLossScale,
} from "./loss_scale.ts";
export { checkLrn, lrnBackward, lrnForward, type LrnParams } from "./lrn.ts";
export {
  avgPool2dBackward,
  avgPool2dForward,
  checkPool2d,
  globalAvgPoolBackward,
  globalAvgPoolForward,
  type GlobalPoolParams,
  maxPool2dBackward,
  maxPool2dForward,
  type Pool2dParams,
} from "./pool/index.ts";
export { checkSgd, type SgdParams, sgdUpdate } from "./sgd.ts";
export { type AdamIo, type AdamParams, adamUpdate, checkAdam } from "./adam.ts";
export {
  accuracyCount,
  type AccuracyParams,
  checkSoftmaxCrossEntropy,
  softmaxCrossEntropy,
  type SoftmaxCrossEntropyParams,
} from "./softmax_ce/index.ts";
