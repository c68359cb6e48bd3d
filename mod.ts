/**
 * modern-cnn: the classic convolutional networks (LeNet, AlexNet, VGG, NiN, GoogLeNet, ResNet,
 * DenseNet, MobileNet) trained end to end with hand-written WGSL kernels on any WebGPU device.
 *
 * The package root is the user API: acquiring a GPU ({@linkcode getGpu}), tensors, the layers a
 * model is composed of, the model zoo ({@linkcode createModel}), the {@linkcode Trainer}, data
 * sets ({@linkcode loadDataset}), safetensors checkpoints, PNG and JPEG decoding, autotuning
 * and the errors all of these throw. The subpaths hold more of each part: `./gpu` (the runtime,
 * including what a custom kernel dispatches with), `./kernels` (every kernel with its params and
 * check function, for writing layers), `./layers` (every layer, block and the layer protocol's
 * types), `./models` (architectures, precisions, summaries) and `./data` (locating data sets and
 * the IDX, CIFAR and tar parsers). Modules not reachable from these entry points are not API.
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

// The GPU: acquisition, the runtime, tensors and its errors.
export {
  DeviceLostError,
  type DType,
  getGpu,
  type Gpu,
  GpuValidationError,
  KernelCompileError,
  NoAdapterError,
  requestGpu,
  type RequestGpuOptions,
  type Shape,
  shutdownGpu,
  Tensor,
} from "./gpu/mod.ts";

// Layers to compose a model from.
export {
  activation,
  avgPool2d,
  batchNorm,
  conv2d,
  type Ctx,
  dropout,
  flatten,
  globalAvgPool,
  type Layer,
  linear,
  localResponseNorm,
  maxPool2d,
  residual,
  sequential,
} from "./layers/mod.ts";

// Models, training and checkpoints.
export {
  type Architecture,
  buildArchitecture,
  createModel,
  type CreateModelOptions,
  decodeSafetensors,
  DEFAULTS,
  DivergenceError,
  encodeSafetensors,
  type EpochResult,
  formatSummary,
  type GpuImageSet,
  type HostStateDict,
  type HostTensor,
  type ImageBitmapLike,
  type ImageDataLike,
  type ImagePlanes,
  type ImageSet,
  Model,
  MODEL_NAMES,
  type ModelName,
  NonFiniteError,
  type Precision,
  predict,
  predictAll,
  type PredictAllOptions,
  type PredictAllResult,
  type PredictImage,
  type PredictInput,
  type Prediction,
  type PredictOptions,
  SafetensorsError,
  summarize,
  type TopClass,
  Trainer,
  type TrainerOptions,
  uploadImageSet,
} from "./models/mod.ts";

// Data sets and images.
export {
  CIFAR10_CLASSES,
  DataFormatError,
  type Dataset,
  type DatasetName,
  DatasetNotFoundError,
  decodeImage,
  FASHION_MNIST_CLASSES,
  ImageDecodeError,
  loadDataset,
  type LoadDatasetOptions,
  makeSynthetic,
  MNIST_CLASSES,
  pngToPlanes,
} from "./data/mod.ts";

// Autotuning: time kernel variants on this adapter and keep the faster ones.
export {
  autotune,
  defaultTuningCachePath,
  loadTuningCache,
  saveTuningCache,
} from "./kernels/mod.ts";
