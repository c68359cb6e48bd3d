// Command lines of the bench scripts run with `deno run` (train_table.ts, tfjs_compare.ts).

/** Command-line handling of one bench script. */
export interface BenchCli {
  /** Prints `script: message` and the usage line to stderr; exits with code 2. */
  usage(message: string): never;
  /**
   * Walks `args`, calling the handler of each flag with `value()`, which takes the flag's value
   * (`--flag=VALUE` or the next argument; none is a usage error). `--help`/`-h` and flags
   * without a handler are usage errors.
   */
  parse(args: readonly string[], handlers: Record<string, (value: () => string) => void>): void;
  /** `v`, the value of `flag`, as a positive integer; else a usage error. */
  positiveInt(flag: string, v: string): number;
}

/**
 * The command-line handling of bench script `script` (the name its errors start with) whose
 * usage is `usageLine`.
 *
 * @example
 * ```ts
 * const cli = benchCli("my_bench", "usage: deno run -A bench/my_bench.ts [--steps N]");
 * const out = { steps: 10 };
 * cli.parse(["--steps=3"], { "--steps": (value) => out.steps = cli.positiveInt("--steps", value()) });
 * ```
 */
export function benchCli(script: string, usageLine: string): BenchCli {
  function usage(message: string): never {
    console.error(`${script}: ${message}`);
    console.error(usageLine);
    Deno.exit(2);
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
        if (flag === "--help" || flag === "-h") usage("help");
        if (!Object.hasOwn(handlers, flag)) usage(`unknown argument '${args[i]}'`);
        handlers[flag](value);
      }
    },
    positiveInt(flag, v) {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) usage(`${flag} needs a positive integer, got '${v}'`);
      return n;
    },
  };
}
