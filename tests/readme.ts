// The README's sample outputs come from running their commands, so they cannot drift from what
// the program prints. A block is marked by the comment line before its fence:
//
//   <!-- output: deno task train lenet-bn --epochs 2 -->
//   ```
//   $ deno task train lenet-bn --epochs 2
//   ...what it printed (stdout and stderr, as a terminal shows them)...
//   ```
//
//   deno task docs           runs every marked command and rewrites its block
//   deno task docs --check   runs each command on a small slice of the data (the flags in
//                            `quick` below) and fails when a line of the README's block differs
//                            from the fresh output in anything but its numbers
//
// readme_test.ts runs the check.
import { join } from "node:path";

const ROOT = new URL("..", import.meta.url).pathname;
const MARK = /^<!-- output: (.+) -->$/;

/** A marked block of the README: its command and the lines between the fences. */
export interface OutputBlock {
  readonly command: string;
  /** Index of the opening fence line. */
  readonly open: number;
  /** Index of the closing fence line. */
  readonly close: number;
  readonly lines: readonly string[];
}

/** The marked blocks of a README text. */
export function outputBlocks(text: string): OutputBlock[] {
  const lines = text.split("\n");
  const blocks: OutputBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = MARK.exec(lines[i].trim());
    if (!m) continue;
    let open = i + 1;
    while (lines[open]?.trim() === "") open++; // deno fmt puts a blank line after the comment
    if (!lines[open]?.startsWith("```")) throw new Error(`README line ${i + 1}: no fence after it`);
    const close = lines.findIndex((l, j) => j > open && l.startsWith("```"));
    if (close < 0) throw new Error(`README line ${open + 1}: the block is not closed`);
    blocks.push({ command: m[1], open, close, lines: lines.slice(open + 1, close) });
  }
  return blocks;
}

/** Runs `command` (a `deno task ...` line) in the repository; its output as a terminal shows it. */
export async function runShown(command: string): Promise<string[]> {
  const out = await new Deno.Command("sh", {
    args: ["-c", `${command} 2>&1`],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) throw new Error(`'${command}' exited with ${out.code}:\n${text}`);
  // `deno task` echoes the task it runs ("Task train deno run ..."): not the program's output.
  return [`$ ${command}`, ...text.trimEnd().split("\n").filter((l) => !/^Task \S+ /.test(l))];
}

/** A line with its numbers replaced, for comparing formats. */
export function shape(line: string): string {
  return line.replace(/\d+(\.\d+)?(e[+-]?\d+)?/g, "#").replace(/#(,#)+/g, "#");
}

/** The flags that make a training command quick, for the check. */
const quick = ["--limit-train", "2048", "--limit-test", "512"];

if (import.meta.main) {
  const check = Deno.args.includes("--check");
  const path = join(ROOT, "README.md");
  const text = await Deno.readTextFile(path);
  const blocks = outputBlocks(text);
  const lines = text.split("\n");
  let failed = 0;
  for (const b of [...blocks].reverse()) {
    const quickCmd = / train /.test(b.command) ? `${b.command} ${quick.join(" ")}` : b.command;
    const fresh = await runShown(check ? quickCmd : b.command);
    if (!check) {
      lines.splice(b.open + 1, b.close - b.open - 1, ...fresh);
      continue;
    }
    const want = b.lines.slice(1).map(shape);
    const got = fresh.slice(1).map(shape);
    if (want.join("\n") !== got.join("\n")) {
      failed++;
      console.error(`README block '${b.command}' differs from what it prints now:`);
      console.error(`  README:\n    ${want.join("\n    ")}\n  now:\n    ${got.join("\n    ")}`);
    }
  }
  if (check) {
    console.log(`${blocks.length - failed} of ${blocks.length} README outputs match`);
    Deno.exit(failed ? 1 : 0);
  }
  await Deno.writeTextFile(path, lines.join("\n"));
  console.log(`${blocks.length} README outputs rewritten`);
}
