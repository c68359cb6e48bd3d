/**
 * d2l's `train_ch6`, GPU-resident: the data set lives on the GPU as bytes, each step is recorded
 * into one submit (batch preparation, forward, softmax cross-entropy, backward, SGD) and nothing
 * is read back until the epoch ends. Browser-safe: no file system here.
 *
 * Replay (issue #15): on the {@linkcode GpuRuntime}, the first step of a kind (the data set, the
 * batch size and the model's precision; the model, the optimizer and every other option belong to
 * the trainer) is recorded normally and kept as a tape (`gpu/tape.ts`); the next steps of that
 * kind re-encode the tape, which plans nothing in JavaScript but the step's few live entries:
 * the batch (its indices copied from the epoch's order, `prepareBatch` with the step's
 * augmentation seed), dropout (its seed, through `Ctx.perStep`), the loss watch's step mark and
 * the optimizer's update (the scheduled learning rate, Adam's step count). Those read the step's
 * values from {@linkcode Trainer}'s per-step state on the host and record a normal dispatch each,
 * so every value a replayed step computes is the one a step recorded from scratch computes, bit
 * for bit (tests/replay_test.ts); the loss scale, the loss sums and the watch already live on the
 * GPU. BatchNorm's step counters (host-side) advance by what the recorded step added. The tape is
 * dropped when its kind changes (a shorter last batch, another data set or precision), when a
 * buffer it binds is released (a model or data set disposed), before `evaluate` (so that its
 * scratch memory serves the evaluation) and on `dispose`. `replay: false` records every step.
 *
 * Over 500 lines: the step, its capture and the epoch loop share the trainer's private state (the
 * kept step, the per-step values, the watch and the loss scaler); `fit` lives in fit.ts.
 *
 * @module
 */

import type { Tensor } from "../gpu/mod.ts";
import { GpuRuntime } from "../gpu/runtime.ts";
import type { Tape } from "../gpu/tape.ts";
import {
  type AugmentParams,
  prepareBatch,
  type PrepareBatchParams,
} from "../kernels/data/index.ts";
import {
  createLossScale,
  decodeLossScale,
  LOSS_SCALE_WORDS,
  lossScaleCheck,
  type LossScaleOptions,
  lossScaleUpdate,
} from "../kernels/loss_scale.ts";
import { createFiniteWatch, FINITE, finiteCheck } from "../kernels/finite.ts";
import { sgdUpdate } from "../kernels/sgd.ts";
import { adamUpdate } from "../kernels/adam.ts";
import { checkSchedule, type LrSchedule, scheduleLr } from "./schedule.ts";
import { accuracyCount, softmaxCrossEntropy } from "../kernels/softmax_ce/index.ts";
import type { Counter, Ctx } from "../layers/mod.ts";
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
   * a run at the scale it had reached (`EpochResult.lossScale`), and `skippedSteps` at the steps
   * it had skipped (`EpochResult.skippedSteps`: Adam's step count leaves them out).
   */
  readonly lossScale?: LossScaleOptions;
  /**
   * Record a step once and replay it (see the module doc); default true. False records every step
   * from scratch (a reference for debugging; the results are the same bit for bit).
   */
  readonly replay?: boolean;
}

/** The values that change from one step to the next, read by a replayed step's live entries. */
interface StepState {
  /** The step's seed (augmentation, dropout). */
  seed: number;
  /** Optimizer steps before this one. */
  step: number;
  /** The epoch's example order and where this step's batch starts in it. */
  order: Tensor | null;
  start: number;
}

