/**
 * How the autotuner times candidates: a candidate is first run once and checked against the cost
 * model's result (random inputs), then timed as R repetitions recorded into one submit with one
 * wait (R such that a sample holds >= `minSampleMs` of GPU work; the fixed cost of a wait is
 * measured and subtracted), median of `samples`. A search ({@linkcode startSearch},
 * {@linkcode tryCandidates}, {@linkcode finishSearch}) keeps the fastest, which replaces the cost
 * model's choice only when it is at least `threshold` faster, confirmed by a second,
 * interleaved timing of both. Generic in the candidate: a GEMM tuning, a conv2d plan.
 *
 * @module
 */

import type { Gpu, Tensor } from "../../gpu/mod.ts";
import type { TunedChoice } from "./table.ts";
import type { TuningProblem } from "./problems.ts";

/** What tuning one problem found. */
export interface TuneResult {
  /** The problem. */
  readonly problem: TuningProblem;
  /** The cost model's choice (see {@linkcode formatChoice}). */
  readonly costModel: string;
  /** Its time per call in ms (NaN when not timed). */
  readonly costModelMs: number;
  /** The choice kept: a candidate's, or the cost model's. */
  readonly tuned: string;
  /** Its time per call in ms (NaN when not timed). */
  readonly tunedMs: number;
  /** `costModelMs / tunedMs` (1 when the cost model's choice was kept). */
  readonly speedup: number;
  /** Whether the table now holds a choice other than the cost model's for this problem. */
  readonly changed: boolean;
  /** Candidates timed besides the cost model's choice. */
  readonly candidates: number;
  /** Why the cost model's choice was kept or the problem skipped, when it was. */
  readonly note?: string;
}

/** The settings of a tuning run (from `AutotuneOptions`) and its deadline. */
export interface Timing {
  /** The fixed cost of one submit-and-wait, subtracted from every sample. */
  readonly overheadMs: number;
  /** `performance.now()` past which no candidate is timed. */
  readonly deadline: number;
  /** GPU work per sample. */
  readonly minSampleMs: number;
  /** Samples per candidate. */
  readonly samples: number;
  /** Least speedup to replace the cost model's choice. */
  readonly threshold: number;
  /** Most candidates per problem. */
  readonly maxCandidates: number;
  /** Problems under this many ms per recorded run are not tuned. */
  readonly minProblemMs: number;
  /** Progress lines. */
  readonly log: (line: string) => void;
}

/** A result with the table entry it sets (when `changed`). */
export type Internal = TuneResult & { choice?: TunedChoice };

/** `1.234 ms`, or `-` for NaN. */
export function fmtMs(ms: number): string {
  return Number.isFinite(ms) ? `${ms.toFixed(3)} ms` : "-";
}

/** The result of a problem not timed, and why. */
export function skipped(p: TuningProblem, note: string): Internal {
  return {
    problem: p,
    costModel: "-",
    costModelMs: NaN,
    tuned: "-",
    tunedMs: NaN,
    speedup: 1,
    changed: false,
    candidates: 0,
    note,
  };
}

/** Median of the fixed cost of one submit-and-wait (subtracted from every sample). */
export async function syncOverhead(gpu: Gpu): Promise<number> {
  const t = gpu.zeros([16]);
  await gpu.sync();
  const xs: number[] = [];
  for (let i = 0; i < 5; i++) {
    gpu.clear(t);
    const t0 = performance.now();
    await gpu.sync();
    xs.push(performance.now() - t0);
  }
  t.dispose();
  return median(xs);
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

/** Deterministic values in [-1, 1): contents do not matter for timing, only for the check. */
export function noise(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = (x >>> 0) / 2147483648 - 1;
  }
  return out;
}

/** A tensor of `shape` filled with {@linkcode noise}. */
export function filled(gpu: Gpu, shape: number[], seed: number): Tensor {
  return gpu.tensor(noise(shape.reduce((a, b) => a * b, 1), seed), { shape });
}

/**
 * A workload to time: its runs of a candidate (`C`: a GEMM tuning, a conv2d plan), the cost
 * model's candidate, its output tensors and how to reset them before a check.
 */
export interface Workload<C> {
  /** The cost model's candidate. */
  readonly base: C;
  /** Records one run of the candidate. */
  run(candidate: C): void;
  /** Tensors the check compares. */
  readonly outputs: readonly Tensor[];
  /** Records resetting the outputs the run reads (beta, accumulation). */
  reset(): void;
  /** Releases the workload's tensors. */
  dispose(): void;
}

