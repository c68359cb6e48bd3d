// The GPU-resident trainer: it learns, one step records one submit with no readback and no
// upload, and a one-batch epoch without shuffling is exactly one SGD step.
import assert from "node:assert/strict";
import {
  createModel,
  DivergenceError,
  type ImageSet,
  NonFiniteError,
  Trainer,
  uploadImageSet,
} from "../models/mod.ts";
import { DIVERGENCE_PEEK_STEPS, permutation } from "../models/trainer.ts";
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
  // 8 steps: one submit each; the epoch's uploads: the shuffled order; one readback: the
  // divergence watch, loss and correct together.
  assert.equal(s1.submits - s0.submits, 9, "one submit per step (8) and one for the readback");
  assert.equal(s1.uploads - s0.uploads, 1, "one upload per epoch (the order), none per step");
  assert.equal(s1.readbacks - s0.readbacks, 1, "metrics and the watch are read once per epoch");
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
  const { softmaxCrossEntropy } = await import("../kernels/softmax_ce/index.ts");
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

Deno.test(
  "f16: lenet-bn learns the toy set with loss scaling; steps never read back or upload",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const model = createModel(gpu, { name: "lenet-bn", seed: 0 });
    const train = uploadImageSet(gpu, toySet(512, 1));
    const test = uploadImageSet(gpu, toySet(256, 2));
    const trainer = new Trainer(model, {
      lr: 1.0,
      batchSize: 64,
      resize: 28,
      seed: 0,
      precision: "f16",
    });
    assert.equal(model.precision, "f16");
    for (const [name, p] of model.params) {
      assert.equal(p.half?.dtype ?? null, p.shape.length >= 2 ? "f16" : null, name);
    }
    await gpu.sync();
    const s0 = { ...gpu.stats };
    const first = await trainer.trainEpoch(train, { epoch: 0 });
    const s1 = { ...gpu.stats };
    // 8 steps: one submit each; one readback: the watch, loss, correct and the scaler's state.
    assert.equal(s1.submits - s0.submits, 9, "one submit per step (8) and one for the readback");
    assert.equal(s1.uploads - s0.uploads, 1, "one upload per epoch (the order), none per step");
    assert.equal(s1.readbacks - s0.readbacks, 1, "metrics and the scale are read once per epoch");
    assert.equal(first.lossScale, 65536, "no overflow at GradScaler's initial scale");
    assert.equal(first.skippedSteps, 0);
    const second = await trainer.trainEpoch(train, { epoch: 1 });
    const acc = await trainer.evaluate(test);
    assert.ok(second.loss < first.loss, `loss fell: ${first.loss} -> ${second.loss}`);
    assert.ok(acc > 0.5, `test accuracy ${acc} beats chance (0.1) by a wide margin`);
    // The f16 weight copies equal f16(master) after the steps.
    for (const [name, p] of model.params) {
      if (!p.half) continue;
      const master = await p.value!.toArray();
      const half = await p.half.toArray();
      const bad = master.findIndex((v, i) => Math.f16round(v) !== half[i]);
      assert.equal(bad, -1, `${name}: half[${bad}] = ${half[bad]}, master ${master[bad]}`);
    }
    trainer.dispose();
    model.dispose();
  },
);

Deno.test(
  "f16: an overflowing step is skipped on the GPU (parameters unchanged) and the scale halves",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const set = uploadImageSet(gpu, toySet(16, 5));
    const model = createModel(gpu, { name: "lenet", seed: 9 });
    const before = await model.stateDict();
    // dlogits = scale·(softmax − onehot)/16 overflows f16 (max 65504) at scale 2^40.
    const trainer = new Trainer(model, {
      lr: 0.5,
      batchSize: 16,
      resize: 28,
      precision: "f16",
      lossScale: { initScale: 2 ** 40 },
    });
    const r = await trainer.trainEpoch(set, { epoch: 0, shuffle: false });
    assert.equal(r.skippedSteps, 1);
    assert.equal(r.lossScale, 2 ** 39);
    assert.ok(Number.isFinite(r.loss), "the loss is computed unscaled");
    const after = await model.stateDict();
    for (const [k, t] of before) {
      assert.deepEqual(after.get(k)!.data, t.data, `${k} moved in a skipped step`);
    }
    // At a sane scale the next step moves the weights.
    const t2 = new Trainer(model, { lr: 0.5, batchSize: 16, resize: 28, precision: "f16" });
    const r2 = await t2.trainEpoch(set, { epoch: 1, shuffle: false });
    assert.equal(r2.skippedSteps, 0);
    const moved = await model.stateDict();
    assert.notDeepEqual(moved.get("0.weight")!.data, before.get("0.weight")!.data);
    for (const t of [trainer, t2, model]) t.dispose();
  },
);

