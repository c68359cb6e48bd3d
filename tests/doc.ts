// `deno task test:doc`: every JSDoc example of the library's public modules, type-checked and run
// (`deno test --doc`). Deno compiles each example with an implicit import of every export of the
// module it documents, which the project's noUnusedLocals/noUnusedParameters would reject, so the
// examples run under a copy of deno.json with those two options off (written next to it, removed
// after). HOME and XDG_CACHE_HOME point into a temporary folder, so no example can touch the
// user's files.
import { join } from "node:path";

const ROOT = new URL("..", import.meta.url).pathname;
const config = JSON.parse(await Deno.readTextFile(join(ROOT, "deno.json")));
config.compilerOptions = {
  ...config.compilerOptions,
  noUnusedLocals: false,
  noUnusedParameters: false,
};
const path = join(ROOT, ".doctest.json");
await Deno.writeTextFile(path, JSON.stringify(config, null, 2));
const home = await Deno.makeTempDir({ prefix: "modern-cnn-doctest-" });
let code = 1;
try {
  const run = await new Deno.Command(Deno.execPath(), {
    args: [
      "test",
      "-A",
      "--doc",
      "--config",
      path,
      "mod.ts",
      "gpu/",
      "kernels/",
      "layers/",
      "models/",
      "data/",
      ...Deno.args,
    ],
    cwd: ROOT,
    env: { HOME: home, XDG_CACHE_HOME: join(home, ".cache") },
  }).spawn().status;
  code = run.code;
} finally {
  await Deno.remove(path).catch(() => {});
  await Deno.remove(home, { recursive: true }).catch(() => {});
}
Deno.exit(code);
