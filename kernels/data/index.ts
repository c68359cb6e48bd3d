/**
 * Data kernels: {@linkcode prepareBatch} turns a dataset resident on the GPU (u8 images and
 * labels) into a training batch in one dispatch — gather by index, optional augmentation
 * (random crop with zero padding, RandomResizedCrop-style crop, horizontal flip), bilinear
 * resize and normalization — and {@linkcode resizeBilinear} resizes f32 or f16 images. Float
 * outputs may be f32 or f16: values are computed in f32 and rounded once on store.
 *
 * Resizing is exactly `torch.nn.functional.interpolate(x, size, mode="bilinear",
 * align_corners=False)` (no antialias) applied to the `u8 / 255` image: the source coordinate of
 * output pixel `o` is `max((o + 0.5) * in / out - 0.5, 0)`, interpolated between its floor and
 * the next pixel (clamped at the border).
 *
 * Augmentation is counter-based: every random draw of an example is a hash of `(seed, example
 * index, draw number)`, so the same seed and example index give the same augmentation in any
 * batch position, batch size or order. Pass a new seed per epoch (e.g. `runSeed * 1000 + epoch`)
 * for fresh augmentations.
 *
 * Outputs larger than one storage binding (e.g. a batch of 256 RGB images at 224x224, 154 MB) are
 * written in ranges of whole images, one dispatch per range. No kernel here loops more than a few
 * dozen times per thread (the channels, torchvision's 10 crop tries).
 *
 * The folder: this module (the public names), `prepare_batch.ts` (prepareBatch's params, checks
 * and host code) with its kernel in `prepare_batch_kernel.ts`, and `resize.ts`.
 *
 * @module
 */

export {
  checkPrepareBatch,
  prepareBatch,
  type PrepareBatchIO,
  type PrepareBatchParams,
  type PrepareBatchShapes,
} from "./prepare_batch.ts";
export { checkResize, resizeBilinear, type ResizeParams } from "./resize.ts";
