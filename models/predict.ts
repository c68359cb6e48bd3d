/**
 * Inference in one call: {@linkcode predict} (also `model.predict`) takes images as users hold
 * them (u8 or f32 planes with their shape, browser `ImageData`/`ImageBitmap`, encoded PNG or JPEG
 * bytes),
 * converts them to the model's channels on the host, then resizes and normalizes them on the GPU
 * as the model was trained and runs the forward pass in evaluation mode, in chunks of
 * `batchSize`, with one readback per call; it returns each image's probabilities and top-k
 * classes. {@linkcode predictAll} does the same for a whole {@linkcode GpuImageSet} (what
 * `deno task eval` uses).
 *
 * @module
 */

import type { Tensor } from "../gpu/mod.ts";
import { prepareBatch, resizeBilinear } from "../kernels/data/index.ts";
import { cast } from "../kernels/elementwise.ts";
import { NonFiniteError } from "./errors.ts";
import type { GpuImageSet } from "./image_set.ts";
import type { Model } from "./model.ts";
import { imageSources, type PredictInput } from "./image_input.ts";

export type {
  ImageBitmapLike,
  ImageDataLike,
  ImagePlanes,
  PredictImage,
  PredictInput,
} from "./image_input.ts";

/** Options of {@linkcode predict}. */
export interface PredictOptions {
  /** How many classes to return per image, best first: an integer in 1..classes; default 5 (or classes when fewer). */
  readonly topK?: number;
  /** Class names, one per class (e.g. `FASHION_MNIST_CLASSES`); default the indices as strings. */
  readonly classes?: readonly string[];
  /**
   * The (square) input size the model was trained at (a checkpoint's `resize` metadata); default
   * the model's input shape (the zoo: its seed recipe's resize).
   */
  readonly resize?: number;
  /** Images per forward pass; default 64. More images are predicted in chunks of this many. */
  readonly batchSize?: number;
  /** Per-channel mean subtracted after `/255`, as the trainer's `mean` (needs `std`). */
  readonly mean?: readonly number[];
  /** Per-channel standard deviation, as the trainer's `std`. */
  readonly std?: readonly number[];
  /** Invert the levels (255 - v), for light-on-dark models fed dark-on-light pictures. */
  readonly invert?: boolean;
  /** A name per image (e.g. its file) for error messages; default `image 0`, `image 1`, .... */
  readonly imageNames?: readonly string[];
}

/** One of the top-k classes of an image. */
export interface TopClass {
  /** The class index. */
  readonly index: number;
  /** Its name (from `classes`, else the index as a string). */
  readonly name: string;
  /** Its probability (softmax of the logits). */
  readonly probability: number;
}

/** What {@linkcode predict} returns per image. */
export interface Prediction {
  /** The logits, one per class. */
  readonly logits: Float32Array;
  /** The softmax of the logits, one per class. */
  readonly probabilities: Float32Array;
  /** The `topK` most probable classes, most probable first (ties: lower index first). */
  readonly top: readonly TopClass[];
}

/** Options of {@linkcode predictAll}. */
export interface PredictAllOptions {
  /** The (square) input size; default the model's input shape. */
  readonly resize?: number;
  /** Examples per forward pass; default 256. */
  readonly batchSize?: number;
  /** Per-channel mean subtracted after `/255` (needs `std`). */
  readonly mean?: readonly number[];
  /** Per-channel standard deviation. */
  readonly std?: readonly number[];
}

/** What {@linkcode predictAll} returns. */
export interface PredictAllResult {
  /** The logits `[count, classes]`, row-major. */
  readonly logits: Float32Array;
  /** The predicted (arg-max) class of every example, in order. */
  readonly predicted: Int32Array;
}

/** An image converted on the host: the model's channels, u8 or f32 planes. */
const DEFAULT_BATCH = 64;
const DEFAULT_TOP_K = 5;

