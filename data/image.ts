/**
 * Images into u8 planes of 1 (gray) or 3 (RGB) channels: {@linkcode decodeImage} reads PNG (with
 * the npm package fast-png) and JPEG (with jpeg-js, see ./jpeg.ts), told apart by their first
 * bytes; {@linkcode pngToPlanes} reads PNG only. The header's size is checked before decoding, and
 * other formats (GIF, WebP, ...) are recognised and named. Pure: no Deno API.
 *
 * @module
 */

import { decode } from "fast-png";
import {
  decodeJpegRgb,
  JPEG_SIGNATURE,
  type JpegHeader,
  jpegHeader,
  unsupportedJpeg,
} from "./jpeg.ts";

/**
 * An image that cannot be used: not a PNG or JPEG (GIF, WebP, ... are named), a corrupt or
 * truncated file, an unsupported kind of JPEG (CMYK, 12-bit, lossless, arithmetic-coded), an
 * empty image, or one too large. The message names the file and says what to do.
 *
 * @example
 * ```ts
 * import { decodeImage, ImageDecodeError } from "@modern-cnn/webgpu/data";
 * try {
 *   decodeImage(new Uint8Array([0xff, 0xd8, 0xff, 0xe0]), { channels: 1, file: "cat.jpg" });
 * } catch (e) {
 *   console.log(e instanceof ImageDecodeError, (e as ImageDecodeError).file); // true "cat.jpg"
 * }
 * ```
 */
export class ImageDecodeError extends Error {
  /** The image file. */
  readonly file: string;
  /**
   * Creates the error; the message is `file: problem`.
   *
   * @example
   * ```ts
   * import { ImageDecodeError } from "@modern-cnn/webgpu/data";
   * console.log(new ImageDecodeError("a.png", "is empty").message); // "a.png: is empty"
   * ```
   */
  constructor(file: string, problem: string) {
    super(`${file}: ${problem}`);
    this.name = "ImageDecodeError";
    this.file = file;
  }
}

/**
 * The default of {@linkcode ImageOptions.maxPixels}: 4096 x 4096. The decoded image (up to 8 bytes
 * a pixel for 16-bit RGBA) and its planes stay in the hundreds of MB, and an RGB image's planes
 * fit the GPU's smallest guaranteed storage binding (128 MiB).
 *
 * @example
 * ```ts
 * import { MAX_IMAGE_PIXELS } from "./image.ts";
 * console.log(MAX_IMAGE_PIXELS); // 16777216
 * ```
 */
export const MAX_IMAGE_PIXELS: number = 4096 * 4096;

/** Options of {@linkcode decodeImage} and {@linkcode pngToPlanes}. */
export interface ImageOptions {
  /** Channels of the result: 1 (gray, by luma) or 3 (RGB). */
  readonly channels: number;
  /** Invert the levels (255 - v), for light-on-dark data sets drawn dark-on-light. */
  readonly invert?: boolean;
  /** The file's name, for errors; default `"<bytes>"`. */
  readonly file?: string;
  /** The most pixels (width x height) accepted; default 4096 x 4096. */
  readonly maxPixels?: number;
}

/** Options of {@linkcode pngToPlanes}: those of {@linkcode decodeImage}. */
export type PngOptions = ImageOptions;

