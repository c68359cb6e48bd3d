// deno task summary <model> [--resize N] [--depth D] [--batch B]: a model's layers (blocks expanded
// to depth D), output shapes, parameters, FLOPs and memory estimates, as torchinfo's summary.
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
  return `usage: deno task summary <model> [--resize N] [--depth D (default 3)] [--batch B (default 1)]\nmodels: ${
    MODEL_NAMES.join(", ")
  }`;
}

/** Runs the command; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const parsed = parseFlags(argv, {
    resize: { type: "string" },
    depth: { type: "string" },
    batch: { type: "string" },
  });
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
  const depth = _positive(parsed.values.depth, "--depth", 3);
  const batch = _positive(parsed.values.batch, "--batch", 1);
  const text = formatSummary(summarize(buildArchitecture(name), size, { depth, batch }));
  console.log(`${name}\n${text}`);
  return await Promise.resolve(0);
}

function _positive(v: string | undefined, flag: string, fallback: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isInteger(n) || n < 1) {
    throw new UsageError(`${flag} must be an integer >= 1, got '${v}'`);
  }
  return n;
}

if (import.meta.main) await runCommand("summary", main);
