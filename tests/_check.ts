/**
 * A kernel check that is not an op case of tests/_op.ts: a comparison with a PyTorch fixture, a
 * flag's exact value. Checks are data shared by the two runners: a Deno test file registers them
 * with {@linkcode testCheck}, `deno task test:browser` (tests/browser/suites.ts) runs them in
 * Chromium. A check uses no Deno API and no `node:` module (assertions from ./_assert.ts); it
 * reads a fixture of tests/fixtures/ through the loader it is given (a file read under Deno, a
 * fetch from the runner's server in the browser).
 *
 * @module
 */

import type { Gpu } from "../gpu/mod.ts";
import { F16_TEST, GPU_TEST, testGpu } from "./harness.ts";

/** Reads tests/fixtures/`name` (a JSON file), parsed. */
export type LoadFixture = (name: string) => Promise<unknown>;

/** One kernel check (see the module's comment). */
export interface KernelCheck {
  /** The test's name. */
  readonly name: string;
  /** Whether it needs a GPU (false: the CPU references alone; `gpu` is then never read). */
  readonly gpu: boolean;
  /** Whether it needs `shader-f16`. */
  readonly f16: boolean;
  /** Runs it: throws where it fails. */
  run(gpu: Gpu, fixture: LoadFixture): void | Promise<void>;
}

/** Reads a fixture of tests/fixtures/ from the file system (Deno). */
const readFixture: LoadFixture = async (name) =>
  JSON.parse(await Deno.readTextFile(new URL(`./fixtures/${name}`, import.meta.url)));

/**
 * Registers `check` with `Deno.test` (ignored without a GPU, or without `shader-f16` where it
 * needs it, as testOp's suites).
 *
 * @example
 * ```ts ignore
 * for (const check of FINITE_CHECKS) testCheck(check);
 * ```
 */
export function testCheck(check: KernelCheck): void {
  const options = check.f16 ? F16_TEST : check.gpu ? GPU_TEST : {};
  Deno.test(check.name, options, async () => {
    await check.run(check.gpu ? await testGpu() : undefined as unknown as Gpu, readFixture);
  });
}
