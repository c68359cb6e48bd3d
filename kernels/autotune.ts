/**
 * A small autotuner for kernel variants, with its choices kept per adapter.
 *
 * `gemmStrided` (behind `gemm`, linear and conv2d) picks a kernel family, a register tile, a
 * transposed ("swapped") product and split-K by a cost model fitted on llvmpipe, and conv2d picks
 * direct kernels or im2col + GEMM per pass by another. Both first consult the
 * {@linkcode TuningTable} of their Gpu when the caller forced nothing, so that measured choices
 * replace the model's where they are faster.
 *
 * {@linkcode autotune} runs one real training step with a recording hook on (every GEMM and conv2d
 * pass records its problem), then times the candidates of each problem on fresh tensors of the
 * right sizes: for GEMMs the cost model's pick, the other orientation, the neighbouring register
 * tiles, other split counts and the shared-memory family; for conv2d passes direct against
 * im2col where the direct kernels can run. A candidate is first run once and checked against the
 * cost model's result (random inputs), then timed as R repetitions recorded into one submit with
 * one wait (R such that a sample holds >= `minSampleMs` of GPU work; the fixed cost of a wait is
 * measured and subtracted), median of `samples`. It replaces the cost model's choice only when it
 * is at least `threshold` (5%) faster, confirmed by a second, interleaved timing of both.
 *
 * The table lives in memory (so it works in a browser too); {@linkcode saveTuningCache} and
 * {@linkcode loadTuningCache} keep it in a JSON file keyed by adapter (Deno; `deno task tune`
 * writes it, `deno task train` and `deno task bench:train` read it).
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { autotune, saveTuningCache } from "@modern-cnn/webgpu/kernels";
 * import { createModel, Trainer, uploadImageSet } from "@modern-cnn/webgpu/models";
 * import { makeSynthetic } from "@modern-cnn/webgpu/data";
 * const gpu = await getGpu();
 * const trainer = new Trainer(createModel(gpu, { name: "lenet" }), { lr: 0.9, batchSize: 256, resize: 28 });
 * const set = uploadImageSet(gpu, makeSynthetic({ count: 256, channels: 1, height: 28, seed: 1 }));
 * const results = await autotune(gpu, () => trainer.trainEpoch(set, { epoch: 0 }), { budgetSeconds: 5 });
 * await saveTuningCache(gpu, `${await Deno.makeTempDir()}/autotune.json`); // defaultTuningCachePath() in real use
 * ```
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/mod.ts";
import { defaultCacheDir, writeFileAtomic } from "../data/locate.ts";
import {
  type GemmShape,
  type Recorded,
  type TunedChoice,
  tuningState,
  type TuningTable,
} from "./_autotune_table.ts";
import { conv2dBackward, conv2dForward, type Conv2dParams } from "./conv2d.ts";
import { bindingRange } from "./_binding.ts";
import { adapterProfile } from "./_adapter.ts";
import {
  type GemmPlan,
  gemmProblem,
  gemmStrided,
  type GemmTuning,
  planGemm,
  type StridedGemm,
} from "./gemm/index.ts";

export { type TunedChoice, TuningTable } from "./_autotune_table.ts";

/**
 * The tuning table of a Gpu (created empty on first use): what `gemmStrided` and conv2d consult.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { tuningTable } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * console.log(tuningTable(gpu).size);
 * ```
 */
export function tuningTable(gpu: Gpu): TuningTable {
  return tuningState(gpu).table;
}

// ------------------------------------------------------------------------ problems ----

/** One problem a recorded run computed (see {@linkcode recordProblems}). */
export interface TuningProblem {
  /** `gemm` (a strided GEMM, standalone or inside conv2d's im2col path) or a `conv2d` pass. */
  readonly op: "gemm" | "conv2d";
  /** The tuning table's key. */
  readonly key: string;
  /** A short human-readable description. */
  readonly label: string;
  /** How many times the recorded run computed it. */
  readonly count: number;
  /** Floating-point operations of one call (multiply-adds count 2). */
  readonly flops: number;
}

const records = new WeakMap<TuningProblem, Recorded>();

