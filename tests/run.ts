// The test runner behind `deno task test`: every tests/*_test.ts file in its own `deno test`
// process, as many at once as there are CPUs, then one summary line in `deno test`'s format
// ("ok | N passed | N failed | N ignored (Ts)").
//
// Why not `deno test --parallel`: that runs test files on threads of one process, each with its own
// WebGPU device, and Deno's WebGPU occasionally corrupts the heap while those are torn down at
// exit ("double free or corruption", "corrupted size vs. prev_size"; exit 134) after every test
// passed. One process per file keeps each device's teardown alone. If a file's process still
// crashes after reporting all its tests passed, the file is run once more and the crash is
// reported; a second crash, or any failed test, fails the run.
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
const notes: string[] = [];
const workers = Math.max(1, Math.min(navigator.hardwareConcurrency ?? 2, files.length));
await Promise.all(Array.from({ length: workers }, async () => {
  for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
    let r = await runFile(file);
    if (r.code !== 0 && r.allPassed) {
      notes.push(
        `${file}: every test passed but the process exited with ${r.code} (a crash at teardown); ` +
          "ran it again",
      );
      console.log(r.output);
      r = await runFile(file);
    }
    console.log(r.output);
    results.push(r);
  }
}));

const passed = results.reduce((a, r) => a + r.passed, 0);
const failed = results.reduce((a, r) => a + r.failed, 0);
const ignored = results.reduce((a, r) => a + r.ignored, 0);
const broken = results.filter((r) => r.code !== 0);
for (const n of notes) console.log(`note: ${n}`);
for (const r of broken) {
  console.log(
    `error: ${r.file} exited with ${r.code}${r.allPassed ? " after its tests passed" : ""}`,
  );
}
const secs = ((performance.now() - start) / 1000).toFixed(0);
const ok = failed === 0 && broken.length === 0 && results.length === files.length;
console.log(
  `${ok ? "ok" : "FAILED"} | ${passed} passed | ${failed} failed` +
    `${ignored ? ` | ${ignored} ignored` : ""} (${files.length} files, ${secs}s)`,
);
Deno.exit(ok ? 0 : 1);
