/**
 * An image-folder data set (as torchvision's `ImageFolder`) from a list of relative file paths
 * and a function that reads one: which files are images of which class and split
 * ({@linkcode planImageFolder}), the one size and channel count they are stored at, and the
 * decoded, resized u8 set ({@linkcode readImageFolder}). Pure (no Deno API): `image_folder.ts`
 * reads a folder on disk with it, the demo page the `File`s of an `<input type=file
 * webkitdirectory>`.
 *
 * Layouts: `ROOT/CLASS/.../IMAGE` (every class folder split into train and test by
 * `testFraction`, per class, seeded), or `ROOT/train/CLASS/...` with `ROOT/test/CLASS/...` (or
 * `val/`), used as they are. Class names are the sorted class-folder names; a label is the index
 * of its class in that order. Images are `.png`, `.jpg` and `.jpeg` files (any case); other files
 * and names starting with `.` are skipped, and GIF, WebP, BMP, TIFF, HEIC and AVIF files are
 * refused (convert them).
 *
 * Stored size: the trainer keeps one `[count, channels, height, width]` u8 array on the GPU and
 * resizes each batch from it bilinearly (`prepareBatch`), so images of other sizes are resized on
 * the host once, stretched to the stored size (no crop, which could cut the object out, and no
 * letterbox bars, which a network could learn from): an area average per output pixel when
 * shrinking (a box filter, as PIL's `BOX` and torch's `area`, free of aliasing) and bilinear
 * interpolation with half-pixel centres when enlarging (as `prepareBatch`). An image of the stored
 * size is copied as it is.
 *
 * @module
 */

import type { Dataset } from "./dataset.ts";
import { DataFormatError } from "./idx.ts";
import { decodeImage, imageSize, MAX_IMAGE_PIXELS } from "./image.ts";

/** Options of {@linkcode readImageFolder} (and `loadImageFolder`). */
export interface ImageFolderOptions {
  /** The fraction of each class held out as the test split, in [0, 1); default 0.2. */
  readonly testFraction?: number;
  /** The seed of the split and of the examples' order; default 0 (not the training seed). */
  readonly splitSeed?: number;
  /**
   * The stored size: `N` (N x N) or `[height, width]`; default the most common size among the
   * images (the first in file order on a tie), shrunk to fit 256 x 256 keeping its aspect.
   */
  readonly size?: number | readonly [number, number];
  /** Channels stored: 1 (gray by luma) or 3; default 3 when any image is colour, else 1. */
  readonly channels?: 1 | 3;
  /** Keep only the first `limit` examples of the split (they come in a seeded mixed order). */
  readonly limit?: number;
  /** The most pixels one image may have; default 4096 x 4096. */
  readonly maxPixels?: number;
  /** The most bytes the stored split may take; default 1 GiB. */
  readonly maxBytes?: number;
}

/** One image file of a plan. */
export interface FolderItem {
  /** Its path relative to the root, `/`-separated. */
  readonly path: string;
  /** Its class index. */
  readonly label: number;
}

/** What a folder holds: classes and the image files of each split. */
export interface FolderPlan {
  /** `classes` (one folder per class) or `train-test` (`train/` and `test/` or `val/`). */
  readonly layout: "classes" | "train-test";
  /** Class names, sorted; labels index them. */
  readonly classes: readonly string[];
  /** The training split's images, in a seeded mixed order. */
  readonly train: readonly FolderItem[];
  /** The test split's images, in a seeded mixed order. */
  readonly test: readonly FolderItem[];
  /** Files that are not images (skipped). */
  readonly skipped: number;
}

/** The default of {@linkcode ImageFolderOptions.maxBytes}: 1 GiB. */
export const MAX_FOLDER_BYTES: number = 2 ** 30;

/** The longest side the default stored size has. */
export const DEFAULT_MAX_SIDE = 256;

const IMAGE_EXT = /\.(png|jpe?g)$/i;
const UNSUPPORTED_EXT = /\.(gif|webp|bmp|tiff?|heic|heif|avif)$/i;
const TEST_DIRS = ["test", "val"];

