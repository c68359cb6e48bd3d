// Helpers of the subprocess tests of the commands (cli_test.ts, cli_faults_*_test.ts): run a command
// as users do, check how it failed, and fingerprint the files a failure must leave alone.
import assert from "node:assert/strict";
import { join } from "node:path";

/** The repository root. */
export const ROOT = new URL("..", import.meta.url).pathname;

/** What a command did. */
export interface RunResult {
  /** Exit code (128 + N when killed by signal N). */
  code: number;
  /** The signal that killed it, if one did. */
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
  /** Wall time, milliseconds. */
  ms: number;
}

/** A command started with {@linkcode start}. */
export interface Started {
  readonly pid: number;
  /** Sends a signal. */
  kill(signal: Deno.Signal): void;
  /** What it did, once it ends. */
  readonly done: Promise<RunResult>;
}

/**
 * Starts `script` with `deno run -A`: a bare name is a file of `cli/` (`"train.ts"`), a path with
 * a slash is relative to the repository root (`"bench/train_table.ts"`). `env` is added to this
 * process's environment.
 */
export function start(script: string, args: string[], env: Record<string, string> = {}): Started {
  const t0 = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, script.includes("/") ? script : join("cli", script)), ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1", XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp", ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const dec = new TextDecoder();
  return {
    pid: child.pid,
    kill: (signal) => child.kill(signal),
    done: child.output().then((out) => ({
      code: out.code,
      signal: out.signal,
      stdout: dec.decode(out.stdout),
      stderr: dec.decode(out.stderr),
      ms: performance.now() - t0,
    })),
  };
}

/** Runs `script` (see {@linkcode start}) to its end. */
export function run(
  script: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<RunResult> {
  return start(script, args, env).done;
}

/** Waits until `path` exists (at most `seconds`); whether it does. */
export async function waitFor(path: string, seconds = 60): Promise<boolean> {
  const t0 = Date.now();
  while (Date.now() - t0 < seconds * 1000) {
    if (await Deno.stat(path).then(() => true, () => false)) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

/** The non-empty lines of a text. */
export function lines(text: string): string[] {
  return text.split("\n").filter((l) => l.trim() !== "");
}

/** A run's output, for assertion messages. */
export function shown(r: RunResult): string {
  return `exit ${r.code}${r.signal ? ` (${r.signal})` : ""} after ${(r.ms / 1000).toFixed(1)} s\n` +
    `--- stderr:\n${r.stderr}--- stdout:\n${r.stdout}---`;
}

/** A line of results: an epoch, a JSON epoch, accuracies, throughput, a prediction. */
export const RESULT_LINE =
  /^epoch \d+:|"epoch":|test acc|examples\/sec|^\S+\.png: \S+ [\d.]+|confusion matrix/m;

/** What a failed run must show. */
export interface Failure {
  /** Exit code. */
  code: number;
  /** The command's name, which starts its error line (`train`, `eval`, `bench:train`...). */
  command: string;
  /** What the error line(s) must say. */
  stderr: RegExp;
  /** How many lines stderr has (default 1: the error line). */
  lines?: number;
  /** Most wall time, seconds. */
  maxSeconds?: number;
}

/**
 * Asserts that a run failed as `f` says: its exit code, the error on stderr (its last line starts
 * with `command: `), the line count, no stack trace or "Uncaught", and no result line on stdout.
 */
export function assertFailed(name: string, r: RunResult, f: Failure): void {
  const where = `${name}\n${shown(r)}`;
  assert.equal(r.code, f.code, `${where}\nexpected exit ${f.code}`);
  assert.match(r.stderr, f.stderr, where);
  const ls = lines(r.stderr);
  assert.equal(ls.length, f.lines ?? 1, `${where}\nexpected ${f.lines ?? 1} line(s) on stderr`);
  const first = ls.findIndex((l) => l.startsWith(`${f.command}: `));
  assert.ok(first >= 0, `${where}\nno line starts with '${f.command}: '`);
  assertNoStack(where, r);
  assert.doesNotMatch(r.stdout, RESULT_LINE, `${where}\na result line on stdout`);
  if (f.maxSeconds !== undefined) {
    assert.ok(r.ms < f.maxSeconds * 1000, `${where}\nexpected under ${f.maxSeconds} s`);
  }
}

/** Asserts no stack trace and no "Uncaught" in a run's output. */
export function assertNoStack(where: string, r: RunResult): void {
  for (const text of [r.stderr, r.stdout]) {
    assert.doesNotMatch(text, /^\s+at /m, `${where}\na stack trace`);
    assert.doesNotMatch(text, /Uncaught/, `${where}\n"Uncaught"`);
  }
}

/** The SHA-256 of a file, hex. */
export async function sha256(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Every entry of a folder (recursively) with the SHA-256 of each file: two snapshots are equal
 * when nothing was written, removed or left behind (temporary files, locks).
 */
export async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (d: string, prefix: string) => {
    for await (const e of Deno.readDir(d)) {
      const rel = prefix + e.name;
      if (e.isDirectory) {
        out[`${rel}/`] = "folder";
        await walk(join(d, e.name), `${rel}/`);
      } else if (e.isFile) out[rel] = await sha256(join(d, e.name));
      else out[rel] = "link";
    }
  };
  await walk(dir, "");
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => a.localeCompare(b)));
}

/** The names in a folder, sorted. */
export async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

/**
 * Runs `fn` on every item, at most `n` at a time (each case is a subprocess or a few; the machine
 * has few cores), and fails once at the end listing every item that failed, by name.
 */
export async function pool<T extends { name: string }>(
  items: readonly T[],
  fn: (item: T) => Promise<void>,
  n = 3,
): Promise<void> {
  const queue = [...items];
  const failures: string[] = [];
  await Promise.all(Array.from({ length: Math.min(n, queue.length) }, async () => {
    for (let item = queue.shift(); item !== undefined; item = queue.shift()) {
      try {
        await fn(item);
      } catch (err) {
        failures.push(`[${item.name}] ${(err as Error).message}`);
      }
    }
  }));
  if (failures.length) {
    throw new Error(
      `${failures.length} of ${items.length} cases failed:\n\n${failures.join("\n\n")}`,
    );
  }
}
