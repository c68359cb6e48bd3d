/**
 * Functional layers with manual backward passes, and their compositions: every layer and block
 * the models are built from, the layer protocol ({@linkcode Layer}, {@linkcode Ctx},
 * {@linkcode Param}, ...) and the helpers for writing a layer ({@linkcode leaf},
 * {@linkcode composite}, {@linkcode param}, {@linkcode weightFor}, {@linkcode release}).
 *
 * @example
 * ```ts
 * import { sequential, conv2d, activation, avgPool2d } from "@modern-cnn/webgpu/layers";
 * const features = sequential([
 *   conv2d({ inChannels: 1, outChannels: 6, kernel: 5, padding: 2 }),
 *   activation("sigmoid"),
 *   avgPool2d({ kernel: 2 }),
 * ]);
 * console.log(features.outputShape([1, 1, 28, 28])); // [1, 6, 14, 14]
 * ```
 *
 * @module
 */

export {
  type BackwardOptions,
  composite,
  type CompositeSpec,
  type Counter,
  type Ctx,
  type Epilogue,
  type Forward,
  type Fusion,
  type InitKind,
  type Into,
  type Layer,
  leaf,
  type LeafSpec,
  namedParams,
  type OwnState,
  type Param,
  param,
  type Pointwise,
  release,
  type StateBuffer,
  stateEntries,
  type StateEntry,
  type StatsSink,
  type TraceStep,
  weightFor,
} from "./layer.ts";
export type { GradSumsSink, GradSumsSource } from "../kernels/batchnorm/grad_sums.ts";
export { conv2d, type Conv2dOptions, type ConvCache, linear, type LinearOptions } from "./conv.ts";
export { activation, dropout, type EpilogueActivation, flatten } from "./elementwise.ts";
export { avgPool2d, globalAvgPool, maxPool2d, type Pool2dOptions } from "./pool.ts";
export { batchNorm, type BnCache, localResponseNorm } from "./norm.ts";
export { type ConcatCache, type MergedCache } from "./concat.ts";
export {
  chain,
  type ChainCache,
  denseBlock,
  type DenseBlockCache,
  denseConvBlock,
  inception,
  type InceptionCache,
  residual,
  sequential,
} from "./compose.ts";
