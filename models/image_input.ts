/**
 * The images `predict` takes, as users hold them (encoded PNG or JPEG bytes, u8 or f32 planes
 * with their shape, browser `ImageData`/`ImageBitmap`), and their conversion on the host into u8
 * or f32 planes of the model's channels; the GPU resizes and normalizes them (`predict.ts`).
 *
 * @module
 */

import { decodeImage } from "../data/image.ts";
import type { Model } from "./model.ts";

/**
 * Images as planes `[channels, height, width]` (one image in a list) or `[n, channels, height,
 * width]` (a batch): u8 levels 0..255, or f32 values as the model sees them before normalization
 * (u8 / 255, i.e. 0..1).
 */
export interface ImagePlanes {
  /** The values, channel planes one after another (CHW, or NCHW for a batch). */
  readonly data: Uint8Array | Float32Array;
  /** `[channels, height, width]`, or `[n, channels, height, width]` for a batch. */
  readonly shape: readonly number[];
}

/**
 * What a browser's `ImageData` (from `canvas.getContext("2d").getImageData(...)`) is: RGBA
 * bytes, four per pixel, row by row. Any object of this shape is accepted.
 */
export interface ImageDataLike {
  /** Width in pixels. */
  readonly width: number;
  /** Height in pixels. */
  readonly height: number;
  /** RGBA bytes, `width·height·4` (a `Uint8ClampedArray` in browsers). */
  readonly data: Uint8ClampedArray | Uint8Array;
}

/**
 * What a browser's `ImageBitmap` (from `createImageBitmap(blob)`, which decodes JPEG, PNG, WebP
 * ...) is: a size and no pixel array. It is read through an `OffscreenCanvas`, so it works where
 * one exists (browsers and workers).
 */
export interface ImageBitmapLike {
  /** Width in pixels. */
  readonly width: number;
  /** Height in pixels. */
  readonly height: number;
  /** Frees the bitmap (marks the object as an ImageBitmap). */
  close(): void;
}

/**
 * One image for `predict`: encoded PNG or JPEG bytes (a `Uint8Array` read from a file or a
 * `fetch`), planes with their shape, an `ImageData`-like or an `ImageBitmap`-like object.
 */
export type PredictImage = Uint8Array | ImagePlanes | ImageDataLike | ImageBitmapLike;

/** The images of {@linkcode predict}: a list of images, or one batch of planes `[n, c, h, w]`. */
export type PredictInput = readonly PredictImage[] | ImagePlanes;

