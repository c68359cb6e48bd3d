/**
 * Learning-rate schedules as in `torch.optim.lr_scheduler`, as pure functions of the optimizer
 * step: {@linkcode scheduleLr} gives the learning rate of step `s` (from 0) in closed form, in
 * f64. The trainer evaluates it on the host for each step and passes the value in the update's
 * uniform parameters, which every dispatch records anyway: a schedule adds no readback and no
 * buffer write per step.
 *
 * Each schedule counts optimizer steps (PyTorch's `scheduler.step()` called after every
 * `optimizer.step()`); the CLI turns its epoch-based flags (`--schedule step:30`) into steps.
 *
 * @module
 */

/** A learning-rate schedule (the base learning rate is the optimizer's `lr`). */
export type Schedule =
  /** The base learning rate throughout. */
  | { readonly kind: "constant" }
  /** `StepLR(step_size, gamma)`: `lr * gamma^floor(s / stepSize)`. */
  | { readonly kind: "step"; readonly stepSize: number; readonly gamma?: number }
  /** `MultiStepLR(milestones, gamma)`: `lr * gamma^(milestones <= s)`. */
  | { readonly kind: "multistep"; readonly milestones: readonly number[]; readonly gamma?: number }
  /** `CosineAnnealingLR(T_max, eta_min)`. */
  | { readonly kind: "cosine"; readonly tMax: number; readonly etaMin?: number }
  /**
   * `OneCycleLR(max_lr=lr, total_steps, pct_start, anneal_strategy="cos", div_factor,
   * final_div_factor, cycle_momentum=False)`: from `lr / divFactor` up to `lr`, then down to
   * `lr / divFactor / finalDivFactor`.
   */
  | {
    readonly kind: "onecycle";
    readonly totalSteps: number;
    readonly pctStart?: number;
    readonly divFactor?: number;
    readonly finalDivFactor?: number;
  };

/** A schedule with an optional linear warm-up before it. */
export interface LrSchedule {
  /** The schedule (after the warm-up). */
  readonly schedule: Schedule;
  /**
   * Linear warm-up steps `W` (default 0): step `s < W` has `lr * (s + 1) / (W + 1)` (PyTorch's
   * `LinearLR(start_factor=1 / (W + 1), total_iters=W)`), and the schedule then starts at step
   * `W` as its step 0 (`SequentialLR(..., milestones=[W])`).
   */
  readonly warmup?: number;
}

function _check(ok: boolean, what: string): void {
  if (!ok) throw new RangeError(`scheduleLr: ${what}`);
}

/**
 * Validates a schedule.
 *
 * @returns Nothing.
 * @throws {RangeError} for a bad field.
 * @example
 * ```ts
 * import { checkSchedule } from "./schedule.ts";
 * checkSchedule({ schedule: { kind: "cosine", tMax: 100 }, warmup: 5 });
 * ```
 */
export function checkSchedule(s: LrSchedule): void {
  const w = s.warmup ?? 0;
  _check(Number.isInteger(w) && w >= 0, `warmup must be an integer >= 0, got ${w}`);
  const sc = s.schedule;
  const positive = (v: unknown) => typeof v === "number" && Number.isInteger(v) && v >= 1;
  const gamma = (g: unknown) =>
    g === undefined || (typeof g === "number" && g >= 0 && g < Infinity);
  switch (sc.kind) {
    case "constant":
      return;
    case "step":
      _check(positive(sc.stepSize), `step size must be an integer >= 1, got ${sc.stepSize}`);
      _check(gamma(sc.gamma), `gamma must be a finite number >= 0, got ${sc.gamma}`);
      return;
    case "multistep":
      _check(
        Array.isArray(sc.milestones) && sc.milestones.length > 0 &&
          sc.milestones.every((m, i) => positive(m) && (i === 0 || m > sc.milestones[i - 1])),
        `milestones must be increasing integers >= 1, got ${sc.milestones}`,
      );
      _check(gamma(sc.gamma), `gamma must be a finite number >= 0, got ${sc.gamma}`);
      return;
    case "cosine":
      _check(positive(sc.tMax), `tMax must be an integer >= 1, got ${sc.tMax}`);
      _check(
        sc.etaMin === undefined || (sc.etaMin >= 0 && sc.etaMin < Infinity),
        `etaMin must be a finite number >= 0, got ${sc.etaMin}`,
      );
      return;
    case "onecycle": {
      _check(positive(sc.totalSteps), `totalSteps must be an integer >= 1, got ${sc.totalSteps}`);
      const pct = sc.pctStart ?? 0.3;
      _check(pct > 0 && pct < 1, `pctStart must be in (0, 1), got ${pct}`);
      for (const k of ["divFactor", "finalDivFactor"] as const) {
        const v = sc[k];
        _check(v === undefined || (v > 0 && v < Infinity), `${k} must be > 0, got ${v}`);
      }
      return;
    }
    default:
      throw new RangeError(`scheduleLr: unknown schedule ${(sc as { kind: string }).kind}`);
  }
}

/** The learning rate of `sc` at step `s` (from 0) for base rate `lr`, in closed form. */
function _at(sc: Schedule, lr: number, s: number): number {
  switch (sc.kind) {
    case "constant":
      return lr;
    case "step":
      return lr * (sc.gamma ?? 0.1) ** Math.floor(s / sc.stepSize);
    case "multistep":
      return lr * (sc.gamma ?? 0.1) ** sc.milestones.filter((m) => m <= s).length;
    case "cosine": {
      const etaMin = sc.etaMin ?? 0;
      return etaMin + (lr - etaMin) * (1 + Math.cos(Math.PI * s / sc.tMax)) / 2;
    }
    case "onecycle": {
      const initial = lr / (sc.divFactor ?? 25);
      const min = initial / (sc.finalDivFactor ?? 1e4);
      const end1 = (sc.pctStart ?? 0.3) * sc.totalSteps - 1, end2 = sc.totalSteps - 1;
      const cos = (a: number, b: number, pct: number) =>
        b + (a - b) / 2 * (Math.cos(Math.PI * pct) + 1);
      return s <= end1 ? cos(initial, lr, s / end1) : cos(lr, min, (s - end1) / (end2 - end1));
    }
  }
}

/**
 * The learning rate of optimizer step `step` (from 0) under `s`, for base rate `lr`: the value
 * PyTorch's scheduler gives the optimizer for that step (`get_last_lr()` before it).
 *
 * @returns The learning rate (f64).
 * @throws {RangeError} for a bad schedule or step.
 * @example
 * ```ts
 * import { scheduleLr } from "@modern-cnn/webgpu/models";
 * const s = { schedule: { kind: "step", stepSize: 30 } } as const;
 * console.log(scheduleLr(s, 0.1, 29), scheduleLr(s, 0.1, 30)); // 0.1 0.010000000000000002
 * ```
 */
export function scheduleLr(s: LrSchedule, lr: number, step: number): number {
  checkSchedule(s);
  _check(Number.isInteger(step) && step >= 0, `step must be an integer >= 0, got ${step}`);
  const w = s.warmup ?? 0;
  if (step < w) return lr * (step + 1) / (w + 1);
  return _at(s.schedule, lr, step - w);
}
