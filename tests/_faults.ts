// Shared by the CLI fault suite (tests/cli_faults_*_test.ts): the commands under faults, as users
// meet them (subprocesses): a diverging run, a kill between the two files of a checkpoint, a second
// run on the same file, outputs that cannot be written, a --data-dir that is wrong, checkpoints
// with bad metadata or malformed safetensors, data and image files that would exhaust memory, NaN
// weights, bad flags. Each case asserts the exit code, the one error line (what file or flag, what
// is wrong), no stack trace, no result line on stdout and, where work could be lost, that the
// files are byte-identical and nothing was left behind. The kill points and the unexpected error
// are injected through environment hooks of the commands that only tests set
// (MODERN_CNN_TEST_KILL_AT, MODERN_CNN_TEST_FAULT). The numbers in the files' section titles are
// the fault classes of the issue that asked for the suite.
//
// The suite by theme: cli_faults_flags_test.ts (command lines, unwritable outputs, --resize past
// the device), cli_faults_checkpoint_test.ts (checkpoints refused by name), cli_faults_runs_test.ts
// (divergence, the checkpoint and its optimizer file as one unit, --resume),
// cli_faults_locks_test.ts (two runs on one file, Ctrl-C, --plot aliasing a checkpoint) and
// cli_faults_data_test.ts (--data-dir, data and image bombs, an unexpected error).
import assert from "node:assert/strict";
import { join } from "node:path";
import { encode } from "fast-png";
import { decodeSafetensors } from "../models/mod.ts";
import {
  assertNoStack,
  run,
  type RunResult,
  sha256,
  shown,
  snapshot,
  start,
  type Started,
} from "./_cli.ts";

/** The tiny training every case uses: 2 steps of LeNet on synthetic data. */
export const SYN = ["--dataset", "synthetic", "--limit-train", "64", "--limit-test", "32"];
export const TINY = [...SYN, "--batch-size", "32", "--epochs", "1"];
/** A run long enough to act on while it trains (give --limit-train). */
export const LONG = [
  "--dataset",
  "synthetic",
  "--limit-test",
  "32",
  "--batch-size",
  "32",
  "--epochs",
  "3",
];

/**
 * A temporary folder, and the environment that keeps the commands away from this user's tuning
 * cache (no "autotune: ..." line) and $MODERN_CNN_DATA. (XDG_CACHE_HOME stays: Deno's and Mesa's
 * caches live there, and a cold one costs minutes.)
 */
export async function sandbox(): Promise<{
  dir: string;
  cli: (script: string, args: string[], env?: Record<string, string>) => Promise<RunResult>;
  start: (script: string, args: string[]) => Started;
  done: () => Promise<void>;
}> {
  const dir = await Deno.makeTempDir({ prefix: "modern-cnn-faults-" });
  const env = {
    MODERN_CNN_CACHE_DIR: join(dir, ".tune"),
    MODERN_CNN_DATA: "",
    MODERN_CNN_DEBUG: "",
  };
  await Deno.mkdir(env.MODERN_CNN_CACHE_DIR, { recursive: true });
  return {
    dir,
    cli: (script, args, extra = {}) => run(script, args, { ...env, ...extra }),
    start: (script, args) => start(script, args, env),
    done: () => Deno.remove(dir, { recursive: true }),
  };
}

/** A folder made for one case. */
export async function caseDir(root: string, name: string): Promise<string> {
  const dir = join(root, name.replace(/[^a-z0-9]+/gi, "-").replace(/^-|-$/g, ""));
  await Deno.mkdir(dir, { recursive: true });
  return dir;
}

/** Asserts that a run succeeded. */
export function assertOk(name: string, r: RunResult): void {
  assert.equal(r.code, 0, `${name}\n${shown(r)}`);
  assertNoStack(name, r);
}

/** A regex matching `text` literally. */
export function lit(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** A snapshot of a folder, or of one file (its hash). */
export async function snapshotOf(path: string): Promise<Record<string, string>> {
  const st = await Deno.stat(path);
  return st.isDirectory ? await snapshot(path) : { [path]: await sha256(path) };
}

/** The metadata of a checkpoint file. */
export async function metadataOf(path: string): Promise<Record<string, string>> {
  return decodeSafetensors(await Deno.readFile(path), { file: path }).metadata;
}

/** A valid 28x28 gray PNG. */
export function goodPng(): Uint8Array {
  const data = new Uint8Array(784).map((_, p) => (Math.floor(p / 78.4) === 3 ? 220 : 10));
  return encode({ width: 28, height: 28, data, channels: 1, depth: 8 });
}
