/**
 * The files of each file data set: the names of a split's files, the official mirrors and the
 * MD5 checksums of the downloadable ones. Plain facts (no I/O), shared by the locator
 * (`locate.ts`), the folder lookup (`folder.ts`) and the downloader (`download.ts`).
 *
 * @module
 */

import { CIFAR_FILES } from "./cifar.ts";
import { IDX_FILES } from "./idx.ts";

/** Data sets that come from files. */
export type FileDatasetName = "fashion-mnist" | "mnist" | "cifar10";

/** A split of a data set. */
export type Split = "train" | "test";

/** Official mirrors (base URLs) and MD5 checksums of the downloadable files. */
export const DOWNLOADS: Readonly<
  Record<FileDatasetName, {
    readonly mirrors: readonly string[];
    readonly md5: Readonly<Record<string, string>>;
  }>
> = {
  "fashion-mnist": {
    mirrors: [
      "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
      "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ],
    md5: {
      "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
      "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
      "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
      "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
  },
  mnist: {
    mirrors: [
      "https://ossci-datasets.s3.amazonaws.com/mnist/",
      "http://yann.lecun.com/exdb/mnist/",
    ],
    md5: {
      "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
      "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
      "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
      "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
  },
  cifar10: {
    mirrors: ["https://www.cs.toronto.edu/~kriz/"],
    md5: { "cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530" },
  },
};

/** The CIFAR-10 archive's name. */
export const CIFAR_ARCHIVE = "cifar-10-binary.tar.gz";

/** A split's files as found in (or downloaded into) one folder. */
export interface FoundFiles {
  /** The folder holding them. */
  readonly dir: string;
  /**
   * What the paths are: IDX `[images, labels]`, CIFAR batches, or the CIFAR archive (one path).
   */
  readonly format: "idx" | "cifar-bin" | "cifar-tar";
  /** Full paths of the files. */
  readonly paths: readonly string[];
}

/**
 * The file names (IDX without `.gz`) a split needs.
 *
 * @example
 * ```ts
 * import { neededFiles } from "./files.ts";
 * neededFiles("mnist", "test"); // ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
 * ```
 */
export function neededFiles(name: FileDatasetName, split: Split): string[] {
  if (name === "cifar10") return [...CIFAR_FILES[split]];
  return [IDX_FILES[split].images, IDX_FILES[split].labels];
}