/** A step kept for replay. */
interface Recorded {
  readonly key: string;
  readonly tape: Tape;
  /** The tensors its live entries bind that the step would have freed (kept alive with it). */
  readonly held: readonly Tensor[];
  /** The host-side counters the step advanced, and by how much (BatchNorm's batches tracked). */
  readonly counters: readonly (readonly [Counter, number])[];
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

/** Ids of data sets (the key of a kept step). */
let nextSetId = 0;

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
  /**
   * Steps the f16 loss scaler skipped so far (their gradients overflowed), as of the last epoch's
   * end (`EpochResult.skippedSteps`; to resume, pass it as `lossScale.skippedSteps`). Adam's step
   * count is the updates applied, `steps - skippedSteps` (PyTorch's `state["step"]` under
   * `GradScaler`): in f16 the scaler subtracts its own count on the GPU, in f32 this one is.
   */
  skippedSteps: number;
  /**
   * Whether steps are recorded once and replayed (`TrainerOptions.replay`, default true; only on
   * the {@linkcode GpuRuntime}). Turning it off drops the kept step at the next one.
   */
  replay: boolean;
  /** The step kept for replay, and what its live entries read. */
  #recorded: Recorded | null = null;
  #now: StepState = { seed: 0, step: 0, order: null, start: 0 };
  /** The epoch's loss sum and correct count, kept across epochs (a kept step binds them). */
  #lossSum: Tensor | null = null;
  #correct: Tensor<"u32"> | null = null;
  /** Ids of the data sets trained on (a kept step is for one). */
  #setIds = new WeakMap<GpuImageSet, number>();
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
    this.replay = options.replay ?? true;
    this.skippedSteps = options.lossScale?.skippedSteps ?? 0;
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
      this.#lossScale ??= createLossScale(this.model.gpu, {
        ...this.options.lossScale,
        skippedSteps: this.skippedSteps,
      });
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
    this.#drop();
    this.#lossScale?.dispose();
    this.#lossScale = null;
    this.#watch.dispose();
    this.#lossSum?.dispose();
    this.#correct?.dispose();
    this.#lossSum = this.#correct = null;
  }

  /** Drops the step kept for replay (its scratch buffers return to the pool). */
  #drop(): void {
    const rec = this.#recorded;
    if (!rec) return;
    this.#recorded = null;
    (this.model.gpu as GpuRuntime).dropTape(rec.tape);
    for (const t of rec.held) t.dispose();
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
   * One training step on the examples `order[start, start+batch)`: replayed when a step of its
   * kind is kept, else recorded (and kept, when replay is on). Accumulates the loss sum and the
   * correct count on the GPU; no readback.
   */
  #step(set: GpuImageSet, batch: number, now: Omit<StepState, "step">): void {
    const gpu = this.model.gpu;
    Object.assign(this.#now, now, { step: this.steps });
    this.#state(); // created outside any tape
    const runtime = this.replay && gpu instanceof GpuRuntime ? gpu : null;
    let setId = this.#setIds.get(set);
    if (setId === undefined) this.#setIds.set(set, setId = nextSetId++);
    const key = `${setId}|${batch}|${this.model.precision}`;
    let rec = this.#recorded;
    if (rec && (runtime === null || rec.key !== key || !rec.tape.valid)) {
      this.#drop();
      rec = null;
    }
    if (rec) {
      runtime!.replay(rec.tape);
      for (const [counter, delta] of rec.counters) counter.value += delta;
    } else if (runtime) {
      this.#capture(runtime, set, batch, key);
    } else {
      this.#record(set, batch, (tensors, record) => record(tensors, this.#now.seed));
    }
    this.steps++;
    gpu.flush();
  }

  /** Records a step while keeping it as a tape (see the module doc). */
  #capture(gpu: GpuRuntime, set: GpuImageSet, batch: number, key: string): void {
    const counters = this.model.state.flatMap((e) => e.kind === "counter" ? [e.counter] : []);
    const before = counters.map((c) => c.value);
    const held: Tensor[] = [];
    gpu.beginTape();
    let tape: Tape | null = null;
    let done = false;
    let seedRead = false;
    try {
      this.#record(
        set,
        batch,
        (tensors, record) => {
          const kept = tensors.map((t) => t.retain()) as unknown as typeof tensors;
          held.push(...kept);
          gpu.live(() => record(kept, this.#now.seed));
        },
        held,
        () => seedRead = true,
      );
      done = true;
    } finally {
      tape = gpu.endTape({ held });
      if ((!done || seedRead) && tape) {
        gpu.dropTape(tape);
        tape = null;
      }
    }
    if (tape === null) {
      for (const t of held) t.dispose();
      return;
    }
    this.#recorded = {
      key,
      tape,
      held,
      counters: counters.map((c, i) => [c, c.value - before[i]] as const)
        .filter(([, d]) => d !== 0),
    };
  }

  /**
   * Records one training step. `perStep` records what changes from step to step (the data, the
   * seeds, the step marks, the learning rate: read from `#now`) on tensors it keeps alive; the
   * tensors so kept are moved out of the step's scope into `held`.
   */
  #record(
    set: GpuImageSet,
    batch: number,
    perStep: NonNullable<Ctx["perStep"]>,
    held: Tensor[] = [],
    onSeedRead?: () => void,
  ): void {
    const gpu = this.model.gpu;
    const o = this.options;
    const momentum = o.momentum ?? 0;
    const arena = this.model.arena;
    const { momentumBuf, moments, lossSum, correct } = this.#state();
    const lossScale = this.model.precision === "f16" ? this.#lossScale! : undefined;
    const watch = () => this.#watch;
    gpu.scope(() => {
      const indices = gpu.empty([batch], { dtype: "u32" });
      const x = gpu.empty(this.model.inputShape(batch, o.resize), { dtype: this.model.precision });
      const labels = gpu.empty([batch], { dtype: "i32" });
      // The clear first: it ends the open compute pass, so the step's dispatches stay in one.
      this.model.zeroGrad();
      perStep([indices, x, labels], ([indices, x, labels], seed) => {
        const { order, start } = this.#now;
        gpu.copy(order!, indices, { srcOffset: start * 4, bytes: batch * 4 });
        prepareBatch(
          { x, labels, images: set.images, srcLabels: set.labels, indices },
          this.#batchParams(set, batch, true, seed),
        );
      });
      const now = this.#now;
      const ctx: Ctx = {
        gpu,
        training: true,
        // A layer that reads the step's seed outside `perStep` (a user's own random layer)
        // records a dispatch that differs from step to step: such a step is not kept as a tape.
        get seed() {
          onSeedRead?.();
          return now.seed;
        },
        dropout: o.dropout,
        perStep,
      };
      const f = this.model.forward(x, ctx);
      const dlogits = gpu.empty(f.y.shape, { dtype: f.y.dtype });
      // In f16 dlogits carries the loss scale (so small gradients survive f16); the parameter
      // gradients are unscaled by sgdUpdate.
      softmaxCrossEntropy(
        { dlogits, lossSum, correct, logits: f.y, labels, lossScale },
        { n: batch, c: f.y.shape[1], labelSmoothing: o.labelSmoothing },
      );
      f.y.dispose();
      // The epoch's loss sum turns non-finite at the first bad step and stays so: the watch
      // keeps that step (one single-invocation dispatch; no readback).
      perStep([], () => {
        finiteCheck({ watch: watch(), x: lossSum }, { mark: this.#now.step, slot: 0 });
      });
      this.model.backward(dlogits, { cache: f.cache, ctx });
      // Every gradient is checked before any parameter moves: one Inf/NaN skips the whole step.
      // One dispatch each over the arenas (the zero padding between parameters stays zero).
      if (lossScale) lossScaleCheck({ lossScale, grad: arena.grads });
      const update = { param: arena.values, grad: arena.grads, lossScale };
      const half = arena.halves ?? undefined;
      perStep([], () => {
        const step = this.#now.step;
        const lr = this.lrAt(step);
        if (moments) {
          // The updates applied before this one + 1: with a loss scaler, the steps it skipped
          // are subtracted on the GPU (kernels/adam.ts); without one, those of earlier f16 epochs.
          adamUpdate({ ...update, ...moments, half }, {
            lr,
            step: Math.max(1, step + 1 - (lossScale ? 0 : this.skippedSteps)),
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
            firstStep: step === 0,
          });
        }
      });
      if (lossScale) lossScaleUpdate({ lossScale });
      // What perStep kept leaves the scope with the step.
      return held;
    });
  }

  /**
   * The state that outlives steps, created on first use (before a step is recorded: a tape would
   * replay its initialization): the optimizer's, and the loss sum and correct count the epochs
   * accumulate into.
   */
  #state(): {
    momentumBuf?: Tensor;
    moments?: { expAvg: Tensor; expAvgSq: Tensor };
    lossSum: Tensor;
    correct: Tensor<"u32">;
  } {
    const o = this.options;
    const arena = this.model.arena;
    const adam = o.optimizer === "adam" || o.optimizer === "adamw";
    // Cleared at each epoch's start.
    this.#lossSum ??= this.model.gpu.empty([1]);
    this.#correct ??= this.model.gpu.empty([1], { dtype: "u32" });
    return {
      momentumBuf: !adam && (o.momentum ?? 0) > 0 ? arena.ensureMomentum() : undefined,
      moments: adam ? arena.ensureAdamMoments() : undefined,
      lossSum: this.#lossSum,
      correct: this.#correct,
    };
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
    const { lossSum, correct } = this.#state();
    gpu.clear(lossSum);
    gpu.clear(correct);
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
      this.#step(set, batch, { seed: (seed * 7919 + s) >>> 0, order: all, start: s * bs });
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
    // One readback for the epoch's end (each wait costs a round trip to the device): the watch's
    // two slots, the loss sum, the correct count and, in f16, the loss scaler's state.
    const scaled = this.#lossScale !== null && this.model.precision === "f16";
    const end = gpu.empty([4 + (scaled ? LOSS_SCALE_WORDS : 0)], { dtype: "u32" });
    gpu.copy(this.#watch, end, { bytes: 8 });
    gpu.copy(lossSum, end, { dstOffset: 8, bytes: 4 });
    gpu.copy(correct, end, { dstOffset: 12, bytes: 4 });
    if (scaled) gpu.copy(this.#lossScale!, end, { dstOffset: 16, bytes: LOSS_SCALE_WORDS * 4 });
    const words = new Uint32Array(await end.toArray().finally(() => end.dispose()));
    const [badLoss, badParam] = [words[0], words[1]].map((w) => (w === FINITE ? null : w));
    this.#now.order = null;
    if (badLoss !== null || badParam !== null) {
      all.dispose();
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
    const loss = new Float32Array(words.buffer, 8, 1)[0], right = words[3];
    const seconds = (performance.now() - t0) / 1000;
    all.dispose();
    const result = { loss: loss / n, trainAcc: right / n, examples: n, seconds };
    if (!scaled) return result;
    const scaler = decodeLossScale(words.subarray(4));
    this.skippedSteps = scaler.skippedSteps;
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
   * Accuracy in evaluation mode over `set` (or its first `limit` examples); one readback (the
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
    // The kept step's scratch buffers serve the evaluation instead (the next step records anew).
    this.#drop();
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
    // One readback: the count and the watch.
    const end = gpu.empty([2], { dtype: "u32" });
    gpu.copy(correct, end, { bytes: 4 });
    gpu.copy(watch, end, { dstOffset: 4, bytes: 4 });
    const [right, seen] = await end.toArray().finally(() => {
      for (const t of [end, correct, watch, all]) t.dispose();
    });
    const bad = seen === FINITE ? null : seen;
    if (bad !== null) {
      throw new NonFiniteError(
        `evaluate: the model's outputs are Inf or NaN (batch ${bad + 1}): its weights are not ` +
          "finite or too large; restore them from a good checkpoint",
      );
    }
    return right / n;
  }
}
