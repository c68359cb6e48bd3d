/**
 * Dynamic loss scaling for mixed-precision training (as PyTorch's `torch.amp.GradScaler`), all on
 * the GPU: the scale is read by the kernels that need it, the overflow check writes a flag, and
 * the optimizer skips the step when the flag is set, so a training step needs no readback.
 *
 * The scaler's state is one small u32 tensor of {@linkcode LOSS_SCALE_WORDS} words, created by
 * {@linkcode createLossScale}:
 *
 * | word | meaning                                                           |
 * | ---- | ----------------------------------------------------------------- |
 * | 0    | the current scale, as the bits of an f32                          |
 * | 1    | growth tracker: successful steps since the last change of scale   |
 * | 2    | found flag: nonzero when a checked gradient held an Inf or a NaN  |
 * | 3    | skipped steps (steps whose found flag was set at the update)      |
 * | 4    | steps (calls of {@linkcode lossScaleUpdate})                      |
 * | 5    | growth interval                                                   |
 * | 6    | growth factor, as f32 bits                                        |
 * | 7    | backoff factor, as f32 bits                                       |
 *
 * A step: the forward pass; `softmaxCrossEntropy({ ..., lossScale })` (the gradient of the loss
 * multiplied by the scale); the backward pass; {@linkcode lossScaleCheck} on every parameter
 * gradient; `sgdUpdate({ ..., lossScale })` (or `adamUpdate`) for every parameter (it divides the
 * gradients by the scale, and leaves the parameters and the optimizer's state untouched when the
 * found flag is set; Adam's step count is the caller's less word 3, which this step's update
 * has not counted yet, as `GradScaler` does not call a skipped step's `optimizer.step`); then
 * {@linkcode lossScaleUpdate}, which backs the scale off (found) or grows it (after
 * `growthInterval` successful steps) and clears the flag. {@linkcode readLossScale} reads the
 * state back for logs (one readback: call it at the end of an epoch, not per step).
 *
 * WGSL has no `isnan` / `isinf` (and a compiler may assume that floats are finite), so the check
 * tests the exponent bits of the stored gradient words directly: all ones means Inf or NaN.
 *
 * @module
 */

import { formatShape, type Tensor } from "../gpu/mod.ts";
import type { Gpu } from "../gpu/mod.ts";
import { defineKernel } from "./_kernel.ts";
import { _recordNonFiniteCheck } from "./finite.ts";

/** Words (u32) of a loss scaler's state tensor (see the module documentation for the layout). */
export const LOSS_SCALE_WORDS = 8;

/** Word indices of the state, shared with the WGSL below. */
const SCALE = 0,
  TRACKER = 1,
  FOUND = 2,
  SKIPPED = 3,
  STEPS = 4,
  INTERVAL = 5,
  GROWTH = 6,
  BACKOFF = 7;

/** Options of {@linkcode createLossScale}, named and defaulted as `torch.amp.GradScaler`'s. */
export interface LossScaleOptions {
  /** The initial scale (a finite f32 > 0); default 65536 (2^16). */
  readonly initScale?: number;
  /** Successful steps (no Inf/NaN) after which the scale grows; an integer >= 1, default 2000. */
  readonly growthInterval?: number;
  /** Factor the scale grows by (> 1, finite); default 2. */
  readonly growthFactor?: number;
  /** Factor the scale shrinks by when a step overflows (in (0, 1)); default 0.5. */
  readonly backoffFactor?: number;
  /**
   * Skipped steps so far (word 3), to resume a run: Adam's step count under the scaler is the
   * caller's step number less this count (`adamUpdate`); an integer in [0, 2^32), default 0.
   */
  readonly skippedSteps?: number;
}

/** The state of a loss scaler, as read by {@linkcode readLossScale}. */
export interface LossScaleInfo {
  /** The current scale. */
  readonly scale: number;
  /** Successful steps since the scale last changed. */
  readonly growthTracker: number;
  /** Whether a gradient checked since the last update held an Inf or a NaN. */
  readonly foundInf: boolean;
  /** Steps skipped because of an Inf or a NaN. */
  readonly skippedSteps: number;
  /** Calls of {@linkcode lossScaleUpdate} so far. */
  readonly steps: number;
  /** The growth interval. */
  readonly growthInterval: number;
  /** The growth factor (as stored: an f32). */
  readonly growthFactor: number;
  /** The backoff factor (as stored: an f32). */
  readonly backoffFactor: number;
}

