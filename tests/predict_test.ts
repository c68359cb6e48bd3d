// Inference in one call: predict (and model.predict) on PNG and JPEG bytes, u8 and f32 planes and
// ImageData-like objects gives the logits of predictAll and of the forward pass on the same
// images; top-k order and names; chunking by batchSize changes nothing; one readback per call;
// bad inputs are one clear TypeError/RangeError.
import assert from "node:assert/strict";
import { testCheck } from "./_check.ts";
import { PREDICT_CHECKS } from "./ops/predict.ts";
import { encode } from "fast-png";
import { encode as encodeJpeg } from "jpeg-js";
import { getGpu } from "../gpu/mod.ts";
import { decodeImage, FASHION_MNIST_CLASSES, ImageDecodeError, pngToPlanes } from "../data/mod.ts";
import {
  createModel,
  encodeSafetensors,
  type Model,
  predict,
  predictAll,
  uploadImageSet,
} from "../models/mod.ts";

const gpu = await getGpu();

/** A seeded u8 image `[c, h, w]` with structure (a gradient and blobs), so logits differ. */
function image(c: number, h: number, w: number, seed: number): Uint8Array {
  const out = new Uint8Array(c * h * w);
  for (let k = 0; k < c; k++) {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const v = 128 + 100 * Math.sin((x + 1) * (seed + 1) * 0.3 + y * 0.2 + k) *
            Math.cos(y * 0.17 * (seed + 2));
        out[(k * h + y) * w + x] = Math.round(Math.min(255, Math.max(0, v)));
      }
    }
  }
  return out;
}

/** HWC interleaved pixels of CHW planes (for encoding PNGs). */
function interleave(planes: Uint8Array, c: number, h: number, w: number): Uint8Array {
  const out = new Uint8Array(c * h * w);
  for (let k = 0; k < c; k++) {
    for (let i = 0; i < h * w; i++) out[i * c + k] = planes[k * h * w + i];
  }
  return out;
}

function png(planes: Uint8Array, c: 1 | 3, h: number, w: number): Uint8Array {
  return encode({ width: w, height: h, data: interleave(planes, c, h, w), channels: c, depth: 8 });
}

/** Logits of same-size u8 images through predictAll. */
async function allLogits(
  model: Model,
  images: Uint8Array[],
  c: number,
  h: number,
  w: number,
  options: { mean?: number[]; std?: number[] } = {},
): Promise<Float32Array> {
  const data = new Uint8Array(images.length * c * h * w);
  images.forEach((im, i) => data.set(im, i * c * h * w));
  const set = uploadImageSet(gpu, {
    images: data,
    labels: new Uint8Array(images.length),
    count: images.length,
    channels: c,
    height: h,
    width: w,
  });
  try {
    return (await predictAll(model, set, { batchSize: 2, ...options })).logits;
  } finally {
    set.images.dispose();
    set.labels.dispose();
  }
}

function assertClose(actual: Float32Array, expected: Float32Array, tol: number, what: string) {
  assert.equal(actual.length, expected.length, what);
  for (let i = 0; i < actual.length; i++) {
    assert.ok(
      Math.abs(actual[i] - expected[i]) <= tol * (1 + Math.abs(expected[i])),
      `${what}: element ${i}: ${actual[i]} vs ${expected[i]}`,
    );
  }
}

const logitsOf = (ps: { logits: Float32Array }[]) => {
  const out = new Float32Array(ps.reduce((s, p) => s + p.logits.length, 0));
  ps.forEach((p, i) => out.set(p.logits, i * p.logits.length));
  return out;
};

// LeNet-BN with its running statistics away from their defaults, so outputs depend on the input.
const gray = createModel(gpu, { name: "lenet-bn", seed: 3 });
const rgb = createModel(gpu, { name: "lenet-bn", seed: 4, inChannels: 3 });

