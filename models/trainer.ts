/**
 * d2l's `train_ch6`, GPU-resident: the data set lives on the GPU as bytes, each step is recorded
 * into one submit (batch preparation, forward, softmax cross-entropy, backward, SGD) and nothing
 * is read back until the epoch ends. Browser-safe: no file system here.
 *
 * @module
 */

import type { Tensor } from "../gpu/mod.ts";
import {
  type AugmentParams,
  prepareBatch,
  type PrepareBatchParams,
} from "../kernels/data/index.ts";
import {
  createLossScale,
  lossScaleCheck,
  type LossScaleOptions,
  lossScaleUpdate,
  readLossScale,
} from "../kernels/loss_scale.ts";
import { createFiniteWatch, FINITE, finiteCheck, readFiniteWatch } from "../kernels/finite.ts";
import { sgdUpdate } from "../kernels/sgd.ts";
import { adamUpdate } from "../kernels/adam.ts";
import { checkSchedule, type LrSchedule, scheduleLr } from "./schedule.ts";
import { accuracyCount, softmaxCrossEntropy } from "../kernels/softmax_ce/index.ts";
import type { Ctx } from "../layers/mod.ts";
import { DivergenceError, NonFiniteError } from "./errors.ts";
import { type GpuImageSet, permutation } from "./image_set.ts";
import type { Model, Precision } from "./model.ts";
import {
  _fit,
  type FitOptions,
  type FitResult,
  type RunningMetrics,
  type TrainEpochOptions,
} from "./fit.ts";

// Moved out of this module (errors.ts, image_set.ts); re-exported so that its importers
// (models/mod.ts, web/, the tests) keep importing them from here.
export { DivergenceError, NonFiniteError } from "./errors.ts";
export { type GpuImageSet, type ImageSet, permutation, uploadImageSet } from "./image_set.ts";

/** Hyper-parameters of {@linkcode Trainer}. */
export interface TrainerOptions {
  /** Learning rate. */
  readonly lr: number;
  /** Batch size. */
  readonly batchSize: number;
  /** Square input size the images are resized to (bilinear, align_corners=False). */
  readonly resize: number;
  /** SGD momentum; default 0 (plain SGD as d2l). */
  readonly momentum?: number;
  /** Weight decay (SGD and Adam: L2 penalty; AdamW: decoupled); default 0. */
  readonly weightDecay?: number;
  /** The optimizer, as `torch.optim.SGD` / `Adam` / `AdamW`; default `sgd`. */
  readonly optimizer?: "sgd" | "adam" | "adamw";
  /** SGD Nesterov momentum (needs momentum > 0); default false. */
  readonly nesterov?: boolean;
  /**
   * The learning-rate schedule over optimizer steps (`models/schedule.ts`), evaluated on the host
   * per step and passed with the update's dispatch; default constant `lr`.
   */
  readonly schedule?: LrSchedule;
  /** Label smoothing of the cross-entropy loss, in [0, 1]; default 0. */
  readonly labelSmoothing?: number;
  /**
   * Augmentation of the training batches: `true` is random crop (padding 4 at 28², scaled) and
   * horizontal flip; or any {@linkcode AugmentParams} (flip, crops, rotation, translation, zoom).
   */
  readonly augment?: boolean | AugmentParams;
  /** Overrides every dropout probability. */
  readonly dropout?: number;
  /** Seed of shuffling, augmentation and dropout; default 0. */
  readonly seed?: number;
  /** Per-channel normalization after ÷255 (none by default, as d2l). */
  readonly mean?: readonly number[];
  /** Per-channel standard deviation, with `mean`. */
  readonly std?: readonly number[];
  /**
   * `f16`: mixed precision as `torch.autocast` + `GradScaler`: the model runs in f16
   * (`Model.setPrecision`: f16 activations, gradients and weight copies; f32 master weights,
   * biases, BatchNorm and parameter gradients) and the loss is scaled dynamically (steps whose
   * gradients overflow are skipped on the GPU and the scale halves). Default: the model's own
   * precision (f32 unless set).
   */
  readonly precision?: Precision;
  /**
   * The dynamic loss scaler's settings in f16 (GradScaler's defaults); `initScale` also resumes
   * a run at the scale it had reached (`EpochResult.lossScale`).
   */
  readonly lossScale?: LossScaleOptions;
}

