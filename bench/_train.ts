// Shared by bench/train_bench.ts and bench/train_table.ts: whole training steps as the Trainer
// records them (batch preparation, forward, softmax cross-entropy, backward, SGD: one submit per
// step, one readback per epoch), on a synthetic Fashion-MNIST-shaped data set uploaded once.
import type { Gpu } from "../gpu/mod.ts";

// The batch cap and the runs are shared with `deno task tune` (whose tuned problems must match
// these steps).
export { cappedBatch as benchBatch, forwardFlops, setupRun, type TrainRun } from "../cli/common.ts";
import type { TrainRun } from "../cli/common.ts";

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
