// Recording a training step once and replaying it (issue #15, section 1; models/trainer.ts,
// gpu/tape.ts): training with replay is bit-identical to recording every step (parameters,
// losses, BatchNorm's running statistics and counters), with dropout, augmentation, momentum,
// Adam, a learning-rate schedule, a shorter last batch and f16's loss scaling; a replayed step
// plans only its live entries (no bind group, no pipeline); a tape is dropped when a buffer it
// binds is released, and its scratch buffers are nobody else's meanwhile.
import assert from "node:assert/strict";
import { GpuRuntime } from "../gpu/runtime.ts";
import type { Gpu } from "../gpu/mod.ts";
import { makeSynthetic } from "../data/mod.ts";
import {
  activation,
  conv2d,
  dropout,
  flatten,
  type Layer,
  leaf,
  linear,
  sequential,
} from "../layers/mod.ts";
import { dropoutBackward, dropoutForward, dropoutMaskWords } from "../kernels/dropout.ts";
import type { Tensor } from "../gpu/mod.ts";
import {
  createModel,
  type Model,
  type ModelName,
  Trainer,
  type TrainerOptions,
  uploadImageSet,
} from "../models/mod.ts";
import { F16_TEST, GPU_TEST, testGpu } from "./harness.ts";

async function runtime(): Promise<GpuRuntime> {
  const gpu: Gpu = await testGpu();
  assert.ok(gpu instanceof GpuRuntime);
  return gpu;
}

/**
 * A small model with two dropout layers (8x8 inputs, 3 classes). Each dropout layer mixes a
 * process-wide id into its seed: runs compared with each other materialize one layer tree.
 */
function dropoutModel(): (gpu: Gpu) => Model {
  const net = sequential([
    conv2d({ inChannels: 1, outChannels: 4, kernel: 3, padding: 1 }),
    activation("relu"),
    dropout(0.3),
    flatten(),
    linear({ inFeatures: 256, outFeatures: 16 }),
    activation("relu"),
    dropout(0.5),
    linear({ inFeatures: 16, outFeatures: 3 }),
  ]);
  return (gpu) => createModel(gpu, { name: "dropout-net", net, inputShape: [1, 8, 8], seed: 5 });
}

/**
 * A user's own random layer, written without `Ctx.perStep`: dropout with the step's seed read
 * from `ctx.seed`. A step that reads it is not kept as a tape (each step records anew).
 */
function ownDropout(): Layer<Tensor | null> {
  return leaf<Tensor | null>({
    kind: "OwnDropout",
    outputShape: (input) => input,
    forward(x, ctx) {
      if (!ctx.training) return { y: x.retain(), cache: null };
      const y = ctx.gpu.empty(x.shape, { dtype: x.dtype });
      const mask = ctx.gpu.empty([dropoutMaskWords(x.size)], { dtype: "u32" });
      dropoutForward({ y, mask, x }, { p: 0.5, seed: ctx.seed });
      return { y, cache: mask };
    },
    backward(dy, { cache, ctx, needDx }) {
      let dx: Tensor | null = null;
      if (needDx) {
        dx = ctx.gpu.empty(dy.shape, { dtype: dy.dtype });
        dropoutBackward({ dx, dy, mask: cache! }, { p: 0.5 });
      }
      cache?.dispose();
      return dx;
    },
  });
}

interface Case {
  readonly label: string;
  readonly model: (gpu: Gpu) => Model;
  readonly size: number;
  readonly classes: number;
  readonly options: Omit<TrainerOptions, "replay">;
  /** Examples (a multiple of the batch, or not: a shorter last batch). */
  readonly count: number;
}

const CASES: Case[] = [
  {
    label: "lenet-bn, SGD with momentum, 4 steps",
    model: (gpu) => createModel(gpu, { name: "lenet-bn" as ModelName, seed: 3 }),
    size: 28,
    classes: 10,
    count: 8,
    options: { lr: 0.05, momentum: 0.9, batchSize: 2, resize: 28, seed: 1 },
  },
  {
    label: "dropout, augmentation, Adam, a step schedule, a shorter last batch",
    model: dropoutModel(),
    size: 8,
    classes: 3,
    count: 9,
    options: {
      lr: 0.01,
      optimizer: "adamw",
      batchSize: 2,
      resize: 8,
      seed: 7,
      augment: true,
      schedule: { schedule: { kind: "step", stepSize: 2, gamma: 0.5 } },
    },
  },
  {
    label: "a user's layer that reads ctx.seed (not kept: recorded every step)",
    model: (gpu) =>
      createModel(gpu, {
        name: "own-random",
        net: sequential([flatten(), ownDropout(), linear({ inFeatures: 64, outFeatures: 3 })]),
        inputShape: [1, 8, 8],
        seed: 5,
      }),
    size: 8,
    classes: 3,
    count: 8,
    options: { lr: 0.1, batchSize: 2, resize: 8, seed: 3 },
  },
];

