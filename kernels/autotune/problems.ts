/**
 * The problems a run computes, as the autotuner records them ({@linkcode recordProblems}):
 * `gemmStrided`'s through its recording hook, conv2d's passes through the observer of the conv2d
 * runner (each call reports the plan it ran). Also how tuned choices read
 * ({@linkcode formatChoice}).
 *
 * @module
 */

import type { Gpu } from "../../gpu/mod.ts";
import { observeConv2d } from "../conv2d/index.ts";
import {
  convKey,
  dropStepTapes,
  type GemmShape,
  type Recorded,
  type TunedChoice,
  tuningState,
} from "./table.ts";

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
 * What {@linkcode recordProblems} recorded of a problem (to rebuild it on fresh tensors).
 *
 * @throws {TypeError} for a problem {@linkcode recordProblems} did not make.
 */
export function recordOf(p: TuningProblem): Recorded {
  const r = records.get(p);
  if (!r) throw new TypeError(`tuneProblems: '${p.key}' was not made by recordProblems`);
  return r;
}

/** The passes of a conv2d plan, in the order the tuner records them. */
const PASSES = ["forward", "weightGrad", "inputGrad"] as const;

/**
 * Runs `run` with the recording hook on and returns the distinct problems its GEMMs and conv2d
 * passes computed (only those whose caller forced nothing: the ones the table can steer). The
 * table is consulted as usual meanwhile. Kept step tapes are dropped first, so that a training
 * step that would be replayed is recorded for real.
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
  dropStepTapes(gpu);
  const rec = new Map<string, Recorded>();
  s.recorder = rec;
  // conv2d calls whose caller forced no path: each pass they plan.
  const stop = observeConv2d(gpu, ({ problem, plan }) => {
    if (problem.options?.direct !== undefined) return;
    for (const pass of PASSES) {
      if (plan[pass] === undefined) continue;
      const key = convKey(problem.geometry, pass);
      const seen = rec.get(key);
      if (seen) seen.count++;
      else rec.set(key, { op: "conv2d", key, count: 1, pass, g: problem.geometry });
    }
  });
  try {
    await run();
  } finally {
    s.recorder = null;
    stop();
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
 * `direct grouped` / `direct plain` (the direct kernel's blocking with or without output-channel
 * groups, where they differ), `im2col`.
 *
 * @example
 * ```ts
 * import { formatChoice } from "@modern-cnn/webgpu/kernels";
 * formatChoice({ op: "gemm", tuning: { variant: "register", tile: [8, 16], swap: true, splitK: 1 } }); // "reg 8x16 swap"
 * ```
 */
export function formatChoice(choice: TunedChoice): string {
  if (choice.op === "conv2d") {
    if (!choice.direct) return "im2col";
    return choice.groups === undefined
      ? "direct"
      : choice.groups
      ? "direct grouped"
      : "direct plain";
  }
  const t = choice.tuning;
  const split = (t.splitK ?? 1) > 1 ? ` split${t.splitK}` : "";
  if (t.variant === "shared") return `shared${split}`;
  const tile = t.tile ? ` ${t.tile[0]}x${t.tile[1]}` : "";
  return `reg${tile}${t.swap ? " swap" : ""}${split}`;
}
