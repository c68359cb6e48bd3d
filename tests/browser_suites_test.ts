// `deno task test:browser` runs what `deno task test` runs: every suite list that tests/ops/*.ts
// exports (`*_SUITES`) is listed in tests/browser/suites.ts, and every kernel test file that
// registers suites with testOp has a family of that name there.
import assert from "node:assert/strict";
import { FAMILIES } from "./browser/suites.ts";

const dir = new URL(".", import.meta.url);

Deno.test("the browser suite lists every exported op suite and every testOp family", () => {
  const listed = Deno.readTextFileSync(new URL("browser/suites.ts", dir));
  const missing: string[] = [];
  for (const e of Deno.readDirSync(new URL("ops/", dir))) {
    const text = Deno.readTextFileSync(new URL(`ops/${e.name}`, dir));
    for (const [, name] of text.matchAll(/^export const (\w+_SUITES)\b/gm)) {
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
      /for \(const suite of \w+_SUITES\) testOp/.test(
        Deno.readTextFileSync(new URL(n, dir)),
      )
    );
  for (const f of files) assert.ok(families.has(f.replace(/_test\.ts$/, "")), f);
});