/** A string's FNV-1a hash, to seed each class's split by its name. */
function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** A seeded permutation of `0..n-1` (Fisher-Yates over a SplitMix32 stream). */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = [...items];
  let state = (seed ^ 0x2545f491) >>> 0;
  for (let i = out.length - 1; i > 0; i--) {
    let z = (state = (state + 0x9e3779b9) >>> 0);
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    z = (z ^ (z >>> 16)) >>> 0;
    const j = Math.floor((z / 4294967296) * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

const byCodeUnit = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * The entries under each first-level folder of `paths` (relative, `/`-separated; folders end
 * with `/`): image files, and sub-folders (ending with `/`). A folder without images has an
 * entry with none.
 */
function group(
  root: string,
  paths: readonly string[],
): { folders: Map<string, string[]>; skipped: number } {
  const folders = new Map<string, string[]>();
  let skipped = 0;
  for (const path of paths) {
    const dir = path.endsWith("/");
    const parts = path.split("/").filter((p) => p !== "");
    if (parts.length === 0 || parts.some((p) => p.startsWith("."))) {
      skipped += dir ? 0 : 1;
      continue;
    }
    const list = folders.get(parts[0]) ?? [];
    if (dir) {
      folders.set(parts[0], list);
      if (parts.length > 1) list.push(`${parts.join("/")}/`);
      continue;
    }
    const file = parts[parts.length - 1];
    if (parts.length < 2) {
      skipped++; // a file beside the class folders
      continue;
    }
    if (UNSUPPORTED_EXT.test(file)) {
      const ext = file.slice(file.lastIndexOf(".") + 1).toUpperCase();
      throw new DataFormatError(
        `${root}/${parts.join("/")}`,
        `${ext} images are not supported, only PNG and JPEG: convert it, or remove it`,
      );
    }
    if (!IMAGE_EXT.test(file)) {
      skipped++;
      continue;
    }
    list.push(parts.join("/"));
    folders.set(parts[0], list);
  }
  return { folders, skipped };
}

/** The image files of a class's entries, sorted; refuses a class with none. */
function imagesOf(root: string, name: string, entries: readonly string[]): string[] {
  const files = entries.filter((p) => !p.endsWith("/")).sort(byCodeUnit);
  if (files.length === 0) {
    throw new DataFormatError(
      `${root}/${name}`,
      "is a class folder with no PNG or JPEG images; add its images, or remove the folder",
    );
  }
  return files;
}

function checkOptions(o: ImageFolderOptions): void {
  const f = o.testFraction;
  if (f !== undefined && !(typeof f === "number" && f >= 0 && f < 1)) {
    throw new RangeError(`image folder: testFraction must be in [0, 1), got ${f}`);
  }
  const s = o.splitSeed;
  if (s !== undefined && !(Number.isInteger(s) && s >= 0 && s <= 0xffffffff)) {
    throw new RangeError(`image folder: splitSeed must be an integer in [0, 2^32), got ${s}`);
  }
  if (o.size !== undefined) {
    const [h, w] = typeof o.size === "number" ? [o.size, o.size] : o.size;
    if (![h, w].every((v) => Number.isInteger(v) && v >= 1 && v <= 4096)) {
      throw new RangeError(
        `image folder: size must be N or [height, width] of integers in [1, 4096], got ${
          JSON.stringify(o.size)
        }`,
      );
    }
  }
  if (o.channels !== undefined && o.channels !== 1 && o.channels !== 3) {
    throw new RangeError(`image folder: channels must be 1 or 3, got ${o.channels}`);
  }
  if (o.limit !== undefined && !(Number.isInteger(o.limit) && o.limit >= 1)) {
    throw new RangeError(`image folder: limit must be a positive integer, got ${o.limit}`);
  }
}

/**
 * Groups the image files of a folder into classes and splits, from their paths relative to the
 * root (`/`-separated; e.g. `cat/001.jpg` or `train/cat/001.jpg`). Each class's files are split
 * by a seeded permutation of its sorted file list, so the split does not depend on the order the
 * files were listed in nor on the other classes; each split comes in a seeded mixed order.
 *
 * @throws {DataFormatError} naming the root or a folder: no class folders, a class without
 * images, a test class that has no training folder, more than 256 classes, an unsupported image
 * format (by extension).
 * @example
 * ```ts
 * import { planImageFolder } from "./image_folder_plan.ts";
 * const plan = planImageFolder("pets", ["dog/1.png", "cat/a.jpg", "cat/b.jpg", "notes.txt"], {
 *   testFraction: 0.5,
 * });
 * console.log(plan.classes, plan.train.length, plan.test.length); // ["cat", "dog"] 2 1
 * ```
 */
export function planImageFolder(
  root: string,
  paths: readonly string[],
  options: ImageFolderOptions = {},
): FolderPlan {
  checkOptions(options);
  const seed = options.splitSeed ?? 0;
  const { folders: top, skipped } = group(root, paths);
  const fix = "an image folder holds one subfolder of PNG or JPEG images per class " +
    `(${root}/CLASS/IMAGE.png), or train/ and test/ folders of those`;
  const testDir = TEST_DIRS.find((d) => top.has(d));
  const filesIn = (d: string) => (top.get(d) ?? []).filter((p) => !p.endsWith("/"));
  // train/ and test/ (or val/) whose images all lie in class sub-folders: the split layout.
  const splitLayout = top.has("train") && testDir !== undefined &&
    [...filesIn("train"), ...filesIn(testDir)].every((p) => p.split("/").length >= 3) &&
    (top.get("train")!.length > 0);
  let classes: string[];
  const train: FolderItem[] = [], test: FolderItem[] = [];
  if (splitLayout) {
    if (options.testFraction !== undefined) {
      throw new RangeError(
        `image folder ${root}: testFraction has no effect, the folder has train/ and ${testDir}/ ` +
          "splits; leave it out",
      );
    }
    const sub = (dir: string) =>
      group(`${root}/${dir}`, top.get(dir)!.map((p) => p.slice(dir.length + 1))).folders;
    const tr = sub("train"), te = sub(testDir!);
    classes = [...tr.keys()].sort(byCodeUnit);
    if (classes.length === 0) {
      throw new DataFormatError(`${root}/train`, `has no class subfolders with images; ${fix}`);
    }
    for (const c of te.keys()) {
      if (!tr.has(c)) {
        throw new DataFormatError(
          `${root}/${testDir}/${c}`,
          `is a class with no folder in ${root}/train/: add ${root}/train/${c}/ with its ` +
            "training images, or remove it",
        );
      }
    }
    classes.forEach((c, label) => {
      for (const p of imagesOf(`${root}/train`, c, tr.get(c)!)) {
        train.push({ path: `train/${p}`, label });
      }
      if (!te.has(c)) return; // a class may have no test images
      for (const p of imagesOf(`${root}/${testDir}`, c, te.get(c)!)) {
        test.push({ path: `${testDir}/${p}`, label });
      }
    });
  } else {
    classes = [...top.keys()].sort(byCodeUnit);
    if (classes.length === 0) {
      throw new DataFormatError(root, `has no class subfolders with images; ${fix}`);
    }
    const fraction = options.testFraction ?? 0.2;
    classes.forEach((c, label) => {
      const files = imagesOf(root, c, top.get(c)!);
      const n = files.length;
      const nTest = Math.min(n - 1, Math.round(n * fraction));
      const held = new Set(shuffled(files, (seed ^ hash(c)) >>> 0).slice(0, nTest));
      for (const path of files) (held.has(path) ? test : train).push({ path, label });
    });
  }
  if (classes.length > 256) {
    throw new DataFormatError(
      root,
      `has ${classes.length} class folders, more than the 256 labels a byte holds`,
    );
  }
  return {
    layout: splitLayout ? "train-test" : "classes",
    classes,
    train: shuffled(train, seed ^ 0x7f4a7c15),
    test: shuffled(test, seed ^ 0x1b873593),
    skipped,
  };
}

/**
 * The stored size by default: the most common size of `sizes` (the first on a tie), shrunk to
 * fit `maxSide` x `maxSide` keeping its aspect ratio.
 *
 * @example
 * ```ts
 * import { defaultStoredSize } from "./image_folder_plan.ts";
 * const sizes = [{ width: 640, height: 480 }, { width: 640, height: 480 }, { width: 32, height: 32 }];
 * console.log(defaultStoredSize(sizes)); // [192, 256]
 * ```
 */
export function defaultStoredSize(
  sizes: readonly { readonly width: number; readonly height: number }[],
  maxSide = DEFAULT_MAX_SIDE,
): [number, number] {
  const counts = new Map<string, number>();
  let best = "", bestN = 0;
  for (const s of sizes) {
    const key = `${s.height}x${s.width}`;
    const n = (counts.get(key) ?? 0) + 1;
    counts.set(key, n);
    if (n > bestN) [best, bestN] = [key, n];
  }
  const [h, w] = best.split("x").map(Number);
  const scale = Math.min(1, maxSide / Math.max(h, w));
  return [Math.max(1, Math.round(h * scale)), Math.max(1, Math.round(w * scale))];
}

/** For each output index, its source indices and weights (area when shrinking, else bilinear). */
function taps(src: number, dst: number): { index: number[]; weight: number[] }[] {
  const scale = src / dst;
  return Array.from({ length: dst }, (_, o) => {
    const index: number[] = [], weight: number[] = [];
    if (scale > 1) {
      const lo = o * scale, hi = (o + 1) * scale;
      for (let i = Math.floor(lo); i < Math.min(src, Math.ceil(hi)); i++) {
        const cover = Math.min(hi, i + 1) - Math.max(lo, i);
        if (cover > 0) [index.push(i), weight.push(cover / scale)];
      }
    } else {
      const r = Math.min(Math.max((o + 0.5) * scale - 0.5, 0), src - 1);
      const i0 = Math.floor(r), t = r - i0;
      index.push(i0);
      weight.push(1 - t);
      if (t > 0) [index.push(i0 + 1), weight.push(t)];
    }
    return { index, weight };
  });
}

/**
 * Resizes u8 planes `[channels, h, w]` to `[channels, outH, outW]`, each axis on its own: an area
 * average when shrinking, bilinear interpolation (half-pixel centres, edges clamped) when
 * enlarging; the same size is a copy.
 *
 * @example
 * ```ts
 * import { resizePlanes } from "./image_folder_plan.ts";
 * const out = resizePlanes(new Uint8Array([0, 100, 200, 255]), { channels: 1, height: 1, width: 4 }, [1, 2]);
 * console.log(out); // Uint8Array [50, 228]
 * ```
 */
export function resizePlanes(
  data: Uint8Array,
  from: { readonly channels: number; readonly height: number; readonly width: number },
  to: readonly [number, number],
): Uint8Array {
  const { channels, height: h, width: w } = from;
  const [H, W] = to;
  if (h === H && w === W) return data.slice();
  const tx = taps(w, W), ty = taps(h, H);
  const rows = new Float64Array(h * W);
  const out = new Uint8Array(channels * H * W);
  for (let c = 0; c < channels; c++) {
    const plane = c * h * w;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < W; x++) {
        const { index, weight } = tx[x];
        let s = 0;
        for (let k = 0; k < index.length; k++) s += weight[k] * data[plane + y * w + index[k]];
        rows[y * W + x] = s;
      }
    }
    for (let y = 0; y < H; y++) {
      const { index, weight } = ty[y];
      for (let x = 0; x < W; x++) {
        let s = 0;
        for (let k = 0; k < index.length; k++) s += weight[k] * rows[index[k] * W + x];
        out[c * H * W + y * W + x] = Math.min(255, Math.max(0, Math.round(s)));
      }
    }
  }
  return out;
}