Deno.test("predict on u8 planes matches predictAll and the forward pass", async () => {
  const ims = [0, 1, 2, 3, 4].map((s) => image(1, 28, 28, s));
  const batch = new Uint8Array(5 * 784);
  ims.forEach((im, i) => batch.set(im, i * 784));
  const ps = await predict(gray, { data: batch, shape: [5, 1, 28, 28] });
  const all = await allLogits(gray, ims, 1, 28, 28);
  assertClose(logitsOf(ps), all, 1e-5, "predict vs predictAll");
  // The forward pass on the same images, scaled to [0, 1] on the host.
  const x = gpu.tensor(Float32Array.from(batch, (v) => v / 255), { shape: [5, 1, 28, 28] });
  const { y } = gray.forward(x, { gpu, training: false, seed: 0 });
  assertClose(logitsOf(ps), await y.toArray() as Float32Array, 1e-5, "predict vs forward");
  x.dispose();
  y.dispose();
  // The logits differ between images (the test would be empty otherwise).
  assert.ok(Math.abs(ps[0].logits[0] - ps[1].logits[0]) > 1e-4);
  // A list of [c, h, w] planes is the same as the batch.
  const list = await predict(gray, ims.map((data) => ({ data, shape: [1, 28, 28] })));
  assertClose(logitsOf(list), logitsOf(ps), 1e-6, "list vs batch");
});

Deno.test("predict on f32 planes (u8 / 255) matches the u8 planes, with mean/std too", async () => {
  const ims = [5, 6, 7].map((s) => image(3, 32, 32, s));
  const u8 = await predict(rgb, ims.map((data) => ({ data, shape: [3, 32, 32] })));
  const f32 = await predict(
    rgb,
    ims.map((d) => ({ data: Float32Array.from(d, (v) => v / 255), shape: [3, 32, 32] })),
  );
  assertClose(logitsOf(f32), logitsOf(u8), 1e-5, "f32 vs u8");
  assertClose(logitsOf(u8), await allLogits(rgb, ims, 3, 32, 32), 1e-5, "u8 vs predictAll");
  const norm = { mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.3] };
  const u8n = await predict(rgb, ims.map((data) => ({ data, shape: [3, 32, 32] })), norm);
  const f32n = await predict(
    rgb,
    ims.map((d) => ({ data: Float32Array.from(d, (v) => v / 255), shape: [3, 32, 32] })),
    norm,
  );
  assertClose(logitsOf(f32n), logitsOf(u8n), 1e-4, "normalized f32 vs u8");
  assertClose(logitsOf(u8n), await allLogits(rgb, ims, 3, 32, 32, norm), 1e-5, "vs predictAll");
  assert.ok(Math.abs(u8n[0].logits[0] - u8[0].logits[0]) > 1e-4, "mean/std changed the input");
});

Deno.test("predict on PNG bytes of any size and channels: resized and converted as the trainer does", async () => {
  // A gray 28x28, an RGB 40x30 (resized to 28 on the GPU, converted to gray by luma).
  const g = image(1, 28, 28, 8);
  const c = image(3, 30, 40, 9);
  const ps = await predict(gray, [png(g, 1, 28, 28), png(c, 3, 30, 40)]);
  assertClose(ps[0].logits, await allLogits(gray, [g], 1, 28, 28), 1e-5, "gray PNG");
  const luma = pngToPlanes(png(c, 3, 30, 40), { channels: 1 }).data;
  assertClose(ps[1].logits, await allLogits(gray, [luma], 1, 30, 40), 1e-5, "RGB PNG, resized");
  // A gray PNG for an RGB model: replicated to three channels.
  const [r] = await predict(rgb, [png(g, 1, 28, 28)]);
  const three = new Uint8Array(3 * 784);
  for (let k = 0; k < 3; k++) three.set(g, k * 784);
  assertClose(r.logits, await allLogits(rgb, [three], 3, 28, 28), 1e-5, "gray PNG, RGB model");
  // RGB planes for a gray model: the same luma as the PNG decoder's; gray planes for an RGB one.
  const [fromPlanes] = await predict(gray, [{ data: c, shape: [3, 30, 40] }]);
  assertClose(fromPlanes.logits, ps[1].logits, 1e-6, "RGB planes vs RGB PNG");
  const [grayPlanes] = await predict(rgb, [{ data: g, shape: [1, 28, 28] }]);
  assert.deepEqual(grayPlanes.logits, r.logits, "gray planes vs gray PNG, RGB model");
  // invert: 255 - v.
  const [inv] = await predict(gray, [png(g, 1, 28, 28)], { invert: true });
  const flipped = g.map((v) => 255 - v);
  assertClose(inv.logits, await allLogits(gray, [flipped], 1, 28, 28), 1e-5, "invert");
  // Bytes that are no image are refused in one line, by the name given.
  await assert.rejects(
    predict(gray, [new TextEncoder().encode("GIF89a......")], { imageNames: ["cat.gif"] }),
    (e) => e instanceof ImageDecodeError && /^cat\.gif: is a GIF image/.test(e.message),
  );
});

