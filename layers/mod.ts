/**
 * Functional layers with manual backward passes, and their compositions.
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

export * from "./layer.ts";
export * from "./basic.ts";
export * from "./compose.ts";
