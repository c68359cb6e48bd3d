// Helpers shared by the commands: checkpoints on disk, usage errors.
import { writeFileAtomic } from "../data/mod.ts";
import {
  decodeSafetensors,
  encodeSafetensors,
  type HostStateDict,
  type Model,
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
