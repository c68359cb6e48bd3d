/**
 * The tuning cache file: the tuning table of each adapter kept in one JSON file
 * ({@linkcode saveTuningCache}, {@linkcode loadTuningCache}; Deno only), keyed by
 * {@linkcode adapterKey}. `deno task tune` writes it; `deno task train` and
 * `deno task bench:train` read it.
 *
 * @module
 */

import type { Gpu } from "../../gpu/mod.ts";
import { defaultCacheDir, writeFileAtomic } from "../../data/locate.ts";
import { TM, TN } from "./gemm.ts";
import { dropStepTapes, type TunedChoice, tuningState } from "./table.ts";

const FORMAT = "modern-cnn-autotune";
/** Version of the cache file's layout and of the problem keys; other versions are ignored. */
const VERSION = 1;

interface CacheFile {
  format: string;
  version: number;
  adapters: Record<string, { updated?: string; entries: Record<string, unknown> }>;
}

/**
 * The key of this adapter in the cache file: its description, plus the number of CPU threads for
 * CPU adapters (their best tiles depend on it).
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { adapterKey } from "./cache.ts";
 * console.log(adapterKey(await getGpu())); // e.g. "llvmpipe (LLVM 19.1.7, 256 bits) [2 CPUs]"
 * ```
 */
export function adapterKey(gpu: Gpu): string {
  const cpus = globalThis.navigator?.hardwareConcurrency;
  return gpu.isCpu && cpus ? `${gpu.description} [${cpus} CPUs]` : gpu.description;
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no Deno (browser) or no --allow-env
  }
}

/**
 * Where the tuning cache lives by default: `$MODERN_CNN_CACHE_DIR/autotune.json`, else next to
 * the data sets' cache folders: `$XDG_CACHE_HOME/modern-cnn/autotune.json` or
 * `~/.cache/modern-cnn/autotune.json`.
 *
 * @example
 * ```ts
 * import { defaultTuningCachePath } from "@modern-cnn/webgpu/kernels";
 * console.log(defaultTuningCachePath()); // e.g. /home/me/.cache/modern-cnn/autotune.json
 * ```
 */
export function defaultTuningCachePath(): string {
  const dir = env("MODERN_CNN_CACHE_DIR");
  return dir ? `${dir.replace(/\/+$/, "")}/autotune.json` : defaultCacheDir("autotune.json");
}

function warn(path: string, what: string): void {
  console.error(`autotune: ignoring cache file ${path}: ${what}`);
}

/** Reads a cache file: null when there is none, "bad" (after a warning) when it is unusable. */
async function readCache(path: string): Promise<CacheFile | null | "bad"> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    warn(path, `cannot read it (${(err as Error).message})`);
    return "bad";
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    warn(path, `not valid JSON (${(err as Error).message})`);
    return "bad";
  }
  const o = v as Partial<CacheFile> | null;
  if (typeof o !== "object" || o === null || Array.isArray(o) || o.format !== FORMAT) {
    warn(path, `not a ${FORMAT} file (no "format": "${FORMAT}")`);
    return "bad";
  }
  if (o.version !== VERSION) {
    warn(path, `written in format version ${o.version}, this version reads ${VERSION}`);
    return "bad";
  }
  const adapters = o.adapters as unknown;
  if (typeof adapters !== "object" || adapters === null || Array.isArray(adapters)) {
    warn(path, `"adapters" is not an object`);
    return "bad";
  }
  for (const [name, a] of Object.entries(adapters)) {
    const entries = (a as { entries?: unknown } | null)?.entries;
    if (typeof entries !== "object" || entries === null || Array.isArray(entries)) {
      warn(path, `adapter "${name}" has no "entries" object`);
      return "bad";
    }
  }
  return o as CacheFile;
}

