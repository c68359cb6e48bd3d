// deno task summary <model> [--resize N]: the seed documents' shape walk-through of a model.
import { parseArgs } from "node:util";
import { checkResizeFlag } from "./common.ts";
import { runCommand, UsageError } from "./_run.ts";
import { RECIPE_FIELDS } from "./checkpoint.ts";
import {
  buildArchitecture,
  DEFAULTS,
  formatSummary,
  MODEL_NAMES,
  type ModelName,
  summarize,
} from "../models/mod.ts";

function usage(): string {
  return `usage: deno task summary <model> [--resize N]\nmodels: ${MODEL_NAMES.join(", ")}`;
}

/** Runs the command; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { resize: { type: "string" }, help: { type: "boolean", short: "h" } },
    });
  } catch (err) {
    throw new UsageError((err as Error).message.split("\n")[0]);
  }
  if (parsed.values.help) {
    console.log(usage());
    return 0;
  }
  const name = parsed.positionals[0] as ModelName;
  if (parsed.positionals.length !== 1 || !MODEL_NAMES.includes(name)) {
    throw new UsageError(
      `${name ? `unknown model '${name}'` : "no model given"}; choose one of: ${
        MODEL_NAMES.join(", ")
      }`,
    );
  }
  let size = DEFAULTS[name].resize;
  if (parsed.values.resize !== undefined) {
    const f = RECIPE_FIELDS.resize;
    const r = f.parse(parsed.values.resize) as number | undefined;
    if (r === undefined) {
      throw new UsageError(`--resize must be ${f.expected}, got '${parsed.values.resize}'`);
    }
    size = r;
  }
  checkResizeFlag(name, size);
  const text = formatSummary(summarize(buildArchitecture(name), size));
  console.log(`${name}\n${text}`);
  return await Promise.resolve(0);
}

if (import.meta.main) await runCommand("summary", main);