/** A decoded image: u8 planes `[channels, height, width]`. */
export interface DecodedImage {
  /** The planes, channel after channel, each row-major. */
  data: Uint8Array;
  /** Rows. */
  height: number;
  /** Columns. */
  width: number;
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const PNG_SIGNATURE_BYTES = new Uint8Array(PNG_SIGNATURE);

function startsWith(b: Uint8Array, sig: readonly number[], at = 0): boolean {
  return b.length >= at + sig.length && sig.every((v, i) => b[at + i] === v);
}

/** The name of a known non-PNG image format the bytes are in, or null. */
function otherFormat(b: Uint8Array): string | null {
  const ascii = (at: number, s: string) => startsWith(b, [...s].map((c) => c.charCodeAt(0)), at);
  if (startsWith(b, [0xff, 0xd8, 0xff])) return "JPEG";
  if (ascii(0, "GIF87a") || ascii(0, "GIF89a")) return "GIF";
  if (ascii(0, "RIFF") && ascii(8, "WEBP")) return "WebP";
  if (ascii(0, "BM")) return "BMP";
  if (startsWith(b, [0x49, 0x49, 0x2a, 0x00]) || startsWith(b, [0x4d, 0x4d, 0x00, 0x2a])) {
    return "TIFF";
  }
  if (ascii(4, "ftypavif") || ascii(4, "ftypheic") || ascii(4, "ftypmif1")) return "AVIF/HEIF";
  return null;
}

function u32be(b: Uint8Array, at: number): number {
  return ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0;
}

/** Checks the options shared by the decoders; returns the file's name and the pixel limit. */
function checkOptions(fn: string, options: ImageOptions): { file: string; maxPixels: number } {
  if (options === null || typeof options !== "object") {
    throw new TypeError(`${fn}: options must be an object with channels (1 or 3), got ${options}`);
  }
  if (options.channels !== 1 && options.channels !== 3) {
    throw new RangeError(`${fn}: channels must be 1 or 3, got ${options.channels}`);
  }
  const maxPixels = options.maxPixels ?? MAX_IMAGE_PIXELS;
  if (!(maxPixels === Infinity || (Number.isSafeInteger(maxPixels) && maxPixels > 0))) {
    throw new RangeError(`${fn}: maxPixels must be a positive integer, got ${maxPixels}`);
  }
  return { file: options.file ?? "<bytes>", maxPixels };
}

/** Rejects an empty image or one of more than `maxPixels` pixels, by its header's size. */
function checkSize(
  file: string,
  size: { readonly width: number; readonly height: number },
  maxPixels: number,
): void {
  if (size.width === 0 || size.height === 0) {
    throw new ImageDecodeError(
      file,
      `is ${size.width}x${size.height} pixels: an empty image (zero ${
        size.width === 0 ? "width" : "height"
      }); export it again`,
    );
  }
  if (size.width * size.height > maxPixels) {
    const side = Math.sqrt(maxPixels);
    throw new ImageDecodeError(
      file,
      `${size.width}x${size.height} pixels is too large to decode (at most ${maxPixels} pixels${
        Number.isInteger(side) ? `, e.g. ${side}x${side}` : ""
      }); resize it first`,
    );
  }
}

/**
 * Reads a PNG's size from its header (the IHDR chunk, bytes 16..24) without decoding it, after
 * checking the signature.
 *
 * @throws {ImageDecodeError} naming the file: not a PNG (a JPEG, GIF, ... is named), or no IHDR
 * header (truncated or corrupt).
 * @example
 * ```ts
 * import { pngSize } from "@modern-cnn/webgpu/data";
 * import { encode } from "fast-png";
 * const png = encode({ width: 3, height: 2, data: new Uint8Array(6), channels: 1, depth: 8 });
 * pngSize(png); // { width: 3, height: 2 }
 * ```
 */
export function pngSize(bytes: Uint8Array, file = "<bytes>"): { width: number; height: number } {
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`pngSize: bytes must be a Uint8Array, got ${typeof bytes}`);
  }
  if (!startsWith(bytes, PNG_SIGNATURE)) {
    const other = otherFormat(bytes);
    if (other === "JPEG") {
      throw new ImageDecodeError(
        file,
        "is a JPEG image, not a PNG: read it with decodeImage, which reads PNG and JPEG",
      );
    }
    throw new ImageDecodeError(
      file,
      other
        ? `is a ${other} image; only PNG is supported: convert it to PNG first`
        : bytes.length === 0
        ? "is empty, not a PNG image"
        : "is not a PNG image (it does not start with the PNG signature); only PNG is supported",
    );
  }
  const ihdr = [0x49, 0x48, 0x44, 0x52];
  if (bytes.length < 24 || !startsWith(bytes, ihdr, 12)) {
    throw new ImageDecodeError(
      file,
      bytes.length < 24
        ? `is ${bytes.length} bytes, a truncated PNG (no IHDR header); export it again`
        : "is a corrupt PNG (its first chunk is not IHDR); export it again",
    );
  }
  return { width: u32be(bytes, 16), height: u32be(bytes, 20) };
}

/**
 * Decodes a PNG into `channels` u8 planes `[channels, height, width]`: 1 channel is gray by luma
 * (0.299 R + 0.587 G + 0.114 B), 3 is RGB; alpha is composited over black; 16-bit and 1/2/4-bit
 * images are scaled to 0..255. The header's size is checked before decoding: zero or more than
 * `maxPixels` pixels is rejected.
 *
 * @throws {ImageDecodeError} naming the file: not a PNG (a JPEG, GIF, ... is named), corrupt or
 * truncated, empty (zero width or height), too large, or a palette index past the palette.
 * @example
 * ```ts
 * import { pngToPlanes } from "@modern-cnn/webgpu/data";
 * import { encode } from "fast-png";
 * const png = encode({ width: 2, height: 1, data: new Uint8Array([0, 255]), channels: 1, depth: 8 });
 * const img = pngToPlanes(png, { channels: 3, file: "two.png" });
 * console.log(img.width, img.height, img.data); // 2 1 Uint8Array [0, 255, 0, 255, 0, 255]
 * ```
 */
