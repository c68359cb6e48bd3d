/**
 * Data sets for modern-cnn: {@linkcode loadDataset} loads Fashion-MNIST, MNIST, CIFAR-10 or a
 * synthetic data set into memory as u8 images and labels (upload them once, then prepare batches
 * on the GPU with `prepareBatch` from the kernels). The parsers (`parseIdxImages`,
 * `parseIdxLabels`, `parseCifarBatch`, `readTar`) and `makeSynthetic` are pure and work in a
 * browser on fetched bytes; `locateDataset` and `loadDataset` use Deno's file system and network.
 * `pngToPlanes` decodes a PNG for prediction. Parsing is bounded: headers are checked against
 * limits before anything is allocated, and gzip is inflated as a stream that stops early.
 *
 * @example
 * ```ts
 * import { loadDataset } from "@modern-cnn/webgpu/data";
 * const train = await loadDataset("fashion-mnist", { split: "train" });
 * console.log(train.count, train.channels, train.height, train.width); // 60000 1 28 28
 * ```
 *
 * @module
 */

export * from "./cifar.ts";
export * from "./dataset.ts";
export * from "./idx.ts";
export * from "./image.ts";
export * from "./locate.ts";
export * from "./synthetic.ts";
