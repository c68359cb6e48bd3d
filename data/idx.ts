/**
 * IDX files (MNIST, Fashion-MNIST): parsing of image and label files, gzipped or plain. Pure
 * functions over bytes (no file system), so a browser can use them on fetched data.
 *
 * Format: a big-endian header — magic `0x00000803` (u8 data, 3 dimensions) for images,
 * `0x00000801` for labels — then one u32 size per dimension, then the u8 data.
 *
 * Parsing is bounded: the header's dimensions are checked against limits (default: the largest
 * MNIST/Fashion-MNIST file, 60000 images of 28 x 28) before anything is allocated, and gzip is
 * inflated as a stream that stops as soon as it yields more than the header declares.
 *
 * @module
 */

import { ByteReader } from "./_inflate.ts";

/**
 * A data file that cannot be parsed: truncated, corrupt or of another format. The message names
 * the file and what is wrong.
 *
 * @example
 * ```ts
 * import { DataFormatError, parseIdxLabels } from "@modern-cnn/webgpu/data";
 * try {
 *   await parseIdxLabels(new Uint8Array(3), { file: "labels.idx" });
 * } catch (e) {
 *   console.log(e instanceof DataFormatError, (e as DataFormatError).file); // true "labels.idx"
 * }
 * ```
 */
export class DataFormatError extends Error {
  /** The file (or label) that failed to parse. */
  readonly file: string;
  /**
   * Creates the error; the message is prefixed with the file name.
   *
   * @example
   * ```ts
   * import { DataFormatError } from "@modern-cnn/webgpu/data";
   * console.log(new DataFormatError("a.bin", "is empty").message); // "a.bin: is empty"
   * ```
   */
  constructor(file: string, problem: string) {
    super(`${file}: ${problem}`);
    this.name = "DataFormatError";
    this.file = file;
  }
}

/** Options of the parse functions. */
export interface ParseOptions {
  /** Name of the file, for error messages; default `"<bytes>"`. */
  readonly file?: string;
  /**
   * The most bytes the data may inflate to (a gzipped file, a tar archive); default 256 MiB
   * (2^28). Inflating stops, with a {@linkcode DataFormatError}, as soon as it is passed.
   */
  readonly maxBytes?: number;
}

/**
 * The default of {@linkcode ParseOptions.maxBytes}: 256 MiB (the CIFAR-10 archive inflates to
 * 185 MB).
 *
 * @example
 * ```ts
 * import { DEFAULT_MAX_BYTES } from "./idx.ts";
 * console.log(DEFAULT_MAX_BYTES); // 268435456
 * ```
 */
export const DEFAULT_MAX_BYTES: number = 2 ** 28;

/** Upper bounds on an IDX file's dimensions, checked before anything is allocated. */
export interface IdxLimits {
  /** The most images or labels; default 60000. */
  readonly count?: number;
  /** The most rows per image; default 28. */
  readonly height?: number;
  /** The most columns per image; default 28. */
  readonly width?: number;
}

/** Options of {@linkcode parseIdxImages} and {@linkcode parseIdxLabels}. */
export interface IdxParseOptions extends ParseOptions {
  /**
   * Upper bounds on the dimensions the header may declare; default the largest MNIST and
   * Fashion-MNIST file's ({@linkcode IDX_LIMITS}`.train`). Other IDX data sets pass their own
   * (`Infinity` for no bound).
   */
  readonly limits?: IdxLimits;
}

/**
 * The sizes of MNIST's and Fashion-MNIST's splits: at most this many 28 x 28 images (the files
 * may hold fewer; a header declaring more is rejected before anything is allocated).
 *
 * @example
 * ```ts
 * import { IDX_LIMITS, parseIdxLabels } from "@modern-cnn/webgpu/data";
 * const bytes = await Deno.readFile("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz");
 * const labels = await parseIdxLabels(bytes, { limits: IDX_LIMITS.test });
 * console.log(IDX_LIMITS.test.count, labels.length); // 10000 10000
 * ```
 */
export const IDX_LIMITS: {
  readonly train: Required<IdxLimits>;
  readonly test: Required<IdxLimits>;
} = Object.freeze({
  train: Object.freeze({ count: 60000, height: 28, width: 28 }),
  test: Object.freeze({ count: 10000, height: 28, width: 28 }),
});