function _checkSize(op: string, model: Model, resize: number | undefined): [number, number] {
  if (resize === undefined) return [model.arch.inputShape[1], model.arch.inputShape[2]];
  if (!Number.isInteger(resize) || resize < 1) {
    throw new RangeError(`${op}: resize must be an integer >= 1, got ${resize}`);
  }
  return [resize, resize];
}

function _checkBatch(op: string, batchSize: number | undefined, fallback: number): number {
  const b = batchSize ?? fallback;
  if (!Number.isInteger(b) || b < 1) {
    throw new RangeError(`${op}: batchSize must be an integer >= 1, got ${batchSize}`);
  }
  return b;
}

function _checkNorm(
  op: string,
  channels: number,
  mean?: readonly number[],
  std?: readonly number[],
) {
  if ((mean === undefined) !== (std === undefined)) {
    throw new RangeError(`${op}: mean and std must be given together`);
  }
  if (mean && std) {
    if (mean.length !== channels || std.length !== channels) {
      throw new RangeError(
        `${op}: mean and std need one value per channel (${channels}), got ${mean.length} and ` +
          `${std.length}`,
      );
    }
    if (std.some((v) => !(v > 0) || !Number.isFinite(v)) || mean.some((v) => !Number.isFinite(v))) {
      throw new RangeError(`${op}: mean must be finite and std finite and > 0`);
    }
  }
}

/**
 * Runs the forward pass over `n` images in chunks of `batchSize`; `fill` writes each chunk's
 * input `x [b, C, H, W]` (rows `start..start+b`). The logits of all chunks are gathered in one
 * f32 tensor on the GPU and read back once.
 */
async function _logits(
  model: Model,
  n: number,
  size: [number, number],
  batchSize: number,
  fill: (x: Tensor, start: number, count: number) => void,
): Promise<Float32Array> {
  const gpu = model.gpu;
  const classes = model.arch.numClasses;
  const logits = gpu.empty([n, classes]);
  try {
    for (let s = 0; s < n; s += batchSize) {
      const b = Math.min(batchSize, n - s);
      gpu.scope(() => {
        const x = gpu.empty([b, model.arch.inChannels, size[0], size[1]], {
          dtype: model.precision,
        });
        fill(x, s, b);
        let { y } = model.forward(x, { gpu, training: false, seed: 0 });
        if (y.dtype !== "f32") {
          const y32 = gpu.empty(y.shape);
          cast({ y: y32, x: y });
          y = y32;
        }
        gpu.copy(y, logits, { dstOffset: s * classes * 4, bytes: b * classes * 4 });
      });
      gpu.flush();
    }
    return await logits.toArray() as Float32Array;
  } finally {
    logits.dispose();
  }
}

/**
 * The logits and predicted class of every example of a data set resident on the GPU, in order,
 * in evaluation mode: batches gathered, resized and normalized on the GPU as in training, one
 * readback for the whole set. This is what `deno task eval` runs.
 *
 * @throws {NonFiniteError} when an output is Inf or NaN (the weights are not usable).
 * @throws {RangeError} for a bad `resize`, `batchSize`, `mean` or `std`.
 * @throws {TypeError} when the set's channels are not the model's.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { createModel, predictAll, uploadImageSet } from "@modern-cnn/webgpu/models";
 * const gpu = await getGpu();
 * const model = createModel(gpu, { name: "lenet" });
 * const set = uploadImageSet(gpu, {
 *   images: new Uint8Array(3 * 28 * 28), labels: new Uint8Array(3), count: 3, channels: 1, height: 28, width: 28,
 * });
 * const { logits, predicted } = await predictAll(model, set);
 * console.log(logits.length, predicted.length); // 30 3
 * ```
 */