interface Measured {
  readonly ms: number;
}

/**
 * Times one candidate: a checked run (compiles its pipelines; results must match `reference`),
 * then `samples` samples of `reps` runs in one submit. Returns undefined when it fails.
 */
async function measure<C>(
  gpu: Gpu,
  w: Workload<C>,
  c: C,
  reps: number,
  t: Timing,
  reference: Float32Array[] | null,
  giveUpAbove: number,
): Promise<(Measured & { outputs: Float32Array[] }) | string> {
  let outputs: Float32Array[];
  try {
    w.reset();
    w.run(c);
    await gpu.sync();
    outputs = [];
    for (const o of w.outputs) outputs.push(await o.toArray() as Float32Array);
  } catch (err) {
    return `failed: ${(err as Error).message.split("\n")[0]}`;
  }
  if (reference) {
    for (let i = 0; i < reference.length; i++) {
      const bad = mismatch(outputs[i], reference[i]);
      if (bad) return `wrong result: ${bad}`;
    }
  }
  const xs: number[] = [];
  for (let i = 0; i < t.samples; i++) {
    const per = await sample(gpu, w, c, reps, t.overheadMs);
    xs.push(per);
    if (per > giveUpAbove) break; // clearly slower: one sample tells
  }
  return { ms: median(xs), outputs };
}

/** Ms per run of one sample: `reps` runs recorded, then one submit and one wait. */
async function sample<C>(
  gpu: Gpu,
  w: Workload<C>,
  c: C,
  reps: number,
  overheadMs: number,
): Promise<number> {
  for (let r = 0; r < reps; r++) w.run(c);
  const t0 = performance.now();
  await gpu.sync();
  return Math.max(performance.now() - t0 - overheadMs, 1e-3) / reps;
}

function mismatch(got: Float32Array, want: Float32Array): string | null {
  let scale = 1;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= 1e-3 * scale)) return `element ${i}: ${got[i]} vs ${want[i]}`;
  }
  return null;
}

/** Most dispatches recorded into one sample (the params arena holds 4096). */
const MAX_DISPATCHES_PER_SAMPLE = 3000;

/**
 * Times the cost model's choice (after a checked run) and picks repetitions: enough runs that a
 * sample holds `minSampleMs` of GPU work.
 */
async function baseline<C>(
  gpu: Gpu,
  w: Workload<C>,
  t: Timing,
): Promise<{ ms: number; reps: number; outputs: Float32Array[] } | string> {
  const d0 = gpu.stats.dispatches;
  const first = await measure(gpu, w, w.base, 1, { ...t, samples: 1 }, null, Infinity);
  if (typeof first === "string") return first;
  const perRun = Math.max(1, gpu.stats.dispatches - d0);
  const maxReps = Math.max(1, Math.floor(MAX_DISPATCHES_PER_SAMPLE / perRun));
  let reps = Math.min(maxReps, Math.max(1, Math.ceil(t.minSampleMs / first.ms)));
  let ms = first.ms;
  for (let i = 0; i < 3 && reps < maxReps && ms * reps < 0.7 * t.minSampleMs; i++) {
    ms = await sample(gpu, w, w.base, reps, t.overheadMs);
    reps = Math.min(maxReps, Math.max(reps, Math.ceil(t.minSampleMs / ms)));
  }
  const xs = [];
  for (let i = 0; i < t.samples; i++) xs.push(await sample(gpu, w, w.base, reps, t.overheadMs));
  return { ms: median(xs), reps, outputs: first.outputs };
}

/** A search's state: the best candidate so far, the signatures tried, notes. */
export interface Search<C> {
  /** The fastest so far: its candidate, signature and ms per run. */
  best: { tuning: C; sig: string; ms: number };
  /** Signatures timed (or failed) so far. */
  readonly seen: Set<string>;
  /** Candidates timed. */
  tried: number;
  /** Why candidates failed. */
  notes: string[];
}