Deno.test("f16 and f32 trainers take nearly the same first steps", GPU_TEST, async () => {
  const gpu = await testGpu();
  const set = uploadImageSet(gpu, toySet(64, 7));
  const run = async (precision: "f32" | "f16") => {
    const model = createModel(gpu, { name: "lenet-bn", seed: 3 });
    const trainer = new Trainer(model, { lr: 0.5, batchSize: 32, resize: 28, precision });
    const r = await trainer.trainEpoch(set, { epoch: 0, shuffle: false });
    const sd = await model.stateDict();
    trainer.dispose();
    model.dispose();
    return { r, sd };
  };
  const init = createModel(gpu, { name: "lenet-bn", seed: 3 });
  const start = await init.stateDict();
  init.dispose();
  const a = await run("f32");
  const b = await run("f16");
  assertClose([b.r.loss], [a.r.loss], { rtol: 1e-2, what: "epoch loss" });
  // Two SGD steps from the same start: each weight's update (after − before) differs from f32's
  // by f16 rounding of activations and gradients (2^-11 relative per rounding, a few dozen
  // roundings deep): within 5% of the largest update of that parameter.
  for (const [k, t] of a.sd) {
    if (t.dtype !== "F32" || !k.endsWith("weight")) continue;
    const w0 = start.get(k)!.data as Float32Array;
    const da = Float64Array.from(t.data as Float32Array, (v, i) => v - w0[i]);
    const db = Float64Array.from(b.sd.get(k)!.data as Float32Array, (v, i) => v - w0[i]);
    const scale = Math.max(...da.map(Math.abs));
    assert.ok(scale > 0, `${k} moved in f32`);
    assertClose(db, da, { rtol: 0, atol: 5e-2 * scale, what: `${k} update after two steps` });
  }
});

Deno.test("f16 weight copies follow loadStateDict and precision switches", GPU_TEST, async () => {
  const gpu = await testGpu();
  const a = createModel(gpu, { name: "lenet", seed: 1, precision: "f16" });
  const b = createModel(gpu, { name: "lenet", seed: 2 });
  const halves = async (m: typeof a) => {
    const out = new Map<string, Float16Array>();
    for (const [k, p] of m.params) if (p.half) out.set(k, (await p.half.toArray()) as Float16Array);
    return out;
  };
  const expectSynced = async (m: typeof a, what: string) => {
    for (const [k, p] of m.params) {
      if (p.shape.length < 2) {
        assert.equal(p.half, null, `${what}: ${k} (1-D) has no f16 copy`);
        continue;
      }
      const master = await p.value!.toArray();
      const half = await p.half!.toArray();
      const bad = master.findIndex((v, i) => Math.f16round(v) !== half[i]);
      assert.equal(bad, -1, `${what}: ${k}[${bad}] f16 ${half[bad]}, master ${master[bad]}`);
    }
  };
  await expectSynced(a, "after createModel");
  const before = await halves(a);
  a.loadStateDict(await b.stateDict());
  await expectSynced(a, "after loadStateDict");
  assert.notDeepEqual(await halves(a), before, "the copies changed with the weights");
  a.setPrecision("f32");
  assert.equal(a.precision, "f32");
  for (const [k, p] of a.params) assert.equal(p.half, null, `${k}: f32 frees the copies`);
  a.setPrecision("f16");
  await expectSynced(a, "after f32 -> f16");
  assert.throws(() => a.setPrecision("f8" as "f16"), RangeError);
  // A trainer built for f32 follows a model switched to f16 afterwards: it scales the loss.
  const t = new Trainer(b, { lr: 0.1, batchSize: 16, resize: 28 });
  b.setPrecision("f16");
  const r = await t.trainEpoch(uploadImageSet(gpu, toySet(16, 3)), { epoch: 0 });
  assert.equal(r.lossScale, 65536);
  for (const m of [t, a, b]) m.dispose();
});

Deno.test(
  "a diverging run throws DivergenceError at the first bad step; restored, it trains on",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const model = createModel(gpu, { name: "lenet", seed: 0 });
    const good = await model.stateDict();
    const train = uploadImageSet(gpu, toySet(256, 1));
    const test = uploadImageSet(gpu, toySet(64, 2));
    const trainer = new Trainer(model, { lr: 1e38, batchSize: 32, resize: 28, seed: 0 });
    const err = await trainer.trainEpoch(train, { epoch: 0 }).then(() => null, (e) => e);
    assert.ok(err instanceof DivergenceError, `a DivergenceError, got ${err}`);
    assert.equal(err.epoch, 0);
    assert.equal(err.what, "loss");
    assert.ok(err.epochStep >= 0 && err.epochStep < 8 && err.step === err.epochStep, `${err.step}`);
    assert.match(err.message, /diverged in epoch 1 at step \d+ .*lower the learning rate/);
    // Evaluating the non-finite model is an error, not an accuracy.
    await assert.rejects(() => trainer.evaluate(test), NonFiniteError);
    await assert.rejects(() => trainer.evaluate(test, { limit: 0 }), RangeError);
    // A restored model trains on with a sane trainer (the watch was reset).
    model.loadStateDict(good);
    const sane = new Trainer(model, { lr: 0.5, batchSize: 32, resize: 28, seed: 0 });
    const r = await sane.trainEpoch(train, { epoch: 1 });
    assert.ok(Number.isFinite(r.loss));
    const t2 = await trainer.evaluate(test);
    assert.ok(Number.isFinite(t2));
  },
);

Deno.test(
  "divergence stops an epoch early: the watch is peeked at without waiting",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const model = createModel(gpu, { name: "lenet", seed: 0 });
    const n = (DIVERGENCE_PEEK_STEPS * 3) * 2;
    const train = uploadImageSet(gpu, toySet(n, 1));
    const trainer = new Trainer(model, { lr: 1e38, batchSize: 2, resize: 28, seed: 0 });
    let steps = 0;
    const err = await trainer.trainEpoch(train, { epoch: 0, onStep: (d) => steps = d }).then(
      () => null,
      (e) => e,
    );
    assert.ok(err instanceof DivergenceError);
    assert.ok(steps < DIVERGENCE_PEEK_STEPS * 3, `stopped after ${steps} of ${n / 2} steps`);
  },
);