/**
 * Runs `run` with the recording hook on and returns the distinct problems its GEMMs and conv2d
 * passes computed (only those whose caller forced nothing: the ones the table can steer). The
 * table is consulted as usual meanwhile.
 *
 * @throws {TypeError} when this Gpu is already recording.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { gemm, recordProblems } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const a = gpu.zeros([64, 32]), b = gpu.zeros([32, 16]), c = gpu.empty([64, 16]);
 * const problems = await recordProblems(gpu, () => gemm({ c, a, b }, { m: 64, n: 16, k: 32 }));
 * console.log(problems[0].label); // gemm 64x16x32 nn
 * ```
 */
export async function recordProblems(
  gpu: Gpu,
  run: () => unknown,
): Promise<TuningProblem[]> {
  const s = tuningState(gpu);
  if (s.recorder) throw new TypeError("recordProblems: this Gpu is already recording");
  const rec = new Map<string, Recorded>();
  s.recorder = rec;
  try {
    await run();
  } finally {
    s.recorder = null;
  }
  return [...rec.values()].map((r) => {
    const p: TuningProblem = r.op === "gemm"
      ? {
        op: "gemm",
        key: r.key,
        label: gemmLabel(r.g),
        count: r.count,
        flops: 2 * r.g.m * r.g.n * r.g.k * r.g.batch,
      }
      : {
        op: "conv2d",
        key: r.key,
        label: convLabel(r),
        count: r.count,
        flops: 2 * r.g.n * r.g.cOut * r.g.oh * r.g.ow * (r.g.cIn / r.g.groups) * r.g.kh * r.g.kw,
      };
    records.set(p, r);
    return p;
  });
}

function gemmLabel(g: GemmShape): string {
  const act = (g as { readonly activation?: string }).activation;
  return `gemm ${g.m}x${g.n}x${g.k}${g.batch > 1 ? ` x${g.batch}` : ""} ` +
    `${g.transA ? "t" : "n"}${g.transB ? "t" : "n"}${g.beta !== 0 ? " +C" : ""}` +
    `${g.biasMode !== "none" ? ` bias-${g.biasMode}` : ""}${
      g.segment !== undefined ? " nchw" : ""
    }` +
    `${act && act !== "none" ? ` ${act}` : ""}`;
}

function convLabel(r: Extract<Recorded, { op: "conv2d" }>): string {
  const g = r.g;
  const pass = { forward: "fwd", inputGrad: "dx", weightGrad: "dw" }[r.pass];
  return `conv2d ${pass} n${g.n} ${g.cIn}x${g.h}x${g.w}->${g.cOut}x${g.oh}x${g.ow} ` +
    `k${g.kh}x${g.kw} s${g.sh} p${g.ph}${g.groups > 1 ? ` g${g.groups}` : ""}`;
}

/**
 * A tuned choice as a short text: `reg 8x16`, `reg 4x8 swap split4`, `shared split2`, `direct`,
 * `im2col`.
 *
 * @example
 * ```ts
 * import { formatChoice } from "@modern-cnn/webgpu/kernels";
 * formatChoice({ op: "gemm", tuning: { variant: "register", tile: [8, 16], swap: true, splitK: 1 } }); // "reg 8x16 swap"
 * ```
 */
export function formatChoice(choice: TunedChoice): string {
  if (choice.op === "conv2d") return choice.direct ? "direct" : "im2col";
  const t = choice.tuning;
  const split = (t.splitK ?? 1) > 1 ? ` split${t.splitK}` : "";
  if (t.variant === "shared") return `shared${split}`;
  const tile = t.tile ? ` ${t.tile[0]}x${t.tile[1]}` : "";
  return `reg${tile}${t.swap ? " swap" : ""}${split}`;
}

// -------------------------------------------------------------------------- tuning ----

/** Options of {@linkcode autotune} and {@linkcode tuneProblems}. */
export interface AutotuneOptions {
  /** Most seconds to spend; problems not reached keep the cost model. Default 300. */
  readonly budgetSeconds?: number;
  /** GPU work per timing sample in ms (repetitions are chosen to reach it); default 30. */
  readonly minSampleMs?: number;
  /** Timing samples per candidate (their median counts); default 3. */
  readonly samples?: number;
  /** Least speedup over the cost model's choice to replace it; default 0.05 (5%). */
  readonly threshold?: number;
  /** Most candidates timed per problem besides the cost model's choice; default no limit. */
  readonly maxCandidates?: number;
  /**
   * Problems taking less than this many ms per recorded run (time per call x calls) keep the cost
   * model without trying candidates; default 0.2.
   */
  readonly minProblemMs?: number;
  /** Progress lines (e.g. `console.error`); default none. */
  readonly log?: (line: string) => void;
}

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

