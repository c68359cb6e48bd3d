/**
 * The model zoo: every architecture of the seed documents, materialized on the GPU with d2l's
 * initialization and PyTorch-compatible state dicts and safetensors checkpoints, the
 * {@linkcode Trainer}, precisions and summaries.
 *
 * @example
 * ```ts
 * import { buildArchitecture, countParameters } from "@modern-cnn/webgpu/models";
 * console.log(countParameters(buildArchitecture("resnet"))); // 11178378
 * ```
 *
 * @module
 */

export {
  type Architecture,
  buildArchitecture,
  DEFAULTS,
  MODEL_NAMES,
  type ModelName,
  type ModelOptions,
  type Recipe,
} from "./zoo.ts";
export {
  createModel,
  type CreateModelOptions,
  isPrecision,
  Model,
  type Precision,
  PRECISIONS,
  precisionUnsupported,
} from "./model.ts";
export { customArchitecture, type CustomModelSpec } from "./custom.ts";
export {
  type ImageBitmapLike,
  type ImageDataLike,
  type ImagePlanes,
  predict,
  predictAll,
  type PredictAllOptions,
  type PredictAllResult,
  type PredictImage,
  type PredictInput,
  type Prediction,
  type PredictOptions,
  type TopClass,
} from "./predict.ts";
export { type AdamMoments, type ArenaSlot, ParamArena } from "./arena.ts";
export {
  decodeSafetensors,
  encodeSafetensors,
  type HostStateDict,
  type HostTensor,
  SafetensorsError,
} from "./safetensors.ts";
export {
  countParameters,
  formatSummary,
  summarize,
  type SummarizeOptions,
  type Summary,
  type SummaryMemory,
  type SummaryRow,
} from "./summary.ts";
export {
  DivergenceError,
  type EpochResult,
  type GpuImageSet,
  type ImageSet,
  NonFiniteError,
  Trainer,
  type TrainerOptions,
  uploadImageSet,
} from "./trainer.ts";
export {
  EarlyStopping,
  type EarlyStoppingOptions,
  type EpochMetrics,
  type FitOptions,
  type FitResult,
  type FitState,
  type Monitor,
  type RunningMetrics,
  type TrainEpochOptions,
} from "./fit.ts";
export { checkSchedule, type LrSchedule, type Schedule, scheduleLr } from "./schedule.ts";
