/**
 * {@linkcode AugmentParams}: the augmentation of `prepareBatch` as one record (torchvision's
 * `RandomCrop(padding)`, `RandomResizedCrop`, `RandomHorizontalFlip`, `RandomAffine`), and its
 * pure check {@linkcode checkAugment}. The kernel turns each example's draws into one 2x3 affine
 * matrix from output pixels to source pixels (see `index.ts`).
 *
 * @module
 */

/** A `[lo, hi]` range. */
export type Range2 = readonly [number, number];

/**
 * The augmentation of `prepareBatch` (every field optional; none: no augmentation).
 * Applied in torchvision's usual order: crop with padding, resized crop, flip, then the random
 * affine map about the output's centre; all of it is one affine map and one bilinear resampling.
 */
export interface AugmentParams {
  /** `RandomHorizontalFlip(p=0.5)`: mirror the view with probability 1/2; default false. */
  readonly flip?: boolean;
  /**
   * `RandomCrop(size, padding)`: a crop of the stored size from the image zero-padded by this
   * many pixels on every side (an integer >= 0); default 0 (off).
   */
  readonly cropPadding?: number;
  /**
   * `RandomResizedCrop(scale, ratio)`: up to 10 tries of an area fraction uniform in `scale` and
   * an aspect ratio log-uniform in `ratio`, then a centre-crop fallback; taken from the (padded
   * and cropped) stored image, then resized to the output size.
   */
  readonly resizedCrop?: { readonly scale: Range2; readonly ratio: Range2 };
  /** `RandomAffine(degrees=rotate)`: a rotation uniform in `[-rotate, rotate]` degrees (<= 180). */
  readonly rotate?: number;
  /**
   * `RandomAffine(translate=(a, b))`: a shift uniform in `[-a * width, a * width]` and
   * `[-b * height, b * height]` output pixels, rounded to whole pixels; `a`, `b` in [0, 1].
   */
  readonly translate?: Range2;
  /** `RandomAffine(scale=(lo, hi))`: a zoom uniform in `[lo, hi]`, `0 < lo <= hi`. */
  readonly scale?: Range2;
  /** `RandomAffine(shear=s)`: an x shear uniform in `[-s, s]` degrees, `0 <= s < 90`. */
  readonly shear?: number;
}

const isPair = (v: unknown): v is Range2 =>
  Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === "number");

/**
 * Validates {@linkcode AugmentParams}: TypeError for a field of the wrong type, RangeError for a
 * value out of range, each one line naming `op` and the field.
 *
 * @example
 * ```ts
 * import { checkAugment } from "@modern-cnn/webgpu/kernels";
 * checkAugment({ flip: true, rotate: 15, scale: [0.9, 1.1] }); // fine
 * ```
 */
export function checkAugment(a: AugmentParams, op = "prepareBatch"): void {
  if (typeof a !== "object" || a === null || Array.isArray(a)) {
    throw new TypeError(`${op}: augment must be an object, got ${JSON.stringify(a)}`);
  }
  const pair = (
    name: string,
    v: unknown,
    ok: (lo: number, hi: number) => boolean,
    want: string,
  ) => {
    if (!isPair(v)) {
      throw new TypeError(`${op}: augment.${name} must be [lo, hi], got ${JSON.stringify(v)}`);
    }
    if (!(Number.isFinite(v[0]) && Number.isFinite(v[1]) && ok(v[0], v[1]))) {
      throw new RangeError(`${op}: augment.${name} must be ${want}, got ${JSON.stringify(v)}`);
    }
  };
  const num = (name: string, v: unknown, ok: (x: number) => boolean, want: string) => {
    if (typeof v !== "number") {
      throw new TypeError(`${op}: augment.${name} must be a number, got ${JSON.stringify(v)}`);
    }
    if (!(Number.isFinite(v) && ok(v))) {
      throw new RangeError(`${op}: augment.${name} must be ${want}, got ${v}`);
    }
  };
  if (a.flip !== undefined && typeof a.flip !== "boolean") {
    throw new TypeError(`${op}: augment.flip must be true or false, got ${JSON.stringify(a.flip)}`);
  }
  if (a.cropPadding !== undefined) {
    num("cropPadding", a.cropPadding, Number.isInteger, "an integer >= 0");
    if (a.cropPadding < 0) {
      throw new RangeError(
        `${op}: augment.cropPadding must be an integer >= 0, got ${a.cropPadding}`,
      );
    }
  }
  if (a.resizedCrop !== undefined) {
    if (typeof a.resizedCrop !== "object" || a.resizedCrop === null) {
      throw new TypeError(
        `${op}: augment.resizedCrop must be { scale, ratio }, got ${JSON.stringify(a.resizedCrop)}`,
      );
    }
    const positive = (lo: number, hi: number) => lo > 0 && lo <= hi;
    pair("resizedCrop.scale", a.resizedCrop.scale, positive, "[lo, hi] with 0 < lo <= hi");
    pair("resizedCrop.ratio", a.resizedCrop.ratio, positive, "[lo, hi] with 0 < lo <= hi");
  }
  if (a.rotate !== undefined) num("rotate", a.rotate, (x) => x >= 0 && x <= 180, "in [0, 180]");
  if (a.translate !== undefined) {
    const frac = (x: number, y: number) => x >= 0 && x <= 1 && y >= 0 && y <= 1;
    pair("translate", a.translate, frac, "[a, b] with a and b in [0, 1]");
  }
  if (a.scale !== undefined) {
    pair("scale", a.scale, (lo, hi) => lo > 0 && lo <= hi, "[lo, hi] with 0 < lo <= hi");
  }
  if (a.shear !== undefined) num("shear", a.shear, (x) => x >= 0 && x < 90, "in [0, 90)");
}

/** Whether `a` draws a `RandomAffine` map (rotation, translation, zoom or shear). */
export function _hasAffine(a: AugmentParams | undefined): boolean {
  return a !== undefined &&
    ((a.rotate ?? 0) > 0 || a.translate !== undefined || a.scale !== undefined ||
      (a.shear ?? 0) > 0);
}
