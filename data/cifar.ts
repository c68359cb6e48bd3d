/**
 * CIFAR-10 binary batches (`data_batch_1.bin` .. `data_batch_5.bin`, `test_batch.bin`): each
 * record is 1 label byte then 3072 pixel bytes, 1024 per channel (R, G, B), rows of 32. Also a
 * minimal reader of the official `cifar-10-binary.tar.gz` archive. Pure functions over bytes.
 *
 * @module
 */

import { ByteReader } from "./_inflate.ts";
import { DataFormatError, DEFAULT_MAX_BYTES, type ParseOptions } from "./idx.ts";

/** Bytes of one CIFAR-10 image (3 x 32 x 32, CHW). */
export const CIFAR_IMAGE_BYTES = 3072;
/** Bytes of one CIFAR-10 record (label + image). */
export const CIFAR_RECORD_BYTES = 3073;

/** The official CIFAR-10 batch files of each split. */
export const CIFAR_FILES: {
  readonly train: readonly string[];
  readonly test: readonly string[];
} = {
  train: [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
  ],
  test: ["test_batch.bin"],
};

/** Records parsed from a CIFAR-10 binary batch. */
export interface CifarBatch {
  /** Number of records. */
  readonly count: number;
  /** Images `[count, 3, 32, 32]`. */
  readonly images: Uint8Array;
  /** Labels `[count]`, 0..9. */
  readonly labels: Uint8Array;
}

/**
 * Parses a CIFAR-10 binary batch.
 *
 * @throws {DataFormatError} naming the file: empty, not a whole number of 3073-byte records
 * (truncated), or a label above 9 (another format, e.g. CIFAR-100's 2-label records).
 * @example
 * ```ts
 * import { parseCifarBatch } from "@modern-cnn/webgpu/data";
 * const record = new Uint8Array(3073);
 * record[0] = 7; // horse
 * const { count, labels } = parseCifarBatch(record, { file: "one.bin" });
 * console.log(count, labels[0]); // 1 7
 * ```
 */
export function parseCifarBatch(bytes: Uint8Array, options: ParseOptions = {}): CifarBatch {
  const file = options.file ?? "<bytes>";
  if (bytes.length === 0) throw new DataFormatError(file, "is empty");
  if (bytes.length % CIFAR_RECORD_BYTES !== 0) {
    const whole = Math.floor(bytes.length / CIFAR_RECORD_BYTES);
    throw new DataFormatError(
      file,
      `is ${bytes.length} bytes, not a whole number of ${CIFAR_RECORD_BYTES}-byte records ` +
        `(1 label + 3072 pixels): ${whole} records and ${bytes.length % CIFAR_RECORD_BYTES} ` +
        "bytes left over (truncated, or not a CIFAR-10 binary batch)",
    );
  }
  const count = bytes.length / CIFAR_RECORD_BYTES;
  const images = new Uint8Array(count * CIFAR_IMAGE_BYTES);
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    const at = i * CIFAR_RECORD_BYTES;
    const label = bytes[at];
    if (label > 9) {
      throw new DataFormatError(
        file,
        `record ${i} has label ${label}; CIFAR-10 labels are 0..9 (is this CIFAR-100 or ` +
          "another format?)",
      );
    }
    labels[i] = label;
    images.set(bytes.subarray(at + 1, at + CIFAR_RECORD_BYTES), i * CIFAR_IMAGE_BYTES);
  }
  return { count, images, labels };
}

/**
 * Concatenates parsed batches (e.g. the five training batches) into one.
 *
 * @example
 * ```ts
 * import { concatCifar, parseCifarBatch } from "./cifar.ts";
 * const a = parseCifarBatch(new Uint8Array(3073));
 * console.log(concatCifar([a, a]).count); // 2
 * ```
 */
export function concatCifar(batches: readonly CifarBatch[]): CifarBatch {
  const count = batches.reduce((s, b) => s + b.count, 0);
  const images = new Uint8Array(count * CIFAR_IMAGE_BYTES);
  const labels = new Uint8Array(count);
  let at = 0;
  for (const b of batches) {
    images.set(b.images, at * CIFAR_IMAGE_BYTES);
    labels.set(b.labels, at);
    at += b.count;
  }
  return { count, images, labels };
}

