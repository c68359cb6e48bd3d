/**
 * A small autotuner for kernel variants, with its choices kept per adapter.
 *
 * `gemmStrided` (behind `gemm`, linear and conv2d) picks a kernel family, a register tile, a
 * transposed ("swapped") product and split-K by a cost model fitted on llvmpipe, and conv2d picks
 * direct kernels or im2col + GEMM per pass by another. Both first consult the
 * {@linkcode TuningTable} of their Gpu when the caller forced nothing, so that measured choices
 * replace the model's where they are faster.
 *
 * {@linkcode autotune} runs one real training step with the recording on (`problems.ts`: every
 * GEMM records its problem through `gemmStrided`'s hook, every conv2d call reports the plan it
 * ran to an observer), then times the candidates of each problem on fresh tensors of the right
 * sizes (`timing.ts`): for GEMMs (`gemm.ts`) the cost model's pick, the other orientation, the
 * neighbouring register tiles, other split counts and the shared-memory family; for conv2d
 * passes (`conv2d.ts`) the plans `conv2dChoices` lists: im2col, and where the direct kernels can
 * run, the direct kernel with its default blocking and, where it differs, the plain one (no
 * output-channel groups). A candidate replaces the cost model's choice only when it is at least
 * `threshold` (5%) faster, confirmed by a second, interleaved timing of both.
 *
 * The table (`table.ts`) lives in memory (so it works in a browser too);
 * {@linkcode saveTuningCache} and {@linkcode loadTuningCache} (`cache.ts`) keep it in a JSON file
 * keyed by adapter (Deno; `deno task tune` writes it, `deno task train` and `deno task
 * bench:train` read it).
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

import type { Gpu } from "../../gpu/mod.ts";
import { recordOf, recordProblems, type TuningProblem } from "./problems.ts";
import { tuneConv } from "./conv2d.ts";
import { tuneGemm } from "./gemm.ts";
import { dropStepTapes, tuningState, type TuningTable } from "./table.ts";
import {
  fmtMs,
  type Internal,
  skipped,
  syncOverhead,
  type Timing,
  type TuneResult,
} from "./timing.ts";

export { adapterKey, defaultTuningCachePath, loadTuningCache, saveTuningCache } from "./cache.ts";
export { formatChoice, recordProblems, type TuningProblem } from "./problems.ts";
export { type TunedChoice, TuningTable } from "./table.ts";
export type { TuneResult } from "./timing.ts";

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
      const r = recordOf(p);
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
    // Kept step tapes replay the kernels planned before: the next steps plan with the table.
    dropStepTapes(gpu);
  }
}
