// Helpers shared by the commands: command lines, batches and runs of the benchmarks.
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import type { Gpu } from "../gpu/mod.ts";
import { makeSynthetic } from "../data/mod.ts";
import { UsageError } from "./_run.ts";
import {
  buildArchitecture,
  createModel,
  DEFAULTS,
  type GpuImageSet,
  MODEL_NAMES,
  type ModelName,
  type Precision,
  summarize,
  Trainer,
  uploadImageSet,
} from "../models/mod.ts";
import { checkInputSize } from "../models/zoo.ts";

/**
 * Runs a command's parser: prints `help` when it asks for it and returns exit code 0; else
 * returns the parsed command line. Errors ({@linkcode UsageError} for a bad command line)
 * propagate to the command's top-level handler (`runCommand`).
 */
export function parseOrExit<T extends object>(help: string, parse: () => T | "help"): T | number {
  const parsed = parse();
  if (parsed !== "help") return parsed;
  console.log(help);
  return 0;
}

/** The values `node:util`'s strict `parseArgs` gives for `options` plus `--help`/`-h`. */
export type ModelCommandValues<O extends ParseArgsOptionsConfig> = ReturnType<
  typeof parseArgs<{
    args: string[];
    allowPositionals: true;
    strict: true;
    options: O & { help: { type: "boolean"; short: "h" } };
  }>
>["values"];

/** Edit distance of two short words (insertions, deletions, substitutions). */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length];
}

/**
 * The candidate nearest to a mistyped `word` (`--epoch` → `--epochs`, `lenett` → `lenet`), or
 * null when none is close (at most a third of the word's letters differ).
 */
export function nearest(word: string, candidates: readonly string[]): string | null {
  let best: string | null = null;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = distance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) [best, bestD] = [c, d];
  }
  return bestD <= Math.max(1, Math.floor(word.length / 3)) ? best : null;
}

/** `; did you mean X?` for a mistyped word, or nothing. */
function didYouMean(word: string, candidates: readonly string[]): string {
  const n = nearest(word, candidates);
  return n ? `; did you mean ${n}?` : "";
}

/**
 * `node:util`'s strict `parseArgs` over `argv` with `--help`/`-h` added, its errors turned into
 * one-line {@linkcode UsageError}s that name the flag and suggest the nearest known one.
 */
export function parseFlags<O extends ParseArgsOptionsConfig>(
  argv: string[],
  options: O,
): { values: ModelCommandValues<O>; positionals: string[] } {
  const all = { ...options, help: { type: "boolean", short: "h" } } as const;
  try {
    const parsed = parseArgs({ args: argv, allowPositionals: true, strict: true, options: all });
    return { values: parsed.values as ModelCommandValues<O>, positionals: parsed.positionals };
  } catch (err) {
    const msg = (err as Error).message;
    const flags = Object.keys(all).map((k) => `--${k}`);
    const unknown = /Unknown option '([^']*)'/.exec(msg);
    if (unknown) {
      throw new UsageError(`unknown flag ${unknown[1]}${didYouMean(unknown[1], flags)}`);
    }
    const missing = /Option '(?:-\w, )?(--[\w-]+)[^']*' argument missing/.exec(msg);
    if (missing) throw new UsageError(`${missing[1]} needs a value`);
    const boolean = /Option '(?:-\w, )?(--[\w-]+)' does not take an argument/.exec(msg);
    if (boolean) throw new UsageError(`${boolean[1]} takes no value`);
    throw new UsageError(msg.split("\n")[0]);
  }
}

/** A model name of the zoo, or a {@linkcode UsageError} suggesting the nearest one. */
export function modelName(word: string | undefined): ModelName {
  if (word === undefined) {
    throw new UsageError(`no model given; choose one of: ${MODEL_NAMES.join(", ")}`);
  }
  if (!(MODEL_NAMES as readonly string[]).includes(word)) {
    const hint = nearest(word, MODEL_NAMES);
    throw new UsageError(
      `unknown model '${word}'; ${hint ? `did you mean ${hint}? ` : ""}choose one of: ${
        MODEL_NAMES.join(", ")
      }`,
    );
  }
  return word as ModelName;
}

/**
 * Parses a command line of one model name and the flags `options` (strictly, with `--help`/`-h`
 * added): "help" when asked for, else the model and the flags' values. Throws
 * {@linkcode UsageError} for unknown flags, missing values, and a missing, extra or unknown model.
 */