Deno.test("predict on JPEG bytes: decoded by decodeImage, then as a PNG of the same pixels", async () => {
  const h = 30, w = 26;
  const planes = image(3, h, w, 13);
  const rgba = new Uint8Array(h * w * 4).fill(255);
  for (let i = 0; i < h * w; i++) {
    for (let k = 0; k < 3; k++) rgba[4 * i + k] = planes[k * h * w + i];
  }
  const jpg = new Uint8Array(encodeJpeg({ width: w, height: h, data: rgba }, 90).data);
  for (const model of [gray, rgb]) {
    const c = model.arch.inChannels;
    const [p] = await predict(model, [jpg], { imageNames: ["photo.jpg"] });
    const decoded = decodeImage(jpg, { channels: c }).data;
    assertClose(p.logits, await allLogits(model, [decoded], c, h, w), 1e-5, `JPEG, ${c} channels`);
    // The same pixels as a PNG give the same prediction.
    const [q] = await predict(model, [png(decoded, c as 1 | 3, h, w)]);
    assert.deepEqual(p.logits, q.logits);
  }
  // A JPEG and a PNG in one call, next to planes.
  const both = await predict(gray, [jpg, png(image(1, 28, 28, 14), 1, 28, 28)]);
  assert.equal(both.length, 2);
  // A truncated JPEG: one line naming the image.
  await assert.rejects(
    predict(gray, [jpg.subarray(0, 40)], { imageNames: ["cut.jpg"] }),
    (e) => e instanceof ImageDecodeError && /^cut\.jpg: /.test(e.message),
  );
});

Deno.test("predict on an ImageData-like object equals the same pixels as an RGBA PNG", async () => {
  const h = 20, w = 24;
  const rgba = new Uint8ClampedArray(h * w * 4);
  const base = image(4, h, w, 10);
  for (let i = 0; i < h * w; i++) {
    for (let k = 0; k < 4; k++) rgba[4 * i + k] = base[k * h * w + i];
  }
  const encoded = encode({
    width: w,
    height: h,
    data: new Uint8Array(rgba),
    channels: 4,
    depth: 8,
  });
  for (const model of [gray, rgb]) {
    const [a, b] = await predict(model, [{ width: w, height: h, data: rgba }, encoded]);
    assert.deepEqual(a.logits, b.logits, "same host conversion, same GPU work");
  }
});

Deno.test("predict: top-k classes in order with their names, probabilities summing to 1", async () => {
  const ims = [11, 12].map((s) => ({ data: image(1, 28, 28, s), shape: [1, 28, 28] }));
  const ps = await gray.predict(ims, { topK: 4, classes: FASHION_MNIST_CLASSES });
  const fn = await predict(gray, ims, { topK: 4, classes: FASHION_MNIST_CLASSES });
  assert.deepEqual(ps, fn, "model.predict is predict");
  for (const p of ps) {
    assert.equal(p.probabilities.length, 10);
    const sum = p.probabilities.reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - 1) < 1e-5, `sum ${sum}`);
    const order = [...p.probabilities.keys()].sort((a, b) =>
      p.probabilities[b] - p.probabilities[a] || a - b
    );
    assert.deepEqual(p.top.map((t) => t.index), order.slice(0, 4));
    assert.deepEqual(
      p.top.map((t) => t.name),
      order.slice(0, 4).map((i) => FASHION_MNIST_CLASSES[i]),
    );
    for (const t of p.top) assert.equal(t.probability, p.probabilities[t.index]);
    // The softmax of the logits.
    const m = Math.max(...p.logits);
    const z = p.logits.reduce((s, v) => s + Math.exp(v - m), 0);
    p.logits.forEach((v, i) =>
      assert.ok(Math.abs(p.probabilities[i] - Math.exp(v - m) / z) < 1e-6)
    );
  }
  // Defaults: 5 classes named by their indices.
  const [d] = await predict(gray, ims.slice(0, 1));
  assert.equal(d.top.length, 5);
  assert.equal(d.top[0].name, String(d.top[0].index));
});