/** Reads one file of the folder by its relative path. */
export type ReadFile = (path: string) => Promise<Uint8Array>;

/**
 * Reads one split of an image folder into a {@linkcode Dataset}: plans it
 * ({@linkcode planImageFolder}), reads every image's header (both splits, so that both get the
 * same stored size and channels), then decodes the split's images (PNG or JPEG, with
 * `decodeImage`) and stores them at one size (see the module's notes). `read` returns a file's
 * bytes by its relative path.
 *
 * @throws {DataFormatError} for the folder (see {@linkcode planImageFolder}) or a set too large.
 * @throws {ImageDecodeError} naming an image that cannot be read.
 * @example
 * ```ts
 * import { readImageFolder } from "./image_folder_plan.ts";
 * import { encode } from "fast-png";
 * const png = encode({ width: 2, height: 2, data: new Uint8Array(4), channels: 1, depth: 8 });
 * const files = new Map([["a/1.png", png], ["b/1.png", png], ["b/2.png", png]]);
 * const ds = await readImageFolder("toy", [...files.keys()], (p) => Promise.resolve(files.get(p)!), {
 *   split: "train",
 *   testFraction: 0,
 * });
 * console.log(ds.count, ds.classes, ds.height, ds.width); // 3 ["a", "b"] 2 2
 * ```
 */
