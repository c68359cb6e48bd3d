// Tests of the image-folder data set (data/image_folder.ts, data/image_folder_plan.ts): a folder
// written here (3 classes, PNG and JPEG, gray and RGB, different sizes) loads with the classes,
// counts, deterministic split and stored pixels expected; the train/ + test/ layout; the host
// resize; the faults (one line naming the folder or file); and one short epoch of lenet on it
// through the CLI, whose checkpoint names the classes.
import assert from "node:assert/strict";
import { join } from "node:path";
import { encode as encodePng } from "fast-png";
import { encode as encodeJpeg } from "jpeg-js";
import {
  DataFormatError,
  type Dataset,
  ImageDecodeError,
  loadDataset,
  loadImageFolder,
} from "../data/mod.ts";
import {
  defaultStoredSize,
  planImageFolder,
  readImageFolder,
  resizePlanes,
} from "../data/image_folder_plan.ts";
import { assertOk, metadataOf, sandbox } from "./_faults.ts";
import { imageFolderFromFiles } from "../web/folder.ts";

/** A gray PNG of one level. */
function grayPng(w: number, h: number, v: number): Uint8Array {
  return encodePng({ width: w, height: h, data: new Uint8Array(w * h).fill(v), channels: 1 });
}

/** An RGB PNG of one colour. */
function rgbPng(w: number, h: number, rgb: readonly number[]): Uint8Array {
  const data = new Uint8Array(w * h * 3).map((_, i) => rgb[i % 3]);
  return encodePng({ width: w, height: h, data, channels: 3 });
}

/** A JPEG (quality 100) of one colour. */
function jpeg(w: number, h: number, rgb: readonly number[]): Uint8Array {
  const data = new Uint8Array(w * h * 4).map((_, i) => [...rgb, 255][i % 4]);
  return new Uint8Array(encodeJpeg({ width: w, height: h, data }, 100).data);
}

/**
 * Three classes: `circle` (gray PNGs of 16x16, level 40 + i), `square` (RGB PNGs of 16x16 and two
 * of 20x12), `triangle` (JPEGs of 16x16 and one of 8x8), plus files to skip.
 */
async function writeFolder(root: string): Promise<void> {
  for (const c of ["circle", "square", "triangle"]) await Deno.mkdir(join(root, c));
  for (let i = 0; i < 10; i++) {
    await Deno.writeFile(join(root, "circle", `c${i}.png`), grayPng(16, 16, 40 + i));
  }
  for (let i = 0; i < 8; i++) {
    const big = i < 2;
    await Deno.writeFile(
      join(root, "square", `s${i}.PNG`),
      rgbPng(big ? 20 : 16, big ? 12 : 16, [200, 30 + i, 90]),
    );
  }
  for (let i = 0; i < 6; i++) {
    const small = i === 5;
    await Deno.writeFile(
      join(root, "triangle", `t${i}.jpg`),
      jpeg(small ? 8 : 16, small ? 8 : 16, [10, 120, 240]),
    );
  }
  await Deno.writeTextFile(join(root, "README.txt"), "not an image");
  await Deno.writeTextFile(join(root, "circle", "notes.txt"), "skipped");
  await Deno.writeTextFile(join(root, ".hidden"), "skipped");
}

/** The pixels of example `i`. */
function pixels(ds: Dataset, i: number): Uint8Array {
  const per = ds.channels * ds.height * ds.width;
  return ds.images.subarray(i * per, (i + 1) * per);
}

