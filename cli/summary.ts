// deno task summary <model> [--resize N]: the seed documents' shape walk-through of a model.
import { checkResizeFlag, modelName, parseFlags } from "./common.ts";
import { runCommand, UsageError } from "./_run.ts";
import { RECIPE_FIELDS } from "./checkpoint.ts";
import {
  buildArchitecture,
  DEFAULTS,
  formatSummary,
  MODEL_NAMES,
  summarize,
} from "../models/mod.ts";

function usage(): string {
  return `usage: deno task summary <model> [--resize N]\nmodels: ${MODEL_NAMES.join(", ")}`;
}

/** Runs the command; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const parsed = parseFlags(argv, { resize: { type: "string" } });
  if (parsed.values.help) {
    console.log(usage());
    return 0;
  }
  if (parsed.positionals.length > 1) {
    throw new UsageError(`one model expected, got: ${parsed.positionals.join(" ")}`);
  }
  const name = modelName(parsed.positionals[0]);
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