export async function predictAll(
  model: Model,
  set: GpuImageSet,
  options: PredictAllOptions = {},
): Promise<PredictAllResult> {
  const op = "predictAll";
  const size = _checkSize(op, model, options.resize);
  const batchSize = _checkBatch(op, options.batchSize, 256);
  _checkNorm(op, set.channels, options.mean, options.std);
  if (set.channels !== model.arch.inChannels) {
    throw new TypeError(
      `${op}: the set has ${set.channels} channels, ${model.arch.name} takes ` +
        `${model.arch.inChannels}`,
    );
  }
  const gpu = model.gpu;
  const n = set.count;
  const classes = model.arch.numClasses;
  if (n === 0) return { logits: new Float32Array(0), predicted: new Int32Array(0) };
  const order = gpu.tensor(Uint32Array.from({ length: n }, (_, i) => i), { shape: [n] });
  let all: Float32Array;
  try {
    all = await _logits(model, n, size, batchSize, (x, start, b) => {
      const indices = gpu.empty([b], { dtype: "u32" });
      gpu.copy(order, indices, { srcOffset: start * 4, bytes: b * 4 });
      const labels = gpu.empty([b], { dtype: "i32" });
      prepareBatch({ x, labels, images: set.images, srcLabels: set.labels, indices }, {
        batch: b,
        channels: set.channels,
        srcH: set.height,
        srcW: set.width,
        dstH: size[0],
        dstW: size[1],
        mean: options.mean,
        std: options.std,
      });
    });
  } finally {
    order.dispose();
  }
  const bad = all.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) {
    throw new NonFiniteError(
      `the model's outputs are Inf or NaN (example ${Math.floor(bad / classes)}): its weights ` +
        "are not finite or too large",
    );
  }
  const predicted = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (all[i * classes + c] > all[i * classes + best]) best = c;
    predicted[i] = best;
  }
  return { logits: all, predicted };
}

/**
 * Predicts the classes of images in evaluation mode (also `model.predict(images, options)`).
 * Each image is converted on the host to the model's channels (gray by luma, 0.299 R + 0.587 G
 * + 0.114 B, or gray replicated to RGB; alpha composited over black), then resized bilinearly to
 * the size the model was trained at and normalized (`/255`, then `mean`/`std` if given) on the
 * GPU, exactly as the trainer prepares a batch; the forward pass runs in chunks of `batchSize`
 * and all logits are read back once (one readback per call). Images of any size may be mixed.
 *
 * @throws {TypeError} for an empty list, something that is not an image, planes whose shape or
 * length is wrong, or a channel count the model cannot take (it takes its own, 1 or 3).
 * @throws {RangeError} for `topK` outside 1..classes, a bad `resize` or `batchSize`, or class
 * names that are not one per class.
 * @throws {ImageDecodeError} for encoded bytes that are not a readable PNG or JPEG (named by
 * `imageNames`).
 * @throws {NonFiniteError} when the model's outputs are Inf or NaN.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { createModel, predict } from "@modern-cnn/webgpu/models";
 * const gpu = await getGpu();
 * const model = createModel(gpu, { name: "lenet" });
 * const gray = { data: new Uint8Array(28 * 28).fill(128), shape: [1, 28, 28] };
 * const [p] = await predict(model, [gray], { topK: 2, classes: ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"] });
 * console.log(p.probabilities.length, p.top.length); // 10 2
 * ```
 */
