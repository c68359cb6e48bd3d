// Shared by bench/train_bench.ts and bench/train_table.ts: whole training steps as the Trainer
// records them (batch preparation, forward, softmax cross-entropy, backward, SGD: one submit per
// step, one readback per epoch), on a synthetic Fashion-MNIST-shaped data set uploaded once.
import type { Gpu } from "../gpu/mod.ts";
import { GpuRuntime } from "../gpu/runtime.ts";

// The batch cap and the runs are shared with `deno task tune` (whose tuned problems must match
// these steps).
export { cappedBatch as benchBatch, forwardFlops, setupRun, type TrainRun } from "../cli/common.ts";
import type { TrainRun } from "../cli/common.ts";

/** What a timed epoch of `steps` steps measured. */
export interface StepTiming {
  readonly examplesPerSec: number;
  readonly msPerStep: number;
  /**
   * Host milliseconds per step: the median time between two steps' `onStep` calls (recording,
   * `encoder.finish` and the `queue.submit` call; the trainer never waits on the GPU between
   * steps). Where the device is slower than the host (a CPU adapter), the submits wait for
   * earlier steps and this approaches `msPerStep`; `--host-only` measures the host alone.
   */
  readonly hostMsPerStep: number;
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
  const host = stepClock();
  const r = await run.trainer.trainEpoch(run.set, { epoch, onStep: host.onStep });
  return {
    examplesPerSec: r.examples / r.seconds,
    msPerStep: (r.seconds * 1000) / run.steps,
    hostMsPerStep: host.median(),
    peakBytes: gpu.pool.stats.peakLiveBytes,
    loss: r.loss,
  };
}

/** What recording steps without executing them measured (per step). */
export interface HostTiming {
  /** Median host milliseconds per step (see {@linkcode StepTiming.hostMsPerStep}). */
  readonly hostMsPerStep: number;
  /** Dispatches recorded per step. */
  readonly dispatches: number;
  /**
   * Dispatches planned per step, the median over the steps (`GpuRuntime.dispatch` calls:
   * bindings resolved, pipeline and bind group looked up); the rest were re-encoded from a
   * recorded step (models/trainer.ts).
   */
  readonly planned: number;
  /** Bind groups created per step (zero once they are all cached). */
  readonly bindGroups: number;
}

/**
 * Records `run.steps` real steps (an epoch, or the first `limit` examples of one) with the
 * runtime discarding every command buffer instead of submitting it: nothing executes, so this
 * measures the host's cost alone, at any batch and input size. Only the epoch's end (one tiny
 * Inf/NaN check and its readbacks) runs on the device.
 */
export async function hostSteps(
  gpu: Gpu,
  run: TrainRun,
  options: { epoch: number; limit?: number },
): Promise<HostTiming> {
  if (!(gpu instanceof GpuRuntime)) throw new TypeError("hostSteps: needs the GpuRuntime");
  const host = stepClock();
  const before = { ...gpu.stats };
  let steps = 0;
  const planned: number[] = [];
  let lastPlanned = gpu.hostStats.planned;
  gpu.discardSubmits = true;
  try {
    await run.trainer.trainEpoch(run.set, {
      ...options,
      onStep: (done, total) => {
        host.onStep();
        planned.push(gpu.hostStats.planned - lastPlanned);
        lastPlanned = gpu.hostStats.planned;
        steps = done;
        // The epoch's end reads back: let it (and only it) execute.
        if (done === total) gpu.discardSubmits = false;
      },
    });
  } finally {
    gpu.discardSubmits = false;
  }
  return {
    hostMsPerStep: host.median(),
    // The epoch's end records one more dispatch (the parameters' Inf/NaN check).
    dispatches: (gpu.stats.dispatches - before.dispatches - 1) / steps,
    planned: [...planned].sort((a, b) => a - b)[planned.length >> 1],
    bindGroups: (gpu.stats.bindGroups - before.bindGroups) / steps,
  };
}

/**
 * Times the intervals between `onStep` calls (not the time before the first, which holds the
 * epoch's setup). The median leaves out the trainer's yield to the event loop every 8 steps.
 */
function stepClock(): { onStep: () => void; median: () => number } {
  const gaps: number[] = [];
  let last: number | null = null;
  return {
    onStep: () => {
      const now = performance.now();
      if (last !== null) gaps.push(now - last);
      last = now;
    },
    median: () => {
      if (gaps.length === 0) return NaN;
      const s = [...gaps].sort((a, b) => a - b);
      return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    },
  };
}
