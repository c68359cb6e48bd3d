/**
 * The per-user cache folder of the data sets and atomic writes into it (also used for the
 * autotuning cache and checkpoints), with the path and environment helpers that the file-system
 * modules of `data/` share. Deno APIs.
 *
 * @module
 */

/**
 * Joins path parts with `/` (empty parts skipped, repeated slashes collapsed).
 *
 * @example
 * ```ts
 * import { join } from "./cache.ts";
 * join("/data/", "mnist", "raw"); // "/data/mnist/raw"
 * ```
 */
export function join(...parts: string[]): string {
  return parts.filter((p) => p !== "").map((p, i) => (i === 0 ? p.replace(/\/+$/, "") || "/" : p))
    .join("/").replace(/\/{2,}/g, "/");
}

/**
 * An environment variable, or undefined when it is unset, empty or cannot be read (no
 * `--allow-env`).
 *
 * @example
 * ```ts
 * import { env } from "./cache.ts";
 * console.log(env("HOME")); // e.g. /home/me
 * ```
 */
export function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env
  }
}

/**
 * The per-user cache folder of a data set: `$XDG_CACHE_HOME/modern-cnn/<name>`, else
 * `~/.cache/modern-cnn/<name>` (`%LOCALAPPDATA%` on Windows).
 *
 * @example
 * ```ts
 * import { defaultCacheDir } from "./cache.ts";
 * console.log(defaultCacheDir("fashion-mnist")); // e.g. /home/me/.cache/modern-cnn/fashion-mnist
 * ```
 */
export function defaultCacheDir(name: string): string {
  const xdg = env("XDG_CACHE_HOME");
  if (xdg) return join(xdg, "modern-cnn", name);
  const home = env("HOME") ?? env("USERPROFILE");
  if (home) return join(home, ".cache", "modern-cnn", name);
  const local = env("LOCALAPPDATA");
  if (local) return join(local, "modern-cnn", name);
  return join(".cache", "modern-cnn", name);
}

/**
 * Writes a file atomically: to a temporary file in the same folder, then renamed over the
 * target (readers never see a partial file). Creates the folder.
 *
 * @example
 * ```ts
 * import { writeFileAtomic } from "./cache.ts";
 * await writeFileAtomic(`${await Deno.makeTempDir()}/example.bin`, new Uint8Array([1, 2, 3]));
 * ```
 */
export async function writeFileAtomic(path: string, data: Uint8Array): Promise<void> {
  const dir = path.slice(0, Math.max(path.lastIndexOf("/"), 0)) || ".";
  await Deno.mkdir(dir, { recursive: true });
  const tmp = `${path}.tmp-${Deno.pid}-${Math.random().toString(36).slice(2, 10)}`;
  try {
    await Deno.writeFile(tmp, data);
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
}
