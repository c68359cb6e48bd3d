/**
 * The errors of a model whose numbers stopped being finite: {@linkcode NonFiniteError} (its
 * outputs, say in evaluation) and {@linkcode DivergenceError} (training).
 *
 * @module
 */

/**
 * A model produced Inf or NaN where numbers were expected (its outputs in evaluation, say): the
 * weights are not usable. {@linkcode DivergenceError} is the training case.
 *
 * @example
 * ```ts
 * import { NonFiniteError } from "@modern-cnn/webgpu/models";
 * const err = new NonFiniteError("evaluate: the model's outputs are Inf or NaN");
 * console.log(err.name); // "NonFiniteError"
 * ```
 */
export class NonFiniteError extends Error {
  /**
   * Creates the error with its message.
   *
   * @example
   * ```ts
   * import { NonFiniteError } from "@modern-cnn/webgpu/models";
   * const err = new NonFiniteError("logits are NaN");
   * ```
   */
  constructor(message: string) {
    super(message);
    this.name = "NonFiniteError";
  }
}

/**
 * Training diverged: the loss became Inf or NaN at some step, or a parameter did after an update.
 * Thrown by {@linkcode Trainer.trainEpoch} at the end of the epoch (or earlier: the watch is also
 * read asynchronously every 200 steps), before any metric of the
 * epoch is returned, so nothing downstream (a checkpoint, a plot, a log line) sees the epoch. The
 * model's parameters are then not finite: restore them from a checkpoint to go on.
 *
 * @example
 * ```ts
 * import { DivergenceError } from "@modern-cnn/webgpu/models";
 * const err = new DivergenceError({ epoch: 0, step: 12, epochStep: 12, what: "loss", lr: 10 });
 * console.log(err.message);
 * ```
 */
export class DivergenceError extends NonFiniteError {
  /** The epoch (0-based, as passed to `trainEpoch`). */
  readonly epoch: number;
  /** The trainer's step count at the first bad step (0-based over the whole run). */
  readonly step: number;
  /** The step within the epoch (0-based). */
  readonly epochStep: number;
  /** What went non-finite first: the loss, or (with a finite loss) a parameter. */
  readonly what: "loss" | "parameters";
  /**
   * Creates the error.
   *
   * @example
   * ```ts
   * import { DivergenceError } from "@modern-cnn/webgpu/models";
   * new DivergenceError({ epoch: 2, step: 500, epochStep: 30, what: "parameters", lr: 0.9 });
   * ```
   */
  constructor(at: {
    epoch: number;
    step: number;
    epochStep: number;
    what: "loss" | "parameters";
    lr: number;
  }) {
    super(
      `training diverged in epoch ${at.epoch + 1} at step ${at.epochStep + 1} of the epoch ` +
        `(step ${at.step + 1} of the run): the ${
          at.what === "loss" ? "loss" : "parameters after the update"
        } became Inf or NaN; lower the learning rate (it is ${at.lr})`,
    );
    this.name = "DivergenceError";
    this.epoch = at.epoch;
    this.step = at.step;
    this.epochStep = at.epochStep;
    this.what = at.what;
  }
}
