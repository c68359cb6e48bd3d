/**
 * {@linkcode loadImageFolder}: an image-folder data set on disk (as torchvision's `ImageFolder`):
 * one subfolder of PNG or JPEG images per class, or `train/` and `test/` (or `val/`) folders of
 * those. The folder is walked here (Deno's file system); grouping, splitting, decoding and the
 * stored size are `image_folder_plan.ts`'s, shared with the browser demo.
 *
 * @module
 */

import { folderProblem } from "./folder.ts";
import type { Dataset } from "./dataset.ts";
import { DataFormatError } from "./idx.ts";
import { ImageDecodeError } from "./image.ts";
import { type ImageFolderOptions, readImageFolder } from "./image_folder_plan.ts";

export type { ImageFolderOptions } from "./image_folder_plan.ts";

/** Options of {@linkcode loadImageFolder}: the split, and how the folder is read. */
export interface LoadImageFolderOptions extends ImageFolderOptions {
  /** The split to load. */
  readonly split: "train" | "test";
}

/** The most entries (files and folders) walked, and the deepest nesting followed. */
const MAX_ENTRIES = 2_000_000;
const MAX_DEPTH = 32;
/** The largest image file read: far above any PNG or JPEG of 4096 x 4096 pixels. */
const MAX_FILE_BYTES = 512 * 2 ** 20;

/** Every file and folder (folders with a trailing `/`) under `root`, relative, sorted. */
async function walk(root: string): Promise<string[]> {
  const out: string[] = [];
  const visit = async (rel: string, depth: number): Promise<void> => {
    if (depth > MAX_DEPTH) {
      throw new DataFormatError(
        `${root}/${rel}`,
        `is nested more than ${MAX_DEPTH} folders deep (a symbolic link loop?)`,
      );
    }
    const dir = rel === "" ? root : `${root}/${rel}`;
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(dir));
    } catch (err) {
      const why = err instanceof Deno.errors.PermissionDenied
        ? "permission denied; chmod u+rx it"
        : (err as Error).message.split("\n")[0].slice(0, 120);
      throw new DataFormatError(dir, `cannot be read (${why})`);
    }
    for (const e of entries) {
      if (e.name.startsWith(".")) continue;
      const path = rel === "" ? e.name : `${rel}/${e.name}`;
      let isDir = e.isDirectory;
      if (e.isSymlink) {
        isDir = await Deno.stat(`${root}/${path}`).then((s) => s.isDirectory, () => false);
      }
      if (out.push(isDir ? `${path}/` : path) > MAX_ENTRIES) {
        throw new DataFormatError(root, `holds more than ${MAX_ENTRIES} files and folders`);
      }
      if (isDir) await visit(path, depth + 1);
    }
  };
  await visit("", 0);
  return out.sort();
}

/** Reads one image file; a file that cannot be read is an {@linkcode ImageDecodeError}. */
async function readImage(file: string): Promise<Uint8Array> {
  try {
    const size = (await Deno.stat(file)).size;
    if (size > MAX_FILE_BYTES) {
      throw new ImageDecodeError(
        file,
        `is ${size} bytes, more than the ${MAX_FILE_BYTES} an image file may be; remove it`,
      );
    }
    return await Deno.readFile(file);
  } catch (err) {
    if (err instanceof ImageDecodeError) throw err;
    const why = err instanceof Deno.errors.PermissionDenied
      ? "permission denied; chmod u+r it, or remove it"
      : `${(err as Error).message.split("\n")[0].slice(0, 120)}; remove it`;
    throw new ImageDecodeError(file, `cannot be read (${why})`);
  }
}

/**
 * Loads one split of an image folder on disk into memory, as `loadDataset` loads Fashion-MNIST:
 * u8 images `[count, channels, height, width]` at one stored size, labels, and the class names
 * (the sorted class-folder names). Layouts: `PATH/CLASS/...` (each class split into train and
 * test by `testFraction`, default 0.2, seeded by `splitSeed`), or `PATH/train/CLASS/...` with
 * `PATH/test/CLASS/...` (or `val/`). PNG and JPEG of any size, gray or RGB; stored with 3
 * channels when any image is colour (else 1) at the most common size (shrunk to fit 256 x 256),
 * unless `channels` and `size` say otherwise. Both splits get the same size and channels. See
 * `image_folder_plan.ts` for how images are resized to the stored size.
 *
 * @throws {DataFormatError} naming the folder: it does not exist or cannot be read, has no class
 * subfolders, a class with no images, an unsupported image format, or is too large to store.
 * @throws {ImageDecodeError} naming an image that cannot be read or decoded.
 * @example
 * ```ts
 * import { loadImageFolder } from "@modern-cnn/webgpu/data";
 * import { encode } from "fast-png";
 * const root = await Deno.makeTempDir();
 * for (const [cls, v] of [["cat", 40], ["dog", 200]] as const) {
 *   await Deno.mkdir(`${root}/${cls}`);
 *   const png = encode({ width: 4, height: 4, data: new Uint8Array(16).fill(v), channels: 1, depth: 8 });
 *   for (let i = 0; i < 5; i++) await Deno.writeFile(`${root}/${cls}/${i}.png`, png);
 * }
 * const train = await loadImageFolder(root, { split: "train" });
 * console.log(train.count, train.classes, train.channels, train.height); // 8 ["cat", "dog"] 1 4
 * ```
 */
export async function loadImageFolder(
  path: string,
  options: LoadImageFolderOptions,
): Promise<Dataset> {
  if (typeof path !== "string" || path === "") {
    throw new TypeError(`loadImageFolder: path must be a folder's path, got ${path}`);
  }
  const root = path.length > 1 ? path.replace(/\/+$/, "") : path;
  const problem = await folderProblem(root);
  if (problem) {
    throw new DataFormatError(
      root,
      `${problem}; an image folder holds one subfolder of PNG or JPEG images per class`,
    );
  }
  const paths = await walk(root);
  return await readImageFolder(root, paths, (rel) => readImage(`${root}/${rel}`), options);
}