export function pngToPlanes(bytes: Uint8Array, options: PngOptions): DecodedImage {
  const { file, maxPixels } = checkOptions("pngToPlanes", options);
  const size = pngSize(bytes, file);
  checkSize(file, size, maxPixels);
  let img;
  try {
    img = decode(bytes);
  } catch (err) {
    const why = String((err as Error).message).split("\n")[0].slice(0, 120);
    throw new ImageDecodeError(file, `is not a readable PNG (${why}); export it again`);
  }
  const { width, height } = img;
  const src = img.data;
  const chans = img.channels;
  const depth = img.depth;
  const palette = img.palette;
  const max = 2 ** depth - 1;
  // Samples of 1, 2 or 4 bits (gray or palette, one channel) are packed, rows byte-aligned.
  const rowBytes = Math.ceil((width * depth * chans) / 8);
  const mask = max;
  const sample = depth >= 8 ? (i: number, c: number) => src[i * chans + c] : (i: number) => {
    const y = Math.floor(i / width);
    const bit = (i - y * width) * depth;
    return (src[y * rowBytes + (bit >> 3)] >> (8 - depth - (bit & 7))) & mask;
  };
  const plane = width * height;
  const out = new Uint8Array(options.channels * plane);
  const invert = options.invert === true;
  for (let i = 0; i < plane; i++) {
    let r: number, g: number, b: number, a = 1;
    if (palette) {
      const index = sample(i, 0);
      const colour = palette[index];
      if (!colour) {
        throw new ImageDecodeError(
          file,
          `palette index ${index} past the palette of ${palette.length} colours (corrupt PNG); ` +
            "export it again",
        );
      }
      [r, g, b] = colour;
      if (colour.length === 4) a = colour[3] / 255;
    } else if (chans >= 3) {
      r = (sample(i, 0) / max) * 255;
      g = (sample(i, 1) / max) * 255;
      b = (sample(i, 2) / max) * 255;
    } else {
      r = g = b = (sample(i, 0) / max) * 255;
    }
    if (!palette && (chans === 4 || chans === 2)) a = sample(i, chans - 1) / max;
    // Composite over black.
    r *= a;
    g *= a;
    b *= a;
    const put = (c: number, v: number) => {
      const u = Math.round(Math.min(255, Math.max(0, v)));
      out[c * plane + i] = invert ? 255 - u : u;
    };
    if (options.channels === 1) put(0, 0.299 * r + 0.587 * g + 0.114 * b);
    else {
      put(0, r);
      put(1, g);
      put(2, b);
    }
  }
  return { data: out, height, width };
}

/** The format and size of an image, read from its header. */
export interface ImageSize {
  /** `"png"` or `"jpeg"`. */
  readonly format: "png" | "jpeg";
  /** Columns. */
  readonly width: number;
  /** Rows. */
  readonly height: number;
  /**
   * 1 for a gray image, 3 for a colour one, by the header: PNG colour types 2, 3 (palette) and 6
   * and 3-component JPEGs are colour, even when every pixel is gray.
   */
  readonly channels: 1 | 3;
}

/**
 * Reads a PNG's or a JPEG's format, size and colour from its header without decoding it.
 *
 * @throws {ImageDecodeError} naming the file: not a PNG or JPEG (GIF, WebP, ... are named), or a
 * truncated or corrupt header, or an unsupported kind of JPEG (lossless, arithmetic-coded).
 * @example
 * ```ts
 * import { imageSize } from "@modern-cnn/webgpu/data";
 * import { encode } from "fast-png";
 * const png = encode({ width: 3, height: 2, data: new Uint8Array(6), channels: 1, depth: 8 });
 * imageSize(png); // { format: "png", width: 3, height: 2, channels: 1 }
 * ```
 */
export function imageSize(bytes: Uint8Array, file = "<bytes>"): ImageSize {
  return headerOf(bytes, file).size;
}

