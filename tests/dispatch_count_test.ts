// Issue #15, section 3: after the first training step, a step creates no bind group (it is
// replayed from the first, or every bind group comes from the cache), for every model of the zoo, as bench:train trains it (plain SGD,
// batch 2, the parity fixtures' input sizes), and each step records the same dispatches.
// (tests/host_test.ts checks bind groups with momentum, bit for bit against no cache, on two
// models; tests/fusion_test.ts bounds the dispatches per step.)
//
// Before replay the pool handed a step's buffers out in its steady order only from the second or
// third step on (DenseNet: bind groups per step 314, 0, 12, 0, ...); a replayed step records
// nothing new, so SETTLED is 1. It never goes up.
import assert from "node:assert/strict";
import { makeSynthetic } from "../data/mod.ts";
import {
  createModel,
  MODEL_NAMES,
  type ModelName,
  Trainer,
  uploadImageSet,
} from "../models/mod.ts";
import { GPU_TEST, testGpu } from "./harness.ts";

/** The input sizes of the parity fixtures (tests/fixtures/make_models.py). */
const SIZES: Record<ModelName, number> = {
  "lenet": 28,
  "lenet-bn": 28,
  "alexnet": 224,
  "alexnet-lrn": 224,
  "vgg": 224,
  "nin": 96,
  "googlenet": 64,
  "resnet": 64,
  "densenet": 64,
  "mobilenet": 96,
};

/** The steps after which no step creates a bind group (lower it when it can: never raise it). */
const SETTLED = 1;

Deno.test(
  "every model: a step after the first creates no bind group; every step the same dispatches",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const steps = SETTLED + 2;
    const rows: string[] = [];
    const failures: string[] = [];
    let slowest = 0;
    for (const name of MODEL_NAMES) {
      const model = createModel(gpu, { name });
      const trainer = new Trainer(model, { lr: 0.01, batchSize: 2, resize: SIZES[name] });
      const set = uploadImageSet(gpu, makeSynthetic({ count: 2 * steps, height: 28, seed: 2 }));
      const bindGroups: number[] = [], dispatches: number[] = [];
      let last = { ...gpu.stats };
      await trainer.trainEpoch(set, {
        epoch: 0,
        onStep: () => {
          bindGroups.push(gpu.stats.bindGroups - last.bindGroups);
          dispatches.push(gpu.stats.dispatches - last.dispatches);
          last = { ...gpu.stats };
        },
      });
      rows.push(`${name}: bind groups per step ${bindGroups}, dispatches ${dispatches}`);
      const settled = bindGroups.findLastIndex((n) => n > 0) + 1;
      slowest = Math.max(slowest, settled);
      if (settled > SETTLED) {
        failures.push(
          `${name}: bind groups created per step ${bindGroups}: none expected after step ${SETTLED}`,
        );
      }
      if (!dispatches.every((n) => n === dispatches[0])) {
        failures.push(`${name}: dispatches per step ${dispatches} (expected the same each step)`);
      }
      trainer.dispose();
      model.dispose();
      set.images.dispose();
      set.labels.dispose();
      gpu.trimPool();
    }
    console.log(rows.join("\n"));
    if (slowest < SETTLED) {
      console.log(`every model settles after step ${slowest}: lower SETTLED to ${slowest}`);
    }
    assert.deepEqual(failures, []);
  },
);
