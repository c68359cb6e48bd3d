/**
 * A reader of bytes, gzipped or plain, that hands them out as asked: the parsers read a header,
 * learn from it how many bytes follow, check that against their limits, and only then allocate.
 * Gzip is inflated as a stream (`DecompressionStream`) fed in small pieces, so memory stays
 * within what was asked plus one inflated piece, and a stream that inflates past what its header
 * declares is stopped at once. Internal to `data/`.
 *
 * @module
 */

import { DataFormatError, isGzip } from "./idx.ts";

/**
 * Bytes of compressed input fed to the inflater at once: deflate inflates at most ~1032x, so one
 * inflated piece stays under ~8.5 MB.
 */
const PIECE = 8192;

/** The message of a gzip stream that fails to inflate. */
export function corruptGzip(err: unknown): string {
  const cause = String((err as Error)?.message ?? err).split("\n")[0].slice(0, 120);
  return `gzip data is corrupt or truncated (${cause}); delete the file and get it again`;
}

/** Sequential reads over plain or gzipped bytes (see the module doc). */
export class ByteReader {
  readonly #file: string;
  readonly #plain: Uint8Array | null;
  readonly #reader: ReadableStreamDefaultReader<Uint8Array> | null;
  #chunk: Uint8Array = new Uint8Array(0);
  #pos = 0;
  #done = false;

  constructor(bytes: Uint8Array, file: string) {
    this.#file = file;
    if (!isGzip(bytes)) {
      this.#plain = bytes;
      this.#reader = null;
      return;
    }
    this.#plain = null;
    let at = 0;
    const source = new ReadableStream<Uint8Array<ArrayBuffer>>({
      pull(controller) {
        if (at >= bytes.length) {
          controller.close();
          return;
        }
        controller.enqueue(bytes.slice(at, at + PIECE));
        at += PIECE;
      },
    });
    this.#reader = source.pipeThrough(new DecompressionStream("gzip")).getReader();
  }

  /** Bytes handed out (or skipped) so far. */
  get position(): number {
    return this.#pos;
  }

  async #pull(): Promise<boolean> {
    if (this.#done || !this.#reader) return false;
    let r: ReadableStreamReadResult<Uint8Array>;
    try {
      r = await this.#reader.read();
    } catch (err) {
      this.#done = true;
      throw new DataFormatError(this.#file, corruptGzip(err));
    }
    if (r.done) {
      this.#done = true;
      return false;
    }
    this.#chunk = r.value;
    return true;
  }

  /**
   * The next `n` bytes, fewer only at the end: a view of plain input, a new array for gzip (the
   * caller checks `n` against its limits first).
   */
  async read(n: number): Promise<Uint8Array> {
    if (this.#plain) {
      const out = this.#plain.subarray(this.#pos, this.#pos + n);
      this.#pos += out.length;
      return out;
    }
    const out = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      if (this.#chunk.length === 0 && !(await this.#pull())) break;
      const take = Math.min(n - got, this.#chunk.length);
      out.set(this.#chunk.subarray(0, take), got);
      this.#chunk = this.#chunk.subarray(take);
      got += take;
    }
    this.#pos += got;
    return got === n ? out : out.slice(0, got);
  }

  /** Discards the next `n` bytes; returns how many there were (fewer only at the end). */
  async skip(n: number): Promise<number> {
    if (this.#plain) {
      const take = Math.min(n, this.#plain.length - this.#pos);
      this.#pos += take;
      return take;
    }
    let got = 0;
    while (got < n) {
      if (this.#chunk.length === 0 && !(await this.#pull())) break;
      const take = Math.min(n - got, this.#chunk.length);
      this.#chunk = this.#chunk.subarray(take);
      got += take;
    }
    this.#pos += got;
    return got;
  }

  /** Whether no byte is left (inflates at most one more piece to know). */
  async atEnd(): Promise<boolean> {
    if (this.#plain) return this.#pos >= this.#plain.length;
    while (this.#chunk.length === 0) {
      if (!(await this.#pull())) return true;
    }
    return false;
  }

  /** The bytes left after the position: exact for plain input, `null` for gzip. */
  get remainingKnown(): number | null {
    return this.#plain ? this.#plain.length - this.#pos : null;
  }

  /** Stops inflating (call when done early). */
  async close(): Promise<void> {
    this.#done = true;
    this.#chunk = new Uint8Array(0);
    await this.#reader?.cancel().catch(() => {});
  }
}