function headerOf(
  bytes: Uint8Array,
  file: string,
): { size: ImageSize; jpeg?: JpegHeader } {
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`decodeImage: bytes must be a Uint8Array, got ${typeof bytes}`);
  }
  if (bytes.length > 0 && bytes.length < 8 && startsWith(PNG_SIGNATURE_BYTES, [...bytes])) {
    throw new ImageDecodeError(
      file,
      `is ${bytes.length} bytes, a truncated PNG (no IHDR header); export it again`,
    );
  }
  if (startsWith(bytes, PNG_SIGNATURE)) {
    const { width, height } = pngSize(bytes, file);
    const channels = bytes.length > 25 && [2, 3, 6].includes(bytes[25]) ? 3 : 1;
    return { size: { format: "png", width, height, channels } };
  }
  if (startsWith(bytes, JPEG_SIGNATURE.slice(0, 2))) {
    const h = jpegHeader(bytes);
    if (typeof h === "string") {
      throw new ImageDecodeError(file, `${h}; export it again`);
    }
    const channels = h.components === 1 ? 1 : 3;
    return { size: { format: "jpeg", width: h.width, height: h.height, channels }, jpeg: h };
  }
  const other = otherFormat(bytes);
  throw new ImageDecodeError(
    file,
    other
      ? `is a ${other} image; only PNG and JPEG are supported: convert it to PNG first`
      : bytes.length === 0
      ? "is empty, not an image"
      : "is not a PNG or JPEG image (it starts with neither signature); convert it to PNG",
  );
}

/**
 * Decodes a PNG or a JPEG (told apart by their first bytes) into `channels` u8 planes
 * `[channels, height, width]`: 1 channel is gray by luma (0.299 R + 0.587 G + 0.114 B), 3 is RGB
 * (a gray image's level in all three). PNG as {@linkcode pngToPlanes}; JPEG with the npm package
 * jpeg-js: baseline, extended and progressive 8-bit JPEGs, gray or YCbCr; EXIF orientation is not
 * applied. The header's size is checked before decoding (zero or more than `maxPixels` pixels is
 * rejected) and the JPEG decoder's memory is bounded by it, so a hostile file cannot exhaust
 * memory.
 *
 * @throws {ImageDecodeError} naming the file, in one line: not a PNG or JPEG (GIF, WebP, ... are
 * named), corrupt or truncated, empty, too large, or an unsupported JPEG (CMYK, 12-bit, lossless,
 * arithmetic-coded).
 * @example
 * ```ts
 * import { decodeImage } from "@modern-cnn/webgpu/data";
 * import { encode } from "jpeg-js";
 * const rgba = new Uint8Array([255, 0, 0, 255, 0, 0, 255, 255]); // red, blue
 * const jpg = new Uint8Array(encode({ width: 2, height: 1, data: rgba }, 100).data);
 * const img = decodeImage(jpg, { channels: 3, file: "two.jpg" });
 * console.log(img.width, img.height, img.data.length); // 2 1 6
 * ```
 */
export function decodeImage(bytes: Uint8Array, options: ImageOptions): DecodedImage {
  const { file, maxPixels } = checkOptions("decodeImage", options);
  const { size, jpeg } = headerOf(bytes, file);
  if (!jpeg) return pngToPlanes(bytes, options);
  const unsupported = unsupportedJpeg(jpeg);
  if (unsupported) throw new ImageDecodeError(file, unsupported);
  checkSize(file, size, maxPixels);
  let rgb: Uint8Array;
  try {
    rgb = decodeJpegRgb(bytes, size).data;
  } catch (err) {
    const why = String((err as Error)?.message ?? err).split("\n")[0].slice(0, 120);
    throw new ImageDecodeError(
      file,
      /maxMemoryUsageInMB|maxResolutionInMP/.test(why)
        ? `is a JPEG that needs more memory than its ${size.width}x${size.height} pixels ` +
          `should (${why}): a corrupt or hostile file; export it again`
        : bytes.at(-2) !== 0xff || bytes.at(-1) !== 0xd9
        ? `is a truncated or corrupt JPEG (no end marker; ${why}); export it again`
        : `is not a readable JPEG (${why}); export it again`,
    );
  }
  const { width, height } = size;
  const plane = width * height;
  const out = new Uint8Array(options.channels * plane);
  const invert = options.invert === true;
  for (let i = 0; i < plane; i++) {
    const r = rgb[3 * i], g = rgb[3 * i + 1], b = rgb[3 * i + 2];
    if (options.channels === 1) {
      const v = Math.round(Math.min(255, 0.299 * r + 0.587 * g + 0.114 * b));
      out[i] = invert ? 255 - v : v;
    } else {
      out[i] = invert ? 255 - r : r;
      out[plane + i] = invert ? 255 - g : g;
      out[2 * plane + i] = invert ? 255 - b : b;
    }
  }
  return { data: out, height, width };
}
