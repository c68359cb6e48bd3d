/**
 * modern-cnn: the classic convolutional networks (LeNet, AlexNet, VGG, NiN, GoogLeNet, ResNet,
 * DenseNet, MobileNet) trained end to end with hand-written WGSL kernels on any WebGPU device.
 *
 * The subpaths hold the parts: `./gpu` (runtime and tensors), `./kernels`, `./layers`,
 * `./models` (architectures, checkpoints, trainer) and `./data` (data sets).
 *
 * @example
 * ```ts
 * import { createModel, getGpu } from "@modern-cnn/webgpu";
 * const gpu = await getGpu();
 * const model = createModel(gpu, { name: "lenet" });
 * console.log(model.parameterCount); // 61706
 * ```
 *
 * @module
 */

export * from "./gpu/mod.ts";
export * from "./kernels/mod.ts";
export * from "./layers/mod.ts";
export * from "./models/mod.ts";
export * from "./data/mod.ts";
