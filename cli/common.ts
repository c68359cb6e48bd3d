// Helpers shared by the commands: checkpoints on disk, usage errors, command lines.
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import type { Gpu } from "../gpu/mod.ts";
import { makeSynthetic, writeFileAtomic } from "../data/mod.ts";
import {
  buildArchitecture,
  checkInputSize,
  createModel,
  decodeSafetensors,
  DEFAULTS,
  encodeSafetensors,
  type GpuImageSet,
  type HostStateDict,
  type Model,
  MODEL_NAMES,
  type ModelName,
  type Precision,
  Trainer,
  uploadImageSet,
} from "../models/mod.ts";

/** A bad command line: one line for the user, exit code 2. */
export class UsageError extends Error {}

/** Reads and decodes a safetensors file; errors name the file. */
export async function readCheckpoint(
  path: string,
): Promise<{ tensors: HostStateDict; metadata: Record<string, string> }> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (err) {
    throw new Error(`cannot read checkpoint ${path}: ${(err as Error).message}`);
  }
  return decodeSafetensors(bytes, { file: path });
}

/** Where the optimizer state of a checkpoint lives. */
export function optimizerPath(path: string): string {
  return path.replace(/(\.safetensors)?$/, "-optimizer.safetensors");
}

/**
 * Writes the model's state dict (the reference's names) to `path` atomically, and its SGD
 * momentum buffers, when there are any, to `optimizerPath(path)`.
 */
export async function saveCheckpoint(
  model: Model,
  path: string,
  meta: Record<string, string>,
): Promise<void> {
  await writeFileAtomic(path, encodeSafetensors(await model.stateDict(), meta));
  const momentum: HostStateDict = new Map();
  for (const [name, p] of model.params) {
    if (p.momentum) {
      const data = await p.momentum.toArray() as Float32Array;
      momentum.set(name, { dtype: "F32", shape: [...p.shape], data });
    }
  }
  if (momentum.size > 0) {
    await writeFileAtomic(optimizerPath(path), encodeSafetensors(momentum, meta));
  }
}

/** Prints a usage error and returns exit code 2. */
export function usageExit(command: string, err: unknown): number {
  console.error(`${command}: ${(err as Error).message} (see --help)`);
  return 2;
}

/**
 * Runs a command's parser: prints `help` when it asks for it (exit code 0), or a
 * {@linkcode UsageError} as {@linkcode usageExit} does (exit code 2), and returns that exit code;
 * else returns the parsed command line. Other errors propagate.
 */
export function parseOrExit<T extends object>(
  command: string,
  help: string,
  parse: () => T | "help",
): T | number {
  try {
    const parsed = parse();
    if (parsed !== "help") return parsed;
    console.log(help);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) return usageExit(command, err);
    throw err;
  }
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

/**
 * Parses a command line of one model name and the flags `options` (strictly, with `--help`/`-h`
 * added): "help" when asked for, else the model and the flags' values. Throws
 * {@linkcode UsageError} for unknown flags, missing values, and a missing, extra or unknown model.
 */
export function parseModelCommand<O extends ParseArgsOptionsConfig>(
  argv: string[],
  options: O,
): { model: ModelName; values: ModelCommandValues<O> } | "help" {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: { ...options, help: { type: "boolean", short: "h" } },
    });
  } catch (err) {
    throw new UsageError((err as Error).message.split("\n")[0]);
  }
  if ((parsed.values as { help?: boolean }).help) return "help";
  if (parsed.positionals.length !== 1) {
    throw new UsageError(
      parsed.positionals.length === 0
        ? `no model given; choose one of: ${MODEL_NAMES.join(", ")}`
        : `one model expected, got: ${parsed.positionals.join(" ")}`,
    );
  }
  const model = parsed.positionals[0] as ModelName;
  if (!MODEL_NAMES.includes(model)) {
    throw new UsageError(`unknown model '${model}'; choose one of: ${MODEL_NAMES.join(", ")}`);
  }
  return { model, values: parsed.values as ModelCommandValues<O> };
}

/** Checks `--resize` against the model's layers; throws {@linkcode UsageError} naming the flag. */
export function checkResizeFlag(model: ModelName, resize: number): void {
  try {
    checkInputSize(buildArchitecture(model), resize);
  } catch (err) {
    throw new UsageError(`--resize ${resize}: ${(err as Error).message}`);
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
  options: { batch: number; resize: number; steps: number; fuse?: boolean; precision?: Precision },
): TrainRun {
  const { batch, resize, steps } = options;
  const model = createModel(gpu, { name });
  const trainer = new Trainer(model, {
    lr: DEFAULTS[name].lr,
    batchSize: batch,
    resize,
    fuse: options.fuse,
    precision: options.precision,
  });
  const data = makeSynthetic({ count: batch * steps, channels: 1, height: 28, seed: 1 });
  return { trainer, set: uploadImageSet(gpu, data), batch, steps };
}
