// Helpers shared by the commands: checkpoints on disk, usage errors.
import type { Gpu } from "../gpu/mod.ts";
import { writeFileAtomic } from "../data/mod.ts";
import {
  buildArchitecture,
  decodeSafetensors,
  DEFAULTS,
  encodeSafetensors,
  type HostStateDict,
  type Model,
  type ModelName,
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