/** Trains two epochs; the per-epoch losses, the parameters' bits and the model's state. */
async function train(gpu: GpuRuntime, c: Case, replay: boolean) {
  const model = c.model(gpu);
  const trainer = new Trainer(model, { ...c.options, replay });
  const set = uploadImageSet(
    gpu,
    makeSynthetic({ count: c.count, height: c.size, classes: c.classes, seed: 2 }),
  );
  const host0 = { ...gpu.hostStats };
  const losses: number[] = [];
  for (let epoch = 0; epoch < 2; epoch++) {
    losses.push((await trainer.trainEpoch(set, { epoch })).loss);
  }
  const values = await model.arena.values.toArray() as Float32Array;
  const params = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const state = await model.stateDict();
  const host = {
    replays: gpu.hostStats.replays - host0.replays,
    captures: gpu.hostStats.captures - host0.captures,
  };
  trainer.dispose();
  model.dispose();
  set.images.dispose();
  set.labels.dispose();
  return { losses, params, state, host };
}

for (const c of CASES) {
  Deno.test(`replay: ${c.label}: bit-identical to recording every step`, GPU_TEST, async () => {
    const gpu = await runtime();
    const plain = await train(gpu, c, false);
    const replayed = await train(gpu, c, true);
    assert.equal(plain.host.replays, 0);
    const steps = 2 * Math.ceil(c.count / c.options.batchSize);
    // A full-batch kind recorded once and replayed; with a shorter last batch, each epoch's
    // first full step and its last step record anew (one kept step at a time).
    if (c.label.includes("ctx.seed")) {
      assert.equal(replayed.host.replays, 0, "a step that reads ctx.seed is never replayed");
    } else {
      assert.ok(replayed.host.replays > 0, `${JSON.stringify(replayed.host)}`);
      assert.equal(replayed.host.replays + replayed.host.captures, steps);
    }
    assert.deepEqual(replayed.losses, plain.losses, "the losses are bit-identical");
    assert.deepEqual(replayed.params, plain.params, "the parameters are bit-identical");
    assert.deepEqual(replayed.state, plain.state, "running statistics and counters too");
  });
}

Deno.test(
  "replay: f16 with loss scaling is bit-identical to recording every step",
  F16_TEST,
  async () => {
    const gpu = await runtime();
    const c: Case = { ...CASES[0], options: { ...CASES[0].options, precision: "f16" } };
    const plain = await train(gpu, c, false);
    const replayed = await train(gpu, c, true);
    assert.ok(replayed.host.replays > 0);
    assert.deepEqual(replayed.losses, plain.losses);
    assert.deepEqual(replayed.params, plain.params);
  },
);

Deno.test(
  "replay: a replayed step creates no bind group or pipeline and plans only its live entries",
  GPU_TEST,
  async () => {
    const gpu = await runtime();
    const model = dropoutModel()(gpu);
    const trainer = new Trainer(model, { lr: 0.1, momentum: 0.9, batchSize: 2, resize: 8 });
    const set = uploadImageSet(gpu, makeSynthetic({ count: 10, height: 8, classes: 3, seed: 2 }));
    type Counts = { planned: number; replayed: number; bindGroups: number; pipelines: number };
    const perStep: Counts[] = [];
    const seen = () => ({ ...gpu.hostStats, ...gpu.stats });
    let last = seen();
    await trainer.trainEpoch(set, {
      epoch: 0,
      onStep: () => {
        const now = seen();
        perStep.push({
          planned: now.planned - last.planned,
          replayed: now.replayed - last.replayed,
          bindGroups: now.bindGroups - last.bindGroups,
          pipelines: now.pipelines - last.pipelines,
        });
        last = now;
      },
    });
    const [first, ...rest] = perStep;
    assert.equal(first.replayed, 0);
    assert.ok(first.planned > 10, `${first.planned}`);
    for (const s of rest) {
      assert.equal(s.bindGroups, 0, JSON.stringify(perStep));
      assert.equal(s.pipelines, 0, JSON.stringify(perStep));
      // Planned anew: the batch, two dropouts, the loss watch, the update.
      assert.equal(s.planned, 5, JSON.stringify(perStep));
      assert.equal(s.planned + s.replayed, first.planned, "the same dispatches as recorded");
    }
    // Without replay, every dispatch is planned every step.
    trainer.replay = false;
    const planned = gpu.hostStats.planned;
    await trainer.trainEpoch(set, { epoch: 1, limit: 2 });
    assert.equal(gpu.hostStats.planned - planned, first.planned + 1); // + the epoch-end check
    trainer.dispose();
    model.dispose();
    set.images.dispose();
    set.labels.dispose();
  },
);

