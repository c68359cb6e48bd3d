/**
 * The epoch loop of {@linkcode Trainer.fit}: train, evaluate, report each epoch's metrics to
 * `onEpochEnd`, and stop early as Keras's `EarlyStopping` when the monitored metric stops
 * improving. Browser-safe: no file system here (the CLI's keep-best checkpoint is written from
 * `onEpochEnd`). Each epoch's metrics carry the fit's {@linkcode FitState} (the best test accuracy
 * so far, early stopping's counters), which a checkpoint stores so that a resumed fit goes on
 * where it stopped, as PyTorch Lightning restores its checkpoint and early-stopping callbacks.
 *
 * @module
 */

import type { EpochResult, GpuImageSet, Trainer } from "./trainer.ts";

/**
 * The running metrics of an epoch in progress, read asynchronously (see
 * {@linkcode TrainEpochOptions.onStep}): they cover the epoch's first `examples` examples.
 */
export interface RunningMetrics {
  /** Mean training loss over the examples read so far. */
  readonly loss: number;
  /** Training accuracy over the examples read so far. */
  readonly trainAcc: number;
  /** Examples the values cover (the steps submitted when the read was issued). */
  readonly examples: number;
}

/** Options of {@linkcode Trainer.trainEpoch}. */
export interface TrainEpochOptions {
  /** The epoch's number (from 0): with the seed, it chooses the shuffle and augmentation. */
  readonly epoch: number;
  /** Train on the first `limit` examples only. */
  readonly limit?: number;
  /** Shuffle the examples (default true). */
  readonly shuffle?: boolean;
  /**
   * Called after each step is recorded, with the step count done, the epoch's step count and the
   * latest running metrics (null until the first read arrives). The running metrics are read
   * without ever waiting: at most one read in flight, issued about every `progressSeconds`
   * (together with the divergence watch's peek), so no step gains a readback.
   */
  readonly onStep?: (done: number, total: number, running: RunningMetrics | null) => void;
  /** Seconds between the running metrics' reads when `onStep` is given; default 1. */
  readonly progressSeconds?: number;
}

/** What {@linkcode EarlyStopping} watches: the test accuracy (higher is better) or the training loss (lower). */
export type Monitor = "testAcc" | "loss";

/** Settings of {@linkcode EarlyStopping}, as Keras's `EarlyStopping`. */
export interface EarlyStoppingOptions {
  /** The metric watched; default `testAcc` (which needs a test set). */
  readonly monitor?: Monitor;
  /** Epochs without improvement after which training stops (an integer ≥ 0). */
  readonly patience: number;
  /** The least change that counts as an improvement (≥ 0); default 0. */
  readonly minDelta?: number;
}

/**
 * Keras's `EarlyStopping` as a small state machine: {@linkcode EarlyStopping.update} takes each
 * epoch's value of the monitored metric and says whether it improved on the best so far by more
 * than `minDelta` and whether `patience` epochs have passed without such an improvement.
 *
 * @example
 * ```ts
 * import { EarlyStopping } from "@modern-cnn/webgpu/models";
 * const stop = new EarlyStopping({ patience: 1, minDelta: 0.01 });
 * console.log(stop.update(0.80).stop, stop.update(0.805).stop); // false true
 * ```
 */
export class EarlyStopping {
  /** The metric watched. */
  readonly monitor: Monitor;
  /** Epochs without improvement after which training stops. */
  readonly patience: number;
  /** The least change that counts as an improvement. */
  readonly minDelta: number;
  /** The best value seen (±Infinity before the first). */
  best: number;
  /** Epochs since the last improvement. */
  wait = 0;

  /**
   * Creates the state machine.
   *
   * @throws {RangeError} when `patience` is not an integer ≥ 0 or `minDelta` not a number ≥ 0.
   * @example
   * ```ts
   * import { EarlyStopping } from "@modern-cnn/webgpu/models";
   * console.log(new EarlyStopping({ monitor: "loss", patience: 3 }).best); // Infinity
   * ```
   */
  constructor(options: EarlyStoppingOptions) {
    const { monitor = "testAcc", patience, minDelta = 0 } = options;
    if (monitor !== "testAcc" && monitor !== "loss") {
      throw new RangeError(`EarlyStopping: monitor must be testAcc or loss, got ${monitor}`);
    }
    if (!Number.isInteger(patience) || patience < 0) {
      throw new RangeError(`EarlyStopping: patience must be an integer >= 0, got ${patience}`);
    }
    if (!(minDelta >= 0) || !Number.isFinite(minDelta)) {
      throw new RangeError(`EarlyStopping: minDelta must be a number >= 0, got ${minDelta}`);
    }
    this.monitor = monitor;
    this.patience = patience;
    this.minDelta = minDelta;
    this.best = monitor === "loss" ? Infinity : -Infinity;
  }

