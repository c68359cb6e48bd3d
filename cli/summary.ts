// deno task summary <model> [--resize N]: the seed documents' shape walk-through of a model.
import { parseArgs } from "node:util";
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

if (import.meta.main) {
  let parsed;
  try {
    parsed = parseArgs({
      args: Deno.args,
      allowPositionals: true,
      options: { resize: { type: "string" }, help: { type: "boolean", short: "h" } },
    });
  } catch (err) {
    console.error(`summary: ${(err as Error).message}\n${usage()}`);
    Deno.exit(2);
  }
  if (parsed.values.help) {
    console.log(usage());
    Deno.exit(0);
  }
  const name = parsed.positionals[0] as ModelName;
  if (!name || !MODEL_NAMES.includes(name)) {
    console.error(`summary: ${name ? `unknown model '${name}'` : "no model given"}\n${usage()}`);
    Deno.exit(2);
  }
  const size = parsed.values.resize === undefined
    ? DEFAULTS[name].resize
    : Number(parsed.values.resize);
  try {
    console.log(`${name}`);
    console.log(formatSummary(summarize(buildArchitecture(name), size)));
  } catch (err) {
    console.error(`summary: ${(err as Error).message}`);
    Deno.exit(2);
  }
}