export function parseModelCommand<O extends ParseArgsOptionsConfig>(
  argv: string[],
  options: O,
): { model: ModelName; values: ModelCommandValues<O> } | "help" {
  const parsed = parseFlags(argv, options);
  if ((parsed.values as { help?: boolean }).help) return "help";
  if (parsed.positionals.length > 1) {
    throw new UsageError(`one model expected, got: ${parsed.positionals.join(" ")}`);
  }
  return { model: modelName(parsed.positionals[0]), values: parsed.values };
}

/** Checks `--resize` against the model's layers; throws {@linkcode UsageError} naming the flag. */
export function checkResizeFlag(model: ModelName, resize: number): void {
  try {
    checkInputSize(buildArchitecture(model), resize);
  } catch (err) {
    throw new UsageError(`--resize ${resize}: ${(err as Error).message}`);
  }
}

/**
 * Refuses, before any work, a batch whose activations would not fit the device (say
 * `resnet --resize 10000`): each top-level activation of one example must fit one storage
 * binding (kernels split work by example), and of the whole batch one buffer.
 */
export function checkMemory(
  gpu: Gpu,
  name: ModelName,
  run: { resize: number; batchSize: number; channels: number; precision?: Precision },
): void {
  const arch = buildArchitecture(name, { inChannels: run.channels });
  const rows = summarize(arch, run.resize).rows;
  const perExample = Math.max(
    run.channels * run.resize * run.resize,
    ...rows.map((r) => r.shape.slice(1).reduce((a, b) => a * b, 1)),
  ) * (run.precision === "f16" ? 2 : 4);
  const binding = gpu.limits.maxStorageBufferBindingSize;
  const buffer = gpu.limits.maxBufferSize;
  if (perExample > binding || perExample * run.batchSize > buffer) {
    const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
    const [what, limit] = perExample > binding
      ? [
        `one example's largest activation takes ${mib(perExample)}`,
        `binding limit ${mib(binding)}`,
      ]
      : [
        `the batch's largest activation takes ${mib(perExample * run.batchSize)}`,
        `buffer limit ${mib(buffer)}`,
      ];
    throw new UsageError(
      `--resize ${run.resize} --batch-size ${run.batchSize}: ${what}, over this device's ` +
        `${limit}; use a smaller --resize${perExample > binding ? "" : " or --batch-size"}`,
    );
  }
}

/** Forward FLOPs per example of a model at an input size (multiply-adds count 2). */
export function forwardFlops(name: ModelName, resize: number): number {
  const arch = buildArchitecture(name);
  return arch.net.flops([1, arch.inChannels, resize, resize]);
}

/**
 * Training FLOPs (about 3x the forward pass) one step may take on a CPU adapter: batches of
 * heavier models are reduced to fit (a step of ~20 GFLOP takes a few seconds on llvmpipe).
 */
const CPU_STEP_FLOPS = 2e10;

/**
 * The batch a model trains at in the benchmarks and `deno task tune`: its recipe's, or on a CPU
 * adapter the largest power of two whose step stays within the FLOP budget (at most the
 * recipe's). `reduced` tells which.
 */
export function cappedBatch(
  gpu: Gpu,
  name: ModelName,
  resize: number,
): { batch: number; reduced: boolean } {
  const recipe = DEFAULTS[name].batchSize;
  if (!gpu.isCpu) return { batch: recipe, reduced: false };
  const perExample = 3 * forwardFlops(name, resize);
  let batch = 1;
  while (batch * 2 <= recipe && batch * 2 * perExample <= CPU_STEP_FLOPS) batch *= 2;
  if (batch * 2 > recipe && recipe * perExample <= CPU_STEP_FLOPS) batch = recipe;
  return { batch, reduced: batch < recipe };
}

/** A model, its trainer and a GPU-resident synthetic data set of `steps` batches. */
export interface TrainRun {
  readonly trainer: Trainer;
  readonly set: GpuImageSet;
  readonly batch: number;
  readonly steps: number;
}

/**
 * The training steps the benchmarks time and `deno task tune` tunes: the model (seed 0), its
 * trainer at the recipe's learning rate, and a synthetic Fashion-MNIST-shaped data set of
 * `steps` batches (1 channel, 28x28, 10 classes; resized on the GPU like the real set).
 */
export function setupRun(
  gpu: Gpu,
  name: ModelName,
  options: { batch: number; resize: number; steps: number; precision?: Precision },
): TrainRun {
  const { batch, resize, steps } = options;
  const model = createModel(gpu, { name });
  const trainer = new Trainer(model, {
    lr: DEFAULTS[name].lr,
    batchSize: batch,
    resize,
    precision: options.precision,
  });
  const data = makeSynthetic({ count: batch * steps, channels: 1, height: 28, seed: 1 });
  return { trainer, set: uploadImageSet(gpu, data), batch, steps };
}
