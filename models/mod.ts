/**
 * The model zoo: every architecture of the seed documents, materialized on the GPU with d2l's
 * initialization and PyTorch-compatible state dicts and safetensors checkpoints.
 *
 * @example
 * ```ts
 * import { buildArchitecture, countParameters } from "@modern-cnn/webgpu/models";
 * console.log(countParameters(buildArchitecture("resnet"))); // 11178378
 * ```
 *
 * @module
 */

export * from "./zoo.ts";
export * from "./model.ts";
export * from "./safetensors.ts";
export * from "./summary.ts";

export * from "./trainer.ts";
