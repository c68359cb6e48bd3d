/**
 * What one folder holds of a data set's split: its files (in the folder or its usual
 * sub-folders), or one clause saying what it lacks; and why a folder the user named cannot be
 * used at all. Deno APIs (file system).
 *
 * @module
 */

import { join } from "./cache.ts";
import {
  CIFAR_ARCHIVE,
  type FileDatasetName,
  type FoundFiles,
  neededFiles,
  type Split,
} from "./files.ts";

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

/** Sub-folders of a data folder where a data set's files may lie. */
function candidates(name: FileDatasetName, root: string): string[] {
  if (name === "cifar10") {
    return [
      root,
      join(root, "cifar-10-batches-bin"),
      join(root, "cifar10"),
      join(root, "cifar10", "cifar-10-batches-bin"),
    ];
  }
  const torch = name === "mnist" ? "MNIST" : "FashionMNIST";
  return [root, join(root, name), join(root, name, "raw"), join(root, torch, "raw")];
}

/** What one folder lacks: `present` files found, `missing` ones (IDX names with `[.gz]`). */
interface Lack {
  present: string[];
  missing: string[];
}

/** Looks for a split's files in one folder; returns them, what it lacks, or that it is absent. */
async function lookFor(
  name: FileDatasetName,
  split: Split,
  dir: string,
): Promise<FoundFiles | Lack | null> {
  if (!(await isDir(dir))) return null;
  const paths: string[] = [];
  const missing: string[] = [];
  for (const f of neededFiles(name, split)) {
    const plain = join(dir, f);
    const gz = `${plain}.gz`;
    if (await isFile(plain)) paths.push(plain);
    else if (name !== "cifar10" && await isFile(gz)) paths.push(gz);
    else missing.push(name === "cifar10" ? f : `${f}[.gz]`);
  }
  if (missing.length === 0) {
    return { dir, format: name === "cifar10" ? "cifar-bin" : "idx", paths };
  }
  if (name === "cifar10" && await isFile(join(dir, CIFAR_ARCHIVE))) {
    return { dir, format: "cifar-tar", paths: [join(dir, CIFAR_ARCHIVE)] };
  }
  return { present: paths.map((p) => p.slice(dir.length + 1)), missing };
}

function describeLack(l: Lack): string {
  return l.present.length === 0
    ? `none of ${l.missing.join(", ")}`
    : `has ${l.present.join(", ")} but not ${l.missing.join(", ")}`;
}

/**
 * Looks for a split's files in one folder; returns them or why not.
 *
 * @example
 * ```ts
 * import { lookIn } from "./folder.ts";
 * const r = await lookIn("mnist", "test", await Deno.makeTempDir());
 * console.log(r); // "none of t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]"
 * ```
 */
export async function lookIn(
  name: FileDatasetName,
  split: Split,
  dir: string,
): Promise<FoundFiles | string> {
  const r = await lookFor(name, split, dir);
  if (r === null) return "no such folder";
  return "paths" in r ? r : describeLack(r);
}

/**
 * Looks in a data folder and its usual sub-folders; returns the files, or one clause saying what
 * the folder lacks (the sub-folder with the most of the files, else the folder itself).
 *
 * @example
 * ```ts
 * import { lookInRoot } from "./folder.ts";
 * const root = await Deno.makeTempDir();
 * await Deno.mkdir(`${root}/MNIST/raw`, { recursive: true });
 * await Deno.writeFile(`${root}/MNIST/raw/t10k-images-idx3-ubyte`, new Uint8Array(16));
 * console.log(await lookInRoot("mnist", "test", root));
 * // "its sub-folder MNIST/raw/ has t10k-images-idx3-ubyte but not t10k-labels-idx1-ubyte[.gz]"
 * ```
 */
export async function lookInRoot(
  name: FileDatasetName,
  split: Split,
  root: string,
): Promise<FoundFiles | string> {
  if (!(await isDir(root))) return "no such folder";
  let best: { where: string; lack: Lack } | null = null;
  const subs: string[] = [];
  for (const dir of candidates(name, root)) {
    const r = await lookFor(name, split, dir);
    if (r === null) continue;
    if ("paths" in r) return r;
    const where = dir === root ? "" : dir.slice(root.length + 1);
    if (where) subs.push(`${where}/`);
    if (!best || r.present.length > best.lack.present.length) best = { where, lack: r };
  }
  const { where, lack } = best!;
  if (where) return `its sub-folder ${where}/ ${describeLack(lack)}`;
  const s = subs.length > 1 ? "s" : "";
  return describeLack(lack) + (subs.length ? ` (nor its sub-folder${s} ${subs.join(", ")})` : "");
}

/**
 * Why a folder given by the user cannot be used (does not exist, is a file, a symbolic link loop,
 * cannot be read), or null.
 *
 * @example
 * ```ts
 * import { folderProblem } from "./folder.ts";
 * console.log(await folderProblem("/no/such/folder")); // "does not exist"
 * ```
 */
export async function folderProblem(dir: string): Promise<string | null> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(dir);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return "does not exist";
    if (err instanceof Deno.errors.NotADirectory) return "does not exist (a part of it is a file)";
    if (err instanceof Deno.errors.FilesystemLoop || /symbolic links/i.test(String(err))) {
      return "is a symbolic link loop";
    }
    if (err instanceof Deno.errors.PermissionDenied) {
      return "cannot be accessed (permission denied; check the permissions of it and its parents)";
    }
    return `cannot be read (${(err as Error).message.split("\n")[0].slice(0, 120)})`;
  }
  if (!info.isDirectory) return "is a file, not a folder";
  try {
    for await (const _ of Deno.readDir(dir)) break;
  } catch (err) {
    if (err instanceof Deno.errors.PermissionDenied) {
      return "cannot be read (permission denied; chmod u+rx it)";
    }
    return `cannot be read (${(err as Error).message.split("\n")[0].slice(0, 120)})`;
  }
  return null;
}