Deno.test("predict: more images than the batch size give the same results; one readback per call", async () => {
  // Mixed sizes and types, interleaved: u8 28x28, f32 28x28, a PNG 36x36, an ImageData 14x14.
  const images = Array.from({ length: 9 }, (_, i) => {
    const px = image(1, 28, 28, 20 + i);
    switch (i % 4) {
      case 0:
        return { data: px, shape: [1, 28, 28] };
      case 1:
        return { data: Float32Array.from(px, (v) => v / 255), shape: [1, 28, 28] };
      case 2:
        return png(image(1, 36, 36, 20 + i), 1, 36, 36);
      default: {
        const rgba = new Uint8ClampedArray(14 * 14 * 4).map((_, k) => (k * 37 + i * 11) % 256);
        return { width: 14, height: 14, data: rgba };
      }
    }
  });
  const before = gpu.stats.readbacks;
  const chunked = await predict(gray, images, { batchSize: 4 });
  assert.equal(gpu.stats.readbacks - before, 1, "one readback for 9 images in 3 chunks");
  const whole = await predict(gray, images, { batchSize: 64 });
  assertClose(logitsOf(chunked), logitsOf(whole), 1e-5, "batchSize 4 vs 64");
  for (const i of [0, 1, 2, 3, 8]) {
    const [alone] = await predict(gray, [images[i]]);
    assertClose(alone.logits, chunked[i].logits, 1e-5, `image ${i} alone`);
  }
  // predictAll: one readback for the whole set too.
  const set = uploadImageSet(gpu, {
    images: new Uint8Array(7 * 784),
    labels: new Uint8Array(7),
    count: 7,
    channels: 1,
    height: 28,
    width: 28,
  });
  const r0 = gpu.stats.readbacks;
  const { predicted, logits } = await predictAll(gray, set, { batchSize: 3 });
  assert.equal(gpu.stats.readbacks - r0, 1);
  assert.equal(predicted.length, 7);
  assert.equal(logits.length, 70);
  set.images.dispose();
  set.labels.dispose();
});

Deno.test("predict: bad inputs are one clear TypeError or RangeError", async () => {
  const ok = { data: new Uint8Array(784), shape: [1, 28, 28] };
  const cases: [string, () => Promise<unknown>, ErrorConstructor, RegExp][] = [
    ["empty list", () => predict(gray, []), TypeError, /no images given/],
    [
      "two channels",
      () => predict(gray, [{ data: new Uint8Array(2 * 784), shape: [2, 28, 28] }]),
      TypeError,
      /image 0 has 2 channels; lenet-bn takes 1 \(give 1 or 3 channels\)/,
    ],
    [
      "a batch of four channels",
      () => predict(rgb, { data: new Uint8Array(4 * 784), shape: [1, 4, 28, 28] }),
      TypeError,
      /the batch has 4 channels; lenet-bn takes 3/,
    ],
    [
      "data does not fill the shape",
      () => predict(gray, [{ data: new Uint8Array(700), shape: [1, 28, 28] }]),
      TypeError,
      /700 values do not fill shape \[1,28,28\] \(784\)/,
    ],
    [
      "a batch shape of rank 3",
      () => predict(gray, { data: new Uint8Array(784), shape: [1, 28, 28] }),
      TypeError,
      /shape must be \[n, channels, height, width\]/,
    ],
    [
      "bare bytes",
      () => predict(gray, new Uint8Array(8) as never),
      TypeError,
      /wrap one image in a list/,
    ],
    ["not an image", () => predict(gray, [42 as never]), TypeError, /image 0 is 42, not an image/],
    [
      "topK 0",
      () => predict(gray, [ok], { topK: 0 }),
      RangeError,
      /topK must be an integer in 1\.\.10, got 0/,
    ],
    ["topK 11", () => predict(gray, [ok], { topK: 11 }), RangeError, /in 1\.\.10, got 11/],
    ["topK 1.5", () => predict(gray, [ok], { topK: 1.5 }), RangeError, /in 1\.\.10, got 1\.5/],
    [
      "class names",
      () => predict(gray, [ok], { classes: ["a", "b"] }),
      RangeError,
      /2 class names for 10 classes/,
    ],
    ["batchSize", () => predict(gray, [ok], { batchSize: 0 }), RangeError, /batchSize must be/],
    ["resize", () => predict(gray, [ok], { resize: -1 }), RangeError, /resize must be/],
  ];
  for (const [name, f, type, re] of cases) {
    await assert.rejects(f, (e: Error) => {
      assert.ok(e instanceof type, `${name}: ${e}`);
      assert.match(e.message, re, name);
      assert.equal(e.message.split("\n").length, 1, name);
      return true;
    });
  }
});