/** What one epoch measured. */
export interface EpochResult {
  /** Mean training loss over the epoch's examples. */
  readonly loss: number;
  /** Training accuracy over the epoch's examples (training-mode forward passes). */
  readonly trainAcc: number;
  /** Training examples processed. */
  readonly examples: number;
  /** Seconds of training (until the GPU finished the epoch). */
  readonly seconds: number;
  /** In f16: the loss scale at the epoch's end. */
  readonly lossScale?: number;
  /** In f16: steps skipped so far because their gradients overflowed (Inf/NaN). */
  readonly skippedSteps?: number;
}

/**
 * Steps between the asynchronous reads of the divergence watch during an epoch (the epoch's end
 * always reads it): a diverged run stops within this many steps, with no readback awaited.
 */
export const DIVERGENCE_PEEK_STEPS = 200;

/**
 * Trains a model with SGD on GPU-resident data, as d2l's `train_ch6`.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { createModel, Trainer, uploadImageSet } from "@modern-cnn/webgpu/models";
 * const gpu = await getGpu();
 * const model = createModel(gpu, { name: "lenet" });
 * const data = uploadImageSet(gpu, { images: new Uint8Array(8 * 784), labels: new Uint8Array(8), count: 8, channels: 1, height: 28, width: 28 });
 * const trainer = new Trainer(model, { lr: 0.9, batchSize: 4, resize: 28 });
 * const r = await trainer.trainEpoch(data, { epoch: 0 });
 * console.log(r.loss, r.trainAcc);
 * ```
 */
export class Trainer {
  /** The model trained. */
  readonly model: Model;
  /** The options. */
  readonly options: TrainerOptions;
  /** SGD steps taken so far (momentum buffers start at the first). */
  steps = 0;
  /** The dynamic loss scaler's state (f16 only; see kernels/loss_scale.ts). */
  #lossScale: Tensor | null = null;
  /**
   * The divergence watch (kernels/finite.ts): word 0 holds the first step whose loss was Inf or
   * NaN, word 1 the step after whose update a parameter was (checked at the epoch's end).
   */
  #watch: Tensor;

  /**
   * Creates a trainer for `model`.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel, Trainer } from "@modern-cnn/webgpu/models";
   * const trainer = new Trainer(createModel(await getGpu(), { name: "lenet" }), { lr: 0.9, batchSize: 256, resize: 28 });
   * ```
   */
  constructor(model: Model, options: TrainerOptions) {
    if (!(options.lr > 0)) throw new RangeError(`Trainer: lr must be > 0, got ${options.lr}`);
    if (!Number.isInteger(options.batchSize) || options.batchSize < 1) {
      throw new RangeError(
        `Trainer: batch size must be a positive integer, got ${options.batchSize}`,
      );
    }
    const optimizer = options.optimizer ?? "sgd";
    if (!["sgd", "adam", "adamw"].includes(optimizer)) {
      throw new RangeError(`Trainer: optimizer must be sgd, adam or adamw, got ${optimizer}`);
    }
    if (options.schedule) checkSchedule(options.schedule);
    this.model = model;
    this.options = options;
    this.#watch = createFiniteWatch(model.gpu, 2);
    if (options.precision !== undefined && options.precision !== model.precision) {
      model.setPrecision(options.precision);
    }
    this.#ensureLossScale();
  }

