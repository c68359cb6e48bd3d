// The training loop's hooks (Trainer.fit, models/fit.ts): onEpochEnd's metrics, onStep's running
// loss read asynchronously without a readback per step, and early stopping as Keras's.
import assert from "node:assert/strict";
import {
  createModel,
  EarlyStopping,
  type EpochMetrics,
  type FitState,
  type ImageSet,
  type RunningMetrics,
  Trainer,
  uploadImageSet,
} from "../models/mod.ts";
import { GPU_TEST, Rng, testGpu } from "./harness.ts";

/** A learnable toy set: class k is a bright bar at row band k (28×28), plus noise. */
function toySet(count: number, seed: number): ImageSet {
  const rng = new Rng(seed);
  const images = new Uint8Array(count * 784);
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    const k = rng.int(10);
    labels[i] = k;
    for (let p = 0; p < 784; p++) {
      images[i * 784 + p] = (Math.floor(p / 28 / 2.8) === k ? 200 : 20) + rng.int(40);
    }
  }
  return { images, labels, count, channels: 1, height: 28, width: 28 };
}

Deno.test("EarlyStopping follows Keras: patience, minDelta, max and min modes", () => {
  const acc = new EarlyStopping({ patience: 2, minDelta: 0.01 });
  assert.deepEqual(acc.update(0.5), { improved: true, stop: false });
  assert.deepEqual(acc.update(0.505), { improved: false, stop: false }, "within minDelta");
  assert.deepEqual(acc.update(0.6), { improved: true, stop: false });
  assert.deepEqual(acc.update(0.6), { improved: false, stop: false });
  assert.deepEqual(acc.update(0.59), { improved: false, stop: true }, "2 epochs without");
  assert.equal(acc.best, 0.6);
  const loss = new EarlyStopping({ monitor: "loss", patience: 0 });
  assert.deepEqual(loss.update(2), { improved: true, stop: false });
  assert.deepEqual(loss.update(2), { improved: false, stop: true }, "patience 0: at once");
  assert.throws(() => new EarlyStopping({ patience: 1.5 }), RangeError);
  assert.throws(() => new EarlyStopping({ patience: 1, minDelta: -1 }), RangeError);
  assert.throws(() => new EarlyStopping({ patience: 1, monitor: "acc" as "loss" }), RangeError);
});