/**
 * Creates a dynamic loss scaler's state tensor (u32 `[8]`, layout in the module documentation),
 * with the scale at `initScale`, no steps and the found flag clear. This is the only upload of
 * the scaler; its kernels never read back.
 *
 * @returns The state tensor (the `lossScale` operand of the kernels that use it).
 * @throws {RangeError} for an option out of range (as `torch.amp.GradScaler`: growth factor
 * > 1, backoff factor in (0, 1)).
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { createLossScale, readLossScale } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const lossScale = createLossScale(gpu, { initScale: 1024, growthInterval: 100 });
 * console.log((await readLossScale(lossScale)).scale); // 1024
 * ```
 */
export function createLossScale(gpu: Gpu, options: LossScaleOptions = {}): Tensor<"u32"> {
  const op = "createLossScale";
  const initScale = options.initScale ?? 65536;
  const growthInterval = options.growthInterval ?? 2000;
  const growthFactor = options.growthFactor ?? 2;
  const backoffFactor = options.backoffFactor ?? 0.5;
  const f = Math.fround(initScale);
  if (typeof initScale !== "number" || !(f > 0) || !Number.isFinite(f)) {
    throw new RangeError(`${op}: initScale must be a finite f32 > 0, got ${initScale}`);
  }
  if (!Number.isInteger(growthInterval) || growthInterval < 1 || growthInterval > 0xffffffff) {
    throw new RangeError(
      `${op}: growthInterval must be an integer in [1, 2^32), got ${growthInterval}`,
    );
  }
  const g = Math.fround(growthFactor);
  if (typeof growthFactor !== "number" || !(g > 1) || !Number.isFinite(g)) {
    throw new RangeError(`${op}: growthFactor must be a finite number > 1, got ${growthFactor}`);
  }
  const b = Math.fround(backoffFactor);
  if (typeof backoffFactor !== "number" || !(b > 0 && b < 1)) {
    throw new RangeError(`${op}: backoffFactor must be in (0, 1), got ${backoffFactor}`);
  }
  const skipped = options.skippedSteps ?? 0;
  if (!Number.isInteger(skipped) || skipped < 0 || skipped > 0xffffffff) {
    throw new RangeError(`${op}: skippedSteps must be an integer in [0, 2^32), got ${skipped}`);
  }
  const words = new Uint32Array(LOSS_SCALE_WORDS);
  words[SKIPPED] = skipped;
  const bits = new Float32Array(words.buffer);
  bits[SCALE] = f;
  words[INTERVAL] = growthInterval;
  bits[GROWTH] = g;
  bits[BACKOFF] = b;
  return gpu.tensor(words, { shape: [LOSS_SCALE_WORDS] });
}

/**
 * Checks that `t` is a loss scaler's state tensor (u32 `[8]`, as made by
 * {@linkcode createLossScale}), for the kernels that take a `lossScale` operand.
 *
 * @returns Nothing.
 * @throws {TypeError} naming `op` and the tensor when it is not one.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { checkLossScale, createLossScale } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * checkLossScale("sgdUpdate", createLossScale(gpu)); // ok
 * ```
 */
export function checkLossScale(op: string, t: Tensor): void {
  if (t.dtype !== "u32" || t.size !== LOSS_SCALE_WORDS) {
    throw new TypeError(
      `${op}: lossScale has shape ${formatShape(t.shape)} (${t.dtype}), expected a loss ` +
        `scaler's state, u32 [${LOSS_SCALE_WORDS}] (createLossScale)`,
    );
  }
}

/**
 * Records a check of `grad` (f32 or f16, any shape) for Inf and NaN: when it holds any, the
 * scaler's found flag is set (it is cleared only by {@linkcode lossScaleUpdate}). Run it on every
 * parameter gradient after the backward pass and before `sgdUpdate`. The gradient is read, never
 * written.
 *
 * The check is on the scaled gradient: a step is skipped when `scale * gradient` overflowed
 * (the unscaled gradient is finite whenever the scaled one is and the scale is >= 1).
 *
 * @returns Nothing: the dispatch is recorded.
 * @throws {TypeError} when `grad` is not f32 or f16, `lossScale` is not a scaler's state, or the
 * two share a buffer.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { createLossScale, lossScaleCheck, readLossScale } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const lossScale = createLossScale(gpu);
 * const grad = gpu.tensor(new Float16Array([1, Infinity, 2]), { shape: [3] });
 * lossScaleCheck({ lossScale, grad });
 * console.log((await readLossScale(lossScale)).foundInf); // true
 * ```
 */
export function lossScaleCheck(io: { lossScale: Tensor; grad: Tensor }): void {
  const op = "lossScaleCheck";
  checkLossScale(op, io.lossScale);
  _recordNonFiniteCheck(
    op,
    { state: io.lossScale, x: io.grad },
    { variant: "flag", mark: 0, slot: FOUND },
    { x: "grad", state: "lossScale" },
  );
}

/**
 * The update kernel: a single invocation updates the scaler's state as
 * `torch.amp.GradScaler.update`. No Params: everything is in the state.
 */
