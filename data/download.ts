/**
 * Downloading a data set's files into the cache: each file from the first mirror that serves it,
 * with a progress bar on stderr, a stall timeout and an MD5 check against the published
 * checksum, written atomically. Deno APIs (fetch, stderr).
 *
 * @module
 */

import { join, writeFileAtomic } from "./cache.ts";
import { CIFAR_FILES, readTar } from "./cifar.ts";
import {
  CIFAR_ARCHIVE,
  DOWNLOADS,
  type FileDatasetName,
  type FoundFiles,
  neededFiles,
  type Split,
} from "./files.ts";

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

// ------------------------------------------------------------------ MD5 ----

const MD5_S = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
const MD5_K = Array.from({ length: 64 }, (_, i) => Math.floor(Math.abs(Math.sin(i + 1)) * 2 ** 32));

/**
 * Incremental MD5 (RFC 1321), for checking downloads against the published checksums.
 *
 * @example
 * ```ts
 * import { Md5 } from "./download.ts";
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
   * import { Md5 } from "./download.ts";
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
   * import { Md5 } from "./download.ts";
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
 * Downloads a split's files into `cacheDir` (CIFAR-10: the archive, extracted there); returns
 * the files, or why it failed (every mirror's reason) as one line.
 *
 * @example
 * ```ts
 * import { download } from "./download.ts";
 * const dir = await Deno.makeTempDir();
 * const options = { mirrors: ["http://127.0.0.1:1/"], progress: false };
 * const r = await download("mnist", "test", dir, options);
 * console.log(r); // "download failed: http://127.0.0.1:1/t10k-images-idx3-ubyte.gz: ..."
 * ```
 */
export async function download(
  name: FileDatasetName,
  split: Split,
  cacheDir: string,
  options: DownloadOptions,
): Promise<FoundFiles | string> {
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