Deno.test(
  "fit: a resumed fit goes on from the state its last epoch reached (best accuracy, patience)",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const model = createModel(gpu, { name: "lenet", seed: 0 });
    const train = uploadImageSet(gpu, toySet(64, 1));
    const test = uploadImageSet(gpu, toySet(64, 2));
    const trainer = new Trainer(model, { lr: 0.1, batchSize: 64, resize: 28 });
    const stopping = { monitor: "loss", patience: 2, minDelta: 100 } as const;
    const first = await trainer.fit(train, { epochs: 1, test, earlyStopping: stopping });
    const s1 = first.history[0].state;
    const acc1 = first.history[0].testAcc!;
    assert.deepEqual(s1.best, { testAcc: acc1, epoch: 1 });
    assert.deepEqual(s1.stopping, {
      monitor: "loss",
      best: first.history[0].loss,
      wait: 0,
    });
    // A previous best no epoch can beat: no epoch is the best, the best epoch stays the old one,
    // and each epoch's state carries it on.
    const seen: EpochMetrics[] = [];
    const again = await trainer.fit(train, {
      epochs: 3,
      startEpoch: 1,
      test,
      state: { best: { testAcc: 1, epoch: 1 }, stopping: null },
      onEpochEnd: (m) => void seen.push(m),
    });
    assert.deepEqual(seen.map((m) => m.best), [false, false]);
    assert.equal(again.bestEpoch, 1);
    assert.deepEqual(seen.map((m) => m.state.best), [{ testAcc: 1, epoch: 1 }, {
      testAcc: 1,
      epoch: 1,
    }]);
    // A previous best any epoch beats: the first resumed epoch is the best.
    const low = await trainer.fit(train, {
      epochs: 4,
      startEpoch: 3,
      test,
      state: { best: { testAcc: -0, epoch: 2 }, stopping: null },
    });
    const acc4 = low.history[0].testAcc!;
    assert.equal(low.history[0].best, acc4 > 0, `test accuracy ${acc4}`);
    // Early stopping counts on: one epoch without improvement before the resume, patience 2,
    // so the first resumed epoch stops the run (a fresh fit would have run 3).
    const stopped = await trainer.fit(train, {
      epochs: 10,
      startEpoch: 4,
      test,
      earlyStopping: stopping,
      state: { best: null, stopping: { monitor: "loss", best: s1.stopping!.best, wait: 1 } },
    });
    assert.deepEqual(stopped.history.map((m) => m.epoch), [5]);
    assert.equal(stopped.stoppedEarly, true);
    assert.deepEqual(stopped.history[0].state.stopping!.wait, 2);
    // Another metric's counters are not taken: a fresh count.
    const other = await trainer.fit(train, {
      epochs: 6,
      startEpoch: 5,
      test,
      earlyStopping: { monitor: "testAcc", patience: 0 },
      state: { best: null, stopping: { monitor: "loss", best: -1e9, wait: 5 } },
    });
    assert.equal(other.history[0].state.stopping!.monitor, "testAcc");
    assert.equal(other.history[0].state.stopping!.wait, 0, "the first epoch improves on -Infinity");
    // A bad state is a RangeError naming the field, or a TypeError for a wrong shape.
    for (
      const bad of [
        { best: { testAcc: 1.5, epoch: 1 }, stopping: null },
        { best: { testAcc: 0.5, epoch: 0 }, stopping: null },
        { best: { testAcc: 0.5, epoch: 7 }, stopping: null }, // after the 6 epochs done
        { best: null, stopping: { monitor: "loss" as const, best: NaN, wait: 0 } },
        { best: null, stopping: { monitor: "loss" as const, best: 1, wait: -1 } },
      ]
    ) {
      await assert.rejects(
        () => trainer.fit(train, { epochs: 7, startEpoch: 6, state: bad }),
        (e) => e instanceof RangeError && /fit: state\.(best|stopping)/.test(e.message),
      );
    }
    for (
      const bad of [
        {},
        { best: { testAcc: null, epoch: 1 }, stopping: null },
        { best: { testAcc: "0.5", epoch: 1 }, stopping: null },
        { best: null, stopping: { monitor: "loss", best: "1", wait: 0 } },
      ]
    ) {
      await assert.rejects(
        () => trainer.fit(train, { epochs: 7, startEpoch: 6, state: bad as unknown as FitState }),
        (e) => e instanceof TypeError && /fit: state must be/.test(e.message),
      );
    }
    model.dispose();
    train.images.dispose();
    train.labels.dispose();
    test.images.dispose();
    test.labels.dispose();
  },
);

