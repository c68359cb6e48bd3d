// Command lines of the bench scripts run with `deno run` (train_table.ts, tfjs_compare.ts).
import { UsageError } from "../cli/_run.ts";
import { nearest } from "../cli/common.ts";

/** Command-line handling of one bench script. */
export interface BenchCli {
  /** Throws a {@linkcode UsageError} with `message` (reported with exit code 2). */
  usage(message: string): never;
  /**
   * Walks `args`, calling the handler of each flag with `value()`, which takes the flag's value
   * (`--flag=VALUE` or the next argument; none is a usage error). Flags
   * without a handler are usage errors; `--help`/`-h` prints the usage line and exits 0.
   */
  parse(args: readonly string[], handlers: Record<string, (value: () => string) => void>): void;
  /** `v`, the value of `flag`, as a positive integer; else a usage error. */
  positiveInt(flag: string, v: string): number;
}

/**
 * The command-line handling of a bench script whose usage is `usageLine` (it names the task,
 * e.g. `usage: deno task bench:train [flags]`).
 *
 * @example
 * ```ts
 * const cli = benchCli("usage: deno task bench:mine [--steps N]");
 * const out = { steps: 10 };
 * cli.parse(["--steps=3"], { "--steps": (value) => out.steps = cli.positiveInt("--steps", value()) });
 * ```
 */
export function benchCli(usageLine: string): BenchCli {
  function usage(message: string): never {
    throw new UsageError(message);
  }
  return {
    usage,
    parse(args, handlers) {
      for (let i = 0; i < args.length; i++) {
        const [flag, inline] = args[i].split(/=(.*)/s, 2);
        const value = () => {
          const v = inline ?? args[++i];
          if (v === undefined) usage(`${flag} needs a value`);
          return v;
        };
        if (flag === "--help" || flag === "-h") {
          console.log(usageLine);
          Deno.exit(0);
        }
        if (!Object.hasOwn(handlers, flag)) {
          const near = flag.startsWith("-") ? nearest(flag, Object.keys(handlers)) : null;
          usage(
            flag.startsWith("-")
              ? `unknown flag ${flag}${near ? `; did you mean ${near}?` : ""}`
              : `unexpected argument '${args[i]}'`,
          );
        }
        handlers[flag](value);
      }
    },
    positiveInt(flag, v) {
      const n = /^\d+$/.test(v) ? Number(v) : NaN;
      if (!Number.isSafeInteger(n) || n < 1) usage(`${flag} needs a positive integer, got '${v}'`);
      return n;
    },
  };
}
