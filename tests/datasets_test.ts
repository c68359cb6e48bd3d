// Tests of the data set loaders (data/): IDX and CIFAR-10 parsing with errors that name the file,
// bounded inflation and archives, and the synthetic data set. Where data is looked for, downloads
// and the real data sets: datasets_locate_test.ts.
import assert from "node:assert/strict";
import {
  CIFAR10_CLASSES,
  DataFormatError,
  IDX_LIMITS,
  loadDataset,
  makeSynthetic,
  parseCifarBatch,
  parseIdxImages,
  parseIdxLabels,
  readTar,
} from "../data/mod.ts";
import { checkIdxPair, gunzip, isGzip } from "../data/idx.ts";
import {
  be32,
  CIFAR_NAMES,
  cifarBytes,
  gzip,
  idxImages,
  idxLabels,
  ISOLATED,
  tar,
  writeIdxSplit,
} from "./_datasets.ts";

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
