/**
 * The data a `Trainer` takes: an image-classification set as bytes, uploaded to the GPU
 * once ({@linkcode uploadImageSet}), and the seeded permutation that shuffles each epoch.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/mod.ts";

/** A data set as the trainer takes it: images `[count, channels, h, w]` as bytes, labels bytes. */
export interface ImageSet {
  /** Pixels, `count·channels·height·width` bytes. */
  readonly images: Uint8Array;
  /** Labels, `count` bytes. */
  readonly labels: Uint8Array;
  /** Examples. */
  readonly count: number;
  /** Channels. */
  readonly channels: number;
  /** Height. */
  readonly height: number;
  /** Width. */
  readonly width: number;
}

/** A data set uploaded to the GPU once. */
export interface GpuImageSet {
  /** u8 pixels. */
  readonly images: Tensor;
  /** u8 labels. */
  readonly labels: Tensor;
  /** Examples. */
  readonly count: number;
  /** Channels. */
  readonly channels: number;
  /** Height. */
  readonly height: number;
  /** Width. */
  readonly width: number;
}

/**
 * Uploads a data set to the GPU (once; batches are gathered from it on the GPU).
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { uploadImageSet } from "@modern-cnn/webgpu/models";
 * const gpu = await getGpu();
 * const set = uploadImageSet(gpu, { images: new Uint8Array(2 * 28 * 28), labels: new Uint8Array(2), count: 2, channels: 1, height: 28, width: 28 });
 * ```
 */
export function uploadImageSet(gpu: Gpu, set: ImageSet): GpuImageSet {
  const expected = set.count * set.channels * set.height * set.width;
  if (set.images.length !== expected || set.labels.length !== set.count) {
    throw new TypeError(
      `uploadImageSet: ${set.images.length} pixel bytes and ${set.labels.length} labels do not fit ` +
        `${set.count} images of ${set.channels}x${set.height}x${set.width}`,
    );
  }
  return {
    images: gpu.tensor(set.images, { shape: [set.count, set.channels, set.height, set.width] }),
    labels: gpu.tensor(set.labels, { shape: [set.count] }),
    count: set.count,
    channels: set.channels,
    height: set.height,
    width: set.width,
  };
}

/**
 * A seeded permutation of `0..n-1` (Fisher-Yates over a SplitMix32 stream).
 *
 * @example
 * ```ts
 * import { permutation } from "./image_set.ts";
 * permutation(5, 1); // e.g. Uint32Array [3, 0, 4, 1, 2]
 * ```
 */
export function permutation(n: number, seed: number): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  let state = (seed ^ 0x2545f491) >>> 0;
  for (let i = n - 1; i > 0; i--) {
    let z = (state = (state + 0x9e3779b9) >>> 0);
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    z = (z ^ (z >>> 16)) >>> 0;
    const j = Math.floor((z / 4294967296) * (i + 1));
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}
