// `deno task test:browser` runs what `deno task test` runs: every suite list and kernel-check
// list that tests/ops/*.ts exports (`*_SUITES`, `*_CHECKS`) is listed in tests/browser/suites.ts,
// every test file that registers such lists (testOp, testCheck) has a family of that name there,
// and every kernel family of kernels/ maps to a browser family whose shared modules import it, or
// is in EXCLUDED below with the reason.
import assert from "node:assert/strict";
import { FAMILIES } from "./browser/suites.ts";

const dir = new URL(".", import.meta.url);
const read = (p: string) => Deno.readTextFileSync(new URL(p, dir));

/** Each kernel family of kernels/ (a module or a folder) -> the browser family that runs it. */
const COVERED: Readonly<Record<string, string>> = {
  activation: "activation",
  adam: "optim",
  batchnorm: "batchnorm",
  concat: "elementwise",
  conv2d: "conv2d",
  data: "data_kernels",
  depthwise: "depthwise",
  dropout: "dropout",
  elementwise: "elementwise",
  finite: "finite",
  gemm: "gemm",
  loss_scale: "loss_scale",
  lrn: "lrn",
  pool: "pool",
  sgd: "sgd",
  softmax_ce: "softmax_ce",
};

/** Kernel families of kernels/ with no browser entry, and why. */
const EXCLUDED: Readonly<Record<string, string>> = {
  // The tuner: it times the conv2d and gemm kernels (which run in the browser as their families)
  // and caches the fastest; no kernel of its own, and its tests read and write files (Deno).
  autotune: "no kernel of its own",
};

Deno.test("the browser suite lists every exported op suite and every testOp family", () => {
  const listed = read("browser/suites.ts");
  const missing: string[] = [];
  for (const e of Deno.readDirSync(new URL("ops/", dir))) {
    const text = read(`ops/${e.name}`);
    for (const [, name] of text.matchAll(/^export const (\w+_(?:SUITES|CHECKS))\b/gm)) {
      // Imported (possibly renamed) from this very module.
      const from = new RegExp(`import \\{[^}]*\\b${name}\\b[^}]*\\} from "\\.\\./ops/${e.name}"`);
      if (!from.test(listed)) missing.push(`${e.name}: ${name}`);
    }
  }
  assert.deepEqual(missing, [], "suites missing from tests/browser/suites.ts");
  const families = new Set(FAMILIES.map((f) => f.family));
  const files = [...Deno.readDirSync(dir)].map((e) => e.name)
    .filter((n) => n.endsWith("_test.ts"))
    .filter((n) =>
      /for \(const (suite|check) of \w+_(SUITES|CHECKS)\) test(Op|Check)/.test(read(n))
    );
  for (const f of files) assert.ok(families.has(f.replace(/_test\.ts$/, "")), f);
});

Deno.test("every kernel family of kernels/ runs in the browser suite or is excluded", () => {
  const kernels = [...Deno.readDirSync(new URL("../kernels/", dir))]
    .filter((e) => !e.name.startsWith("_") && e.name !== "mod.ts")
    .filter((e) => e.isDirectory || e.name.endsWith(".ts"))
    .map((e) => e.name.replace(/\.ts$/, "")).sort();
  const known = [...Object.keys(COVERED), ...Object.keys(EXCLUDED)].sort();
  assert.deepEqual(kernels, known, "COVERED and EXCLUDED list exactly the kernel families");
  const listed = read("browser/suites.ts");
  for (const [kernel, family] of Object.entries(COVERED)) {
    const f = FAMILIES.find((f) => f.family === family);
    assert.ok(f, `${kernel}: no browser family ${family}`);
    assert.ok(f.suites.length + (f.checks?.length ?? 0) > 0, `${family} runs nothing`);
    // A module of tests/ops/ that the browser list imports from imports the kernel family.
    const modules = [...listed.matchAll(/from "\.\.\/ops\/(\w+\.ts)"/g)].map((m) => m[1]);
    const path = new RegExp(`from "\\.\\./\\.\\./kernels/${kernel}(\\.ts|/)`);
    assert.ok(
      modules.some((m) => path.test(read(`ops/${m}`))),
      `${kernel}: no module of tests/ops/ in the browser list imports kernels/${kernel}`,
    );
  }
});