  /**
   * Takes one epoch's value of the monitored metric.
   *
   * @returns Whether it improved on the best (and became it) and whether to stop.
   * @example
   * ```ts
   * import { EarlyStopping } from "@modern-cnn/webgpu/models";
   * const stop = new EarlyStopping({ monitor: "loss", patience: 2 });
   * console.log(stop.update(1.0)); // { improved: true, stop: false }
   * ```
   */
  update(value: number): { improved: boolean; stop: boolean } {
    const improved = this.monitor === "loss"
      ? value + this.minDelta < this.best
      : value - this.minDelta > this.best;
    if (improved) {
      this.best = value;
      this.wait = 0;
    } else this.wait++;
    return { improved, stop: !improved && this.wait >= this.patience };
  }
}

/**
 * Where a fit stands after an epoch (the part a resumed fit must continue from, beyond the weights
 * and the optimizer): the best test accuracy so far, and early stopping's counters.
 */
export interface FitState {
  /** The best test accuracy so far and the epoch (from 1) that reached it; null before any test. */
  readonly best: { readonly testAcc: number; readonly epoch: number } | null;
  /**
   * Early stopping's state, when it runs: the metric watched, its best value and the epochs since
   * it last improved.
   */
  readonly stopping: {
    readonly monitor: Monitor;
    readonly best: number;
    readonly wait: number;
  } | null;
}

/** What one epoch of {@linkcode Trainer.fit} measured, as `onEpochEnd` receives it. */
export interface EpochMetrics extends EpochResult {
  /** The epoch finished (from 1). */
  readonly epoch: number;
  /** Test accuracy (evaluation mode), null without a test set. */
  readonly testAcc: number | null;
  /** The learning rate of the epoch's last step. */
  readonly lr: number;
  /** Training throughput: examples per second. */
  readonly examplesPerSec: number;
  /**
   * Whether the test accuracy is the best so far: of this `fit` (whose first tested epoch always
   * is), and of the epochs before it when it continues a {@linkcode FitOptions.state}.
   */
  readonly best: boolean;
  /** The fit's state after this epoch: what a checkpoint of it stores to resume later. */
  readonly state: FitState;
}

/** Options of {@linkcode Trainer.fit}. */
export interface FitOptions {
  /** Train until this many epochs are done. */
  readonly epochs: number;
  /** Epochs already done (a resumed run); default 0. */
  readonly startEpoch?: number;
  /**
   * The state a resumed run's last epoch reached (its `EpochMetrics.state`, kept in its
   * checkpoint): the best test accuracy to beat, and early stopping's counters (taken when it
   * watches the same metric; patience and minDelta are this fit's). Default: a fresh fit.
   */
  readonly state?: FitState;
  /** Evaluated after each epoch. */
  readonly test?: GpuImageSet;
  /** Shuffle the training examples (default true). */
  readonly shuffle?: boolean;
  /**
   * Called after each step with the epoch (from 0), the step count done, the epoch's step count
   * and the running metrics (read asynchronously, as `Trainer.trainEpoch`'s `onStep`).
   */
  readonly onStep?: (
    step: { epoch: number; done: number; total: number },
    running: RunningMetrics | null,
  ) => void;
  /** Seconds between the running metrics' reads; default 1. */
  readonly progressSeconds?: number;
  /** Called (and awaited) after each epoch's evaluation: log, save, plot. */
  readonly onEpochEnd?: (metrics: EpochMetrics) => void | Promise<void>;
  /** Stop when the monitored metric stops improving. */
  readonly earlyStopping?: EarlyStoppingOptions;
}

/** What {@linkcode Trainer.fit} returns. */
export interface FitResult {
  /** Each epoch's metrics. */
  readonly history: EpochMetrics[];
  /**
   * The epoch (from 1) with the best test accuracy (possibly one before a resumed fit's start),
   * null when no epoch was tested, in this fit or before its {@linkcode FitOptions.state}.
   */
  readonly bestEpoch: number | null;
  /** Whether early stopping ended the run before `epochs`. */
  readonly stoppedEarly: boolean;
}