Deno.test({
  name:
    "predict on an f16 model: f16 inputs from u8 and f32 planes, f32 results near the f32 model's",
  ignore: !gpu.features.f16,
  fn: async () => {
    const half = createModel(gpu, { name: "lenet-bn", seed: 3, precision: "f16" });
    const ims = [40, 41, 42].map((s) => image(1, 30, 30, s));
    const u8 = ims.map((data) => ({ data, shape: [1, 30, 30] }));
    const f32 = ims.map((d) => ({
      data: Float32Array.from(d, (v) => v / 255),
      shape: [1, 30, 30],
    }));
    const ref = await predict(gray, u8, { batchSize: 2 });
    for (const input of [u8, f32]) {
      const ps = await predict(half, input, { batchSize: 2 });
      assertClose(logitsOf(ps), logitsOf(ref), 3e-2, "f16 vs f32");
    }
    half.dispose();
  },
});

Deno.test("the README's inference example runs as written", async () => {
  const root = new URL("..", import.meta.url).pathname;
  const readme = await Deno.readTextFile(`${root}README.md`);
  const m = readme.match(/<!-- inference -->\s*```ts\n([\s\S]*?)```/);
  assert.ok(m, "README has a <!-- inference --> ts block");
  const code = m[1].replace(`"@modern-cnn/webgpu"`, JSON.stringify(`file://${root}mod.ts`));
  const dir = await Deno.makeTempDir({ prefix: "modern-cnn-inference-" });
  try {
    await Deno.writeTextFile(`${dir}/example.ts`, code);
    await Deno.writeFile(
      `${dir}/lenet-bn.safetensors`,
      encodeSafetensors(await gray.stateDict(), { model: "lenet-bn", resize: "28" }),
    );
    await Deno.writeFile(`${dir}/shoe.png`, png(image(3, 50, 60, 30), 3, 50, 60));
    const rgba = new Uint8Array(32 * 32 * 4).map((_, i) => (i % 4 === 3 ? 255 : (i * 5) % 256));
    await Deno.writeFile(`${dir}/bag.jpg`, encodeJpeg({ width: 32, height: 32, data: rgba }).data);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--config", `${root}deno.json`, `${dir}/example.ts`],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    assert.equal(out.code, 0, dec.decode(out.stderr));
    const lines = dec.decode(out.stdout).trim().split("\n");
    assert.equal(lines.length, 2, dec.decode(out.stdout));
    for (const l of lines) {
      const names = [...l.matchAll(/"([^"]+) \d\.\d{3}"/g)].map((x) => x[1]);
      assert.equal(names.length, 3, l);
      for (const n of names) assert.ok(FASHION_MNIST_CLASSES.includes(n), n);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

for (const check of PREDICT_CHECKS) testCheck(check);