Deno.test(
  "replay: a tape keeps its scratch from the pool and is dropped with a buffer it binds",
  GPU_TEST,
  async () => {
    const gpu = await runtime();
    const DOUBLE = {
      name: "replay_test_double",
      code: `struct Params { k: f32 }
        @group(0) @binding(0) var<uniform> p: Params;
        @group(0) @binding(1) var<storage, read> x: array<f32>;
        @group(0) @binding(2) var<storage, read_write> y: array<f32>;
        @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
          if (g.x < arrayLength(&y)) { y[g.x] = x[g.x] * p.k; }
        }`,
    };
    const x = gpu.tensor(new Float32Array([1, 2, 3, 4]), { shape: [4] });
    const out = gpu.zeros([4]);
    const scaled = gpu.zeros([4]);
    let k = 2;
    gpu.beginTape();
    gpu.scope(() => {
      const tmp = gpu.empty([4]);
      gpu.dispatch(DOUBLE, { params: new Float32Array([3]), bindings: [x, tmp], workgroups: 1 });
      gpu.dispatch(DOUBLE, { params: new Float32Array([2]), bindings: [tmp, out], workgroups: 1 });
      // Live: planned again at every replay, reading `k` then.
      gpu.live(() => {
        gpu.dispatch(DOUBLE, {
          params: new Float32Array([k]),
          bindings: [x, scaled],
          workgroups: 1,
        });
      });
    });
    const tape = gpu.endTape()!;
    assert.ok(tape !== null);
    assert.equal(tape.dispatches, 2);
    assert.equal(tape.lives, 1);
    assert.equal(tape.pinned.length, 1, "the scratch tensor's buffer is the tape's");
    assert.deepEqual(await out.toArray(), new Float32Array([6, 12, 18, 24]));
    assert.deepEqual(await scaled.toArray(), new Float32Array([2, 4, 6, 8]));
    // The scratch buffer is not handed out again while the tape lives.
    const other = gpu.empty([4]);
    assert.ok(!tape.pinned.includes(other.buffer));
    other.dispose();
    gpu.clear(out);
    k = 10;
    gpu.replay(tape);
    assert.deepEqual(await out.toArray(), new Float32Array([6, 12, 18, 24]));
    assert.deepEqual(await scaled.toArray(), new Float32Array([10, 20, 30, 40]));
    // Releasing a buffer the tape binds drops it, and its scratch returns to the pool.
    const free = gpu.pool.stats.freeBytes;
    x.dispose();
    assert.equal(tape.valid, false);
    assert.ok(gpu.pool.stats.freeBytes > free);
    assert.throws(() => gpu.replay(tape), /dropped/);
    scaled.dispose();
    out.dispose();
  },
);

Deno.test(
  "replay: a step that creates lasting state or submits is not kept",
  GPU_TEST,
  async () => {
    const gpu = await runtime();
    let lasting: ReturnType<typeof gpu.zeros> | null = null;
    gpu.beginTape();
    lasting = gpu.zeros([4]); // made on first use: its clear must not be replayed
    assert.equal(gpu.endTape(), null);
    gpu.beginTape();
    const t = gpu.zeros([4]);
    gpu.flush();
    gpu.clear(t);
    assert.equal(gpu.endTape({ held: [t] }), null, "a submit in the middle");
    lasting.dispose();
    t.dispose();
  },
);

/**
 * f16 AdamW on a small linear model over `count` examples of 8x8 (batch 2, in order), one epoch,
 * the loss scaler starting at `initScale` with a backoff of 2^-20 (so that a scale of 2^68 or
 * 2^48 or 2^28 overflows the f16 logits' gradient and 2^8 does not). Returns the parameters'
 * bits and the steps the scaler skipped.
 */
