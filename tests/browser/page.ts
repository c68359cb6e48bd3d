// The page of `deno task test:browser` (bundled by tests/browser/run.ts): runs the shared test
// cases in the browser's WebGPU, one check at a time, and reports each to the runner through
// `__report` (a function the runner exposes to the page). The checks: every kernel family's
// testOp suites case by case and mix by mix (tests/browser/suites.ts, `opChecks` of
// tests/_op.ts) and its kernel checks (tests/_check.ts, fixtures fetched from the runner's
// server), then every model's PyTorch parity in f32 and f16 (tests/_models_parity.ts, the
// fixtures fetched from the runner's server). f16 checks are reported as ignored without
// `shader-f16`, as `deno task test` ignores them.
//
// URL parameters: `filter` (a substring of `<family>: <check name>`), `start` (the index of the
// first check to run, among those the filter keeps: the runner reloads the page past a check
// that lost the device or ran past its time).
import type { Gpu } from "../../gpu/mod.ts";
import { MODEL_NAMES } from "../../models/mod.ts";
import { testGpu } from "../harness.ts";
import { type Fixture, modelParity } from "../_models_parity.ts";
import { opChecks } from "../_op.ts";
import type { Report } from "./protocol.ts";
import { FAMILIES } from "./suites.ts";

/** A check of the page: its family, name, needs, and how to run it. */
interface Check {
  readonly family: string;
  readonly name: string;
  readonly f16: boolean;
  run(gpu: Gpu): void | Promise<void>;
}

/** Every check, in order (generated lazily: a kernel case draws its data when reached). */
function* checks(): Generator<Check> {
  for (const { family, suites, checks: more } of FAMILIES) {
    for (const suite of suites) for (const c of opChecks(suite)) yield { family, ...c };
    for (const c of more ?? []) yield { family, ...c, run: (gpu) => c.run(gpu, fixture) };
  }
  for (const precision of ["f32", "f16"] as const) {
    for (const name of MODEL_NAMES) {
      yield {
        family: "models",
        name: `PyTorch parity${precision === "f16" ? " in f16" : ""}: ${name} eval logits and ` +
          "one training step",
        f16: precision === "f16",
        run: async (gpu) => {
          await modelParity(gpu, await fixture(`model_${name}.json`) as Fixture, precision);
        },
      };
    }
  }
}

/** Fetches a fixture of tests/fixtures/ from the runner's server, parsed. */
async function fixture(name: string): Promise<unknown> {
  const res = await fetch(`/fixtures/${name}`);
  if (!res.ok) throw new Error(`fixture ${name}: HTTP ${res.status}`);
  return await res.json();
}

const report = (r: Report): Promise<void> =>
  (globalThis as unknown as { __report(r: Report): Promise<void> }).__report(r);

function message(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return String(e);
}

async function main(): Promise<void> {
  const params = new URLSearchParams(location.search);
  const filter = params.get("filter") ?? "";
  const start = Number(params.get("start") ?? 0);
  const gpu = await testGpu();
  let lost: string | null = null;
  gpu.device.lost.then((info) => lost = `${info.reason}: ${info.message}`);
  const info = gpu.adapter?.info;
  await report({
    kind: "adapter",
    description: [info?.vendor, info?.architecture, info?.device, info?.description]
      .filter((s) => s).join(" / ") || "unknown",
    f16: gpu.features.f16,
  });
  let index = 0;
  for (const check of checks()) {
    if (!`${check.family}: ${check.name}`.includes(filter)) continue;
    if (index++ < start) continue;
    const base = { kind: "result", index: index - 1, family: check.family, name: check.name };
    if (check.f16 && !gpu.features.f16) {
      await report({ ...base, kind: "result", status: "ignored", ms: 0 });
      continue;
    }
    await report({ kind: "start", index: index - 1, family: check.family, name: check.name });
    const t0 = performance.now();
    let error: string | undefined;
    try {
      await check.run(gpu);
    } catch (e) {
      error = message(e);
    }
    // A lost device fails every later check: report it, the runner reloads the page past it.
    await new Promise((r) => setTimeout(r, 0));
    if (lost !== null && error === undefined) error = `the device was lost: ${lost}`;
    const ms = performance.now() - t0;
    await report({
      ...base,
      kind: "result",
      status: error === undefined ? "passed" : "failed",
      ms,
      ...(error === undefined ? {} : { error }),
    });
    if (lost !== null) {
      await report({ kind: "lost", index: index - 1, reason: lost });
      return;
    }
  }
  await report({ kind: "done", total: index });
}

main().catch((e) => report({ kind: "fatal", error: message(e) }));