/** Images parsed from an IDX file. */
export interface IdxImages {
  /** Number of images. */
  readonly count: number;
  /** Rows per image. */
  readonly height: number;
  /** Columns per image. */
  readonly width: number;
  /** Pixels `[count, height, width]`, row-major. */
  readonly data: Uint8Array;
}

/** Official file names of an IDX data set's splits (MNIST and Fashion-MNIST). */
export const IDX_FILES: {
  readonly train: { readonly images: string; readonly labels: string };
  readonly test: { readonly images: string; readonly labels: string };
} = {
  train: { images: "train-images-idx3-ubyte", labels: "train-labels-idx1-ubyte" },
  test: { images: "t10k-images-idx3-ubyte", labels: "t10k-labels-idx1-ubyte" },
};

const IMAGES_MAGIC = 0x00000803;
const LABELS_MAGIC = 0x00000801;

/**
 * Whether bytes start with the gzip magic `1f 8b`.
 *
 * @example
 * ```ts
 * import { isGzip } from "./idx.ts";
 * isGzip(new Uint8Array([0x1f, 0x8b, 8])); // true
 * ```
 */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

/**
 * Decompresses gzip bytes with the standard `DecompressionStream("gzip")` (Deno and browsers), as
 * a stream that stops as soon as the output passes `maxBytes`.
 *
 * @throws {DataFormatError} naming the file when the data is corrupt or truncated, or inflates
 * past `maxBytes` (default {@linkcode DEFAULT_MAX_BYTES}).
 * @example
 * ```ts
 * import { gunzip } from "./idx.ts";
 * const packed = new Uint8Array(
 *   await new Response(
 *     new Blob([new Uint8Array([1, 2, 3])]).stream().pipeThrough(new CompressionStream("gzip")),
 *   ).arrayBuffer(),
 * );
 * console.log(await gunzip(packed)); // Uint8Array [1, 2, 3]
 * ```
 */
export async function gunzip(bytes: Uint8Array, options: ParseOptions = {}): Promise<Uint8Array> {
  const file = options.file ?? "<bytes>";
  const maxBytes = checkMaxBytes(options.maxBytes, "gunzip");
  if (!isGzip(bytes)) {
    throw new DataFormatError(file, "is not gzip data (it does not start with 1f 8b)");
  }
  const r = new ByteReader(bytes, file);
  try {
    const parts: Uint8Array[] = [];
    let total = 0;
    while (true) {
      const part = await r.read(1 << 20);
      if (part.length === 0) break;
      total += part.length;
      if (total > maxBytes) {
        throw new DataFormatError(
          file,
          `inflates to more than ${maxBytes} bytes, the limit (corrupt, or not the expected file)`,
        );
      }
      parts.push(part);
    }
    const out = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  } finally {
    await r.close();
  }
}

/** `maxBytes` checked: a positive integer, or Infinity. */
function checkMaxBytes(v: number | undefined, fn: string): number {
  if (v === undefined) return DEFAULT_MAX_BYTES;
  if (typeof v !== "number") {
    throw new TypeError(`${fn}: maxBytes must be a number, got ${typeof v}`);
  }
  if (!(v === Infinity || (Number.isSafeInteger(v) && v > 0))) {
    throw new RangeError(`${fn}: maxBytes must be a positive integer or Infinity, got ${v}`);
  }
  return v;
}

/** The limits of an IDX parse, checked, with the defaults filled in. */
function checkLimits(limits: IdxLimits | undefined, fn: string): Required<IdxLimits> {
  if (limits !== undefined && (typeof limits !== "object" || limits === null)) {
    throw new TypeError(`${fn}: limits must be an object, got ${limits}`);
  }
  const out = { ...IDX_LIMITS.train };
  for (const key of ["count", "height", "width"] as const) {
    const v = limits?.[key];
    if (v === undefined) continue;
    if (typeof v !== "number") {
      throw new TypeError(`${fn}: limits.${key} must be a number, got ${typeof v}`);
    }
    if (!(v === Infinity || (Number.isSafeInteger(v) && v > 0))) {
      throw new RangeError(`${fn}: limits.${key} must be a positive integer or Infinity, got ${v}`);
    }
    out[key] = v;
  }
  return out;
}