export async function readImageFolder(
  root: string,
  paths: readonly string[],
  read: ReadFile,
  options: ImageFolderOptions & { readonly split: "train" | "test" },
): Promise<Dataset> {
  if (options.split !== "train" && options.split !== "test") {
    throw new RangeError(`image folder: split must be "train" or "test", got ${options.split}`);
  }
  const plan = planImageFolder(root, paths, options);
  let items = plan[options.split];
  if (options.limit !== undefined) items = items.slice(0, options.limit);
  const mine = new Set(items.map((i) => i.path));
  const kept = new Map<string, Uint8Array>();
  const sizes: { width: number; height: number }[] = [];
  let colour = false;
  const needHeaders = options.size === undefined || options.channels === undefined;
  const all = needHeaders ? [...plan.train, ...plan.test] : items;
  // File order for the default size's tie-break: sorted paths.
  for (const item of [...all].sort((a, b) => byCodeUnit(a.path, b.path))) {
    const bytes = await read(item.path);
    if (mine.has(item.path)) kept.set(item.path, bytes);
    if (!needHeaders) continue;
    const s = imageSize(bytes, `${root}/${item.path}`);
    sizes.push(s);
    colour ||= s.channels === 3;
  }
  const channels = options.channels ?? (colour ? 3 : 1);
  const [height, width] = options.size === undefined
    ? defaultStoredSize(sizes)
    : typeof options.size === "number"
    ? [options.size, options.size]
    : options.size;
  const per = channels * height * width;
  const maxBytes = options.maxBytes ?? MAX_FOLDER_BYTES;
  if (items.length * per > maxBytes) {
    throw new DataFormatError(
      root,
      `${items.length} ${options.split} images of ${channels}x${height}x${width} take ` +
        `${items.length * per} bytes, more than ${maxBytes}: store them smaller (size) or use ` +
        "fewer (limit)",
    );
  }
  const images = new Uint8Array(items.length * per);
  const labels = new Uint8Array(items.length);
  items.forEach((item, i) => {
    const img = decodeImage(kept.get(item.path)!, {
      channels,
      file: `${root}/${item.path}`,
      maxPixels: options.maxPixels ?? MAX_IMAGE_PIXELS,
    });
    const stored = resizePlanes(img.data, { channels, ...img }, [height, width]);
    images.set(stored, i * per);
    labels[i] = item.label;
  });
  return {
    name: root.split("/").filter((p) => p !== "").pop() ?? root,
    split: options.split,
    images,
    labels,
    count: items.length,
    channels,
    height,
    width,
    classes: plan.classes,
    source: root,
  };
}
