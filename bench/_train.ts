// Shared by bench/train_bench.ts and bench/train_table.ts: whole training steps as the Trainer
// records them (batch preparation, forward, softmax cross-entropy, backward, SGD: one submit per
// step, one readback per epoch), on a synthetic Fashion-MNIST-shaped data set uploaded once.
import type { Gpu } from "../gpu/mod.ts";
import { makeSynthetic } from "../data/mod.ts";
import {
  createModel,
  DEFAULTS,
  type GpuImageSet,
  type ModelName,
  Trainer,
  uploadImageSet,
} from "../models/mod.ts";

// The batch cap is shared with `deno task tune` (whose tuned problems must match these steps).
export { cappedBatch as benchBatch, forwardFlops } from "../cli/common.ts";

/** A model, its trainer and a GPU-resident synthetic data set of `steps` batches. */
export interface TrainRun {
  readonly trainer: Trainer;
  readonly set: GpuImageSet;
  readonly batch: number;
  readonly steps: number;
}

/** Builds the model (seed 0), its trainer at the recipe's learning rate, and the data. */
export function setupRun(
  gpu: Gpu,
  name: ModelName,
  options: { batch: number; resize: number; steps: number; fuse?: boolean },
): TrainRun {
  const { batch, resize, steps } = options;
  const model = createModel(gpu, { name });
  const trainer = new Trainer(model, {
    lr: DEFAULTS[name].lr,
    batchSize: batch,
    resize,
    fuse: options.fuse,
  });
  // Fashion-MNIST-shaped: 1 channel, 28x28, 10 classes; resized on the GPU like the real set.
  const data = makeSynthetic({ count: batch * steps, channels: 1, height: 28, seed: 1 });
  return { trainer, set: uploadImageSet(gpu, data), batch, steps };
}

/** What a timed epoch of `steps` steps measured. */
export interface StepTiming {
  readonly examplesPerSec: number;
  readonly msPerStep: number;
  /** Peak bytes of live GPU buffers during the timed steps (pool's `peakLiveBytes`). */
  readonly peakBytes: number;
  readonly loss: number;
}

/** One step to compile every pipeline (not timed). */
export async function warmUp(run: TrainRun): Promise<void> {
  await run.trainer.trainEpoch(run.set, { epoch: 0, limit: run.batch, shuffle: false });
}

/** Times `run.steps` steps (one epoch over the data set, one readback at its end). */
export async function timeSteps(gpu: Gpu, run: TrainRun, epoch = 1): Promise<StepTiming> {
  gpu.pool.resetPeak();
  const r = await run.trainer.trainEpoch(run.set, { epoch });
  return {
    examplesPerSec: r.examples / r.seconds,
    msPerStep: (r.seconds * 1000) / run.steps,
    peakBytes: gpu.pool.stats.peakLiveBytes,
    loss: r.loss,
  };
}