function u32be(b: Uint8Array, at: number): number {
  return ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0;
}

function hex(v: number): string {
  return `0x${v.toString(16).padStart(8, "0")}`;
}

function checkHeader(
  b: Uint8Array,
  file: string,
  magic: number,
  dims: number,
  kind: string,
): number[] {
  const header = 4 + 4 * dims;
  if (b.length < 4) {
    throw new DataFormatError(
      file,
      `is ${b.length} bytes, too short for an IDX ${kind} file (truncated or empty)`,
    );
  }
  const m = u32be(b, 0);
  if (m !== magic) {
    let hint = "";
    if (m === IMAGES_MAGIC) hint = " (this is an images file: were the file names swapped?)";
    else if (m === LABELS_MAGIC) hint = " (this is a labels file: were the file names swapped?)";
    else if (b[0] !== 0 || b[1] !== 0) hint = " (not an IDX file)";
    else if (b[2] !== 0x08) hint = ` (element type ${hex(b[2]).slice(8)} is not u8)`;
    else hint = ` (${b[3]} dimensions, expected ${dims})`;
    throw new DataFormatError(
      file,
      `bad magic number ${hex(m)}, expected ${hex(magic)} for IDX ${kind}${hint}`,
    );
  }
  if (b.length < header) {
    throw new DataFormatError(
      file,
      `is ${b.length} bytes, shorter than the ${header}-byte IDX ${kind} header (truncated)`,
    );
  }
  const sizes: number[] = [];
  for (let d = 0; d < dims; d++) sizes.push(u32be(b, 4 + 4 * d));
  return sizes;
}

/** Throws when the data after the header is not exactly what the header declares. */
function checkLength(
  length: number,
  file: string,
  header: number,
  sizes: number[],
  kind: string,
): void {
  const expected = header + sizes.reduce((a, v) => a * v, 1);
  if (length < expected) {
    throw new DataFormatError(
      file,
      `truncated: the header declares ${sizes.join(" x ")} ${kind} (${expected} bytes), the file ` +
        `has ${length} bytes; delete it and get it again`,
    );
  }
  if (length > expected) {
    throw new DataFormatError(
      file,
      `has ${length - expected} bytes after the ${sizes.join(" x ")} ${kind} its header ` +
        "declares (corrupt or not an IDX file)",
    );
  }
}

/** Throws when the header declares more than the limits allow. */
function checkSizes(
  file: string,
  sizes: number[],
  limits: Required<IdxLimits>,
  kind: "images" | "labels",
): void {
  const hint = "(corrupt, or not an MNIST-style file of this split)";
  if (sizes[0] > limits.count) {
    throw new DataFormatError(
      file,
      `the header declares ${sizes[0]} ${kind}; at most ${limits.count} are expected ${hint}`,
    );
  }
  if (kind === "images" && (sizes[1] > limits.height || sizes[2] > limits.width)) {
    throw new DataFormatError(
      file,
      `the header declares images of ${sizes[1]} x ${sizes[2]} pixels; at most ` +
        `${limits.height} x ${limits.width} are expected ${hint}`,
    );
  }
}

/**
 * Reads an IDX file's header, checks it against the limits, then reads exactly the data it
 * declares: a view of plain bytes, or gzip inflated into one array of that size, stopping as soon
 * as the stream yields more.
 */
