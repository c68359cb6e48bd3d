/**
 * The demo's data from your own images: the `File`s of an `<input type=file multiple
 * webkitdirectory>`, read with the package's pure image-folder code (`data/image_folder_plan.ts`,
 * shared with `loadImageFolder`), so the page stores the same pixels as `--dataset folder:PATH`.
 *
 * @module
 */

import { type ImageFolderOptions, readImageFolder } from "../data/image_folder_plan.ts";
import type { FashionMnist } from "./session.ts";

/**
 * Your own images as the demo's data: the `File`s of an `<input type=file multiple
 * webkitdirectory>` (their `webkitRelativePath` is `FOLDER/CLASS/IMAGE`), grouped, split,
 * decoded (PNG or JPEG) and stored at one size exactly as `loadImageFolder` does on disk (see
 * `data/image_folder_plan.ts`). Each file is read once.
 *
 * @throws {DataFormatError} for the folder (no class subfolders, a class without images, ...).
 * @throws {ImageDecodeError} naming an image that cannot be decoded.
 * @example
 * ```ts
 * import { imageFolderFromFiles } from "./folder.ts";
 * import { encode } from "fast-png";
 * const png = encode({ width: 2, height: 2, data: new Uint8Array(4), channels: 1, depth: 8 });
 * const file = (path: string) => {
 *   const f = new File([png as Uint8Array<ArrayBuffer>], path.split("/").pop()!);
 *   Object.defineProperty(f, "webkitRelativePath", { value: path });
 *   return f;
 * };
 * const files = ["a", "b"].flatMap((c) => [1, 2, 3].map((i) => file(`toy/${c}/${i}.png`)));
 * const data = await imageFolderFromFiles(files, { testFraction: 0.34 });
 * console.log(data.name, data.classes, data.train.count, data.test.count); // toy ["a", "b"] 4 2
 * ```
 */
export async function imageFolderFromFiles(
  files: readonly File[],
  options: Omit<ImageFolderOptions, "limit"> = {},
): Promise<FashionMnist & { readonly classes: readonly string[]; readonly name: string }> {
  const byPath = new Map<string, File>();
  let root = "";
  for (const f of files) {
    const full = f.webkitRelativePath || f.name;
    const parts = full.split("/");
    // The chosen folder's own name comes first; the paths are relative to it.
    if (parts.length > 1) {
      const top = parts.shift()!;
      root ||= top;
    }
    byPath.set(parts.join("/"), f);
  }
  root ||= "files";
  const bytes = new Map<string, Promise<Uint8Array>>();
  const read = (path: string): Promise<Uint8Array> => {
    let b = bytes.get(path);
    if (!b) {
      b = byPath.get(path)!.arrayBuffer().then((a) => new Uint8Array(a));
      bytes.set(path, b);
    }
    return b;
  };
  const paths = [...byPath.keys()];
  const train = await readImageFolder(root, paths, read, { ...options, split: "train" });
  const test = await readImageFolder(root, paths, read, { ...options, split: "test" });
  return { train, test, classes: train.classes, name: root };
}