async function adamF16(
  gpu: GpuRuntime,
  o: { skip: number; steps: number; initScale: number; replay: boolean; resumed?: number },
) {
  const model = createModel(gpu, {
    name: "linear-net",
    net: sequential([flatten(), linear({ inFeatures: 64, outFeatures: 3 })]),
    inputShape: [1, 8, 8],
    seed: 5,
  });
  const batch = 2;
  const trainer = new Trainer(model, {
    lr: 0.01,
    optimizer: "adamw",
    batchSize: batch,
    resize: 8,
    precision: "f16",
    lossScale: { initScale: o.initScale, backoffFactor: 2 ** -20, skippedSteps: o.resumed },
    replay: o.replay,
  });
  // A run resumed after `resumed` skipped steps (as cli/train.ts resumes a checkpoint).
  trainer.steps = o.resumed ?? 0;
  // The same examples as a run with `skip` more steps after the steps it skips.
  const all = makeSynthetic({ count: (3 + o.steps) * batch, height: 8, classes: 3, seed: 2 });
  const from = (3 - o.skip) * batch, count = (o.skip + o.steps) * batch;
  const set = uploadImageSet(gpu, {
    ...all,
    count,
    images: all.images.slice(from * 64, (from + count) * 64),
    labels: all.labels.slice(from, from + count),
  });
  const r = await trainer.trainEpoch(set, { epoch: 0, shuffle: false });
  const values = await model.arena.values.toArray() as Float32Array;
  const params = new Uint32Array(values.buffer, values.byteOffset, values.length);
  trainer.dispose();
  model.dispose();
  set.images.dispose();
  set.labels.dispose();
  return {
    params,
    values,
    skipped: r.skippedSteps,
    scale: r.lossScale,
    kept: trainer.skippedSteps,
  };
}

Deno.test(
  "replay: f16 Adam with skipped steps: bit-identical replayed, and k skips shift the run by k",
  F16_TEST,
  async () => {
    const gpu = await runtime();
    // 3 skipped steps (2^68 -> 2^48 -> 2^28 -> 2^8), then 4 applied ones.
    const skipped = { skip: 3, steps: 4, initScale: 2 ** 68 };
    const plain = await adamF16(gpu, { ...skipped, replay: false });
    const replayed = await adamF16(gpu, { ...skipped, replay: true });
    assert.equal(plain.skipped, 3);
    assert.equal(plain.kept, 3, "Trainer.skippedSteps");
    assert.equal(plain.scale, 2 ** 8);
    assert.deepEqual(replayed.params, plain.params, "replayed skips are bit-identical");
    // The same 4 updates without the skips (on the same batches, at the same scale): Adam's step
    // count follows the updates applied (GradScaler skips optimizer.step), not the trainer's steps.
    const unskipped = await adamF16(gpu, { skip: 0, steps: 4, initScale: 2 ** 8, replay: true });
    assert.equal(unskipped.skipped, 0);
    const same = (a: typeof plain, b: typeof plain, what: string) => {
      let differ = 0, max = 0;
      for (let i = 0; i < a.params.length; i++) {
        if (a.params[i] !== b.params[i]) differ++;
        max = Math.max(max, Math.abs(a.values[i] - b.values[i]));
      }
      assert.equal(differ, 0, `${what}: ${differ} of ${a.params.length} differ, by up to ${max}`);
    };
    same(plain, unskipped, "the run with 3 skips against the one without");
    // Resumed after the 3 skips (trainer steps 3, the scaler's count 3): the same updates.
    const resumed = await adamF16(gpu, {
      skip: 0,
      steps: 4,
      initScale: 2 ** 8,
      replay: true,
      resumed: 3,
    });
    assert.equal(resumed.skipped, 3);
    same(plain, resumed, "the run resumed after the skips");
  },
);

Deno.test(
  "replay: f32 Adam after f16 steps that were skipped counts the updates applied",
  GPU_TEST,
  async () => {
    const gpu = await runtime();
    // A run resumed in f32 after 5 trainer steps of which the f16 scaler skipped 5 (as `--resume`
    // of such a checkpoint with `--precision f32` does): no update was applied yet, so its 4
    // steps are Adam's steps 1-4, as a fresh run's on the same batches and weights.
    const run = async (steps: number, skipped: number) => {
      const model = createModel(gpu, {
        name: "linear-net",
        net: sequential([flatten(), linear({ inFeatures: 64, outFeatures: 3 })]),
        inputShape: [1, 8, 8],
        seed: 5,
      });
      const trainer = new Trainer(model, {
        lr: 0.01,
        optimizer: "adam",
        batchSize: 2,
        resize: 8,
        lossScale: { skippedSteps: skipped },
      });
      trainer.steps = steps;
      const data = makeSynthetic({ count: 8, height: 8, classes: 3, seed: 2 });
      const set = uploadImageSet(gpu, data);
      await trainer.trainEpoch(set, { epoch: 0, shuffle: false });
      const values = await model.arena.values.toArray() as Float32Array;
      trainer.dispose();
      model.dispose();
      set.images.dispose();
      set.labels.dispose();
      return values;
    };
    const fresh = await run(0, 0);
    const resumed = await run(5, 5);
    assert.deepEqual(resumed, fresh, "Adam's bias corrections count the applied updates");
    const unskipped = await run(5, 0); // Adam's steps 6-9: other corrections
    assert.notDeepEqual(unskipped, fresh);
  },
);
