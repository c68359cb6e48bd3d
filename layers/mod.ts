/**
 * Functional layers with manual backward passes, and their compositions: every layer and block
 * the models are built from, the layer protocol ({@linkcode Layer}, {@linkcode Ctx},
 * {@linkcode Param}, ...) and the helpers for writing a layer ({@linkcode param},
 * {@linkcode weightFor}, {@linkcode release}).
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
  type Counter,
  type Ctx,
  type Forward,
  type InitKind,
  type Into,
  type Layer,
  namedParams,
  type Param,
  param,
  release,
  type StateBuffer,
  stateEntries,
  type StateEntry,
  weightFor,
} from "./layer.ts";
export {
  activation,
  avgPool2d,
  batchNorm,
  type BnCache,
  conv2d,
  type Conv2dOptions,
  type ConvCache,
  dropout,
  flatten,
  globalAvgPool,
  linear,
  type LinearOptions,
  localResponseNorm,
  maxPool2d,
  type Pool2dOptions,
} from "./basic.ts";
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
