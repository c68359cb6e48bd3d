/**
 * Planning softmax cross-entropy: {@linkcode planSoftmaxCe} turns a call's sizes and an adapter's
 * profile into a {@linkcode SoftmaxCePlan}, a plain value that says what the recorder
 * (`kernels.ts`) dispatches: the rows per workgroup (as many as keep each thread's loops, about
 * `3c` iterations per row, well under llvmpipe's silent cap of 65535 loop iterations per
 * invocation), the ranges of rows dispatched one at a time (logits larger than one storage
 * binding), each range's workgroups, and whether their partial sums need a second pass. Pure: the
 * same inputs give the same plan.
 *
 * @module
 */

import type { AdapterProfile } from "../_adapter.ts";
import { LOOP_BUDGET, LOOP_CAP, maxBindingElements, splitUnits } from "../_binding.ts";

/** Threads per workgroup of both kernels. */
export const WG = 256;

/** Most classes: one row's loops take about 3c iterations of llvmpipe's 65535 per invocation. */
export const MAX_CLASSES = 16384;

/**
 * Most rows of a loss call: every workgroup first counts the valid labels of all rows, `n / WG`
 * loop iterations per thread on top of the row loops' {@linkcode LOOP_BUDGET}, within llvmpipe's
 * cap ({@linkcode LOOP_CAP}).
 */
export const MAX_CE_ROWS = WG * (LOOP_CAP - 2 * LOOP_BUDGET);

/** What a call computes: loss, gradient and hits (`ce`; in place: `ce_inplace`), or hits. */
export type CeKind = "ce" | "ce_inplace" | "acc";

/** One call, as the planner sees it. */
export interface SoftmaxCeProblem {
  /** The calling function (named in errors). */
  readonly op: string;
  /** What it computes. */
  readonly kind: CeKind;
  /** Rows. */
  readonly n: number;
  /** Classes. */
  readonly c: number;
  /** Label smoothing `eps` (default 0). */
  readonly labelSmoothing?: number;
}

/** One range of rows, dispatched at once. */
export interface RowRange {
  /** The rows `[first, end)`. */
  readonly rows: readonly [number, number];
  /** Its workgroups. */
  readonly groups: number;
  /** Index of its first workgroup among all ranges' (its slot in the partial sums). */
  readonly partialOff: number;
}

/** What the recorder dispatches for one call. */
export interface SoftmaxCePlan {
  /** What the call computes. */
  readonly kind: CeKind;
  /** Rows of the call (all ranges). */
  readonly n: number;
  /** Classes. */
  readonly c: number;
  /** The target's weight on the label, `1 - eps` (0 for `acc`). */
  readonly onTarget: number;
  /** The target's weight on every class, `eps / c` (0 for `acc`). */
  readonly offTarget: number;
  /** Rows per workgroup. */
  readonly rowsPerGroup: number;
  /** The ranges of rows, one dispatch each. */
  readonly ranges: readonly RowRange[];
  /** Workgroups of all ranges. */
  readonly groups: number;
  /** Whether the workgroups write partial sums that a second pass adds (more than one). */
  readonly partial: boolean;
}

/**
 * Plans a softmax cross-entropy or accuracy count over `n` rows of `c` classes (`n >= 1`).
 *
 * @param limit The most elements one binding may span (default: the profile's limit; runners
 * pass `bindingLimit(gpu)`, which tests may lower).
 * @returns The plan.
 * @throws {RangeError} for more than {@linkcode MAX_CLASSES} classes, a row that does not fit a
 * binding, or too many rows (for the loss: more than {@linkcode MAX_CE_ROWS}, or labels that do
 * not fit one binding: every workgroup counts them all).
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "../_adapter.ts";
 * import { planSoftmaxCe } from "./plan.ts";
 * const plan = planSoftmaxCe({ op: "softmaxCrossEntropy", kind: "ce", n: 256, c: 10 }, WEBGPU_DEFAULT_PROFILE);
 * console.log(plan.rowsPerGroup, plan.partial); // 123136 false
 * ```
 */
export function planSoftmaxCe(
  problem: SoftmaxCeProblem,
  profile: AdapterProfile,
  limit: number = maxBindingElements(profile),
): SoftmaxCePlan {
  const { op, kind, n, c } = problem;
  if (c > MAX_CLASSES) {
    throw new RangeError(`${op}: c = ${c} classes is more than the supported ${MAX_CLASSES}`);
  }
  // Rows per thread: their loops (about 3c + 4 iterations each) stay within the loop budget.
  const perThread = Math.max(1, Math.floor(LOOP_BUDGET / (3 * c + 4)));
  const rowsPerGroup = Math.max(1, Math.min(WG * perThread, Math.floor(limit / c)));
  const rows = splitUnits(op, profile, {
    units: n,
    perUnit: c,
    quantum: rowsPerGroup,
    maxUnits: 65535 * rowsPerGroup,
    limit,
  });
  const ranges: RowRange[] = [];
  let groups = 0;
  for (const [r0, r1] of rows) {
    const count = Math.ceil((r1 - r0) / rowsPerGroup);
    ranges.push({ rows: [r0, r1], groups: count, partialOff: groups });
    groups += count;
  }
  if (groups > WG * LOOP_BUDGET) {
    throw new RangeError(`${op}: n = ${n} rows is too large`);
  }
  const eps = problem.labelSmoothing ?? 0;
  const ce = kind !== "acc";
  if (ce && (n > MAX_CE_ROWS || n > limit)) {
    throw new RangeError(
      `${op}: n = ${n} rows is more than the supported ${Math.min(MAX_CE_ROWS, limit)}`,
    );
  }
  return {
    kind,
    n,
    c,
    onTarget: ce ? 1 - eps : 0,
    offTarget: ce ? eps / c : 0,
    rowsPerGroup,
    ranges,
    groups,
    partial: groups > 1,
  };
}