/** Times the candidates not seen yet; keeps the fastest in `search.best`. */
export async function tryCandidates<C>(
  gpu: Gpu,
  w: Workload<C>,
  cands: readonly C[],
  sig: (c: C) => string | null,
  search: Search<C>,
  reps: number,
  reference: Float32Array[],
  t: Timing,
): Promise<void> {
  for (const c of cands) {
    if (performance.now() > t.deadline || search.tried >= t.maxCandidates) return;
    const key = sig(c);
    if (key === null || search.seen.has(key)) continue;
    search.seen.add(key);
    search.tried++;
    const m = await measure(gpu, w, c, reps, t, reference, 1.5 * search.best.ms);
    if (typeof m === "string") {
      search.notes.push(`${key}: ${m}`);
      continue;
    }
    if (m.ms < search.best.ms) search.best = { tuning: c, sig: key, ms: m.ms };
  }
}

/**
 * Decides between the cost model's choice and the best candidate: the candidate must be at least
 * `threshold` faster in a second timing that alternates between the two.
 */
async function confirm<C>(
  gpu: Gpu,
  w: Workload<C>,
  search: Search<C>,
  baseMs: number,
  reps: number,
  t: Timing,
): Promise<{ accept: boolean; baseMs: number; bestMs: number; why: string }> {
  if (search.best.ms * (1 + t.threshold) > baseMs) {
    const why = `under ${Math.round(t.threshold * 100)}% faster: ${search.best.sig}`;
    return { accept: false, baseMs, bestMs: search.best.ms, why };
  }
  const xs: number[] = [], ys: number[] = [];
  for (let i = 0; i < t.samples; i++) {
    xs.push(await sample(gpu, w, w.base, reps, t.overheadMs));
    ys.push(await sample(gpu, w, search.best.tuning, reps, t.overheadMs));
  }
  const b = median(xs), c = median(ys);
  const why = `not confirmed: ${search.best.sig}`;
  return { accept: c * (1 + t.threshold) <= b, baseMs: b, bestMs: c, why };
}

/** A problem whose cost model is timed: the search from it and results relative to it. */
export interface Session<C> {
  /** The cost model's choice, as text. */
  readonly costModel: string;
  /** Its timing: ms per run, repetitions per sample, and its outputs (the reference). */
  readonly b: { ms: number; reps: number; outputs: Float32Array[] };
  /** The search from it. */
  readonly search: Search<C>;
  /** A result: the cost model's, but for what `x` says. */
  readonly result: (x: Partial<Internal>) => Internal;
}

/**
 * Times the cost model's choice (`costModel` names it): the finished result when that fails or
 * the problem is too small to tune, else a session whose search starts from it.
 */
export async function startSearch<C>(
  gpu: Gpu,
  p: TuningProblem,
  w: Workload<C>,
  t: Timing,
  costModel: string,
): Promise<Internal | Session<C>> {
  const b = await baseline(gpu, w, t);
  if (typeof b === "string") return { ...skipped(p, b), costModel };
  const result = (x: Partial<Internal>): Internal => ({
    problem: p,
    costModel,
    costModelMs: b.ms,
    tuned: costModel,
    tunedMs: b.ms,
    speedup: 1,
    changed: false,
    candidates: 0,
    ...x,
  });
  if (b.ms * p.count < t.minProblemMs) {
    return result({ note: `under ${t.minProblemMs} ms per run` });
  }
  const search: Search<C> = {
    best: { tuning: w.base, sig: costModel, ms: b.ms },
    seen: new Set([costModel]),
    tried: 0,
    notes: [],
  };
  return { costModel, b, search, result };
}

/**
 * Ends a search: the cost model's result when no candidate beat it or the alternating timing
 * does not confirm the best one ({@linkcode confirm}), else the best one's, with its table entry
 * `choice()`.
 */
export async function finishSearch<C>(
  gpu: Gpu,
  w: Workload<C>,
  s: Session<C>,
  t: Timing,
  choice: () => TunedChoice,
): Promise<Internal> {
  const { search, result } = s;
  const note = search.notes.length ? search.notes.join("; ") : undefined;
  if (search.best.sig === s.costModel) return result({ candidates: search.tried, note });
  const c = await confirm(gpu, w, search, s.b.ms, s.b.reps, t);
  if (!c.accept) {
    return result({
      costModelMs: c.baseMs,
      tunedMs: c.baseMs,
      candidates: search.tried,
      note: `${c.why} at ${fmtMs(c.bestMs)}` + (note ? `; ${note}` : ""),
    });
  }
  return result({
    costModelMs: c.baseMs,
    tuned: search.best.sig,
    tunedMs: c.bestMs,
    speedup: c.baseMs / c.bestMs,
    changed: true,
    candidates: search.tried,
    note,
    choice: choice(),
  });
}
