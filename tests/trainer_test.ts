// The GPU-resident trainer: it learns, one step records one submit with no readback and no
// upload, and a one-batch epoch without shuffling is exactly one SGD step.
import assert from "node:assert/strict";
import { createModel, type ImageSet, permutation, Trainer, uploadImageSet } from "../models/mod.ts";
import { assertClose, GPU_TEST, Rng, testGpu } from "./harness.ts";

/** A learnable toy set: class k is a bright bar at row band k (28×28), plus noise. */
function toySet(count: number, seed: number): ImageSet {
  const rng = new Rng(seed);
  const images = new Uint8Array(count * 28 * 28);
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    const k = rng.int(10);
    labels[i] = k;
    for (let y = 0; y < 28; y++) {
      for (let x = 0; x < 28; x++) {
        const bar = Math.floor(y / 2.8) === k ? 200 : 20;
        images[i * 784 + y * 28 + x] = Math.max(0, Math.min(255, bar + rng.int(40)));
      }
    }
  }
  return { images, labels, count, channels: 1, height: 28, width: 28 };
}

Deno.test("permutation is a seeded shuffle of 0..n-1", () => {
  const p = permutation(100, 3);
  assert.deepEqual([...p].sort((a, b) => a - b), Array.from({ length: 100 }, (_, i) => i));
  assert.deepEqual(permutation(100, 3), p);
  assert.notDeepEqual(permutation(100, 4), p);
});

Deno.test("lenet-bn learns a toy set; steps never read back or upload", GPU_TEST, async () => {
  const gpu = await testGpu();
  const model = createModel(gpu, { name: "lenet-bn", seed: 0 });
  const train = uploadImageSet(gpu, toySet(512, 1));
  const test = uploadImageSet(gpu, toySet(256, 2));
  const trainer = new Trainer(model, { lr: 1.0, batchSize: 64, resize: 28, seed: 0 });
  await gpu.sync();
  const s0 = { ...gpu.stats };
  const first = await trainer.trainEpoch(train, { epoch: 0 });
  const s1 = { ...gpu.stats };
  // 8 steps: one submit each; the epoch's uploads: the shuffled order; readbacks: loss + correct.
  assert.equal(s1.submits - s0.submits, 10, "one submit per step (8) and per metric readback (2)");
  assert.equal(s1.uploads - s0.uploads, 1, "one upload per epoch (the order), none per step");
  assert.equal(s1.readbacks - s0.readbacks, 2, "metrics are read once per epoch");
  const second = await trainer.trainEpoch(train, { epoch: 1 });
  const acc = await trainer.evaluate(test);
  assert.ok(second.loss < first.loss, `loss fell: ${first.loss} -> ${second.loss}`);
  assert.ok(acc > 0.5, `test accuracy ${acc} beats chance (0.1) by a wide margin`);
  assert.equal(first.examples, 512);
});

Deno.test("a one-batch epoch without shuffling is exactly one SGD step", GPU_TEST, async () => {
  const gpu = await testGpu();
  const set = toySet(16, 5);
  const a = createModel(gpu, { name: "lenet", seed: 9 });
  const b = createModel(gpu, { name: "lenet", seed: 9 });
  const before = await a.stateDict();
  const trainer = new Trainer(a, { lr: 0.5, batchSize: 16, resize: 28 });
  const r = await trainer.trainEpoch(uploadImageSet(gpu, set), {
    epoch: 0,
    shuffle: false,
    limit: 16,
  });
  assert.equal(trainer.steps, 1);
  // Do the same step by hand: forward, CE, backward, p -= lr·g.
  const { softmaxCrossEntropy } = await import("../kernels/softmax_ce.ts");
  const x = gpu.tensor(Float32Array.from(set.images, (v) => v / 255), { shape: [16, 1, 28, 28] });
  const labels = gpu.tensor(Int32Array.from(set.labels), { shape: [16] });
  const ctx = { gpu, training: true, seed: 0 };
  const f = b.forward(x, ctx);
  const dlogits = gpu.empty(f.y.shape);
  const lossSum = gpu.zeros([1]);
  const correct = gpu.zeros([1], { dtype: "u32" });
  softmaxCrossEntropy({ dlogits, lossSum, correct, logits: f.y, labels }, { n: 16, c: 10 });
  b.backward(dlogits, { cache: f.cache, ctx });
  assertClose([r.loss], [(await lossSum.toArray())[0] / 16], { rtol: 1e-5, what: "epoch loss" });
  for (const [name, p] of b.params) {
    const w0 = before.get(name)!.data as Float32Array;
    const g = await p.grad!.toArray();
    const expected = w0.map((w, i) => w - 0.5 * g[i]);
    const got = await a.params.find(([k]) => k === name)![1].value!.toArray();
    assertClose(got, expected, { rtol: 1e-5, atol: 1e-6, what: `after one step: ${name}` });
  }
});
