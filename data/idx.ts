/**
 * IDX files (MNIST, Fashion-MNIST): parsing of image and label files, gzipped or plain. Pure
 * functions over bytes (no file system), so a browser can use them on fetched data.
 *
 * Format: a big-endian header — magic `0x00000803` (u8 data, 3 dimensions) for images,
 * `0x00000801` for labels — then one u32 size per dimension, then the u8 data.
 *
 * @module
 */

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
   * throw new DataFormatError("a.bin", "is empty");
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
}

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
 * import { isGzip } from "@modern-cnn/webgpu/data";
 * isGzip(new Uint8Array([0x1f, 0x8b, 8])); // true
 * ```
 */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

/**
 * Decompresses gzip bytes with the standard `DecompressionStream("gzip")` (Deno and browsers).
 *
 * @throws {DataFormatError} naming the file when the data is corrupt or truncated.
 * @example
 * ```ts
 * import { gunzip } from "@modern-cnn/webgpu/data";
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
  try {
    const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream()
      .pipeThrough(new DecompressionStream("gzip"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  } catch (err) {
    throw new DataFormatError(
      file,
      `gzip data is corrupt or truncated (${(err as Error).message}); delete the file and get it ` +
        "again",
    );
  }
}

/** The bytes, decompressed when they are gzip. */
async function plain(bytes: Uint8Array, file: string): Promise<Uint8Array> {
  return isGzip(bytes) ? await gunzip(bytes, { file }) : bytes;
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

function checkLength(b: Uint8Array, file: string, header: number, sizes: number[], kind: string) {
  const expected = header + sizes.reduce((a, v) => a * v, 1);
  if (b.length < expected) {
    throw new DataFormatError(
      file,
      `truncated: the header declares ${sizes.join(" x ")} ${kind} (${expected} bytes), the file ` +
        `has ${b.length} bytes`,
    );
  }
  if (b.length > expected) {
    throw new DataFormatError(
      file,
      `has ${b.length - expected} bytes after the ${sizes.join(" x ")} ${kind} its header ` +
        "declares (corrupt or not an IDX file)",
    );
  }
}

/**
 * Parses an IDX images file (`train-images-idx3-ubyte[.gz]`, `t10k-images-idx3-ubyte[.gz]`),
 * gzipped or plain.
 *
 * @throws {DataFormatError} naming the file: bad magic number, dimension count, truncated or
 * oversized data, corrupt gzip.
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
  options: ParseOptions = {},
): Promise<IdxImages> {
  const file = options.file ?? "<bytes>";
  const b = await plain(bytes, file);
  const [count, height, width] = checkHeader(b, file, IMAGES_MAGIC, 3, "images");
  if (height === 0 || width === 0) {
    throw new DataFormatError(file, `declares images of ${height} x ${width} pixels`);
  }
  checkLength(b, file, 16, [count, height, width], "images");
  return { count, height, width, data: b.subarray(16) };
}

/**
 * Parses an IDX labels file (`train-labels-idx1-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`),
 * gzipped or plain.
 *
 * @throws {DataFormatError} naming the file: bad magic number, truncated or oversized data,
 * corrupt gzip.
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
  options: ParseOptions = {},
): Promise<Uint8Array> {
  const file = options.file ?? "<bytes>";
  const b = await plain(bytes, file);
  const [count] = checkHeader(b, file, LABELS_MAGIC, 1, "labels");
  checkLength(b, file, 8, [count], "labels");
  return b.subarray(8);
}

/**
 * Checks that an images file and a labels file describe the same examples and that every label
 * is below `classes`.
 *
 * @throws {DataFormatError} naming both files on a count mismatch, or the labels file on a bad
 * label.
 * @example
 * ```ts
 * import { checkIdxPair } from "@modern-cnn/webgpu/data";
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