/**
 * The regular files of a tar archive (ustar/GNU; gzipped or plain), by path. Enough for the
 * official `cifar-10-binary.tar.gz`. Gzip is inflated as a stream; each entry's declared size is
 * checked against `maxBytes` (default 256 MiB, for the whole archive)
 * before it is allocated, and reading stops at the end-of-archive blocks.
 *
 * @throws {DataFormatError} naming the file when the archive is truncated or corrupt, or larger
 * than `maxBytes`.
 * @example
 * ```ts
 * import { readTar } from "@modern-cnn/webgpu/data";
 * const bytes = await Deno.readFile("cifar-10-binary.tar.gz").catch(() => null); // if downloaded
 * if (bytes) console.log([...(await readTar(bytes)).keys()]); // ["cifar-10-batches-bin/data_batch_1.bin", ...]
 * ```
 */
export async function readTar(
  bytes: Uint8Array,
  options: ParseOptions = {},
): Promise<Map<string, Uint8Array>> {
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`readTar: bytes must be a Uint8Array, got ${typeof bytes}`);
  }
  const file = options.file ?? "<bytes>";
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
  if (!(maxBytes === Infinity || (Number.isSafeInteger(maxBytes) && maxBytes > 0))) {
    throw new RangeError(
      `readTar: maxBytes must be a positive integer or Infinity, got ${maxBytes}`,
    );
  }
  const out = new Map<string, Uint8Array>();
  const decoder = new TextDecoder();
  const r = new ByteReader(bytes, file);
  const tooLarge = (what: string) =>
    new DataFormatError(
      file,
      `${what} past ${maxBytes} bytes, the limit for the archive (corrupt, or not the expected ` +
        "archive)",
    );
  try {
    let longName: string | null = null;
    while (true) {
      const at = r.position;
      if (at + 512 > maxBytes) throw tooLarge("the archive goes on");
      const header = await r.read(512);
      if (header.length < 512) break;
      if (header.every((v) => v === 0)) break; // end of archive
      const text = (from: number, len: number) => {
        let end = from;
        while (end < from + len && header[end] !== 0) end++;
        return decoder.decode(header.subarray(from, end));
      };
      let sum = 0;
      for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : header[i];
      const stored = parseInt(text(148, 8).trim(), 8);
      if (stored !== sum) {
        throw new DataFormatError(file, `tar header at byte ${at} has a bad checksum (corrupt)`);
      }
      const sizeField = text(124, 12).trim() || "0";
      const size = /^[0-7]+$/.test(sizeField) ? parseInt(sizeField, 8) : NaN;
      const prefix = text(345, 155);
      let name = longName ?? (prefix ? `${prefix}/${text(0, 100)}` : text(0, 100));
      longName = null;
      if (!Number.isSafeInteger(size)) {
        throw new DataFormatError(
          file,
          `tar entry ${name.slice(0, 100)} has a bad size field '${sizeField}' (corrupt)`,
        );
      }
      if (at + 512 + size > maxBytes) {
        throw tooLarge(`tar entry ${name.slice(0, 100)} declares ${size} bytes, which go on`);
      }
      const type = String.fromCharCode(header[156] || 48);
      const keep = type === "L" || type === "0" || type === "7";
      const got = keep ? await r.read(size) : null;
      const length = got ? got.length : await r.skip(size);
      if (length < size) {
        throw new DataFormatError(
          file,
          `truncated: tar entry ${name.slice(0, 100)} needs ${size} bytes, ${length} are left`,
        );
      }
      if (type === "L") {
        longName = decoder.decode(got!).replace(/\0.*$/s, "");
      } else if (got) {
        if (name.startsWith("./")) name = name.slice(2);
        out.set(name, got);
      }
      await r.skip((512 - (size % 512)) % 512);
    }
  } finally {
    await r.close();
  }
  return out;
}
