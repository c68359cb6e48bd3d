// The test runner behind `deno task test`: every tests/*_test.ts file in its own `deno test`
// process, as many at once as there are CPUs, then one summary line in `deno test`'s format
// ("ok | N passed | N failed | N ignored (Ts)").
//
// Why not `deno test --parallel`: that runs test files on threads of one process, each with its own
// WebGPU device; one process per file keeps files from sharing a device, a pool or a crash.
//
// A process that exits nonzero after all its tests passed fails the run like a failed test, and is
// reported as such. There is no rerun any more: that crash at exit ("double free or corruption
// (fasttop)", "corrupted size vs. prev_size in fastbins"; exit 134, about 1 run in 150) was a
// double free between the test thread's exit and the main thread's `exit()`, both freeing the EGL
// thread state that Deno's OpenGL backend left behind; `requestGpu` now restricts Deno's WebGPU
// to Vulkan (gpu/device.ts), and a crash at exit is a bug to see, not to retry.
//
//   deno run -A tests/run.ts [FILTER]    (FILTER: a substring of the file names to run)
import { join } from "node:path";

interface FileResult {
  file: string;
  code: number;
  output: string;
  passed: number;
  failed: number;
  ignored: number;
  /** The process printed a summary ("ok | ...") with no failure. */
  allPassed: boolean;
}

const dir = new URL(".", import.meta.url).pathname;
const filter = Deno.args[0] ?? "";
const files = [...Deno.readDirSync(dir)]
  .filter((e) => e.isFile && e.name.endsWith("_test.ts") && e.name.includes(filter))
  .map((e) => e.name)
  .sort();

async function runFile(file: string): Promise<FileResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", join(dir, file)],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  const m = text.match(/^(ok|FAILED) \| (\d+) passed[^\n]*?\| (\d+) failed([^\n]*)$/m);
  const ignored = Number(m?.[4].match(/(\d+) ignored/)?.[1] ?? 0);
  return {
    file,
    code: out.code,
    output: text,
    passed: Number(m?.[2] ?? 0),
    failed: Number(m?.[3] ?? 0),
    ignored,
    allPassed: m?.[1] === "ok" && Number(m[3]) === 0,
  };
}

const start = performance.now();
const queue = [...files];
const results: FileResult[] = [];
const workers = Math.max(1, Math.min(navigator.hardwareConcurrency ?? 2, files.length));
await Promise.all(Array.from({ length: workers }, async () => {
  for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
    const r = await runFile(file);
    console.log(r.output);
    results.push(r);
  }
}));

const passed = results.reduce((a, r) => a + r.passed, 0);
const failed = results.reduce((a, r) => a + r.failed, 0);
const ignored = results.reduce((a, r) => a + r.ignored, 0);
const broken = results.filter((r) => r.code !== 0);
for (const r of broken) {
  console.log(
    `error: ${r.file} exited with ${r.code}` +
      (r.allPassed ? " after all its tests passed (a crash at exit: this fails the run)" : ""),
  );
}
const secs = ((performance.now() - start) / 1000).toFixed(0);
const ok = failed === 0 && broken.length === 0 && results.length === files.length;
console.log(
  `${ok ? "ok" : "FAILED"} | ${passed} passed | ${failed} failed` +
    `${ignored ? ` | ${ignored} ignored` : ""} (${files.length} files, ${secs}s)`,
);
Deno.exit(ok ? 0 : 1);