const update = defineKernel({
  name: "loss_scale_update",
  doc: `a single invocation updates the scaler's state s as torch.amp.GradScaler.update: ` +
    `found (word ${FOUND} != 0): scale *= backoff, tracker = 0, one more skipped step; else ` +
    "tracker++, and when it reaches the growth interval the scale grows (unless that overflows " +
    "f32: the bits of the product are tested, as a compiler may assume floats finite) and " +
    "tracker = 0. Then the flag is cleared and the step counted.",
  params: {},
  bindings: { s: { type: "u32", access: "read_write" } },
  workgroupSize: 1,
  body: () =>
    `@compute @workgroup_size(WG)
fn main() {
  var scale = bitcast<f32>(s[${SCALE}]);
  var tracker = s[${TRACKER}];
  if (s[${FOUND}] != 0u) {
    scale = scale * bitcast<f32>(s[${BACKOFF}]);
    tracker = 0u;
    s[${SKIPPED}] = s[${SKIPPED}] + 1u;
  } else {
    tracker = tracker + 1u;
    if (tracker >= s[${INTERVAL}]) {
      let grown = scale * bitcast<f32>(s[${GROWTH}]);
      if ((bitcast<u32>(grown) & 0x7f800000u) != 0x7f800000u) { scale = grown; }
      tracker = 0u;
    }
  }
  s[${SCALE}] = bitcast<u32>(scale);
  s[${TRACKER}] = tracker;
  s[${FOUND}] = 0u;
  s[${STEPS}] = s[${STEPS}] + 1u;
}
`,
});

/**
 * Records the end-of-step update of a loss scaler (as `torch.amp.GradScaler.update`): when the
 * found flag is set, the scale is multiplied by the backoff factor, the growth tracker reset and
 * the step counted as skipped; otherwise the tracker counts one more successful step, and after
 * `growthInterval` of them the scale is multiplied by the growth factor (unless the product is
 * not a finite f32) and the tracker reset. Then the flag is cleared. Call it once per step, after
 * every `sgdUpdate` of the step.
 *
 * @returns Nothing: the dispatch is recorded.
 * @throws {TypeError} when `lossScale` is not a scaler's state.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { createLossScale, lossScaleUpdate, readLossScale } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const lossScale = createLossScale(gpu, { initScale: 8, growthInterval: 1 });
 * lossScaleUpdate({ lossScale });
 * console.log((await readLossScale(lossScale)).scale); // 16
 * ```
 */
export function lossScaleUpdate(io: { lossScale: Tensor }): void {
  const op = "lossScaleUpdate";
  checkLossScale(op, io.lossScale);
  update.dispatch({ op, params: {}, bindings: { s: io.lossScale }, workgroups: 1 });
}

/**
 * Reads a loss scaler's state back (one readback: flushes the recorded work and waits for it).
 * Meant for logs at the end of an epoch, not for every step.
 *
 * @returns The scale, growth tracker, found flag and step counts.
 * @throws {TypeError} when `lossScale` is not a scaler's state.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { createLossScale, readLossScale } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const info = await readLossScale(createLossScale(gpu));
 * console.log(info.scale, info.skippedSteps); // 65536 0
 * ```
 */
export async function readLossScale(lossScale: Tensor): Promise<LossScaleInfo> {
  checkLossScale("readLossScale", lossScale);
  return decodeLossScale(new Uint32Array(await lossScale.toArray()));
}

/**
 * A loss scaler's state from its {@linkcode LOSS_SCALE_WORDS} words as read back (for a caller
 * that copies them into a readback of its own, so that one wait serves several reads).
 *
 * @returns The scale, growth tracker, found flag and step counts.
 * @throws {TypeError} when `words` does not hold {@linkcode LOSS_SCALE_WORDS} words.
 * @example
 * ```ts
 * import { decodeLossScale } from "./loss_scale.ts";
 * const words = new Uint32Array(8);
 * words[0] = 0x47800000; // 65536 as f32 bits
 * console.log(decodeLossScale(words).scale); // 65536
 * ```
 */
export function decodeLossScale(words: Uint32Array): LossScaleInfo {
  if (words.length !== LOSS_SCALE_WORDS) {
    throw new TypeError(
      `decodeLossScale: expected ${LOSS_SCALE_WORDS} words of a loss scaler's state, got ${words.length}`,
    );
  }
  const bits = new Float32Array(words.buffer, words.byteOffset, words.length);
  return {
    scale: bits[SCALE],
    growthTracker: words[TRACKER],
    foundInf: words[FOUND] !== 0,
    skippedSteps: words[SKIPPED],
    steps: words[STEPS],
    growthInterval: words[INTERVAL],
    growthFactor: bits[GROWTH],
    backoffFactor: bits[BACKOFF],
  };
}
