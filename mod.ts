/**
 * modern-cnn: the classic convolutional networks (LeNet, AlexNet, VGG, NiN, GoogLeNet, ResNet,
 * DenseNet, MobileNet) trained end to end with hand-written WGSL kernels on any WebGPU device.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu";
 * const gpu = await getGpu();
 * console.log(gpu.description);
 * ```
 *
 * @module
 */

export * from "./gpu/mod.ts";
