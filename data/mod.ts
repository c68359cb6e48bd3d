/**
 * Data sets for modern-cnn: {@linkcode loadDataset} loads Fashion-MNIST, MNIST, CIFAR-10 or a
 * synthetic data set into memory as u8 images and labels (upload them once, then prepare batches
 * on the GPU with `prepareBatch` from the kernels). The parsers (`parseIdxImages`,
 * `parseIdxLabels`, `parseCifarBatch`, `readTar`) and `makeSynthetic` are pure and work in a
 * browser on fetched bytes; `locateDataset` and `loadDataset` use Deno's file system and network.
 * `decodeImage` decodes a PNG or JPEG into planes; `loadImageFolder` (or `loadDataset("folder:PATH")`)
 * loads an image folder, one subfolder of PNG or JPEG images per class. Parsing is bounded: headers are checked against
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

export { type CifarBatch, parseCifarBatch, readTar } from "./cifar.ts";
export {
  CIFAR10_CLASSES,
  type Dataset,
  type DatasetName,
  FASHION_MNIST_CLASSES,
  loadDataset,
  type LoadDatasetOptions,
  MNIST_CLASSES,
} from "./dataset.ts";
export {
  DataFormatError,
  IDX_LIMITS,
  type IdxImages,
  type IdxLimits,
  type IdxParseOptions,
  parseIdxImages,
  parseIdxLabels,
  type ParseOptions,
} from "./idx.ts";
export {
  type DecodedImage,
  decodeImage,
  ImageDecodeError,
  type ImageOptions,
  type ImageSize,
  imageSize,
  type PngOptions,
  pngSize,
  pngToPlanes,
} from "./image.ts";
export {
  type ImageFolderOptions,
  loadImageFolder,
  type LoadImageFolderOptions,
} from "./image_folder.ts";
export {
  DatasetNotFoundError,
  type DataSource,
  type DownloadOptions,
  type FileDatasetName,
  locateDataset,
  type LocatedFiles,
  type LocateOptions,
  type Split,
} from "./locate.ts";
export { makeSynthetic, type SyntheticOptions } from "./synthetic.ts";
