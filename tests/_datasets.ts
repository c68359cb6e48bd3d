// Fixtures of the data set tests (datasets_test.ts, datasets_locate_test.ts): IDX and CIFAR-10
// files and tar archives built in memory, data folders written to disk, environment variables set
// for one call.

/** `bytes` gzipped. */
export async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** `v` as 4 big-endian bytes. */
export function be32(v: number): number[] {
  return [(v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255];
}

/** An IDX images file of `count` h x w images; pixel (n, y, x) = (n * 31 + y * 7 + x) & 255. */
export function idxImages(count: number, h: number, w: number, tag = 0): Uint8Array {
  const out = new Uint8Array(16 + count * h * w);
  out.set([...be32(0x803), ...be32(count), ...be32(h), ...be32(w)]);
  for (let n = 0; n < count; n++) {
    for (let i = 0; i < h * w; i++) out[16 + n * h * w + i] = (n * 31 + i * 7 + tag) & 255;
  }
  return out;
}

/** An IDX labels file of `count` labels; label n = (n + tag) % 10. */
export function idxLabels(count: number, tag = 0): Uint8Array {
  const out = new Uint8Array(8 + count);
  out.set([...be32(0x801), ...be32(count)]);
  for (let n = 0; n < count; n++) out[8 + n] = (n + tag) % 10;
  return out;
}

/** Writes a Fashion-MNIST-named split (gzipped) of `count` 4x5 images into `dir`. */
export async function writeIdxSplit(
  dir: string,
  split: "train" | "test",
  count: number,
  gz = true,
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const prefix = split === "train" ? "train" : "t10k";
  const img = idxImages(count, 4, 5);
  const lab = idxLabels(count);
  const ext = gz ? ".gz" : "";
  await Deno.writeFile(`${dir}/${prefix}-images-idx3-ubyte${ext}`, gz ? await gzip(img) : img);
  await Deno.writeFile(`${dir}/${prefix}-labels-idx1-ubyte${ext}`, gz ? await gzip(lab) : lab);
}

/** A CIFAR-10 record stream: record n has label n % 10 and pixel i = (n + i) & 255. */
export function cifarBytes(count: number, tag = 0): Uint8Array {
  const out = new Uint8Array(count * 3073);
  for (let n = 0; n < count; n++) {
    out[n * 3073] = (n + tag) % 10;
    for (let i = 0; i < 3072; i++) out[n * 3073 + 1 + i] = (n + i + tag) & 255;
  }
  return out;
}

/** A minimal ustar archive of regular files. */
export function tar(files: [string, Uint8Array][]): Uint8Array {
  const parts: Uint8Array[] = [];
  const enc = new TextEncoder();
  for (const [name, data] of files) {
    const h = new Uint8Array(512);
    const put = (s: string, at: number) => h.set(enc.encode(s), at);
    put(name, 0);
    put("0000644\0", 100);
    put("0000000\0", 108);
    put("0000000\0", 116);
    put(data.length.toString(8).padStart(11, "0") + "\0", 124);
    put("00000000000\0", 136);
    put("        ", 148);
    h[156] = 48; // '0'
    put("ustar\0", 257);
    put("00", 263);
    let sum = 0;
    for (const v of h) sum += v;
    put(sum.toString(8).padStart(6, "0") + "\0 ", 148);
    parts.push(h, data, new Uint8Array((512 - (data.length % 512)) % 512));
  }
  parts.push(new Uint8Array(1024));
  const total = parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The CIFAR-10 batch files, in the archive's order. */
export const CIFAR_NAMES = [
  "data_batch_1.bin",
  "data_batch_2.bin",
  "data_batch_3.bin",
  "data_batch_4.bin",
  "data_batch_5.bin",
  "test_batch.bin",
];

/** Runs `fn` with environment variables set (undefined: deleted), restoring them after. */
export async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>) {
  const saved: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(vars)) {
    saved[k] = Deno.env.get(k);
    if (v === undefined) Deno.env.delete(k);
    else Deno.env.set(k, v);
  }
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) Deno.env.delete(k);
      else Deno.env.set(k, v);
    }
  }
}

/** Options that exclude every place but the ones a test sets up. */
export const ISOLATED = { envDir: null, systemDir: null, npm: false, download: false } as const;