  /**
   * Creates the loss scaler when the model runs in f16 and has none yet: in the constructor, and
   * again at an epoch's start for a model switched to f16 later (its one upload is never inside
   * a step).
   */
  #ensureLossScale(): void {
    if (this.model.precision === "f16") {
      this.#lossScale ??= createLossScale(this.model.gpu, this.options.lossScale);
    }
  }

  /**
   * Frees the trainer's own GPU state (the loss scaler's, in f16); the model is the caller's.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel, Trainer } from "@modern-cnn/webgpu/models";
   * const trainer = new Trainer(createModel(await getGpu(), { name: "lenet" }), { lr: 0.9, batchSize: 256, resize: 28 });
   * trainer.dispose();
   * ```
   */
  dispose(): void {
    this.#lossScale?.dispose();
    this.#lossScale = null;
    this.#watch.dispose();
  }

  #batchParams(set: GpuImageSet, batch: number, train: boolean, seed: number): PrepareBatchParams {
    const o = this.options;
    const augment = train ? o.augment : undefined;
    return {
      batch,
      channels: set.channels,
      srcH: set.height,
      srcW: set.width,
      dstH: o.resize,
      dstW: o.resize,
      mean: o.mean,
      std: o.std,
      augment: augment === true
        ? { cropPadding: Math.max(1, Math.round(set.height / 7)), flip: true }
        : augment || undefined,
      seed,
    };
  }

  /**
   * The learning rate of optimizer step `step` (from 0): `lr` under the schedule.
   *
   * @returns The learning rate.
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel, Trainer } from "@modern-cnn/webgpu/models";
   * const schedule = { schedule: { kind: "step", stepSize: 10 } } as const;
   * const trainer = new Trainer(createModel(await getGpu(), { name: "lenet" }), { lr: 0.1, batchSize: 256, resize: 28, schedule });
   * console.log(trainer.lrAt(10)); // 0.010000000000000002
   * ```
   */
  lrAt(step: number): number {
    const o = this.options;
    return o.schedule ? scheduleLr(o.schedule, o.lr, step) : o.lr;
  }

  /**
   * Records one training step on the examples `order[start, start+batch)` (already on the GPU as
   * `indices`); accumulates the loss sum and correct count into `metrics`. No readback.
   */
  #step(
    set: GpuImageSet,
    io: { indices: Tensor; lossSum: Tensor; correct: Tensor },
    seed: number,
  ): void {
    const gpu = this.model.gpu;
    const batch = io.indices.size;
    const o = this.options;
    const momentum = o.momentum ?? 0;
    const arena = this.model.arena;
    const adam = o.optimizer === "adam" || o.optimizer === "adamw";
    // The optimizer state lives as long as the model: create it outside the step's scope.
    const momentumBuf = !adam && momentum > 0 ? arena.ensureMomentum() : undefined;
    const moments = adam ? arena.ensureAdamMoments() : undefined;
    const lr = this.lrAt(this.steps);
    const lossScale = this.model.precision === "f16" ? this.#lossScale! : undefined;
    gpu.scope(() => {
      const x = gpu.empty(this.model.inputShape(batch, o.resize), { dtype: this.model.precision });
      const labels = gpu.empty([batch], { dtype: "i32" });
      // The clear first: it ends the open compute pass, so the step's dispatches stay in one.
      this.model.zeroGrad();
      prepareBatch(
        { x, labels, images: set.images, srcLabels: set.labels, indices: io.indices },
        this.#batchParams(set, batch, true, seed),
      );
      const ctx: Ctx = { gpu, training: true, seed, dropout: o.dropout };
      const f = this.model.forward(x, ctx);
      const dlogits = gpu.empty(f.y.shape, { dtype: f.y.dtype });
      // In f16 dlogits carries the loss scale (so small gradients survive f16); the parameter
      // gradients are unscaled by sgdUpdate.
      softmaxCrossEntropy(
        { dlogits, lossSum: io.lossSum, correct: io.correct, logits: f.y, labels, lossScale },
        { n: batch, c: f.y.shape[1], labelSmoothing: o.labelSmoothing },
      );
      f.y.dispose();
      // The epoch's loss sum turns non-finite at the first bad step and stays so: the watch
      // keeps that step (one single-invocation dispatch; no readback).
      finiteCheck({ watch: this.#watch, x: io.lossSum }, { mark: this.steps, slot: 0 });
      this.model.backward(dlogits, { cache: f.cache, ctx });
      // Every gradient is checked before any parameter moves: one Inf/NaN skips the whole step.
      // One dispatch each over the arenas (the zero padding between parameters stays zero).
      if (lossScale) lossScaleCheck({ lossScale, grad: arena.grads });
      const update = { param: arena.values, grad: arena.grads, lossScale };
      const half = arena.halves ?? undefined;
      if (moments) {
        adamUpdate({ ...update, ...moments, half }, {
          lr,
          step: this.steps + 1,
          // Unset: torch.optim's defaults (Adam 0, AdamW 0.01).
          weightDecay: o.weightDecay,
          decoupled: o.optimizer === "adamw",
        });
      } else {
        sgdUpdate({ ...update, momentumBuf, half }, {
          lr,
          momentum,
          weightDecay: o.weightDecay ?? 0,
          nesterov: o.nesterov,
          firstStep: this.steps === 0,
        });
      }
      if (lossScale) lossScaleUpdate({ lossScale });
    });
    this.steps++;
    gpu.flush();
  }

  /**
   * Trains one epoch over `set` (or its first `limit` examples), shuffled from the seed and the
   * epoch number unless `shuffle` is false. Reads back at the end (the divergence watch, the loss
   * and the accuracy count), and peeks at the watch without waiting every 200 steps.
   *
   * @throws {DivergenceError} when the loss or a parameter became Inf or NaN in the epoch (no
   * metric of the epoch is returned; the parameters are not finite).
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel, Trainer, uploadImageSet } from "@modern-cnn/webgpu/models";
   * const gpu = await getGpu();
   * const trainer = new Trainer(createModel(gpu, { name: "lenet" }), { lr: 0.9, batchSize: 2, resize: 28 });
   * const set = uploadImageSet(gpu, { images: new Uint8Array(4 * 784), labels: new Uint8Array(4), count: 4, channels: 1, height: 28, width: 28 });
   * await trainer.trainEpoch(set, { epoch: 0, shuffle: false });
   * ```
   */
  async trainEpoch(set: GpuImageSet, options: TrainEpochOptions): Promise<EpochResult> {
    const gpu = this.model.gpu;
    const n = Math.min(options.limit ?? set.count, set.count);
    const seed = ((this.options.seed ?? 0) * 1000003 + options.epoch) >>> 0;
    const order = options.shuffle === false
      ? Uint32Array.from({ length: n }, (_, i) => i)
      : permutation(n, seed);
    this.#ensureLossScale();
    const all = gpu.tensor(order, { shape: [n] }); // the epoch's only upload
    const lossSum = gpu.zeros([1]);
    const correct = gpu.zeros([1], { dtype: "u32" });
    const bs = this.options.batchSize;
    const t0 = performance.now();
    const steps = Math.ceil(n / bs);
    const firstStep = this.steps;
    // The watch is peeked at every DIVERGENCE_PEEK_STEPS steps, and the running loss and
    // accuracy about every progressSeconds when onStep wants them, without awaiting: one read of
    // the four words together, at most one in flight, so that a diverged run stops early and the
    // progress is shown without stalling the step pipeline.
    const every = (options.progressSeconds ?? 1) * 1000;
    let seen: number | null = null;
    let peeking = false, peekDue = false, lastRead = t0;
    let running: RunningMetrics | null = null;
    let probe: Tensor<"u32"> | null = null;
    for (let s = 0; s < steps; s++) {
      if (seen !== null) break;
      const batch = Math.min(bs, n - s * bs);
      const indices = gpu.empty([batch], { dtype: "u32" });
      gpu.copy(all, indices, { srcOffset: s * bs * 4, bytes: batch * 4 });
      this.#step(set, { indices, lossSum, correct }, (seed * 7919 + s) >>> 0);
      indices.dispose();
      options.onStep?.(s + 1, steps, running);
      if (s % DIVERGENCE_PEEK_STEPS === DIVERGENCE_PEEK_STEPS - 1) peekDue = true;
      const now = performance.now();
      const progressDue = options.onStep !== undefined && now - lastRead >= every;
      if ((peekDue || progressDue) && !peeking && s < steps - 1) {
        peeking = true;
        peekDue = false;
        lastRead = now;
        probe ??= gpu.empty([4], { dtype: "u32" });
        gpu.copy(lossSum, probe, { bytes: 4 });
        gpu.copy(correct, probe, { dstOffset: 4, bytes: 4 });
        gpu.copy(this.#watch, probe, { dstOffset: 8, bytes: 8 });
        const examples = Math.min((s + 1) * bs, n);
        // A failed peek (a lost device, say) is not this step's error: the epoch's end reads
        // the watch again and reports whatever happened.
        probe.toArray().then((words) => {
          const loss = new Float32Array(words.buffer, words.byteOffset, 1)[0];
          running = { loss: loss / examples, trainAcc: words[1] / examples, examples };
          if (words[2] !== FINITE) seen = words[2];
        }, () => {}).finally(() => {
          peeking = false;
        });
      }
      // Let the event loop breathe (progress output) without waiting on the GPU.
      if (s % 8 === 7) await new Promise((r) => setTimeout(r, 0));
    }
    probe?.dispose();
    // Parameters after the epoch's last update (a bad parameter makes the next loss bad, so
    // checking them here covers the steps in between).
    finiteCheck({ watch: this.#watch, x: this.model.arena.values }, {
      mark: this.steps - 1,
      slot: 1,
    });
    const [badLoss, badParam] = await readFiniteWatch(this.#watch);
    if (badLoss !== null || badParam !== null) {
      for (const t of [all, lossSum, correct]) t.dispose();
      // A fresh watch, so that a model restored from a checkpoint can train on.
      this.#watch.dispose();
      this.#watch = createFiniteWatch(gpu, 2);
      const step = badLoss ?? badParam!;
      throw new DivergenceError({
        epoch: options.epoch,
        step,
        epochStep: step - firstStep,
        what: badLoss !== null ? "loss" : "parameters",
        lr: this.lrAt(step),
      });
    }
    const [loss] = await lossSum.toArray();
    const [right] = await correct.toArray();
    const seconds = (performance.now() - t0) / 1000;
    for (const t of [all, lossSum, correct]) t.dispose();
    const result = { loss: loss / n, trainAcc: right / n, examples: n, seconds };
    if (!this.#lossScale || this.model.precision !== "f16") return result;
    const scaler = await readLossScale(this.#lossScale);
    return { ...result, lossScale: scaler.scale, skippedSteps: scaler.skippedSteps };
  }

  /**
   * Trains `epochs` epochs (after `startEpoch`), evaluating on `test` after each, as Keras's
   * `fit`: `onEpochEnd` gets each epoch's metrics (loss, accuracies, lr, examples/s, seconds),
   * `onStep` the running loss and accuracy (read asynchronously, at most one read in flight),
   * and `earlyStopping` stops after `patience` epochs without improvement (models/fit.ts).
   *
   * @throws {DivergenceError} as {@linkcode Trainer.trainEpoch}.
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel, Trainer, uploadImageSet } from "@modern-cnn/webgpu/models";
   * const gpu = await getGpu();
   * const trainer = new Trainer(createModel(gpu, { name: "lenet" }), { lr: 0.9, batchSize: 2, resize: 28 });
   * const set = uploadImageSet(gpu, { images: new Uint8Array(4 * 784), labels: new Uint8Array(4), count: 4, channels: 1, height: 28, width: 28 });
   * const { history } = await trainer.fit(set, {
   *   epochs: 3,
   *   test: set,
   *   onEpochEnd: (m) => console.log(m.epoch, m.loss, m.testAcc, m.lr, m.examplesPerSec),
   *   earlyStopping: { monitor: "loss", patience: 1 },
   * });
   * ```
   */
  fit(train: GpuImageSet, options: FitOptions): Promise<FitResult> {
    return _fit(this, train, options);
  }

  /**
   * Accuracy in evaluation mode over `set` (or its first `limit` examples); two readbacks (the
   * count and the outputs' Inf/NaN watch).
   *
   * @throws {NonFiniteError} when the model's outputs hold Inf or NaN.
   * @throws {RangeError} when the set (or `limit`) has no examples.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel, Trainer, uploadImageSet } from "@modern-cnn/webgpu/models";
   * const gpu = await getGpu();
   * const trainer = new Trainer(createModel(gpu, { name: "lenet" }), { lr: 0.9, batchSize: 2, resize: 28 });
   * const set = uploadImageSet(gpu, { images: new Uint8Array(4 * 784), labels: new Uint8Array(4), count: 4, channels: 1, height: 28, width: 28 });
   * console.log(await trainer.evaluate(set));
   * ```
   */
  async evaluate(set: GpuImageSet, options: { limit?: number } = {}): Promise<number> {
    const gpu = this.model.gpu;
    const n = Math.min(options.limit ?? set.count, set.count);
    if (n === 0) throw new RangeError("evaluate: the data set has no examples");
    const correct = gpu.zeros([1], { dtype: "u32" });
    const watch = createFiniteWatch(gpu);
    const all = gpu.tensor(Uint32Array.from({ length: n }, (_, i) => i), { shape: [n] });
    const bs = this.options.batchSize;
    for (let s = 0; s * bs < n; s++) {
      const batch = Math.min(bs, n - s * bs);
      gpu.scope(() => {
        const indices = gpu.empty([batch], { dtype: "u32" });
        gpu.copy(all, indices, { srcOffset: s * bs * 4, bytes: batch * 4 });
        const x = gpu.empty(this.model.inputShape(batch, this.options.resize), {
          dtype: this.model.precision,
        });
        const labels = gpu.empty([batch], { dtype: "i32" });
        prepareBatch(
          { x, labels, images: set.images, srcLabels: set.labels, indices },
          this.#batchParams(set, batch, false, 0),
        );
        const f = this.model.forward(x, { gpu, training: false, seed: 0 });
        accuracyCount({ correct, logits: f.y, labels }, { n: batch, c: f.y.shape[1] });
        finiteCheck({ watch, x: f.y }, { mark: s });
        f.y.dispose();
      });
      gpu.flush();
    }
    const [right] = await correct.toArray();
    const [bad] = await readFiniteWatch(watch);
    for (const t of [correct, watch, all]) t.dispose();
    if (bad !== null) {
      throw new NonFiniteError(
        `evaluate: the model's outputs are Inf or NaN (batch ${bad + 1}): its weights are not ` +
          "finite or too large; restore them from a good checkpoint",
      );
    }
    return right / n;
  }
}