/** A stored entry as a choice, or why it is not one. */
function parseChoice(key: string, v: unknown): TunedChoice | string {
  const o = v as Record<string, unknown> | null;
  if (typeof o !== "object" || o === null) return "not an object";
  if (o.op === "conv2d") {
    if (!key.startsWith("conv2d:")) return "a conv2d choice under another op's key";
    if (typeof o.direct !== "boolean") return `"direct" is not a boolean`;
    // "groups" came later (same version: files without it mean the default blocking search).
    if (o.groups === undefined) return { op: "conv2d", direct: o.direct };
    if (typeof o.groups !== "boolean") return `"groups" is not a boolean`;
    return { op: "conv2d", direct: o.direct, groups: o.groups };
  }
  if (o.op !== "gemm") return `unknown op ${JSON.stringify(o.op)}`;
  if (!key.startsWith("gemm:")) return "a gemm choice under another op's key";
  const t = o.tuning as Record<string, unknown> | null;
  if (typeof t !== "object" || t === null) return `"tuning" is not an object`;
  const splitK = (t.splitK ?? 1) as number;
  if (!Number.isInteger(splitK) || splitK < 1 || splitK > 4096) {
    return `bad splitK ${JSON.stringify(t.splitK)}`;
  }
  if (t.variant === "shared") return { op: "gemm", tuning: { variant: "shared", splitK } };
  if (t.variant !== "register") return `bad variant ${JSON.stringify(t.variant)}`;
  const tile = t.tile as unknown[];
  if (
    !Array.isArray(tile) || tile.length !== 2 || !TM.includes(tile[0] as number) ||
    !TN.includes(tile[1] as number)
  ) {
    return `bad tile ${JSON.stringify(t.tile)}`;
  }
  if (typeof (t.swap ?? false) !== "boolean") return `bad swap ${JSON.stringify(t.swap)}`;
  return {
    op: "gemm",
    tuning: {
      variant: "register",
      tile: [tile[0] as number, tile[1] as number],
      swap: (t.swap ?? false) as boolean,
      splitK,
    },
  };
}

/**
 * Loads this adapter's entries from a cache file into the Gpu's table (entries of other adapters
 * are ignored). Returns how many were loaded, or null when the file does not exist. A file that
 * cannot be used (not JSON, another format or version) and invalid entries are reported on
 * stderr, naming the file and the problem, and ignored: it is only a cache.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { defaultTuningCachePath, loadTuningCache } from "@modern-cnn/webgpu/kernels";
 * const n = await loadTuningCache(await getGpu(), defaultTuningCachePath());
 * if (n !== null) console.error(`autotune: loaded ${n} tuned entries`);
 * ```
 */
export async function loadTuningCache(gpu: Gpu, path: string): Promise<number | null> {
  const file = await readCache(path);
  if (file === null) return null;
  if (file === "bad") return 0;
  const section = file.adapters[adapterKey(gpu)];
  if (!section) return 0;
  const table = tuningState(gpu).table;
  let loaded = 0;
  const bad: string[] = [];
  for (const [key, v] of Object.entries(section.entries)) {
    const c = parseChoice(key, v);
    if (typeof c === "string") {
      bad.push(`${key}: ${c}`);
      continue;
    }
    table.set(key, c);
    loaded++;
  }
  if (bad.length > 0) {
    console.error(
      `autotune: ${path}: ignoring ${bad.length} invalid entr${bad.length > 1 ? "ies" : "y"} ` +
        `(first: ${bad[0]})`,
    );
  }
  // Kept step tapes replay the kernels planned before the table changed.
  if (loaded > 0) dropStepTapes(gpu);
  return loaded;
}

/**
 * Writes the Gpu's table as this adapter's entries of a cache file, keeping the entries of other
 * adapters (an unusable file is replaced, after a warning). Written atomically: a temporary file,
 * then a rename. Returns the number of entries written.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { saveTuningCache } from "@modern-cnn/webgpu/kernels";
 * const n = await saveTuningCache(await getGpu(), `${await Deno.makeTempDir()}/autotune.json`);
 * ```
 */
export async function saveTuningCache(gpu: Gpu, path: string): Promise<number> {
  const old = await readCache(path);
  const file: CacheFile = old && old !== "bad"
    ? old
    : { format: FORMAT, version: VERSION, adapters: {} };
  const entries: Record<string, TunedChoice> = {};
  for (const [key, choice] of tuningState(gpu).table.entries()) entries[key] = choice;
  const n = Object.keys(entries).length;
  file.adapters[adapterKey(gpu)] = { updated: new Date().toISOString(), entries };
  // One line per tile: [a, b] instead of three.
  const text = JSON.stringify(file, null, 1).replace(/\[\s+(\d+),\s+(\d+)\s+\]/g, "[$1, $2]");
  await writeFileAtomic(path, new TextEncoder().encode(text + "\n"));
  return n;
}
