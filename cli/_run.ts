// The one top-level error handler of every command (train, eval, predict, summary, tune, demo,
// bench:*): a user's mistake prints one line and exits 1 (2 for a bad command line); anything
// else is a bug in modern-cnn, printed as one line that says so (the stack only with `--debug`
// or MODERN_CNN_DEBUG=1), exit 70. Cleanups registered with `atExit` (locks, temporary files)
// run on every way out, SIGINT and SIGTERM included, then every GPU device is released
// (shutdownGpu) and the process exits explicitly.
import { shutdownGpu } from "../gpu/device.ts";

/** A bad command line: one line for the user, exit code 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** A known failure caused by the user's input or environment: one line, exit code 1. */
export class CliError extends Error {
  override name = "CliError";
}

/**
 * Errors of the library whose messages are written for users (they name the file, op or flag
 * and what to do): printed as they are, exit code 1.
 */
const KNOWN_ERRORS = new Set([
  "CliError",
  "NoAdapterError",
  "DeviceLostError",
  "DatasetNotFoundError",
  "DataFormatError",
  "SafetensorsError",
  "CheckpointError",
  "ImageDecodeError",
  "DivergenceError",
  "NonFiniteError",
  "LockError",
]);

/** Exit code of an unexpected error (BSD's EX_SOFTWARE). */
export const BUG_EXIT = 70;

/** A message cut to a readable length: a 10^6-dimension shape must not print 3 MB. */
export function clip(message: string, max = 600): string {
  return message.length <= max
    ? message
    : `${message.slice(0, max - 30)}… (${message.length} chars)`;
}

const cleanups: (() => void | Promise<void>)[] = [];

/** Registers a cleanup that runs once when the command ends, however it ends. */
export function atExit(fn: () => void | Promise<void>): void {
  cleanups.push(fn);
}

async function runCleanups(): Promise<void> {
  for (const fn of cleanups.splice(0).reverse()) {
    try {
      await fn();
    } catch { /* a cleanup must not hide the command's own result */ }
  }
  // Every device released (its work waited for) before the process exits, not during teardown.
  await shutdownGpu().catch(() => {});
}

/** Whether the stack of unexpected errors is printed (`--debug` or MODERN_CNN_DEBUG=1). */
function debugWanted(argv: string[]): boolean {
  return argv.includes("--debug") || Deno.env.get("MODERN_CNN_DEBUG") === "1";
}

/**
 * The exit code for an error, after printing it as the user should see it: `command: message`
 * on one line (two for a bug: the message, then where to report it).
 */
export function reportError(command: string, err: unknown, debug = false): number {
  const e = err instanceof Error ? err : new Error(String(err));
  if (e instanceof UsageError) {
    console.error(`${command}: ${clip(e.message)} (see --help)`);
    return 2;
  }
  if (KNOWN_ERRORS.has(e.name)) {
    console.error(`${command}: ${clip(e.message)}`);
    return 1;
  }
  const first = clip(e.message.split("\n")[0] || e.name);
  console.error(
    `${command}: unexpected ${e.name}: ${first}\n${command}: this is a bug in modern-cnn; ` +
      (debug
        ? "please report it with the stack below"
        : "please report it (rerun with --debug or MODERN_CNN_DEBUG=1 for the stack)"),
  );
  if (debug && e.stack) console.error(e.stack);
  return BUG_EXIT;
}

/**
 * Runs a command's `main` as the process: strips `--debug`, reports errors with
 * {@linkcode reportError}, runs the cleanups, then exits with the command's code. SIGINT and
 * SIGTERM run the cleanups and exit 130 / 143, unless `signals` is false (the command handles
 * them itself).
 */
export async function runCommand(
  command: string,
  main: (argv: string[]) => Promise<number>,
  options: { argv?: string[]; signals?: boolean } = {},
): Promise<never> {
  const argv = options.argv ?? Deno.args;
  const debug = debugWanted(argv);
  let exiting = false;
  const finish = async (code: number): Promise<never> => {
    exiting = true;
    await runCleanups();
    Deno.exit(code);
  };
  const onSignal = (code: number) => () => {
    if (exiting) Deno.exit(code);
    console.error(`${command}: interrupted`);
    finish(code);
  };
  const signals = options.signals === false ? [] : [["SIGINT", 130], ["SIGTERM", 143]] as const;
  for (const [sig, code] of signals) {
    try {
      Deno.addSignalListener(sig, onSignal(code));
    } catch { /* not on this platform */ }
  }
  globalThis.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    finish(reportError(command, e.reason, debug));
  });
  let code: number;
  try {
    // Fault injection for the CLI fault suite (tests only): an error no command expects.
    if (Deno.env.get("MODERN_CNN_TEST_FAULT") === "unexpected") {
      throw new TypeError("an injected fault (MODERN_CNN_TEST_FAULT)");
    }
    code = await main(argv.filter((a) => a !== "--debug"));
  } catch (err) {
    code = reportError(command, err, debug);
  }
  return await finish(code);
}

/**
 * For scripts whose body runs at the top level (the bench scripts): errors that escape it are
 * reported as {@linkcode runCommand} reports them, the cleanups run, and the process exits.
 */
export function guardScript(command: string, argv: string[] = Deno.args): void {
  const debug = debugWanted(argv);
  const fail = async (err: unknown) => {
    const code = reportError(command, err, debug);
    await runCleanups();
    Deno.exit(code);
  };
  globalThis.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    fail(e.reason);
  });
  globalThis.addEventListener("error", (e) => {
    e.preventDefault();
    fail((e as ErrorEvent).error);
  });
}
