/**
 * JPEG for {@linkcode ./image.ts}'s `decodeImage`: the frame header (size, precision, components)
 * read from the markers without decoding, and the decode itself with the npm package jpeg-js,
 * bounded by the header's size. Pure (no Deno API); problems are returned or thrown as one clause
 * that image.ts puts after the file's name.
 *
 * @module
 */

import { decode } from "jpeg-js";

/** A JPEG's frame header (its SOF segment). */
export interface JpegHeader {
  /** Pixels per line. */
  readonly width: number;
  /** Lines; 0 when a DNL marker defines it later (not supported). */
  readonly height: number;
  /** Bits per sample (8, or 12 for extended JPEGs). */
  readonly precision: number;
  /** Colour components: 1 (gray), 3 (YCbCr or RGB), 4 (CMYK or YCCK). */
  readonly components: number;
  /** Whether the frame is progressive (SOF2). */
  readonly progressive: boolean;
}

/** The JPEG SOI marker and the start of the next one, as every JPEG starts. */
export const JPEG_SIGNATURE: readonly number[] = [0xff, 0xd8, 0xff];

/** SOF markers of coding processes jpeg-js cannot decode, by what they are. */
function unsupportedProcess(marker: number): string | null {
  if (marker === 0xc3) return "a lossless JPEG";
  if (marker >= 0xc5 && marker <= 0xc7) return "a hierarchical JPEG";
  if (marker >= 0xc9 && marker <= 0xcb) return "an arithmetic-coded JPEG";
  if (marker >= 0xcd && marker <= 0xcf) return "a hierarchical arithmetic-coded JPEG";
  return null;
}

/**
 * Reads a JPEG's frame header by walking its marker segments from the start, without decoding;
 * returns it, or one clause saying why the bytes are not a JPEG this library decodes (truncated,
 * corrupt, or a coding process other than baseline, extended and progressive Huffman).
 *
 * @example
 * ```ts
 * import { jpegHeader } from "./jpeg.ts";
 * import { encode } from "jpeg-js";
 * const jpg = encode({ width: 3, height: 2, data: new Uint8Array(24) }, 90).data;
 * console.log(jpegHeader(new Uint8Array(jpg))); // { width: 3, height: 2, precision: 8, ... }
 * ```
 */
export function jpegHeader(bytes: Uint8Array): JpegHeader | string {
  if (bytes.length < 2 || bytes[0] !== 0xff || bytes[1] !== 0xd8) {
    return "is not a JPEG (no SOI marker)";
  }
  const truncated = `is ${bytes.length} bytes, a truncated JPEG (it ends before its frame header)`;
  let at = 2;
  for (;;) {
    if (at >= bytes.length) return truncated;
    if (bytes[at] !== 0xff) {
      return `is a corrupt JPEG (no marker at byte ${at} before the frame header)`;
    }
    while (at < bytes.length && bytes[at] === 0xff) at++; // fill bytes
    if (at >= bytes.length) return truncated;
    const marker = bytes[at++];
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) continue; // no length
    if (marker === 0xd9 || marker === 0xda || marker === 0xd8) {
      return "is a corrupt JPEG (no frame header before its image data)";
    }
    if (at + 2 > bytes.length) return truncated;
    const length = (bytes[at] << 8) | bytes[at + 1];
    if (length < 2) return `is a corrupt JPEG (a segment of length ${length})`;
    const process = unsupportedProcess(marker);
    if (process) return `is ${process}, which is not supported`;
    if (marker >= 0xc0 && marker <= 0xc2) {
      if (at + 8 > bytes.length) return truncated;
      return {
        precision: bytes[at + 2],
        height: (bytes[at + 3] << 8) | bytes[at + 4],
        width: (bytes[at + 5] << 8) | bytes[at + 6],
        components: bytes[at + 7],
        progressive: marker === 0xc2,
      };
    }
    at += length;
  }
}

/**
 * Why a JPEG with this header is not decoded (other precisions, CMYK, a later-defined height),
 * or null. The size is checked by the caller.
 *
 * @example
 * ```ts
 * import { unsupportedJpeg } from "./jpeg.ts";
 * const h = { width: 8, height: 8, precision: 8, components: 4, progressive: false };
 * console.log(unsupportedJpeg(h)); // "is a CMYK JPEG (4 components); ..."
 * ```
 */
export function unsupportedJpeg(h: JpegHeader): string | null {
  if (h.precision !== 8) {
    return `is a ${h.precision}-bit JPEG; only 8-bit JPEGs are supported: save it as an 8-bit JPEG or PNG`;
  }
  if (h.components === 4) {
    return "is a CMYK JPEG (4 components); only gray and RGB JPEGs are supported: convert it to RGB";
  }
  if (h.components !== 1 && h.components !== 3) {
    return `is a JPEG of ${h.components} colour components; only gray (1) and RGB (3) are ` +
      "supported: convert it to RGB";
  }
  if (h.height === 0 && h.width !== 0) {
    return "is a JPEG whose height is defined after its image data (a DNL marker), which is not " +
      "supported: save it again";
  }
  return null;
}

/**
 * Decodes a JPEG whose header was checked into interleaved RGB bytes with jpeg-js (gray JPEGs
 * come back with R = G = B). jpeg-js is told the header's size as its resolution limit (so a
 * second, larger frame is refused) and a memory limit of about 32 bytes a pixel (its coefficient
 * blocks, component lines and output), so a hostile file cannot make it allocate more than that.
 *
 * @throws {Error} with jpeg-js's message (one line) when the data is corrupt or truncated.
 * @example
 * ```ts
 * import { decodeJpegRgb } from "./jpeg.ts";
 * import { encode } from "jpeg-js";
 * const jpg = new Uint8Array(encode({ width: 1, height: 1, data: new Uint8Array([200, 0, 0, 255]) }, 100).data);
 * console.log(decodeJpegRgb(jpg, { width: 1, height: 1 }).data.length); // 3
 * ```
 */
export function decodeJpegRgb(
  bytes: Uint8Array,
  size: { readonly width: number; readonly height: number },
): { data: Uint8Array; width: number; height: number } {
  const pixels = size.width * size.height;
  // Blocks are allocated for whole MCUs (up to 32x32 pixels with 4x subsampling).
  const padded = (Math.ceil(size.width / 32) * 32) * (Math.ceil(size.height / 32) * 32);
  const img = decode(bytes, {
    useTArray: true,
    formatAsRGBA: false,
    maxResolutionInMP: (pixels + 1) / 1e6,
    maxMemoryUsageInMB: Math.ceil((padded * 32) / 2 ** 20) + 4,
  });
  if (img.width !== size.width || img.height !== size.height) {
    throw new Error(`its frame is ${img.width}x${img.height}, not the header's`);
  }
  return { data: img.data, width: img.width, height: img.height };
}