interface Timing {
  readonly overheadMs: number;
  readonly deadline: number;
  readonly minSampleMs: number;
  readonly samples: number;
  readonly threshold: number;
  readonly maxCandidates: number;
  readonly minProblemMs: number;
  readonly log: (line: string) => void;
}

/**
 * Runs `step` once (e.g. one training step) with the recording hook on, then tunes every problem
 * it computed ({@linkcode tuneProblems}): conv2d passes first; when their choices changed, the
 * step is recorded again (im2col GEMMs come or go), then its GEMMs. `step` really runs (a
 * training step updates the weights). The table of `gpu` holds the results.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { autotune, gemm } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const a = gpu.zeros([256, 400]), b = gpu.zeros([120, 400]), c = gpu.empty([256, 120]);
 * const results = await autotune(gpu, () => gemm({ c, a, b }, { m: 256, n: 120, k: 400, transB: true }));
 * console.log(results[0].costModel, results[0].tuned, results[0].speedup);
 * ```
 */
export async function autotune(
  gpu: Gpu,
  step: () => unknown,
  options: AutotuneOptions = {},
): Promise<TuneResult[]> {
  const t0 = performance.now();
  const budget = options.budgetSeconds ?? 300;
  const table = tuningTable(gpu);
  const first = await recordProblems(gpu, step);
  const convs = first.filter((p) => p.op === "conv2d");
  const before = convs.map((p) => JSON.stringify(table.get(p.key) ?? null));
  const results = await tuneProblems(gpu, convs, options);
  let gemms = first.filter((p) => p.op === "gemm");
  if (convs.some((p, i) => JSON.stringify(table.get(p.key) ?? null) !== before[i])) {
    options.log?.("autotune: conv2d choices changed; recording the step again");
    gemms = (await recordProblems(gpu, step)).filter((p) => p.op === "gemm");
  }
  const left = Math.max(0, budget - (performance.now() - t0) / 1000);
  results.push(...await tuneProblems(gpu, gemms, { ...options, budgetSeconds: left }));
  return results;
}

/**
 * Tunes recorded problems (see {@linkcode recordProblems}): conv2d passes, then GEMMs, most
 * work first, until the budget is spent. Sets or deletes their entries in the table of `gpu`.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { gemm, recordProblems, tuneProblems } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const a = gpu.zeros([256, 400]), b = gpu.zeros([120, 400]), c = gpu.empty([256, 120]);
 * const problems = await recordProblems(gpu, () => gemm({ c, a, b }, { m: 256, n: 120, k: 400, transB: true }));
 * const [r] = await tuneProblems(gpu, problems, { budgetSeconds: 30 });
 * console.log(`${r.costModel} -> ${r.tuned}: ${r.speedup.toFixed(2)}x`);
 * ```
 */
export async function tuneProblems(
  gpu: Gpu,
  problems: readonly TuningProblem[],
  options: AutotuneOptions = {},
): Promise<TuneResult[]> {
  const s = tuningState(gpu);
  s.suspended++;
  try {
    const timing: Timing = {
      overheadMs: await syncOverhead(gpu),
      deadline: performance.now() + (options.budgetSeconds ?? 300) * 1000,
      minSampleMs: options.minSampleMs ?? 30,
      samples: Math.max(1, options.samples ?? 3),
      threshold: options.threshold ?? 0.05,
      maxCandidates: options.maxCandidates ?? Infinity,
      minProblemMs: options.minProblemMs ?? 0.2,
      log: options.log ?? (() => {}),
    };
    const order = [...problems].sort((a, b) =>
      (a.op === b.op ? 0 : a.op === "conv2d" ? -1 : 1) || b.flops * b.count - a.flops * a.count
    );
    const out: TuneResult[] = [];
    for (const [i, p] of order.entries()) {
      const r = records.get(p);
      if (!r) throw new TypeError(`tuneProblems: '${p.key}' was not made by recordProblems`);
      let result: Internal;
      if (performance.now() > timing.deadline) {
        result = skipped(p, "budget spent");
      } else {
        result = r.op === "gemm"
          ? await tuneGemm(gpu, p, r.g, timing)
          : await tuneConv(gpu, p, r, timing);
      }
      // A problem timed and decided: its entry is the candidate, or none (the cost model).
      if (result.changed) s.table.set(p.key, result.choice!);
      else if (Number.isFinite(result.costModelMs)) s.table.delete(p.key);
      const { choice: _, ...plain } = result;
      out.push(plain);
      timing.log(
        `autotune [${i + 1}/${order.length}] ${p.label}: ${result.costModel} ` +
          `${fmtMs(result.costModelMs)} -> ${result.tuned} ${fmtMs(result.tunedMs)} ` +
          `(${result.speedup.toFixed(2)}x, ${result.candidates} candidates)` +
          (result.note ? ` [${result.note}]` : ""),
      );
    }
    return out;
  } finally {
    s.suspended--;
  }
}