/** An image converted on the host: the model's channels, u8 or f32 planes. */
export interface Source {
  /** The planes `[channels, height, width]`. */
  readonly data: Uint8Array | Float32Array;
  /** Height. */
  readonly height: number;
  /** Width. */
  readonly width: number;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null;

/** Decodes encoded image bytes into the model's channels (PNG or JPEG, told by the magic bytes). */
function _decode(
  bytes: Uint8Array,
  options: { channels: number; invert: boolean; file: string },
): Source {
  return decodeImage(bytes, options);
}

/** Converts planes of `c` channels to `channels` (gray <-> RGB by replication or luma). */
function _convertPlanes(
  data: Uint8Array | Float32Array,
  c: number,
  plane: number,
  channels: number,
  invert: boolean,
): Uint8Array | Float32Array {
  const u8 = data instanceof Uint8Array;
  const top = u8 ? 255 : 1;
  if (c === channels && !invert) return data;
  const out = u8 ? new Uint8Array(channels * plane) : new Float32Array(channels * plane);
  const put = (k: number, v: number) => {
    const w = u8 ? Math.round(Math.min(255, Math.max(0, v))) : v;
    out[k] = invert ? top - w : w;
  };
  for (let i = 0; i < plane; i++) {
    if (c === channels) { for (let k = 0; k < c; k++) put(k * plane + i, data[k * plane + i]); }
    else if (c === 1) { for (let k = 0; k < channels; k++) put(k * plane + i, data[i]); }
    else put(i, 0.299 * data[i] + 0.587 * data[plane + i] + 0.114 * data[2 * plane + i]);
  }
  return out;
}

/** RGBA pixels (alpha composited over black, as PNG decoding does) to u8 planes. */
function _fromRgba(
  rgba: ArrayLike<number>,
  width: number,
  height: number,
  channels: number,
  invert: boolean,
): Uint8Array {
  const plane = width * height;
  const out = new Uint8Array(channels * plane);
  for (let i = 0; i < plane; i++) {
    const a = rgba[4 * i + 3] / 255;
    const r = (rgba[4 * i] / 255) * 255 * a;
    const g = (rgba[4 * i + 1] / 255) * 255 * a;
    const b = (rgba[4 * i + 2] / 255) * 255 * a;
    const put = (k: number, v: number) => {
      const u = Math.round(Math.min(255, Math.max(0, v)));
      out[k * plane + i] = invert ? 255 - u : u;
    };
    if (channels === 1) put(0, 0.299 * r + 0.587 * g + 0.114 * b);
    else {
      put(0, r);
      put(1, g);
      put(2, b);
    }
  }
  return out;
}

/** The RGBA pixels of an ImageBitmap-like, drawn on an OffscreenCanvas. */
function _bitmapPixels(op: string, name: string, bmp: ImageBitmapLike): ImageDataLike {
  const unreadable = () =>
    new TypeError(
      `${op}: ${name} is an ImageBitmap, which needs an OffscreenCanvas with a 2D context ` +
        "(browsers) to read; pass its ImageData, planes or the encoded bytes instead",
    );
  // deno-lint-ignore no-explicit-any
  const Canvas = (globalThis as any).OffscreenCanvas;
  if (typeof Canvas !== "function") throw unreadable();
  // Deno has an OffscreenCanvas without a 2D context: getContext("2d") gives null there.
  let ctx;
  try {
    ctx = new Canvas(bmp.width, bmp.height).getContext("2d");
  } catch {
    throw unreadable();
  }
  if (!ctx) throw unreadable();
  ctx.drawImage(bmp, 0, 0);
  return ctx.getImageData(0, 0, bmp.width, bmp.height);
}

function _shapeOk(shape: unknown, rank: number): shape is number[] {
  return Array.isArray(shape) && shape.length === rank &&
    shape.every((d) => Number.isInteger(d) && d >= 1);
}

/**
 * Every input image converted on the host to the model's channels (all validated before any GPU
 * work): `predict`'s input stage.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { createModel } from "@modern-cnn/webgpu/models";
 * import { imageSources } from "./image_input.ts";
 * const model = createModel(await getGpu(), { name: "lenet" });
 * const [s] = imageSources("predict", model, [{ data: new Uint8Array(3 * 4), shape: [3, 2, 2] }], { invert: false });
 * console.log(s.data.length); // 4
 * ```
 */
export function imageSources(
  op: string,
  model: Model,
  images: PredictInput,
  o: {
    invert: boolean;
    names?: readonly string[];
    mean?: readonly number[];
    std?: readonly number[];
  },
): Source[] {
  const channels = model.arch.inChannels;
  const accepts = channels === 1 || channels === 3 ? [...new Set([channels, 1, 3])] : [channels];
  const checkChannels = (name: string, c: number) => {
    if (!accepts.includes(c)) {
      throw new TypeError(
        `${op}: ${name} has ${c} channels; ${model.arch.name} takes ${channels} (give ${
          accepts.join(" or ")
        } channels)`,
      );
    }
  };
  const planes = (name: string, p: ImagePlanes, rank: 3 | 4): Source[] => {
    if (!(p.data instanceof Uint8Array || p.data instanceof Float32Array)) {
      throw new TypeError(`${op}: ${name}: data must be a Uint8Array or a Float32Array`);
    }
    if (!_shapeOk(p.shape, rank)) {
      throw new TypeError(
        `${op}: ${name}: shape must be ${
          rank === 3 ? "[channels, height, width]" : "[n, channels, height, width]"
        } of positive integers, got ${JSON.stringify(p.shape)}`,
      );
    }
    const [n, c, h, w] = rank === 3 ? [1, ...p.shape] : p.shape;
    checkChannels(name, c);
    if (p.data.length !== n * c * h * w) {
      throw new TypeError(
        `${op}: ${name}: ${p.data.length} values do not fill shape ${JSON.stringify(p.shape)} (${
          n * c * h * w
        })`,
      );
    }
    const each = c * h * w;
    return Array.from({ length: n }, (_, i) => {
      let d = p.data.subarray(i * each, (i + 1) * each);
      d = _convertPlanes(d, c, h * w, channels, o.invert);
      if (d instanceof Float32Array && o.mean && o.std) {
        // Normalizing commutes with the bilinear resize (its weights sum to 1).
        const out = new Float32Array(d.length);
        for (let k = 0; k < channels; k++) {
          for (let j = 0; j < h * w; j++) {
            out[k * h * w + j] = (d[k * h * w + j] - o.mean[k]) / o.std[k];
          }
        }
        d = out;
      }
      return { data: d, height: h, width: w };
    });
  };
  if (!Array.isArray(images)) {
    if (isObject(images) && "shape" in images) {
      const sources = planes("the batch", images as ImagePlanes, 4);
      return sources;
    }
    throw new TypeError(
      `${op}: images must be a list of images or a batch of planes { data, shape: [n, c, h, w] }` +
        `, got ${
          images instanceof Uint8Array ? "a Uint8Array (wrap one image in a list)" : typeof images
        }`,
    );
  }
  if (images.length === 0) throw new TypeError(`${op}: no images given (an empty list)`);
  if (o.names !== undefined && o.names.length !== images.length) {
    throw new TypeError(
      `${op}: ${o.names.length} imageNames for ${images.length} images (give one per image)`,
    );
  }
  if (!accepts.includes(1) && images.some((im) => !isObject(im) || !("shape" in im))) {
    throw new TypeError(
      `${op}: ${model.arch.name} takes ${channels} channels: give it planes { data, shape }`,
    );
  }
  return images.flatMap((im, i): Source[] => {
    const name = o.names?.[i] ?? `image ${i}`;
    if (im instanceof Uint8Array) {
      return [_decode(im, { channels, invert: o.invert, file: name })];
    }
    if (!isObject(im)) throw new TypeError(`${op}: ${name} is ${String(im)}, not an image`);
    if ("shape" in im) return planes(name, im as unknown as ImagePlanes, 3);
    const sized = Number.isInteger(im.width) && Number.isInteger(im.height) &&
      (im.width as number) >= 1 && (im.height as number) >= 1;
    if (sized && "data" in im) {
      const { width, height, data } = im as unknown as ImageDataLike;
      if (
        !(data instanceof Uint8ClampedArray || data instanceof Uint8Array) ||
        data.length !== width * height * 4
      ) {
        throw new TypeError(
          `${op}: ${name}: an ImageData needs width·height·4 RGBA bytes (${
            width * height * 4
          }), got ${(data as ArrayLike<number>)?.length ?? typeof data}`,
        );
      }
      return [{ data: _fromRgba(data, width, height, channels, o.invert), height, width }];
    }
    if (sized && typeof im.close === "function") {
      const px = _bitmapPixels(op, name, im as unknown as ImageBitmapLike);
      const data = _fromRgba(px.data, px.width, px.height, channels, o.invert);
      return [{ data, height: px.height, width: px.width }];
    }
    throw new TypeError(
      `${op}: ${name} is not an image: give encoded PNG or JPEG bytes, planes { data, shape }, an ` +
        "ImageData or an ImageBitmap",
    );
  });
}
