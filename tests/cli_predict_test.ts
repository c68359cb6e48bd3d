// predict --top K --json and eval --json as users run them (subprocesses): the JSON documents
// hold what the text output shows and what the library's model.predict returns for the same
// files; more images than one batch; the text output keeps its format.
import assert from "node:assert/strict";
import { join } from "node:path";
import { encode } from "fast-png";
import { encode as encodeJpeg } from "jpeg-js";
import { getGpu } from "../gpu/mod.ts";
import { FASHION_MNIST_CLASSES } from "../data/mod.ts";
import { createModel, encodeSafetensors } from "../models/mod.ts";
import { run } from "./_cli.ts";

const gpu = await getGpu();

/** A lenet-bn checkpoint (seeded initialization) with the metadata train writes about the input. */
async function checkpoint(dir: string) {
  const model = createModel(gpu, { name: "lenet-bn", seed: 5 });
  const file = join(dir, "w.safetensors");
  await Deno.writeFile(
    file,
    encodeSafetensors(await model.stateDict(), { model: "lenet-bn", resize: "28" }),
  );
  return { model, file };
}

async function images(dir: string): Promise<string[]> {
  const g = new Uint8Array(28 * 28).map((_, i) => (i * 7) % 256);
  const shirt = join(dir, "shirt.png");
  await Deno.writeFile(shirt, encode({ width: 28, height: 28, data: g, channels: 1, depth: 8 }));
  const rgba = new Uint8Array(40 * 36 * 4).map((_, i) => (i % 4 === 3 ? 255 : (i * 13) % 256));
  const photo = join(dir, "photo.jpg");
  await Deno.writeFile(photo, encodeJpeg({ width: 40, height: 36, data: rgba }, 90).data);
  return [shirt, photo];
}

Deno.test("predict --top K --json: one document, the library's top classes for each file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "modern-cnn-predict-" });
  try {
    const { model, file } = await checkpoint(dir);
    const files = await images(dir);
    const r = await run("predict.ts", [
      "lenet-bn",
      "--weights",
      file,
      "--top",
      "4",
      "--json",
      ...files,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as {
      model: string;
      resize: number;
      images: { file: string; top: { index: number; name: string; probability: number }[] }[];
    };
    assert.equal(doc.model, "lenet-bn");
    assert.equal(doc.resize, 28);
    assert.deepEqual(doc.images.map((i) => i.file), files);
    const lib = await model.predict(
      await Promise.all(files.map((f) => Deno.readFile(f))),
      { topK: 4, classes: FASHION_MNIST_CLASSES },
    );
    doc.images.forEach((img, i) => {
      assert.equal(img.top.length, 4);
      assert.deepEqual(img.top.map((t) => t.index), lib[i].top.map((t) => t.index));
      img.top.forEach((t, k) => {
        assert.equal(t.name, FASHION_MNIST_CLASSES[t.index]);
        assert.ok(Math.abs(t.probability - lib[i].top[k].probability) < 1e-5);
        if (k > 0) assert.ok(t.probability <= img.top[k - 1].probability, "best first");
      });
    });
    // The text output: the same classes, K per line, in the format it always had.
    const text = await run("predict.ts", ["lenet-bn", "--weights", file, "--top", "2", ...files]);
    assert.equal(text.code, 0, text.stderr);
    const lines = text.stdout.trim().split("\n");
    assert.equal(lines.length, 2);
    lines.forEach((line, i) => {
      const names = doc.images[i].top.slice(0, 2).map((t) => t.name);
      assert.equal(
        line,
        `${files[i]}: ${names[0]} ${doc.images[i].top[0].probability.toFixed(3)}, ${names[1]} ` +
          doc.images[i].top[1].probability.toFixed(3),
      );
    });
    // The default is the top 3; more files than one batch (32) come out in order.
    const many = Array.from({ length: 35 }, (_, i) => files[i % 2]);
    const m = await run("predict.ts", ["lenet-bn", "--weights", file, ...many]);
    assert.equal(m.code, 0, m.stderr);
    const out = m.stdout.trim().split("\n");
    assert.equal(out.length, 35);
    out.forEach((l, i) => {
      assert.match(l, /^\S+: [^,]+ [\d.]+, [^,]+ [\d.]+, [^,]+ [\d.]+$/);
      assert.equal(l, out[i % 2], "the same file, the same line");
    });
    assert.ok(out[0].startsWith(`${files[0]}: ${doc.images[0].top[0].name} `));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("eval --json: accuracy, per-class accuracy and the confusion matrix as one document", async () => {
  const dir = await Deno.makeTempDir({ prefix: "modern-cnn-eval-" });
  try {
    const { file } = await checkpoint(dir);
    const args = ["lenet-bn", "--weights", file, "--dataset", "synthetic", "--limit-test", "96"];
    const r = await run("eval.ts", [...args, "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as {
      model: string;
      examples: number;
      accuracy: number;
      classes: string[];
      per_class: { index: number; name: string; accuracy: number | null; count: number }[];
      confusion: number[][];
    };
    assert.equal(doc.model, "lenet-bn");
    assert.equal(doc.examples, 96);
    assert.equal(doc.confusion.length, doc.classes.length);
    const total = doc.confusion.flat().reduce((a, b) => a + b, 0);
    assert.equal(total, 96);
    const diag = doc.confusion.reduce((s, row, i) => s + row[i], 0);
    assert.equal(doc.accuracy, diag / 96);
    doc.per_class.forEach((c, i) => {
      assert.equal(c.name, doc.classes[i]);
      assert.equal(c.count, doc.confusion[i].reduce((a, b) => a + b, 0));
      assert.equal(c.accuracy, c.count ? doc.confusion[i][i] / c.count : null);
    });
    // The text output says the same.
    const text = await run("eval.ts", args);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`test acc ${doc.accuracy.toFixed(4)}$`, "m"));
    assert.match(text.stdout, /per-class accuracy:/);
    assert.match(text.stdout, /confusion matrix \(rows: true class, columns: predicted\):/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