Deno.test(
  "fit: onEpochEnd gets each epoch's metrics; early stopping stops it",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const model = createModel(gpu, { name: "lenet-bn", seed: 0 });
    const train = uploadImageSet(gpu, toySet(256, 1));
    const test = uploadImageSet(gpu, toySet(128, 2));
    const schedule = { schedule: { kind: "step", stepSize: 4 } } as const;
    const trainer = new Trainer(model, { lr: 1.0, batchSize: 64, resize: 28, schedule });
    const seen: EpochMetrics[] = [];
    const fit = await trainer.fit(train, {
      epochs: 3,
      test,
      onEpochEnd: async (m) => {
        seen.push(m);
        await Promise.resolve(); // awaited: a save may go here
      },
    });
    assert.equal(fit.stoppedEarly, false);
    assert.deepEqual(fit.history, seen);
    assert.deepEqual(seen.map((m) => m.epoch), [1, 2, 3]);
    for (const [i, m] of seen.entries()) {
      assert.equal(m.examples, 256);
      assert.ok(Number.isFinite(m.loss) && m.loss > 0);
      assert.ok(m.trainAcc >= 0 && m.trainAcc <= 1);
      assert.ok(m.seconds > 0);
      assert.equal(m.examplesPerSec, m.examples / m.seconds);
      assert.equal(m.lr, trainer.lrAt((i + 1) * 4 - 1), "the lr of the epoch's last step");
    }
    assert.deepEqual(seen.map((m) => m.lr), [1.0, 0.1, 0.010000000000000002]);
    assert.equal(seen[2].testAcc, await trainer.evaluate(test), "the test accuracy");
    const accs = seen.map((m) => m.testAcc!);
    const bestEpoch = accs.indexOf(Math.max(...accs)) + 1;
    assert.equal(fit.bestEpoch, bestEpoch);
    assert.ok(seen[0].best);
    assert.equal(seen[bestEpoch - 1].best, true);

    // Early stopping: a minDelta no epoch can beat stops after 1 + patience epochs.
    const stopped: number[] = [];
    const again = await trainer.fit(train, {
      epochs: 10,
      startEpoch: 3,
      test,
      onEpochEnd: (m) => void stopped.push(m.epoch),
      earlyStopping: { monitor: "loss", patience: 2, minDelta: 100 },
    });
    assert.deepEqual(stopped, [4, 5, 6], "the first epoch improves on Infinity, then 2 without");
    assert.equal(again.stoppedEarly, true);
    await assert.rejects(
      () => trainer.fit(train, { epochs: 5, earlyStopping: { patience: 1 } }),
      RangeError,
      "testAcc needs a test set",
    );
  },
);

Deno.test(
  "onStep's running loss is read asynchronously: at most one read in flight, none per step",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const model = createModel(gpu, { name: "lenet", seed: 0 });
    const train = uploadImageSet(gpu, toySet(512, 3));
    const trainer = new Trainer(model, { lr: 0.9, batchSize: 16, resize: 28 });
    await gpu.sync();
    const s0 = { ...gpu.stats };
    const runs: (RunningMetrics | null)[] = [];
    // progressSeconds 0: a read is issued whenever none is in flight.
    const r = await trainer.trainEpoch(train, {
      epoch: 0,
      progressSeconds: 0,
      onStep: (_done, _total, running) => void runs.push(running),
    });
    const s1 = { ...gpu.stats };
    const steps = 32;
    assert.equal(runs.length, steps);
    const reads = s1.readbacks - s0.readbacks - 1; // the epoch's end: watch, loss, correct
    assert.ok(reads >= 1, "the running metrics were read");
    // The loop yields every 8 steps; a read completes only then, so at most one per 8 steps.
    assert.ok(reads <= steps / 8 + 1, `${reads} running reads in ${steps} steps`);
    assert.equal(s1.submits - s0.submits, steps + reads + 1, "one submit per step and per read");
    assert.equal(s1.uploads - s0.uploads, 1, "one upload per epoch (the order)");
    const got = runs.filter((x): x is RunningMetrics => x !== null);
    assert.ok(got.length > 0, "a running value arrived during the epoch");
    for (const x of got) {
      assert.ok(Number.isFinite(x.loss) && x.loss > 0, `running loss ${x.loss}`);
      assert.ok(x.trainAcc >= 0 && x.trainAcc <= 1);
      assert.equal(x.examples % 16, 0);
    }
    assert.ok(Math.abs(got[0].loss - r.loss) < 3, "the running loss is the same quantity");
    // Without onStep no running read is issued: the epoch reads back once, at its end.
    const s2 = { ...gpu.stats };
    await trainer.trainEpoch(train, { epoch: 1, progressSeconds: 0 });
    assert.equal(gpu.stats.readbacks - s2.readbacks, 1);
  },
);
