// deno task tune <model> [flags]: measures kernel variants on this adapter for one model's
// training step and caches the faster choices (see kernels/autotune/). `deno task train` and
// `deno task bench:train` load the cache.
import { getGpu } from "../gpu/mod.ts";
import {
  autotune,
  defaultTuningCachePath,
  loadTuningCache,
  saveTuningCache,
  type TuneResult,
} from "../kernels/mod.ts";
import { adapterKey } from "../kernels/autotune/index.ts";
import { DEFAULTS, MODEL_NAMES, type ModelName } from "../models/mod.ts";
import {
  cappedBatch,
  checkResizeFlag,
  parseModelCommand,
  parseOrExit,
  setupRun,
} from "./common.ts";
import { runCommand, UsageError } from "./_run.ts";
import { checkOutputFile, lockOutput } from "./_outputs.ts";
import { decimal } from "./checkpoint.ts";

export const HELP = `usage: deno task tune <model> [flags]

Times kernel variants (GEMM tiles, swap, split-K, shared memory; im2col or the direct conv2d
kernel, with and without output-channel groups) on the problems of one training step of <model> on this adapter, and caches the choices that are at
least 5% faster than the cost model's in a JSON file keyed by adapter.

models: ${MODEL_NAMES.join(", ")}

flags:
  --batch N       batch size (default: the recipe's, reduced on CPU adapters as bench:train does)
  --resize N      input size (default: the recipe's)
  --budget S      most seconds to spend tuning (default 300)
  --cache FILE    the cache file (default ${defaultTuningCachePath()},
                  from MODERN_CNN_CACHE_DIR when set)
  -h, --help      this text`;

/** The parsed command line. */
export interface TuneArgs {
  model: ModelName;
  batch?: number;
  resize?: number;
  budget: number;
  cache: string;
}

function positive(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = decimal(v) ?? NaN;
  if (!(n > 0) || (name !== "budget" && !Number.isInteger(n))) {
    throw new UsageError(
      `--${name} must be ${name === "budget" ? "a number" : "an integer"} > 0, got '${v}'`,
    );
  }
  return n;
}

/** Parses and validates the command line; throws {@linkcode UsageError}. */
export function parseTuneArgs(argv: string[]): TuneArgs | "help" {
  const parsed = parseModelCommand(argv, {
    "batch": { type: "string" },
    "resize": { type: "string" },
    "budget": { type: "string" },
    "cache": { type: "string" },
  });
  if (parsed === "help") return "help";
  const { model, values: v } = parsed;
  const args: TuneArgs = {
    model,
    batch: positive("batch", v.batch),
    resize: positive("resize", v.resize),
    budget: positive("budget", v.budget) ?? 300,
    cache: v.cache ?? defaultTuningCachePath(),
  };
  if (args.resize !== undefined) checkResizeFlag(model, args.resize);
  return args;
}

/** The results as a markdown table. */
export function resultTable(results: readonly TuneResult[]): string[] {
  const ms = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : "-");
  const lines = [
    "| problem | calls | cost model | ms | tuned | ms | speedup |",
    "| --- | ---: | --- | ---: | --- | ---: | ---: |",
  ];
  for (const r of results) {
    const speedup = r.changed ? `${r.speedup.toFixed(2)}x` : r.note ? `kept (${r.note})` : "kept";
    lines.push(
      `| ${r.problem.label} | ${r.problem.count} | ${r.costModel} | ${ms(r.costModelMs)} | ` +
        `${r.tuned} | ${ms(r.tunedMs)} | ${speedup} |`,
    );
  }
  return lines;
}

/** Runs the command; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const args = parseOrExit(HELP, () => parseTuneArgs(argv));
  if (typeof args === "number") return args;
  // The cache must be writable before minutes of tuning, and one run at a time writes it.
  const flag = args.cache === defaultTuningCachePath() ? "the tuning cache" : "--cache";
  await checkOutputFile(flag, args.cache);
  await lockOutput(flag, args.cache);
  const gpu = await getGpu();
  const resize = args.resize ?? DEFAULTS[args.model].resize;
  const batch = args.batch ?? cappedBatch(gpu, args.model, resize).batch;
  const loaded = await loadTuningCache(gpu, args.cache);
  if (loaded !== null) {
    console.error(`autotune: loaded ${loaded} tuned entries from ${args.cache}`);
  }
  // One step of the runs bench:train times (synthetic data: only the shapes matter).
  const { trainer, set } = setupRun(gpu, args.model, { batch, resize, steps: 1 });
  console.error(
    `tuning ${args.model} (batch ${batch}, ${resize}x${resize}) on ${adapterKey(gpu)}, ` +
      `budget ${args.budget} s`,
  );
  const t0 = performance.now();
  const results = await autotune(
    gpu,
    () => trainer.trainEpoch(set, { epoch: 0, shuffle: false }),
    { budgetSeconds: args.budget, log: (line) => console.error(line) },
  );
  const seconds = (performance.now() - t0) / 1000;
  const saved = await saveTuningCache(gpu, args.cache);
  trainer.model.dispose();
  set.images.dispose();
  set.labels.dispose();
  console.log(`${args.model}, batch ${batch}, ${resize}x${resize}, ${adapterKey(gpu)}\n`);
  for (const line of resultTable(results)) console.log(line);
  const changed = results.filter((r) => r.changed).length;
  console.log(
    `\n${changed} of ${results.length} problems tuned in ${seconds.toFixed(0)} s; ` +
      `${saved} entries for this adapter saved to ${args.cache}`,
  );
  return 0;
}

if (import.meta.main) await runCommand("tune", main);