async function parseIdx(
  bytes: Uint8Array,
  options: IdxParseOptions,
  fn: string,
  magic: number,
  dims: number,
  kind: "images" | "labels",
): Promise<{ sizes: number[]; data: Uint8Array }> {
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`${fn}: bytes must be a Uint8Array, got ${typeof bytes}`);
  }
  const file = options.file ?? "<bytes>";
  const limits = checkLimits(options.limits, fn);
  const header = 4 + 4 * dims;
  const r = new ByteReader(bytes, file);
  try {
    const head = await r.read(header);
    const sizes = checkHeader(head, file, magic, dims, kind);
    if (kind === "images" && (sizes[1] === 0 || sizes[2] === 0)) {
      throw new DataFormatError(file, `declares images of ${sizes[1]} x ${sizes[2]} pixels`);
    }
    checkSizes(file, sizes, limits, kind);
    const n = sizes.reduce((a, v) => a * v, 1);
    const known = r.remainingKnown;
    if (known !== null) {
      checkLength(header + known, file, header, sizes, kind);
      return { sizes, data: await r.read(n) };
    }
    const data = await r.read(n);
    checkLength(header + data.length, file, header, sizes, kind);
    if (!(await r.atEnd())) {
      throw new DataFormatError(
        file,
        `inflates to more than the ${header + n} bytes its header declares (${
          sizes.join(" x ")
        } ${kind}): corrupt or not an IDX file; delete it and get it again`,
      );
    }
    return { sizes, data };
  } finally {
    await r.close();
  }
}

/**
 * Parses an IDX images file (`train-images-idx3-ubyte[.gz]`, `t10k-images-idx3-ubyte[.gz]`),
 * gzipped or plain. The header's dimensions are checked against `limits` (default 60000 images of
 * at most 28 x 28) before anything is allocated, and gzip stops inflating as soon as it yields
 * more than the header declares.
 *
 * @throws {DataFormatError} naming the file: bad magic number, dimension count, dimensions over
 * the limits, truncated or oversized data, corrupt gzip.
 * @example
 * ```ts
 * import { parseIdxImages } from "@modern-cnn/webgpu/data";
 * const bytes = await Deno.readFile("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz");
 * const { count, height, width, data } = await parseIdxImages(bytes, { file: "t10k-images" });
 * console.log(count, height, width, data.length); // 10000 28 28 7840000
 * ```
 */
export async function parseIdxImages(
  bytes: Uint8Array,
  options: IdxParseOptions = {},
): Promise<IdxImages> {
  const { sizes, data } = await parseIdx(
    bytes,
    options,
    "parseIdxImages",
    IMAGES_MAGIC,
    3,
    "images",
  );
  const [count, height, width] = sizes;
  return { count, height, width, data };
}

/**
 * Parses an IDX labels file (`train-labels-idx1-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`),
 * gzipped or plain, bounded as {@linkcode parseIdxImages} (default at most 60000 labels).
 *
 * @throws {DataFormatError} naming the file: bad magic number, a count over the limit, truncated
 * or oversized data, corrupt gzip.
 * @example
 * ```ts
 * import { parseIdxLabels } from "@modern-cnn/webgpu/data";
 * const bytes = await Deno.readFile("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz");
 * const labels = await parseIdxLabels(bytes, { file: "t10k-labels" });
 * console.log(labels.length, labels[0]); // 10000 9
 * ```
 */
export async function parseIdxLabels(
  bytes: Uint8Array,
  options: IdxParseOptions = {},
): Promise<Uint8Array> {
  const { data } = await parseIdx(bytes, options, "parseIdxLabels", LABELS_MAGIC, 1, "labels");
  return data;
}

/**
 * Checks that an images file and a labels file describe the same examples and that every label
 * is below `classes`.
 *
 * @throws {DataFormatError} naming both files on a count mismatch, or the labels file on a bad
 * label.
 * @example
 * ```ts
 * import { checkIdxPair } from "./idx.ts";
 * checkIdxPair({ count: 2, height: 1, width: 1, data: new Uint8Array(2) }, new Uint8Array([0, 9]), {
 *   imagesFile: "a", labelsFile: "b", classes: 10,
 * });
 * ```
 */
export function checkIdxPair(
  images: IdxImages,
  labels: Uint8Array,
  options: { imagesFile?: string; labelsFile?: string; classes?: number } = {},
): void {
  const imagesFile = options.imagesFile ?? "<images>";
  const labelsFile = options.labelsFile ?? "<labels>";
  if (images.count !== labels.length) {
    throw new DataFormatError(
      labelsFile,
      `has ${labels.length} labels but ${imagesFile} has ${images.count} images ` +
        "(files from different data sets or splits?)",
    );
  }
  const classes = options.classes ?? 256;
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] >= classes) {
      throw new DataFormatError(
        labelsFile,
        `label ${labels[i]} of example ${i} is out of range: expected 0..${classes - 1}`,
      );
    }
  }
}
