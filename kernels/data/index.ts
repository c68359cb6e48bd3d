/**
 * Data kernels: {@linkcode prepareBatch} turns a dataset resident on the GPU (u8 images and
 * labels) into a training batch in one dispatch — gather by index, optional augmentation
 * ({@linkcode AugmentParams}: torchvision's RandomCrop with padding, RandomResizedCrop,
 * RandomHorizontalFlip and RandomAffine), bilinear resampling and normalization — and
 * {@linkcode resizeBilinear} resizes f32 or f16 images. Float outputs may be f32 or f16: values
 * are computed in f32 and rounded once on store.
 *
 * Resizing is exactly `torch.nn.functional.interpolate(x, size, mode="bilinear",
 * align_corners=False)` (no antialias) applied to the `u8 / 255` image: the source coordinate of
 * output pixel `o` is `max((o + 0.5) * in / out - 0.5, 0)`, interpolated between its floor and
 * the next pixel (clamped at the border).
 *
 * Augmentation is one affine map per example and one resampling. The example's draws give a
 * view (a `h x w` box of the image zero-padded by `cropPadding`: the padded crop, then the
 * resized-crop box inside it), a flip, and RandomAffine's rotation, shift, zoom and shear about
 * the output's centre. Composed, they map output pixel centre `u = (ox + 0.5, oy + 0.5)` to
 * view pixel coordinates `r = M u + m` (a 2x3 matrix, the `-0.5` of the rule above included),
 * and view pixel `(vy, vx)` is image pixel `(vy + top, vx + left)`: the torchvision pipeline
 * `RandomCrop(padding) -> RandomResizedCrop -> RandomHorizontalFlip -> Resize -> RandomAffine`
 * with a single bilinear interpolation. The taps are clamped to the view as in the resize above
 * and read zero outside the image; where RandomAffine moves `r` out of the view
 * (`[-0.5, size - 0.5]`) the value falls linearly to zero at `-1` and `size` (its zero fill;
 * a whole-pixel shift gives exact zeros, as `grid_sample`'s). Without
 * RandomAffine the map is a scale, a mirror and an integer offset, and the result is the resize
 * of the cropped, flipped view, as before the affine form (bit for bit without a flip; within a
 * few f32 ulps of the coordinate with one, see tests/data_kernels_test.ts).
 *
 * The random draws are counter-based: every draw of an example is a hash of `(seed, example
 * index, draw number)`, made on the GPU (no upload per step, no readback), so the same seed and
 * example index give the same augmentation in any batch position, batch size or order. Pass a
 * new seed per epoch (e.g. `runSeed * 1000 + epoch`) for fresh augmentations.
 *
 * Outputs larger than one storage binding (e.g. a batch of 256 RGB images at 224x224, 154 MB) are
 * written in ranges of whole images, one dispatch per range. No kernel here loops more than a few
 * dozen times per thread (the channels, torchvision's 10 crop tries).
 *
 * The folder: this module (the public names), `augment.ts` (the augmentation's record and
 * check), `prepare_batch.ts` (prepareBatch's params, checks and host code) with its kernel in
 * `prepare_batch_kernel.ts`, and `resize.ts`.
 *
 * @module
 */

export { type AugmentParams, checkAugment, type Range2 } from "./augment.ts";
export {
  checkPrepareBatch,
  prepareBatch,
  type PrepareBatchIO,
  type PrepareBatchParams,
  type PrepareBatchShapes,
} from "./prepare_batch.ts";
export { checkResize, resizeBilinear, type ResizeParams } from "./resize.ts";
