// `deno task bench:train --profile` (bench/train_table.ts): where a training step's device time
// goes, per kernel, from GPU timestamps (`GpuRuntime.startProfile`, gpu/profiler.ts).
//
// Per model (the bench batch and input size of the full table): one untimed step compiles the
// pipelines, then an epoch of S steps (default 3) is profiled: every dispatch in a compute pass
// of its own with a timestamp at each end. Printed per model: the step's wall time while profiled
// and the sum of its dispatches' device time, then the kernels grouped by family (a kernel
// descriptor: all its variants and storage types), then the longest specializations. Shares are
// of the summed device time. Steps are replayed as in training (the trainer's default; `--replay
// off` records each anew), so what is timed is what a training step runs.
import type { Gpu } from "../gpu/mod.ts";
import type { GpuRuntime } from "../gpu/runtime.ts";
import type { KernelTime } from "../gpu/profiler.ts";
import { DEFAULTS, type ModelName } from "../models/mod.ts";
import type { Precision } from "../models/mod.ts";
import { benchBatch, setupRun, timeSteps, type TrainRun, warmUp } from "./_train.ts";

/** What `--profile` is given. */
export interface ProfileArgs {
  readonly models: readonly ModelName[];
  readonly steps?: number;
  readonly batch?: number;
  readonly resize?: number;
  readonly precision?: Precision;
  /** `off`: every step recorded anew instead of replayed (`--replay off`). */
  readonly replay?: "on" | "off" | "both";
  readonly header: string;
  /** Specializations listed per model (the longest). */
  readonly top?: number;
}

/** Kernel times summed by family, the longest first (`minMs`: the family's shortest dispatch). */
export function byFamily(times: readonly KernelTime[]): KernelTime[] {
  const m = new Map<string, { calls: number; ms: number; minMs: number; n: number }>();
  for (const t of times) {
    const e = m.get(t.family) ?? { calls: 0, ms: 0, minMs: Infinity, n: 0 };
    e.calls += t.calls;
    e.ms += t.ms;
    e.minMs = Math.min(e.minMs, t.minMs);
    e.n++;
    m.set(t.family, e);
  }
  return [...m].map(([family, e]) => ({
    kernel: `${family} (${e.n} variant${e.n === 1 ? "" : "s"})`,
    family,
    calls: e.calls,
    ms: e.ms,
    minMs: e.minMs,
  })).sort((a, b) => b.ms - a.ms);
}

/** Markdown rows of `times` per step (`steps` steps), with shares of `total` ms. */
function rows(times: readonly KernelTime[], steps: number, total: number): string[] {
  return times.map((t) =>
    `| ${t.kernel} | ${(t.calls / steps).toFixed(0)} | ${(t.ms / steps).toFixed(1)} | ` +
    `${(100 * t.ms / total).toFixed(1)}% |`
  );
}

/** What profiling a run's steps measured. */
export interface StepProfile {
  /** Steps profiled. */
  readonly steps: number;
  /** Wall milliseconds per step while profiled. */
  readonly wallMs: number;
  /** Each kernel's dispatches and device time over the steps, the longest first. */
  readonly times: KernelTime[];
}

/** Profiles one epoch of `run`'s steps (after an untimed warm-up step). */
export async function profileSteps(gpu: Gpu, run: TrainRun): Promise<StepProfile> {
  const runtime = gpu as GpuRuntime;
  await warmUp(run);
  runtime.startProfile();
  let wallMs = NaN;
  let times: KernelTime[];
  try {
    wallMs = (await timeSteps(gpu, run, 1)).msPerStep;
  } finally {
    times = await runtime.stopProfile();
  }
  return { steps: run.steps, wallMs, times };
}

/**
 * A profile as markdown: a heading line (`title`, the device and wall ms per step), the kernel
 * families, then the `top` longest kernels.
 */
export function profileMarkdown(title: string, p: StepProfile, top = 12): string[] {
  const total = p.times.reduce((s, t) => s + t.ms, 0);
  const lines = [
    `### ${title}: ${(total / p.steps).toFixed(1)} device ms/step over ${p.steps} steps ` +
    `(wall ${p.wallMs.toFixed(1)} ms/step while profiled)`,
    "",
    "| kernel family | dispatches/step | device ms/step | share |",
    "| --- | ---: | ---: | ---: |",
    ...rows(byFamily(p.times), p.steps, total),
  ];
  if (top > 0) {
    lines.push(
      "",
      `| longest ${top} kernels | dispatches/step | device ms/step | share |`,
      "| --- | ---: | ---: | ---: |",
      ...rows(p.times.slice(0, top), p.steps, total),
    );
  }
  return lines;
}

/** Prints the `--profile` tables. */
export async function profileTable(gpu: Gpu, args: ProfileArgs): Promise<void> {
  if (!gpu.features.timestamps) {
    console.log(
      `${args.header}\n\n--profile: this adapter has no 'timestamp-query'; nothing timed.`,
    );
    return;
  }
  console.log(`${args.header}; precision ${args.precision ?? "f32"}; device time per kernel\n`);
  for (const name of args.models) {
    const resize = args.resize ?? DEFAULTS[name].resize;
    const auto = args.batch === undefined
      ? benchBatch(gpu, name, resize)
      : { batch: args.batch, reduced: false };
    const run = setupRun(gpu, name, {
      batch: auto.batch,
      resize,
      steps: args.steps ?? 3,
      precision: args.precision,
    });
    run.trainer.replay = args.replay !== "off";
    try {
      const p = await profileSteps(gpu, run);
      const title = `${name}, batch ${auto.batch}${auto.reduced ? " (reduced)" : ""}, ` +
        `${resize}x${resize}`;
      console.log(profileMarkdown(title, p, args.top ?? 12).join("\n") + "\n");
    } finally {
      run.trainer.model.dispose();
      run.set.images.dispose();
      run.set.labels.dispose();
      gpu.trimPool();
    }
    console.error(`done: ${name}`);
  }
}