Deno.test("an image folder loads: classes, counts, split, stored size and pixels", async () => {
  const root = await Deno.makeTempDir({ prefix: "modern-cnn-folder-" });
  try {
    await writeFolder(root);
    const train = await loadImageFolder(root, { split: "train" });
    const test = await loadImageFolder(root, { split: "test" });
    assert.deepEqual(train.classes, ["circle", "square", "triangle"]);
    assert.deepEqual(test.classes, train.classes);
    // 20% of each class held out, rounded: 2 of 10, 2 of 8, 1 of 6.
    assert.deepEqual([train.count, test.count], [19, 5]);
    const perClass = (ds: Dataset) => [0, 1, 2].map((c) => ds.labels.filter((l) => l === c).length);
    assert.deepEqual(perClass(train), [8, 6, 5]);
    assert.deepEqual(perClass(test), [2, 2, 1]);
    // Colour images are there: 3 channels; the most common size, 16x16.
    for (const ds of [train, test]) {
      assert.deepEqual([ds.channels, ds.height, ds.width], [3, 16, 16]);
      assert.equal(ds.images.length, ds.count * 3 * 16 * 16);
      assert.equal(ds.split === "train" ? ds.count : ds.count, ds.labels.length);
      assert.equal(ds.source, root);
    }
    // Pixels after storage: gray PNGs in all three channels; flat colours stay flat.
    for (const ds of [train, test]) {
      for (let i = 0; i < ds.count; i++) {
        const p = pixels(ds, i);
        const plane = (c: number) => [...new Set(p.subarray(c * 256, (c + 1) * 256))];
        if (ds.labels[i] === 0) {
          const [v] = plane(0);
          assert.ok(v >= 40 && v < 50, `circle level ${v}`);
          for (const c of [0, 1, 2]) assert.deepEqual(plane(c), [v]);
        } else if (ds.labels[i] === 1) {
          assert.deepEqual(plane(0), [200]);
          assert.deepEqual(plane(2), [90]);
        } else {
          for (const [c, want] of [[0, 10], [1, 120], [2, 240]]) {
            for (const v of plane(c)) assert.ok(Math.abs(v - want) <= 3, `triangle ${c}: ${v}`);
          }
        }
      }
    }
    // The split is deterministic, disjoint, and covers every image; another seed, another split.
    const again = await loadImageFolder(root, { split: "test" });
    assert.deepEqual([...again.images], [...test.images]);
    assert.deepEqual([...again.labels], [...test.labels]);
    const circleLevels = (ds: Dataset) =>
      [...Array(ds.count).keys()].filter((i) => ds.labels[i] === 0).map((i) => pixels(ds, i)[0])
        .sort();
    const heldOut = circleLevels(test);
    assert.equal(new Set([...circleLevels(train), ...heldOut]).size, 10);
    let differs = false;
    for (let seed = 1; seed < 6 && !differs; seed++) {
      const other = await loadImageFolder(root, { split: "test", splitSeed: seed });
      differs = circleLevels(other).join() !== heldOut.join();
    }
    assert.ok(differs, "splitSeed changes the split");
    // Options: gray, a size, no test split, a limit (a mix of classes, in a fixed order).
    const gray = await loadImageFolder(root, {
      split: "train",
      channels: 1,
      size: [8, 10],
      testFraction: 0,
      limit: 12,
    });
    assert.deepEqual([gray.count, gray.channels, gray.height, gray.width], [12, 1, 8, 10]);
    assert.ok(new Set(gray.labels).size >= 2, "limit keeps a mix of classes");
    const all = await loadImageFolder(root, { split: "train", testFraction: 0 });
    assert.equal(all.count, 24);
    // Through loadDataset, as the CLI loads it.
    const viaName = await loadDataset(`folder:${root}`, { split: "test" });
    assert.deepEqual([...viaName.images], [...test.images]);
    const limited = await loadDataset(`folder:${root}`, { split: "train", limit: 4 });
    assert.equal(limited.count, 4);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("train/ and test/ (or val/) folders are used as the split", async () => {
  const root = await Deno.makeTempDir({ prefix: "modern-cnn-folder-" });
  try {
    for (const [split, n] of [["train", 3], ["val", 1]] as const) {
      for (const c of ["b", "a"]) {
        await Deno.mkdir(join(root, split, c), { recursive: true });
        for (let i = 0; i < n; i++) {
          await Deno.writeFile(
            join(root, split, c, `${i}.png`),
            grayPng(4, 4, c === "a" ? 10 : 250),
          );
        }
      }
    }
    const train = await loadImageFolder(root, { split: "train" });
    const test = await loadImageFolder(root, { split: "test" });
    assert.deepEqual(train.classes, ["a", "b"]);
    assert.deepEqual([train.count, test.count, train.channels], [6, 2, 1]);
    for (const ds of [train, test]) {
      for (let i = 0; i < ds.count; i++) {
        assert.equal(pixels(ds, i)[0], ds.labels[i] === 0 ? 10 : 250);
      }
    }
    await assert.rejects(
      () => loadImageFolder(root, { split: "train", testFraction: 0.1 }),
      /testFraction has no effect, the folder has train\/ and val\/ splits/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("the plan and the host resize, in memory (as the browser uses them)", async () => {
  const plan = planImageFolder("r", ["b/2.png", "b/1.jpg", "a/x.jpeg", "c/", "c/n/1.png"], {
    testFraction: 0,
  });
  assert.deepEqual(plan.classes, ["a", "b", "c"]);
  assert.deepEqual(plan.train.map((i) => i.path).sort(), [
    "a/x.jpeg",
    "b/1.jpg",
    "b/2.png",
    "c/n/1.png",
  ]);
  // The split does not depend on the listing order.
  const paths = Array.from({ length: 30 }, (_, i) => `k${i % 3}/${i}.png`);
  const one = planImageFolder("r", paths);
  const two = planImageFolder("r", [...paths].reverse());
  assert.deepEqual(one, two);
  assert.equal(one.test.length, 6);
  // Most common size, shrunk to 256 keeping the aspect.
  assert.deepEqual(defaultStoredSize([{ width: 5, height: 4 }, { width: 3, height: 3 }]), [4, 5]);
  assert.deepEqual(defaultStoredSize([{ width: 1024, height: 512 }]), [128, 256]);
  // Area when shrinking, bilinear when enlarging, a copy at the same size.
  const row = new Uint8Array([0, 100, 200, 255]);
  assert.deepEqual([...resizePlanes(row, { channels: 1, height: 1, width: 4 }, [1, 2])], [50, 228]);
  assert.deepEqual([...resizePlanes(row, { channels: 1, height: 2, width: 2 }, [2, 2])], [...row]);
  assert.deepEqual(
    [...resizePlanes(new Uint8Array([0, 200]), { channels: 1, height: 1, width: 2 }, [1, 4])],
    [0, 50, 150, 200],
  );
  // readImageFolder from bytes in memory.
  const files = new Map([["a/1.png", grayPng(2, 2, 9)], ["b/1.png", rgbPng(2, 2, [1, 2, 3])]]);
  const ds = await readImageFolder(
    "mem",
    [...files.keys()],
    (p) => Promise.resolve(files.get(p)!),
    {
      split: "train",
      testFraction: 0,
    },
  );
  assert.deepEqual([ds.count, ds.channels, ds.name], [2, 3, "mem"]);
});

Deno.test("the demo page's File objects give the same data set as the folder on disk", async () => {
  const root = await Deno.makeTempDir({ prefix: "modern-cnn-folder-" });
  try {
    await writeFolder(root);
    const files: File[] = [];
    for (const c of ["circle", "square", "triangle"]) {
      for await (const e of Deno.readDir(join(root, c))) {
        const f = new File([await Deno.readFile(join(root, c, e.name))], e.name);
        Object.defineProperty(f, "webkitRelativePath", { value: `shapes/${c}/${e.name}` });
        files.push(f);
      }
    }
    const fromFiles = await imageFolderFromFiles(files.reverse());
    assert.equal(fromFiles.name, "shapes");
    assert.deepEqual(fromFiles.classes, ["circle", "square", "triangle"]);
    for (const split of ["train", "test"] as const) {
      const disk = await loadImageFolder(root, { split });
      const page = fromFiles[split];
      assert.deepEqual([page.count, page.channels, page.height, page.width], [
        disk.count,
        disk.channels,
        disk.height,
        disk.width,
      ]);
      assert.deepEqual([...page.labels], [...disk.labels]);
      assert.ok(page.images.every((v, i) => v === disk.images[i]), `${split} pixels`);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("faults: no folder, no classes, an empty class, a bad image, unsupported formats", async () => {
  const root = await Deno.makeTempDir({ prefix: "modern-cnn-folder-" });
  const oneLine =
    (re: RegExp, type: typeof DataFormatError | typeof ImageDecodeError) => (e: Error) => {
      assert.ok(e instanceof type, `${type.name}, got ${e}`);
      assert.ok(!e.message.includes("\n"), e.message);
      assert.match(e.message, re);
      return true;
    };
  try {
    await assert.rejects(
      () => loadImageFolder(join(root, "nope"), { split: "train" }),
      oneLine(/nope: does not exist; an image folder holds one subfolder/, DataFormatError),
    );
    await Deno.writeTextFile(join(root, "loose.png"), "x");
    await assert.rejects(
      () => loadImageFolder(root, { split: "train" }),
      oneLine(/: has no class subfolders with images; an image folder holds/, DataFormatError),
    );
    await Deno.mkdir(join(root, "cat"));
    await Deno.mkdir(join(root, "dog"));
    await Deno.writeFile(join(root, "cat", "1.png"), grayPng(4, 4, 1));
    await assert.rejects(
      () => loadImageFolder(root, { split: "train" }),
      oneLine(/dog: is a class folder with no PNG or JPEG images; add its images/, DataFormatError),
    );
    await Deno.writeFile(join(root, "dog", "1.png"), new Uint8Array([0x89, 0x50, 0x4e, 0x47]));
    await assert.rejects(
      () => loadImageFolder(root, { split: "train" }),
      oneLine(/dog\/1\.png: .*truncated PNG/, ImageDecodeError),
    );
    await Deno.writeFile(join(root, "dog", "1.png"), grayPng(4, 4, 2));
    await Deno.writeTextFile(join(root, "dog", "2.gif"), "GIF89a");
    await assert.rejects(
      () => loadImageFolder(root, { split: "train" }),
      oneLine(/dog\/2\.gif: GIF images are not supported, only PNG and JPEG/, DataFormatError),
    );
    await Deno.remove(join(root, "dog", "2.gif"));
    await assert.rejects(
      () => loadImageFolder(root, { split: "train", maxBytes: 10 }),
      oneLine(/2 train images of 1x4x4 take 32 bytes, more than 10/, DataFormatError),
    );
    assert.equal((await loadImageFolder(root, { split: "train", testFraction: 0 })).count, 2);
    await assert.rejects(
      () => loadImageFolder(root, { split: "train", testFraction: 1 }),
      RangeError,
    );
    await assert.rejects(() => loadImageFolder(root, { split: "train", size: 0 }), RangeError);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("deno task train --dataset folder:PATH runs an epoch and the checkpoint names the classes", async () => {
  const sb = await sandbox();
  try {
    const root = join(sb.dir, "shapes");
    await Deno.mkdir(root);
    await writeFolder(root);
    const ck = join(sb.dir, "shapes.safetensors");
    const r = await sb.cli("train.ts", [
      "lenet",
      "--dataset",
      `folder:${root}`,
      "--limit-train",
      "16",
      "--batch-size",
      "8",
      "--epochs",
      "1",
      "--save",
      ck,
    ]);
    assertOk("train on a folder", r);
    assert.match(r.stdout, /lenet on shapes \(16 train \/ 5 test/);
    assert.match(r.stdout, /epoch 1:/);
    const meta = await metadataOf(ck);
    assert.deepEqual(JSON.parse(meta.classes), ["circle", "square", "triangle"]);
    assert.equal(meta.dataset, `folder:${root}`);
  } finally {
    await sb.done();
  }
});