export async function predict(
  model: Model,
  images: PredictInput,
  options: PredictOptions = {},
): Promise<Prediction[]> {
  const op = `${model.arch.name}.predict`;
  const classes = model.arch.numClasses;
  const topK = options.topK ?? Math.min(DEFAULT_TOP_K, classes);
  if (!Number.isInteger(topK) || topK < 1 || topK > classes) {
    throw new RangeError(`${op}: topK must be an integer in 1..${classes}, got ${topK}`);
  }
  if (options.classes !== undefined && options.classes.length !== classes) {
    throw new RangeError(
      `${op}: ${options.classes.length} class names for ${classes} classes (give one per class)`,
    );
  }
  const size = _checkSize(op, model, options.resize);
  const batchSize = _checkBatch(op, options.batchSize, DEFAULT_BATCH);
  const channels = model.arch.inChannels;
  _checkNorm(op, channels, options.mean, options.std);
  const sources = imageSources(op, model, images, {
    invert: options.invert === true,
    names: options.imageNames,
    mean: options.mean,
    std: options.std,
  });
  const n = sources.length;
  const gpu = model.gpu;
  const all = await _logits(model, n, size, batchSize, (x, start, b) => {
    // The chunk's images, grouped by type and size: one upload and one dispatch per group.
    const groups = new Map<string, number[]>();
    for (let r = 0; r < b; r++) {
      const s = sources[start + r];
      const key = `${s.data instanceof Uint8Array ? "u8" : "f32"} ${s.height}x${s.width}`;
      const rows = groups.get(key) ?? [];
      rows.push(r);
      groups.set(key, rows);
    }
    const rowElems = channels * size[0] * size[1];
    const rowBytes = rowElems * (x.dtype === "f16" ? 2 : 4);
    for (const rows of groups.values()) {
      const k = rows.length;
      const first = sources[start + rows[0]];
      const { height: h, width: w } = first;
      const each = channels * h * w;
      const target = k === b ? x : gpu.empty([k, channels, size[0], size[1]], { dtype: x.dtype });
      if (first.data instanceof Uint8Array) {
        const host = new Uint8Array(k * each);
        rows.forEach((r, j) => host.set(sources[start + r].data as Uint8Array, j * each));
        const u8 = gpu.tensor(host, { shape: [k, channels, h, w] });
        prepareBatch({
          x: target,
          labels: gpu.empty([k], { dtype: "i32" }),
          images: u8,
          srcLabels: gpu.tensor(new Uint8Array(k), { shape: [k] }),
          indices: gpu.tensor(Uint32Array.from({ length: k }, (_, j) => j), { shape: [k] }),
        }, {
          batch: k,
          channels,
          srcH: h,
          srcW: w,
          dstH: size[0],
          dstW: size[1],
          mean: options.mean,
          std: options.std,
        });
      } else {
        const host = new Float32Array(k * each);
        rows.forEach((r, j) => host.set(sources[start + r].data as Float32Array, j * each));
        const f32 = gpu.tensor(host, { shape: [k, channels, h, w] });
        resizeBilinear({ y: target, x: f32 }, { outH: size[0], outW: size[1] });
      }
      if (target === x) continue;
      // Scatter the group's rows into the chunk, one copy per run of consecutive rows.
      for (let j = 0; j < k;) {
        let e = j + 1;
        while (e < k && rows[e] === rows[e - 1] + 1) e++;
        gpu.copy(target, x, {
          srcOffset: j * rowBytes,
          dstOffset: rows[j] * rowBytes,
          bytes: (e - j) * rowBytes,
        });
        j = e;
      }
    }
  });
  const names = options.classes;
  return sources.map((_, i) => {
    const logits = all.slice(i * classes, (i + 1) * classes);
    if (logits.some((v) => !Number.isFinite(v))) {
      throw new NonFiniteError(
        `${options.imageNames?.[i] ?? `image ${i}`}: the model's outputs are Inf or NaN: its ` +
          "weights are not finite or too large",
      );
    }
    let max = -Infinity;
    for (const v of logits) max = Math.max(max, v);
    const exp = Array.from(logits, (v) => Math.exp(v - max));
    const z = exp.reduce((a, v) => a + v, 0);
    const probabilities = Float32Array.from(exp, (v) => v / z);
    const order = [...probabilities.keys()].sort((a, c) =>
      probabilities[c] - probabilities[a] || a - c
    );
    const top = order.slice(0, topK).map((index) => ({
      index,
      name: names ? names[index] : String(index),
      probability: probabilities[index],
    }));
    return { logits, probabilities, top };
  });
}