type Internal = TuneResult & { choice?: TunedChoice };

function fmtMs(ms: number): string {
  return Number.isFinite(ms) ? `${ms.toFixed(3)} ms` : "-";
}

function skipped(p: TuningProblem, note: string): Internal {
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
async function syncOverhead(gpu: Gpu): Promise<number> {
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
function noise(n: number, seed: number): Float32Array {
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

function filled(gpu: Gpu, shape: number[], seed: number): Tensor {
  return gpu.tensor(noise(shape.reduce((a, b) => a * b, 1), seed), { shape });
}

/** A workload to time: its runs, its output tensors and how to reset them before a check. */
interface Workload {
  /** Records one run of the candidate. */
  run(candidate: Candidate): void;
  /** Tensors the check compares. */
  readonly outputs: readonly Tensor[];
  /** Records resetting the outputs the run reads (beta, accumulation). */
  reset(): void;
  dispose(): void;
}

type Candidate = GemmTuning | { readonly direct?: boolean };

interface Measured {
  readonly ms: number;
}

/**
 * Times one candidate: a checked run (compiles its pipelines; results must match `reference`),
 * then `samples` samples of `reps` runs in one submit. Returns undefined when it fails.
 */
async function measure(
  gpu: Gpu,
  w: Workload,
  c: Candidate,
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
async function sample(
  gpu: Gpu,
  w: Workload,
  c: Candidate,
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
async function baseline(
  gpu: Gpu,
  w: Workload,
  t: Timing,
): Promise<{ ms: number; reps: number; outputs: Float32Array[] } | string> {
  const d0 = gpu.stats.dispatches;
  const first = await measure(gpu, w, {}, 1, { ...t, samples: 1 }, null, Infinity);
  if (typeof first === "string") return first;
  const perRun = Math.max(1, gpu.stats.dispatches - d0);
  const maxReps = Math.max(1, Math.floor(MAX_DISPATCHES_PER_SAMPLE / perRun));
  let reps = Math.min(maxReps, Math.max(1, Math.ceil(t.minSampleMs / first.ms)));
  let ms = first.ms;
  for (let i = 0; i < 3 && reps < maxReps && ms * reps < 0.7 * t.minSampleMs; i++) {
    ms = await sample(gpu, w, {}, reps, t.overheadMs);
    reps = Math.min(maxReps, Math.max(reps, Math.ceil(t.minSampleMs / ms)));
  }
  const xs = [];
  for (let i = 0; i < t.samples; i++) xs.push(await sample(gpu, w, {}, reps, t.overheadMs));
  return { ms: median(xs), reps, outputs: first.outputs };
}

interface Search {
  best: { tuning: Candidate; sig: string; ms: number };
  readonly seen: Set<string>;
  tried: number;
  notes: string[];
}

/** Times the candidates not seen yet; keeps the fastest in `search.best`. */
async function tryCandidates(
  gpu: Gpu,
  w: Workload,
  cands: readonly Candidate[],
  sig: (c: Candidate) => string | null,
  search: Search,
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
async function confirm(
  gpu: Gpu,
  w: Workload,
  search: Search,
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
    xs.push(await sample(gpu, w, {}, reps, t.overheadMs));
    ys.push(await sample(gpu, w, search.best.tuning, reps, t.overheadMs));
  }
  const b = median(xs), c = median(ys);
  const why = `not confirmed: ${search.best.sig}`;
  return { accept: c * (1 + t.threshold) <= b, baseMs: b, bestMs: c, why };
}

/** A problem whose cost model is timed: the search from it and results relative to it. */
interface Session {
  readonly costModel: string;
  readonly b: { ms: number; reps: number; outputs: Float32Array[] };
  readonly search: Search;
  /** A result: the cost model's, but for what `x` says. */
  readonly result: (x: Partial<Internal>) => Internal;
}

/**
 * Times the cost model's choice (`costModel` names it): the finished result when that fails or
 * the problem is too small to tune, else a session whose search starts from it.
 */
async function startSearch(
  gpu: Gpu,
  p: TuningProblem,
  w: Workload,
  t: Timing,
  costModel: string,
): Promise<Internal | Session> {
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
  const search: Search = {
    best: { tuning: {}, sig: costModel, ms: b.ms },
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
async function finishSearch(
  gpu: Gpu,
  w: Workload,
  s: Session,
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

// ------------------------------------------------------------------------------ GEMM ----

/** Elements a strided GEMM operand spans from its base. */
function extents(g: GemmShape): { a: number; b: number; c: number; bias: number } {
  const { m, n, k, batch } = g;
  const kk = Math.max(k, 1);
  const a = (batch - 1) * g.strideA + (g.transA ? (kk - 1) * g.lda + m : (m - 1) * g.lda + kk);
  const b = (batch - 1) * g.strideB + (g.transB ? (n - 1) * g.ldb + kk : (kk - 1) * g.ldb + n);
  const c = (batch - 1) * g.strideC +
    (g.segment !== undefined
      ? Math.floor((n - 1) / g.segment) * (g.segmentStride ?? 0) + (m - 1) * g.ldc +
        (n - 1) % g.segment + 1
      : (m - 1) * g.ldc + (n - 1) * (g.ldcCol ?? 1) + 1);
  const bias = (batch - 1) * (g.strideBias ?? 0) + (g.biasMode === "row" ? m : n);
  return { a, b, c, bias };
}

/** Fresh tensors for a recorded GEMM, bound at the recorded offsets. */
function gemmWorkload(gpu: Gpu, shape: GemmShape): Workload & { readonly g: StridedGemm } {
  const ext = extents(shape);
  const make = (r: { base: number; count: number }, extent: number, seed: number) => {
    const count = Math.max(r.count, extent);
    const size = Math.ceil((r.base + count) / 4) * 4 + 4;
    const t = filled(gpu, [size], seed);
    return { t, range: bindingRange(t, r.base, count) };
  };
  const a = make(shape.a, ext.a, 1), b = make(shape.b, ext.b, 2), c = make(shape.c, ext.c, 3);
  const bias = shape.bias ? make(shape.bias, ext.bias, 4) : undefined;
  const c0 = shape.beta !== 0 ? noise(c.t.size, 3) : null;
  const g: StridedGemm = {
    ...shape,
    a: a.range,
    b: b.range,
    c: c.range,
    bias: bias?.range,
  };
  return {
    g,
    run: (cand) => gemmStrided(gpu, g, cand as GemmTuning),
    outputs: [c.t],
    reset: () => {
      if (c0) gpu.write(c.t, c0);
    },
    dispose: () => {
      for (const x of [a, b, c, bias]) x?.t.dispose();
    },
  };
}

function fullTuning(plan: GemmPlan): GemmTuning {
  return plan.variant === "shared"
    ? { variant: "shared", splitK: plan.splitK }
    : { variant: "register", tile: plan.tile, swap: plan.swap, splitK: plan.splitK };
}

const TM = [1, 2, 4, 8, 16];
const TN = [4, 8, 16];

async function tuneGemm(
  gpu: Gpu,
  p: TuningProblem,
  shape: GemmShape,
  t: Timing,
): Promise<Internal> {
  const w = gemmWorkload(gpu, shape);
  try {
    const resolve = (c: Candidate): GemmTuning | null => {
      try {
        return fullTuning(planGemm(gemmProblem(w.g), adapterProfile(gpu), c as GemmTuning));
      } catch {
        return null;
      }
    };
    const sig = (c: Candidate) => {
      const full = resolve(c);
      return full ? formatChoice({ op: "gemm", tuning: full }) : null;
    };
    const base = resolve({})!;
    const costModel = formatChoice({ op: "gemm", tuning: base });
    const session = await startSearch(gpu, p, w, t, costModel);
    if (!("search" in session)) return session;
    const { b, search } = session;
    const step = (c: Candidate[]) => tryCandidates(gpu, w, c, sig, search, b.reps, b.outputs, t);
    // 1. Family and orientation (each with the cost model's tile and splits).
    await step([
      { variant: "register", swap: false },
      ...(shape.segment === undefined ? [{ variant: "register", swap: true } as const] : []),
      { variant: "shared" },
    ]);
    // 2. Register tiles next to the best one so far (same orientation).
    const best = () => resolve(search.best.tuning)!;
    const b1 = best();
    if (b1.variant === "register") {
      const [tm, tn] = b1.tile!;
      const tiles: [number, number][] = [
        [tm * 2, tn],
        [tm / 2, tn],
        [tm, tn * 2],
        [tm, tn / 2],
        [tm * 2, tn / 2],
        [tm / 2, tn * 2],
        [tm * 2, tn * 2],
        [tm / 2, tn / 2],
      ];
      await step(
        tiles.filter(([x, y]) => TM.includes(x) && TN.includes(y)).map((tile) => ({
          variant: "register",
          swap: b1.swap,
          tile,
        })),
      );
    }
    // 3. Split counts around the best one's.
    const b2 = best();
    if (shape.k >= 256) {
      const s = b2.splitK ?? 1;
      const splits = [...new Set([1, 2, s * 2, s * 4, Math.floor(s / 2)])].filter((x) => x >= 1);
      await step(splits.map((splitK) => ({ ...b2, splitK })));
    }
    return await finishSearch(gpu, w, session, t, () => ({
      op: "gemm",
      tuning: resolve(search.best.tuning)!,
    }));
  } finally {
    w.dispose();
  }
}

// ---------------------------------------------------------------------------- conv2d ----

/** Fresh tensors for one pass of a recorded convolution. */
function convWorkload(gpu: Gpu, r: Extract<Recorded, { op: "conv2d" }>): Workload {
  const g = r.g;
  const params: Conv2dParams = {
    n: g.n,
    cIn: g.cIn,
    h: g.h,
    w: g.w,
    cOut: g.cOut,
    kernel: [g.kh, g.kw],
    stride: [g.sh, g.sw],
    padding: [g.ph, g.pw],
    dilation: [g.dh, g.dw],
    groups: g.groups,
  };
  const xs = [g.n, g.cIn, g.h, g.w], ys = [g.n, g.cOut, g.oh, g.ow];
  const ws = [g.cOut, g.cIn / g.groups, g.kh, g.kw];
  const owned: Tensor[] = [];
  const keep = (t: Tensor) => (owned.push(t), t);
  const dispose = () => owned.forEach((t) => t.dispose());
  const direct = (c: Candidate) => (c as { direct?: boolean }).direct;
  if (r.pass === "forward") {
    const x = keep(filled(gpu, xs, 1)), w = keep(filled(gpu, ws, 2));
    const b = keep(filled(gpu, [g.cOut], 3)), y = keep(gpu.empty(ys));
    return {
      run: (c) => conv2dForward({ y, x, w, b }, { ...params, direct: direct(c) }),
      outputs: [y],
      reset: () => {},
      dispose,
    };
  }
  const x = keep(filled(gpu, xs, 1)), w = keep(filled(gpu, ws, 2));
  const dy = keep(filled(gpu, ys, 3));
  if (r.pass === "inputGrad") {
    const dx = keep(gpu.empty(xs));
    return {
      run: (c) => conv2dBackward({ dx, dy, x, w }, { ...params, direct: direct(c) }),
      outputs: [dx],
      reset: () => {},
      dispose,
    };
  }
  const dw = keep(gpu.zeros(ws)), db = keep(gpu.zeros([g.cOut]));
  return {
    run: (c) =>
      conv2dBackward({ dw, db, dy, x, w }, { ...params, accumulate: true, direct: direct(c) }),
    outputs: [dw, db],
    reset: () => {
      gpu.clear(dw);
      gpu.clear(db);
    },
    dispose,
  };
}

/** Adapters where the direct kernels are not tried (SwiftShader crashed on them). */
const NO_DIRECT = /swiftshader/i;

async function tuneConv(
  gpu: Gpu,
  p: TuningProblem,
  r: Extract<Recorded, { op: "conv2d" }>,
  t: Timing,
): Promise<Internal> {
  const auto = r.decide({});
  const costModel = auto ? "direct" : "im2col";
  if (!r.decide({ direct: true }) || NO_DIRECT.test(gpu.description)) {
    return { ...skipped(p, "no direct kernel for this pass"), costModel, tuned: costModel };
  }
  const w = convWorkload(gpu, r);
  try {
    const session = await startSearch(gpu, p, w, t, costModel);
    if (!("search" in session)) return session;
    const { b, search } = session;
    const sig = (c: Candidate) => ((c as { direct?: boolean }).direct ? "direct" : "im2col");
    await tryCandidates(gpu, w, [{ direct: !auto }], sig, search, b.reps, b.outputs, t);
    return await finishSearch(gpu, w, session, t, () => ({ op: "conv2d", direct: !auto }));
  } finally {
    w.dispose();
  }
}

// ----------------------------------------------------------------------- persistence ----

const FORMAT = "modern-cnn-autotune";
/** Version of the cache file's layout and of the problem keys; other versions are ignored. */
const VERSION = 1;

interface CacheFile {
  format: string;
  version: number;
  adapters: Record<string, { updated?: string; entries: Record<string, unknown> }>;
}

/**
 * The key of this adapter in the cache file: its description, plus the number of CPU threads for
 * CPU adapters (their best tiles depend on it).
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { adapterKey } from "./autotune.ts";
 * console.log(adapterKey(await getGpu())); // e.g. "llvmpipe (LLVM 19.1.7, 256 bits) [2 CPUs]"
 * ```
 */
export function adapterKey(gpu: Gpu): string {
  const cpus = globalThis.navigator?.hardwareConcurrency;
  return gpu.isCpu && cpus ? `${gpu.description} [${cpus} CPUs]` : gpu.description;
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no Deno (browser) or no --allow-env
  }
}

/**
 * Where the tuning cache lives by default: `$MODERN_CNN_CACHE_DIR/autotune.json`, else next to
 * the data sets' cache folders: `$XDG_CACHE_HOME/modern-cnn/autotune.json` or
 * `~/.cache/modern-cnn/autotune.json`.
 *
 * @example
 * ```ts
 * import { defaultTuningCachePath } from "@modern-cnn/webgpu/kernels";
 * console.log(defaultTuningCachePath()); // e.g. /home/me/.cache/modern-cnn/autotune.json
 * ```
 */
export function defaultTuningCachePath(): string {
  const dir = env("MODERN_CNN_CACHE_DIR");
  return dir ? `${dir.replace(/\/+$/, "")}/autotune.json` : defaultCacheDir("autotune.json");
}

function warn(path: string, what: string): void {
  console.error(`autotune: ignoring cache file ${path}: ${what}`);
}

/** Reads a cache file: null when there is none, "bad" (after a warning) when it is unusable. */
async function readCache(path: string): Promise<CacheFile | null | "bad"> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    warn(path, `cannot read it (${(err as Error).message})`);
    return "bad";
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    warn(path, `not valid JSON (${(err as Error).message})`);
    return "bad";
  }
  const o = v as Partial<CacheFile> | null;
  if (typeof o !== "object" || o === null || Array.isArray(o) || o.format !== FORMAT) {
    warn(path, `not a ${FORMAT} file (no "format": "${FORMAT}")`);
    return "bad";
  }
  if (o.version !== VERSION) {
    warn(path, `written in format version ${o.version}, this version reads ${VERSION}`);
    return "bad";
  }
  const adapters = o.adapters as unknown;
  if (typeof adapters !== "object" || adapters === null || Array.isArray(adapters)) {
    warn(path, `"adapters" is not an object`);
    return "bad";
  }
  for (const [name, a] of Object.entries(adapters)) {
    const entries = (a as { entries?: unknown } | null)?.entries;
    if (typeof entries !== "object" || entries === null || Array.isArray(entries)) {
      warn(path, `adapter "${name}" has no "entries" object`);
      return "bad";
    }
  }
  return o as CacheFile;
}

/** A stored entry as a choice, or why it is not one. */
function parseChoice(key: string, v: unknown): TunedChoice | string {
  const o = v as Record<string, unknown> | null;
  if (typeof o !== "object" || o === null) return "not an object";
  if (o.op === "conv2d") {
    if (!key.startsWith("conv2d:")) return "a conv2d choice under another op's key";
    if (typeof o.direct !== "boolean") return `"direct" is not a boolean`;
    return { op: "conv2d", direct: o.direct };
  }
  if (o.op !== "gemm") return `unknown op ${JSON.stringify(o.op)}`;
  if (!key.startsWith("gemm:")) return "a gemm choice under another op's key";
  const t = o.tuning as Record<string, unknown> | null;
  if (typeof t !== "object" || t === null) return `"tuning" is not an object`;
  const splitK = (t.splitK ?? 1) as number;
  if (!Number.isInteger(splitK) || splitK < 1 || splitK > 4096) {
    return `bad splitK ${JSON.stringify(t.splitK)}`;
  }
  if (t.variant === "shared") return { op: "gemm", tuning: { variant: "shared", splitK } };
  if (t.variant !== "register") return `bad variant ${JSON.stringify(t.variant)}`;
  const tile = t.tile as unknown[];
  if (
    !Array.isArray(tile) || tile.length !== 2 || !TM.includes(tile[0] as number) ||
    !TN.includes(tile[1] as number)
  ) {
    return `bad tile ${JSON.stringify(t.tile)}`;
  }
  if (typeof (t.swap ?? false) !== "boolean") return `bad swap ${JSON.stringify(t.swap)}`;
  return {
    op: "gemm",
    tuning: {
      variant: "register",
      tile: [tile[0] as number, tile[1] as number],
      swap: (t.swap ?? false) as boolean,
      splitK,
    },
  };
}

/**
 * Loads this adapter's entries from a cache file into the Gpu's table (entries of other adapters
 * are ignored). Returns how many were loaded, or null when the file does not exist. A file that
 * cannot be used (not JSON, another format or version) and invalid entries are reported on
 * stderr, naming the file and the problem, and ignored: it is only a cache.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { defaultTuningCachePath, loadTuningCache } from "@modern-cnn/webgpu/kernels";
 * const n = await loadTuningCache(await getGpu(), defaultTuningCachePath());
 * if (n !== null) console.error(`autotune: loaded ${n} tuned entries`);
 * ```
 */
export async function loadTuningCache(gpu: Gpu, path: string): Promise<number | null> {
  const file = await readCache(path);
  if (file === null) return null;
  if (file === "bad") return 0;
  const section = file.adapters[adapterKey(gpu)];
  if (!section) return 0;
  const table = tuningTable(gpu);
  let loaded = 0;
  const bad: string[] = [];
  for (const [key, v] of Object.entries(section.entries)) {
    const c = parseChoice(key, v);
    if (typeof c === "string") {
      bad.push(`${key}: ${c}`);
      continue;
    }
    table.set(key, c);
    loaded++;
  }
  if (bad.length > 0) {
    console.error(
      `autotune: ${path}: ignoring ${bad.length} invalid entr${bad.length > 1 ? "ies" : "y"} ` +
        `(first: ${bad[0]})`,
    );
  }
  return loaded;
}

/**
 * Writes the Gpu's table as this adapter's entries of a cache file, keeping the entries of other
 * adapters (an unusable file is replaced, after a warning). Written atomically: a temporary file,
 * then a rename. Returns the number of entries written.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { saveTuningCache } from "@modern-cnn/webgpu/kernels";
 * const n = await saveTuningCache(await getGpu(), `${await Deno.makeTempDir()}/autotune.json`);
 * ```
 */
export async function saveTuningCache(gpu: Gpu, path: string): Promise<number> {
  const old = await readCache(path);
  const file: CacheFile = old && old !== "bad"
    ? old
    : { format: FORMAT, version: VERSION, adapters: {} };
  const entries: Record<string, TunedChoice> = {};
  for (const [key, choice] of tuningTable(gpu).entries()) entries[key] = choice;
  const n = Object.keys(entries).length;
  file.adapters[adapterKey(gpu)] = { updated: new Date().toISOString(), entries };
  // One line per tile: [a, b] instead of three.
  const text = JSON.stringify(file, null, 1).replace(/\[\s+(\d+),\s+(\d+)\s+\]/g, "[$1, $2]");
  await writeFileAtomic(path, new TextEncoder().encode(text + "\n"));
  return n;
}
