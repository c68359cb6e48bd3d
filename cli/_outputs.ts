// The files a command writes: checked before any work starts (a folder is created, a probe file
// written and removed), guarded by a lock against a second run writing the same file, and
// cleared of the temporary files a killed atomic write left behind.
import { basename, dirname, join, resolve } from "node:path";
import { atExit, CliError, UsageError } from "./_run.ts";

/**
 * Checks that `path` (given by `flag`) can be written: not a folder, its folder exists or can be
 * created, and a file can be created there. Throws {@linkcode UsageError} naming the flag, the
 * path and what is wrong, before any work starts.
 */
export async function checkOutputFile(flag: string, path: string): Promise<void> {
  const full = resolve(path);
  const dir = dirname(full);
  const stat = await Deno.stat(full).catch(() => null);
  if (stat?.isDirectory) {
    throw new UsageError(`${flag} ${path} is a folder; give a file path in it`);
  }
  try {
    await Deno.mkdir(dir, { recursive: true });
  } catch (err) {
    const parentFile = await firstFileAbove(dir);
    throw new UsageError(
      parentFile
        ? `${flag} ${path}: ${parentFile} is a file, not a folder`
        : `${flag} ${path}: cannot create the folder ${dir} (${reason(err)})`,
    );
  }
  const probe = join(dir, `.${basename(full)}.probe-${Deno.pid}`);
  try {
    await Deno.writeFile(probe, new Uint8Array(1), { createNew: true });
    await Deno.remove(probe);
  } catch (err) {
    await Deno.remove(probe).catch(() => {});
    throw new UsageError(`${flag} ${path}: cannot write in ${dir} (${reason(err)})`);
  }
}

/** The error's reason without Deno's "…: os error N" tail and the path it repeats. */
function reason(err: unknown): string {
  const e = err as Error;
  const kind = e.name && e.name !== "Error" ? e.name : "";
  const map: Record<string, string> = {
    PermissionDenied: "permission denied",
    NotFound: "no such folder",
    AlreadyExists: "a file of that name exists",
    NotADirectory: "not a folder",
    ReadOnlyFileSystem: "read-only file system",
  };
  return map[kind] ?? e.message.split(":")[0];
}

/** The nearest existing path above (or at) `dir` that is a regular file, if any. */
async function firstFileAbove(dir: string): Promise<string | null> {
  for (let d = dir; d !== dirname(d); d = dirname(d)) {
    const s = await Deno.stat(d).catch(() => null);
    if (s) return s.isFile ? d : null;
  }
  return null;
}

/** A lock on an output file held by another live run. */
export class LockError extends Error {
  override name = "LockError";
}

/** Whether process `pid` of this machine is alive (Linux: /proc; elsewhere assumed alive). */
function processAlive(pid: number): boolean {
  try {
    Deno.statSync("/proc/self");
  } catch {
    return true; // no /proc: cannot tell, so never break a lock
  }
  try {
    const cmd = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
    return cmd.length > 0;
  } catch {
    return false;
  }
}

/**
 * Takes the lock of an output file (`PATH.lock`, created exclusively, holding this process's pid
 * and host), removed when the command ends. A lock left by a dead process of this host is stale
 * and taken over; a live one refuses with {@linkcode LockError}.
 */
export async function lockOutput(flag: string, path: string): Promise<void> {
  const lock = `${resolve(path)}.lock`;
  const host = Deno.hostname();
  const mine = JSON.stringify({ pid: Deno.pid, host, started: new Date().toISOString() });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await Deno.writeTextFile(lock, mine, { createNew: true });
      atExit(() => Deno.removeSync(lock));
      return;
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) {
        throw new UsageError(`${flag} ${path}: cannot create the lock ${lock} (${reason(err)})`);
      }
    }
    let owner: { pid?: number; host?: string; started?: string } = {};
    try {
      owner = JSON.parse(await Deno.readTextFile(lock));
    } catch { /* unreadable or half written: treated as held by an unknown process */ }
    const stale = owner.host === host && typeof owner.pid === "number" && owner.pid !== Deno.pid &&
      !processAlive(owner.pid);
    if (!stale) {
      const who = owner.pid ? `pid ${owner.pid} on ${owner.host}, since ${owner.started}` : "?";
      throw new LockError(
        `${flag} ${path} is being written by another run (${who}); wait for it or choose ` +
          `another path (if no such run is alive, delete ${lock})`,
      );
    }
    await Deno.remove(lock).catch(() => {});
  }
  throw new LockError(`${flag} ${path}: could not take the lock ${lock}`);
}

/**
 * Removes the temporary files (`NAME.tmp-PID-*`, see `writeFileAtomic`) that a killed write of
 * `path` left beside it, where their process is gone.
 */
export async function removeStaleTemps(path: string): Promise<void> {
  const full = resolve(path);
  const dir = dirname(full);
  const name = basename(full);
  const re = new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\.tmp-(\\d+)-[a-z0-9]+$`);
  try {
    for await (const e of Deno.readDir(dir)) {
      const m = re.exec(e.name);
      if (m && e.isFile && Number(m[1]) !== Deno.pid && !processAlive(Number(m[1]))) {
        await Deno.remove(join(dir, e.name)).catch(() => {});
      }
    }
  } catch { /* an unreadable folder: the write itself will say so */ }
}

/** A failure to write an output file that was checked before: one line naming it. */
export function writeFailed(flag: string, path: string, err: unknown): CliError {
  return new CliError(`${flag} ${path}: writing failed (${reason(err)})`);
}

/**
 * Fault injection for the CLI fault suite (tests only): when MODERN_CNN_TEST_KILL_AT names
 * `point`, the process kills itself there with SIGKILL, as a crash or `kill -9` would.
 */
export function _killPoint(point: string): void {
  if (Deno.env.get("MODERN_CNN_TEST_KILL_AT") === point) Deno.kill(Deno.pid, "SIGKILL");
}
