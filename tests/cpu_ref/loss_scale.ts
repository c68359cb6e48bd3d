// Float64 CPU reference of dynamic loss scaling (torch.amp.GradScaler's update rule), written from
// its definition: a step whose gradients hold an Inf or a NaN is skipped and the scale multiplied
// by the backoff factor (growth tracker reset); otherwise the tracker counts the step, and after
// growthInterval successful steps the scale is multiplied by the growth factor (kept only when
// the result is a finite f32) and the tracker reset. The GPU stores the scale as an f32: the
// reference rounds it the same way (exact for the power-of-two factors of the tests).

/** The state of the reference scaler. */
export interface LossScaleRef {
  scale: number;
  growthTracker: number;
  skippedSteps: number;
  steps: number;
  readonly growthInterval: number;
  readonly growthFactor: number;
  readonly backoffFactor: number;
}

/** A new reference scaler (GradScaler's defaults). */
export function lossScaleRef(
  o: {
    initScale?: number;
    growthInterval?: number;
    growthFactor?: number;
    backoffFactor?: number;
  } = {},
): LossScaleRef {
  return {
    scale: Math.fround(o.initScale ?? 65536),
    growthTracker: 0,
    skippedSteps: 0,
    steps: 0,
    growthInterval: o.growthInterval ?? 2000,
    growthFactor: Math.fround(o.growthFactor ?? 2),
    backoffFactor: Math.fround(o.backoffFactor ?? 0.5),
  };
}

/** Whether any value is an Inf or a NaN (the found flag of one step). */
export function anyNonFinite(values: ArrayLike<number>): boolean {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return true;
  return false;
}

/** The end-of-step update, in place. */
export function lossScaleUpdateRef(s: LossScaleRef, found: boolean): void {
  if (found) {
    s.scale = Math.fround(s.scale * s.backoffFactor);
    s.growthTracker = 0;
    s.skippedSteps++;
  } else {
    s.growthTracker++;
    if (s.growthTracker >= s.growthInterval) {
      const grown = Math.fround(s.scale * s.growthFactor);
      if (Number.isFinite(grown)) s.scale = grown;
      s.growthTracker = 0;
    }
  }
  s.steps++;
}