/** The loop behind {@linkcode Trainer.fit}. */
export async function _fit(
  trainer: Trainer,
  train: GpuImageSet,
  options: FitOptions,
): Promise<FitResult> {
  const { epochs, test, startEpoch = 0 } = options;
  if (!Number.isInteger(epochs) || epochs < 0) {
    throw new RangeError(`fit: epochs must be an integer >= 0, got ${epochs}`);
  }
  if (!Number.isInteger(startEpoch) || startEpoch < 0) {
    throw new RangeError(`fit: startEpoch must be an integer >= 0, got ${startEpoch}`);
  }
  const stopper = options.earlyStopping ? new EarlyStopping(options.earlyStopping) : null;
  if (stopper?.monitor === "testAcc" && !test) {
    throw new RangeError("fit: early stopping on testAcc needs a test set (or monitor loss)");
  }
  const prior = options.state;
  if (prior !== undefined) _checkFitState("fit", prior, startEpoch);
  if (stopper && prior?.stopping?.monitor === stopper.monitor) {
    stopper.best = prior.stopping.best;
    stopper.wait = prior.stopping.wait;
  }
  const history: EpochMetrics[] = [];
  let bestAcc = prior?.best?.testAcc ?? -Infinity;
  let bestEpoch: number | null = prior?.best?.epoch ?? null;
  for (let epoch = startEpoch; epoch < epochs; epoch++) {
    const onStep = options.onStep;
    const r = await trainer.trainEpoch(train, {
      epoch,
      shuffle: options.shuffle,
      progressSeconds: options.progressSeconds,
      onStep: onStep && ((done, total, running) => onStep({ epoch, done, total }, running)),
    });
    const testAcc = test ? await trainer.evaluate(test) : null;
    const best = testAcc !== null && (bestEpoch === null || testAcc > bestAcc);
    if (best) [bestAcc, bestEpoch] = [testAcc, epoch + 1];
    const stop = stopper?.update(stopper.monitor === "loss" ? r.loss : testAcc!).stop ?? false;
    const metrics: EpochMetrics = {
      ...r,
      epoch: epoch + 1,
      testAcc,
      lr: trainer.lrAt(Math.max(trainer.steps - 1, 0)),
      examplesPerSec: r.examples / r.seconds,
      best,
      state: {
        best: bestEpoch === null ? null : { testAcc: bestAcc, epoch: bestEpoch },
        stopping: stopper && {
          monitor: stopper.monitor,
          best: stopper.best,
          wait: stopper.wait,
        },
      },
    };
    history.push(metrics);
    await options.onEpochEnd?.(metrics);
    if (stop) return { history, bestEpoch, stoppedEarly: epoch + 1 < epochs };
  }
  return { history, bestEpoch, stoppedEarly: false };
}

/**
 * Checks a {@linkcode FitState} (one read from a checkpoint, say) for a fit starting after
 * `startEpoch` epochs: a best test accuracy in [0, 1] at an epoch in [1, startEpoch], and early
 * stopping's monitor, finite best value and wait count >= 0.
 *
 * @throws {TypeError} naming `op` for a state of the wrong shape or types.
 * @throws {RangeError} naming `op` and the field for a value out of range.
 * @example
 * ```ts
 * import { _checkFitState } from "./fit.ts";
 * _checkFitState("fit", { best: { testAcc: 0.8, epoch: 3 }, stopping: null }, 3);
 * ```
 */
export function _checkFitState(op: string, s: FitState, startEpoch: number): void {
  const isObject = (v: unknown) => typeof v === "object" && v !== null;
  const b = s?.best, t = s?.stopping;
  if (
    !isObject(s) || b === undefined || t === undefined ||
    (b !== null &&
      !(isObject(b) && typeof b.testAcc === "number" && typeof b.epoch === "number")) ||
    (t !== null &&
      !(isObject(t) && typeof t.monitor === "string" && typeof t.best === "number" &&
        typeof t.wait === "number"))
  ) {
    throw new TypeError(
      `${op}: state must be { best: { testAcc, epoch } | null, stopping: { monitor, best, wait } ` +
        `| null } (numbers, a monitor name), got ${JSON.stringify(s)}`,
    );
  }
  if (
    b !== null &&
    !(b.testAcc >= 0 && b.testAcc <= 1 && Number.isInteger(b.epoch) && b.epoch >= 1 &&
      b.epoch <= startEpoch)
  ) {
    throw new RangeError(
      `${op}: state.best must hold a test accuracy in [0, 1] and an epoch in [1, ${startEpoch}] ` +
        `(the epochs done), got ${JSON.stringify(b)}`,
    );
  }
  if (
    t !== null &&
    !((t.monitor === "testAcc" || t.monitor === "loss") && Number.isFinite(t.best) &&
      Number.isInteger(t.wait) && t.wait >= 0)
  ) {
    throw new RangeError(
      `${op}: state.stopping must hold a monitor (testAcc or loss), a finite best value and a ` +
        `wait count >= 0, got ${JSON.stringify(t)}`,
    );
  }
}
